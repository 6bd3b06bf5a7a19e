//! Signal handling, in its own test binary: the signals go to this process.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Client, TestApp, TestServer, wait_for};
use ferrocorn_worker::WorkerConfig;
use signal_hook::consts::{SIGQUIT, SIGTERM, SIGUSR1};
use signal_hook::low_level::raise;

#[test]
fn usr1_reopens_term_stops_gracefully_quit_stops_at_once() {
    let reopened = Arc::new(AtomicUsize::new(0));
    let r = reopened.clone();
    let mut s = TestServer::start_with(WorkerConfig::default(), Arc::new(TestApp), move |w| {
        w.handle_signals(true).on_reopen_logs(Arc::new(move || {
            r.fetch_add(1, Ordering::SeqCst);
        }))
    });
    let mut c = Client::new(s.connect());
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.response().status, 200);
    raise(SIGUSR1).unwrap();
    wait_for(Duration::from_secs(2), "USR1 handled", || {
        reopened.load(Ordering::SeqCst) == 1
    });
    // TERM: in-flight request finished, then exit.
    let mut busy = Client::new(s.connect());
    busy.send(b"GET /sleep?200 HTTP/1.1\r\nHost: x\r\n\r\n");
    wait_for(Duration::from_secs(2), "request started", || {
        s.stats.active_threads() == 1
    });
    raise(SIGTERM).unwrap();
    let r = busy.response();
    assert_eq!(r.status, 200);
    assert!(r.closes());
    s.join_within(Duration::from_secs(2)).unwrap();

    // QUIT: out at once, although a request is in flight.
    let mut s = TestServer::start_with(WorkerConfig::default(), Arc::new(TestApp), |w| {
        w.handle_signals(true)
    });
    let mut busy = Client::new(s.connect());
    busy.send(b"GET /sleep?3000 HTTP/1.1\r\nHost: x\r\n\r\n");
    wait_for(Duration::from_secs(2), "request started", || {
        s.stats.active_threads() == 1
    });
    let start = Instant::now();
    raise(SIGQUIT).unwrap();
    s.join_within(Duration::from_secs(2)).unwrap();
    assert!(start.elapsed() < Duration::from_millis(1500));
}
