//! HTTP/1.1 behaviour on real sockets: keep-alive, pipelining, bodies,
//! 100-continue, HEAD, streaming, slow clients, real clients (curl, Python).

mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Client, TestApp, TestServer, wait_for};
use ferrocorn_worker::{HOLD_BODY_MAX, Request, Response, WorkerConfig};

fn server() -> TestServer {
    TestServer::start(
        WorkerConfig {
            threads: 2,
            ..WorkerConfig::default()
        },
        TestApp,
    )
}

#[test]
fn answers_with_date_server_and_length() {
    let s = server();
    let mut c = Client::new(s.connect());
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.version, "HTTP/1.1");
    assert_eq!(r.body_str(), "hello\n");
    assert_eq!(r.header("content-length"), Some("6"));
    assert_eq!(r.header("server"), Some("ferrocorn"));
    let date = r.header("date").expect("Date header");
    assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
    assert!(!r.closes());
}

#[test]
fn request_accessors() {
    let s = server();
    let mut c = Client::new(s.connect());
    c.send(b"GET /info?a=1&b=2 HTTP/1.1\r\nHost: example\r\nX-Thing:  spaced value \r\n\r\n");
    let r = c.response();
    let body = r.body_str();
    assert!(
        body.contains("method=GET target=/info?a=1&b=2 path=/info query=a=1&b=2 version=HTTP/1.1"),
        "{body}"
    );
    assert!(body.contains("peer=127.0.0.1"), "{body}");
    assert!(body.contains(&format!("local={}", s.addr)), "{body}");
    assert!(body.contains("Host=example,X-Thing=spaced value"), "{body}");
    // Absolute form: the path without scheme and authority.
    c.send(b"GET http://example.com/info?z HTTP/1.1\r\nHost: example.com\r\n\r\n");
    let body = c.response().body_str().to_owned();
    assert!(
        body.contains("target=http://example.com/info?z path=/info query=z "),
        "{body}"
    );
}

#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    let s = server();
    let mut c = Client::new(s.connect());
    for i in 0..50 {
        c.send(format!("GET /echo?{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        let r = c.response();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-query"), Some(i.to_string().as_str()));
    }
    assert_eq!(s.stats.active_connections(), 1);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let s = server();
    let mut c = Client::new(s.connect());
    let mut batch = Vec::new();
    // A slow first request must not let the fast second overtake it.
    batch.extend_from_slice(b"GET /sleep?150 HTTP/1.1\r\nHost: x\r\n\r\n");
    for i in 0..20 {
        batch.extend_from_slice(
            format!(
                "POST /echo?{i} HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nab{}",
                i % 10
            )
            .as_bytes(),
        );
    }
    batch.extend_from_slice(b"GET /stream?2 HTTP/1.1\r\nHost: x\r\n\r\n");
    batch.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    c.send(&batch);
    assert_eq!(c.response().body_str(), "slept\n");
    for i in 0..20 {
        let r = c.response();
        assert_eq!(r.header("x-query"), Some(i.to_string().as_str()));
        assert_eq!(r.body_str(), format!("ab{}", i % 10));
    }
    assert_eq!(c.response().body_str(), "part 0\npart 1\n");
    let last = c.response();
    assert_eq!(last.body_str(), "hello\n");
    assert!(last.closes());
    c.assert_closed();
}

#[test]
fn http10_closes_unless_keep_alive_asked() {
    let s = server();
    let mut c = Client::new(s.connect());
    c.send(b"GET / HTTP/1.0\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 200);
    assert!(r.closes());
    c.assert_closed();

    let mut c = Client::new(s.connect());
    c.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let r = c.response();
    assert_eq!(r.header("connection"), Some("keep-alive"));
    c.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(c.response().status, 200);
}

#[test]
fn http10_stream_is_close_delimited() {
    let s = server();
    let mut c = Client::new(s.connect());
    c.send(b"GET /stream?3 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let r = c.response();
    assert!(r.closes());
    assert!(r.header("transfer-encoding").is_none());
    assert_eq!(r.body_str(), "part 0\npart 1\npart 2\n");
}

#[test]
fn connection_close_from_client_and_from_app() {
    let s = server();
    let mut c = Client::new(s.connect());
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(c.response().closes());
    c.assert_closed();

    let mut c = Client::new(s.connect());
    c.send(b"GET /close HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.response();
    assert!(r.closes());
    assert_eq!(r.body_str(), "bye\n");
    c.assert_closed();
}

#[test]
fn head_has_length_but_no_body() {
    let s = server();
    let mut c = Client::new(s.connect());
    c.send(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.response_to(true).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("6"));
    // The next response follows directly: no body bytes in between.
    c.send(b"GET /echo?after HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.response().header("x-query"), Some("after"));
}

#[test]
fn no_body_statuses() {
    let s = server();
    let mut c = Client::new(s.connect());
    for status in [204u16, 304] {
        c.send(format!("GET /status?{status} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        let r = c.response();
        assert_eq!(r.status, status);
        assert!(r.header("content-length").is_none());
    }
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.response().status, 200);
}

#[test]
fn content_length_body_in_one_piece_and_streamed() {
    let s = server();
    let mut c = Client::new(s.connect());
    c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(c.response().body_str(), "hello");
    // A body larger than any buffer, sent in pieces while the app reads.
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    c.send(
        format!(
            "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    let mut w = c.stream.try_clone().unwrap();
    let b2 = body.clone();
    let writer = std::thread::spawn(move || {
        for piece in b2.chunks(70_000) {
            w.write_all(piece).unwrap();
        }
    });
    let r = c.response();
    writer.join().unwrap();
    assert_eq!(r.body.len(), body.len());
    assert!(r.body == body);
    // And the connection is still usable.
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.response().status, 200);
}

#[test]
fn chunked_body_with_extensions_and_trailers() {
    let s = server();
    let mut c = Client::new(s.connect());
    c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nX-Trailer: yes\r\n\r\n");
    assert_eq!(c.response().body_str(), "hello 0123456789");
    // Streamed: the chunks arrive one by one, with pauses.
    c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    for part in ["3\r\nabc\r\n", "2\r\nde\r\n", "0\r\n", "\r\n"] {
        std::thread::sleep(Duration::from_millis(20));
        c.send(part.as_bytes());
    }
    assert_eq!(c.response().body_str(), "abcde");
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.response().status, 200);
}

#[test]
fn body_beyond_the_held_part_is_streamed() {
    // The app sees the first bytes while the client has not sent the rest:
    // the loop holds the first HOLD_BODY_MAX bytes, and streams the others.
    let seen = Arc::new(AtomicUsize::new(0));
    let seen2 = seen.clone();
    let app = move |req: &mut Request<'_>| {
        let mut buf = [0u8; 5];
        req.body().read_exact(&mut buf).unwrap();
        seen2.store(1, Ordering::SeqCst);
        let rest = req.body().read_all().unwrap();
        Response::text(
            200,
            &format!("{}+{}", String::from_utf8_lossy(&buf), rest.len()),
        )
    };
    let s = TestServer::start(WorkerConfig::default(), app);
    let mut c = Client::new(s.connect());
    let held = HOLD_BODY_MAX as usize;
    c.send(
        format!(
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\nfirst",
            held + 5
        )
        .as_bytes(),
    );
    c.send(&vec![b'x'; held - 5]);
    wait_for(
        Duration::from_secs(5),
        "the app to read the first part",
        || seen.load(Ordering::SeqCst) == 1,
    );
    c.send(b"12345");
    assert_eq!(c.response().body_str(), format!("first+{held}"));
}

#[test]
fn a_slow_body_holds_a_connection_not_a_pool_thread() {
    // One pool thread, and a client sending its short body in pieces...
    let s = TestServer::start(
        WorkerConfig {
            threads: 1,
            ..WorkerConfig::default()
        },
        TestApp,
    );
    let mut slow = Client::new(s.connect());
    slow.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab");
    // ...while requests for that thread, on another connection, are
    // answered: the loop holds the short body until it is all there. (Before,
    // the thread waited on the slow client's body and these waited for it.)
    let mut other = Client::new(s.connect());
    for _ in 0..3 {
        other.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nxyz");
        assert_eq!(other.response().body_str(), "xyz");
    }
    slow.send(b"cd");
    assert_eq!(slow.response().body_str(), "abcd");
}

#[test]
fn expect_100_continue_is_sent_on_first_read() {
    let s = server();
    let mut c = Client::new(s.connect());
    c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n");
    let interim = c.response();
    assert_eq!(interim.status, 100);
    c.send(b"data");
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.body_str(), "data");

    // A body longer than the loop holds: an app that answers without
    // reading sends no 100, and the connection closes (the body was never
    // sent).
    let mut c = Client::new(s.connect());
    c.send(
        format!(
            "POST /noread HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            HOLD_BODY_MAX + 1
        )
        .as_bytes(),
    );
    let r = c.response();
    assert_eq!(r.status, 200);
    assert!(r.closes());
    c.assert_closed();

    // A short one is held by the loop, which sends the 100 itself: the app
    // runs with the whole body.
    let mut c = Client::new(s.connect());
    c.send(
        b"POST /noread HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
    );
    assert_eq!(c.response().status, 100);
    c.send(b"data");
    let r = c.response();
    assert_eq!(r.status, 200);
    assert!(!r.closes());
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.response().status, 200);
}

#[test]
fn unread_body_in_buffer_keeps_the_connection() {
    let s = server();
    let mut c = Client::new(s.connect());
    c.send(b"POST /noread HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nabcd");
    let r = c.response();
    assert!(!r.closes());
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.response().status, 200);
}

#[test]
fn slow_client_one_byte_at_a_time() {
    let s = server();
    let mut c = Client::new(s.connect());
    let req = b"POST /echo?slow HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nslow\r\n0\r\n\r\n";
    for b in req.iter() {
        c.send(&[*b]);
        std::thread::sleep(Duration::from_micros(300));
    }
    let r = c.response();
    assert_eq!(r.body_str(), "slow");
    assert_eq!(r.header("x-query"), Some("slow"));
}

#[test]
fn streamed_response_is_chunked() {
    let s = server();
    let mut c = Client::new(s.connect());
    c.send(b"GET /stream?5 HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.response();
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.body_str(), "part 0\npart 1\npart 2\npart 3\npart 4\n");
    c.send(b"GET /stream-len HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.response();
    assert_eq!(r.header("content-length"), Some("6"));
    assert_eq!(r.body_str(), "abcdef");
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.response().status, 200);
}

#[test]
fn large_response_under_backpressure() {
    let s = server();
    let mut c = Client::new(s.connect());
    c.stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let n = 8 << 20;
    c.send(format!("GET /big?{n} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    // Let the server fill the socket and wait for writability.
    std::thread::sleep(Duration::from_millis(100));
    let r = c.response();
    assert_eq!(r.body.len(), n);
    assert!(
        r.body
            .iter()
            .enumerate()
            .all(|(i, b)| *b == (i % 251) as u8)
    );
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.response().status, 200);
}

#[test]
fn panicking_handler_gets_500_and_worker_lives() {
    let s = server();
    let mut c = Client::new(s.connect());
    c.send(b"GET /panic HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 500);
    let mut c = Client::new(s.connect());
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.response().status, 200);
}

#[test]
fn invalid_response_header_is_a_500_not_a_split() {
    let s = server();
    let mut c = Client::new(s.connect());
    c.send(b"GET /badheader HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 500);
    assert!(r.header("injected").is_none());
}

#[test]
fn keep_alive_expires() {
    let s = TestServer::start(
        WorkerConfig {
            keepalive: Duration::from_millis(200),
            ..WorkerConfig::default()
        },
        TestApp,
    );
    let mut c = Client::new(s.connect());
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.response().status, 200);
    let start = Instant::now();
    c.assert_closed();
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(150),
        "closed too early: {took:?}"
    );
    assert!(took < Duration::from_secs(2), "closed too late: {took:?}");
    wait_for(Duration::from_secs(2), "connection count to drop", || {
        s.stats.active_connections() == 0
    });
}

#[test]
fn keepalive_zero_closes_after_each_response() {
    let s = TestServer::start(
        WorkerConfig {
            keepalive: Duration::ZERO,
            ..WorkerConfig::default()
        },
        TestApp,
    );
    let mut c = Client::new(s.connect());
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(c.response().closes());
    c.assert_closed();
}

#[test]
fn inline_mode_serves_and_still_streams_bodies() {
    let s = TestServer::start(
        WorkerConfig {
            inline: true,
            ..WorkerConfig::default()
        },
        TestApp,
    );
    let mut c = Client::new(s.connect());
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nPOST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n");
    assert_eq!(c.response().body_str(), "hello\n");
    std::thread::sleep(Duration::from_millis(20));
    c.send(b"abc");
    assert_eq!(c.response().body_str(), "abc");
    c.send(b"GET /panic HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.response().status, 500);
}

/// Says which thread answered (`X-Thread`). `/fast*` and `/boom` promise not
/// to block; `/slow` blocks until the test releases it.
struct WhereApp {
    slow_started: Arc<AtomicBool>,
    release: Arc<AtomicBool>,
}

impl ferrocorn_worker::App for WhereApp {
    fn call(&self, req: &mut Request<'_>) -> Response {
        let thread = std::thread::current().name().unwrap_or("").to_owned();
        let mut body = Vec::new();
        match req.path() {
            "/slow" => {
                self.slow_started.store(true, Ordering::SeqCst);
                let deadline = Instant::now() + Duration::from_secs(5);
                while !self.release.load(Ordering::SeqCst) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            "/boom" => panic!("nonblocking handler panics on purpose"),
            "/fast-echo" => body = req.body().read_all().unwrap(),
            _ => {}
        }
        Response::new(200).header("X-Thread", thread).body(body)
    }

    fn nonblocking(&self, _method: &str, path: &str) -> bool {
        path.starts_with("/fast") || path == "/boom"
    }
}

#[test]
fn nonblocking_requests_run_on_the_loop_thread_while_the_pool_is_busy() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let slow_started = Arc::new(AtomicBool::new(false));
    let release = Arc::new(AtomicBool::new(false));
    let app = WhereApp {
        slow_started: slow_started.clone(),
        release: release.clone(),
    };
    let worker = ferrocorn_worker::Worker::new(
        WorkerConfig {
            threads: 1,
            ..WorkerConfig::default()
        },
        vec![ferrocorn_worker::Listener::Tcp(listener)],
        Arc::new(app),
    )
    .unwrap();
    let stop = worker.shutdown_handle();
    let stats = worker.stats();
    let t = std::thread::Builder::new()
        .name("test-event-loop".into())
        .spawn(move || worker.run())
        .unwrap();
    let connect = || {
        let s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Client::new(s)
    };
    let is_pool = |r: &common::Resp| {
        r.header("x-thread")
            .is_some_and(|t| t.starts_with("ferrocorn-pool-"))
    };
    let mut fast = connect();
    fast.send(b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = fast.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-thread"), Some("test-event-loop"));

    // The only pool thread blocks in /slow...
    let mut slow = connect();
    slow.send(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
    wait_for(Duration::from_secs(5), "/slow to start", || {
        slow_started.load(Ordering::SeqCst)
    });
    // ...and nonblocking requests, a complete body included, still get answers.
    for _ in 0..3 {
        fast.send(b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(fast.response().header("x-thread"), Some("test-event-loop"));
    }
    fast.send(b"POST /fast-echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nxyz");
    let r = fast.response();
    assert_eq!(r.body_str(), "xyz");
    assert!(!is_pool(&r), "{r:?}");
    // A panic on the loop thread is a 500, and the worker carries on.
    fast.send(b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(fast.response().status, 500);
    fast.send(b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(fast.response().header("x-thread"), Some("test-event-loop"));
    assert!(stats.pending_requests() == 1 && stats.active_threads() == 1);

    release.store(true, Ordering::SeqCst);
    let r = slow.response();
    assert!(is_pool(&r), "/slow did not run on the pool: {r:?}");

    // A nonblocking request whose short body comes later is held by the
    // loop until it is there, and then runs on the loop.
    fast.send(b"POST /fast-echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n");
    fast.send(b"abc");
    let r = fast.response();
    assert_eq!(r.body_str(), "abc");
    assert!(!is_pool(&r), "{r:?}");

    // One whose body goes on beyond what the loop holds goes to the pool.
    let held = HOLD_BODY_MAX as usize;
    fast.send(
        format!(
            "POST /fast-echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            held + 3
        )
        .as_bytes(),
    );
    fast.send(&vec![b'a'; held]);
    wait_for(
        Duration::from_secs(5),
        "the request to be dispatched",
        || stats.pending_requests() == 1,
    );
    fast.send(b"abc");
    let r = fast.response();
    assert_eq!(r.body.len(), held + 3);
    assert!(is_pool(&r), "a body still to read ran inline: {r:?}");

    wait_for(Duration::from_secs(5), "counters to settle", || {
        stats.pending_requests() == 0 && stats.active_threads() == 0
    });
    assert_eq!(stats.requests_served(), 10);
    stop.quick();
    t.join().unwrap().unwrap();
}

#[test]
fn unix_socket_listener() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let worker = ferrocorn_worker::Worker::new(
        WorkerConfig::default(),
        vec![ferrocorn_worker::Listener::Unix(listener)],
        Arc::new(TestApp),
    )
    .unwrap();
    let stop = worker.shutdown_handle();
    let t = std::thread::spawn(move || worker.run());
    let mut s = std::os::unix::net::UnixStream::connect(&path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(out.contains("peer= local="), "{out}");
    stop.quick();
    t.join().unwrap().unwrap();
}

fn have(cmd: &str) -> bool {
    Command::new(cmd).arg("--version").output().is_ok()
}

#[test]
fn curl_get_post_and_chunked_upload() {
    assert!(have("curl"), "curl is needed for this test");
    let s = server();
    let url = format!("http://{}/echo?c=1", s.addr);
    let out = Command::new("curl")
        .args(["-sS", "-i", "--data-binary", "posted by curl", &url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.ends_with("posted by curl"), "{text}");
    // Chunked upload with Expect: 100-continue, two requests on one connection.
    let out = Command::new("curl")
        .args([
            "-sS",
            "-H",
            "Transfer-Encoding: chunked",
            "-H",
            "Expect: 100-continue",
            "--data-binary",
            "chunky",
            &url,
            "--next",
            &format!("http://{}/stream?2", s.addr),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "chunkypart 0\npart 1\n"
    );
}

fn python() -> String {
    std::env::var("FERROCORN_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

#[test]
fn python_http_client_keep_alive() {
    let s = server();
    let script = r#"
import http.client, sys
c = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), timeout=5)
for i in range(5):
    c.request("POST", "/echo?" + str(i), body=b"x" * (i * 1000))
    r = c.getresponse()
    body = r.read()
    assert r.status == 200, r.status
    assert len(body) == i * 1000, len(body)
    if i == 0:
        sock = c.sock
    assert c.sock is sock, "the connection was not kept alive"
c.request("HEAD", "/")
r = c.getresponse(); r.read()
assert r.getheader("Content-Length") == "6"
c.request("GET", "/stream?4")
r = c.getresponse()
assert r.read() == b"part 0\npart 1\npart 2\npart 3\n"
c.request("GET", "/nope")
r = c.getresponse(); r.read()
assert r.status == 404
print("ok")
"#;
    let out = Command::new(python())
        .args([
            "-c",
            script,
            &s.addr.ip().to_string(),
            &s.addr.port().to_string(),
        ])
        .output()
        .expect("python3 is needed for this test");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}

#[test]
fn unread_streamed_body_closes_without_losing_the_response() {
    let s = server();
    let mut c = Client::new(s.connect());
    let total = 4 << 20;
    c.send(
        format!("POST /noread HTTP/1.1\r\nHost: x\r\nContent-Length: {total}\r\n\r\n").as_bytes(),
    );
    // Keep sending the body while the answer comes back.
    let mut w = c.stream.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0;
        while sent < total {
            if w.write_all(&chunk).is_err() {
                break;
            }
            sent += chunk.len();
        }
    });
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.body_str(), "ignored your body\n");
    assert!(r.closes());
    writer.join().unwrap();
}

#[test]
fn failing_stream_truncates_and_closes() {
    let s = server();
    for q in ["error", "panic"] {
        let mut c = Client::new(s.connect());
        c.send(format!("GET /stream-fail?{q} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        // The head and the first chunk arrive, then the connection closes
        // without the final chunk: the client sees a truncated body.
        let err = c.response_to(false).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{q}");
    }
    // The worker serves on.
    let mut c = Client::new(s.connect());
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.response().status, 200);
    wait_for(Duration::from_secs(2), "no pending requests", || {
        s.stats.pending_requests() == 0
    });
}

#[test]
fn tcp_and_unix_listeners_in_one_worker() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("both.sock");
    let unix = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = tcp.local_addr().unwrap();
    let worker = ferrocorn_worker::Worker::new(
        WorkerConfig::default(),
        vec![
            ferrocorn_worker::Listener::Tcp(tcp),
            ferrocorn_worker::Listener::Unix(unix),
        ],
        Arc::new(TestApp),
    )
    .unwrap();
    let stop = worker.shutdown_handle();
    let t = std::thread::spawn(move || worker.run());
    for _ in 0..3 {
        let mut u = std::os::unix::net::UnixStream::connect(&path).unwrap();
        u.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        u.read_to_string(&mut out).unwrap();
        assert!(out.ends_with("hello\n"), "{out}");
        let mut c = Client::new(std::net::TcpStream::connect(addr).unwrap());
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(c.response().status, 200);
    }
    stop.graceful();
    t.join().unwrap().unwrap();
}

/// The worker's end of the TCP connection whose client end is `client`,
/// found among this process's descriptors (the worker runs on a thread of
/// the test), with its TCP_NODELAY setting.
fn server_side_nodelay(client: &std::net::TcpStream) -> Option<bool> {
    use std::os::fd::BorrowedFd;
    let want_peer = client.local_addr().ok()?;
    let want_local = client.peer_addr().ok()?;
    for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|t| t.to_string_lossy().starts_with("socket:"));
        if !is_socket {
            continue;
        }
        // SAFETY: the descriptor was open a moment ago and is only queried
        // (getsockname, getpeername, getsockopt); if another test thread
        // closed it meanwhile the calls fail or describe another socket,
        // which the address match below rejects.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let sock = socket2::SockRef::from(&fd);
        let local = sock.local_addr().ok().and_then(|a| a.as_socket());
        let peer = sock.peer_addr().ok().and_then(|a| a.as_socket());
        if local == Some(want_local) && peer == Some(want_peer) {
            return sock.tcp_nodelay().ok();
        }
    }
    None
}

/// Every accepted TCP connection has TCP_NODELAY (a response written in
/// pieces must not wait for the client's delayed ACK): inherited from a
/// listener that has it, as the supervisor's do, set by the worker on each
/// connection of a listener that does not (a socket handed over by systemd).
#[test]
fn accepted_connections_have_tcp_nodelay() {
    for listener_nodelay in [true, false] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        socket2::SockRef::from(&listener)
            .set_tcp_nodelay(listener_nodelay)
            .unwrap();
        let s = TestServer::start_on(listener, WorkerConfig::default(), Arc::new(TestApp), |w| w);
        let mut c = Client::new(s.connect());
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(c.response().status, 200);
        assert_eq!(
            server_side_nodelay(&c.stream),
            Some(true),
            "listener with TCP_NODELAY {listener_nodelay}: the accepted connection's setting"
        );
    }
}

/// A streamed response of 64 KiB pieces, `limit` bytes in all, that
/// counts what it made and when it was dropped.
struct EndlessApp {
    made: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
    limit: usize,
}

struct Endless {
    made: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
    limit: usize,
}

impl Iterator for Endless {
    type Item = std::io::Result<Vec<u8>>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.made.load(Ordering::SeqCst) >= self.limit {
            return None;
        }
        self.made.fetch_add(65536, Ordering::SeqCst);
        Some(Ok(vec![b'x'; 65536]))
    }
}

impl Drop for Endless {
    fn drop(&mut self) {
        self.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

impl ferrocorn_worker::App for EndlessApp {
    fn call(&self, _req: &mut Request<'_>) -> Response {
        Response::new(200).stream(Box::new(Endless {
            made: self.made.clone(),
            dropped: self.dropped.clone(),
            limit: self.limit,
        }))
    }
}

/// The largest a TCP buffer of this kind may grow to (`tcp_rmem` or
/// `tcp_wmem`'s third field).
fn tcp_buf_max(which: &str) -> usize {
    let s = std::fs::read_to_string(format!("/proc/sys/net/ipv4/{which}")).unwrap();
    s.split_whitespace().nth(2).unwrap().parse().unwrap()
}

#[test]
fn a_client_that_stops_reading_stops_the_pulling_of_a_stream() {
    let made = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicUsize::new(0));
    // What the kernel's buffers may hold, and the worker's window.
    let bound = tcp_buf_max("tcp_rmem") + tcp_buf_max("tcp_wmem") + (1 << 20);
    let s = TestServer::start(
        WorkerConfig {
            threads: 2,
            ..WorkerConfig::default()
        },
        EndlessApp {
            made: made.clone(),
            dropped: dropped.clone(),
            // Enough to go on after the stop, an end for a failing test.
            limit: bound + (16 << 20),
        },
    );
    let mut c = s.connect();
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    // The client reads nothing: the pulling stops once the socket buffers
    // and the pull-ahead window are full (it did not stop for 100 polls
    // of 20 ms: a stream pulled without bound fills 2 s of a thread).
    let mut last = 0;
    let mut same = 0;
    let start = Instant::now();
    while same < 100 {
        assert!(start.elapsed() < Duration::from_secs(60), "still pulling");
        std::thread::sleep(Duration::from_millis(20));
        let now = made.load(Ordering::SeqCst);
        same = if now == last { same + 1 } else { 0 };
        last = now;
    }
    assert!(
        last <= bound,
        "{last} bytes made for a client that reads none (bound {bound})"
    );
    assert_eq!(dropped.load(Ordering::SeqCst), 0);
    // Reading resumes the pulling.
    let mut buf = vec![0; 1 << 16];
    let mut read = 0;
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    while read < last + (4 << 20) {
        let n = c.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {read} bytes");
        read += n;
    }
    assert!(made.load(Ordering::SeqCst) > last);
    // The client goes away mid-stream: the stream is dropped once and the
    // request counted as finished.
    drop(c);
    wait_for(Duration::from_secs(10), "the stream to be dropped", || {
        dropped.load(Ordering::SeqCst) == 1
    });
    wait_for(Duration::from_secs(10), "no connection left", || {
        s.stats.active_connections() == 0
    });
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
}
