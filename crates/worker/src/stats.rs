//! Live numbers of a worker: the seed's worker gauges plus requests served.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// A worker's live numbers, updated as they change (atomics, readable from
/// any thread). With the `metrics` feature the same values are written to
/// the shm gauges `gunicorn_active_worker_connections`,
/// `gunicorn_max_worker_connections`, `gunicorn_max_worker_threads`,
/// `gunicorn_active_worker_threads` and `gunicorn_pending_requests`.
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub(crate) active_connections: AtomicUsize,
    pub(crate) max_connections: AtomicUsize,
    pub(crate) max_threads: AtomicUsize,
    pub(crate) active_threads: AtomicUsize,
    pub(crate) pending_requests: AtomicUsize,
    pub(crate) requests_served: AtomicU64,
}

/// A copy of [`WorkerStats`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Open client connections.
    pub active_connections: usize,
    /// `worker_connections`.
    pub max_connections: usize,
    /// `threads`.
    pub max_threads: usize,
    /// Pool threads running the app (or a streamed response) now.
    pub active_threads: usize,
    /// Requests read but not yet completely answered.
    pub pending_requests: usize,
    /// Requests answered since the start.
    pub requests_served: u64,
}

impl WorkerStats {
    pub(crate) fn set_limits(&self, connections: usize, threads: usize) {
        self.max_connections.store(connections, Relaxed);
        self.max_threads.store(threads, Relaxed);
    }
    /// Open client connections.
    pub fn active_connections(&self) -> usize {
        self.active_connections.load(Relaxed)
    }
    /// `worker_connections`.
    pub fn max_connections(&self) -> usize {
        self.max_connections.load(Relaxed)
    }
    /// `threads`.
    pub fn max_threads(&self) -> usize {
        self.max_threads.load(Relaxed)
    }
    /// Pool threads busy now.
    pub fn active_threads(&self) -> usize {
        self.active_threads.load(Relaxed)
    }
    /// Requests read but not yet completely answered.
    pub fn pending_requests(&self) -> usize {
        self.pending_requests.load(Relaxed)
    }
    /// Requests answered since the start.
    pub fn requests_served(&self) -> u64 {
        self.requests_served.load(Relaxed)
    }
    /// All numbers at once.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            active_connections: self.active_connections(),
            max_connections: self.max_connections(),
            max_threads: self.max_threads(),
            active_threads: self.active_threads(),
            pending_requests: self.pending_requests(),
            requests_served: self.requests_served(),
        }
    }
}
