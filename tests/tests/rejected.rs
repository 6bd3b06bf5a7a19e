//! What an operator could not see before issue 22, end to end on the
//! binary: requests the worker refuses itself in the access log and in
//! `requests_total`, the accept-queue wait of each connection, and the
//! request-parsing defects found by a peer's corpus.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use ferrocorn_tests::{
    Server, assert_clean_failure, children, ferrocorn, promtool_parses, run_to_end, sample,
    wait_for,
};

/// Sends `raw` on a new connection and returns the response's status (0
/// when the server closed without one), reading until the server closes.
fn status_of(s: &Server, raw: &[u8]) -> u16 {
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(raw).unwrap();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn refused_requests_are_in_the_access_log_and_requests_total() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let s = Server::builder()
        .args([
            "-w",
            "1",
            "--header-timeout",
            "0.5",
            "--access-logfile",
            log.to_str().unwrap(),
            "--access-logformat",
            r#""%(r)s" %(s)s %(m)s"#,
        ])
        .start();
    assert_eq!(
        status_of(&s, b"GET /echo?page=1#x HTTP/1.1\r\nHost: x\r\n\r\n"),
        400
    );
    assert_eq!(
        status_of(&s, b"GET s://]ufd/echo HTTP/1.1\r\nHost: x\r\n\r\n"),
        400
    );
    assert_eq!(
        status_of(&s, b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n"),
        400
    );
    let start = Instant::now();
    assert_eq!(status_of(&s, b"GET /slow HTTP/1.1\r\nHost: x\r\n"), 408);
    assert!(start.elapsed() >= Duration::from_millis(500));
    // Part of a head, then gone: not a request.
    let mut gone = TcpStream::connect(s.addr).unwrap();
    gone.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-")
        .unwrap();
    drop(gone);

    let lines = || -> Vec<String> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.contains("/healthz"))
            .map(str::to_owned)
            .collect()
    };
    let ok = wait_for(Duration::from_secs(5), || lines().len() >= 4);
    assert!(ok, "four access lines: {:?}", lines());
    assert_eq!(
        lines(),
        [
            r#""GET /echo?page=1#x HTTP/1.1" 400 GET"#,
            r#""GET s://]ufd/echo HTTP/1.1" 400 GET"#,
            r#""-" 400 "#,
            r#""GET /slow HTTP/1.1" 408 GET"#,
        ]
    );
    let counted = |text: &str| {
        [
            r#"gunicorn_requests_total{method="GET",status="400"}"#,
            r#"gunicorn_requests_total{method="other",status="400"}"#,
            r#"gunicorn_requests_total{method="GET",status="408"}"#,
            "gunicorn_connections_closed_early_total ",
        ]
        .map(|series| sample(text, series))
    };
    let want = [Some(2.0), Some(1.0), Some(1.0), Some(1.0)];
    let ok = wait_for(Duration::from_secs(5), || counted(&s.scrape()) == want);
    let text = s.scrape();
    assert!(ok, "{:?} in\n{text}", counted(&text));
    assert!(
        !text.contains(r#"gunicorn_requests_total{method="POST""#),
        "the early close is no request:\n{text}"
    );
    promtool_parses(&text);
}

/// The `le` bucket of the accept-queue wait histogram of `listener`.
fn wait_bucket(text: &str, le: &str, listener: &str) -> f64 {
    let series =
        format!(r#"gunicorn_accept_queue_wait_seconds_bucket{{le="{le}",listener="{listener}"}}"#);
    sample(text, &series).unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

#[test]
fn connections_held_in_the_queue_by_a_stopped_worker_show_their_wait() {
    let s = Server::builder().args(["-w", "1"]).start();
    let listener = format!("http://{}", s.addr);
    let worker = children(s.pid());
    assert_eq!(worker.len(), 1, "one worker: {worker:?}");
    let worker = worker[0] as libc::pid_t;
    let before = s.scrape();
    let (slow0, total0) = (
        wait_bucket(&before, "1.0", &listener),
        wait_bucket(&before, "+Inf", &listener),
    );

    // SAFETY: kill() has no memory effects; `worker` is this test's child's
    // child, alive (the server answered).
    assert_eq!(unsafe { libc::kill(worker, libc::SIGSTOP) }, 0);
    let held_since = Instant::now();
    // One client sends its request at once, one sends nothing: the first
    // is timed by its data, the second by its handshake.
    let mut talker = TcpStream::connect(s.addr).unwrap();
    talker
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let silent = TcpStream::connect(s.addr).unwrap();
    // The measured interval itself: 1.5 s in the queue.
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(worker, libc::SIGCONT) }, 0);
    talker
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = String::new();
    talker.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let held = held_since.elapsed();

    let observed = |text: &str| wait_bucket(text, "+Inf", &listener) - total0;
    let ok = wait_for(Duration::from_secs(5), || observed(&s.scrape()) >= 2.0);
    let text = s.scrape();
    assert!(ok, "two waits observed:\n{text}");
    assert_eq!(
        wait_bucket(&text, "1.0", &listener) - slow0,
        0.0,
        "held {held:?}: both above 1 s\n{text}"
    );
    assert_eq!(
        wait_bucket(&text, "2.5", &listener) - slow0,
        2.0,
        "held {held:?}: both at most 2.5 s\n{text}"
    );
    drop(silent);

    // Accepted at once: below 10 ms.
    let fast0 = wait_bucket(&text, "0.01", &listener);
    assert_eq!(s.get("/healthz").status, 200);
    let ok = wait_for(Duration::from_secs(5), || {
        wait_bucket(&s.scrape(), "0.01", &listener) > fast0
    });
    assert!(ok, "a prompt accept below 10 ms:\n{}", s.scrape());
    promtool_parses(&s.scrape());
}

#[test]
fn accept_queue_wait_can_be_turned_off() {
    let s = Server::builder()
        .args(["-w", "1", "--no-accept-queue-wait"])
        .start();
    assert_eq!(s.get("/healthz").status, 200);
    let text = s.scrape();
    assert!(
        !text.contains("gunicorn_accept_queue_wait_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains("gunicorn_requests_total"), "{text}");
}

#[test]
fn unix_sockets_get_no_wait_and_no_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    let tcp = format!("127.0.0.1:{}", ferrocorn_tests::free_port());
    let unix = format!("unix:{}", path.display());
    let s = Server::builder()
        .args(["-w", "1", "-b", &tcp, "-b", &unix])
        .start();
    let mut c = std::os::unix::net::UnixStream::connect(&path).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let text = s.scrape();
    let ok = wait_for(Duration::from_secs(5), || {
        sample(
            &s.scrape(),
            r#"gunicorn_requests_total{method="GET",status="200"}"#,
        )
        .unwrap_or(0.0)
            >= 2.0
    });
    assert!(ok, "the unix request served and counted:\n{text}");
    let text = s.scrape();
    let listeners: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("gunicorn_accept_queue_wait_seconds_count"))
        .collect();
    assert_eq!(
        listeners,
        [format!(
            r#"gunicorn_accept_queue_wait_seconds_count{{listener="http://{tcp}"}} 1.0"#
        )],
        "only the TCP listener, with its one connection:\n{text}"
    );
    let err = s.stderr();
    assert!(
        !err.to_lowercase().contains("error") && !err.contains("TCP_INFO"),
        "{err}"
    );
}

#[test]
fn the_parsing_defects_of_issue_22_are_fixed() {
    let s = Server::builder()
        .args(["-w", "1", "--limit-request-field-size", "20000"])
        .start();
    // A fragment: 400 (it was served, `#x` in the query).
    assert_eq!(
        status_of(&s, b"GET /echo?page=1#x HTTP/1.1\r\nHost: x\r\n\r\n"),
        400
    );
    // A malformed absolute-form authority: 400 (it was served as /echo).
    assert_eq!(
        status_of(&s, b"GET s://]ufd/echo HTTP/1.1\r\nHost: x\r\n\r\n"),
        400
    );
    assert_eq!(
        status_of(
            &s,
            b"GET http://h:80/healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        ),
        200
    );
    // 20000 honoured: a 10,000-byte header is served (it got 431).
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "v".repeat(10_000)
    );
    assert_eq!(status_of(&s, big.as_bytes()), 200);
    // Counted with its CRLF: a line of 19,999 bytes is over 20000.
    let over = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "v".repeat(19_999 - 7)
    );
    assert_eq!(status_of(&s, over.as_bytes()), 431);
    drop(s);

    // The default 8190 counts as gunicorn does: 8,189 bytes + CRLF is over.
    let s = Server::builder().args(["-w", "1"]).start();
    let line = |n: usize| {
        format!(
            "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
            "v".repeat(n - 7)
        )
    };
    assert_eq!(status_of(&s, line(8189).as_bytes()), 431);
    assert_eq!(status_of(&s, line(8188).as_bytes()), 200);
    drop(s);

    // What is honoured is what --print-config shows; more is refused.
    let mut cmd = ferrocorn();
    cmd.args(["--limit-request-field-size", "20000", "--print-config"]);
    let out = run_to_end(cmd, Duration::from_secs(10));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("limit_request_field_size = 20000"),
        "{out:?}"
    );
    let mut cmd = ferrocorn();
    cmd.args(["--limit-request-field-size", "70000", "--check-config"]);
    let out = run_to_end(cmd, Duration::from_secs(10));
    assert_clean_failure(&out, 2, "limit_request_field_size");
}

/// The new series, read from the workers' files by Python's
/// prometheus_client and by `ferrocorn metrics DIR`: sample for sample the
/// same.
#[test]
fn prometheus_client_reads_the_new_series_as_ferrocorn_does() {
    let py = std::env::var("FERROCORN_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let dir = tempfile::tempdir().unwrap();
    let mdir = dir.path().join("metrics");
    std::fs::create_dir(&mdir).unwrap();
    let s = Server::builder()
        .env("PROMETHEUS_MULTIPROC_DIR", &mdir)
        .args(["-w", "2"])
        .start();
    assert_eq!(status_of(&s, b"GET /a#b HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
    assert_eq!(status_of(&s, b"BREW\x01 / HTTP/1.1\r\n\r\n"), 400);
    let mut gone = TcpStream::connect(s.addr).unwrap();
    gone.write_all(b"GET / HTTP/1.1\r\nHo").unwrap();
    drop(gone);
    assert_eq!(s.get("/healthz").status, 200);
    let ok = wait_for(Duration::from_secs(5), || {
        sample(&s.scrape(), "gunicorn_connections_closed_early_total ") == Some(1.0)
    });
    assert!(ok, "{}", s.scrape());

    let script = r#"
import sys
from prometheus_client import CollectorRegistry, multiprocess, generate_latest
r = CollectorRegistry()
multiprocess.MultiProcessCollector(r, path=sys.argv[1])
sys.stdout.write(generate_latest(r).decode())
"#;
    let out = Command::new(&py)
        .args(["-c", script, mdir.to_str().unwrap()])
        .output()
        .expect("python with prometheus_client (FERROCORN_TEST_PYTHON)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut cmd = ferrocorn();
    cmd.args(["metrics", mdir.to_str().unwrap()]);
    let out = run_to_end(cmd, Duration::from_secs(10));
    assert!(out.status.success());
    let ours = String::from_utf8_lossy(&out.stdout).into_owned();
    let new_series = |text: &str| -> Vec<String> {
        let mut v: Vec<String> = text
            .lines()
            .filter(|l| {
                l.starts_with("gunicorn_accept_queue_wait_seconds")
                    || l.starts_with("gunicorn_connections_closed_early_total")
                    || l.starts_with("gunicorn_requests_total")
            })
            .map(str::to_owned)
            .collect();
        v.sort();
        v
    };
    let (a, b) = (new_series(&theirs), new_series(&ours));
    assert!(a.len() > 15, "{theirs}");
    assert!(
        a.iter()
            .any(|l| l.contains(r#"method="other",status="400""#)),
        "{theirs}"
    );
    assert_eq!(a, b, "prometheus_client and ferrocorn agree");
}
