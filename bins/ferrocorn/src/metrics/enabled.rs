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
    // Each file skipped (or read in part) is named once on stderr, with why.
    let mut out = Vec::new();
    ferrocorn_shm_metrics::MultiProcessCollector::new(dir)
        .on_warning(|w| eprintln!("ferrocorn: warning: {w}"))
        .encode_text_to(&mut out);
    Ok(out)
}

/// Makes `worker` write its gauges and request metrics into `dir` (and
/// observe each connection's listen-queue wait when `accept_queue_wait`).
pub fn attach(worker: Worker, dir: &Path, prefix: &str, accept_queue_wait: bool) -> Worker {
    worker
        .metrics(Registry::new(dir))
        .metrics_prefix(prefix)
        .accept_queue_wait(accept_queue_wait)
}

/// The single-process mode's exporter: a thread serving the directory
/// (the process never forks afterwards, so a thread is fine).
#[cfg(not(feature = "supervisor"))]
pub struct Exporter {
    dir: Option<ferrocorn_shm_metrics::MetricsDir>,
}

#[cfg(not(feature = "supervisor"))]
impl Exporter {
    /// Binds `settings.bind` and serves the merged files of the metrics
    /// directory (the given one, or a private one removed at exit), as the
    /// supervisor does. `listeners` (a label and a duplicate of each TCP
    /// listener) get the listen-queue gauges, named with `prefix`, when the
    /// `tcpinfo` feature is built.
    pub fn start(
        settings: &MetricsSettings,
        prefix: &str,
        listeners: Vec<(String, std::net::TcpListener)>,
    ) -> Result<Exporter, String> {
        let dir = match &settings.dir {
            Some(d) => ferrocorn_shm_metrics::MetricsDir::given(d)
                .map_err(|e| format!("cannot create the metrics directory {}: {e}", d.display()))?,
            None => ferrocorn_shm_metrics::MetricsDir::private()
                .map_err(|e| format!("cannot create a private metrics directory: {e}"))?,
        };
        let mut backlog = backlog::Gauges::new(prefix, listeners)
            .map_err(|e| format!("metric prefix {prefix:?}: {e}"))?;
        let listener = std::net::TcpListener::bind(settings.bind)
            .map_err(|e| format!("can't serve metrics on {}: {e}", settings.bind))?;
        let seen = std::sync::Mutex::new(std::collections::HashSet::new());
        let collector =
            ferrocorn_shm_metrics::MultiProcessCollector::new(dir.path()).on_warning(move |w| {
                // Each file once: a bad file stays bad scrape after scrape.
                let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                if seen.len() >= 4096 {
                    seen.clear();
                }
                if seen.insert(w.path.clone()) {
                    eprintln!("ferrocorn: warning: metric file {w}");
                }
            });
        ferrocorn_shm_metrics::Exporter::spawn_thread(
            listener,
            Box::new(move |out: &mut Vec<u8>| {
                collector.encode_text_to(out);
                ferrocorn_shm_metrics::encode_text(&backlog.collect(), out);
            }),
        )
        .map_err(|e| format!("cannot start the metrics exporter: {e}"))?;
        Ok(Exporter { dir: Some(dir) })
    }

    /// The directory the worker writes into.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().map_or(Path::new(""), |d| d.path())
    }
}

#[cfg(not(feature = "supervisor"))]
impl Drop for Exporter {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            if !dir.is_private() {
                let _ = ferrocorn_shm_metrics::mark_process_dead(dir.path(), std::process::id());
            }
            dir.finish();
        }
    }
}

/// The listen queue of every TCP listener, read with TCP_INFO at scrape
/// time: the supervisor's gauges (`PREFIX_pending_connections`, its peak,
/// `PREFIX_listen_backlog`), for the single process. Without a sampler
/// between scrapes, the peak is the length read at the scrape.
#[cfg(all(feature = "tcpinfo", not(feature = "supervisor")))]
mod backlog {
    use ferrocorn_shm_metrics::ListenQueueGauges;
    use prometheus::proto::MetricFamily;

    pub struct Gauges {
        listeners: Vec<(String, std::net::TcpListener)>,
        gauges: ListenQueueGauges,
    }

    impl Gauges {
        pub fn new(
            prefix: &str,
            listeners: Vec<(String, std::net::TcpListener)>,
        ) -> prometheus::Result<Gauges> {
            Ok(Gauges {
                listeners,
                gauges: ListenQueueGauges::new(prefix)?,
            })
        }

        pub fn collect(&mut self) -> Vec<MetricFamily> {
            self.gauges.reset();
            for (label, listener) in &self.listeners {
                if let Ok(q) = ferrocorn_tcpinfo::listen_queue(listener) {
                    self.gauges.set(label, q.queued, q.queued, q.capacity);
                }
            }
            self.gauges.families()
        }
    }
}

/// Without `tcpinfo`: no backlog gauges.
#[cfg(all(not(feature = "tcpinfo"), not(feature = "supervisor")))]
mod backlog {
    use prometheus::proto::MetricFamily;

    pub struct Gauges;

    impl Gauges {
        pub fn new(
            _prefix: &str,
            _listeners: Vec<(String, std::net::TcpListener)>,
        ) -> prometheus::Result<Gauges> {
            Ok(Gauges)
        }

        pub fn collect(&mut self) -> Vec<MetricFamily> {
            Vec::new()
        }
    }
}
