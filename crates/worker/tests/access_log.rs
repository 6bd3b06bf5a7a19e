//! One access-log line per answered request, in gunicorn's format.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Client, TestApp, TestServer, wait_for};
use ferrocorn_log::{Destination, Format, LogConfig, Logs, MemoryLog};
use ferrocorn_worker::WorkerConfig;

/// Plain logs in memory, the access log in `format`; and its lines.
fn memory_logs(format: &str) -> (Logs, MemoryLog) {
    let access = MemoryLog::new();
    let logs = Logs::new(&LogConfig {
        format: Format::Plain,
        error_log: Destination::Memory(MemoryLog::new()),
        access_log: Some(Destination::Memory(access.clone())),
        access_log_format: format.to_string(),
        ..LogConfig::default()
    })
    .unwrap();
    (logs, access)
}

#[test]
fn access_lines_for_plain_and_streamed_responses() {
    let (logs, access) = memory_logs(r#"%(h)s "%(r)s" %(s)s %(b)s "%(a)s" %({x-query}o)s %(p)s"#);
    let log = logs.access().unwrap().clone();
    let s = TestServer::start_with(WorkerConfig::default(), Arc::new(TestApp), move |w| {
        w.access_log(log).logger(logs.error().clone())
    });
    let mut c = Client::new(s.connect());
    c.send(b"POST /echo?q=1 HTTP/1.1\r\nHost: x\r\nUser-Agent: test-agent\r\nContent-Length: 4\r\n\r\nbody");
    assert_eq!(c.response().status, 200);
    c.send(b"GET /stream?2 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.response().status, 200);
    c.send(b"HEAD / HTTP/1.0\r\n\r\n");
    c.response_to(true).unwrap();
    wait_for(Duration::from_secs(2), "three access lines", || {
        access.lines().len() == 3
    });
    let pid = std::process::id();
    assert_eq!(
        access.lines(),
        [
            format!(r#"127.0.0.1 "POST /echo?q=1 HTTP/1.1" 200 4 "test-agent" q=1 <{pid}>"#),
            format!(r#"127.0.0.1 "GET /stream?2 HTTP/1.1" 200 14 "-" - <{pid}>"#),
            format!(r#"127.0.0.1 "HEAD / HTTP/1.0" 200 0 "-" - <{pid}>"#),
        ]
    );
}

/// Answers on the event loop, so its access lines are held there.
struct LoopApp;

impl ferrocorn_worker::App for LoopApp {
    fn call(&self, _req: &mut ferrocorn_worker::Request<'_>) -> ferrocorn_worker::Response {
        ferrocorn_worker::Response::text(200, "on the loop\n")
    }
    fn nonblocking(&self, _method: &str, _path: &str) -> bool {
        true
    }
}

/// The loop holds the access lines of the requests it answers and writes
/// them together at most 10 ms after the first: with no more traffic (the
/// loop would otherwise sleep up to a second) they are written all the same,
/// in order.
#[test]
fn lines_held_on_the_loop_are_written_soon_without_more_traffic() {
    let (logs, access) = memory_logs(r#""%(r)s" %(s)s"#);
    let log = logs.access().unwrap().clone();
    let s = TestServer::start_with(WorkerConfig::default(), Arc::new(LoopApp), move |w| {
        w.access_log(log)
    });
    let mut c = Client::new(s.connect());
    c.send(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\nGET /3 HTTP/1.1\r\nHost: x\r\n\r\n");
    for _ in 0..3 {
        assert_eq!(c.response().status, 200);
    }
    // Well under the loop's one-second sleep and the 2 s keep-alive timer.
    wait_for(Duration::from_millis(500), "three access lines", || {
        access.lines().len() == 3
    });
    assert_eq!(
        access.lines(),
        [
            r#""GET /1 HTTP/1.1" 200"#,
            r#""GET /2 HTTP/1.1" 200"#,
            r#""GET /3 HTTP/1.1" 200"#
        ]
    );
}
