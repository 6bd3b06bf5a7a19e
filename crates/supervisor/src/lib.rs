//! A single-threaded pre-fork supervisor, gunicorn's arbiter in Rust.
//!
//! [`Supervisor`] binds the listeners (TCP v4/v6, unix sockets, inherited
//! `fd://N` or systemd's `LISTEN_FDS`), forks `workers` processes running
//! your [`Service`], watches them through shared-memory [`Heartbeat`]s,
//! respawns the ones that exit, kills the ones that stall, and handles
//! gunicorn's signals (TERM graceful stop, INT/QUIT quick stop, HUP reload,
//! TTIN/TTOU, USR1, USR2 binary upgrade, WINCH). With the `metrics` feature it
//! also serves every worker's metric files merged, plus the listen backlog of
//! every listener (feature `tcpinfo`).
//!
//! The supervisor runs ONE thread: a poll loop over a signal self-pipe, the
//! metrics exporter's sockets and its timers, so forking is safe. Build
//! thread pools, pollers and log drains in the worker, after the fork.
//!
//! # Brief overview
//! - [`SupervisorConfig`], [`BindAddr`], [`MetricsConfig`]: what to run.
//! - [`Service`]: the worker body (runs in the forked child) and `reload`.
//! - [`WorkerContext`]: what a worker gets: [`InheritedListener`]s, its
//!   [`Heartbeat`], the supervisor's pid.
//! - [`Supervisor`]: `new`, hook setters, `run`.
//!
//! # Signals
//! | signal | supervisor |
//! |---|---|
//! | TERM | graceful stop: drain the listen queues, SIGTERM the workers, wait up to `graceful_timeout`, SIGKILL |
//! | INT, QUIT | quick stop: SIGQUIT the workers (also during a graceful stop) |
//! | HUP | [`Service::reload`], new workers first, then the old ones stopped gracefully; the supervisor's logs become [`Service::reload_logs`] |
//! | TTIN / TTOU | one worker more / less (never below one) |
//! | USR1 | reopen logs, forwarded to the workers |
//! | USR2 | re-exec the program with the listeners inherited (`FERROCORN_FDS`) |
//! | WINCH | stop all workers gracefully, keep the supervisor |
//!
//! A worker stopped alone (HUP's old workers, TTOU, WINCH, and every worker
//! on TERM after an upgrade, whose new supervisor serves the same sockets)
//! gets SIGHUP, not SIGTERM: retire, a graceful stop that leaves the
//! connections waiting in the listen queue to the other workers (see
//! [`Service::worker`]).
//!
//! # Graceful stop and the listen queue
//! Workers stop accepting when they get SIGTERM, and the kernel resets the
//! connections still queued on a listener when its last descriptor closes
//! (gunicorn #3397). So on TERM the supervisor keeps its listeners open and
//! lets the workers accept until every listen queue is empty (a listening
//! socket polls readable exactly when its queue is not), and only then
//! sends SIGTERM and closes its own copies. The whole stop takes at most
//! `graceful_timeout`, then SIGKILL: the drain at most half of it.
//!
//! # Features
//! - `metrics`: serve the workers' `ferrocorn-shm-metrics` files merged, plus
//!   the supervisor's gauges (see [`MetricsConfig`]). Without it, a config
//!   with `metrics` fails with "metrics are not built into this binary".
//! - `tcpinfo`: the TCP listeners' queue gauges, read with TCP_INFO.
//!
//! # Example
//! ```no_run
//! use std::io::{Read, Write};
//! use ferrocorn_supervisor::{
//!     InheritedListener, Service, Supervisor, SupervisorConfig, WorkerContext,
//! };
//!
//! struct Hello;
//!
//! impl Service for Hello {
//!     fn worker(&self, ctx: WorkerContext) -> i32 {
//!         let InheritedListener::Tcp(listener) = &ctx.listeners[0] else { return 3 };
//!         ctx.heartbeat.beat();
//!         for conn in listener.incoming() {
//!             let Ok(mut conn) = conn else { continue };
//!             let mut buf = [0u8; 1024];
//!             let _ = conn.read(&mut buf);
//!             let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nhi\n");
//!             ctx.heartbeat.beat();
//!         }
//!         0
//!     }
//!
//!     fn reload(&mut self) -> Result<SupervisorConfig, String> {
//!         Ok(config())
//!     }
//! }
//!
//! fn config() -> SupervisorConfig {
//!     SupervisorConfig {
//!         binds: vec!["127.0.0.1:8000".parse().unwrap()],
//!         workers: 2,
//!         ..SupervisorConfig::default()
//!     }
//! }
//!
//! let log = slog::Logger::root(slog::Discard, slog::o!());
//! let result = Supervisor::new(config(), log)
//!     .when_ready(|listeners| println!("listening on {listeners:?}"))
//!     .run(Hello);
//! if let Err(e) = result {
//!     eprintln!("error: {e}");
//!     std::process::exit(1);
//! }
//! ```
#![deny(missing_docs)]

mod arbiter;
mod config;
mod error;
mod heartbeat;
#[cfg(all(test, target_os = "linux"))]
mod heartbeat_tests;
mod listen;
mod logs;
mod notify;
mod service;
mod sys;
mod unixdiag;

#[cfg_attr(feature = "tcpinfo", path = "backlog/enabled.rs")]
#[cfg_attr(not(feature = "tcpinfo"), path = "backlog/disabled.rs")]
mod backlog;

#[cfg_attr(feature = "metrics", path = "metrics/enabled.rs")]
#[cfg_attr(not(feature = "metrics"), path = "metrics/disabled.rs")]
mod metrics;

use std::io;
use std::time::Duration;

pub use config::{BindAddr, MetricsConfig, SupervisorConfig};
pub use error::SupervisorError;
pub use heartbeat::{Heartbeat, LoadBoard};
pub use service::{ExitReason, InheritedListener, Service, WorkerContext, WorkerExit};

/// Worker exit code: the worker failed to boot (gunicorn's `WORKER_BOOT_ERROR`).
pub const WORKER_BOOT_ERROR: i32 = 3;
/// Worker exit code: the application failed to load (gunicorn's `APP_LOAD_ERROR`).
pub const APP_LOAD_ERROR: i32 = 4;

/// The supervisor's log: a `slog::Logger` plus reopen/flush.
///
/// Implemented for `slog::Logger` (reopen does nothing) and for
/// `ferrocorn_log::Logs` (reopen on SIGUSR1/SIGHUP).
pub trait SupervisorLogs {
    /// The error log (`gunicorn.error`).
    fn logger(&self) -> slog::Logger;
    /// Reopen log files (SIGUSR1).
    fn reopen(&self) -> io::Result<()> {
        Ok(())
    }
    /// Flush buffered lines (before exit and before forking).
    fn flush(&self) {}
    /// Called in a forked worker before [`Service::worker`]: close the log
    /// files, which the worker does not write to (it opens its own), so
    /// that a rotated and deleted file is not kept allocated by every
    /// worker. Standard streams stay open.
    fn close_in_child(&self) {}
}

impl SupervisorLogs for slog::Logger {
    fn logger(&self) -> slog::Logger {
        self.clone()
    }
}

impl SupervisorLogs for ferrocorn_log::Logs {
    fn logger(&self) -> slog::Logger {
        self.error().clone()
    }

    fn reopen(&self) -> io::Result<()> {
        ferrocorn_log::Logs::reopen(self)
    }

    fn flush(&self) {
        ferrocorn_log::Logs::flush(self)
    }

    fn close_in_child(&self) {
        ferrocorn_log::Logs::close_files(self)
    }
}

/// The arbiter: binds, forks, watches, respawns; see the crate docs.
pub struct Supervisor {
    pub(crate) config: SupervisorConfig,
    pub(crate) logs: Box<dyn SupervisorLogs>,
    pub(crate) hooks: service::Hooks,
    pub(crate) bind_attempts: u32,
    pub(crate) bind_retry_delay: Duration,
    pub(crate) unix_socket_mode: u32,
    pub(crate) metrics_prefix: String,
}

impl Supervisor {
    /// A supervisor for `config`, logging to `logs` (a `slog::Logger` or
    /// `ferrocorn_log::Logs`).
    pub fn new(config: SupervisorConfig, logs: impl SupervisorLogs + 'static) -> Supervisor {
        Supervisor {
            config,
            logs: Box::new(logs),
            hooks: service::Hooks::default(),
            bind_attempts: 5,
            bind_retry_delay: Duration::from_secs(1),
            unix_socket_mode: 0o777,
            metrics_prefix: ferrocorn_log::DEFAULT_PREFIX.to_string(),
        }
    }

    /// How often a bind is tried and the pause between tries (gunicorn: 5
    /// times, 1 s apart).
    pub fn bind_retries(mut self, attempts: u32, delay: Duration) -> Supervisor {
        self.bind_attempts = attempts.max(1);
        self.bind_retry_delay = delay;
        self
    }

    /// Permissions of unix socket files (default 0o777: gunicorn's with its
    /// default umask 0).
    pub fn unix_socket_mode(mut self, mode: u32) -> Supervisor {
        self.unix_socket_mode = mode & 0o7777;
        self
    }

    /// The name prefix of the supervisor's metric families in place of
    /// `gunicorn` (`gunicorn_pending_connections`, ...); used with the
    /// `metrics` feature only.
    pub fn metrics_prefix(mut self, prefix: impl Into<String>) -> Supervisor {
        self.metrics_prefix = prefix.into();
        self
    }

    /// Called once before anything is bound.
    pub fn on_starting(mut self, f: impl FnMut(&SupervisorConfig) + 'static) -> Supervisor {
        self.hooks.on_starting = Some(Box::new(f));
        self
    }

    /// Called once the listeners are bound and the first workers forked
    /// (after sd_notify READY=1), with the listeners as gunicorn prints them
    /// (`http://127.0.0.1:8000`; a port 0 shows the port the kernel chose).
    pub fn when_ready(mut self, f: impl FnMut(&[String]) + 'static) -> Supervisor {
        self.hooks.when_ready = Some(Box::new(f));
        self
    }

    /// Called in the supervisor before each fork, with the new worker's id.
    pub fn pre_fork(mut self, f: impl FnMut(usize) + 'static) -> Supervisor {
        self.hooks.pre_fork = Some(Box::new(f));
        self
    }

    /// Called in the supervisor right after each fork (also a failed one),
    /// with the new worker's id: the parent's half of a fork protocol
    /// begun in [`Supervisor::pre_fork`] (CPython's `PyOS_AfterFork_Parent`).
    pub fn after_fork_parent(mut self, f: impl FnMut(usize) + 'static) -> Supervisor {
        self.hooks.after_fork_parent = Some(Box::new(f));
        self
    }

    /// Called in the child right after the fork, before [`Service::worker`].
    pub fn post_fork(mut self, f: impl FnMut(usize) + 'static) -> Supervisor {
        self.hooks.post_fork = Some(Box::new(f));
        self
    }

    /// Called in the child after [`Service::worker`] returned, with the
    /// worker's id and exit code.
    pub fn worker_exit(mut self, f: impl FnMut(usize, i32) + 'static) -> Supervisor {
        self.hooks.worker_exit = Some(Box::new(f));
        self
    }

    /// Called in the supervisor when a worker was reaped.
    pub fn child_exit(mut self, f: impl FnMut(&WorkerExit) + 'static) -> Supervisor {
        self.hooks.child_exit = Some(Box::new(f));
        self
    }

    /// Called after a successful SIGHUP reload with the new configuration.
    pub fn on_reload(mut self, f: impl FnMut(&SupervisorConfig) + 'static) -> Supervisor {
        self.hooks.on_reload = Some(Box::new(f));
        self
    }

    /// Called just before `run` returns.
    pub fn on_exit(mut self, f: impl FnMut() + 'static) -> Supervisor {
        self.hooks.on_exit = Some(Box::new(f));
        self
    }

    /// Called when the target worker count changes, with (new, old).
    pub fn nworkers_changed(mut self, f: impl FnMut(usize, usize) + 'static) -> Supervisor {
        self.hooks.nworkers_changed = Some(Box::new(f));
        self
    }

    /// Bind, fork the workers and supervise them until a stop signal.
    ///
    /// Returns `Ok(())` after a TERM/INT/QUIT stop, an error when binding
    /// fails, a worker fails to boot, or a part asked for is not built.
    ///
    /// Call it from a process with a single thread: it forks. It installs
    /// handlers for HUP, INT, QUIT, TERM, USR1, USR2, TTIN, TTOU, WINCH and
    /// CHLD (restored to the defaults when it returns) and reaps every child
    /// of the process, not only its workers.
    pub fn run<S: Service>(self, service: S) -> Result<(), SupervisorError> {
        arbiter::run(self, service)
    }
}
