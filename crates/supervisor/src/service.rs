//! What the supervisor forks: the [`Service`] trait and the worker's context.

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::PathBuf;

use crate::config::SupervisorConfig;
use crate::heartbeat::{Heartbeat, LoadBoard};

/// A listening socket the worker inherits from the supervisor (already bound
/// and listening, shared with the other workers).
#[derive(Debug)]
pub enum InheritedListener {
    /// A TCP listener.
    Tcp(std::net::TcpListener),
    /// A unix stream listener.
    Unix(std::os::unix::net::UnixListener),
}

impl AsFd for InheritedListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            InheritedListener::Tcp(l) => l.as_fd(),
            InheritedListener::Unix(l) => l.as_fd(),
        }
    }
}

impl AsRawFd for InheritedListener {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

/// Everything a forked worker gets from the supervisor.
#[derive(Debug)]
pub struct WorkerContext {
    /// The listeners, in the order of `SupervisorConfig::binds`. O_NONBLOCK
    /// is shared by every process holding a socket, so set the mode you
    /// need (all workers of one program should want the same one).
    pub listeners: Vec<InheritedListener>,
    /// Call `beat()` whenever the worker makes progress.
    pub heartbeat: Heartbeat,
    /// Publish the worker's open connections here and leave a new
    /// connection to a sibling holding clearly fewer (see [`LoadBoard`]).
    pub load: LoadBoard,
    /// The supervisor's pid: exit gracefully when `getppid()` changes.
    pub ppid: u32,
    /// The worker's number, increasing over the supervisor's life (gunicorn's
    /// `age`), starting at 1.
    pub worker_id: usize,
    /// The shared metrics directory when metrics are served.
    pub metrics_dir: Option<PathBuf>,
}

/// The program the supervisor runs: a worker body and a way to reload.
pub trait Service {
    /// Run one worker, in the forked child; returns its exit code.
    ///
    /// The child starts with default signal dispositions and an empty signal
    /// mask; install your own handling (gunicorn's: TERM graceful stop,
    /// INT/QUIT quick stop, USR1 reopen logs; and HUP: retire, a graceful
    /// stop that leaves the connections waiting in the listen queue to the
    /// other workers, sent when this worker alone stops: reload, TTOU,
    /// WINCH, or TERM after an upgrade). Exit codes
    /// [`WORKER_BOOT_ERROR`](crate::WORKER_BOOT_ERROR) (3) and
    /// [`APP_LOAD_ERROR`](crate::APP_LOAD_ERROR) (4) stop the supervisor
    /// instead of respawning. Beat the heartbeat once the worker is ready to
    /// serve: a reload waits for the new workers' first beat before stopping
    /// the old ones.
    fn worker(&self, ctx: WorkerContext) -> i32;

    /// SIGHUP: re-read the configuration. `Ok` starts new workers with it
    /// and then gracefully stops the old ones; `Err` is logged and the
    /// running workers stay.
    fn reload(&mut self) -> Result<SupervisorConfig, String>;

    /// After a successful [`reload`](Self::reload): the supervisor's own
    /// logs for the new configuration (its level, format, destinations),
    /// which it writes to from then on. `None` (the default) keeps the
    /// running logs, reopened.
    fn reload_logs(&mut self) -> Option<Box<dyn crate::SupervisorLogs>> {
        None
    }
}

/// How a child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    /// `exit(code)`.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Code(c) => write!(f, "exited with code {c}"),
            ExitReason::Signal(s) => write!(f, "was sent {}", signal_name(*s)),
        }
    }
}

/// A worker the supervisor reaped (for the `child_exit` hook).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerExit {
    /// The worker's pid.
    pub pid: u32,
    /// Its `WorkerContext::worker_id`.
    pub worker_id: usize,
    /// How it ended.
    pub reason: ExitReason,
}

/// A signal's name, `SIGKILL` style.
pub(crate) fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGCHLD => "SIGCHLD",
        libc::SIGTTIN => "SIGTTIN",
        libc::SIGTTOU => "SIGTTOU",
        libc::SIGWINCH => "SIGWINCH",
        _ => return format!("signal {sig}"),
    };
    name.to_string()
}

type Hook<A> = Option<Box<A>>;
type Labels<'a> = &'a [String];

/// Optional callbacks at gunicorn's hook points (all default to nothing).
#[derive(Default)]
pub(crate) struct Hooks {
    pub(crate) on_starting: Hook<dyn FnMut(&SupervisorConfig)>,
    pub(crate) when_ready: Hook<dyn for<'a> FnMut(Labels<'a>)>,
    pub(crate) pre_fork: Hook<dyn FnMut(usize)>,
    pub(crate) post_fork: Hook<dyn FnMut(usize)>,
    pub(crate) after_fork_parent: Hook<dyn FnMut(usize)>,
    pub(crate) worker_exit: Hook<dyn FnMut(usize, i32)>,
    pub(crate) child_exit: Hook<dyn FnMut(&WorkerExit)>,
    pub(crate) on_reload: Hook<dyn FnMut(&SupervisorConfig)>,
    pub(crate) on_exit: Hook<dyn FnMut()>,
    pub(crate) nworkers_changed: Hook<dyn FnMut(usize, usize)>,
}
