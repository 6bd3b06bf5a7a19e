//! What a serving process exports besides the workers' files, shared by the
//! supervisor and the single-process binary so that both name and keep
//! them alike: the listen-queue gauges ([`ListenQueueGauges`]) and the
//! metrics directory's life ([`MetricsDir`]).

use std::hash::{BuildHasher, Hasher};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{IntGaugeVec, Opts};

/// The listen queue of each listener, labelled `listener`:
/// `{prefix}_pending_connections` (connections waiting now),
/// `{prefix}_pending_connections_peak` (the most seen since the previous
/// scrape) and `{prefix}_listen_backlog` (the queue's capacity).
#[derive(Clone)]
pub struct ListenQueueGauges {
    pending: IntGaugeVec,
    peak: IntGaugeVec,
    capacity: IntGaugeVec,
}

impl ListenQueueGauges {
    /// The three families named with `prefix`; an error for a prefix that
    /// makes an invalid metric name.
    pub fn new(prefix: &str) -> prometheus::Result<ListenQueueGauges> {
        let gauge = |suffix: &str, help: &str| {
            IntGaugeVec::new(Opts::new(format!("{prefix}_{suffix}"), help), &["listener"])
        };
        Ok(ListenQueueGauges {
            pending: gauge(
                "pending_connections",
                "Connections waiting in the listen queue (TCP_INFO; sock_diag for unix sockets), read at scrape time.",
            )?,
            peak: gauge(
                "pending_connections_peak",
                "Highest listen-queue length sampled since the previous scrape.",
            )?,
            capacity: gauge(
                "listen_backlog",
                "Listen queue capacity (the backlog after the kernel's somaxconn clamp).",
            )?,
        })
    }

    /// Forget every listener's series (before setting this scrape's).
    pub fn reset(&self) {
        self.pending.reset();
        self.peak.reset();
        self.capacity.reset();
    }

    /// One listener's queue: `queued` now, `peak` since the last scrape
    /// (at least `queued`), `capacity`.
    pub fn set(&self, listener: &str, queued: u32, peak: u32, capacity: u32) {
        let labels = [listener];
        self.pending.with_label_values(&labels).set(queued.into());
        self.peak
            .with_label_values(&labels)
            .set(peak.max(queued).into());
        self.capacity
            .with_label_values(&labels)
            .set(capacity.into());
    }

    /// Register the three families in `registry`.
    pub fn register(&self, registry: &prometheus::Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.pending.clone()))?;
        registry.register(Box::new(self.peak.clone()))?;
        registry.register(Box::new(self.capacity.clone()))
    }

    /// The three families as they stand.
    pub fn families(&self) -> Vec<MetricFamily> {
        let mut v = self.pending.collect();
        v.extend(self.peak.collect());
        v.extend(self.capacity.collect());
        v
    }
}

/// The directory the workers write their metric files into, as the
/// serving process keeps it: either one the user named (kept at exit), or a
/// private one, created `0700` under the temp directory with a name nobody
/// can guess (so no other user can plant files or a symlink there first),
/// and removed by [`MetricsDir::finish`].
#[derive(Debug)]
pub struct MetricsDir {
    path: PathBuf,
    private: bool,
}

impl MetricsDir {
    /// The user's directory, created (`0700`, with its parents) when
    /// missing.
    pub fn given(dir: &Path) -> io::Result<MetricsDir> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        Ok(MetricsDir {
            path: dir.to_path_buf(),
            private: false,
        })
    }

    /// A new private directory under [`std::env::temp_dir`]:
    /// `ferrocorn-metrics-PID-RANDOM`, mode `0700`, never one that existed.
    pub fn private() -> io::Result<MetricsDir> {
        let base = std::env::temp_dir();
        for _ in 0..100 {
            let path = base.join(format!(
                "ferrocorn-metrics-{}-{:016x}",
                std::process::id(),
                random_u64()
            ));
            // Not recursive: an existing name (or a planted symlink) fails.
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => {
                    return Ok(MetricsDir {
                        path,
                        private: true,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other(
            "cannot create a private metrics directory",
        ))
    }

    /// Where the files are.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether it is a private directory (removed by [`finish`](Self::finish)).
    pub fn is_private(&self) -> bool {
        self.private
    }

    /// At exit: remove a private directory with its files; the user's own
    /// is left as it is. (Not a `Drop`: a forked child holding a copy must
    /// not remove it.)
    pub fn finish(self) {
        if self.private {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// 64 bits from the OS's randomness: std seeds every `RandomState` from
/// it (getrandom(2) on Linux), and a fresh one hashes nothing to a value
/// that cannot be predicted.
fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(u64::from(std::process::id()));
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_private_dir_is_0700_unguessable_and_removed_at_finish() {
        let a = MetricsDir::private().unwrap();
        let b = MetricsDir::private().unwrap();
        assert_ne!(a.path(), b.path());
        let mode = std::fs::metadata(a.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{mode:o}");
        assert!(a.is_private());
        let path = a.path().to_path_buf();
        std::fs::write(path.join("counter_1.db"), b"x").unwrap();
        a.finish();
        assert!(!path.exists());
        b.finish();
    }

    #[test]
    fn a_given_dir_is_kept() {
        let tmp = std::env::temp_dir().join(format!("ferrocorn-own-test-{}", random_u64()));
        let d = MetricsDir::given(&tmp.join("a/b")).unwrap();
        assert!(!d.is_private());
        let mode = std::fs::metadata(d.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{mode:o}");
        let path = d.path().to_path_buf();
        d.finish();
        assert!(path.is_dir());
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn the_gauges_carry_the_prefix_and_a_peak_at_least_the_queue() {
        let g = ListenQueueGauges::new("myapp").unwrap();
        g.set("http://127.0.0.1:1", 3, 1, 128);
        let mut out = Vec::new();
        crate::encode_text(&g.families(), &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("myapp_pending_connections{listener=\"http://127.0.0.1:1\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("myapp_pending_connections_peak{listener=\"http://127.0.0.1:1\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("myapp_listen_backlog{listener=\"http://127.0.0.1:1\"} 128"),
            "{text}"
        );
        assert!(!text.contains("gunicorn"), "{text}");
        g.reset();
        assert!(g.families().iter().all(|f| f.get_metric().is_empty()));
        assert!(ListenQueueGauges::new("my-app").is_err());
    }
}
