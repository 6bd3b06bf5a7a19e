//! Serving the merged metrics (feature `metrics`).
//!
//! The exporter of `ferrocorn-shm-metrics` runs inside the supervisor's poll
//! loop. Every scrape merges all workers' files and adds the supervisor's
//! own families: the listen queue of every TCP listener read right now with
//! TCP_INFO (`gunicorn_pending_connections`), its peak since the previous
//! scrape sampled every `update_interval`
//! (`gunicorn_pending_connections_peak`), the effective backlog
//! (`gunicorn_listen_backlog`), workers alive and wanted, and worker
//! restarts by reason.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ferrocorn_shm_metrics::{
    Exporter, ListenQueueGauges, MetricsDir, MultiProcessCollector, mark_process_dead,
};
use prometheus::{IntCounterVec, IntGauge, Opts};
use slog::{Logger, info, warn};

use crate::config::MetricsConfig;
use crate::error::SupervisorError;
use crate::listen::{Kind, Listener};
use crate::{backlog, sys, unixdiag};

struct ListenerStat {
    label: String,
    kind: Kind,
    fd: OwnedFd,
    peak: u32,
}

impl ListenerStat {
    /// `(queued, capacity)`: TCP_INFO for TCP (feature `tcpinfo`),
    /// sock_diag for unix sockets.
    fn queue(&self) -> Option<(u32, u32)> {
        match self.kind {
            Kind::Tcp => backlog::listen_queue(&self.fd),
            Kind::Unix => unixdiag::listen_queue(&self.fd),
        }
    }
}

#[derive(Default)]
struct State {
    listeners: Vec<ListenerStat>,
    alive: usize,
    target: usize,
    restarts: BTreeMap<&'static str, u64>,
}

/// The supervisor's side of the metrics.
pub(crate) struct Metrics {
    dir: MetricsDir,
    exporter: Exporter,
    port: u16,
    listener_fd: RawFd,
    state: Arc<Mutex<State>>,
    update_interval: Duration,
    next_sample: Instant,
    log: Logger,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// The `reason` label values of `gunicorn_worker_restarts_total`.
const RESTART_REASONS: [&str; 5] = ["timeout", "killed", "signal", "error", "exited"];

/// The supervisor's own families, built with the `prometheus` crate.
struct Families {
    registry: prometheus::Registry,
    queues: ListenQueueGauges,
    alive: IntGauge,
    target: IntGauge,
    restarts: IntCounterVec,
}

impl Families {
    fn new(prefix: &str) -> prometheus::Result<Families> {
        let name = |suffix: &str| format!("{prefix}_{suffix}");
        let registry = prometheus::Registry::new();
        let queues = ListenQueueGauges::new(prefix)?;
        let alive = IntGauge::new(name("workers"), "Worker processes alive.")?;
        let target = IntGauge::new(name("workers_target"), "Worker processes wanted.")?;
        let restarts = IntCounterVec::new(
            Opts::new(
                name("worker_restarts_total"),
                "Workers replaced after an unexpected exit, by reason.",
            ),
            &["reason"],
        )?;
        // Every reason from the start, so that rate() sees the first one.
        for reason in RESTART_REASONS {
            restarts.with_label_values(&[reason]);
        }
        queues.register(&registry)?;
        registry.register(Box::new(alive.clone()))?;
        registry.register(Box::new(target.clone()))?;
        registry.register(Box::new(restarts.clone()))?;
        Ok(Families {
            registry,
            queues,
            alive,
            target,
            restarts,
        })
    }

    fn gather(&self, st: &mut State) -> Vec<prometheus::proto::MetricFamily> {
        self.queues.reset();
        for l in st.listeners.iter_mut() {
            if let Some((queued, cap)) = l.queue() {
                let peak = l.peak.max(queued);
                l.peak = queued;
                self.queues.set(&l.label, queued, peak, cap);
            }
        }
        self.alive.set(st.alive as i64);
        self.target.set(st.target as i64);
        for (reason, n) in &st.restarts {
            let c = self.restarts.with_label_values(&[reason]);
            let have = c.get();
            if *n > have {
                c.inc_by(*n - have);
            }
        }
        self.registry.gather()
    }
}

impl Metrics {
    /// Prepare the directory and bind the exporter.
    pub(crate) fn new(
        cfg: &MetricsConfig,
        keep_files: bool,
        inherited: Option<RawFd>,
        prefix: &str,
        log: &Logger,
    ) -> Result<Metrics, SupervisorError> {
        let dir = match &cfg.dir {
            Some(d) => {
                let dir = MetricsDir::given(d).map_err(|e| {
                    SupervisorError::Config(format!("metrics directory {}: {e}", d.display()))
                })?;
                if !keep_files {
                    clear_stale(d, log)?;
                }
                dir
            }
            None => MetricsDir::private().map_err(SupervisorError::Io)?,
        };
        let std_listener = match inherited {
            // A supervisor re-executed by USR2 takes over the exporter's socket.
            Some(fd) => sys::adopt_socket(fd).map(std::net::TcpListener::from),
            None => std::net::TcpListener::bind(cfg.bind),
        }
        .map_err(|e| SupervisorError::Bind {
            addr: format!("metrics exporter {}", cfg.bind),
            source: e,
        })?;
        std_listener.set_nonblocking(true)?;
        let port = std_listener.local_addr()?.port();
        let listener_fd = std::os::fd::AsRawFd::as_raw_fd(&std_listener);
        let families = Families::new(prefix)
            .map_err(|e| SupervisorError::Config(format!("metric prefix {prefix:?}: {e}")))?;
        let state = Arc::new(Mutex::new(State::default()));
        let collector =
            MultiProcessCollector::new(dir.path().to_path_buf()).on_warning(warn_once(log));
        let source_state = state.clone();
        // The workers' files as text straight from the merge (no families
        // built), then the supervisor's own families.
        let source = Box::new(move |out: &mut Vec<u8>| {
            collector.encode_text_to(out);
            let mut st = lock(&source_state);
            ferrocorn_shm_metrics::encode_text(&families.gather(&mut st), out);
        });
        let exporter = Exporter::with_text(mio::net::TcpListener::from_std(std_listener), source);
        info!(
            log,
            "Serving metrics at http://{}/metrics from {}",
            std::net::SocketAddr::new(cfg.bind.ip(), port),
            dir.path().display()
        );
        Ok(Metrics {
            dir,
            exporter,
            port,
            listener_fd,
            state,
            update_interval: cfg.update_interval.max(Duration::from_millis(10)),
            next_sample: Instant::now(),
            log: log.clone(),
        })
    }

    /// The exporter's listening socket (passed on by USR2).
    pub(crate) fn listener_fd(&self) -> RawFd {
        self.listener_fd
    }

    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn register(&mut self, reg: &mio::Registry, first: usize) -> io::Result<()> {
        self.exporter.register(reg, first)
    }

    pub(crate) fn owns(&self, t: mio::Token) -> bool {
        self.exporter.owns(t)
    }

    pub(crate) fn handle(&mut self, reg: &mio::Registry, ev: &mio::event::Event) {
        self.exporter.handle(reg, ev)
    }

    /// Exporter housekeeping and the peak sample; returns the time until the
    /// next sample is due.
    pub(crate) fn tick(&mut self, reg: &mio::Registry) -> Duration {
        self.exporter.tick(reg);
        let now = Instant::now();
        if now >= self.next_sample {
            let mut st = lock(&self.state);
            for l in st.listeners.iter_mut() {
                if let Some((queued, _)) = l.queue() {
                    l.peak = l.peak.max(queued);
                }
            }
            self.next_sample = now + self.update_interval;
        }
        self.next_sample.saturating_duration_since(now)
    }

    /// The listeners whose queues are exported.
    pub(crate) fn set_listeners(&self, listeners: &[Listener]) {
        let mut st = lock(&self.state);
        let old = std::mem::take(&mut st.listeners);
        for l in listeners {
            let peak = old
                .iter()
                .find(|o| o.label == l.label)
                .map_or(0, |o| o.peak);
            match l.sock.try_clone() {
                Ok(s) => st.listeners.push(ListenerStat {
                    label: l.label.clone(),
                    kind: l.kind,
                    fd: s.into(),
                    peak,
                }),
                Err(e) => warn!(self.log, "cannot watch the queue of {}: {}", l.label, e),
            }
        }
    }

    pub(crate) fn set_workers(&self, alive: usize, target: usize) {
        let mut st = lock(&self.state);
        st.alive = alive;
        st.target = target;
    }

    /// A worker was reaped: drop its live series, fold its counters; count
    /// the restart when it is going to be replaced.
    pub(crate) fn worker_exited(&self, pid: u32, restart: Option<&'static str>) {
        if let Err(e) = mark_process_dead(self.dir.path(), pid) {
            warn!(
                self.log,
                "marking worker {} dead in {}: {}",
                pid,
                self.dir.path().display(),
                e
            );
        }
        if let Some(reason) = restart {
            *lock(&self.state).restarts.entry(reason).or_default() += 1;
        }
    }

    /// In a forked child: close the exporter's sockets and our copies of the
    /// listeners, so they close when the supervisor closes them.
    pub(crate) fn in_child(&self, keep: &[RawFd]) {
        lock(&self.state).listeners.clear();
        sys::close_sockets_with_local_port(self.port, keep);
        // /proc/self/fd shows resolved paths.
        let dir = std::fs::canonicalize(self.dir.path())
            .unwrap_or_else(|_| self.dir.path().to_path_buf());
        sys::close_files_under(&dir, keep);
    }

    /// At exit: remove a private directory.
    pub(crate) fn finish(self) {
        self.dir.finish();
    }
}

/// Remove the `*.db` files of a previous run.
fn clear_stale(dir: &Path, log: &Logger) -> Result<(), SupervisorError> {
    let rd = std::fs::read_dir(dir).map_err(|e| {
        SupervisorError::Config(format!("metrics directory {}: {e}", dir.display()))
    })?;
    let mut n = 0;
    for e in rd.flatten() {
        let p = e.path();
        // Metric files, and files a fold renamed and a crash left behind
        // (`.counter_123.folding`).
        let stale = p.extension().is_some_and(|x| x == "db" || x == "folding");
        if stale && std::fs::remove_file(&p).is_ok() {
            n += 1;
        }
    }
    if n > 0 {
        info!(
            log,
            "removed {} stale metric file(s) from {}",
            n,
            dir.display()
        );
    }
    Ok(())
}

/// Logs each file a scrape skipped (or read in part) once, with the reason,
/// at warning level: a bad file stays bad scrape after scrape, and the log
/// must not fill with it. (Bounded: the record of files already named is
/// forgotten past 4096 of them.)
fn warn_once(log: &Logger) -> impl Fn(&ferrocorn_shm_metrics::Warning) + Send + Sync + 'static {
    let log = log.clone();
    let seen = Mutex::new(std::collections::HashSet::<PathBuf>::new());
    move |w| {
        let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= 4096 {
            seen.clear();
        }
        if seen.insert(w.path.clone()) {
            warn!(log, "metric file {}: {}", w.path.display(), w.reason);
        }
    }
}
