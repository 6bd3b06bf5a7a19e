//! Metrics built in: the workers write shm files, `ferrocorn metrics DIR`
//! renders a directory, the single-process mode serves its own.

use std::path::Path;

use ferrocorn_shm_metrics::Registry;
use ferrocorn_worker::Worker;

#[cfg(not(feature = "supervisor"))]
use crate::config::MetricsSettings;

/// `ferrocorn metrics DIR`: the merged exposition text of a directory.
pub fn render_dir(dir: &Path) -> Result<Vec<u8>, String> {
    if !dir.is_dir() {
        return Err(format!("{}: not a directory", dir.display()));
    }
    ferrocorn_shm_metrics::render_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))
}

/// Makes `worker` write its gauges and request metrics into `dir`.
pub fn attach(worker: Worker, dir: &Path, prefix: &str) -> Worker {
    worker.metrics(Registry::new(dir)).metrics_prefix(prefix)
}

/// The single-process mode's exporter: a thread serving the directory
/// (the process never forks afterwards, so a thread is fine).
#[cfg(not(feature = "supervisor"))]
pub struct Exporter {
    dir: std::path::PathBuf,
    private: bool,
}

#[cfg(not(feature = "supervisor"))]
impl Exporter {
    /// Binds `settings.bind` and serves the merged files of the metrics
    /// directory (the given one, or a private one removed at exit).
    pub fn start(settings: &MetricsSettings) -> Result<Exporter, String> {
        let (dir, private) = match &settings.dir {
            Some(d) => (d.clone(), false),
            None => (
                std::env::temp_dir().join(format!("ferrocorn-metrics-{}", std::process::id())),
                true,
            ),
        };
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create the metrics directory {}: {e}", dir.display()))?;
        let listener = std::net::TcpListener::bind(settings.bind)
            .map_err(|e| format!("can't serve metrics on {}: {e}", settings.bind))?;
        let collector = ferrocorn_shm_metrics::MultiProcessCollector::new(&dir);
        ferrocorn_shm_metrics::Exporter::spawn_thread(
            listener,
            Box::new(move || collector.collect_families()),
        )
        .map_err(|e| format!("cannot start the metrics exporter: {e}"))?;
        Ok(Exporter { dir, private })
    }

    /// The directory the worker writes into.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(not(feature = "supervisor"))]
impl Drop for Exporter {
    fn drop(&mut self) {
        if self.private {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            let _ = ferrocorn_shm_metrics::mark_process_dead(&self.dir, std::process::id());
        }
    }
}
