//! Metrics not built in: the same signatures, failing clearly.

use std::path::Path;

use ferrocorn_worker::Worker;

#[cfg(not(feature = "supervisor"))]
use crate::config::MetricsSettings;

const NOT_BUILT: &str = "metrics are not built into this binary (feature `metrics`)";

/// `ferrocorn metrics DIR`: not available.
pub fn render_dir(_dir: &Path) -> Result<Vec<u8>, String> {
    Err(NOT_BUILT.to_string())
}

/// Leaves the worker as it is.
pub fn attach(worker: Worker, _dir: &Path, _prefix: &str, _accept_queue_wait: bool) -> Worker {
    worker
}

/// No exporter.
#[cfg(not(feature = "supervisor"))]
pub struct Exporter(());

#[cfg(not(feature = "supervisor"))]
impl Exporter {
    /// Fails: the config never asks for it in this build.
    pub fn start(
        _settings: &MetricsSettings,
        _prefix: &str,
        _listeners: Vec<(String, std::net::TcpListener)>,
    ) -> Result<Exporter, String> {
        Err(NOT_BUILT.to_string())
    }

    /// Never reached.
    pub fn dir(&self) -> &Path {
        Path::new("")
    }
}
