//! The supervisor's heartbeat checks (`murder_workers`) at their edges, with
//! the test binary as a real supervisor of forked workers: the SIGKILL that
//! follows a SIGABRT a worker ignores comes only after the grace; a worker
//! alive through a check without ever beating did not boot; heartbeats
//! count from when a stopped supervisor runs again; `--timeout 0` never
//! kills; a lost SIGTERM is sent again a second later, once, not sooner.
//! The supervisor is woken every 20 ms (SIGCHLD) where a check that
//! came too early would otherwise hide behind its once-a-second tick.

mod support;

use std::time::{Duration, Instant};

use support::{Server, get, poke, proc_state, send, wait_for};

/// `(tag, pid, ms)` of the worker's `ABRT`/`ALIVE` lines.
fn marks(err: &str, tag: &str, pid: i32) -> Vec<u64> {
    let prefix = format!("{tag} {pid} ");
    err.lines()
        .filter_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
        .collect()
}

#[test]
fn a_worker_ignoring_sigabrt_is_killed_after_the_grace() {
    let s = Server::start(&["--workers", "1", "--timeout", "1", "--mode", "abrtignore"]);
    let before = s.wait_workers("1 worker", |w| w.len() == 1);
    s.wait_ready(&before);
    let pid = before[0];
    let _poker = poke(s.pid);
    get(&s.addr(0), "/stall").unwrap();
    s.wait_workers("a replacement", |w| w.len() == 1 && w != before.as_slice());
    let err = s.stderr_with(&[
        &format!("WORKER TIMEOUT (pid:{pid})"),
        &format!("Worker (pid:{pid}) was sent SIGKILL"),
    ]);
    let abrt = marks(&err, "ABRT", pid);
    assert_eq!(abrt.len(), 1, "{err}");
    // The worker ran on (printing every 50 ms) until the SIGKILL, which
    // comes 1 s after the SIGABRT (less the worker's own latencies).
    let last = marks(&err, "ALIVE", pid).into_iter().max().unwrap_or(0);
    assert!(
        last >= abrt[0] + 600,
        "killed {} ms after SIGABRT; stderr:\n{err}",
        last.saturating_sub(abrt[0])
    );
}

#[test]
fn a_worker_alive_through_a_check_without_beating_did_not_boot() {
    let mut s = Server::start(&["--workers", "1", "--mode", "nobeat"]);
    let _poker = poke(s.pid);
    let status = s.wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(1));
    let err = s.stderr();
    assert!(
        err.contains("5 workers in a row died before serving"),
        "{err}"
    );
    assert_eq!(err.matches("Booting worker").count(), 5, "{err}");
}

#[test]
fn heartbeats_count_from_when_a_stopped_supervisor_runs_again() {
    let s = Server::start(&["--workers", "2", "--timeout", "2"]);
    let before = s.wait_workers("2 workers", |w| w.len() == 2);
    s.wait_ready(&before);
    // The whole server stops (a frozen container), for longer than the
    // timeout; the supervisor continues first.
    send(s.pid, libc::SIGSTOP);
    for &w in &before {
        send(w, libc::SIGSTOP);
    }
    wait_for("all stopped", Duration::from_secs(10), || {
        std::iter::once(s.pid)
            .chain(before.iter().copied())
            .all(|p| proc_state(p) == Some('T'))
    })
    .unwrap();
    // What is being tested is time passing while stopped.
    std::thread::sleep(Duration::from_millis(3000));
    send(s.pid, libc::SIGCONT);
    s.stderr_with(&["did not run for"]);
    for &w in &before {
        send(w, libc::SIGCONT);
    }
    // Checked every 20 ms for longer than the timeout: nobody is killed.
    let _poker = poke(s.pid);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(2500) {
        assert_eq!(s.workers(), before, "{}", s.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!s.stderr().contains("WORKER TIMEOUT"), "{}", s.stderr());
    get(&s.addr(0), "/").unwrap();
}

#[test]
fn timeout_zero_never_kills_a_stalled_worker() {
    let s = Server::start(&["--workers", "1", "--timeout", "0"]);
    let before = s.wait_workers("1 worker", |w| w.len() == 1);
    s.wait_ready(&before);
    get(&s.addr(0), "/stall").unwrap();
    let _poker = poke(s.pid);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(1500) {
        assert_eq!(s.workers(), before, "{}", s.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!s.stderr().contains("WORKER TIMEOUT"), "{}", s.stderr());
    get(&s.addr(0), "/").unwrap();
}

#[test]
fn a_lost_term_is_sent_again_a_second_later_not_sooner() {
    // The worker ignores the first SIGTERM (as one arriving while it
    // installs its handlers can be lost); the supervisor, checked every
    // 20 ms, sends it again once, RESEND (1 s) after the first.
    let mut s = Server::start(&[
        "--workers",
        "1",
        "--mode",
        "deaf",
        "--graceful-timeout",
        "5",
    ]);
    let w = s.wait_workers("1 worker", |w| w.len() == 1);
    s.wait_ready(&w);
    let pid = w[0];
    let _poker = poke(s.pid);
    s.signal(libc::SIGTERM);
    s.wait_exit(Duration::from_secs(15));
    let err = s.stderr();
    let lost = marks(&err, "LOST TERM", pid);
    let again = marks(&err, "TERM", pid);
    assert_eq!((lost.len(), again.len()), (1, 1), "{err}");
    // The worker sees a signal at its next loop turn (every 50 ms).
    let gap = again[0].saturating_sub(lost[0]);
    assert!(
        (900..2500).contains(&gap),
        "TERM sent again {gap} ms after the first; stderr:\n{err}"
    );
    assert!(!err.contains("was sent SIGKILL"), "{err}");
}
