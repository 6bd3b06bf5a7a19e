//! Limits and framing attacks: each gets its status code and a closed
//! connection (gunicorn 22-26 hardening, CVE-2024-1135, CVE-2024-6827).

mod common;

use std::time::{Duration, Instant};

use common::{Client, TestApp, TestServer, expect_refused};
use ferrocorn_worker::{HOLD_BODY_MAX, WorkerConfig};

fn server() -> TestServer {
    TestServer::start(
        WorkerConfig {
            threads: 2,
            limit_request_body: 1000,
            ..WorkerConfig::default()
        },
        TestApp,
    )
}

const BAD_REQUESTS: &[(&str, &[u8])] = &[
    ("CL and TE", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("TE and CL", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"),
    ("duplicate CL", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"),
    ("list CL", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhello"),
    ("negative CL", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"),
    ("plus CL", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello"),
    ("hex CL", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0x5\r\n\r\nhello"),
    ("overflowing CL", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
    ("empty CL", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: \r\n\r\n"),
    ("unknown coding", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: foo\r\n\r\n"),
    ("identity coding", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n"),
    ("repeated chunked", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"),
    ("repeated chunked headers", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("chunked not last", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, foo\r\n\r\n0\r\n\r\n"),
    ("chunked with suffix", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"),
    ("empty coding", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \r\n\r\n"),
    ("chunked on HTTP/1.0", b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("bad chunk size", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
    ("negative chunk size", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nhello\r\n0\r\n\r\n"),
    ("0x chunk size", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n"),
    ("chunk size with space", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n"),
    ("empty chunk size", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\r\nhello\r\n0\r\n\r\n"),
    ("overflowing chunk size", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1FFFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n"),
    ("chunk without CRLF", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n"),
    ("chunk size bare LF", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n"),
    ("CR in header value", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n"),
    ("NUL in header value", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n"),
    ("control in header value", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n"),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n  b\r\n\r\n"),
    ("obs-fold tab", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n\tb\r\n\r\n"),
    ("space before colon", b"GET / HTTP/1.1\r\nHost : x\r\n\r\n"),
    ("tab before colon", b"GET / HTTP/1.1\r\nHost\t: x\r\n\r\n"),
    ("space before CL colon", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello"),
    ("header without colon", b"GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n"),
    ("empty header name", b"GET / HTTP/1.1\r\nHost: x\r\n: v\r\n\r\n"),
    ("duplicate Host", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
    ("missing Host", b"GET / HTTP/1.1\r\n\r\n"),
    ("duplicate Content-Type", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: a/b\r\nContent-Type: c/d\r\nContent-Length: 0\r\n\r\n"),
    ("bare LF head", b"GET / HTTP/1.1\nHost: x\n\n"),
    ("bare LF after a header", b"GET / HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n"),
    ("lower-case method", b"get / HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("method with symbol", b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("short method", b"GE / HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("long method", b"ABCDEFGHIJKLMNOPQRSTU / HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("version 1.2", b"GET / HTTP/1.2\r\nHost: x\r\n\r\n"),
    ("version 2.0", b"GET / HTTP/2.0\r\nHost: x\r\n\r\n"),
    ("version 0.9", b"GET / HTTP/0.9\r\nHost: x\r\n\r\n"),
    ("bad protocol", b"GET / HTTX/1.1\r\nHost: x\r\n\r\n"),
    ("lower-case protocol", b"GET / http/1.1\r\nHost: x\r\n\r\n"),
    ("no version", b"GET /\r\nHost: x\r\n\r\n"),
    ("empty target", b"GET  HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("relative target", b"GET foo HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("space in target", b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("control in target", b"GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("UTF-8 in target", b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("DEL in target", b"GET /a\x7fb HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("asterisk for GET", b"GET * HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("CONNECT with path", b"CONNECT /x HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("bad scheme", b"GET 1http://x/ HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("double space", b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("trailing space", b"GET / HTTP/1.1 \r\nHost: x\r\n\r\n"),
    ("leading garbage", b"\x00GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("many empty lines", b"\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("bad trailer", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nbad trailer\r\n\r\n"),
    ("folded trailer", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: a\r\n b\r\n\r\n"),
];

#[test]
fn framing_attacks_get_400_and_close() {
    let s = server();
    for (name, req) in BAD_REQUESTS {
        eprintln!("case: {name}");
        expect_refused(&s, req, 400);
    }
    // The worker is fine afterwards.
    let mut c = Client::new(s.connect());
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.response().status, 200);
}

#[test]
fn accepted_forms() {
    // The checks above must not refuse valid requests.
    let s = server();
    let ok: &[&[u8]] = &[
        b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET http://example.com/echo?q HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Tab:\tvalue\twith tab\r\nX-Obs: caf\xc3\xa9\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 000003\r\n\r\nabc",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000003\r\nabc\r\n0\r\n\r\n",
        b"M-SEARCH / HTTP/1.1\r\nHost: x\r\n\r\n",
    ];
    for req in ok {
        let mut c = Client::new(s.connect());
        c.send(req);
        let r = c.response();
        assert!(
            r.status == 200 || r.status == 404,
            "{:?}: {}",
            String::from_utf8_lossy(req),
            r.status
        );
    }
}

#[test]
fn unsupported_codings_get_501() {
    let s = server();
    expect_refused(
        &s,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        501,
    );
    expect_refused(
        &s,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: deflate\r\n\r\n",
        501,
    );
}

#[test]
fn truncated_chunked_body_gets_400() {
    let s = server();
    // In one piece and half-closed.
    let mut c = Client::new(s.connect());
    c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel");
    c.stream.shutdown(std::net::Shutdown::Write).unwrap();
    let r = c.response();
    assert_eq!(r.status, 400);
    assert!(r.closes());
    c.assert_closed();
    // Truncated before the final CRLF.
    let mut c = Client::new(s.connect());
    c.send(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n",
    );
    std::thread::sleep(Duration::from_millis(30));
    c.stream.shutdown(std::net::Shutdown::Write).unwrap();
    let r = c.response();
    assert_eq!(r.status, 400);
    c.assert_closed();
    // Bad framing arriving after the app started reading.
    let mut c = Client::new(s.connect());
    c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
    std::thread::sleep(Duration::from_millis(30));
    c.send(b"zz\r\n");
    let r = c.response();
    assert_eq!(r.status, 400);
    c.assert_closed();
}

#[test]
fn request_line_limit_gets_400() {
    let s = server();
    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(4100));
    expect_refused(&s, long.as_bytes(), 400);
    // Without a line end yet: refused as soon as it is too long.
    let long = format!("GET /{}", "a".repeat(5000));
    expect_refused(&s, long.as_bytes(), 400);
    // Just under the limit passes: "GET /" + n + " HTTP/1.1" = 4094.
    let path = "a".repeat(4094 - 14);
    let mut c = Client::new(s.connect());
    c.send(format!("GET /{path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    assert_eq!(c.response().status, 404);
}

#[test]
fn header_limits_get_431() {
    let s = server();
    let mut many = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..100 {
        many.push_str(&format!("X-{i}: v\r\n"));
    }
    many.push_str("\r\n");
    expect_refused(&s, many.as_bytes(), 431);
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "v".repeat(8190)
    );
    expect_refused(&s, big.as_bytes(), 431);
    // Incomplete but already over the limit.
    let big = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}", "v".repeat(9000));
    expect_refused(&s, big.as_bytes(), 431);
    // Exactly 100 fields is fine.
    let mut ok = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..99 {
        ok.push_str(&format!("X-{i}: v\r\n"));
    }
    ok.push_str("\r\n");
    let mut c = Client::new(s.connect());
    c.send(ok.as_bytes());
    assert_eq!(c.response().status, 200);
}

#[test]
fn configured_limits_apply() {
    let s = TestServer::start(
        WorkerConfig {
            limit_request_line: 100,
            limit_request_fields: 3,
            limit_request_field_size: 50,
            ..WorkerConfig::default()
        },
        TestApp,
    );
    expect_refused(
        &s,
        format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(100)).as_bytes(),
        400,
    );
    expect_refused(
        &s,
        b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n",
        431,
    );
    expect_refused(
        &s,
        format!("GET / HTTP/1.1\r\nHost: x\r\nA: {}\r\n\r\n", "b".repeat(50)).as_bytes(),
        431,
    );
    let mut c = Client::new(s.connect());
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\n\r\n");
    assert_eq!(c.response().status, 200);
}

#[test]
fn body_limit_gets_413() {
    let s = server();
    expect_refused(
        &s,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n",
        413,
    );
    // Chunked, all in the buffer.
    let mut req = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend_from_slice(format!("3e9\r\n{}\r\n0\r\n\r\n", "x".repeat(1001)).as_bytes());
    expect_refused(&s, &req, 413);
    // Chunked, streamed past the limit while the app reads.
    let mut c = Client::new(s.connect());
    c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(20));
        c.send(format!("190\r\n{}\r\n", "y".repeat(400)).as_bytes());
    }
    let r = c.response();
    assert_eq!(r.status, 413);
    assert!(r.closes());
    c.assert_closed();
    // At the limit: fine.
    let mut c = Client::new(s.connect());
    c.send(
        format!(
            "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{}",
            "z".repeat(1000)
        )
        .as_bytes(),
    );
    assert_eq!(c.response().body.len(), 1000);
}

#[test]
fn header_timeout_gets_408_and_silent_clients_are_closed() {
    let s = TestServer::start(
        WorkerConfig {
            header_timeout: Duration::from_millis(200),
            ..WorkerConfig::default()
        },
        TestApp,
    );
    let start = Instant::now();
    let r = {
        let mut c = Client::new(s.connect());
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n");
        let r = c.response();
        c.assert_closed();
        r
    };
    assert_eq!(r.status, 408);
    assert!(start.elapsed() >= Duration::from_millis(150));
    // A client that never sends a byte is closed without a response.
    let mut c = Client::new(s.connect());
    let start = Instant::now();
    c.assert_closed();
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(150) && took < Duration::from_secs(2),
        "{took:?}"
    );
}

#[test]
fn zero_header_timeout_is_no_limit() {
    // It was taken as 1 ms: every head that came in two pieces got a 408,
    // and a connection whose first byte was a moment late was closed.
    let s = TestServer::start(
        WorkerConfig {
            header_timeout: Duration::ZERO,
            ..WorkerConfig::default()
        },
        TestApp,
    );
    let mut c = Client::new(s.connect());
    std::thread::sleep(Duration::from_millis(100));
    c.send(b"GET / HTTP/1.1\r\nHo");
    std::thread::sleep(Duration::from_millis(100));
    c.send(b"st: x\r\n\r\n");
    assert_eq!(c.response().status, 200);
    c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab");
    std::thread::sleep(Duration::from_millis(100));
    c.send(b"cd");
    assert_eq!(c.response().body_str(), "abcd");
}

#[test]
fn stalled_body_times_out_with_408() {
    // Beyond the part the loop holds, the body is the app's to read, and a
    // pause longer than `stall_timeout` ends it.
    let s = TestServer::start(
        WorkerConfig {
            stall_timeout: Duration::from_millis(300),
            ..WorkerConfig::default()
        },
        TestApp,
    );
    let held = HOLD_BODY_MAX as usize;
    let mut c = Client::new(s.connect());
    c.send(
        format!(
            "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            held + 10
        )
        .as_bytes(),
    );
    c.send(&vec![b'h'; held + 5]);
    let r = c.response();
    assert_eq!(r.status, 408);
    c.assert_closed();
}

#[test]
fn a_held_body_must_arrive_within_the_header_timeout() {
    // A short body is read by the loop with the head, under the head's
    // deadline: a client trickling it is cut as a slow head is.
    let s = TestServer::start(
        WorkerConfig {
            header_timeout: Duration::from_millis(300),
            ..WorkerConfig::default()
        },
        TestApp,
    );
    let mut c = Client::new(s.connect());
    let start = Instant::now();
    c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhalf ");
    let r = c.response();
    assert_eq!(r.status, 408);
    assert!(start.elapsed() >= Duration::from_millis(250));
    c.assert_closed();
}

/// `timeout = 0` (never kill, common in gunicorn configs) is no stall bound:
/// bodies that arrive in paced pieces and responses read late complete, and
/// the heartbeat goes on while the only thread is busy. Before, the stall
/// bound was `timeout` raised to 1 ms: the uploads got 408 and the late
/// reader lost its response after a few hundred KB.
#[test]
fn zero_timeout_is_no_stall_bound_and_no_stuck_pool() {
    let beats = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let b = beats.clone();
    let s = TestServer::start_with(
        WorkerConfig {
            timeout: Duration::ZERO,
            ..WorkerConfig::default()
        },
        std::sync::Arc::new(TestApp),
        move |w| {
            w.heartbeat(std::sync::Arc::new(move || {
                b.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }))
        },
    );
    // 3 uploads of 1 MiB, 64 KiB pieces 5 ms apart.
    const BODY: usize = 1 << 20;
    let piece = vec![b'u'; 64 * 1024];
    for i in 0..3 {
        let mut c = Client::new(s.connect());
        c.send(
            format!("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {BODY}\r\n\r\n").as_bytes(),
        );
        for _ in 0..BODY / piece.len() {
            c.send(&piece);
            std::thread::sleep(Duration::from_millis(5));
        }
        let r = c.response();
        assert_eq!(
            r.status,
            200,
            "upload {i}: {}",
            String::from_utf8_lossy(&r.body[..r.body.len().min(200)])
        );
        assert_eq!(r.body.len(), BODY, "upload {i}");
    }
    // A 16 MiB response (more than the socket buffers hold) read from 300
    // ms after the request on.
    let mut c = Client::new(s.connect());
    c.send(b"GET /big?16777216 HTTP/1.1\r\nHost: x\r\n\r\n");
    std::thread::sleep(Duration::from_millis(300));
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 16 << 20);
    // The only thread busy for 2 s: the heartbeat goes on (an idle loop
    // turns at least once a second).
    let mut c = Client::new(s.connect());
    c.send(b"GET /sleep?2000 HTTP/1.1\r\nHost: x\r\n\r\n");
    common::wait_for(Duration::from_secs(2), "the request to start", || {
        s.stats.active_threads() == 1
    });
    std::thread::sleep(Duration::from_millis(100));
    let before = beats.load(std::sync::atomic::Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(1300));
    let during = beats.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert!(
        s.stats.active_threads() == 1,
        "the sleep ended too early to judge"
    );
    assert!(
        during >= 1,
        "no heartbeat in 1.3 s while the thread was busy"
    );
    assert_eq!(c.response().status, 200);
}
