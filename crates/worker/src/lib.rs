//! The mio-based HTTP/1.1 worker of ferrocorn: one event loop over the
//! listening sockets and their connections, a pool of threads running the
//! [`App`], and live numbers about both ([`WorkerStats`]).
//!
//! # Overview
//!
//! - [`App`]: the application, request in, [`Response`] out. It runs on a pool
//!   thread and may block; a panic becomes a `500` and the worker lives on.
//! - [`Request`]: method, target, path, query, version, headers, addresses,
//!   and a [`Body`] that implements [`std::io::Read`], streamed from the
//!   connection as the app reads it (`100 Continue` is sent on the first read).
//! - [`Response`]: status, headers, and a body that is bytes or a stream.
//! - [`Worker`]: takes [`Listener`]s (already bound, maybe shared with other
//!   processes), a [`WorkerConfig`] and the app; [`Worker::run`] serves until
//!   stopped (SIGTERM graceful, SIGHUP retire, SIGINT/SIGQUIT quick when
//!   [`Worker::handle_signals`] is on, or a [`ShutdownHandle`]).
//! - [`parse`]: the pure request parser the worker uses (and fuzzes).
//!
//! # Graceful stop
//!
//! A graceful stop (SIGTERM, [`ShutdownHandle::graceful`], a change of
//! parent; a retire and `max_requests` too, see below) must not lose a
//! request a keep-alive client sends while it happens, so idle connections
//! are not closed at once: closing a socket with a request on the wire
//! makes the kernel answer it with a reset, and the client cannot know
//! whether it was processed. The worker takes what is already in the listen
//! backlog, stops accepting and closes its copies of the listeners; then every connection is read on for a short grace period
//! (1 s, at most `graceful_timeout`): a request that arrives is answered
//! with `Connection: close`, and so are the requests in flight. Connections
//! that stay idle, and the ones answered, end with a lingering close (the
//! write side shut first, input read and dropped for a moment until the
//! client's EOF) so that a late request byte cannot turn into a reset that
//! destroys a response. The worker returns as soon as nothing is left, and
//! within `graceful_timeout` in any case.
//!
//! Taking what is in the listen backlog is right only when the whole server
//! stops (nobody else would serve it). A worker stopping alone, while other
//! workers or its replacement accept from the same listeners, leaves the
//! backlog to them: a retire (SIGHUP, [`ShutdownHandle::retire`], what a
//! supervisor sends on reload, fewer workers or an upgrade) and
//! `max_requests` with [`Worker::siblings`] set stop accepting at once.
//! Draining the backlog instead made a stopping worker take up to twice
//! `worker_connections` connections it could not serve within a short
//! `graceful_timeout`, and their clients were cut at the deadline.
//!
//! The loop holds no read or write buffer for an idle keep-alive connection
//! (buffers go back to a small per-worker pool), keeps one small struct per
//! connection in a slab, and times connections with one binary heap holding
//! at most about one entry per connection.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use ferrocorn_worker::{App, Listener, Request, Response, Worker, WorkerConfig};
//!
//! struct Hello;
//!
//! impl App for Hello {
//!     fn call(&self, req: &mut Request<'_>) -> Response {
//!         match req.path() {
//!             "/" => Response::text(200, "Hello, world!\n"),
//!             _ => Response::text(404, "not found\n"),
//!         }
//!     }
//! }
//!
//! fn main() -> std::io::Result<()> {
//!     let listener = std::net::TcpListener::bind("127.0.0.1:8000")?;
//!     let config = WorkerConfig { threads: 2, ..WorkerConfig::default() };
//!     Worker::new(config, vec![Listener::Tcp(listener)], Arc::new(Hello))?
//!         .handle_signals(true)
//!         .run()
//! }
//! ```
//!
//! A complete runnable check of the same (not `no_run`): serve one request
//! on an ephemeral port and stop.
//!
//! ```
//! use std::io::{Read, Write};
//! use std::sync::Arc;
//! use ferrocorn_worker::{App, Listener, Request, Response, Worker, WorkerConfig};
//!
//! struct Hello;
//! impl App for Hello {
//!     fn call(&self, _req: &mut Request<'_>) -> Response {
//!         Response::text(200, "hi")
//!     }
//! }
//!
//! let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
//! let addr = listener.local_addr().unwrap();
//! let worker = Worker::new(WorkerConfig::default(), vec![Listener::Tcp(listener)], Arc::new(Hello)).unwrap();
//! let stop = worker.shutdown_handle();
//! let thread = std::thread::spawn(move || worker.run());
//!
//! let mut conn = std::net::TcpStream::connect(addr).unwrap();
//! conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
//! let mut answer = String::new();
//! conn.read_to_string(&mut answer).unwrap();
//! assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"));
//! assert!(answer.ends_with("\r\n\r\nhi"));
//!
//! stop.graceful();
//! thread.join().unwrap().unwrap();
//! ```
#![deny(missing_docs)]

mod buf;
mod busy;
mod date;
mod dispatch;
mod encode;
mod health;
mod metrics;
mod msg;
pub mod parse;
mod pool;
mod reject;
mod request;
mod response;
mod server;
mod stats;
mod sys;
mod write_buf;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

pub use parse::Version;
pub use request::{Body, Request};
pub use response::{BodyStream, Response, ResponseBody, reason};
pub use stats::{StatsSnapshot, WorkerStats};

/// An HTTP application: a request in, a response out.
///
/// `call` runs on one of the worker's pool threads (or on the event loop when
/// [`WorkerConfig::inline`] is set, or when [`App::nonblocking`] says so for
/// the request) and may block. A panic is caught: the client gets a `500` and
/// the worker carries on.
pub trait App: Send + Sync + 'static {
    /// Answer one request.
    fn call(&self, req: &mut Request<'_>) -> Response;

    /// Whether `call` for a request with this method and path (the raw path
    /// of the request-target, without the query) will not block.
    ///
    /// `true` promises that `call` for this request neither blocks nor reads
    /// a body it has not got; the worker may then run it on its event-loop
    /// thread, skipping the hand-off to the pool (two thread wake-ups per
    /// request). A request whose body has not fully arrived yet still goes to
    /// the pool. While such a call runs, the worker serves nothing else, so
    /// keep it short. Called on the event-loop thread for every request whose
    /// body is complete: keep it cheap (no allocation, no I/O). A panic here
    /// counts as `false`. The default is `false`.
    fn nonblocking(&self, method: &str, path: &str) -> bool {
        let _ = (method, path);
        false
    }

    /// Whether calls of this app take turns on the CPU whatever the number
    /// of threads running them (a Python app's calls hold the GIL while
    /// they run Python code).
    ///
    /// `true` lets the worker serve its queue of requests with one pool
    /// thread while that thread keeps taking them, the others asleep:
    /// another thread is woken only when none took a request for a
    /// millisecond (the awake ones blocked, slept, or wait for a client) or
    /// when a thread starts waiting for a request body. An app whose calls
    /// block still gets every thread, a millisecond of latency later. The
    /// default, `false`, wakes a thread for every queued request while
    /// some sleep (calls run in parallel on several cores).
    fn serial(&self) -> bool {
        false
    }
}

impl<F> App for F
where
    F: Fn(&mut Request<'_>) -> Response + Send + Sync + 'static,
{
    fn call(&self, req: &mut Request<'_>) -> Response {
        self(req)
    }
}

/// A listening socket, already bound and listening, possibly shared with
/// other worker processes.
#[derive(Debug)]
pub enum Listener {
    /// A TCP listener.
    Tcp(std::net::TcpListener),
    /// A unix stream socket listener.
    Unix(std::os::unix::net::UnixListener),
}

/// The worker's settings, gunicorn's names and defaults except `keepalive`
/// (120 s, as the seed) and `timeout` (30 s).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerConfig {
    /// Threads running the app (gunicorn `threads`, default 1).
    pub threads: usize,
    /// Most connections held at once; at the limit the worker stops accepting
    /// (gunicorn `worker_connections`, default 1000).
    pub worker_connections: usize,
    /// Idle keep-alive connections are closed after this long; zero disables
    /// keep-alive (default 120 s).
    pub keepalive: Duration,
    /// A pool whose every thread has been held by the app for longer than
    /// this stops the heartbeat (so a supervisor kills the worker); time a
    /// thread spends waiting for the client's body bytes does not count.
    /// Zero: never (default 30 s).
    pub timeout: Duration,
    /// A request body that stops arriving, or a response the client stops
    /// reading, for this long is abandoned: the body's reader gets an error
    /// and the client a 408; a stalled write closes the connection. Zero: no
    /// limit (default 30 s, gunicorn's default `timeout`).
    pub stall_timeout: Duration,
    /// How long a graceful stop may take (default 30 s).
    pub graceful_timeout: Duration,
    /// Stop gracefully after this many requests (0 = never).
    pub max_requests: u64,
    /// Add a random 0..=jitter to `max_requests`.
    pub max_requests_jitter: u64,
    /// Longest request line (default 4094; 0 or above 8190 = 8190); longer: 400.
    pub limit_request_line: usize,
    /// Most header fields (default 100, at most 32768); more: 431.
    pub limit_request_fields: usize,
    /// Longest header field line, counted as gunicorn counts it (the line
    /// with its CRLF): default 8190, 0 = 8190, larger values honoured up to
    /// [`parse::MAX_FIELD_SIZE`]; longer: 431.
    pub limit_request_field_size: usize,
    /// Largest request body in bytes (0 = unlimited, the default as gunicorn);
    /// larger: 413.
    pub limit_request_body: u64,
    /// A request head, with a body of up to [`HOLD_BODY_MAX`] bytes (or that
    /// much of a longer one), must arrive within this long of its first byte
    /// (and a new connection's first byte within this long of the accept):
    /// else 408 (default 30 s). Zero: no limit.
    pub header_timeout: Duration,
    /// Run the app on the event loop thread when the whole request is
    /// already read (for handlers that never block).
    pub inline: bool,
    /// A path (`/healthz`, say) the event loop answers itself, never the
    /// app: `GET`/`HEAD` get `200` while the worker serves, also when every
    /// pool thread is busy, and `503` with `Connection: close` once it stops
    /// (graceful stop, retire, `max_requests`); other methods get `405`
    /// (counted and logged as the worker's other refusals).
    /// Matched on the path without the query. Not counted as a request
    /// (stats, metrics, `max_requests`) nor written to the access log.
    /// `None`: off, the path goes to the app (the default).
    pub health_path: Option<String>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            threads: 1,
            worker_connections: 1000,
            keepalive: Duration::from_secs(120),
            timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(30),
            graceful_timeout: Duration::from_secs(30),
            max_requests: 0,
            max_requests_jitter: 0,
            limit_request_line: 4094,
            limit_request_fields: 100,
            limit_request_field_size: 8190,
            limit_request_body: 0,
            header_timeout: Duration::from_secs(30),
            inline: false,
            health_path: None,
        }
    }
}

impl WorkerConfig {
    pub(crate) fn limits(&self) -> parse::Limits {
        parse::Limits {
            request_line: self.limit_request_line,
            fields: self.limit_request_fields,
            field_size: self.limit_request_field_size,
        }
        .normalized()
    }
}

/// A request body up to this long (by `Content-Length`), or the first this
/// many bytes of a longer one, is read by the event loop before the request
/// goes to the app, within the head's `header_timeout` (else 408). A client
/// trickling its body then holds a connection, as a slow head does, and not
/// a pool thread: before, 8 clients sending a byte a second stopped a worker
/// with 2 threads from serving anyone (its pool full, it stopped accepting)
/// for as long as they kept at it. The rest of a longer body, and a chunked
/// one, is streamed to the app as it arrives. A body announced with
/// `Expect: 100-continue` is held (the loop then sends the 100) only when it
/// is this short, so that the app can still refuse a long one unsent.
pub const HOLD_BODY_MAX: u64 = 64 * 1024;

/// A callback without arguments (heartbeat, reopen logs).
pub type Callback = Arc<dyn Fn() + Send + Sync>;

/// The open connections of the other workers accepting from the same
/// listeners (a supervisor keeps them in shared memory).
///
/// Every worker waiting on a listener is told of a new connection and the
/// first to call `accept` gets it, so a burst of keep-alive connections can
/// end up mostly on one worker (seen: 222 of 256 on one of two). With
/// siblings set, a worker holding clearly more connections than the least
/// loaded sibling that accepts leaves a new connection to it; if nobody
/// takes it within [`LEAVE_TO_SIBLING_MS`], the worker takes it itself.
pub trait Siblings: Send + Sync {
    /// Record this worker's open connections; `None` when it does not
    /// accept (draining, at `worker_connections`, or its pool saturated).
    /// A worker publishes changes only, and a sibling's state before its
    /// first publish must read as not accepting.
    fn publish(&self, open: Option<usize>);
    /// The fewest open connections of another worker that accepts.
    fn least_loaded(&self) -> Option<usize>;
}

/// How long a worker leaves a waiting connection to a less loaded sibling
/// before it accepts it itself (a sibling that is stuck or slow to wake
/// costs a new connection at most this much).
pub const LEAVE_TO_SIBLING_MS: u64 = 2;

pub(crate) const CONTROL_GRACEFUL: u8 = 1;
pub(crate) const CONTROL_QUICK: u8 = 2;
pub(crate) const CONTROL_REOPEN: u8 = 4;
pub(crate) const CONTROL_RETIRE: u8 = 8;

/// Stops a running [`Worker`] from another thread.
#[derive(Clone)]
pub struct ShutdownHandle {
    control: Arc<AtomicU8>,
    waker: Arc<mio::Waker>,
}

impl std::fmt::Debug for ShutdownHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShutdownHandle").finish_non_exhaustive()
    }
}

impl ShutdownHandle {
    fn send(&self, bit: u8) {
        self.control.fetch_or(bit, Ordering::SeqCst);
        let _ = self.waker.wake();
    }
    /// Graceful stop, as SIGTERM: stop accepting, finish what is in flight,
    /// answer what arrives during a short grace period with `Connection:
    /// close`, close idle connections after it, return within
    /// `graceful_timeout` (see the crate docs, "Graceful stop").
    pub fn graceful(&self) {
        self.send(CONTROL_GRACEFUL);
    }
    /// Graceful stop of this worker alone, as SIGHUP: as
    /// [`graceful`](Self::graceful), except that the connections waiting in
    /// the listen queue are left to the other workers sharing the listeners
    /// (or to this one's replacement): the worker stops accepting at once
    /// and finishes what it has accepted.
    pub fn retire(&self) {
        self.send(CONTROL_RETIRE);
    }
    /// Quick stop, as SIGINT/SIGQUIT: return now.
    pub fn quick(&self) {
        self.send(CONTROL_QUICK);
    }
    /// As SIGUSR1: call the `on_reopen_logs` callback.
    pub fn reopen_logs(&self) {
        self.send(CONTROL_REOPEN);
    }
}

/// A worker: build it (after fork) with [`Worker::new`], set the optional
/// parts, then [`Worker::run`].
pub struct Worker {
    config: WorkerConfig,
    listeners: Vec<Listener>,
    app: Arc<dyn App>,
    poll: mio::Poll,
    waker: Arc<mio::Waker>,
    control: Arc<AtomicU8>,
    logger: slog::Logger,
    access: Option<ferrocorn_log::AccessLog>,
    heartbeat: Option<Callback>,
    on_reopen_logs: Option<Callback>,
    on_recycle: Option<Callback>,
    siblings: Option<Arc<dyn Siblings>>,
    parent_pid: Option<u32>,
    handle_signals: bool,
    stats: Arc<WorkerStats>,
    #[cfg(feature = "metrics")]
    metrics: Option<ferrocorn_shm_metrics::Registry>,
    #[cfg(feature = "metrics")]
    metrics_prefix: String,
    #[cfg(feature = "metrics")]
    accept_queue_wait: bool,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("config", &self.config)
            .field("listeners", &self.listeners)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// A worker serving `app` on `listeners`. Creates the poll (call it in
    /// the process that will run the worker, after any fork).
    pub fn new(
        config: WorkerConfig,
        listeners: Vec<Listener>,
        app: Arc<dyn App>,
    ) -> io::Result<Worker> {
        let poll = mio::Poll::new()?;
        let waker = Arc::new(mio::Waker::new(poll.registry(), server::WAKER)?);
        let stats = Arc::new(WorkerStats::default());
        stats.set_limits(config.worker_connections, config.threads.max(1));
        Ok(Worker {
            config,
            listeners,
            app,
            poll,
            waker,
            control: Arc::new(AtomicU8::new(0)),
            logger: slog::Logger::root(slog::Discard, slog::o!()),
            access: None,
            heartbeat: None,
            on_reopen_logs: None,
            on_recycle: None,
            siblings: None,
            parent_pid: None,
            handle_signals: false,
            stats,
            #[cfg(feature = "metrics")]
            metrics: None,
            #[cfg(feature = "metrics")]
            metrics_prefix: ferrocorn_log::DEFAULT_PREFIX.to_owned(),
            #[cfg(feature = "metrics")]
            accept_queue_wait: true,
        })
    }

    /// The error logger (default: discard).
    pub fn logger(mut self, logger: slog::Logger) -> Worker {
        self.logger = logger;
        self
    }

    /// Write one access-log line per answered request (on the pool thread
    /// that built the response; for a streamed body, when it ends).
    pub fn access_log(mut self, log: ferrocorn_log::AccessLog) -> Worker {
        self.access = Some(log);
        self
    }

    /// Called when the worker made progress (its loop runs and its pool is
    /// not entirely stuck); at most a few times a second.
    pub fn heartbeat(mut self, beat: Callback) -> Worker {
        self.heartbeat = Some(beat);
        self
    }

    /// Share connections with the sibling workers accepting from the same
    /// listeners (see [`Siblings`]). Without it the worker accepts whenever
    /// it can.
    pub fn siblings(mut self, siblings: Arc<dyn Siblings>) -> Worker {
        self.siblings = Some(siblings);
        self
    }

    /// Called once when the worker decides to stop on its own after
    /// `max_requests` (a planned recycle), before it drains; a supervisor
    /// uses it to tell a recycle from an unexpected exit.
    pub fn on_recycle(mut self, f: Callback) -> Worker {
        self.on_recycle = Some(f);
        self
    }

    /// Called on SIGUSR1 (or [`ShutdownHandle::reopen_logs`]).
    pub fn on_reopen_logs(mut self, f: Callback) -> Worker {
        self.on_reopen_logs = Some(f);
        self
    }

    /// Stop gracefully when the parent process is no longer this pid
    /// (checked once a second).
    pub fn parent_pid(mut self, pid: u32) -> Worker {
        self.parent_pid = Some(pid);
        self
    }

    /// Install signal handling in [`Worker::run`]: SIGTERM graceful stop,
    /// SIGHUP retire ([`ShutdownHandle::retire`]), SIGINT and SIGQUIT quick
    /// stop, SIGUSR1 reopen logs, SIGPIPE ignored.
    /// Off by default so
    /// a worker can run on a thread of a process that handles its signals.
    pub fn handle_signals(mut self, on: bool) -> Worker {
        self.handle_signals = on;
        self
    }

    /// Write the worker gauges and request metrics into shm metric files:
    /// gauges `gunicorn_active_worker_connections`,
    /// `gunicorn_max_worker_connections`, `gunicorn_max_worker_threads`,
    /// `gunicorn_active_worker_threads`, `gunicorn_pending_requests` (mode
    /// `liveall`: one series per worker pid, gone when it dies), the counter
    /// `gunicorn_requests_total{method,status}` and the histogram
    /// `gunicorn_request_duration_seconds{method}` (requests the worker
    /// refuses itself, 400, 408, 413, 431, 501, included, with the method
    /// `other` when it is not a standard one or could not be read), the
    /// counter `gunicorn_connections_closed_early_total` (a client that
    /// closed after part of a request: not a request), and the histogram
    /// `gunicorn_accept_queue_wait_seconds{listener}` (see
    /// [`Worker::accept_queue_wait`]).
    #[cfg(feature = "metrics")]
    pub fn metrics(mut self, registry: ferrocorn_shm_metrics::Registry) -> Worker {
        self.metrics = Some(registry);
        self
    }

    /// The metric name prefix in place of `gunicorn` (default `gunicorn`).
    #[cfg(feature = "metrics")]
    pub fn metrics_prefix(mut self, prefix: impl Into<String>) -> Worker {
        self.metrics_prefix = prefix.into();
        self
    }

    /// Observe, for every connection accepted from a TCP listener, how long
    /// it waited in the listen queue, into the histogram
    /// `gunicorn_accept_queue_wait_seconds{listener}` (buckets 1 ms to
    /// 10 s; `listener` as `http://127.0.0.1:8000`). The wait is a lower
    /// bound read with one `getsockopt(TCP_INFO)` per accept (see
    /// [`ferrocorn_tcpinfo::accept_queue_wait`]); unix sockets have no
    /// TCP_INFO and are not observed. On by default (with
    /// [`Worker::metrics`]); `false` saves the call.
    #[cfg(feature = "metrics")]
    pub fn accept_queue_wait(mut self, on: bool) -> Worker {
        self.accept_queue_wait = on;
        self
    }

    /// The live numbers of this worker.
    pub fn stats(&self) -> Arc<WorkerStats> {
        self.stats.clone()
    }

    /// A handle to stop the worker from another thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            control: self.control.clone(),
            waker: self.waker.clone(),
        }
    }

    /// Serve until stopped. Returns `Ok` after a graceful or quick stop.
    pub fn run(self) -> io::Result<()> {
        server::run(self)
    }
}
