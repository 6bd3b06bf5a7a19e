//! End-to-end tests: the test binary (a real supervisor with minimal
//! workers) runs as a separate process; the tests send it signals and
//! requests and watch its children.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod support;

use support::{BIN, Server, children, free_port, get, request, send, wait_for};

#[test]
fn serves_with_n_workers_and_stops_on_term() {
    let mut s = Server::start(&["--workers", "3"]);
    let w = s.wait_workers("3 workers", |w| w.len() == 3);
    s.wait_ready(&w);
    let body = get(&s.addr(0), "/").unwrap();
    assert!(w.contains(&body.parse().unwrap()), "{body} not in {w:?}");
    s.signal(libc::SIGTERM);
    let st = s.wait_exit(Duration::from_secs(10));
    assert!(st.success(), "{st:?}");
    let err = s.stderr_with(&["Handling signal: term", "ON_EXIT"]);
    assert!(err.contains("Handling signal: term"), "{err}");
    assert!(err.contains("ON_EXIT"), "{err}");
    for pid in w {
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists() || is_zombie_or_gone(pid));
    }
}

fn is_zombie_or_gone(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.split_whitespace().nth(2) == Some("Z"))
        .unwrap_or(true)
}

#[test]
fn sigkill_worker_is_replaced() {
    let metrics_port = free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let mut args = vec!["--workers", "2"];
    if cfg!(feature = "metrics") {
        args.extend(["--metrics", &metrics_addr]);
    }
    let s = Server::start(&args);
    let before = s.wait_workers("2 workers", |w| w.len() == 2);
    let victim = before[0];
    #[cfg(feature = "metrics")]
    {
        let pid_label = format!("pid=\"{victim}\"");
        wait_for("the victim's series", Duration::from_secs(5), || {
            scrape(&metrics_addr).contains(&pid_label)
        })
        .unwrap();
    }
    let t0 = Instant::now();
    send(victim, libc::SIGKILL);
    let after = s.wait_workers("a replacement", |w| w.len() == 2 && !w.contains(&victim));
    let new = *after.iter().find(|p| !before.contains(p)).unwrap();
    // Until the replacement answers a request itself.
    wait_for("the replacement to serve", Duration::from_secs(5), || {
        get(&s.addr(0), "/").is_ok_and(|b| b == new.to_string())
    })
    .unwrap();
    eprintln!("SIGKILL to replacement serving: {:?}", t0.elapsed());
    let err = s.stderr_with(&[
        &format!("Worker (pid:{victim}) was sent SIGKILL! Perhaps out of memory?"),
        &format!(" {victim} was sent SIGKILL\n"),
        &format!("POST_FORK 3 {new}"),
    ]);
    // Hooks: in the supervisor and in the child.
    assert!(
        err.contains("ON_STARTING 2") && err.contains("PRE_FORK 3"),
        "{err}"
    );
    assert!(err.contains(&format!("POST_FORK 3 {new}")), "{err}");
    assert!(
        err.contains(&format!("CHILD_EXIT 1 {victim} was sent SIGKILL"))
            || err.contains(&format!("CHILD_EXIT 2 {victim} was sent SIGKILL")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "Worker (pid:{victim}) was sent SIGKILL! Perhaps out of memory?"
        )),
        "{err}"
    );
    #[cfg(feature = "metrics")]
    {
        let text = scrape(&metrics_addr);
        assert!(!text.contains(&format!("pid=\"{victim}\"")), "{text}");
        assert!(
            text.contains(&format!("testbin_worker{{pid=\"{new}\"}} 1.0")),
            "{text}"
        );
        assert!(
            text.contains("gunicorn_worker_restarts_total{reason=\"killed\"} 1.0\n"),
            "{text}"
        );
        assert!(text.contains("gunicorn_workers 2.0\n"), "{text}");
    }
}

#[cfg(feature = "metrics")]
fn scrape(addr: &str) -> String {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return String::new();
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = write!(s, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn stalled_worker_is_killed_after_timeout() {
    let s = Server::start(&["--workers", "1", "--timeout", "1"]);
    let before = s.wait_workers("1 worker", |w| w.len() == 1);
    // Healthy workers outlive the timeout.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(s.workers(), before, "{}", s.stderr());
    get(&s.addr(0), "/stall").unwrap();
    let t0 = Instant::now();
    s.wait_workers("a replacement", |w| w.len() == 1 && w != before.as_slice());
    let took = t0.elapsed();
    eprintln!("stall to replacement: {took:?}");
    assert!(took >= Duration::from_millis(800), "{took:?}");
    let err = s.stderr_with(&[&format!("WORKER TIMEOUT (pid:{})", before[0])]);
    assert!(
        err.contains(&format!("WORKER TIMEOUT (pid:{})", before[0])),
        "{err}"
    );
    get(&s.addr(0), "/").unwrap();
}

#[test]
fn ttin_and_ttou_change_the_worker_count() {
    let s = Server::start(&["--workers", "1"]);
    s.wait_workers("1 worker", |w| w.len() == 1);
    s.signal(libc::SIGTTIN);
    s.wait_workers("2 workers", |w| w.len() == 2);
    s.signal(libc::SIGTTIN);
    let three = s.wait_workers("3 workers", |w| w.len() == 3);
    s.signal(libc::SIGTTOU);
    let two = s.wait_workers("2 workers", |w| w.len() == 2);
    // The oldest goes first.
    assert!(!two.contains(&three[0]), "{three:?} -> {two:?}");
    for _ in 0..3 {
        s.signal(libc::SIGTTOU);
    }
    s.wait_workers("1 worker", |w| w.len() == 1);
    // Never below one: still one a moment later.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.workers().len(), 1);
    let err = s.stderr_with(&["NWORKERS 1 -> 2", "NWORKERS 2 -> 1"]);
    assert!(
        err.contains("NWORKERS 1 -> 2") && err.contains("NWORKERS 2 -> 1"),
        "{err}"
    );
}

#[test]
fn hup_under_load_loses_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let reload = dir.path().join("workers");
    std::fs::write(&reload, "3").unwrap();
    let s = Server::start(&["--workers", "2", "--reload-file", reload.to_str().unwrap()]);
    let before = s.wait_workers("2 workers", |w| w.len() == 2);
    let addr = s.addr(0);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let addr = addr.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0u32, Vec::new());
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    match get(&addr, "/slow?ms=5") {
                        Ok(_) => ok += 1,
                        Err(e) => failed.push(e.to_string()),
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    s.signal(libc::SIGHUP);
    let after = s.wait_workers("3 new workers", |w| {
        w.len() == 3 && w.iter().all(|p| !before.contains(p))
    });
    std::thread::sleep(Duration::from_millis(200));
    s.signal(libc::SIGHUP);
    s.wait_workers("3 newer workers", |w| {
        w.len() == 3 && w.iter().all(|p| !after.contains(p))
    });
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (mut ok, mut failed) = (0, Vec::new());
    for c in clients {
        let (o, f) = c.join().unwrap();
        ok += o;
        failed.extend(f);
    }
    eprintln!(
        "requests during two reloads: {ok} ok, {} failed",
        failed.len()
    );
    assert!(failed.is_empty(), "{failed:?}");
    assert!(ok > 50, "{ok}");
}

#[test]
fn term_finishes_in_flight_requests() {
    let mut s = Server::start(&["--workers", "2", "--graceful-timeout", "10"]);
    let w = s.wait_workers("2 workers", |w| w.len() == 2);
    s.wait_ready(&w);
    let (tx, rx) = mpsc::channel();
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let addr = s.addr(0);
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut c = TcpStream::connect(&addr).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                write!(c, "GET /slow?ms=1000 HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
                tx.send(()).unwrap();
                let mut out = String::new();
                c.read_to_string(&mut out).map(|_| out)
            })
        })
        .collect();
    for _ in 0..4 {
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
    }
    let t0 = Instant::now();
    s.signal(libc::SIGTERM);
    for c in clients {
        let out = c.join().unwrap().expect("response");
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out:?}");
    }
    let st = s.wait_exit(Duration::from_secs(10));
    assert!(st.success());
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
}

/// gunicorn #3397: on TERM, connections already in the listen queue are
/// accepted and served before the listeners close.
#[test]
fn term_serves_connections_queued_in_the_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("q.sock");
    let unix = format!("unix:{}", sock.display());
    #[rustfmt::skip]
    let mut s = Server::start(&[
        "--workers", "1", "--graceful-timeout", "10", "--timeout", "0",
        "--bind", "127.0.0.1:0", "--bind", &unix,
    ]);
    let w = s.wait_workers("1 worker", |w| w.len() == 1);
    s.wait_ready(&w);
    // Freeze the worker so that connections wait in the queues.
    send(w[0], libc::SIGSTOP);
    let addr = s.addr(0);
    let mut clients: Vec<_> = (0..5)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || get(&addr, "/"))
        })
        .collect();
    wait_for("5 queued connections", Duration::from_secs(5), || {
        recv_q(&addr) == Some(5)
    })
    .unwrap();
    for _ in 0..2 {
        let c = UnixStream::connect(&sock).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        clients.push(std::thread::spawn(move || request(c, "/")));
    }
    s.signal(libc::SIGTERM);
    wait_for(
        "the supervisor to handle TERM",
        Duration::from_secs(5),
        || s.stderr().contains("Handling signal: term"),
    )
    .unwrap();
    // The supervisor must not tell the frozen worker to stop while its
    // queue holds connections: no SIGTERM becomes pending for it.
    let deadline = Instant::now() + Duration::from_millis(300);
    while Instant::now() < deadline {
        assert!(!term_pending(w[0]), "worker got SIGTERM with a full queue");
        std::thread::sleep(Duration::from_millis(10));
    }
    send(w[0], libc::SIGCONT);
    for c in clients {
        c.join().unwrap().expect("a queued connection is served");
    }
    assert!(s.wait_exit(Duration::from_secs(10)).success());
}

/// Is SIGTERM pending for the (stopped) process `pid`?
fn term_pending(pid: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("ShdPnd:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (libc::SIGTERM - 1)) != 0)
}

/// Run `ss` (iproute2), the independent witness of the queue lengths.
fn ss(args: &[&str]) -> std::process::Output {
    Command::new("ss")
        .args(args)
        .output()
        .expect("these tests need the `ss` tool (iproute2)")
}

/// `ss -ltn` Recv-Q of the listener on `addr` (the accept queue length).
fn recv_q(addr: &str) -> Option<u32> {
    let out = ss(&["-ltnH"]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() >= 4 && f[3] == addr).then(|| f[1].parse().ok())?
    })
}

#[cfg(all(feature = "metrics", feature = "tcpinfo"))]
#[test]
fn backlog_gauge_equals_the_real_queue() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("m.sock");
    let unix = format!("unix:{}", sock.display());
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    #[rustfmt::skip]
    let s = Server::start(&[
        "--workers", "2", "--timeout", "0", "--metrics", &metrics_addr,
        "--bind", "127.0.0.1:0", "--bind", "127.0.0.1:0", "--bind", &unix,
        "--update-interval", "0.05",
    ]);
    let w = s.wait_workers("2 workers", |w| w.len() == 2);
    s.wait_ready(&w);
    let (a, b) = (s.addr(0), s.addr(1));
    let (la, lb) = (format!("http://{a}"), format!("http://{b}"));
    let gauge = |name: &str, label: &str, v: u32| format!("{name}{{listener=\"{label}\"}} {v}.0\n");
    let pending = |label: &str, v: u32| gauge("gunicorn_pending_connections", label, v);
    let peak = |label: &str, v: u32| gauge("gunicorn_pending_connections_peak", label, v);
    wait_for("an empty queue", Duration::from_secs(5), || {
        scrape(&metrics_addr).contains(&pending(&la, 0))
    })
    .unwrap();
    let stop = |sig| {
        for p in &w {
            send(*p, sig);
        }
    };

    // Frozen workers: k connections wait on `a`, 2 on the unix socket.
    stop(libc::SIGSTOP);
    let k = 4;
    let tcp: Vec<TcpStream> = (0..k).map(|_| TcpStream::connect(&a).unwrap()).collect();
    let unix_conns: Vec<UnixStream> = (0..2)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    wait_for("ss to show the queue", Duration::from_secs(5), || {
        recv_q(&a) == Some(k) && recv_q_unix(&sock) == Some(2)
    })
    .unwrap();
    let text = scrape(&metrics_addr);
    stop(libc::SIGCONT);
    assert!(text.contains(&pending(&la, k)), "{text}");
    assert!(text.contains(&pending(&lb, 0)), "{text}");
    assert!(text.contains(&pending(&unix, 2)), "{text}");
    // Exactly one series per listener.
    assert_eq!(
        text.matches("gunicorn_pending_connections{").count(),
        3,
        "{text}"
    );
    assert!(text.contains(&peak(&la, k)), "{text}");
    let somax: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let cap = gauge("gunicorn_listen_backlog", &la, somax.min(2048));
    assert!(text.contains(&cap), "{text}");

    // The queue empties; the peak since the last scrape still shows k once.
    wait_for("the queue to drain", Duration::from_secs(5), || {
        recv_q(&a) == Some(0)
    })
    .unwrap();
    let text = scrape(&metrics_addr);
    assert!(
        text.contains(&pending(&la, 0)) && text.contains(&peak(&la, k)),
        "{text}"
    );
    let text = scrape(&metrics_addr);
    assert!(text.contains(&peak(&la, 0)), "{text}");

    // A queue that builds up and drains between two scrapes shows in the
    // peak (sampled every 50 ms).
    stop(libc::SIGSTOP);
    let more: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(&a).unwrap()).collect();
    wait_for("ss to show 2", Duration::from_secs(5), || {
        recv_q(&a) == Some(2)
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    stop(libc::SIGCONT);
    wait_for("the queue to drain", Duration::from_secs(5), || {
        recv_q(&a) == Some(0)
    })
    .unwrap();
    let text = scrape(&metrics_addr);
    assert!(
        text.contains(&pending(&la, 0)) && text.contains(&peak(&la, 2)),
        "{text}"
    );
    drop((tcp, unix_conns, more));
}

/// `ss -lx` Recv-Q of the unix listener at `path`.
#[cfg(all(feature = "metrics", feature = "tcpinfo"))]
fn recv_q_unix(path: &std::path::Path) -> Option<u32> {
    let out = ss(&["-lxnH"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let path = path.to_str()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() >= 5 && f[4] == path).then(|| f[2].parse().ok())?
    })
}

#[test]
fn unix_and_ipv6_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s.sock");
    // A stale socket file is replaced.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let unix = format!("unix:{}", sock.display());
    let s = Server::start(&["--bind", &unix, "--bind", "[::1]:0"]);
    assert_eq!(s.labels[0], unix);
    assert!(s.labels[1].starts_with("http://[::1]:"), "{:?}", s.labels);
    let c = UnixStream::connect(&sock).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    request(c, "/").unwrap();
    get(&s.addr(1), "/").unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o777);
    drop(s);

    // A regular file in the way is an error, not deleted.
    let file = dir.path().join("f");
    std::fs::write(&file, "x").unwrap();
    let out = Command::new(BIN)
        .args(["--bind", &format!("unix:{}", file.display())])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a socket"), "{err}");
    assert!(file.exists());
}

/// Run the test binary through `sh -c SCRIPT` with `listener` as fd 3.
fn spawn_with_fd3(listener: &TcpListener, script: &str) -> Server {
    use std::os::unix::process::CommandExt;
    let fd = std::os::fd::AsRawFd::as_raw_fd(listener);
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", script]);
    // SAFETY: only dup2 and fcntl, both async-signal-safe, run between fork
    // and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(fd, 3) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            libc::fcntl(3, libc::F_SETFD, 0);
            Ok(())
        });
    }
    Server::spawn(cmd)
}

#[test]
fn systemd_listen_fds() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    // The configured bind is ignored: systemd's socket is used.
    let s = spawn_with_fd3(
        &l,
        &format!("LISTEN_PID=$$ LISTEN_FDS=1 exec {BIN} --bind 127.0.0.1:1"),
    );
    drop(l);
    assert_eq!(s.labels, vec![format!("http://{addr}")]);
    get(&addr, "/").unwrap();
}

#[test]
fn fd_bind_and_foreign_listen_pid() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    // LISTEN_PID of another process: not for us; fd://3 names the socket.
    let s = spawn_with_fd3(
        &l,
        &format!("LISTEN_PID=1 LISTEN_FDS=1 exec {BIN} --bind fd://3"),
    );
    drop(l);
    assert_eq!(s.labels, vec![format!("http://{addr}")]);
    get(&addr, "/").unwrap();
    // fd://N that is not a socket is a clear error.
    let out = Command::new(BIN)
        .args(["--bind", "fd://0"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("fd 0 is not an open socket"), "{err}");
}

#[test]
fn bind_conflict_is_a_clear_error() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let t0 = Instant::now();
    let out = Command::new(BIN)
        .args(["--bind", &addr, "--bind-retries", "3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.matches("Connection in use: http://").count(),
        3,
        "{err}"
    );
    assert!(
        err.contains(&format!("error: can't listen on http://{addr}: ")),
        "{err}"
    );
    assert!(
        err.to_lowercase().contains("address already in use"),
        "{err}"
    );
    assert!(t0.elapsed() >= Duration::from_millis(100));
}

#[test]
fn workers_that_fail_to_boot_stop_the_server() {
    let out = Command::new(BIN)
        .args(["--workers", "2", "--mode", "bootfail"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("failed to boot (exit code 3)"), "{err}");

    let out = Command::new(BIN)
        .args(["--workers", "1", "--mode", "crash"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("5 workers in a row died before serving"),
        "{err}"
    );
    assert_eq!(err.matches("Booting worker").count(), 5, "{err}");
}

/// Workers that beat and then exit before the supervisor looked at their
/// heartbeat (max_requests under load) booted: they are replaced, not
/// counted as failing to boot.
#[test]
fn workers_that_beat_and_exit_at_once_are_replaced() {
    let mut s = Server::start(&["--workers", "1", "--mode", "beatexit"]);
    wait_for("12 workers booted", Duration::from_secs(10), || {
        s.stderr().matches("Booting worker").count() >= 12
    })
    .unwrap_or_else(|e| panic!("{e}; stderr:\n{}", s.stderr()));
    assert!(
        s.child.try_wait().unwrap().is_none(),
        "the supervisor stopped; stderr:\n{}",
        s.stderr()
    );
    let err = s.stderr();
    assert!(!err.contains("died before serving"), "{err}");
    s.signal(libc::SIGTERM);
    s.wait_exit(Duration::from_secs(10));
}

#[test]
fn quick_stop_on_int_and_sd_notify() {
    let dir = tempfile::tempdir().unwrap();
    let notify = dir.path().join("notify");
    let rx = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.env("NOTIFY_SOCKET", &notify).args(["--workers", "2"]);
    let mut s = Server::spawn(cmd);
    let mut buf = [0u8; 64];
    let n = rx.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"READY=1");
    s.signal(libc::SIGINT);
    let n = rx.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"STOPPING=1");
    assert!(s.wait_exit(Duration::from_secs(5)).success());
}

#[test]
fn usr2_reexecs_with_inherited_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("p.pid");
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let sock = dir.path().join("u.sock");
    let unix = format!("unix:{}", sock.display());
    #[rustfmt::skip]
    let mut args = vec![
        "--workers", "1", "--pidfile", pidfile.to_str().unwrap(),
        "--bind", "127.0.0.1:0", "--bind", &unix,
    ];
    if cfg!(feature = "metrics") {
        // The exporter's socket is handed over too.
        args.extend(["--metrics", &metrics_addr]);
    }
    let mut old = Server::start(&args);
    old.wait_workers("1 worker", |w| w.len() == 1);
    let addr = old.addr(0);
    let read_pid = |p: &std::path::Path| -> Option<i32> {
        std::fs::read_to_string(p).ok()?.trim().parse().ok()
    };
    assert_eq!(read_pid(&pidfile), Some(old.pid));
    // Requests all along the handover.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (addr, stop) = (addr.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                match get(&addr, "/") {
                    Ok(_) => ok += 1,
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed)
        })
    };
    old.signal(libc::SIGUSR2);
    let two = dir.path().join("p.pid.2");
    let mut new_pid = 0;
    wait_for(
        "the new supervisor's pidfile",
        Duration::from_secs(10),
        || {
            read_pid(&two).is_some_and(|p| {
                new_pid = p;
                true
            })
        },
    )
    .unwrap();
    assert_ne!(new_pid, old.pid);
    wait_for(
        "the new supervisor's worker",
        Duration::from_secs(10),
        || children(new_pid).len() == 1,
    )
    .unwrap();
    let new_worker = children(new_pid)[0];
    old.wait_ready(&[new_worker]);
    // Both generations serve the same sockets.
    wait_for("the new worker to serve", Duration::from_secs(5), || {
        get(&addr, "/").is_ok_and(|b| b == new_worker.to_string())
    })
    .unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, failed) = load.join().unwrap();
    eprintln!("requests during USR2: {ok} ok, {} failed", failed.len());
    assert!(failed.is_empty() && ok > 0, "{ok} {failed:?}");
    // The old supervisor stops, at once.
    let t0 = Instant::now();
    old.signal(libc::SIGTERM);
    assert!(old.wait_exit(Duration::from_secs(10)).success());
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    // The new one serves on, promoted.
    wait_for("the promotion", Duration::from_secs(10), || {
        read_pid(&pidfile) == Some(new_pid) && !two.exists()
    })
    .unwrap_or_else(|e| panic!("{e}: {}", old.stderr()));
    assert_eq!(get(&addr, "/").unwrap(), new_worker.to_string());
    // The unix socket file survived the old supervisor's exit.
    let c = UnixStream::connect(&sock).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(request(c, "/").unwrap(), new_worker.to_string());
    #[cfg(feature = "metrics")]
    {
        let text = scrape(&metrics_addr);
        assert!(
            text.contains(&format!("testbin_worker{{pid=\"{new_worker}\"}} 1.0")),
            "{text}"
        );
    }
    send(new_pid, libc::SIGTERM);
    wait_for(
        "the new supervisor to exit",
        Duration::from_secs(10),
        || is_zombie_or_gone(new_pid),
    )
    .unwrap();
    assert!(!pidfile.exists());
    // The promoted supervisor owns the socket file now.
    assert!(!sock.exists());
}

#[cfg(not(feature = "metrics"))]
#[test]
fn metrics_not_built_is_a_clear_error() {
    let out = Command::new(BIN)
        .args(["--metrics", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("metrics are not built into this binary"),
        "{err}"
    );
}

#[test]
fn usr1_is_forwarded_and_winch_stops_the_workers() {
    let mut s = Server::start(&["--workers", "2"]);
    let w = s.wait_workers("2 workers", |w| w.len() == 2);
    s.wait_ready(&w);
    s.signal(libc::SIGUSR1);
    wait_for("both workers to get USR1", Duration::from_secs(5), || {
        let err = s.stderr();
        w.iter().all(|p| err.contains(&format!("USR1 {p}")))
    })
    .unwrap();
    assert_eq!(s.workers(), w);
    s.signal(libc::SIGWINCH);
    s.wait_workers("no worker", |w| w.is_empty());
    let exits: Vec<String> = w.iter().map(|p| format!(" {p} 0\n")).collect();
    let err = s.stderr_with(&exits.iter().map(String::as_str).collect::<Vec<_>>());
    for p in &w {
        // Graceful: the worker's own exit path ran (worker_exit hook, code 0).
        assert!(err.contains(&format!(" {p} 0\n")), "{err}");
    }
    s.signal(libc::SIGTTIN);
    s.wait_workers("1 worker", |w| w.len() == 1);
    get(&s.addr(0), "/").unwrap();
    s.signal(libc::SIGQUIT);
    assert!(s.wait_exit(Duration::from_secs(5)).success());
}

#[test]
fn hup_rebinds_changed_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let reload = dir.path().join("conf");
    let s = Server::start(&["--workers", "1", "--reload-file", reload.to_str().unwrap()]);
    let w = s.wait_workers("1 worker", |w| w.len() == 1);
    let a = s.addr(0);
    let b = format!("127.0.0.1:{}", free_port());
    // Add a listener; the first one is kept (same address), not rebound.
    std::fs::write(&reload, format!("2 {a} {b}")).unwrap();
    s.signal(libc::SIGHUP);
    let w2 = s.wait_workers("2 new workers", |n| n.len() == 2 && !n.contains(&w[0]));
    s.wait_ready(&w2);
    get(&a, "/").unwrap();
    get(&b, "/").unwrap();
    let err = s.stderr_with(&[&format!("Listening at: http://{b}"), "ON_RELOAD 2"]);
    assert!(err.contains(&format!("Listening at: http://{b}")), "{err}");
    assert!(err.contains("ON_RELOAD 2"), "{err}");
    // Drop the first one: it closes once the old workers are gone.
    std::fs::write(&reload, format!("1 {b}")).unwrap();
    s.signal(libc::SIGHUP);
    s.wait_workers("1 newer worker", |n| n.len() == 1 && !w2.contains(&n[0]));
    wait_for("the old listener to close", Duration::from_secs(5), || {
        TcpStream::connect(&a).is_err()
    })
    .unwrap();
    get(&b, "/").unwrap();
    // A bad configuration keeps the running workers.
    std::fs::write(&reload, "x").unwrap();
    let before = s.workers();
    s.signal(libc::SIGHUP);
    wait_for("the reload error", Duration::from_secs(5), || {
        s.stderr()
            .contains("reload failed, keeping the running workers")
    })
    .unwrap();
    assert_eq!(s.workers(), before);
    // And workers = 0.
    std::fs::write(&reload, "0").unwrap();
    s.signal(libc::SIGHUP);
    s.stderr_with(&["workers must be at least 1"]);
    assert_eq!(s.workers(), before);
    // So does an address that cannot be bound; the others stay open.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();
    std::fs::write(&reload, format!("1 {b} {taken_addr}")).unwrap();
    s.signal(libc::SIGHUP);
    s.stderr_with(&[&format!("Connection in use: http://{taken_addr}")]);
    wait_for("the second reload error", Duration::from_secs(5), || {
        s.stderr()
            .matches("reload failed, keeping the running workers")
            .count()
            == 3
    })
    .unwrap();
    assert_eq!(s.workers(), before);
    get(&b, "/").unwrap();
}

#[test]
fn graceful_timeout_bounds_the_stop() {
    let mut cmd = Command::new(BIN);
    cmd.env("TESTBIN_VERBOSE", "1");
    cmd.args([
        "--workers",
        "1",
        "--graceful-timeout",
        "1",
        "--timeout",
        "0",
    ]);
    let mut s = Server::spawn(cmd);
    let w = s.wait_workers("1 worker", |w| w.len() == 1);
    s.wait_ready(&w);
    // One request that outlives the graceful timeout, one connection that
    // can never be accepted (the worker is frozen).
    let addr = s.addr(0);
    let slow = {
        let addr = addr.clone();
        std::thread::spawn(move || get(&addr, "/slow?ms=10000"))
    };
    wait_for(
        "the slow request to be accepted",
        Duration::from_secs(5),
        || s.stderr().contains(&format!("ACCEPTED {} 1", w[0])),
    )
    .unwrap();
    send(w[0], libc::SIGSTOP);
    let _queued = TcpStream::connect(&addr).unwrap();
    wait_for("1 queued", Duration::from_secs(5), || {
        recv_q(&addr) == Some(1)
    })
    .unwrap();
    let t0 = Instant::now();
    s.signal(libc::SIGTERM);
    let st = s.wait_exit(Duration::from_secs(5));
    let took = t0.elapsed();
    assert!(st.success(), "{st:?}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "{took:?}"
    );
    let err = s.stderr_with(&[
        "connections still queued on http://",
        "after the graceful timeout; sending SIGKILL",
    ]);
    assert!(err.contains("connections still queued on http://"), "{err}");
    assert!(
        err.contains("after the graceful timeout; sending SIGKILL"),
        "{err}"
    );
    assert!(slow.join().unwrap().is_err());
}

#[test]
fn a_slow_request_on_a_beating_worker_is_not_a_timeout() {
    let s = Server::start(&["--workers", "1", "--timeout", "1"]);
    let w = s.wait_workers("1 worker", |w| w.len() == 1);
    let body = get(&s.addr(0), "/slow?ms=2500").unwrap();
    assert_eq!(body, w[0].to_string());
    assert_eq!(s.workers(), w);
    assert!(!s.stderr().contains("WORKER TIMEOUT"));
}

#[test]
fn backlog_clamp_is_reported() {
    let s = Server::start(&["--backlog", "1000000"]);
    let somax = std::fs::read_to_string("/proc/sys/net/core/somaxconn").unwrap();
    let want = format!(
        "backlog 1000000 is clamped by the kernel to net.core.somaxconn = {}",
        somax.trim()
    );
    s.stderr_with(&[&want]);
}

#[test]
fn sd_notify_to_an_abstract_socket() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("ferrocorn-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let rx = std::os::unix::net::UnixDatagram::bind_addr(&addr).unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.env("NOTIFY_SOCKET", format!("@{name}"));
    let mut s = Server::spawn(cmd);
    let mut buf = [0u8; 64];
    let n = rx.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"READY=1");
    s.signal(libc::SIGTERM);
    let n = rx.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"STOPPING=1");
    assert!(s.wait_exit(Duration::from_secs(5)).success());
}

#[cfg(feature = "metrics")]
#[test]
fn metrics_directory_is_cleaned() {
    use std::os::unix::fs::PermissionsExt;
    // A shared directory: stale files of a previous run go at start, files
    // are 0600, the directory stays.
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("counter_999999.db");
    std::fs::write(&stale, b"old").unwrap();
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let mut s = Server::start(&[
        "--metrics",
        &metrics_addr,
        "--metrics-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!stale.exists());
    let w = s.wait_workers("1 worker", |w| w.len() == 1);
    wait_for("the worker's file", Duration::from_secs(5), || {
        scrape(&metrics_addr).contains(&format!("testbin_worker{{pid=\"{}\"}}", w[0]))
    })
    .unwrap();
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "db"))
        .collect();
    assert!(!files.is_empty());
    for f in files {
        let mode = f.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{:?}", f.path());
    }
    s.signal(libc::SIGTERM);
    assert!(s.wait_exit(Duration::from_secs(5)).success());
    assert!(dir.path().exists());

    // A private directory is removed at exit; the families' prefix is ours.
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    #[rustfmt::skip]
    let mut s = Server::start(&["--metrics", &metrics_addr, "--metrics-prefix", "myapp"]);
    wait_for("the prefixed families", Duration::from_secs(5), || {
        let text = scrape(&metrics_addr);
        text.contains("myapp_workers_target 1.0\n") && !text.contains("gunicorn_")
    })
    .unwrap();
    let err = s.stderr_with(&["/metrics from "]);
    let private = err
        .split("/metrics from ")
        .nth(1)
        .and_then(|r| r.lines().next())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| panic!("{err}"));
    assert!(private.is_dir());
    let mode = std::fs::metadata(&private).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    s.signal(libc::SIGTERM);
    assert!(s.wait_exit(Duration::from_secs(5)).success());
    assert!(!private.exists());
}

#[test]
fn reuse_port_lets_two_servers_share_a_port() {
    let addr = format!("127.0.0.1:{}", free_port());
    let a = Server::start(&["--bind", &addr, "--reuse-port", "true"]);
    let b = Server::start(&["--bind", &addr, "--reuse-port", "true"]);
    assert_eq!(a.labels, b.labels);
    let mut from = std::collections::HashSet::new();
    wait_for("both servers to answer", Duration::from_secs(10), || {
        from.insert(get(&addr, "/").unwrap());
        from.len() == 2
    })
    .unwrap();
}

#[test]
fn a_lost_term_is_sent_again() {
    let mut s = Server::start(&["--workers", "1", "--mode", "deaf"]);
    let w = s.wait_workers("1 worker", |w| w.len() == 1);
    s.wait_ready(&w);
    let t0 = Instant::now();
    s.signal(libc::SIGTERM);
    assert!(s.wait_exit(Duration::from_secs(5)).success());
    // Not the 30 s graceful timeout: the second TERM a second later works.
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    s.stderr_with(&[
        &format!("LOST TERM {}", w[0]),
        &format!("WORKER_EXIT 1 {} 0", w[0]),
    ]);
}
