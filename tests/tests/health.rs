//! `health_path` end to end: the real binary, real sockets, curl: 200 while
//! every app thread is busy, 503 during a graceful stop (SIGTERM to the
//! supervisor), never counted as a request (no metric, no access line), and
//! off by default (the path is the app's).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use ferrocorn_tests::{Server, curl, parse_response, request, samples, wait_for};

/// The sum of every `gunicorn_requests_total` sample.
fn requests_total(s: &Server) -> f64 {
    samples(&s.scrape(), "gunicorn_requests_total")
        .iter()
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The busy pool threads of the (only) worker, from the metrics.
fn busy_threads(s: &Server) -> f64 {
    samples(&s.scrape(), "gunicorn_active_worker_threads")
        .iter()
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `GET /delay/{ms}` on a thread; waits until a pool thread runs it.
fn slow_request(s: &Server, ms: u64) -> thread::JoinHandle<io::Result<ferrocorn_tests::Response>> {
    let addr = s.addr;
    let slow = thread::spawn(move || request(addr, "GET", &format!("/delay/{ms}"), &[], b""));
    assert!(
        wait_for(Duration::from_secs(10), || busy_threads(s) == 1.0),
        "the slow request did not start; stderr:\n{}",
        s.stderr()
    );
    slow
}

/// A keep-alive connection reading one response at a time.
struct Conn {
    sock: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn open(addr: SocketAddr) -> Conn {
        let sock = TcpStream::connect(addr).expect("connect");
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Conn {
            sock,
            buf: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).expect("send");
    }

    /// The next response (bodies delimited by Content-Length).
    fn response(&mut self) -> ferrocorn_tests::Response {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = parse_response(&self.buf[..end + 4], true).expect("a response head");
                let len: usize = head
                    .headers
                    .get("content-length")
                    .map_or(0, |v| v.parse().unwrap());
                if self.buf.len() >= end + 4 + len {
                    let raw: Vec<u8> = self.buf.drain(..end + 4 + len).collect();
                    return parse_response(&raw, false).expect("a response");
                }
            }
            let mut tmp = [0u8; 4096];
            let n = self.sock.read(&mut tmp).expect("read a response");
            assert!(n > 0, "closed before a whole response");
            self.buf.extend_from_slice(&tmp[..n]);
        }
    }

    /// The server closed the connection (EOF, or a reset), nothing more sent.
    fn assert_closed(&mut self) {
        assert!(self.buf.is_empty(), "bytes left: {:?}", self.buf);
        let mut tmp = [0u8; 64];
        match self.sock.read(&mut tmp) {
            Ok(0) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            other => panic!("expected a close, got {other:?}"),
        }
    }
}

#[test]
fn answers_while_every_app_thread_is_busy_and_is_not_counted() {
    // /ready is not one of the built-in app's paths: without the health
    // endpoint it would go to the pool and wait behind the slow request.
    let s = Server::builder()
        .args([
            "--threads",
            "1",
            "--health-path",
            "/ready",
            "--access-logfile",
            "-",
        ])
        .start();
    let before = requests_total(&s);
    let slow = slow_request(&s, 3000);

    let r = request(s.addr, "GET", "/ready", &[], b"").expect("probe");
    assert_eq!((r.status, r.text().as_str()), (200, "ok\n"));
    let r = request(s.addr, "HEAD", "/ready", &[], b"").expect("HEAD probe");
    assert_eq!(r.status, 200);
    let out = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://{}/ready", s.addr),
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "curl's probe");
    let mut kept = Conn::open(s.addr);
    for _ in 0..3 {
        kept.send(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(kept.response().status, 200);
    }
    assert_eq!(
        busy_threads(&s),
        1.0,
        "the probes were answered while the slow request held the only thread"
    );

    // Another method on the path: refused by the worker (405), and counted
    // and logged as its other refusals are.
    let r = request(s.addr, "POST", "/ready", &[], b"x").expect("POST");
    assert_eq!(r.status, 405);
    assert_eq!(
        r.headers.get("allow").map(String::as_str),
        Some("GET, HEAD")
    );

    let r = slow.join().unwrap().expect("the slow request");
    assert_eq!(r.status, 200);
    // The slow request and the 405 are counted and logged (once their
    // lines are out); the six probes are neither.
    assert!(
        wait_for(Duration::from_secs(10), || {
            let out = s.stdout();
            out.contains("GET /delay/3000") && out.contains("POST /ready")
        }),
        "no access line for the slow request or the 405; stdout:\n{}",
        s.stdout()
    );
    assert!(
        wait_for(Duration::from_secs(10), || requests_total(&s) - before
            == 2.0),
        "requests_total should count the slow request and the 405 only: {} -> {}",
        before,
        requests_total(&s)
    );
    let out = s.stdout();
    assert!(
        !out.contains("GET /ready") && !out.contains("HEAD /ready"),
        "a probe was logged:\n{out}"
    );
}

#[test]
fn answers_503_during_a_graceful_stop() {
    let mut s = Server::builder()
        .args([
            "--threads",
            "1",
            "--health-path",
            "/healthz",
            "--graceful-timeout",
            "20",
        ])
        .start();
    let slow = slow_request(&s, 3000);
    let mut probe = Conn::open(s.addr);
    probe.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(probe.response().status, 200);
    // Half a probe is on the wire when the stop begins, so its connection
    // is not idle (an idle one is closed a second into the stop).
    probe.send(b"GET /healthz HTTP/1.1\r\n");
    s.signal(libc::SIGTERM);
    // The supervisor and the worker close their listeners when they stop:
    // once a connection is refused, the worker is stopping.
    assert!(
        wait_for(Duration::from_secs(10), || TcpStream::connect(s.addr)
            .is_err()),
        "still accepting after SIGTERM; stderr:\n{}",
        s.stderr()
    );
    probe.send(b"Host: x\r\n\r\n");
    let r = probe.response();
    assert_eq!((r.status, r.text().as_str()), (503, "stopping\n"));
    assert_eq!(
        r.headers.get("connection").map(String::as_str),
        Some("close")
    );
    probe.assert_closed();
    // The request in flight is finished, and the server exits cleanly.
    assert_eq!(slow.join().unwrap().expect("the slow request").status, 200);
    let status = s
        .wait_exit(Duration::from_secs(20))
        .expect("exit after SIGTERM");
    assert!(status.success(), "{status:?}; stderr:\n{}", s.stderr());
}

#[test]
fn off_by_default_the_path_goes_to_the_app() {
    let s = Server::builder().args(["--access-logfile", "-"]).start();
    let before = requests_total(&s);
    let r = request(s.addr, "GET", "/ready", &[], b"").expect("GET /ready");
    assert_eq!(r.status, 404, "the built-in app's answer");
    assert!(
        wait_for(Duration::from_secs(10), || s.stdout().contains("/ready")),
        "no access line; stdout:\n{}",
        s.stdout()
    );
    assert!(wait_for(Duration::from_secs(10), || requests_total(&s)
        - before
        == 1.0));
}
