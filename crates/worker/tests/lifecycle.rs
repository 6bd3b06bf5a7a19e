//! Stopping, limits on connections, max_requests, live numbers, heartbeat.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Client, TestApp, TestServer, wait_for};
use ferrocorn_worker::WorkerConfig;

/// An slog drain that keeps messages for assertions.
#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<String>>>);

impl slog::Drain for Collect {
    type Ok = ();
    type Err = slog::Never;
    fn log(&self, r: &slog::Record<'_>, _: &slog::OwnedKVList) -> Result<(), slog::Never> {
        self.0.lock().unwrap().push(r.msg().to_string());
        Ok(())
    }
}

impl Collect {
    fn logger(&self) -> slog::Logger {
        slog::Logger::root(self.clone(), slog::o!())
    }
    fn contains(&self, s: &str) -> bool {
        self.0.lock().unwrap().iter().any(|m| m.contains(s))
    }
}

#[test]
fn graceful_stop_finishes_in_flight_and_closes_idle() {
    let mut s = TestServer::start(
        WorkerConfig {
            threads: 2,
            ..WorkerConfig::default()
        },
        TestApp,
    );
    let mut idle = Client::new(s.connect());
    idle.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(idle.response().status, 200);
    let mut busy = Client::new(s.connect());
    busy.send(b"GET /sleep?400 HTTP/1.1\r\nHost: x\r\n\r\n");
    wait_for(Duration::from_secs(2), "the request to start", || {
        s.stats.active_threads() == 1
    });
    let start = Instant::now();
    s.stop.graceful();
    // The request in flight is answered, with Connection: close.
    let r = busy.response();
    assert_eq!(r.body_str(), "slept\n");
    assert!(r.closes());
    busy.assert_closed();
    // The idle connection is closed after the grace period (1 s), not at
    // once: its client may be sending a request right now.
    idle.assert_closed();
    let idle_closed = start.elapsed();
    assert!(
        idle_closed >= Duration::from_millis(900),
        "idle connection closed after {idle_closed:?}, before the grace period"
    );
    drop(idle);
    s.join_within(Duration::from_secs(3)).unwrap();
    assert!(start.elapsed() >= Duration::from_millis(900));
}

/// A keep-alive client sending its next request just after a graceful stop
/// began gets a full answer with `Connection: close`, not a reset.
#[test]
fn graceful_stop_answers_a_request_sent_right_after_it() {
    let mut s = TestServer::start(WorkerConfig::default(), TestApp);
    let mut c = Client::new(s.connect());
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 200);
    assert!(!r.closes());
    let start = Instant::now();
    s.stop.graceful();
    // The stop has begun once the worker closed its listener.
    wait_for(Duration::from_secs(2), "the listener to close", || {
        std::net::TcpStream::connect(s.addr).is_err()
    });
    c.send(b"GET /echo?next HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-query"), Some("next"));
    assert!(
        r.closes(),
        "answered during a graceful stop: Connection: close"
    );
    c.assert_closed();
    drop(c);
    // Nothing left: the worker returns at once, well before the grace
    // period of idle connections would end.
    s.join_within(Duration::from_secs(2)).unwrap();
    assert!(
        start.elapsed() < Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
}

/// The grace period of idle connections is bounded by graceful_timeout.
#[test]
fn graceful_stop_closes_idle_connections_within_graceful_timeout() {
    let mut s = TestServer::start(
        WorkerConfig {
            graceful_timeout: Duration::from_millis(300),
            ..WorkerConfig::default()
        },
        TestApp,
    );
    let mut idle = Client::new(s.connect());
    idle.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(idle.response().status, 200);
    let start = Instant::now();
    s.stop.graceful();
    // The client never closes its side: the worker still returns at the
    // graceful timeout.
    idle.assert_closed();
    s.join_within(Duration::from_secs(2)).unwrap();
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(1500),
        "{took:?}"
    );
}

#[test]
fn graceful_stop_serves_connections_waiting_in_the_backlog() {
    let mut s = TestServer::start(
        WorkerConfig {
            worker_connections: 1,
            ..WorkerConfig::default()
        },
        TestApp,
    );
    let mut first = Client::new(s.connect());
    first.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(first.response().status, 200);
    // At the limit: the second connection waits in the backlog.
    let mut second = Client::new(s.connect());
    second.send(b"GET /echo?queued HTTP/1.1\r\nHost: x\r\n\r\n");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(s.stats.active_connections(), 1);
    s.stop.graceful();
    first.assert_closed();
    let r = second.response();
    assert_eq!(r.header("x-query"), Some("queued"));
    assert!(r.closes());
    s.join_within(Duration::from_secs(2)).unwrap();
}

#[test]
fn worker_connections_limit_stops_accepting() {
    let s = TestServer::start(
        WorkerConfig {
            worker_connections: 2,
            ..WorkerConfig::default()
        },
        TestApp,
    );
    let mut a = Client::new(s.connect());
    let mut b = Client::new(s.connect());
    for c in [&mut a, &mut b] {
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(c.response().status, 200);
    }
    let mut third = Client::new(s.connect());
    third.send(b"GET /echo?third HTTP/1.1\r\nHost: x\r\n\r\n");
    third
        .stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    assert!(
        third.response_to(false).is_err(),
        "served beyond worker_connections"
    );
    assert_eq!(s.stats.active_connections(), 2);
    drop(a);
    third
        .stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(third.response().header("x-query"), Some("third"));
}

#[test]
fn graceful_timeout_bounds_the_stop() {
    let mut s = TestServer::start(
        WorkerConfig {
            graceful_timeout: Duration::from_millis(300),
            ..WorkerConfig::default()
        },
        TestApp,
    );
    let mut c = Client::new(s.connect());
    c.send(b"GET /sleep?3000 HTTP/1.1\r\nHost: x\r\n\r\n");
    wait_for(Duration::from_secs(2), "the request to start", || {
        s.stats.active_threads() == 1
    });
    let start = Instant::now();
    s.stop.graceful();
    s.join_within(Duration::from_secs(2)).unwrap();
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(1500),
        "{took:?}"
    );
}

#[test]
fn quick_stop_returns_at_once() {
    let mut s = TestServer::start(WorkerConfig::default(), TestApp);
    let mut c = Client::new(s.connect());
    c.send(b"GET /sleep?3000 HTTP/1.1\r\nHost: x\r\n\r\n");
    wait_for(Duration::from_secs(2), "the request to start", || {
        s.stats.active_threads() == 1
    });
    let start = Instant::now();
    s.stop.quick();
    s.join_within(Duration::from_secs(2)).unwrap();
    // Well before the request would have ended.
    assert!(start.elapsed() < Duration::from_millis(1500));
    c.assert_closed();
}

#[test]
fn max_requests_restarts_gracefully() {
    let log = Collect::default();
    let logger = log.logger();
    let mut s = TestServer::start_with(
        WorkerConfig {
            max_requests: 3,
            ..WorkerConfig::default()
        },
        Arc::new(TestApp),
        move |w| w.logger(logger),
    );
    let mut c = Client::new(s.connect());
    for i in 0..3 {
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let r = c.response();
        assert_eq!(r.status, 200);
        assert_eq!(r.closes(), i == 2, "request {i}");
    }
    c.assert_closed();
    s.join_within(Duration::from_secs(2)).unwrap();
    assert!(log.contains("Autorestarting worker after current request."));
    assert_eq!(s.stats.requests_served(), 3);
}

#[test]
fn max_requests_jitter_stays_in_range() {
    let mut s = TestServer::start(
        WorkerConfig {
            max_requests: 2,
            max_requests_jitter: 2,
            ..WorkerConfig::default()
        },
        TestApp,
    );
    let mut served = 0;
    let mut c = Client::new(s.connect());
    loop {
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let r = c.response();
        served += 1;
        if r.closes() {
            break;
        }
        assert!(served < 5);
    }
    assert!((2..=4).contains(&served), "{served}");
    s.join_within(Duration::from_secs(2)).unwrap();
}

#[test]
fn stats_follow_requests() {
    let s = TestServer::start(
        WorkerConfig {
            threads: 3,
            worker_connections: 7,
            ..WorkerConfig::default()
        },
        TestApp,
    );
    assert_eq!(s.stats.max_threads(), 3);
    assert_eq!(s.stats.max_connections(), 7);
    let mut clients: Vec<Client> = (0..2).map(|_| Client::new(s.connect())).collect();
    for c in &mut clients {
        c.send(b"GET /sleep?300 HTTP/1.1\r\nHost: x\r\n\r\n");
    }
    wait_for(Duration::from_secs(2), "two busy threads", || {
        let st = s.stats.snapshot();
        st.active_threads == 2 && st.pending_requests == 2 && st.active_connections == 2
    });
    for c in &mut clients {
        assert_eq!(c.response().status, 200);
    }
    wait_for(Duration::from_secs(2), "idle pool", || {
        let st = s.stats.snapshot();
        st.active_threads == 0 && st.pending_requests == 0 && st.requests_served == 2
    });
    drop(clients);
    wait_for(Duration::from_secs(2), "connections closed", || {
        s.stats.active_connections() == 0
    });
}

/// A pool whose every thread holds a request started before the previous
/// beat stops beating then, not once the newest request is `timeout` old:
/// with 2 threads, `timeout` 3 s and two requests of 2.5 s, no beat from
/// 1.2 s to 2.3 s after both started (beats come at least once a second),
/// so a supervisor killing at `timeout` without a beat kills a fully held
/// pool `timeout` after it filled. Before, the beats went on until the
/// requests were 3 s old, and the kill came `timeout` after that: twice the
/// timeout (a stuck Python worker with `--timeout 3` was replaced 5.8 s
/// after its last thread got stuck).
#[test]
fn heartbeat_stops_once_every_thread_is_held() {
    let beats = Arc::new(AtomicUsize::new(0));
    let b = beats.clone();
    let s = TestServer::start_with(
        WorkerConfig {
            threads: 2,
            timeout: Duration::from_secs(3),
            ..WorkerConfig::default()
        },
        Arc::new(TestApp),
        move |w| {
            w.heartbeat(Arc::new(move || {
                b.fetch_add(1, Ordering::SeqCst);
            }))
        },
    );
    let mut clients: Vec<Client> = (0..2)
        .map(|_| {
            let mut c = Client::new(s.connect());
            c.send(b"GET /sleep?2500 HTTP/1.1\r\nHost: x\r\n\r\n");
            c
        })
        .collect();
    wait_for(Duration::from_secs(2), "both requests to start", || {
        s.stats.active_threads() == 2
    });
    let full = Instant::now();
    std::thread::sleep(Duration::from_millis(1200));
    let before = beats.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(2300).saturating_sub(full.elapsed()));
    assert_eq!(
        beats.load(Ordering::SeqCst),
        before,
        "beat while both threads were held by requests started {:?} ago",
        full.elapsed()
    );
    for c in &mut clients {
        assert_eq!(c.response().status, 200);
    }
    let after = beats.load(Ordering::SeqCst);
    wait_for(Duration::from_secs(2), "beats to resume", || {
        beats.load(Ordering::SeqCst) > after
    });
}

#[test]
fn heartbeat_beats_and_stops_when_the_pool_is_stuck() {
    let beats = Arc::new(AtomicUsize::new(0));
    let b = beats.clone();
    let s = TestServer::start_with(
        WorkerConfig {
            threads: 1,
            timeout: Duration::from_millis(300),
            ..WorkerConfig::default()
        },
        Arc::new(TestApp),
        move |w| {
            w.heartbeat(Arc::new(move || {
                b.fetch_add(1, Ordering::SeqCst);
            }))
        },
    );
    // Idle worker: beats although nothing happens (a few per second).
    let start = beats.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(1100));
    let idle_beats = beats.load(Ordering::SeqCst) - start;
    assert!(
        (2..=12).contains(&idle_beats),
        "{idle_beats} beats in 1.1 s"
    );
    // The only thread is stuck longer than timeout: no beats.
    let mut c = Client::new(s.connect());
    c.send(b"GET /sleep?1500 HTTP/1.1\r\nHost: x\r\n\r\n");
    wait_for(Duration::from_secs(2), "the request to start", || {
        s.stats.active_threads() == 1
    });
    std::thread::sleep(Duration::from_millis(500));
    let before = beats.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        beats.load(Ordering::SeqCst),
        before,
        "beat while the pool was stuck"
    );
    assert_eq!(c.response().status, 200);
    let after = beats.load(Ordering::SeqCst);
    wait_for(Duration::from_secs(2), "beats to resume", || {
        beats.load(Ordering::SeqCst) > after
    });
}

#[test]
fn reopen_logs_and_parent_change() {
    let reopened = Arc::new(AtomicUsize::new(0));
    let r = reopened.clone();
    let mut s = TestServer::start_with(WorkerConfig::default(), Arc::new(TestApp), move |w| {
        w.on_reopen_logs(Arc::new(move || {
            r.fetch_add(1, Ordering::SeqCst);
        }))
        // Not our parent: the worker stops within about a second.
        .parent_pid(u32::MAX)
    });
    s.stop.reopen_logs();
    wait_for(Duration::from_secs(2), "reopen", || {
        reopened.load(Ordering::SeqCst) == 1
    });
    s.join_within(Duration::from_secs(3)).unwrap();
}

#[test]
fn client_that_never_reads_is_dropped_after_timeout() {
    let s = TestServer::start(
        WorkerConfig {
            stall_timeout: Duration::from_millis(300),
            ..WorkerConfig::default()
        },
        TestApp,
    );
    let mut c = Client::new(s.connect());
    // 32 MB: more than the socket buffers hold.
    c.send(b"GET /big?33554432 HTTP/1.1\r\nHost: x\r\n\r\n");
    wait_for(Duration::from_secs(1), "the connection to be held", || {
        s.stats.active_connections() == 1
    });
    let start = Instant::now();
    wait_for(
        Duration::from_secs(3),
        "the stalled connection to be closed",
        || s.stats.active_connections() == 0,
    );
    assert!(
        start.elapsed() >= Duration::from_millis(200),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(s.stats.pending_requests(), 0);
}

/// Siblings that always claim fewer connections and never accept: what the
/// worker is left with when the sibling it defers to is stuck.
#[derive(Default)]
struct StuckSibling {
    published: Mutex<Vec<Option<usize>>>,
}

impl ferrocorn_worker::Siblings for StuckSibling {
    fn publish(&self, open: Option<usize>) {
        self.published.lock().unwrap().push(open);
    }
    fn least_loaded(&self) -> Option<usize> {
        Some(0)
    }
}

#[test]
fn connections_left_to_a_stuck_sibling_are_still_served_and_loads_are_published() {
    let siblings = Arc::new(StuckSibling::default());
    let board: Arc<dyn ferrocorn_worker::Siblings> = siblings.clone();
    let mut s = TestServer::start_with(WorkerConfig::default(), Arc::new(TestApp), move |w| {
        w.siblings(board)
    });
    // From the third connection on this worker holds clearly more than the
    // sibling's 0 and leaves each new one to it; nobody takes them, so the
    // worker must take them itself.
    let mut clients: Vec<Client> = (0..8).map(|_| Client::new(s.connect())).collect();
    for c in &mut clients {
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(c.response().status, 200);
    }
    wait_for(Duration::from_secs(5), "8 connections", || {
        s.stats.active_connections() == 8
    });
    let seen = siblings.published.lock().unwrap().clone();
    assert_eq!(seen.first(), Some(&Some(0)), "{seen:?}");
    assert!(seen.contains(&Some(8)), "{seen:?}");
    // Only changes are published.
    assert!(seen.windows(2).all(|w| w[0] != w[1]), "{seen:?}");
    drop(clients);
    s.stop.graceful();
    s.join_within(Duration::from_secs(10)).unwrap();
    assert_eq!(siblings.published.lock().unwrap().last(), Some(&None));
}

/// A thread reading a body that trickles in is waiting for the client, not
/// stuck in the app: the heartbeat goes on while the only thread reads a
/// chunked body a piece every 150 ms for 1.5 s with `timeout` 400 ms (the
/// body is streamed to the app, not held by the loop). Before, the thread
/// counted as stuck from its request's start and the beats stopped, so a
/// supervisor killed the worker.
#[test]
fn a_thread_waiting_for_a_trickled_body_is_not_stuck() {
    let beats = Arc::new(AtomicUsize::new(0));
    let b = beats.clone();
    let s = TestServer::start_with(
        WorkerConfig {
            threads: 1,
            timeout: Duration::from_millis(400),
            ..WorkerConfig::default()
        },
        Arc::new(TestApp),
        move |w| {
            w.heartbeat(Arc::new(move || {
                b.fetch_add(1, Ordering::SeqCst);
            }))
        },
    );
    let mut c = Client::new(s.connect());
    c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    c.send(b"1\r\na\r\n");
    wait_for(Duration::from_secs(2), "the request to start", || {
        s.stats.active_threads() == 1
    });
    let start = Instant::now();
    let mut beats_late = 0;
    let mut pieces = 1;
    while start.elapsed() < Duration::from_millis(1500) {
        std::thread::sleep(Duration::from_millis(150));
        c.send(b"1\r\na\r\n");
        pieces += 1;
        if start.elapsed() > Duration::from_millis(600) && beats_late == 0 {
            beats_late = beats.load(Ordering::SeqCst);
        }
    }
    let end = beats.load(Ordering::SeqCst);
    assert_eq!(s.stats.active_threads(), 1, "the body is still being read");
    assert!(
        end > beats_late,
        "no heartbeat from 0.6 s to 1.5 s of a trickled body (timeout 400 ms)"
    );
    c.send(b"0\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, vec![b'a'; pieces]);
}

/// A retiring worker (SIGHUP, `ShutdownHandle::retire`) leaves the
/// connection waiting in the backlog to the next worker on the same
/// listener, where a graceful stop (the whole server stopping) serves it
/// itself (`graceful_stop_serves_connections_waiting_in_the_backlog`).
#[test]
fn retire_leaves_the_backlog_to_the_next_worker() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let spare = listener.try_clone().unwrap();
    let config = WorkerConfig {
        worker_connections: 1,
        ..WorkerConfig::default()
    };
    let mut s = TestServer::start_on(listener, config.clone(), Arc::new(TestApp), |w| w);
    let mut first = Client::new(s.connect());
    first.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(first.response().status, 200);
    // At the limit: the second connection waits in the backlog.
    let mut second = Client::new(s.connect());
    second.send(b"GET /echo?queued HTTP/1.1\r\nHost: x\r\n\r\n");
    s.stop.retire();
    first.assert_closed();
    s.join_within(Duration::from_secs(3)).unwrap();
    assert_eq!(
        s.stats.requests_served(),
        1,
        "the retired worker served the queue"
    );
    // The next worker on the same listener serves it.
    let _next = TestServer::start_on(spare, config, Arc::new(TestApp), |w| w);
    let r = second.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-query"), Some("queued"));
}
