//! Shm metrics of the worker (feature `metrics`): pending until the
//! ferrocorn-shm-metrics crate provides its writer API.

use std::time::Duration;

/// The worker's metric handles; no-op without the `metrics` feature.
#[derive(Clone, Default)]
pub(crate) struct Metrics {}

impl Metrics {
    pub(crate) fn active_connections(&self, _n: usize) {}
    pub(crate) fn active_threads(&self, _n: usize) {}
    pub(crate) fn pending_requests(&self, _n: usize) {}
    pub(crate) fn request(&self, _method: &str, _status: u16, _took: Duration) {}
}
