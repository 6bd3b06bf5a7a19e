//! One connection: reading and parsing requests, handing them to the app,
//! writing responses, and closing (lingering when input may still come).

use std::io::{self, Read};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::Server;
use super::state::{Closing, Exchange, Feed, FeedKind, HeadTimer, Step};
use crate::HOLD_BODY_MAX;
use crate::dispatch;
use crate::encode::{self, CONTINUE};
use crate::msg::{Job, Msg, Pull, Task};
use crate::parse::{ChunkedDecoder, Framing, Head, parse_head};
use crate::request::{Body, BodyChan, BodyError, ChanState, OwnedHead};
use crate::write_buf::WriteBuf;
use crate::{health, reject};

/// A streamed response is pulled again when less than this is unsent.
pub(super) const STREAM_LOW_WATER: usize = 64 * 1024;
/// A closing connection reads (and drops) at most this much before closing.
pub(super) const LINGER_MAX: usize = 1 << 20;

impl Server {
    pub(super) fn close(&mut self, idx: usize) {
        let Some(c) = self.conns[idx].take() else {
            return;
        };
        self.free.push(idx as u32);
        self.nconns -= 1;
        self.connections_changed();
        match &c.exchange {
            Exchange::InApp { feed: Some(feed) } => feed.fail(BodyError::Aborted),
            // A held stream: its request ends here.
            Exchange::Streaming(_) => self.request_finished(),
            // The pool thread stops pulling and hands the stream back (to
            // be dropped, its request finished, in apply_chunk).
            Exchange::Pulling(w) => w.gone.store(true, SeqCst),
            _ => {}
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
                let res = w.flush(&mut c.sock);
                if let Some(spent) = w.take_spent() {
                    self.shared.put_spare(spent);
                }
                match res {
                    Ok(true) => {
                        if let Exchange::Pulling(win) = &c.exchange {
                            win.unsent.store(0, SeqCst);
                        }
                        if let Some(w) = c.wbuf.take() {
                            if w.head.capacity() > 64 * 1024 {
                                // A streamed piece's buffer.
                                self.shared.put_spare([w.head]);
                            } else {
                                self.bufs.put_head_vec(w.head);
                            }
                        }
                    }
                    Ok(false) => {
                        if let Exchange::Pulling(win) = &c.exchange {
                            win.unsent.store(w.remaining(), SeqCst);
                        }
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
            self.pull(idx);
            let Some(c) = self.conns[idx].as_mut() else {
                return;
            };
            match &c.exchange {
                Exchange::Idle => {}
                Exchange::InApp { feed: Some(_) } if c.read.readable => match self.read_body(idx) {
                    Step::Continue => continue,
                    Step::Stop => return,
                },
                _ => return,
            }
            match c.closing {
                Closing::No => {}
                Closing::Lingering => {
                    self.linger(idx);
                    return;
                }
                Closing::AfterWrite if !c.has_input() => {
                    self.close(idx);
                    return;
                }
                Closing::AfterWrite | Closing::LingerAfterWrite => {
                    c.closing = Closing::Lingering;
                    c.sock.shutdown_write();
                    if let Some(b) = c.rbuf.take() {
                        self.bufs.put(b);
                    }
                    let d = self.linger_deadline();
                    self.set_deadline(idx, d);
                    continue;
                }
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
        let window = match &c.exchange {
            Exchange::Streaming(stream) => stream.window.clone(),
            _ => return,
        };
        window
            .unsent
            .store(c.wbuf.as_ref().map_or(0, WriteBuf::remaining), SeqCst);
        let Exchange::Streaming(stream) =
            std::mem::replace(&mut c.exchange, Exchange::Pulling(window))
        else {
            return;
        };
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
            let Some(c) = self.conns[idx].as_mut() else {
                return;
            };
            match c.sock.read(&mut scratch) {
                Ok(0) => break,
                Ok(n) => {
                    total += n;
                    if total > LINGER_MAX {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    c.read.readable = false;
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
        c.close_after(Closing::LingerAfterWrite);
        c.timer = HeadTimer::None;
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
        let Some(c) = self.conns[idx].as_mut() else {
            return Step::Stop;
        };
        let has_data = c.has_input();
        if let Some(rbuf) = c.rbuf.as_ref().filter(|_| has_data && c.unparsed) {
            c.unparsed = false;
            let have = rbuf.len();
            match parse_head(rbuf.filled(), &self.limits, &mut self.scratch) {
                Ok(Some(head))
                    if health::is_probe(
                        self.config.health_path.as_deref(),
                        &head,
                        rbuf.filled(),
                    ) =>
                {
                    return self.answer_probe(idx, head);
                }
                Ok(Some(head)) if !self.holds_body(&head, have) => {
                    return self.dispatch(idx, head);
                }
                Ok(Some(head)) => {
                    // Held: a client waiting for `100 Continue` gets it, once.
                    if let Some(c) = self.conns[idx].as_mut()
                        && head.expect_continue
                        && !c.continue_sent
                    {
                        c.continue_sent = true;
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
        let Some(c) = self.conns[idx].as_mut() else {
            return Step::Stop;
        };
        if c.read.eof {
            if has_data {
                // Part of a request, then EOF: not a request.
                self.shared.metrics.closed_early();
            }
            self.close(idx);
            return Step::Stop;
        }
        if !c.read.readable {
            // Wait for bytes.
            let now = self.now;
            if has_data {
                if c.timer != HeadTimer::Head {
                    c.timer = HeadTimer::Head;
                    let d = self.head_deadline();
                    self.set_deadline(idx, d);
                }
            } else {
                if let Some(b) = c.rbuf.take() {
                    self.bufs.put(b);
                }
                if c.timer != HeadTimer::Idle {
                    c.timer = HeadTimer::Idle;
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
        // Room for the longest head, and for a held body after it.
        let max = self.max_head + 2 + HOLD_BODY_MAX as usize;
        let rbuf = c.rbuf.get_or_insert_with(|| self.bufs.get());
        let spare = rbuf.spare(max);
        if spare.is_empty() {
            self.error(idx, 431, "request header fields too large");
            return Step::Continue;
        }
        let want = spare.len();
        match c.sock.read(spare) {
            Ok(0) => {
                c.read.got(0, want);
                Step::Continue
            }
            Ok(n) => {
                if rbuf.is_empty() {
                    c.head_at = self.now;
                }
                rbuf.advance(n);
                c.unparsed = true;
                c.read.got(n, want);
                Step::Continue
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                c.read.readable = false;
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
        let Some(c) = self.conns[idx].as_mut() else {
            return Step::Stop;
        };
        let Some(rbuf) = c.rbuf.as_mut() else {
            return Step::Stop;
        };
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
        let mut fed = None;
        let body = match feed {
            None => body,
            Some((data, kind, received)) => {
                let chan = Arc::new(BodyChan {
                    state: Mutex::new(ChanState::with(data)),
                    cond: Condvar::new(),
                    notify: self.notify.clone(),
                    token: idx as u32,
                    generation,
                });
                fed = Some(Box::new(Feed {
                    chan: chan.clone(),
                    kind,
                    received,
                    incoming: Vec::new(),
                    // A client that already sends the body does not wait.
                    expect: head.expect_continue && received == 0,
                }));
                Body::stream(chan)
            }
        };
        if c.has_input() {
            // Pipelined bytes wait in the buffer.
            c.unparsed = true;
        } else if let Some(b) = c.rbuf.take() {
            self.bufs.put(b);
        }
        let streaming = fed.is_some();
        c.exchange = Exchange::InApp { feed: fed };
        c.timer = HeadTimer::None;
        c.continue_sent = false;
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

    /// Answer a request for `health_path` here, on the loop (see
    /// [`crate::WorkerConfig::health_path`]): it never reaches the pool, so
    /// busy app threads cannot delay it, and it is not counted as a request
    /// (no pending or served count, metrics, access line or `max_requests`).
    /// Another method on the path gets a 405, counted and logged as the
    /// loop's other refusals are ([`reject`]).
    fn answer_probe(&mut self, idx: usize, head: Head) -> Step {
        let stopping = self.drain_deadline.is_some() || self.restart_pending;
        let keep_alive = head.keep_alive && self.keepalive_ms > 0;
        let mut out = self.bufs.head_vec();
        let Some(c) = self.conns[idx].as_mut() else {
            return Step::Stop;
        };
        let Some(rbuf) = c.rbuf.as_mut() else {
            return Step::Stop;
        };
        let (status, close) = health::answer(&head, rbuf.filled(), stopping, keep_alive, &mut out);
        if status == 405 {
            let took = Duration::from_millis(self.now.saturating_sub(c.head_at));
            let arrived = &rbuf.filled()[..head.len];
            reject::record(&self.shared, arrived, c.peer, status, &out, took);
        }
        rbuf.consume(head.len);
        let body_unread = head.framing != Framing::None;
        WriteBuf::queue(&mut c.wbuf, WriteBuf::new(out));
        c.timer = HeadTimer::None;
        c.continue_sent = false;
        c.deadline = 0;
        if close {
            c.close_after(if stopping || body_unread {
                Closing::LingerAfterWrite
            } else {
                Closing::AfterWrite
            });
        } else if c.has_input() {
            // Pipelined bytes wait in the buffer.
            c.unparsed = true;
        } else if let Some(b) = c.rbuf.take() {
            self.bufs.put(b);
        }
        Step::Continue
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
