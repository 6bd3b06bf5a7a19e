//! One connection: reading and parsing requests, handing them to the app,
//! writing responses, and closing (lingering when input may still come).

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use mio::net::{TcpStream, UnixStream};

use super::feed::{Feed, FeedKind, fail_feed};
use super::{Server, Step};
use crate::HOLD_BODY_MAX;
use crate::buf::Buf;
use crate::dispatch::{self, StreamResp};
use crate::encode::{self, CONTINUE};
use crate::parse::{ChunkedDecoder, Framing, Head, parse_head};
use crate::pool::{Job, Msg, Pull, Task};
use crate::reject;
use crate::request::{Body, BodyChan, BodyError, ChanState, OwnedHead};
use crate::write_buf::WriteBuf;

/// A streamed response is pulled again when less than this is unsent.
pub(super) const STREAM_LOW_WATER: usize = 64 * 1024;
/// A closing connection reads (and drops) at most this much before closing.
pub(super) const LINGER_MAX: usize = 1 << 20;

// Connection flags.
/// The socket may have bytes to read (no WouldBlock seen since the last event).
pub(super) const READABLE: u16 = 1;
/// A request is with the app.
pub(super) const IN_APP: u16 = 1 << 1;
/// A pull of a streamed response is with the pool.
pub(super) const PULLING: u16 = 1 << 2;
/// Close once the output is written.
pub(super) const CLOSE_AFTER: u16 = 1 << 3;
/// Shut the write side and drain input before closing.
pub(super) const LINGER_ON_CLOSE: u16 = 1 << 4;
/// Lingering: write side shut, dropping input until EOF.
pub(super) const LINGER: u16 = 1 << 5;
/// The peer closed its write side.
pub(super) const READ_EOF: u16 = 1 << 6;
/// At least one request was read on this connection.
pub(super) const SERVED: u16 = 1 << 7;
/// The deadline is the keep-alive (or first-byte) deadline.
pub(super) const TIMER_IDLE: u16 = 1 << 8;
/// The deadline is the head deadline.
pub(super) const TIMER_HEAD: u16 = 1 << 9;
/// Bytes arrived since the last parse attempt.
pub(super) const NEW_DATA: u16 = 1 << 10;
/// The loop answered the held request's `Expect: 100-continue`.
pub(super) const CONTINUE_SENT: u16 = 1 << 11;
/// The poll reported the peer's FIN (EPOLLRDHUP): a short read no longer
/// means the socket is drained (the FIN came with the same edge as the last
/// data and brings no new one), so reads go on until EOF or WouldBlock.
pub(super) const PEER_HUP: u16 = 1 << 12;

pub(super) enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.read(buf),
            Sock::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.write(buf),
            Sock::Unix(s) => s.write(buf),
        }
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.write_vectored(bufs),
            Sock::Unix(s) => s.write_vectored(bufs),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Sock {
    pub(super) fn shutdown_write(&self) {
        let _ = match self {
            Sock::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
            Sock::Unix(s) => s.shutdown(std::net::Shutdown::Write),
        };
    }
}

pub(super) struct Conn {
    pub(super) sock: Sock,
    pub(super) generation: u32,
    pub(super) flags: u16,
    /// Loop-epoch milliseconds; 0 = none.
    pub(super) deadline: u64,
    /// The earliest heap entry for this connection; 0 = none.
    pub(super) timer_at: u64,
    pub(super) rbuf: Option<Buf>,
    pub(super) wbuf: Option<WriteBuf>,
    pub(super) feed: Option<Box<Feed>>,
    pub(super) stream: Option<Box<StreamResp>>,
    pub(super) peer: Option<SocketAddr>,
    pub(super) local: Option<SocketAddr>,
    /// Loop-epoch milliseconds when the buffered bytes began to arrive (the
    /// start of a refused request, for its duration).
    pub(super) head_at: u64,
}

impl Server {
    pub(super) fn close(&mut self, idx: usize) {
        let Some(c) = self.conns[idx].take() else {
            return;
        };
        self.free.push(idx as u32);
        self.nconns -= 1;
        self.connections_changed();
        if let Some(feed) = &c.feed {
            fail_feed(feed, BodyError::Aborted);
        }
        if c.stream.is_some() {
            // A held stream: its request ends here.
            self.request_finished();
        }
        if let Some(b) = c.rbuf {
            self.bufs.put(b);
        }
        if let Some(w) = c.wbuf {
            self.bufs.put_head_vec(w.head);
        }
        // Dropping the socket closes it (and removes it from the poll).
        drop(c.sock);
        if !self.listening
            && self.drain_deadline.is_none()
            && self.nconns < self.config.worker_connections
            && let Err(e) = self.start_listening()
        {
            slog::error!(self.logger, "cannot resume listening: {}", e);
        }
    }

    // ----- the connection state machine -------------------------------------

    pub(super) fn drive(&mut self, idx: usize) {
        loop {
            let stall = self.stall_deadline();
            let Some(c) = self.conns[idx].as_mut() else {
                return;
            };
            if let Some(w) = c.wbuf.as_mut() {
                match w.flush(&mut c.sock) {
                    Ok(true) => {
                        let w = c.wbuf.take().expect("some");
                        self.bufs.put_head_vec(w.head);
                    }
                    Ok(false) => {
                        let low = w.remaining() < STREAM_LOW_WATER;
                        self.set_deadline(idx, stall);
                        if low {
                            self.pull(idx);
                        }
                        return;
                    }
                    Err(_) => {
                        self.close(idx);
                        return;
                    }
                }
            }
            let c = self.conns[idx].as_mut().expect("live");
            if c.stream.is_some() {
                self.pull(idx);
            }
            let c = self.conns[idx].as_mut().expect("live");
            if c.flags & (IN_APP | PULLING) != 0 || c.stream.is_some() {
                if c.feed.is_some() && c.flags & READABLE != 0 {
                    match self.read_body(idx) {
                        Step::Continue => continue,
                        Step::Stop => return,
                    }
                }
                return;
            }
            if c.flags & LINGER != 0 {
                self.linger(idx);
                return;
            }
            if c.flags & CLOSE_AFTER != 0 {
                let unread = c.rbuf.as_ref().is_some_and(|b| !b.is_empty());
                if c.flags & LINGER_ON_CLOSE != 0 || unread {
                    c.flags |= LINGER;
                    c.sock.shutdown_write();
                    if let Some(b) = c.rbuf.take() {
                        self.bufs.put(b);
                    }
                    let d = self.linger_deadline();
                    self.set_deadline(idx, d);
                    continue;
                }
                self.close(idx);
                return;
            }
            match self.next_request(idx) {
                Step::Continue => continue,
                Step::Stop => return,
            }
        }
    }

    /// Send the next pull of a held stream to the pool.
    pub(super) fn pull(&mut self, idx: usize) {
        let Some(c) = self.conns[idx].as_mut() else {
            return;
        };
        if c.flags & PULLING != 0 {
            return;
        }
        let Some(stream) = c.stream.take() else {
            return;
        };
        c.flags |= PULLING;
        self.shared.submit(Task::Pull(Pull {
            token: idx as u32,
            generation: c.generation,
            stream,
        }));
    }

    pub(super) fn linger(&mut self, idx: usize) {
        let mut scratch = [0u8; 4096];
        let mut total = 0;
        loop {
            let c = self.conns[idx].as_mut().expect("live");
            match c.sock.read(&mut scratch) {
                Ok(0) => break,
                Ok(n) => {
                    total += n;
                    if total > LINGER_MAX {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    c.flags &= !READABLE;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        self.close(idx);
    }

    /// Answer `status` and close.
    pub(super) fn error(&mut self, idx: usize, status: u16, why: &str) {
        self.refuse(idx, status, why, None);
    }

    /// Answer `status` and close, counting and logging it as a request
    /// whose head is `head` (else what is buffered); see [`reject`].
    pub(super) fn refuse(&mut self, idx: usize, status: u16, why: &str, head: Option<&[u8]>) {
        let Some(c) = self.conns[idx].as_mut() else {
            return;
        };
        if status >= 500 {
            slog::debug!(self.logger, "refusing request: {} {}", status, why);
        }
        let out = encode::error_response(status, why);
        let arrived = match (head, &c.rbuf) {
            (Some(h), _) => h,
            (None, Some(b)) => b.filled(),
            (None, None) => &[],
        };
        let took = Duration::from_millis(self.now.saturating_sub(c.head_at));
        reject::record(&self.shared, arrived, c.peer, status, &out, took);
        WriteBuf::queue(&mut c.wbuf, WriteBuf::new(out));
        c.flags |= CLOSE_AFTER | LINGER_ON_CLOSE;
        c.flags &= !(TIMER_HEAD | TIMER_IDLE);
        if let Some(b) = c.rbuf.take() {
            self.bufs.put(b);
        }
        c.deadline = 0;
    }

    /// Whether the request whose head is `head` waits for more of its body
    /// ([`HOLD_BODY_MAX`]) before it goes to the app, with `have` bytes
    /// buffered.
    pub(super) fn holds_body(&self, head: &Head, have: usize) -> bool {
        let Framing::Length(n) = head.framing else {
            return false;
        };
        let limit = self.config.limit_request_body;
        if (limit > 0 && n > limit) || (head.expect_continue && n > HOLD_BODY_MAX) {
            return false;
        }
        have < head.len + n.min(HOLD_BODY_MAX) as usize
    }

    /// Parse and dispatch the next request, reading as needed.
    pub(super) fn next_request(&mut self, idx: usize) -> Step {
        let c = self.conns[idx].as_mut().expect("live");
        let has_data = c.rbuf.as_ref().is_some_and(|b| !b.is_empty());
        if has_data && c.flags & NEW_DATA != 0 {
            c.flags &= !NEW_DATA;
            let rbuf = c.rbuf.as_ref().expect("has data");
            let have = rbuf.len();
            match parse_head(rbuf.filled(), &self.limits, &mut self.scratch) {
                Ok(Some(head)) if !self.holds_body(&head, have) => {
                    return self.dispatch(idx, head);
                }
                Ok(Some(head)) => {
                    // Held: a client waiting for `100 Continue` gets it, once.
                    let c = self.conns[idx].as_mut().expect("live");
                    if head.expect_continue && c.flags & CONTINUE_SENT == 0 {
                        c.flags |= CONTINUE_SENT;
                        WriteBuf::queue(&mut c.wbuf, WriteBuf::from_static(CONTINUE));
                        return Step::Continue;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    self.error(idx, e.status, e.reason);
                    return Step::Continue;
                }
            }
        }
        let c = self.conns[idx].as_mut().expect("live");
        if c.flags & READ_EOF != 0 {
            if has_data {
                // Part of a request, then EOF: not a request.
                self.shared.metrics.closed_early();
            }
            self.close(idx);
            return Step::Stop;
        }
        if c.flags & READABLE == 0 {
            // Wait for bytes.
            let now = self.now;
            if has_data {
                if c.flags & TIMER_HEAD == 0 {
                    c.flags = (c.flags | TIMER_HEAD) & !TIMER_IDLE;
                    let d = self.head_deadline();
                    self.set_deadline(idx, d);
                }
            } else {
                if let Some(b) = c.rbuf.take() {
                    self.bufs.put(b);
                }
                if c.flags & TIMER_IDLE == 0 {
                    c.flags = (c.flags | TIMER_IDLE) & !TIMER_HEAD;
                    let d = match self.drain_deadline {
                        // Idle during a graceful stop: a short grace period.
                        Some(_) => self.drain_idle_deadline().min(now + self.keepalive_ms),
                        None => now + self.keepalive_ms,
                    };
                    self.set_deadline(idx, d);
                }
            }
            return Step::Stop;
        }
        if c.rbuf.is_none() {
            c.rbuf = Some(self.bufs.get());
        }
        // Room for the longest head, and for a held body after it.
        let max = self.max_head + 2 + HOLD_BODY_MAX as usize;
        let rbuf = c.rbuf.as_mut().expect("some");
        let spare = rbuf.spare(max);
        if spare.is_empty() {
            self.error(idx, 431, "request header fields too large");
            return Step::Continue;
        }
        let want = spare.len();
        match c.sock.read(spare) {
            Ok(0) => {
                c.flags = (c.flags | READ_EOF) & !READABLE;
                Step::Continue
            }
            Ok(n) => {
                if rbuf.is_empty() {
                    c.head_at = self.now;
                }
                rbuf.advance(n);
                c.flags |= NEW_DATA;
                if n < want && c.flags & PEER_HUP == 0 {
                    // A short read drained the socket; the next arrival
                    // brings a new edge.
                    c.flags &= !READABLE;
                }
                Step::Continue
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                c.flags &= !READABLE;
                Step::Continue
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Step::Continue,
            Err(_) => {
                if has_data {
                    // A reset in the middle of a request: not a request.
                    self.shared.metrics.closed_early();
                }
                self.close(idx);
                Step::Stop
            }
        }
    }

    pub(super) fn dispatch(&mut self, idx: usize, head: Head) -> Step {
        let limit = self.config.limit_request_body;
        let c = self.conns[idx].as_mut().expect("live");
        let rbuf = c.rbuf.as_mut().expect("has data");
        let mut hb = self.bufs.head_vec();
        hb.extend_from_slice(&rbuf.filled()[..head.len]);
        let spans = std::mem::replace(&mut self.scratch, self.spans.pop().unwrap_or_default());
        rbuf.consume(head.len);
        let mut feed = None;
        let body = match head.framing {
            Framing::None => Body::empty(),
            Framing::Length(n) => {
                if limit > 0 && n > limit {
                    self.refuse(idx, 413, "request body too large", Some(&hb));
                    self.bufs.put_head_vec(hb);
                    return Step::Continue;
                }
                let have = rbuf.len() as u64;
                if have >= n {
                    let data = rbuf.filled()[..n as usize].to_vec();
                    rbuf.consume(n as usize);
                    Body::from_bytes(data)
                } else {
                    let data = rbuf.filled().to_vec();
                    rbuf.consume(have as usize);
                    feed = Some((data, FeedKind::Length(n - have), have));
                    Body::empty()
                }
            }
            Framing::Chunked => {
                let mut dec = ChunkedDecoder::new(&self.limits);
                let mut data = Vec::new();
                let decoded = dec.decode(rbuf.filled(), &mut data);
                match decoded {
                    Err(e) => {
                        self.refuse(idx, e.status, e.reason, Some(&hb));
                        self.bufs.put_head_vec(hb);
                        return Step::Continue;
                    }
                    Ok(d) => {
                        rbuf.consume(d.consumed);
                        if limit > 0 && data.len() as u64 > limit {
                            self.refuse(idx, 413, "request body too large", Some(&hb));
                            self.bufs.put_head_vec(hb);
                            return Step::Continue;
                        }
                        if d.done {
                            Body::from_bytes(data)
                        } else {
                            let n = data.len() as u64;
                            feed = Some((data, FeedKind::Chunked(dec), n));
                            Body::empty()
                        }
                    }
                }
            }
        };
        let generation = c.generation;
        let body = match feed {
            None => body,
            Some((data, kind, received)) => {
                let chan = Arc::new(BodyChan {
                    state: Mutex::new(ChanState {
                        data,
                        ..ChanState::default()
                    }),
                    cond: Condvar::new(),
                    notify: self.notify.clone(),
                    token: idx as u32,
                    generation,
                });
                c.feed = Some(Box::new(Feed {
                    chan: chan.clone(),
                    kind,
                    received,
                    // A client that already sends the body does not wait.
                    expect: head.expect_continue && received == 0,
                }));
                Body::stream(chan)
            }
        };
        if c.rbuf.as_ref().is_some_and(|b| b.is_empty()) {
            let b = c.rbuf.take().expect("some");
            self.bufs.put(b);
        } else {
            // Pipelined bytes wait in the buffer.
            c.flags |= NEW_DATA;
        }
        c.flags = (c.flags | IN_APP | SERVED) & !(TIMER_HEAD | TIMER_IDLE | CONTINUE_SENT);
        let streaming = c.feed.is_some();
        let (peer, local) = (c.peer, c.local);
        self.dispatched += 1;
        if self.max_requests > 0
            && self.dispatched >= self.max_requests
            && !self.restart_pending
            && self.drain_deadline.is_none()
        {
            self.restart_pending = true;
            self.shared.draining.store(true, Relaxed);
        }
        let keep_alive = head.keep_alive
            && self.keepalive_ms > 0
            && self.drain_deadline.is_none()
            && !self.restart_pending;
        let n = self.shared.stats.pending_requests.fetch_add(1, Relaxed) + 1;
        self.shared.metrics.pending_requests(n);
        let deadline = if streaming { self.stall_deadline() } else { 0 };
        self.set_deadline(idx, deadline);
        let job = Job {
            token: idx as u32,
            generation,
            head: OwnedHead {
                buf: hb,
                head,
                headers: spans,
            },
            body,
            peer,
            local,
            keep_alive,
            out: self.bufs.head_vec(),
            start: Instant::now(),
        };
        let inline = !streaming && (self.config.inline || self.app_nonblocking(&job.head));
        if inline {
            let msg = dispatch::run_inline(&self.shared, job);
            if let Msg::Done(d) = msg {
                self.apply_done(d);
            }
            Step::Continue
        } else {
            self.shared.submit(Task::Call(job));
            Step::Continue
        }
    }

    /// Whether the app promises not to block on this request (a panic in
    /// the app's answer counts as no: the loop thread must survive it).
    pub(super) fn app_nonblocking(&self, head: &OwnedHead) -> bool {
        let app = &*self.shared.app;
        catch_unwind(AssertUnwindSafe(|| {
            app.nonblocking(head.method(), head.path())
        }))
        .unwrap_or(false)
    }
}

/// No request in progress, nothing to write, nothing buffered.
pub(super) fn is_idle(c: &Conn) -> bool {
    c.flags & (IN_APP | PULLING | CLOSE_AFTER | LINGER) == 0
        && c.stream.is_none()
        && c.wbuf.is_none()
        && c.rbuf.as_ref().is_none_or(|b| b.is_empty())
}
