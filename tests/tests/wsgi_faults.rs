//! Faults under load with a Python app (issue 25): the fault tests of
//! tests/tests/faults.rs, run against a WSGI app (tests/wsgi/faultapp.py,
//! copied to a scratch directory) in place of the built-in Rust app, with
//! the same load generator (`ferrocorn_tests::load`: keep-alive clients, no
//! retry, every request that gets no complete answer counted as failed) and
//! the same zero-loss standard. Each test is bounded in time, talks to
//! 127.0.0.1 only and prints its request counts.
//!
//! The app is plain WSGI (no framework), so it needs no virtualenv: the
//! interpreter ferrocorn links runs it. `PYTHONDONTWRITEBYTECODE` keeps a
//! stale `.pyc` from hiding a rewritten module.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ferrocorn_tests::load::{
    Conn, Ferrocorn, Load, assert_no_loss, get_once, read_response, report, serial, signal,
    socket_inodes, tcp_inodes,
};
use ferrocorn_tests::{polls_listener, wait_for};

/// The app's source (tests/wsgi/faultapp.py).
fn app_source() -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("wsgi/faultapp.py");
    fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Writes the app into `dir` with `VERSION = "version"`.
fn write_app(dir: &Path, version: &str) {
    let text = app_source().replace("VERSION = \"v0\"", &format!("VERSION = \"{version}\""));
    assert!(text.contains(&format!("VERSION = \"{version}\"")));
    fs::write(dir.join("faultapp.py"), text).expect("write the app");
}

/// A scratch directory with the app (version `v0`) and a `state` directory
/// the app notes its slow and stuck requests in.
fn app_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("ferrocorn-pyfaults")
        .tempdir()
        .expect("tempdir");
    write_app(dir.path(), "v0");
    fs::create_dir(dir.path().join("state")).expect("state dir");
    dir
}

/// `ferrocorn --chdir DIR -w WORKERS ARGS faultapp`, metrics off; waits until
/// `/` answers and `workers` workers run and accept.
fn python_server(dir: &Path, workers: usize, args: &[&str]) -> Ferrocorn {
    let chdir = dir.to_str().expect("utf-8 path");
    let w = workers.to_string();
    let mut all = vec!["--chdir", chdir, "-w", &w];
    all.extend_from_slice(args);
    all.push("faultapp");
    let state = dir.join("state");
    let f = Ferrocorn::start_env(
        &all,
        workers,
        false,
        &[
            ("PYTHONDONTWRITEBYTECODE", "1"),
            ("FERROCORN_TEST_STATE", state.to_str().expect("utf-8 path")),
            ("VIRTUAL_ENV", ""),
        ],
    );
    // One worker answering is not all of them: each imports the app before
    // it accepts, and a load started earlier lands on the first one only.
    let accepting = wait_for(Duration::from_secs(20), || {
        f.workers()
            .iter()
            .all(|&w| polls_listener(w, f.addr.port()))
    });
    assert!(
        accepting,
        "not every worker accepts; stderr:\n{}",
        f.stderr()
    );
    f
}

/// Lines the app noted in `state/name`.
fn noted(dir: &Path, name: &str) -> usize {
    fs::read_to_string(dir.join("state").join(name))
        .unwrap_or_default()
        .lines()
        .count()
}

/// The whole error log (the guard's `stderr()` is its tail).
fn full_stderr(f: &Ferrocorn) -> String {
    fs::read_to_string(f.tmp.path().join("stderr.log")).unwrap_or_default()
}

/// Resident memory of `pid` in bytes (VmRSS), 0 once it is gone.
fn rss(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Waits until the workers are `n` new ones (none of `old`), each polling
/// the listener (its app imported, accepting).
fn wait_replaced(f: &Ferrocorn, old: &BTreeSet<u32>, n: usize, within: Duration) -> bool {
    wait_for(within, || {
        let now = f.workers();
        now.len() == n
            && now.is_disjoint(old)
            && now.iter().all(|&w| polls_listener(w, f.addr.port()))
    })
}

/// HUP every 2 s under load, the app's code changed before each HUP
/// (without `--preload`): no request fails, and once the old workers are
/// gone every new request gets the new code. 3 HUPs, 6 keep-alive clients,
/// 20 checks of the version after each HUP.
#[test]
fn python_hup_every_2s_deploys_new_code_with_no_failed_request() {
    let _serial = serial();
    let dir = app_dir();
    let f = python_server(dir.path(), 2, &["--threads", "4"]);
    let load = Load::start(f.addr, 6, "/", Duration::from_secs(60));
    let mut last_hup = Instant::now();
    let mut checked = 0;
    for v in 1..=3 {
        let version = format!("v{v}");
        // One HUP every 2 s (or at once when the last took longer).
        thread::sleep(Duration::from_secs(2).saturating_sub(last_hup.elapsed()));
        write_app(dir.path(), &version);
        let before = f.workers();
        last_hup = Instant::now();
        signal(f.pid(), libc::SIGHUP);
        assert!(
            wait_replaced(&f, &before, 2, Duration::from_secs(20)),
            "HUP {v}: workers {before:?} not replaced ({:?}); stderr:\n{}",
            f.workers(),
            f.stderr()
        );
        let took = last_hup.elapsed();
        for i in 0..20 {
            let r = get_once(f.addr, "/").unwrap_or_else(|e| panic!("HUP {v}: check {i}: {e}"));
            let text = String::from_utf8_lossy(&r.body).into_owned();
            assert!(
                r.status == 200 && text.starts_with(&format!("{version} ")),
                "HUP {v}: check {i} after the old workers left got {} {text:?}, not {version}",
                r.status
            );
            checked += 1;
        }
        println!(
            "python hup {v}: new workers {:?} after {took:?}",
            f.workers()
        );
    }
    let t = load.finish();
    println!("python hup: {checked} requests after the HUPs all got the new code");
    assert_no_loss("python hup every 2 s", &t, &f, 200);
}

/// TERM with 6 slow Python requests (2 s each) in the app on 2 workers:
/// every one is answered 200 and the server exits within the graceful
/// timeout.
#[test]
fn python_term_with_slow_requests_in_flight() {
    let _serial = serial();
    let dir = app_dir();
    let mut f = python_server(
        dir.path(),
        2,
        &["--threads", "6", "--graceful-timeout", "10"],
    );
    const SLOW: usize = 6;
    let slow: Vec<Conn> = (0..SLOW)
        .map(|i| {
            let mut c = Conn::open(f.addr, Duration::from_secs(15))
                .unwrap_or_else(|e| panic!("slow connection {i}: {e}"));
            c.send("/sleep/2000").expect("send a slow request");
            c
        })
        .collect();
    // Every slow request is in the app (threads enough for any spread).
    assert!(
        wait_for(Duration::from_secs(10), || noted(dir.path(), "started")
            == SLOW),
        "{} of {SLOW} slow requests started; stderr:\n{}",
        noted(dir.path(), "started"),
        f.stderr()
    );
    let t0 = Instant::now();
    signal(f.pid(), libc::SIGTERM);
    let readers: Vec<JoinHandle<Result<u16, String>>> = slow
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            thread::spawn(move || {
                read_response(&mut c.r)
                    .map(|r| r.status)
                    .map_err(|e| format!("slow request {i}: {e}"))
            })
        })
        .collect();
    let answers: Vec<Result<u16, String>> = readers
        .into_iter()
        .map(|h| h.join().expect("reader"))
        .collect();
    let exit = f.wait_exit(Duration::from_secs(12));
    let answered = answers.iter().filter(|a| matches!(a, Ok(200))).count();
    println!(
        "python term: {answered}/{SLOW} slow requests in flight answered 200: {answers:?}; exit {exit:?} {:?} after TERM",
        t0.elapsed()
    );
    assert_eq!(
        answered,
        SLOW,
        "python term: {answers:?}; stderr:\n{}",
        f.stderr()
    );
    assert!(
        exit.is_some_and(|s| s.success()),
        "python term: exit {exit:?} within 12 s (graceful timeout 10 s); stderr:\n{}",
        f.stderr()
    );
}

/// SIGKILL of a worker under load (8 keep-alive clients on 2 workers; the
/// one holding the most of them): only the requests on the killed worker's
/// connections fail, at most one per connection, and a new worker takes its
/// place.
#[test]
fn python_sigkill_of_a_worker_fails_only_its_connections() {
    let _serial = serial();
    let dir = app_dir();
    let f = python_server(dir.path(), 2, &["--threads", "4"]);
    let load = Load::start(f.addr, 8, "/", Duration::from_secs(60));
    // Which client is on which worker, right before the kill; the victim
    // is the worker holding the most clients (the kill must cut some).
    let inodes = tcp_inodes(f.addr);
    let (victim, on_victim) = f
        .workers()
        .into_iter()
        .map(|w| {
            let sockets = socket_inodes(w);
            let on: Vec<bool> = load
                .current
                .iter()
                .map(|c| {
                    c.lock()
                        .unwrap()
                        .and_then(|local| inodes.get(&local))
                        .is_some_and(|inode| sockets.contains(inode))
                })
                .collect();
            (w, on)
        })
        .max_by_key(|(_, on)| on.iter().filter(|&&v| v).count())
        .expect("a worker");
    signal(victim, libc::SIGKILL);
    let replaced = wait_for(Duration::from_secs(20), || {
        let w = f.workers();
        w.len() == 2 && !w.contains(&victim) && w.iter().all(|&p| polls_listener(p, f.addr.port()))
    });
    let t = load.finish();
    report("python sigkill", &t);
    let victims = on_victim.iter().filter(|&&v| v).count();
    let failed_elsewhere: u64 = t
        .per_client
        .iter()
        .zip(&on_victim)
        .filter(|(_, v)| !**v)
        .map(|(c, _)| c.failed)
        .sum();
    println!(
        "python sigkill: {victims} of {} clients were on the killed worker {victim}; workers now {:?}",
        on_victim.len(),
        f.workers()
    );
    assert!(
        replaced,
        "python sigkill: worker {victim} not replaced ({:?}); stderr:\n{}",
        f.workers(),
        f.stderr()
    );
    assert!(
        victims > 0 && victims < on_victim.len(),
        "python sigkill: {victims} of {} clients on the killed worker: the kill must cut some and spare some",
        on_victim.len()
    );
    assert_eq!(
        failed_elsewhere,
        0,
        "python sigkill: clients on the other worker saw failures: {:?}",
        t.first_errors()
    );
    assert!(
        t.failed <= victims as u64,
        "python sigkill: {} failures but only {victims} connections were on the killed worker",
        t.failed
    );
    assert!(t.ok >= 100, "python sigkill: only {} requests served", t.ok);
}

/// Workers recycled at `--max-requests 100 --max-requests-jitter 50` under
/// load (6 keep-alive clients), until 6 recycles were seen: no request
/// fails.
#[test]
fn python_max_requests_with_jitter_under_load() {
    let _serial = serial();
    let dir = app_dir();
    let f = python_server(
        dir.path(),
        2,
        &[
            "--threads",
            "4",
            "--max-requests",
            "100",
            "--max-requests-jitter",
            "50",
        ],
    );
    let first = f.workers();
    let load = Load::start(f.addr, 6, "/", Duration::from_secs(60));
    let mut seen = first.clone();
    let recycled = wait_for(Duration::from_secs(40), || {
        seen.extend(f.workers());
        seen.len() >= first.len() + 6
    });
    let t = load.finish();
    println!(
        "python max_requests: {} workers in all ({} recycles seen), {} requests answered",
        seen.len(),
        seen.len() - first.len(),
        t.ok
    );
    assert!(
        recycled,
        "python max_requests: only {} recycles in 40 s; stderr:\n{}",
        seen.len() - first.len(),
        f.stderr()
    );
    assert_no_loss("python max_requests with jitter", &t, &f, 300);
}

/// A storm of app exceptions (4 clients asking for `/raise` back to back)
/// beside 4 clients of `/`, until 500 exceptions were answered: every one
/// is a 500 with its traceback in the error log, the other clients lose
/// nothing, and no worker dies.
#[test]
fn python_exception_storm_every_one_a_500_no_worker_dies() {
    let _serial = serial();
    let dir = app_dir();
    let f = python_server(dir.path(), 2, &["--threads", "4"]);
    let before = f.workers();
    let marker = "RuntimeError: an app exception on purpose";
    let storm = Load::start_expecting(f.addr, 4, "/raise", Duration::from_secs(60), 500);
    let normal = Load::start(f.addr, 4, "/", Duration::from_secs(60));
    let logged = wait_for(Duration::from_secs(40), || {
        full_stderr(&f).matches(marker).count() >= 500
    });
    let storm = storm.finish();
    let normal = normal.finish();
    // Each answered exception's traceback, all of them written.
    let tracebacks = || full_stderr(&f).matches(marker).count() as u64;
    let complete = wait_for(Duration::from_secs(5), || tracebacks() >= storm.ok);
    println!(
        "python exception storm: {} answered 500 ({} tracebacks logged), workers {before:?} -> {:?}",
        storm.ok,
        tracebacks(),
        f.workers()
    );
    assert!(logged, "fewer than 500 exceptions logged in 40 s");
    assert_no_loss(
        "python exception storm: /raise, 500 expected",
        &storm,
        &f,
        500,
    );
    assert_no_loss(
        "python exception storm: the other clients",
        &normal,
        &f,
        100,
    );
    assert!(
        complete && tracebacks() == storm.ok,
        "{} tracebacks for {} answered exceptions",
        tracebacks(),
        storm.ok
    );
    assert_eq!(
        f.workers(),
        before,
        "a worker died in the storm; stderr:\n{}",
        f.stderr()
    );
}

/// One worker with 3 threads and `--timeout 6`. One thread stuck in the app
/// (waiting on an event never set) while 4 clients are served by the other
/// two for 8 s: the worker is spared (same pid, no WORKER TIMEOUT, nothing
/// failed). Then the other two threads get stuck too: the worker is killed
/// (WORKER TIMEOUT) at the timeout, at least 6 s and at most 9.5 s after its
/// last thread got stuck (heartbeats come at least once a second and the
/// supervisor looks every second), and a new one serves. Before, the kill
/// came twice the timeout after the pool filled (7.9 s with `--timeout 4`).
#[test]
fn python_one_stuck_thread_is_spared_a_stuck_pool_is_killed() {
    let _serial = serial();
    let dir = app_dir();
    let timeout = Duration::from_secs(6);
    let f = python_server(dir.path(), 1, &["--threads", "3", "--timeout", "6"]);
    let worker = *f.workers().iter().next().expect("a worker");
    let stuck = |i: usize| {
        let mut c = Conn::open(f.addr, Duration::from_secs(30)).expect("connect");
        c.send("/stuck").expect("send /stuck");
        assert!(
            wait_for(Duration::from_secs(10), || noted(dir.path(), "stuck") == i),
            "stuck request {i} did not reach the app; stderr:\n{}",
            f.stderr()
        );
        c
    };
    let _first = stuck(1);
    let load = Load::start(f.addr, 4, "/", Duration::from_secs(60));
    // Longer than the timeout, the stuck request in the app throughout.
    thread::sleep(timeout + Duration::from_secs(2));
    let t = load.finish();
    println!("python stuck thread: worker {worker} -> {:?}", f.workers());
    assert_no_loss("python one stuck thread of 3", &t, &f, 100);
    assert_eq!(
        f.workers(),
        [worker].into(),
        "a worker with one stuck thread was replaced; stderr:\n{}",
        f.stderr()
    );
    assert!(
        !full_stderr(&f).contains("WORKER TIMEOUT"),
        "{}",
        f.stderr()
    );

    // The whole pool stuck.
    let _second = stuck(2);
    let _third = stuck(3);
    let full = Instant::now();
    let gone = wait_for(Duration::from_secs(20), || !f.workers().contains(&worker));
    let killed_after = full.elapsed();
    let old: BTreeSet<u32> = [worker].into();
    let replaced = wait_replaced(&f, &old, 1, Duration::from_secs(20));
    println!(
        "python stuck pool: worker {worker} killed {killed_after:?} after its last thread got stuck (timeout {timeout:?}), replaced by {:?}",
        f.workers()
    );
    assert!(
        gone && replaced,
        "a worker with its 3 threads stuck was not replaced; stderr:\n{}",
        f.stderr()
    );
    assert!(
        full_stderr(&f).contains(&format!("WORKER TIMEOUT (pid:{worker})")),
        "{}",
        f.stderr()
    );
    assert!(
        killed_after >= timeout && killed_after <= timeout + Duration::from_millis(3500),
        "the stuck pool was killed {killed_after:?} after it filled (timeout {timeout:?})"
    );
    assert_eq!(
        get_once(f.addr, "/").map(|r| r.status).ok(),
        Some(200),
        "the new worker does not serve"
    );
}

/// An app that leaks 2 MiB on every `/leak/2048` (2 clients) while 2
/// clients ask for `/`, on 2 workers with `--max-requests 40
/// --max-requests-jitter 10`: each worker grows (the leak is real) but is
/// recycled before it holds more than its 50 requests' worth, and no
/// request of either kind fails. Runs until 12 workers were recycled.
#[test]
fn python_leaking_worker_is_bounded_by_max_requests() {
    let _serial = serial();
    let dir = app_dir();
    let f = python_server(
        dir.path(),
        2,
        &[
            "--threads",
            "2",
            "--max-requests",
            "40",
            "--max-requests-jitter",
            "10",
        ],
    );
    let first = f.workers();
    let base = first.iter().map(|&w| rss(w)).max().unwrap_or(0);
    const MIB: u64 = 1 << 20;
    // A worker serves at most 50 requests, each leaking at most 2 MiB; the
    // rest is the interpreter's own slack.
    let bound = base + 50 * 2 * MIB + 30 * MIB;
    let leak = Load::start(f.addr, 2, "/leak/2048", Duration::from_secs(90));
    let others = Load::start(f.addr, 2, "/", Duration::from_secs(90));
    let mut seen = first.clone();
    let mut peak = 0u64;
    let mut peak_total = 0u64;
    let leaked = wait_for(Duration::from_secs(60), || {
        let now = f.workers();
        let each: Vec<u64> = now.iter().map(|&w| rss(w)).collect();
        peak = peak.max(each.iter().copied().max().unwrap_or(0));
        peak_total = peak_total.max(each.iter().sum());
        seen.extend(now);
        // Enough once 12 workers were recycled.
        seen.len() >= first.len() + 12
    });
    let leak = leak.finish();
    let others = others.finish();
    println!(
        "python leak: {} leaking requests (2 MiB each: {} MiB leaked in all, on 2 workers without a recycle) and {} others answered; {} workers in all; worker RSS {:.0} MiB at start, peak {:.0} MiB (bound {:.0} MiB), peak of all workers together {:.0} MiB",
        leak.ok,
        leak.ok * 2,
        others.ok,
        seen.len(),
        base as f64 / MIB as f64,
        peak as f64 / MIB as f64,
        bound as f64 / MIB as f64,
        peak_total as f64 / MIB as f64
    );
    assert!(
        leaked,
        "only {} recycles in 60 s; stderr:\n{}",
        seen.len() - first.len(),
        f.stderr()
    );
    assert_no_loss("python leak: leaking requests", &leak, &f, 150);
    assert_no_loss("python leak: the other clients", &others, &f, 100);
    assert!(
        peak > base + 20 * MIB,
        "the workers did not grow: peak {peak} bytes, {base} at start (is the leak real?)"
    );
    assert!(
        peak <= bound,
        "a worker reached {} MiB (bound {} MiB)",
        peak / MIB,
        bound / MIB
    );
}
