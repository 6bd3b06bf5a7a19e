//! The event loop: accept, read and parse requests, hand them to the pool,
//! write responses, time connections out, stop.
//!
//! Sockets are registered once, edge-triggered, for both readable and
//! writable events, and never re-registered: the loop remembers in a flag
//! that a socket may have more to read, so it can leave bytes in the kernel
//! while a request is with the app (backpressure for pipelining).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{
    AtomicU8,
    Ordering::{Relaxed, SeqCst},
};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, UnixListener};
use mio::{Events, Interest, Poll, Token};

mod accept;
mod conn;
mod feed;
mod state;

use accept::{ListenSocket, ListenerState};
use state::{Closing, Conn, Exchange, HeadTimer};

use crate::buf::BufPool;
use crate::encode::CONTINUE;
use crate::metrics::Metrics;
use crate::msg::{Chunk, Done, Msg};
use crate::parse::{HeaderSpan, Limits};
use crate::pool::{self, Shared};
use crate::request::{BodyError, BodyEvent};
use crate::write_buf::WriteBuf;
use crate::{
    CONTROL_GRACEFUL, CONTROL_QUICK, CONTROL_REOPEN, CONTROL_RETIRE, Callback, LEAVE_TO_SIBLING_MS,
    Listener, Siblings, Worker,
};

pub(crate) const WAKER: Token = Token(0);
const SIGNALS: Token = Token(1);
const LISTENER_BASE: usize = 2;
const CONN_BASE: usize = 1 << 20;

/// Access lines of requests served on the loop are written at most this
/// long after the first one held (or at 64 KiB held, or when the loop
/// ends). Per turn instead, a write(2) of a few lines each turn cost 5
/// points of the 12% CPU per request that metrics and a JSON access log to
/// a file add (wrk -c32, 2 workers); a `SIGKILL`ed worker loses at most
/// this much of its lines.
const HOLD_LINES_MS: u64 = 10;
const LINGER_MS: u64 = 2000;
/// During a graceful stop, a connection with no request in progress is kept
/// open and read for this long (at most until the drain deadline) before a
/// lingering close; see [`Server::begin_drain`].
const DRAIN_IDLE_MS: u64 = 1000;
/// During a graceful stop, a lingering close waits this long at most for the
/// client's EOF (a client answered with `Connection: close` closes at once;
/// a late request byte arrives within a round trip).
const DRAIN_LINGER_MS: u64 = 500;

/// Lines the access log could not write are reported at most this often.
const DROPPED_REPORT_MS: u64 = 60_000;

/// What a graceful stop does with the connections waiting in the listen
/// backlog (see [`Server::begin_drain`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Backlog {
    /// The whole server stops: serve them.
    Take,
    /// Other workers (or a replacement) accept from the same listeners:
    /// leave them.
    Leave,
}

pub(crate) struct Server {
    poll: Poll,
    config: crate::WorkerConfig,
    limits: Limits,
    max_head: usize,
    listeners: Vec<ListenerState>,
    listening: bool,
    conns: Vec<Option<Conn>>,
    free: Vec<u32>,
    nconns: usize,
    next_gen: u32,
    heap: BinaryHeap<Reverse<(u64, u32)>>,
    bufs: BufPool,
    spans: Vec<Vec<HeaderSpan>>,
    scratch: Vec<HeaderSpan>,
    shared: Arc<Shared>,
    notify: Arc<dyn Fn(BodyEvent) + Send + Sync>,
    msgs: Vec<Msg>,
    /// Scratch for `process_msgs`.
    streamed: Vec<usize>,
    control: Arc<AtomicU8>,
    signals: Option<signal_hook_mio::v1_0::Signals>,
    handle_signals: bool,
    heartbeat: Option<Callback>,
    on_reopen_logs: Option<Callback>,
    on_recycle: Option<Callback>,
    siblings: Option<Arc<dyn Siblings>>,
    /// Since when a waiting connection is left to a less loaded sibling.
    leaving_since: Option<u64>,
    /// What the siblings were last told (they start with "not accepting").
    published: Option<usize>,
    parent_pid: Option<u32>,
    logger: slog::Logger,
    now: u64,
    last_beat: u64,
    last_second: u64,
    accept_pause_until: u64,
    accept_error_logged: u64,
    /// Access-log lines dropped as of the last report, and when it was.
    dropped_reported: u64,
    dropped_report_at: u64,
    dispatched: u64,
    max_requests: u64,
    drain_deadline: Option<u64>,
    restart_pending: bool,
    quick_requested: bool,
    keepalive_ms: u64,
    header_ms: u64,
    /// The pool's stuck-thread limit for the heartbeat (0 = none).
    timeout_ms: u64,
    /// The body-read and response-write stall limit (0 = none).
    stall_ms: u64,
    threads: usize,
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX / 4)) as u64
}

/// A random number in 0..=max from the pid and the clock (no extra
/// dependency; it only spreads worker restarts).
fn jitter(max: u64) -> u64 {
    if max == 0 {
        return 0;
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x = t ^ (u64::from(std::process::id()) << 32) ^ 0x9E37_79B9_7F4A_7C15;
    // splitmix64
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    // `max + 1` wraps to 0 at u64::MAX: every value is in range then.
    match max.checked_add(1) {
        Some(n) => x % n,
        None => x,
    }
}

pub(crate) fn run(w: Worker) -> io::Result<()> {
    let mut server = Server::new(w)?;
    let r = server.run();
    // The loop's held lines are written by now: the last count, unthrottled.
    server.report_dropped_lines(true);
    if let Some(s) = &server.siblings {
        s.publish(None);
    }
    server.shared.stop_pool();
    r
}

impl Server {
    fn new(w: Worker) -> io::Result<Server> {
        let epoch = Instant::now();
        let threads = w.config.threads.max(1);
        #[cfg(feature = "metrics")]
        let metrics = Metrics::new(w.metrics.as_ref(), &w.metrics_prefix, &w.config, &w.logger);
        #[cfg(not(feature = "metrics"))]
        let metrics = Metrics::default();
        let shared = Arc::new(Shared::new(
            w.app,
            w.stats.clone(),
            w.logger.clone(),
            w.access,
            metrics,
            w.waker.clone(),
            threads,
            epoch,
        ));
        let weak = Arc::downgrade(&shared);
        let notify: Arc<dyn Fn(BodyEvent) + Send + Sync> = Arc::new(move |ev| {
            if let Some(s) = weak.upgrade() {
                s.send(Msg::Body(ev));
            }
        });
        #[cfg(feature = "metrics")]
        let observe_wait = w.accept_queue_wait;
        #[cfg(not(feature = "metrics"))]
        let observe_wait = false;
        let mut listeners = Vec::with_capacity(w.listeners.len());
        for l in w.listeners {
            let (sock, local, set_nodelay) = match l {
                Listener::Tcp(l) => {
                    l.set_nonblocking(true)?;
                    let local = l.local_addr().ok();
                    let set_nodelay = !accept::nodelay_inherited(&l);
                    (
                        ListenSocket::Tcp(TcpListener::from_std(l)),
                        local,
                        set_nodelay,
                    )
                }
                Listener::Unix(l) => {
                    l.set_nonblocking(true)?;
                    (ListenSocket::Unix(UnixListener::from_std(l)), None, false)
                }
            };
            // Labelled as the supervisor labels the listener's other series.
            let wait = match local {
                Some(a) if observe_wait => shared.metrics.accept_wait(&format!("http://{a}")),
                _ => None,
            };
            listeners.push(ListenerState {
                sock,
                wildcard: local.is_some_and(|a| a.ip().is_unspecified()),
                local,
                set_nodelay,
                ready: true,
                wait,
            });
        }
        let config = w.config;
        let limits = config.limits();
        let max_requests = if config.max_requests > 0 {
            config
                .max_requests
                .saturating_add(jitter(config.max_requests_jitter))
        } else {
            0
        };
        Ok(Server {
            poll: w.poll,
            limits,
            max_head: limits.max_head(),
            listeners,
            listening: false,
            conns: Vec::new(),
            free: Vec::new(),
            nconns: 0,
            next_gen: 1,
            heap: BinaryHeap::new(),
            bufs: BufPool::default(),
            spans: Vec::new(),
            scratch: Vec::new(),
            shared,
            notify,
            msgs: Vec::new(),
            streamed: Vec::new(),
            control: w.control,
            signals: None,
            handle_signals: w.handle_signals,
            heartbeat: w.heartbeat,
            on_reopen_logs: w.on_reopen_logs,
            on_recycle: w.on_recycle,
            siblings: w.siblings,
            leaving_since: None,
            published: None,
            parent_pid: w.parent_pid,
            logger: w.logger,
            now: 0,
            last_beat: 0,
            last_second: 0,
            accept_pause_until: 0,
            accept_error_logged: 0,
            dropped_reported: 0,
            dropped_report_at: 0,
            dispatched: 0,
            max_requests,
            drain_deadline: None,
            restart_pending: false,
            quick_requested: false,
            keepalive_ms: ms(config.keepalive),
            header_ms: if config.header_timeout.is_zero() {
                0
            } else {
                ms(config.header_timeout).max(1)
            },
            timeout_ms: ms(config.timeout),
            stall_ms: ms(config.stall_timeout),
            threads,
            config,
        })
    }

    fn run(&mut self) -> io::Result<()> {
        if self.handle_signals {
            crate::sys::ignore_sigpipe();
            use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1};
            let mut signals =
                signal_hook_mio::v1_0::Signals::new([SIGTERM, SIGHUP, SIGINT, SIGQUIT, SIGUSR1])?;
            self.poll
                .registry()
                .register(&mut signals, SIGNALS, Interest::READABLE)?;
            self.signals = Some(signals);
        }
        pool::spawn(&self.shared, self.threads, crate::dispatch::run_task)?;
        self.start_listening()?;
        let mut events = Events::with_capacity(1024);
        self.now = self.shared.now_ms();
        self.beat();
        // Access lines of requests run on this thread (`App::nonblocking`)
        // are held and written together, at most `HOLD_LINES_MS` after the
        // first of them (or at 64 KiB): one write(2) for many requests
        // instead of one per request or per turn. Dropping the guard
        // (return or unwind) writes what is held.
        let held = ferrocorn_log::HeldLines::new();
        let mut held_since: Option<u64> = None;
        loop {
            if held.is_empty() {
                held_since = None;
            } else if self.now >= *held_since.get_or_insert(self.now) + HOLD_LINES_MS {
                held.flush();
                held_since = None;
            }
            let mut timeout = self.poll_timeout();
            // Wake the pool for this turn's tasks; while tasks wait with
            // pool threads asleep, look again within a millisecond whether
            // the pool stalled (see `Shared::nudge`).
            if self.shared.nudge() {
                timeout = timeout.min(Duration::from_millis(1));
            }
            if let Some(since) = held_since {
                timeout = timeout.min(Duration::from_millis(
                    (since + HOLD_LINES_MS).saturating_sub(self.now),
                ));
            }
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != io::ErrorKind::Interrupted
            {
                return Err(e);
            }
            self.now = self.shared.now_ms();
            for ev in events.iter() {
                let t = ev.token().0;
                if t >= CONN_BASE {
                    let idx = t - CONN_BASE;
                    if let Some(Some(c)) = self.conns.get_mut(idx) {
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            c.read.readable = true;
                        }
                        if ev.is_read_closed() || ev.is_error() {
                            c.read.peer_hup = true;
                        }
                        self.drive(idx);
                    }
                } else if t == WAKER.0 {
                } else if t == SIGNALS.0 {
                    self.read_signals();
                } else if let Some(l) = self.listeners.get_mut(t - LISTENER_BASE) {
                    l.ready = true;
                }
            }
            self.process_msgs();
            let ctl = self.control.swap(0, Relaxed);
            if ctl & CONTROL_QUICK != 0 {
                return Ok(());
            }
            if ctl & CONTROL_REOPEN != 0 {
                self.reopen_logs();
            }
            if ctl & CONTROL_GRACEFUL != 0 {
                self.begin_drain("graceful stop", Backlog::Take);
            }
            if ctl & CONTROL_RETIRE != 0 {
                self.begin_drain("retire", Backlog::Leave);
            }
            if self.restart_pending {
                self.restart_pending = false;
                slog::info!(self.logger, "Autorestarting worker after current request.");
                if let Some(f) = &self.on_recycle {
                    f();
                }
                // With siblings a supervisor holds the listeners and starts
                // a replacement: the backlog is theirs. Alone, nobody else
                // would serve it.
                let backlog = if self.siblings.is_some() {
                    Backlog::Leave
                } else {
                    Backlog::Take
                };
                self.begin_drain("max requests", backlog);
            }
            if self.quick_requested {
                return Ok(());
            }
            self.accept_all();
            self.expire();
            self.periodic();
            if let Some(deadline) = self.drain_deadline {
                let pending = self.shared.stats.pending_requests.load(Relaxed);
                if (self.nconns == 0 && pending == 0) || self.now >= deadline {
                    return Ok(());
                }
            }
        }
    }
}

impl Server {
    // ----- timing -----------------------------------------------------------

    fn poll_timeout(&self) -> Duration {
        let mut next = self.now + 1000;
        if self.can_accept() && self.listeners.iter().any(|l| l.ready) {
            match self.leaving_since {
                // Look again when the sibling's time is up.
                Some(t) => next = next.min(t + LEAVE_TO_SIBLING_MS),
                None => return Duration::ZERO,
            }
        }
        if let Some(Reverse((t, _))) = self.heap.peek() {
            next = next.min(*t);
        }
        if let Some(d) = self.drain_deadline {
            next = next.min(d);
        }
        if self.accept_pause_until > self.now {
            next = next.min(self.accept_pause_until);
        }
        Duration::from_millis(next.saturating_sub(self.now))
    }

    fn set_deadline(&mut self, idx: usize, at: u64) {
        let Some(c) = self.conns[idx].as_mut() else {
            return;
        };
        c.deadline = at;
        if at != 0 && (c.timer_at == 0 || at < c.timer_at) {
            c.timer_at = at;
            self.heap.push(Reverse((at, idx as u32)));
        }
    }

    fn expire(&mut self) {
        while let Some(&Reverse((t, idx))) = self.heap.peek() {
            if t > self.now {
                break;
            }
            self.heap.pop();
            let idx = idx as usize;
            let Some(c) = self.conns.get_mut(idx).and_then(|c| c.as_mut()) else {
                continue;
            };
            if c.timer_at != t {
                continue;
            }
            c.timer_at = 0;
            if c.deadline == 0 {
                continue;
            }
            if c.deadline > self.now {
                let d = c.deadline;
                c.timer_at = d;
                self.heap.push(Reverse((d, idx as u32)));
                continue;
            }
            self.on_timeout(idx);
        }
    }

    fn on_timeout(&mut self, idx: usize) {
        let Some(c) = self.conns[idx].as_mut() else {
            return;
        };
        c.deadline = 0;
        if c.closing == Closing::Lingering {
            self.close(idx);
        } else if c.wbuf.is_some() {
            // The client does not read its response.
            self.close(idx);
        } else if let Some(feed) = c.take_feed() {
            // The client stopped sending the body the app reads.
            feed.fail(BodyError::TimedOut);
            c.close_after(Closing::LingerAfterWrite);
        } else if !matches!(c.exchange, Exchange::Idle) {
            // With the app: no deadline.
        } else if c.has_input() {
            self.error(idx, 408, "");
            self.drive(idx);
        } else if self.drain_deadline.is_some() {
            // Idle past the grace period of a graceful stop: a lingering
            // close, so that a request byte sent just now meets a FIN, not
            // an RST.
            c.close_after(Closing::LingerAfterWrite);
            self.drive(idx);
        } else {
            self.close(idx);
        }
    }

    fn periodic(&mut self) {
        if self.now >= self.last_beat + 200 {
            self.beat();
        }
        if self.now >= self.last_second + 1000 {
            self.last_second = self.now;
            if let Some(ppid) = self.parent_pid
                && std::os::unix::process::parent_id() != ppid
                && self.drain_deadline.is_none()
            {
                slog::info!(
                    self.logger,
                    "Parent changed, shutting down: pid {}",
                    self.shared.pid
                );
                self.begin_drain("parent changed", Backlog::Take);
            }
            self.report_dropped_lines(false);
        }
    }

    /// Says in the error log, at most once every [`DROPPED_REPORT_MS`] (or
    /// now, when `at_exit`), how many access-log lines could not be written
    /// (a full disk, a closed pipe) since the last report: otherwise they
    /// are lost without a word.
    fn report_dropped_lines(&mut self, at_exit: bool) {
        let Some(access) = &self.shared.access else {
            return;
        };
        let total = access.dropped_lines();
        if total == self.dropped_reported
            || (!at_exit
                && self.dropped_report_at != 0
                && self.now < self.dropped_report_at + DROPPED_REPORT_MS)
        {
            return;
        }
        slog::error!(
            self.logger,
            "{} access log lines could not be written to {} ({} since the worker started)",
            total - self.dropped_reported,
            access.destination(),
            total
        );
        self.dropped_reported = total;
        self.dropped_report_at = self.now.max(1);
    }

    fn beat(&mut self) {
        let since = self.last_beat;
        self.last_beat = self.now;
        if let Some(hb) = &self.heartbeat
            && self.shared.pool_healthy(self.now, since, self.timeout_ms)
        {
            hb();
        }
    }

    fn reopen_logs(&self) {
        if let Some(f) = &self.on_reopen_logs {
            f();
        }
    }

    fn read_signals(&mut self) {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1};
        let Some(signals) = self.signals.as_mut() else {
            return;
        };
        let pending: Vec<i32> = signals.pending().collect();
        for sig in pending {
            match sig {
                SIGTERM => self.begin_drain("SIGTERM", Backlog::Take),
                SIGHUP => self.begin_drain("SIGHUP", Backlog::Leave),
                SIGINT | SIGQUIT => self.quick_requested = true,
                SIGUSR1 => self.reopen_logs(),
                _ => {}
            }
        }
    }

    // ----- accepting --------------------------------------------------------

    /// Start a graceful stop: stop accepting, finish what is in progress,
    /// close connections once nothing more is coming on them, and leave
    /// within `graceful_timeout`.
    ///
    /// Idle keep-alive connections are NOT closed at once. A keep-alive
    /// client sends its next request whenever it likes, typically right
    /// after the previous response: at the moment of the stop that request
    /// may already be in flight, or sent a microsecond later. Closing the
    /// socket then loses it: unread bytes in the receive queue make the
    /// kernel send an RST, and a request arriving after the close is
    /// answered with an RST; either way the client sees a reset or an EOF
    /// without a response and cannot tell whether the request was
    /// processed (non-idempotent requests are not retried). So instead:
    ///
    /// - every idle connection (served before, or accepted and silent) is
    ///   kept open and read for [`DRAIN_IDLE_MS`] more (bounded by the drain
    ///   deadline); a request that arrives is served, answered with
    ///   `Connection: close`, and the connection is closed after it;
    /// - a response that was already built as keep-alive before the stop
    ///   began keeps its promise: the connection is read again and the next
    ///   request gets `Connection: close` (closing right after a keep-alive
    ///   response is the very race above);
    /// - every close during the stop is a lingering close: shut the write
    ///   side (the client sees a FIN, i.e. a clean close it will not reuse),
    ///   then read and discard until the client's EOF or for at most
    ///   [`DRAIN_LINGER_MS`] (bounded by the drain deadline), so that a late request
    ///   byte does not turn into an RST that destroys the response;
    /// - the worker returns as soon as no connection and no request is
    ///   left, and at the drain deadline (`graceful_timeout`) at the latest.
    ///
    /// With [`Backlog::Take`] (the whole server stops: TERM), connections
    /// the kernel already completed in the listen backlog are accepted here
    /// (up to twice `worker_connections`) and served with `Connection:
    /// close`; the supervisor first waits for the queues to drain before it
    /// signals the workers, so these are the last arrivals. With
    /// [`Backlog::Leave`] (this worker stops alone: HUP from a supervisor
    /// on reload, TTOU, WINCH or upgrade, or `max_requests`) none is: the
    /// other workers, or the replacement, serve them, while this worker
    /// could only cut them at its drain deadline. Then this worker closes
    /// its copies of the listeners.
    fn begin_drain(&mut self, why: &str, backlog: Backlog) {
        if self.drain_deadline.is_some() {
            return;
        }
        slog::debug!(self.logger, "worker stopping gracefully ({})", why);
        self.shared.draining.store(true, Relaxed);
        self.drain_deadline = Some(self.now + ms(self.config.graceful_timeout));
        // The queued clients connected before the stop and nobody else may
        // take them (on TERM every worker stops), so they are taken even
        // beyond `worker_connections` (idle keep-alive connections are not
        // closed to make room), up to twice that: the queue itself is
        // bounded by the listen backlog.
        let cap = match backlog {
            Backlog::Take => self.config.worker_connections.saturating_mul(2),
            Backlog::Leave => 0,
        };
        for i in 0..self.listeners.len() {
            self.listeners[i].ready = true;
            while self.listeners[i].ready
                && self.nconns < cap
                && self.accept_pause_until <= self.now
            {
                if !self.accept_one(i) {
                    break;
                }
            }
        }
        self.stop_listening();
        // Our copies of the listeners are of no further use: once every
        // process has closed its copy, new connections are refused at once
        // instead of waiting in a queue nobody accepts from.
        self.listeners.clear();
        // Idle connections get a short grace period to send a request.
        let limit = self.drain_idle_deadline();
        for idx in 0..self.conns.len() {
            let Some(c) = self.conns[idx].as_mut() else {
                continue;
            };
            if c.is_idle() {
                c.timer = HeadTimer::Idle;
                let d = if c.deadline == 0 {
                    limit
                } else {
                    c.deadline.min(limit)
                };
                self.set_deadline(idx, d);
            }
        }
    }

    /// During a graceful stop: when a connection idle from now on is closed.
    fn drain_idle_deadline(&self) -> u64 {
        let end = self.drain_deadline.unwrap_or(u64::MAX);
        (self.now + DRAIN_IDLE_MS).min(end)
    }

    /// The end of a lingering close started now (shorter during a graceful
    /// stop, and never past its deadline).
    fn linger_deadline(&self) -> u64 {
        match self.drain_deadline {
            Some(end) => (self.now + DRAIN_LINGER_MS).min(end),
            None => self.now + LINGER_MS,
        }
    }

    // ----- messages from the pool -------------------------------------------

    fn process_msgs(&mut self) {
        let mut msgs = std::mem::take(&mut self.msgs);
        self.shared.take_msgs(&mut msgs);
        // Connections with new pieces of a streamed response: driven once
        // all messages are in, so that the pieces of one stream that came
        // together are written together (one writev).
        let mut streamed = std::mem::take(&mut self.streamed);
        for msg in msgs.drain(..) {
            match msg {
                Msg::Done(d) => {
                    if let Some(idx) = self.apply_done(d) {
                        self.drive(idx);
                    }
                }
                Msg::Chunk(ch) => {
                    if let Some(idx) = self.apply_chunk(ch)
                        && !streamed.contains(&idx)
                    {
                        streamed.push(idx);
                    }
                }
                Msg::Body(ev) => {
                    if let Some((idx, c)) = self.live_conn(ev.token, ev.generation) {
                        if let Some(feed) = c.feed()
                            && feed.expect
                        {
                            feed.expect = false;
                            WriteBuf::queue(&mut c.wbuf, WriteBuf::from_static(CONTINUE));
                        }
                        self.drive(idx);
                    }
                }
            }
        }
        self.msgs = msgs;
        for idx in streamed.drain(..) {
            self.drive(idx);
        }
        self.streamed = streamed;
    }

    /// The connection a message is for, unless it was closed since (and
    /// its slot perhaps reused).
    fn live_conn(&mut self, token: u32, generation: u32) -> Option<(usize, &mut Conn)> {
        let idx = token as usize;
        match self.conns.get_mut(idx) {
            Some(Some(c)) if c.generation == generation => Some((idx, c)),
            _ => None,
        }
    }

    fn request_finished(&mut self) {
        let stats = &self.shared.stats;
        let n = stats
            .pending_requests
            .fetch_sub(1, Relaxed)
            .saturating_sub(1);
        stats.requests_served.fetch_add(1, Relaxed);
        self.shared.metrics.pending_requests(n);
    }

    fn apply_done(&mut self, d: Done) -> Option<usize> {
        if let Some((buf, spans)) = d.recycle {
            self.bufs.put_head_vec(buf);
            if self.spans.len() < 128 {
                let mut spans = spans;
                spans.clear();
                self.spans.push(spans);
            }
        }
        if d.stream.is_none() {
            self.request_finished();
        }
        let draining = self.drain_deadline.is_some();
        let Some((idx, c)) = self.live_conn(d.token, d.generation) else {
            if d.stream.is_some() {
                self.request_finished();
            }
            return None;
        };
        if let Some(feed) = c.take_feed() {
            // The app answered before reading the whole body: the rest of it
            // is not read, so the connection cannot be reused; drain what
            // the client still sends so that the close does not reset the
            // response away.
            feed.fail(BodyError::Aborted);
            c.close_after(Closing::LingerAfterWrite);
        }
        if d.close {
            c.close_after(if draining {
                Closing::LingerAfterWrite
            } else {
                Closing::AfterWrite
            });
        }
        // A keep-alive response built before a graceful stop began keeps
        // its promise: the client may send its next request right away;
        // that one is answered with `Connection: close` (see begin_drain).
        WriteBuf::queue(&mut c.wbuf, d.out);
        c.exchange = match d.stream {
            Some(s) => Exchange::Streaming(s),
            None => Exchange::Idle,
        };
        c.deadline = 0;
        Some(idx)
    }

    fn apply_chunk(&mut self, ch: Chunk) -> Option<usize> {
        // Handed back with the stream, or the end: this request's last
        // message (a `more` piece is followed by one of those).
        let ended = ch.stream.is_none() && !ch.more;
        if ended {
            self.request_finished();
        }
        let Some((idx, c)) = self.live_conn(ch.token, ch.generation) else {
            if ch.stream.is_some() {
                self.request_finished();
            }
            return None;
        };
        let n = ch.data.len();
        if n > 0 {
            WriteBuf::queue(&mut c.wbuf, WriteBuf::new(ch.data));
        }
        if ch.close {
            c.close_after(Closing::AfterWrite);
        }
        if ch.more {
            if let Exchange::Pulling(w) = &c.exchange {
                // What the buffer holds first, then what left the flight:
                // the pool thread never sees the piece in neither.
                let unsent = c.wbuf.as_ref().map_or(0, WriteBuf::remaining);
                w.unsent.store(unsent, SeqCst);
                w.in_flight.fetch_sub(n, SeqCst);
            }
        } else {
            c.exchange = match ch.stream {
                Some(s) => Exchange::Streaming(s),
                None => Exchange::Idle,
            };
        }
        Some(idx)
    }

    /// When a body read or a response write that waits from now on is
    /// abandoned: 0 (none) for a zero `stall_timeout`.
    fn stall_deadline(&self) -> u64 {
        match self.stall_ms {
            0 => 0,
            ms => self.now + ms,
        }
    }

    /// When a head that starts now must be in: 0 (none) for a zero
    /// `header_timeout`.
    fn head_deadline(&self) -> u64 {
        match self.header_ms {
            0 => 0,
            ms => self.now + ms,
        }
    }
}

#[cfg(test)]
mod tests;
