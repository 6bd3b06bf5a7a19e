//! The event loop: accept, read and parse requests, hand them to the pool,
//! write responses, time connections out, stop.
//!
//! Sockets are registered once, edge-triggered, for both readable and
//! writable events, and never re-registered: the loop remembers in a flag
//! that a socket may have more to read, so it can leave bytes in the kernel
//! while a request is with the app (backpressure for pipelining).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token};

use crate::HOLD_BODY_MAX;
use crate::buf::{BUF_SIZE, Buf, BufPool};
use crate::health;
use crate::metrics::{AcceptWait, Metrics};
use crate::parse::{ChunkedDecoder, Framing, Head, HeaderSpan, Limits, parse_head};
use crate::pool::{self, Chunk, Done, Job, Msg, OutBody, Pull, Shared, Task, WBuf, lock};
use crate::reject;
use crate::request::{BODY_HIGH_WATER, Body, BodyChan, BodyError, BodyEvent, ChanState, OwnedHead};
use crate::{
    CONTROL_GRACEFUL, CONTROL_QUICK, CONTROL_REOPEN, CONTROL_RETIRE, Callback, LEAVE_TO_SIBLING_MS,
    Listener, Siblings, Worker,
};

pub(crate) const WAKER: Token = Token(0);
const SIGNALS: Token = Token(1);
const LISTENER_BASE: usize = 2;
const CONN_BASE: usize = 1 << 20;

/// Accepts per listener per loop iteration: one, as nginx without
/// `multi_accept`. Every worker sharing a listener is woken for a new
/// connection; taking one per turn lets a less busy worker (shorter turns)
/// take more of a burst. With 64, a burst of 256 keep-alive connections
/// (wrk -c256) ended 241/21 between two workers, with 20% less throughput
/// and twice the p99 of 1 (81/181 to 132/130).
const ACCEPT_BATCH: usize = 1;
/// Access lines of requests served on the loop are written at most this
/// long after the first one held (or at 64 KiB held, or when the loop
/// ends). Per turn instead, a write(2) of a few lines each turn cost 5
/// points of the 12% CPU per request that metrics and a JSON access log to
/// a file add (wrk -c32, 2 workers); a `SIGKILL`ed worker loses at most
/// this much of its lines.
const HOLD_LINES_MS: u64 = 10;
/// A streamed response is pulled again when less than this is unsent.
const STREAM_LOW_WATER: usize = 64 * 1024;
/// A closing connection reads (and drops) at most this much before closing.
const LINGER_MAX: usize = 1 << 20;
const LINGER_MS: u64 = 2000;
/// During a graceful stop, a connection with no request in progress is kept
/// open and read for this long (at most until the drain deadline) before a
/// lingering close; see [`Server::begin_drain`].
const DRAIN_IDLE_MS: u64 = 1000;
/// During a graceful stop, a lingering close waits this long at most for the
/// client's EOF (a client answered with `Connection: close` closes at once;
/// a late request byte arrives within a round trip).
const DRAIN_LINGER_MS: u64 = 500;

// Connection flags.
/// The socket may have bytes to read (no WouldBlock seen since the last event).
const READABLE: u16 = 1;
/// A request is with the app.
const IN_APP: u16 = 1 << 1;
/// A pull of a streamed response is with the pool.
const PULLING: u16 = 1 << 2;
/// Close once the output is written.
const CLOSE_AFTER: u16 = 1 << 3;
/// Shut the write side and drain input before closing.
const LINGER_ON_CLOSE: u16 = 1 << 4;
/// Lingering: write side shut, dropping input until EOF.
const LINGER: u16 = 1 << 5;
/// The peer closed its write side.
const READ_EOF: u16 = 1 << 6;
/// At least one request was read on this connection.
const SERVED: u16 = 1 << 7;
/// The deadline is the keep-alive (or first-byte) deadline.
const TIMER_IDLE: u16 = 1 << 8;
/// The deadline is the head deadline.
const TIMER_HEAD: u16 = 1 << 9;
/// Bytes arrived since the last parse attempt.
const NEW_DATA: u16 = 1 << 10;
/// The loop answered the held request's `Expect: 100-continue`.
const CONTINUE_SENT: u16 = 1 << 11;
/// The poll reported the peer's FIN (EPOLLRDHUP): a short read no longer
/// means the socket is drained (the FIN came with the same edge as the last
/// data and brings no new one), so reads go on until EOF or WouldBlock.
const PEER_HUP: u16 = 1 << 12;

/// Lines the access log could not write are reported at most this often.
const DROPPED_REPORT_MS: u64 = 60_000;
/// The interim response the loop sends for a held body.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

enum Sock {
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
    fn shutdown_write(&self) {
        let _ = match self {
            Sock::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
            Sock::Unix(s) => s.shutdown(std::net::Shutdown::Write),
        };
    }
}

/// A streamed request body being fed to a reader.
struct Feed {
    chan: Arc<BodyChan>,
    kind: FeedKind,
    received: u64,
    /// `100 Continue` is owed on the first read.
    expect: bool,
}

enum FeedKind {
    Length(u64),
    Chunked(ChunkedDecoder),
}

struct Conn {
    sock: Sock,
    generation: u32,
    flags: u16,
    /// Loop-epoch milliseconds; 0 = none.
    deadline: u64,
    /// The earliest heap entry for this connection; 0 = none.
    timer_at: u64,
    rbuf: Option<Buf>,
    wbuf: Option<WBuf>,
    feed: Option<Box<Feed>>,
    stream: Option<Box<pool::StreamResp>>,
    peer: Option<SocketAddr>,
    local: Option<SocketAddr>,
    /// Loop-epoch milliseconds when the buffered bytes began to arrive (the
    /// start of a refused request, for its duration).
    head_at: u64,
}

enum Lst {
    Tcp(TcpListener),
    Unix(UnixListener),
}

struct ListenerState {
    sock: Lst,
    local: Option<SocketAddr>,
    wildcard: bool,
    /// Set TCP_NODELAY on each accepted connection: false when the
    /// listener already has it, as accepted sockets inherit it.
    set_nodelay: bool,
    ready: bool,
    /// The accept-queue wait histogram (TCP listeners, with metrics, unless
    /// turned off).
    wait: Option<AcceptWait>,
}

enum Step {
    Continue,
    Stop,
}

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
                    let set_nodelay = !nodelay_inherited(&l);
                    (Lst::Tcp(TcpListener::from_std(l)), local, set_nodelay)
                }
                Listener::Unix(l) => {
                    l.set_nonblocking(true)?;
                    (Lst::Unix(UnixListener::from_std(l)), None, false)
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
        pool::spawn(&self.shared, self.threads)?;
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
                            c.flags |= READABLE;
                        }
                        if ev.is_read_closed() || ev.is_error() {
                            c.flags |= PEER_HUP;
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
        if c.flags & LINGER != 0 {
            self.close(idx);
        } else if c.wbuf.is_some() {
            // The client does not read its response.
            self.close(idx);
        } else if let Some(feed) = c.feed.take() {
            // The client stopped sending the body the app reads.
            fail_feed(&feed, BodyError::TimedOut);
            c.flags |= CLOSE_AFTER | LINGER_ON_CLOSE;
        } else if c.flags & (IN_APP | PULLING) != 0 || c.stream.is_some() {
            // With the app: no deadline.
        } else if c.rbuf.as_ref().is_some_and(|b| !b.is_empty()) {
            self.error(idx, 408, "");
            self.drive(idx);
        } else if self.drain_deadline.is_some() {
            // Idle past the grace period of a graceful stop: a lingering
            // close, so that a request byte sent just now meets a FIN, not
            // an RST.
            c.flags |= CLOSE_AFTER | LINGER_ON_CLOSE;
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
        self.last_beat = self.now;
        if let Some(hb) = &self.heartbeat
            && self.shared.pool_healthy(self.now, self.timeout_ms)
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

    fn can_accept(&self) -> bool {
        self.listening
            && self.drain_deadline.is_none()
            && self.accept_pause_until <= self.now
            && self.nconns < self.config.worker_connections
            // All threads busy and as many requests waiting: leave new
            // connections in the backlog for less busy workers.
            && self.shared.queued.load(Relaxed) < self.threads
    }

    fn start_listening(&mut self) -> io::Result<()> {
        if self.listening {
            return Ok(());
        }
        for (i, l) in self.listeners.iter_mut().enumerate() {
            let token = Token(LISTENER_BASE + i);
            match &mut l.sock {
                Lst::Tcp(s) => self
                    .poll
                    .registry()
                    .register(s, token, Interest::READABLE)?,
                Lst::Unix(s) => self
                    .poll
                    .registry()
                    .register(s, token, Interest::READABLE)?,
            }
            l.ready = true;
        }
        self.listening = true;
        self.publish_load();
        Ok(())
    }

    fn stop_listening(&mut self) {
        if !self.listening {
            return;
        }
        for l in &mut self.listeners {
            let _ = match &mut l.sock {
                Lst::Tcp(s) => self.poll.registry().deregister(s),
                Lst::Unix(s) => self.poll.registry().deregister(s),
            };
            l.ready = false;
        }
        self.listening = false;
        self.publish_load();
    }

    fn accept_all(&mut self) {
        self.publish_load();
        if !self.listeners.iter().any(|l| l.ready) {
            self.leaving_since = None;
            return;
        }
        if self.leave_to_sibling() {
            return;
        }
        for i in 0..self.listeners.len() {
            let mut n = 0;
            while self.listeners[i].ready && n < ACCEPT_BATCH && self.can_accept() {
                if !self.accept_one(i) {
                    break;
                }
                n += 1;
            }
        }
        if self.nconns >= self.config.worker_connections {
            self.stop_listening();
        }
    }

    /// Whether to leave the waiting connections to a sibling holding
    /// clearly fewer connections (more than an eighth fewer, and at least
    /// two). Every worker was told of them, so the sibling takes them on its
    /// next turn; after [`LEAVE_TO_SIBLING_MS`] without that, this worker
    /// takes one (and then leaves the next one again).
    fn leave_to_sibling(&mut self) -> bool {
        let Some(least) = self.siblings.as_ref().and_then(|s| s.least_loaded()) else {
            self.leaving_since = None;
            return false;
        };
        if self.nconns <= least + 1 + least / 8 {
            self.leaving_since = None;
            return false;
        }
        match self.leaving_since {
            None => {
                self.leaving_since = Some(self.now);
                true
            }
            Some(t) if self.now < t + LEAVE_TO_SIBLING_MS => true,
            Some(_) => {
                self.leaving_since = None;
                false
            }
        }
    }

    /// `nconns` changed: the stats, the gauge and the siblings hear of it.
    fn connections_changed(&mut self) {
        self.shared
            .stats
            .active_connections
            .store(self.nconns, Relaxed);
        self.shared.metrics.active_connections(self.nconns);
        self.publish_load();
    }

    /// Tell the siblings how many connections this worker holds, or that
    /// it does not accept now (draining, at `worker_connections`, or every
    /// pool thread busy with as many requests waiting): only changes.
    fn publish_load(&mut self) {
        let Some(s) = &self.siblings else {
            return;
        };
        let accepting = self.listening
            && self.drain_deadline.is_none()
            && self.shared.queued.load(Relaxed) < self.threads;
        let load = accepting.then_some(self.nconns);
        if load != self.published {
            self.published = load;
            s.publish(load);
        }
    }

    /// Accept one connection; false when none was accepted.
    fn accept_one(&mut self, i: usize) -> bool {
        let l = &mut self.listeners[i];
        let accepted = match &l.sock {
            Lst::Tcp(s) => s.accept().map(|(sock, peer)| {
                if let Some(wait) = &l.wait {
                    observe_accept_wait(wait, &sock);
                }
                if l.set_nodelay {
                    let _ = sock.set_nodelay(true);
                }
                let local = if l.wildcard {
                    sock.local_addr().ok()
                } else {
                    l.local
                };
                (Sock::Tcp(sock), Some(peer), local)
            }),
            Lst::Unix(s) => s.accept().map(|(sock, _)| (Sock::Unix(sock), None, None)),
        };
        match accepted {
            Ok((sock, peer, local)) => {
                self.add_conn(sock, peer, local);
                true
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                l.ready = false;
                false
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                ) =>
            {
                true
            }
            Err(e) => {
                // EMFILE, ENFILE, ENOBUFS, ENOMEM: retry in a moment rather
                // than spin on a listener that stays readable.
                self.accept_pause_until = self.now + 100;
                if self.now >= self.accept_error_logged + 1000 || self.accept_error_logged == 0 {
                    self.accept_error_logged = self.now.max(1);
                    slog::error!(self.logger, "accept() failed: {}", e);
                }
                false
            }
        }
    }

    fn add_conn(&mut self, mut sock: Sock, peer: Option<SocketAddr>, local: Option<SocketAddr>) {
        let idx = match self.free.pop() {
            Some(i) => i as usize,
            None => {
                self.conns.push(None);
                self.conns.len() - 1
            }
        };
        let token = Token(CONN_BASE + idx);
        let r = match &mut sock {
            Sock::Tcp(s) => {
                self.poll
                    .registry()
                    .register(s, token, Interest::READABLE | Interest::WRITABLE)
            }
            Sock::Unix(s) => {
                self.poll
                    .registry()
                    .register(s, token, Interest::READABLE | Interest::WRITABLE)
            }
        };
        if let Err(e) = r {
            slog::error!(self.logger, "cannot register a connection: {}", e);
            self.free.push(idx as u32);
            return;
        }
        let generation = self.next_gen;
        self.next_gen = self.next_gen.wrapping_add(1).max(1);
        self.conns[idx] = Some(Conn {
            sock,
            generation,
            // Data may already be there: try reading at once.
            flags: READABLE | TIMER_IDLE,
            deadline: 0,
            timer_at: 0,
            rbuf: None,
            wbuf: None,
            feed: None,
            stream: None,
            peer,
            local,
            head_at: 0,
        });
        self.nconns += 1;
        self.connections_changed();
        let first_byte = match (self.drain_deadline, self.head_deadline()) {
            (Some(_), 0) => self.drain_idle_deadline(),
            (Some(_), d) => self.drain_idle_deadline().min(d),
            (None, d) => d,
        };
        self.set_deadline(idx, first_byte);
        self.drive(idx);
    }

    fn close(&mut self, idx: usize) {
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
            if is_idle(c) {
                c.flags = (c.flags | TIMER_IDLE) & !TIMER_HEAD;
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
        for msg in msgs.drain(..) {
            match msg {
                Msg::Done(d) => {
                    if let Some(idx) = self.apply_done(d) {
                        self.drive(idx);
                    }
                }
                Msg::Chunk(ch) => {
                    if let Some(idx) = self.apply_chunk(ch) {
                        self.drive(idx);
                    }
                }
                Msg::Body(ev) => {
                    if let Some(idx) = self.conn_index(ev.token, ev.generation) {
                        let c = self.conns[idx].as_mut().expect("checked");
                        if let Some(feed) = c.feed.as_mut()
                            && feed.expect
                        {
                            feed.expect = false;
                            let cont = b"HTTP/1.1 100 Continue\r\n\r\n";
                            match c.wbuf.as_mut() {
                                Some(w) => w.append(cont),
                                None => {
                                    let mut v = self.bufs.head_vec();
                                    v.extend_from_slice(cont);
                                    c.wbuf = Some(WBuf::new(v));
                                }
                            }
                        }
                        self.drive(idx);
                    }
                }
            }
        }
        self.msgs = msgs;
    }

    fn conn_index(&self, token: u32, generation: u32) -> Option<usize> {
        let idx = token as usize;
        match self.conns.get(idx) {
            Some(Some(c)) if c.generation == generation => Some(idx),
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
        let Some(idx) = self.conn_index(d.token, d.generation) else {
            if d.stream.is_some() {
                self.request_finished();
            }
            return None;
        };
        let c = self.conns[idx].as_mut().expect("checked");
        c.flags &= !IN_APP;
        if let Some(feed) = c.feed.take() {
            // The app answered before reading the whole body: the rest of it
            // is not read, so the connection cannot be reused; drain what
            // the client still sends so that the close does not reset the
            // response away.
            fail_feed(&feed, BodyError::Aborted);
            c.flags |= CLOSE_AFTER | LINGER_ON_CLOSE;
        }
        if d.close {
            c.flags |= CLOSE_AFTER;
            if draining {
                c.flags |= LINGER_ON_CLOSE;
            }
        }
        // A keep-alive response built before a graceful stop began keeps
        // its promise: the client may send its next request right away;
        // that one is answered with `Connection: close` (see begin_drain).
        match c.wbuf.as_mut() {
            Some(w) => {
                w.append_wbuf(d.out);
            }
            None => c.wbuf = Some(d.out),
        }
        c.stream = d.stream;
        c.deadline = 0;
        Some(idx)
    }

    fn apply_chunk(&mut self, ch: Chunk) -> Option<usize> {
        let ended = ch.stream.is_none();
        if ended {
            self.request_finished();
        }
        let Some(idx) = self.conn_index(ch.token, ch.generation) else {
            if !ended {
                self.request_finished();
            }
            return None;
        };
        let c = self.conns[idx].as_mut().expect("checked");
        c.flags &= !PULLING;
        if !ch.data.is_empty() {
            match c.wbuf.as_mut() {
                Some(w) => w.append(&ch.data),
                None => c.wbuf = Some(WBuf::new(ch.data)),
            }
        }
        if ch.close {
            c.flags |= CLOSE_AFTER;
        }
        c.stream = ch.stream;
        Some(idx)
    }

    // ----- the connection state machine -------------------------------------

    fn drive(&mut self, idx: usize) {
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
    fn pull(&mut self, idx: usize) {
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

    fn linger(&mut self, idx: usize) {
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
    fn error(&mut self, idx: usize, status: u16, why: &str) {
        self.refuse(idx, status, why, None);
    }

    /// Answer `status` and close, counting and logging it as a request
    /// whose head is `head` (else what is buffered); see [`reject`].
    fn refuse(&mut self, idx: usize, status: u16, why: &str, head: Option<&[u8]>) {
        let Some(c) = self.conns[idx].as_mut() else {
            return;
        };
        if status >= 500 {
            slog::debug!(self.logger, "refusing request: {} {}", status, why);
        }
        let out = pool::error_response(status, why);
        let arrived = match (head, &c.rbuf) {
            (Some(h), _) => h,
            (None, Some(b)) => b.filled(),
            (None, None) => &[],
        };
        let took = Duration::from_millis(self.now.saturating_sub(c.head_at));
        reject::record(&self.shared, arrived, c.peer, status, &out, took);
        match c.wbuf.as_mut() {
            Some(w) => w.append(&out),
            None => c.wbuf = Some(WBuf::new(out)),
        }
        c.flags |= CLOSE_AFTER | LINGER_ON_CLOSE;
        c.flags &= !(TIMER_HEAD | TIMER_IDLE);
        if let Some(b) = c.rbuf.take() {
            self.bufs.put(b);
        }
        c.deadline = 0;
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

    /// Whether the request whose head is `head` waits for more of its body
    /// ([`HOLD_BODY_MAX`]) before it goes to the app, with `have` bytes
    /// buffered.
    fn holds_body(&self, head: &Head, have: usize) -> bool {
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
    fn next_request(&mut self, idx: usize) -> Step {
        let c = self.conns[idx].as_mut().expect("live");
        let has_data = c.rbuf.as_ref().is_some_and(|b| !b.is_empty());
        if has_data && c.flags & NEW_DATA != 0 {
            c.flags &= !NEW_DATA;
            let rbuf = c.rbuf.as_ref().expect("has data");
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
                    let c = self.conns[idx].as_mut().expect("live");
                    if head.expect_continue && c.flags & CONTINUE_SENT == 0 {
                        c.flags |= CONTINUE_SENT;
                        c.wbuf = Some(WBuf {
                            head: Vec::new(),
                            body: OutBody::Static(CONTINUE),
                            pos: 0,
                        });
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

    fn dispatch(&mut self, idx: usize, head: Head) -> Step {
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
            let msg = pool::run_inline(&self.shared, job);
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
        let c = self.conns[idx].as_mut().expect("live");
        let rbuf = c.rbuf.as_mut().expect("has data");
        let (status, close) = health::answer(&head, rbuf.filled(), stopping, keep_alive, &mut out);
        if status == 405 {
            let took = Duration::from_millis(self.now.saturating_sub(c.head_at));
            let arrived = &rbuf.filled()[..head.len];
            reject::record(&self.shared, arrived, c.peer, status, &out, took);
        }
        rbuf.consume(head.len);
        let body_unread = head.framing != Framing::None;
        match c.wbuf.as_mut() {
            Some(w) => {
                w.append(&out);
                self.bufs.put_head_vec(out);
            }
            None => c.wbuf = Some(WBuf::new(out)),
        }
        c.flags = (c.flags | SERVED) & !(TIMER_HEAD | TIMER_IDLE | CONTINUE_SENT);
        c.deadline = 0;
        if close {
            c.flags |= CLOSE_AFTER;
            if stopping || body_unread {
                c.flags |= LINGER_ON_CLOSE;
            }
        } else if c.rbuf.as_ref().is_some_and(|b| b.is_empty()) {
            let b = c.rbuf.take().expect("some");
            self.bufs.put(b);
        } else {
            // Pipelined bytes wait in the buffer.
            c.flags |= NEW_DATA;
        }
        Step::Continue
    }

    /// Whether the app promises not to block on this request (a panic in
    /// the app's answer counts as no: the loop thread must survive it).
    fn app_nonblocking(&self, head: &OwnedHead) -> bool {
        let app = &*self.shared.app;
        catch_unwind(AssertUnwindSafe(|| {
            app.nonblocking(head.method(), head.path())
        }))
        .unwrap_or(false)
    }

    /// Read body bytes for the app's reader.
    fn read_body(&mut self, idx: usize) -> Step {
        let limit = self.config.limit_request_body;
        let stall = self.stall_deadline();
        let c = self.conns[idx].as_mut().expect("live");
        let feed = c.feed.as_mut().expect("feed");
        {
            let mut st = lock(&feed.chan.state);
            if st.closed {
                return Step::Stop;
            }
            if st.buffered() >= BODY_HIGH_WATER {
                st.loop_paused = true;
                return Step::Stop;
            }
        }
        if c.rbuf.is_none() {
            c.rbuf = Some(self.bufs.get());
        }
        let rbuf = c.rbuf.as_mut().expect("some");
        if rbuf.is_empty() {
            let spare = rbuf.spare(BUF_SIZE);
            let want = spare.len();
            match c.sock.read(spare) {
                Ok(0) => {
                    c.flags = (c.flags | READ_EOF | CLOSE_AFTER) & !READABLE;
                    let feed = c.feed.take().expect("feed");
                    fail_feed(&feed, BodyError::Eof);
                    return Step::Stop;
                }
                Ok(n) => {
                    rbuf.advance(n);
                    if n < want && c.flags & PEER_HUP == 0 {
                        c.flags &= !READABLE;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    c.flags &= !READABLE;
                    return Step::Stop;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Step::Continue,
                Err(_) => {
                    self.close(idx);
                    return Step::Stop;
                }
            }
        }
        // Decode what is buffered into the reader's buffer.
        let mut st = lock(&feed.chan.state);
        if st.pos > 0 && st.pos * 2 >= st.data.len() {
            let pos = st.pos;
            st.data.drain(..pos);
            st.pos = 0;
        }
        let before = st.data.len();
        let mut failed = None;
        let mut done = false;
        match &mut feed.kind {
            FeedKind::Length(rem) => {
                let take = (rbuf.len() as u64).min(*rem) as usize;
                st.data.extend_from_slice(&rbuf.filled()[..take]);
                rbuf.consume(take);
                *rem -= take as u64;
                done = *rem == 0;
            }
            FeedKind::Chunked(dec) => match dec.decode(rbuf.filled(), &mut st.data) {
                Ok(d) => {
                    rbuf.consume(d.consumed);
                    done = d.done;
                }
                Err(e) => failed = Some(BodyError::Framing(e.reason)),
            },
        }
        feed.received += (st.data.len() - before) as u64;
        if failed.is_none() && limit > 0 && feed.received > limit {
            failed = Some(BodyError::TooLarge);
        }
        if let Some(e) = failed {
            st.error = Some(e);
        } else if done {
            st.eof = true;
        }
        let wake = st.waiting;
        drop(st);
        if wake {
            feed.chan.cond.notify_all();
        }
        if failed.is_some() {
            c.feed = None;
            c.flags |= CLOSE_AFTER | LINGER_ON_CLOSE;
            if let Some(b) = c.rbuf.take() {
                self.bufs.put(b);
            }
            self.set_deadline(idx, 0);
            return Step::Stop;
        }
        if done {
            c.feed = None;
            if c.rbuf.as_ref().is_some_and(|b| b.is_empty()) {
                let b = c.rbuf.take().expect("some");
                self.bufs.put(b);
            } else {
                c.flags |= NEW_DATA;
            }
            self.set_deadline(idx, 0);
            return Step::Stop;
        }
        self.set_deadline(idx, stall);
        Step::Continue
    }
}

/// No request in progress, nothing to write, nothing buffered.
fn is_idle(c: &Conn) -> bool {
    c.flags & (IN_APP | PULLING | CLOSE_AFTER | LINGER) == 0
        && c.stream.is_none()
        && c.wbuf.is_none()
        && c.rbuf.as_ref().is_none_or(|b| b.is_empty())
}

fn fail_feed(feed: &Feed, e: BodyError) {
    let mut st = lock(&feed.chan.state);
    if !st.eof && st.error.is_none() {
        st.error = Some(e);
    }
    drop(st);
    feed.chan.cond.notify_all();
}

/// Records how long a connection just accepted waited in the listen queue
/// (a lower bound read from TCP_INFO: see
/// [`ferrocorn_tcpinfo::accept_queue_wait`]). A socket the kernel cannot
/// say it for is not observed: the histogram never gets a made-up zero.
#[cfg(feature = "metrics")]
fn observe_accept_wait(wait: &AcceptWait, sock: &TcpStream) {
    if let Ok(d) = ferrocorn_tcpinfo::accept_queue_wait(sock) {
        wait.observe(d);
    }
}

/// Without metrics there is no histogram (and no listener has one).
#[cfg(not(feature = "metrics"))]
fn observe_accept_wait(_wait: &AcceptWait, _sock: &TcpStream) {}

/// Whether connections accepted from `l` start with TCP_NODELAY. Linux
/// copies the option from the listening socket to every socket it accepts,
/// and the supervisor sets it on each TCP listener, so a worker does not
/// repeat it with one `setsockopt` per connection (nginx does not either); a
/// listener without it (one handed over by systemd, say) keeps the per
/// connection call. Elsewhere the call is always made.
fn nodelay_inherited(l: &std::net::TcpListener) -> bool {
    #[cfg(target_os = "linux")]
    {
        socket2::SockRef::from(l).tcp_nodelay().unwrap_or(false)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = l;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
