//! The connection state machine without sockets: a connection whose bytes
//! are in memory ([`MemIo`]), driven by the test as the poll would drive it
//! (bytes arrive: readable; room to write: drive again), with the app run
//! inline on the loop thread or on the pool.

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::Events;

use super::state::{Closing, Conn, Exchange, HeadTimer, Sock};
use super::{Server, jitter};
use crate::encode::CONTINUE;
use crate::pool::{self, lock};
use crate::{App, Request, Response, Worker, WorkerConfig};

/// Both directions of a connection's bytes.
#[derive(Default)]
struct Wire {
    /// Sent by the client, not yet read by the worker.
    input: Vec<u8>,
    /// The client shut its write side: reads past `input` return 0.
    input_closed: bool,
    /// Written by the worker.
    output: Vec<u8>,
    /// Bytes the "socket" still takes before it reports WouldBlock; `None`:
    /// no limit.
    room: Option<usize>,
    /// The worker shut its write side.
    write_shut: bool,
}

/// An in-memory socket shared by the test (the client) and the worker.
#[derive(Clone, Default)]
pub(super) struct MemIo(Arc<Mutex<Wire>>);

impl MemIo {
    pub(super) fn shutdown_write(&self) {
        lock(&self.0).write_shut = true;
    }
    fn output(&self) -> String {
        String::from_utf8_lossy(&lock(&self.0).output).into_owned()
    }
    fn take_output(&self) -> String {
        String::from_utf8_lossy(&std::mem::take(&mut lock(&self.0).output)).into_owned()
    }
    fn unread(&self) -> usize {
        lock(&self.0).input.len()
    }
    fn set_room(&self, room: Option<usize>) {
        lock(&self.0).room = room;
    }
    fn write_shut(&self) -> bool {
        lock(&self.0).write_shut
    }
}

impl Read for MemIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut w = lock(&self.0);
        if w.input.is_empty() {
            return if w.input_closed {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = buf.len().min(w.input.len());
        buf[..n].copy_from_slice(&w.input[..n]);
        w.input.drain(..n);
        Ok(n)
    }
}

impl Write for MemIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut w = lock(&self.0);
        let n = match w.room {
            Some(0) => return Err(io::ErrorKind::WouldBlock.into()),
            Some(room) => {
                let n = room.min(buf.len());
                w.room = Some(room - n);
                n
            }
            None => buf.len(),
        };
        w.output.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let mut total = 0;
        for b in bufs {
            match self.write(b) {
                Ok(n) => {
                    total += n;
                    if n < b.len() {
                        break;
                    }
                }
                Err(e) if total == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(total)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A server without listeners whose connections the test drives.
struct Harness {
    server: Server,
    events: Events,
}

impl Harness {
    fn new(config: WorkerConfig, app: impl App) -> Harness {
        let w = Worker::new(config, Vec::new(), Arc::new(app)).expect("worker");
        let mut server = Server::new(w).expect("server");
        pool::spawn(&server.shared, server.threads, crate::dispatch::run_task).expect("pool");
        server.now = server.shared.now_ms();
        Harness {
            server,
            events: Events::with_capacity(16),
        }
    }

    /// Apps answering on the loop thread when the whole request is in.
    fn inline(app: impl App) -> Harness {
        Harness::new(
            WorkerConfig {
                inline: true,
                ..WorkerConfig::default()
            },
            app,
        )
    }

    /// A new connection, accepted as from a listener.
    fn connect(&mut self) -> (usize, MemIo) {
        let io = MemIo::default();
        let idx = match self.server.free.last() {
            Some(&i) => i as usize,
            None => self.server.conns.len(),
        };
        self.server.add_conn(Sock::Mem(io.clone()), None, None);
        assert!(self.conn(idx).is_some(), "connection {idx} added");
        (idx, io)
    }

    fn conn(&self, idx: usize) -> Option<&Conn> {
        self.server.conns.get(idx).and_then(Option::as_ref)
    }

    /// The client sends `bytes`: the poll reports the socket readable.
    fn send(&mut self, idx: usize, io: &MemIo, bytes: &[u8]) {
        lock(&io.0).input.extend_from_slice(bytes);
        self.readable(idx);
    }

    /// The client closes its write side.
    fn send_eof(&mut self, idx: usize, io: &MemIo) {
        lock(&io.0).input_closed = true;
        self.readable(idx);
    }

    fn readable(&mut self, idx: usize) {
        if let Some(c) = self.server.conns[idx].as_mut() {
            c.read.readable = true;
        }
        self.server.drive(idx);
    }

    /// The socket has room again: the poll reports it writable.
    fn writable(&mut self, idx: usize, room: Option<usize>) {
        lock(&self.conn_io(idx).0).room = room;
        self.server.drive(idx);
    }

    fn conn_io(&self, idx: usize) -> MemIo {
        match self.conn(idx).map(|c| &c.sock) {
            Some(Sock::Mem(io)) => io.clone(),
            _ => panic!("connection {idx} is not an in-memory one"),
        }
    }

    /// Runs the loop's handling of pool messages until `done` holds (the
    /// pool threads answer), for 10 s at most.
    fn until(&mut self, what: &str, done: impl Fn(&Harness) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            // As the loop does before each poll: wake the pool for the
            // tasks of the turn.
            self.server.shared.nudge();
            let _ = self
                .server
                .poll
                .poll(&mut self.events, Some(Duration::from_millis(20)));
            self.server.now = self.server.shared.now_ms();
            self.server.process_msgs();
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.server.shared.stop_pool();
    }
}

/// Answers `METHOD PATH BODY-LENGTH`, reading the whole body.
fn echo(req: &mut Request<'_>) -> Response {
    let body = req.body().read_all();
    let text = match body {
        Ok(b) => format!("{} {} {}\n", req.method(), req.path(), b.len()),
        Err(e) => format!("{} {} error {}\n", req.method(), req.path(), e.kind()),
    };
    Response::text(200, &text)
}

/// The response bodies in `out`, in order (each response's body is its
/// `Content-Length` bytes after its head).
fn bodies(out: &str) -> Vec<&str> {
    let mut rest = out;
    let mut v = Vec::new();
    while let Some(end) = rest.find("\r\n\r\n") {
        let head = &rest[..end];
        if head.starts_with("HTTP/1.1 100 ") {
            rest = &rest[end + 4..];
            continue;
        }
        let len = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .map_or(0, |n| n.trim().parse::<usize>().expect("length"));
        let start = end + 4;
        v.push(&rest[start..(start + len).min(rest.len())]);
        rest = &rest[(start + len).min(rest.len())..];
    }
    v
}

#[test]
fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let mut h = Harness::inline(echo);
    let (idx, io) = h.connect();
    h.send(
        idx,
        &io,
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\nGET /c HT",
    );
    let out = io.take_output();
    assert_eq!(bodies(&out), ["GET /a 0\n", "GET /b 0\n"], "{out}");
    assert!(!out.contains("Connection: close"), "{out}");
    // The third request waits for the rest of its head.
    let c = h.conn(idx).expect("open");
    assert_eq!(c.timer, HeadTimer::Head);
    assert!(matches!(c.exchange, Exchange::Idle));
    h.send(idx, &io, b"TP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(bodies(&io.take_output()), ["GET /c 0\n"]);
    let c = h.conn(idx).expect("kept alive");
    assert_eq!(c.timer, HeadTimer::Idle);
    assert_eq!(c.closing, Closing::No);
    assert!(c.rbuf.is_none(), "an idle connection holds no read buffer");
}

#[test]
fn a_head_in_parts_runs_the_head_deadline_then_408() {
    let mut h = Harness::inline(echo);
    let (idx, io) = h.connect();
    let accepted_at = h.server.now;
    // A new connection waits for its first byte under the head deadline.
    assert_eq!(h.conn(idx).expect("open").timer, HeadTimer::Idle);
    h.server.now += 5;
    h.send(idx, &io, b"GET / HTTP/1.1\r\nHo");
    assert_eq!(io.output(), "");
    let c = h.conn(idx).expect("open");
    assert_eq!(c.timer, HeadTimer::Head);
    assert_eq!(c.deadline, h.server.now + h.server.header_ms);
    assert!(c.deadline > accepted_at + h.server.header_ms);
    // More of the head does not restart the deadline.
    let deadline = c.deadline;
    h.server.now += 5;
    h.send(idx, &io, b"st: x\r\n");
    assert_eq!(h.conn(idx).expect("open").deadline, deadline);
    // The deadline passes: 408 and a lingering close.
    h.server.now = deadline;
    h.server.expire();
    let out = io.take_output();
    assert!(out.starts_with("HTTP/1.1 408 "), "{out}");
    assert!(out.contains("Connection: close\r\n"), "{out}");
    assert!(io.write_shut(), "a lingering close shuts the write side");
    assert_eq!(h.conn(idx).expect("lingering").closing, Closing::Lingering);
    h.send_eof(idx, &io);
    assert!(h.conn(idx).is_none(), "closed at the client's EOF");
}

#[test]
fn expect_continue_for_a_held_body_is_answered_once() {
    let mut h = Harness::inline(echo);
    let (idx, io) = h.connect();
    h.send(
        idx,
        &io,
        b"POST /u HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    );
    assert_eq!(io.take_output().as_bytes(), CONTINUE);
    h.send(idx, &io, b"he");
    assert_eq!(io.take_output(), "", "no second 100 Continue");
    h.send(idx, &io, b"llo");
    let out = io.take_output();
    assert!(!out.contains("100 Continue"), "{out}");
    assert_eq!(bodies(&out), ["POST /u 5\n"]);
    // The next request on the connection may ask again.
    h.send(
        idx,
        &io,
        b"POST /v HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
    );
    assert_eq!(io.take_output().as_bytes(), CONTINUE);
    h.send(idx, &io, b"abc");
    assert_eq!(bodies(&io.take_output()), ["POST /v 3\n"]);
}

/// Answers `METHOD PATH BODY-LENGTH ok` when the body's byte `i` is
/// `i % 251`, else `... corrupt at I`.
fn check_pattern(req: &mut Request<'_>) -> Response {
    let body = req.body().read_all().unwrap_or_default();
    let verdict = match body
        .iter()
        .enumerate()
        .find(|(i, b)| **b != (i % 251) as u8)
    {
        None => "ok".to_owned(),
        Some((i, _)) => format!("corrupt at {i}"),
    };
    Response::text(
        200,
        &format!(
            "{} {} {} {verdict}
",
            req.method(),
            req.path(),
            body.len()
        ),
    )
}

#[test]
fn a_large_length_body_read_straight_for_the_app_stops_at_its_end() {
    // Content-Length bodies over a read buffer go from the socket into the
    // reader's vector, at most what the body has left: the request that
    // follows in the same bytes is not read with it.
    let mut h = Harness::inline(check_pattern);
    let (idx, io) = h.connect();
    let n = crate::HOLD_BODY_MAX as usize + 300_000;
    let body: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
    let mut wire =
        format!("POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: {n}\r\n\r\n").into_bytes();
    wire.extend_from_slice(&body);
    let next = b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n";
    wire.extend_from_slice(next);
    // The last 30,000 bytes of the body (less than one read, more than a
    // read buffer) arrive with the next request.
    let last = wire.len() - next.len() - 30_000;
    for part in wire[..last].chunks(100_000).chain([&wire[last..]]) {
        h.send(idx, &io, part);
        h.until("the bytes read", |h| {
            io.unread() == 0 || h.conn(idx).is_some_and(|c| !c.read.readable)
        });
    }
    h.until("both responses", |_| bodies(&io.output()).len() == 2);
    assert_eq!(
        bodies(&io.take_output()),
        [format!("POST /big {n} ok\n"), "GET /next 0 ok\n".to_owned()]
    );
}

#[test]
fn expect_continue_for_a_streamed_body_waits_for_the_apps_first_read() {
    let mut h = Harness::inline(echo);
    let (idx, io) = h.connect();
    let n = crate::HOLD_BODY_MAX as usize + 1000;
    let head = format!(
        "POST /big HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: {n}\r\n\r\n"
    );
    h.send(idx, &io, head.as_bytes());
    // Too long to hold: the body is fed to the app on the pool, and the
    // 100 Continue goes out when it reads.
    h.until("100 Continue", |_| io.output().as_bytes() == CONTINUE);
    assert!(matches!(
        h.conn(idx).expect("open").exchange,
        Exchange::InApp { feed: Some(_) }
    ));
    io.take_output();
    let body = vec![b'x'; n];
    for part in body.chunks(10_000) {
        h.send(idx, &io, part);
    }
    h.until("the response", |_| io.output().contains("\r\n\r\n"));
    let out = io.take_output();
    assert_eq!(bodies(&out), [format!("POST /big {n}\n")], "{out}");
    assert!(!out.contains("Connection: close"), "{out}");
    let c = h.conn(idx).expect("kept alive");
    assert!(matches!(c.exchange, Exchange::Idle));
}

#[test]
fn an_app_that_answers_without_reading_gets_no_continue_and_a_close() {
    let mut h = Harness::inline(|_: &mut Request<'_>| Response::text(403, "no\n"));
    let (idx, io) = h.connect();
    let n = crate::HOLD_BODY_MAX as usize + 1000;
    let head = format!(
        "POST /big HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: {n}\r\n\r\n"
    );
    h.send(idx, &io, head.as_bytes());
    h.until("the response", |_| io.output().contains("\r\n\r\n"));
    let out = io.take_output();
    assert!(out.starts_with("HTTP/1.1 403 "), "{out}");
    assert!(!out.contains("100 Continue"), "{out}");
    assert!(out.contains("Connection: close\r\n"), "{out}");
    // The unread body cannot be skipped: a lingering close.
    assert_eq!(h.conn(idx).expect("lingering").closing, Closing::Lingering);
}

#[test]
fn chunked_bodies_whole_and_in_pieces() {
    let mut h = Harness::inline(echo);
    let (idx, io) = h.connect();
    h.send(
        idx,
        &io,
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    );
    assert_eq!(bodies(&io.take_output()), ["POST /c 11\n"]);
    // In pieces: the app (on the pool) reads it as it arrives.
    h.send(
        idx,
        &io,
        b"POST /d HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
    );
    assert_eq!(io.output(), "");
    h.send(idx, &io, b"lo\r\n6\r\n wor");
    h.send(
        idx,
        &io,
        b"ld\r\n0\r\n\r\nGET /e HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    h.until("two responses", |_| bodies(&io.output()).len() == 2);
    assert_eq!(bodies(&io.take_output()), ["POST /d 11\n", "GET /e 0\n"]);
}

#[test]
fn length_bodies_held_and_split_from_the_next_request() {
    let mut h = Harness::inline(echo);
    let (idx, io) = h.connect();
    h.send(
        idx,
        &io,
        b"POST /l HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhe",
    );
    assert_eq!(io.output(), "", "a short body is held until it is in");
    assert_eq!(h.server.dispatched, 0);
    h.send(idx, &io, b"lloGET /m HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(bodies(&io.take_output()), ["POST /l 5\n", "GET /m 0\n"]);
    assert_eq!(h.server.dispatched, 2);
}

#[test]
fn keep_alive_and_close_decisions() {
    let mut h = Harness::inline(echo);
    // HTTP/1.0 closes unless asked to keep alive.
    let (idx, io) = h.connect();
    h.send(idx, &io, b"GET /a HTTP/1.0\r\n\r\n");
    let out = io.take_output();
    assert!(out.contains("Connection: close\r\n"), "{out}");
    assert!(h.conn(idx).is_none(), "closed after the response");
    let (idx, io) = h.connect();
    h.send(
        idx,
        &io,
        b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    );
    let out = io.take_output();
    assert!(out.contains("Connection: keep-alive\r\n"), "{out}");
    assert_eq!(h.conn(idx).expect("kept").closing, Closing::No);
    // HTTP/1.1 keeps alive unless told to close.
    let (idx, io) = h.connect();
    h.send(
        idx,
        &io,
        b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let out = io.take_output();
    assert!(out.contains("Connection: close\r\n"), "{out}");
    assert_eq!(bodies(&out), ["GET /a 0\n"]);
    assert!(h.conn(idx).is_none());
    // Bytes after a closing request: a lingering close, not a reset.
    let (idx, io) = h.connect();
    h.send(
        idx,
        &io,
        b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
    );
    assert_eq!(bodies(&io.take_output()), ["GET /a 0\n"]);
    assert!(io.write_shut());
    assert_eq!(h.conn(idx).expect("lingering").closing, Closing::Lingering);
    // EOF in the middle of a head: closed without an answer.
    let (idx, io) = h.connect();
    h.send(idx, &io, b"GET /a HTTP/1.1\r\nHo");
    h.send_eof(idx, &io);
    assert_eq!(io.output(), "");
    assert!(h.conn(idx).is_none());

    // keepalive 0: every response closes.
    let mut h = Harness::new(
        WorkerConfig {
            inline: true,
            keepalive: Duration::ZERO,
            ..WorkerConfig::default()
        },
        echo,
    );
    let (idx, io) = h.connect();
    h.send(idx, &io, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(io.take_output().contains("Connection: close\r\n"));
    assert!(h.conn(idx).is_none());
}

#[test]
fn a_full_socket_holds_back_the_next_pipelined_request() {
    let big = "x".repeat(20_000);
    let mut h = Harness::inline(move |req: &mut Request<'_>| {
        if req.path() == "/big" {
            Response::text(200, &big)
        } else {
            Response::text(200, "small\n")
        }
    });
    let (idx, io) = h.connect();
    io.set_room(Some(1000));
    h.send(
        idx,
        &io,
        b"GET /big HTTP/1.1\r\nHost: x\r\n\r\nGET /small HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    // The socket took 1000 bytes: the rest waits, the next request too.
    assert_eq!(io.output().len(), 1000);
    assert_eq!(h.server.dispatched, 1);
    let c = h.conn(idx).expect("open");
    assert!(c.wbuf.is_some());
    assert_eq!(c.deadline, h.server.now + h.server.stall_ms);
    // Room for some more, then for all.
    h.writable(idx, Some(5000));
    assert_eq!(io.output().len(), 6000);
    assert_eq!(h.server.dispatched, 1);
    h.writable(idx, None);
    let out = io.take_output();
    let got = bodies(&out);
    assert_eq!(got.len(), 2, "{out}");
    assert_eq!(got[0].len(), 20_000);
    assert_eq!(got[1], "small\n");
    assert_eq!(h.server.dispatched, 2);
    assert!(h.conn(idx).expect("open").wbuf.is_none());
    assert_eq!(io.unread(), 0);
}

#[test]
fn connection_state_stays_small() {
    // An idle keep-alive connection costs its slab slot and nothing
    // else (no buffers): keep the slot well under the 512-byte goal.
    let size = std::mem::size_of::<Option<Conn>>();
    assert!(size <= 256, "Option<Conn> is {size} bytes");
    eprintln!("Option<Conn>: {size} bytes");
}

#[test]
fn jitter_is_in_range() {
    assert_eq!(jitter(0), 0);
    for _ in 0..100 {
        assert!(jitter(3) <= 3);
    }
    // The largest value neither divides by zero nor overflows (issue 19).
    let _ = jitter(u64::MAX);
    assert!(jitter(u64::MAX - 1) < u64::MAX);
}

#[test]
fn the_health_probe_is_answered_on_the_loop_while_the_pool_is_busy() {
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let mut h = Harness::new(
        WorkerConfig {
            health_path: Some("/healthz".into()),
            ..WorkerConfig::default()
        },
        move |req: &mut Request<'_>| {
            if req.path() == "/slow" {
                let _ = lock(&release_rx).recv_timeout(Duration::from_secs(10));
            }
            Response::text(200, "app\n")
        },
    );
    let (slow, slow_io) = h.connect();
    h.send(slow, &slow_io, b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
    h.until("the pool thread to take the request", |h| {
        h.server
            .shared
            .stats
            .active_threads
            .load(std::sync::atomic::Ordering::Relaxed)
            == 1
    });
    // The only pool thread is held: the probe and a request after it on
    // one connection get the probe's answer at once, the request later.
    let (idx, io) = h.connect();
    h.send(
        idx,
        &io,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    let out = io.take_output();
    assert!(out.starts_with("HTTP/1.1 200 "), "{out}");
    assert_eq!(bodies(&out), ["ok\n"]);
    assert!(matches!(
        h.conn(idx).expect("open").exchange,
        Exchange::InApp { feed: None }
    ));
    release_tx.send(()).unwrap();
    h.until("both app responses", |_| {
        bodies(&slow_io.output()).len() == 1 && bodies(&io.output()).len() == 1
    });
    assert_eq!(bodies(&io.take_output()), ["app\n"]);
    // Once the worker stops: 503 and a close.
    h.server.begin_drain("test", super::Backlog::Leave);
    h.send(idx, &io, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let out = io.take_output();
    assert!(out.starts_with("HTTP/1.1 503 "), "{out}");
    assert!(out.contains("Connection: close\r\n"), "{out}");
}

/// A [`App::serial`] app: `/block` holds its thread until released.
struct SerialApp {
    release: Mutex<std::sync::mpsc::Receiver<()>>,
}

impl App for SerialApp {
    fn call(&self, req: &mut Request<'_>) -> Response {
        if req.path() == "/block" {
            let _ = lock(&self.release).recv_timeout(Duration::from_secs(10));
        }
        let _ = req.body().read_all();
        Response::text(200, "app\n")
    }

    fn serial(&self) -> bool {
        true
    }
}

/// A serial app's queue is served by one thread while it keeps taking
/// requests; one that blocks (or waits for a body) must not hold the
/// others' requests behind it: a sleeping thread is woken for them.
#[test]
fn a_serial_apps_requests_behind_a_blocked_or_waiting_thread_get_another() {
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let mut h = Harness::new(
        WorkerConfig {
            threads: 3,
            ..WorkerConfig::default()
        },
        SerialApp {
            release: Mutex::new(release_rx),
        },
    );
    let active = |h: &Harness| {
        h.server
            .shared
            .stats
            .active_threads
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let (blocked, blocked_io) = h.connect();
    h.send(
        blocked,
        &blocked_io,
        b"GET /block HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    h.until("a thread to take /block", |h| active(h) == 1);
    // A request whose body has not all arrived (too long to be held until
    // it has) holds a second thread in the app's read.
    let (waiting, waiting_io) = h.connect();
    let hold = crate::HOLD_BODY_MAX as usize;
    let mut head = format!(
        "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        hold + 1
    )
    .into_bytes();
    head.resize(head.len() + hold, b'x');
    h.send(waiting, &waiting_io, &head);
    h.until("a thread to take /upload", |h| active(h) == 2);
    let mut fast = Vec::new();
    for _ in 0..3 {
        let (idx, io) = h.connect();
        h.send(idx, &io, b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n");
        fast.push(io);
    }
    h.until("the requests behind the held threads", |_| {
        fast.iter().all(|io| bodies(&io.output()) == ["app\n"])
    });
    assert!(blocked_io.output().is_empty());
    assert!(waiting_io.output().is_empty());
    h.send(waiting, &waiting_io, b"x");
    release_tx.send(()).unwrap();
    h.until("/block and /upload", |_| {
        bodies(&blocked_io.output()) == ["app\n"] && bodies(&waiting_io.output()) == ["app\n"]
    });
}
