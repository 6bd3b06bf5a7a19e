//! The metrics a running ferrocorn exports, checked by real peers: promtool
//! lints the scrape, Python's prometheus_client reads the workers' files,
//! `ferrocorn metrics DIR` renders them; and a SIGHUP reload reaches the
//! new workers.

use std::process::{Command, Stdio};
use std::time::Duration;

use ferrocorn_tests::{
    Server, children, ferrocorn, promtool_parses, run_to_end, sample, samples, wait_for, write_file,
};

/// Python with prometheus_client: `FERROCORN_TEST_PYTHON` (scripts/test sets
/// it) or `python3`; panics with what to do when the module is missing.
fn python() -> String {
    let py = std::env::var("FERROCORN_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&py)
        .args(["-c", "import prometheus_client"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{py} cannot import prometheus_client: run ./scripts/test, or set FERROCORN_TEST_PYTHON to a python with prometheus_client==0.26.0"
    );
    py
}

#[test]
fn promtool_accepts_the_scrape() {
    let s = Server::builder().args(["-w", "2"]).start();
    assert_eq!(s.get("/status/404").status, 404);
    promtool_parses(&s.scrape());
}

#[test]
fn python_reads_the_workers_files_and_metrics_subcommand_renders_them() {
    let py = python();
    let dir = tempfile::tempdir().unwrap();
    let mdir = dir.path().join("metrics");
    std::fs::create_dir(&mdir).unwrap();
    let s = Server::builder()
        .env("PROMETHEUS_MULTIPROC_DIR", &mdir)
        .args(["--threads", "3"])
        .start();
    for _ in 0..4 {
        assert_eq!(s.get("/healthz").status, 200);
    }
    let ok = wait_for(Duration::from_secs(5), || {
        sample(
            &s.scrape(),
            "gunicorn_requests_total{method=\"GET\",status=\"200\"}",
        )
        .unwrap_or(0.0)
            >= 4.0
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
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let threads = samples(&text, "gunicorn_max_worker_threads");
    assert_eq!(threads.len(), 1, "{text}");
    assert!(threads[0].ends_with(" 3.0"), "{text}");
    assert!(
        sample(
            &text,
            "gunicorn_requests_total{method=\"GET\",status=\"200\"}"
        )
        .unwrap_or(0.0)
            >= 4.0,
        "{text}"
    );

    // The same directory through `ferrocorn metrics DIR`.
    let mut cmd = ferrocorn();
    cmd.args(["metrics", mdir.to_str().unwrap()]);
    let out = run_to_end(cmd, Duration::from_secs(10));
    assert!(out.status.success());
    let ours = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        samples(&ours, "gunicorn_max_worker_threads"),
        threads,
        "ferrocorn and prometheus_client agree"
    );
}

#[test]
fn sighup_rereads_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "f.toml", "threads = 1\n");
    let s = Server::builder()
        .args(["-c", file.to_str().unwrap(), "--graceful-timeout", "2"])
        .start();
    let threads = |text: &str| -> Vec<String> {
        samples(text, "gunicorn_max_worker_threads")
            .into_iter()
            .map(str::to_owned)
            .collect()
    };
    let before = threads(&s.scrape());
    assert_eq!(before.len(), 1, "{before:?}");
    assert!(before[0].ends_with(" 1.0"));

    // A bad file on HUP: logged, the running workers stay.
    write_file(dir.path(), "f.toml", "threads = 4\ngrateful_timeout = 1\n");
    s.signal(libc::SIGHUP);
    s.wait_stderr(Duration::from_secs(5), "the reload error", |e| {
        e.contains("did you mean `graceful_timeout`?")
    });
    assert_eq!(s.get("/healthz").status, 200);
    assert_eq!(threads(&s.scrape()), before);

    // A good one: new workers with the new settings replace the old.
    write_file(dir.path(), "f.toml", "threads = 4\n");
    s.signal(libc::SIGHUP);
    let mut last = Vec::new();
    let ok = wait_for(Duration::from_secs(10), || {
        last = threads(&s.scrape());
        last.len() == 1 && last[0].ends_with(" 4.0")
    });
    assert!(ok, "after HUP: {last:?}; stderr:\n{}", s.stderr());
    assert_eq!(s.get("/healthz").status, 200);
}

#[test]
fn pidfile_is_written_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("ferrocorn.pid");
    let mut s = Server::builder()
        .args(["--pid", pidfile.to_str().unwrap()])
        .start();
    let text = std::fs::read_to_string(&pidfile).expect("pid file");
    assert_eq!(text.trim(), s.pid().to_string());
    s.signal(libc::SIGTERM);
    assert!(
        s.wait_exit(Duration::from_secs(10))
            .is_some_and(|st| st.success())
    );
    assert!(!pidfile.exists(), "removed at exit");
}

/// The names of the `.db` files a process holds open.
fn open_db_files(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter(|t| t.extension().is_some_and(|x| x == "db"))
                .filter_map(|t| Some(t.file_name()?.to_str()?.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_worker_forked_after_scrapes_holds_only_its_own_metric_files() {
    let s = Server::builder().args(["-w", "1"]).start();
    assert_eq!(s.get("/").status, 200);
    // The supervisor's collector keeps the files it read open between scrapes.
    s.scrape();
    s.scrape();
    let first = children(s.pid());
    assert_eq!(first.len(), 1, "{first:?}");
    s.signal(libc::SIGTTIN);
    let mut new = 0;
    assert!(
        wait_for(Duration::from_secs(10), || {
            new = children(s.pid())
                .into_iter()
                .find(|p| !first.contains(p))
                .unwrap_or(0);
            new != 0 && s.scrape().contains(&format!("pid=\"{new}\""))
        }),
        "no second worker appeared in the scrape"
    );
    let own = format!("_{new}.db");
    let held = open_db_files(new);
    assert!(
        held.iter().all(|f| f.ends_with(&own)),
        "worker {new} holds other processes' metric files: {held:?}"
    );
}

/// The metrics directory on a full filesystem (a 64 KiB tmpfs filled up, in
/// a mount namespace of ferrocorn's own): each worker logs that it cannot
/// create its metric files and serves without them. A sparse metric file on
/// a full filesystem (what `ftruncate` alone makes, and Python's
/// prometheus_client too) kills the process writing it with SIGBUS: the
/// workers died that way, were respawned and died again, thousands of times
/// a second, and never served.
#[test]
fn a_full_metrics_filesystem_costs_the_metrics_not_the_requests() {
    let root = tempfile::tempdir().expect("tempdir");
    let mnt = root.path().join("full");
    let Some(wrapper) = ferrocorn_tests::on_a_full_filesystem(&mnt) else {
        return;
    };
    let dir = mnt.join("m");
    let s = Server::builder_wrapped(wrapper)
        .args([
            "-w",
            "2",
            "--metrics-dir",
            dir.to_str().expect("utf-8 path"),
        ])
        .start();
    for _ in 0..200 {
        assert_eq!(s.get("/").status, 200);
    }
    s.wait_stderr(
        Duration::from_secs(10),
        "both workers' metrics error",
        |e| {
            e.lines()
                .filter(|l| {
                    l.contains("cannot create the worker metrics")
                        && l.contains("No space left on device")
                })
                .count()
                == 2
        },
    );
    let text = s.scrape();
    assert_eq!(sample(&text, "gunicorn_workers "), Some(2.0), "{text}");
    let stderr = s.stderr();
    assert!(!stderr.contains("SIGBUS"), "{stderr}");
    assert_eq!(
        stderr.matches("Booting worker").count(),
        2,
        "workers were respawned:\n{stderr}"
    );
    assert_eq!(children(s.pid()).len(), 2, "{stderr}");
    // No empty metric file left behind for a reader to trip on; the
    // directory as ferrocorn sees it, through its mount namespace.
    let seen = std::path::PathBuf::from(format!("/proc/{}/root", s.pid()))
        .join(dir.strip_prefix("/").expect("absolute"));
    let files: Vec<(String, u64)> = std::fs::read_dir(&seen)
        .unwrap_or_else(|e| panic!("{}: {e}", seen.display()))
        .map(|e| {
            let e = e.expect("dir entry");
            let len = e.metadata().map(|m| m.len()).unwrap_or(0);
            (e.file_name().to_string_lossy().into_owned(), len)
        })
        .collect();
    assert!(
        files
            .iter()
            .all(|(name, len)| !name.ends_with(".db") || *len >= 8),
        "{files:?}"
    );
}

/// Room for the worker's metric files but not for their growth: the first
/// request whose series does not fit is not counted, and the worker says
/// so in the error log once (before, such requests went uncounted without
/// a word), and goes on serving.
#[test]
fn a_series_that_does_not_fit_is_reported() {
    let root = tempfile::tempdir().expect("tempdir");
    let mnt = root.path().join("small");
    // One worker's three files take 3 x 64 KiB; the counter file cannot
    // grow to 128 KiB in 224.
    let Some(wrapper) = ferrocorn_tests::on_a_small_filesystem(&mnt, 224, false) else {
        return;
    };
    let dir = mnt.join("m");
    let s = Server::builder_wrapped(wrapper)
        .args([
            "-w",
            "1",
            "--metrics-dir",
            dir.to_str().expect("utf-8 path"),
        ])
        .start();
    // ~800 series (GET and HEAD of 400 statuses), ~120 bytes each: more
    // than the counter file's first 64 KiB hold.
    for code in 200..600 {
        for method in ["GET", "HEAD"] {
            let r = ferrocorn_tests::request(s.addr, method, &format!("/status/{code}"), &[], b"")
                .unwrap_or_else(|e| panic!("{method} /status/{code}: {e}"));
            assert_eq!(r.status, code);
        }
    }
    s.wait_stderr(
        Duration::from_secs(10),
        "the uncounted requests' error",
        |e| {
            e.lines().any(|l| {
                l.contains("cannot add gunicorn_requests_total{")
                    && l.contains("No space left on device")
            })
        },
    );
    let stderr = s.stderr();
    assert_eq!(
        stderr.matches("cannot add gunicorn_requests_total").count(),
        1,
        "said more than once:\n{stderr}"
    );
    assert!(!stderr.contains("SIGBUS"), "{stderr}");
    assert_eq!(s.get("/").status, 200);
}
