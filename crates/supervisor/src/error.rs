//! The supervisor's error type.

use std::fmt;
use std::io;

/// Why [`Supervisor::run`](crate::Supervisor::run) stopped with an error.
#[derive(Debug)]
#[non_exhaustive]
pub enum SupervisorError {
    /// A listener could not be bound (after the configured retries).
    Bind {
        /// The address as given.
        addr: String,
        /// The last error.
        source: io::Error,
    },
    /// A worker exited with code 3: it failed to boot.
    WorkerBootFailed {
        /// Its pid.
        pid: u32,
    },
    /// A worker exited with code 4: the application failed to load.
    AppLoadFailed {
        /// Its pid.
        pid: u32,
    },
    /// Workers kept dying right after they were forked.
    WorkersKeepDying {
        /// How many died in a row before booting.
        count: u32,
        /// The last one's exit.
        last: String,
    },
    /// A part of the supervisor asked for is not built into this binary.
    NotBuilt(&'static str),
    /// The configuration cannot be served.
    Config(String),
    /// Another operating system error.
    Io(io::Error),
}

impl fmt::Display for SupervisorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SupervisorError::Bind { addr, source } => write!(f, "can't listen on {addr}: {source}"),
            SupervisorError::WorkerBootFailed { pid } => {
                write!(
                    f,
                    "worker (pid:{pid}) failed to boot (exit code 3); shutting down"
                )
            }
            SupervisorError::AppLoadFailed { pid } => write!(
                f,
                "worker (pid:{pid}) could not load the application (exit code 4); shutting down"
            ),
            SupervisorError::WorkersKeepDying { count, last } => write!(
                f,
                "{count} workers in a row died before serving (last one {last}); shutting down"
            ),
            SupervisorError::NotBuilt(what) => write!(f, "{what} not built into this binary"),
            SupervisorError::Config(m) => write!(f, "{m}"),
            SupervisorError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for SupervisorError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SupervisorError::Bind { source, .. } => Some(source),
            SupervisorError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for SupervisorError {
    fn from(e: io::Error) -> Self {
        SupervisorError::Io(e)
    }
}
