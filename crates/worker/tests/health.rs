//! `health_path`: answered by the event loop, not the app; 200 while the
//! worker serves (also with every pool thread busy), 503 once it stops.

mod common;

use std::net::TcpStream;
use std::time::Duration;

use common::{Client, TestApp, TestServer, wait_for};
use ferrocorn_worker::WorkerConfig;

fn config(threads: usize) -> WorkerConfig {
    WorkerConfig {
        threads,
        health_path: Some("/healthz".to_owned()),
        ..WorkerConfig::default()
    }
}

/// Starts `GET /sleep?ms` on a new connection and waits until the pool's
/// only thread runs it. (Keep `ms` well under the client's 5 s read
/// timeout: the answer is read after the probes.)
fn occupy_the_pool(s: &TestServer, ms: u64) -> Client {
    let mut busy = Client::new(s.connect());
    busy.send(format!("GET /sleep?{ms} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    wait_for(Duration::from_secs(5), "the slow request to start", || {
        s.stats.active_threads() == 1
    });
    busy
}

#[test]
fn answers_200_while_every_app_thread_is_busy() {
    let s = TestServer::start(config(1), TestApp);
    let mut busy = occupy_the_pool(&s, 3000);

    // A new connection, and a second probe on it (keep-alive), a HEAD and
    // a probe with a query string: all answered while the slow request
    // still holds the only thread.
    let mut probe = Client::new(s.connect());
    probe.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = probe.response();
    assert_eq!((r.status, r.body_str()), (200, "ok\n"));
    assert!(!r.closes(), "a probe keeps the connection alive");
    assert_eq!(r.header("cache-control"), Some("no-store"));
    probe.send(b"HEAD /healthz?full=1 HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = probe.response_to(true).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("3"));
    // Pipelined: both answered in order.
    probe.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(probe.response().status, 200);
    let r = probe.response();
    assert_eq!(r.status, 200);
    assert!(r.closes());
    probe.assert_closed();
    assert_eq!(
        (s.stats.active_threads(), s.stats.pending_requests()),
        (1, 1),
        "the slow request is still running: the probes did not wait for it"
    );
    assert_eq!(s.stats.requests_served(), 0, "probes are not requests");

    // Other methods on the path are refused by the loop, never the app's.
    let mut post = Client::new(s.connect());
    post.send(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi");
    let r = post.response();
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    assert!(r.closes());
    post.assert_closed();

    s.stop.graceful();
    assert_eq!(busy.response().body_str(), "slept\n");
    assert_eq!(s.stats.requests_served(), 1);
}

#[test]
fn answers_503_and_closes_once_stopping() {
    let mut s = TestServer::start(config(1), TestApp);
    let mut busy = occupy_the_pool(&s, 3000);
    // A probe whose head is half sent when the stop begins: the worker
    // keeps reading it during the graceful stop.
    let mut probe = Client::new(s.connect());
    probe.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(probe.response().status, 200);
    probe.send(b"GET /healthz HTTP/1.1\r\n");
    s.stop.graceful();
    // The worker held the only copy of the listener and closes it when it
    // begins to stop: a refused connection says it did.
    wait_for(
        Duration::from_secs(5),
        "the worker to stop listening",
        || TcpStream::connect(s.addr).is_err(),
    );
    probe.send(b"Host: x\r\n\r\n");
    let r = probe.response();
    assert_eq!((r.status, r.body_str()), (503, "stopping\n"));
    assert!(r.closes(), "503 comes with Connection: close");
    probe.assert_closed();
    // The request in flight is still served.
    assert_eq!(busy.response().body_str(), "slept\n");
    s.join_within(Duration::from_secs(10)).unwrap();
}

#[test]
fn max_requests_turns_the_probe_to_503() {
    // The recycle after `max_requests` is a stop too; probes do not count
    // towards it (three probes, then the one request that ends the worker).
    let mut s = TestServer::start(
        WorkerConfig {
            max_requests: 1,
            ..config(1)
        },
        TestApp,
    );
    let mut probe = Client::new(s.connect());
    for _ in 0..3 {
        probe.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(probe.response().status, 200);
    }
    assert!(s.is_running(), "probes do not count towards max_requests");
    // Half a probe first, so that its connection is not idle (an idle one
    // would be closed a second into the stop).
    probe.send(b"GET /healthz HTTP/1.1\r\n");
    let mut busy = occupy_the_pool(&s, 2000);
    wait_for(
        Duration::from_secs(5),
        "the worker to stop listening",
        || TcpStream::connect(s.addr).is_err(),
    );
    probe.send(b"Host: x\r\n\r\n");
    let r = probe.response();
    assert_eq!(r.status, 503);
    assert!(r.closes());
    assert_eq!(busy.response().body_str(), "slept\n");
    s.join_within(Duration::from_secs(10)).unwrap();
}

#[test]
fn off_by_default_the_path_is_the_apps() {
    let s = TestServer::start(WorkerConfig::default(), TestApp);
    let mut c = Client::new(s.connect());
    c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status, r.body_str()), (404, "not found\n"));
    assert_eq!(s.stats.requests_served(), 1);
}

#[test]
fn only_the_exact_path_is_the_probe() {
    let s = TestServer::start(config(1), TestApp);
    let mut c = Client::new(s.connect());
    for path in ["/healthz/", "/healthzz", "/HEALTHZ", "/"] {
        c.send(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        let r = c.response();
        assert_ne!(r.body_str(), "ok\n", "{path} reached the probe");
    }
    assert_eq!(s.stats.requests_served(), 4);
}
