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
    dir: std::path::PathBuf,
    private: bool,
}

#[cfg(not(feature = "supervisor"))]
impl Exporter {
    /// Binds `settings.bind` and serves the merged files of the metrics
    /// directory (the given one, or a private one removed at exit).
    /// `listeners` (a label and a duplicate of each TCP listener) get the
    /// listen-backlog gauges when the `tcpinfo` feature is built.
    pub fn start(
        settings: &MetricsSettings,
        listeners: Vec<(String, std::net::TcpListener)>,
    ) -> Result<Exporter, String> {
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
        let seen = std::sync::Mutex::new(std::collections::HashSet::new());
        let collector =
            ferrocorn_shm_metrics::MultiProcessCollector::new(&dir).on_warning(move |w| {
                // Each file once: a bad file stays bad scrape after scrape.
                let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                if seen.len() >= 4096 {
                    seen.clear();
                }
                if seen.insert(w.path.clone()) {
                    eprintln!("ferrocorn: warning: metric file {w}");
                }
            });
        let mut backlog = backlog::Gauges::new(listeners);
        ferrocorn_shm_metrics::Exporter::spawn_thread(
            listener,
            Box::new(move |out: &mut Vec<u8>| {
                collector.encode_text_to(out);
                ferrocorn_shm_metrics::encode_text(&backlog.collect(), out);
            }),
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

/// The listen queue of every TCP listener, read with TCP_INFO at scrape
/// time: the supervisor's `gunicorn_pending_connections` and
/// `gunicorn_listen_backlog`, for the single process.
#[cfg(all(feature = "tcpinfo", not(feature = "supervisor")))]
mod backlog {
    use prometheus::core::Collector;
    use prometheus::proto::MetricFamily;
    use prometheus::{GaugeVec, Opts};

    pub struct Gauges {
        listeners: Vec<(String, std::net::TcpListener)>,
        pending: GaugeVec,
        capacity: GaugeVec,
    }

    impl Gauges {
        pub fn new(listeners: Vec<(String, std::net::TcpListener)>) -> Gauges {
            let gauge = |name: &str, help: &str| {
                GaugeVec::new(Opts::new(name, help), &["listener"]).expect("a valid metric name")
            };
            Gauges {
                listeners,
                pending: gauge(
                    "gunicorn_pending_connections",
                    "Connections waiting in the listen queue (TCP_INFO), read at scrape time.",
                ),
                capacity: gauge(
                    "gunicorn_listen_backlog",
                    "Listen queue capacity (the backlog after the kernel's somaxconn clamp).",
                ),
            }
        }

        pub fn collect(&mut self) -> Vec<MetricFamily> {
            for (label, listener) in &self.listeners {
                if let Ok(q) = ferrocorn_tcpinfo::listen_queue(listener) {
                    let labels = [label.as_str()];
                    self.pending
                        .with_label_values(&labels)
                        .set(f64::from(q.queued));
                    self.capacity
                        .with_label_values(&labels)
                        .set(f64::from(q.capacity));
                }
            }
            let mut families = self.pending.collect();
            families.extend(self.capacity.collect());
            families
        }
    }
}

/// Without `tcpinfo`: no backlog gauges.
#[cfg(all(not(feature = "tcpinfo"), not(feature = "supervisor")))]
mod backlog {
    use prometheus::proto::MetricFamily;

    pub struct Gauges;

    impl Gauges {
        pub fn new(_listeners: Vec<(String, std::net::TcpListener)>) -> Gauges {
            Gauges
        }

        pub fn collect(&mut self) -> Vec<MetricFamily> {
            Vec::new()
        }
    }
}
