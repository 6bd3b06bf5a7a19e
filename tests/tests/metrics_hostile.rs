//! A running ferrocorn whose metrics directory holds files it did not
//! write: a FIFO, links to /dev/zero, a corrupt header, a NaN bucket from
//! prometheus_client. The supervisor keeps answering scrapes within a
//! second in a few MB, replaces a killed worker, and names each bad file
//! once in its log; `ferrocorn metrics DIR` names them on stderr.

use std::process::Command;
use std::time::{Duration, Instant};

use ferrocorn_tests::{Server, children, ferrocorn, request, run_to_end, sample, wait_for};

/// A /proc/PID/status field in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {status}"))
}

/// Plants the hostile files in `dir`; their names.
fn plant(dir: &std::path::Path) -> Vec<&'static str> {
    let fifo = std::ffi::CString::new(
        dir.join("counter_999991.db")
            .into_os_string()
            .into_encoded_bytes(),
    )
    .unwrap();
    // SAFETY: a NUL-terminated path we own.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    std::os::unix::fs::symlink("/dev/zero", dir.join("counter_999992.db")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.join("histogram_aggregate.db")).unwrap();
    let mut bad = vec![0u8; 8192];
    bad[..4].copy_from_slice(&0x7fff_ffffi32.to_ne_bytes());
    bad[8..12].copy_from_slice(&5i32.to_ne_bytes());
    bad[12..17].copy_from_slice(b"[\"x\",");
    std::fs::write(dir.join("counter_999993.db"), &bad).unwrap();
    let py = std::env::var("FERROCORN_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(py)
        .env("PROMETHEUS_MULTIPROC_DIR", dir)
        .args([
            "-c",
            "from prometheus_client import Histogram\n\
             h = Histogram('nan_hist', 'NaN bound.', buckets=[0.5, float('nan')])\n\
             h.observe(0.25)",
        ])
        .output()
        .expect("python with prometheus_client (FERROCORN_TEST_PYTHON)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    vec![
        "counter_999991.db",
        "counter_999992.db",
        "histogram_aggregate.db",
        "counter_999993.db",
    ]
}

/// One scrape within a second: its text.
fn timed_scrape(s: &Server, metrics: std::net::SocketAddr) -> String {
    let t = Instant::now();
    let r = request(metrics, "GET", "/metrics", &[], b"")
        .unwrap_or_else(|e| panic!("scrape: {e}; stderr:\n{}", s.stderr()));
    assert_eq!(r.status, 200);
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "a scrape took {:?}",
        t.elapsed()
    );
    r.text()
}

#[test]
fn hostile_metric_files_cost_the_supervisor_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mdir = dir.path().join("metrics");
    std::fs::create_dir(&mdir).unwrap();
    let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], ferrocorn_tests::free_port()));
    let s = Server::builder()
        .args(["-w", "2", "--metrics-dir", mdir.to_str().unwrap()])
        .args(["--metrics-bind", "127.0.0.1"])
        .args(["--metrics-port", &metrics.port().to_string()])
        .metrics_at(Some(metrics))
        .start();
    assert_eq!(s.get("/healthz").status, 200);
    let names = plant(&mdir);
    for _ in 0..3 {
        let text = timed_scrape(&s, metrics);
        assert!(text.contains("gunicorn_workers 2"), "{text}");
        assert!(text.contains("nan_hist_count 1.0"), "{text}");
    }
    let hwm = status_kib(s.pid(), "VmHWM");
    eprintln!("the supervisor's peak RSS after 3 scrapes: {hwm} KiB");
    assert!(hwm < 16 * 1024, "the supervisor's peak RSS is {hwm} KiB");
    // Each bad file is named once, with why, however many scrapes read it.
    let log = s.stderr();
    for name in &names {
        assert_eq!(log.matches(name).count(), 1, "{name} in:\n{log}");
    }
    assert!(log.contains("a FIFO, not a regular file"), "{log}");
    assert!(log.contains("a symbolic link: not followed"), "{log}");
    assert!(log.contains("NaN bucket bound"), "{log}");

    // A killed worker is folded and replaced, scrapes still answer.
    let workers = children(s.pid());
    assert_eq!(workers.len(), 2);
    // SAFETY: kill() has no memory effects.
    unsafe { libc::kill(workers[0] as libc::pid_t, libc::SIGKILL) };
    let replaced = wait_for(Duration::from_secs(10), || {
        let now = children(s.pid());
        now.len() == 2 && !now.contains(&workers[0])
    });
    assert!(
        replaced,
        "the killed worker was not replaced:\n{}",
        s.stderr()
    );
    let text = timed_scrape(&s, metrics);
    assert!(
        sample(&text, "gunicorn_worker_restarts_total{reason=\"killed\"}") == Some(1.0),
        "{text}"
    );
    let hwm = status_kib(s.pid(), "VmHWM");
    assert!(hwm < 16 * 1024, "the supervisor's peak RSS is {hwm} KiB");

    // The same directory through `ferrocorn metrics DIR`.
    let mut cmd = ferrocorn();
    cmd.args(["metrics", mdir.to_str().unwrap()]);
    let out = run_to_end(cmd, Duration::from_secs(10));
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for name in &names {
        assert!(
            err.lines()
                .any(|l| l.starts_with("ferrocorn: warning: ") && l.contains(name)),
            "{name} in:\n{err}"
        );
    }
    assert!(String::from_utf8_lossy(&out.stdout).contains("nan_hist_count 1.0"));
}
