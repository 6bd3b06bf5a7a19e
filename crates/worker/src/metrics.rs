//! The worker's shm metrics (feature `metrics`): the seed's worker gauges,
//! written as they change, a request counter and latency histogram, the
//! counter of connections closed before their request was complete, and
//! the accept-queue wait histogram. Without the feature every call is a
//! no-op.

/// Bucket bounds of `{prefix}_accept_queue_wait_seconds`: 1 ms (about the
/// resolution of the kernel's timestamps) to 10 s.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) const ACCEPT_WAIT_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Methods that get their own label value; anything else counts as `other`
/// (a client must not be able to create series at will).
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
];

#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
fn method_index(method: &str) -> usize {
    METHODS
        .iter()
        .position(|m| *m == method)
        .unwrap_or(METHODS.len())
}

#[cfg(feature = "metrics")]
mod enabled {
    use std::cell::RefCell;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::Duration;

    use ferrocorn_shm_metrics::{
        Counter, CounterVec, DEFAULT_BUCKETS, Gauge, GaugeMode, Histogram, HistogramVec, Registry,
    };

    use super::{ACCEPT_WAIT_BUCKETS, METHODS, method_index};

    pub(crate) struct Inner {
        active_connections: Gauge,
        active_threads: Gauge,
        pending_requests: Gauge,
        requests: CounterVec,
        /// Tells this instance's entries apart in the threads' caches.
        id: u64,
        durations: Vec<Histogram>,
        /// For the one error when a new series cannot be added to the
        /// metric file (a full disk): the requests it would count are not.
        logger: slog::Logger,
        requests_name: String,
        lost_said: AtomicBool,
        closed_early: Option<Counter>,
        accept_wait: HistogramVec,
    }

    /// The accept-queue wait histogram of one listener.
    #[derive(Clone)]
    pub(crate) struct AcceptWait(Histogram);

    impl AcceptWait {
        pub(crate) fn observe(&self, waited: Duration) {
            self.0.observe(waited.as_secs_f64());
        }
    }

    /// Instance ids (never reused, unlike addresses).
    static NEXT_ID: AtomicU64 = AtomicU64::new(0);

    thread_local! {
        /// Each thread's request-counter handles by (instance, method, status):
        /// a handful of entries, found without a lock on the request path.
        static COUNTERS: RefCell<Vec<(u64, usize, u16, Counter)>> = const { RefCell::new(Vec::new()) };
    }

    /// The worker's metric handles.
    #[derive(Clone, Default)]
    pub(crate) struct Metrics {
        inner: Option<Arc<Inner>>,
    }

    impl Metrics {
        pub(crate) fn new(
            registry: Option<&Registry>,
            prefix: &str,
            config: &crate::WorkerConfig,
            logger: &slog::Logger,
        ) -> Metrics {
            let Some(registry) = registry else {
                return Metrics::default();
            };
            match Self::build(registry, prefix, config, logger) {
                Ok(inner) => Metrics {
                    inner: Some(Arc::new(inner)),
                },
                Err(e) => {
                    slog::error!(logger, "cannot create the worker metrics: {}", e);
                    Metrics::default()
                }
            }
        }

        fn build(
            registry: &Registry,
            prefix: &str,
            config: &crate::WorkerConfig,
            logger: &slog::Logger,
        ) -> std::io::Result<Inner> {
            // LiveAll: one series per worker pid, gone when the worker dies.
            let gauge = |name: &str, help: &str| {
                registry
                    .gauge(&format!("{prefix}_{name}"), help, &[], GaugeMode::LiveAll)
                    .with_label_values(&[])
            };
            let max_conns = gauge(
                "max_worker_connections",
                "Maximum number of connections a worker holds.",
            )?;
            max_conns.set(config.worker_connections as f64);
            let max_threads = gauge(
                "max_worker_threads",
                "Number of threads running the application in a worker.",
            )?;
            max_threads.set(config.threads.max(1) as f64);
            let active_connections = gauge(
                "active_worker_connections",
                "Connections a worker holds now.",
            )?;
            active_connections.set(0.0);
            let active_threads = gauge(
                "active_worker_threads",
                "Worker threads running a request now.",
            )?;
            active_threads.set(0.0);
            let pending_requests = gauge(
                "pending_requests",
                "Requests read by a worker and not yet answered.",
            )?;
            pending_requests.set(0.0);
            let requests_name = format!("{prefix}_requests");
            let requests = registry.counter(
                &requests_name,
                "Requests answered, by method and status.",
                &["method", "status"],
            );
            let hist = registry.histogram(
                &format!("{prefix}_request_duration_seconds"),
                "Time to answer a request, by method.",
                &["method"],
                &DEFAULT_BUCKETS,
            );
            let mut durations = Vec::with_capacity(METHODS.len() + 1);
            for m in METHODS.iter().copied().chain(["other"]) {
                durations.push(hist.with_label_values(&[m])?);
            }
            // Created at 0, so that rate() and increase() see the first one.
            let closed_early = registry
                .counter(
                    &format!("{prefix}_connections_closed_early"),
                    "Connections the client closed after sending part of a request head (or of the body the worker waits for), before any response: not requests.",
                    &[],
                )
                .with_label_values(&[])
                .ok();
            let accept_wait = registry.histogram(
                &format!("{prefix}_accept_queue_wait_seconds"),
                "Time a connection waited in the listen queue before a worker accepted it (a lower bound, from TCP_INFO at accept).",
                &["listener"],
                &ACCEPT_WAIT_BUCKETS,
            );
            Ok(Inner {
                active_connections,
                active_threads,
                pending_requests,
                requests,
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                durations,
                logger: logger.clone(),
                requests_name,
                lost_said: AtomicBool::new(false),
                closed_early,
                accept_wait,
            })
        }

        /// A client closed its connection before its request was complete.
        pub(crate) fn closed_early(&self) {
            if let Some(c) = self.inner.as_ref().and_then(|i| i.closed_early.as_ref()) {
                c.inc();
            }
        }

        /// The accept-queue wait histogram of the listener labelled
        /// `listener`; `None` without metrics.
        pub(crate) fn accept_wait(&self, listener: &str) -> Option<AcceptWait> {
            let i = self.inner.as_ref()?;
            match i.accept_wait.with_label_values(&[listener]) {
                Ok(h) => Some(AcceptWait(h)),
                Err(e) => {
                    slog::error!(
                        i.logger,
                        "cannot add the accept queue wait of {} to the metric files: {}",
                        listener,
                        e
                    );
                    None
                }
            }
        }

        pub(crate) fn active_connections(&self, n: usize) {
            if let Some(i) = &self.inner {
                i.active_connections.set(n as f64);
            }
        }
        pub(crate) fn active_threads(&self, n: usize) {
            if let Some(i) = &self.inner {
                i.active_threads.set(n as f64);
            }
        }
        pub(crate) fn pending_requests(&self, n: usize) {
            if let Some(i) = &self.inner {
                i.pending_requests.set(n as f64);
            }
        }
        pub(crate) fn request(&self, method: &str, status: u16, took: Duration) {
            let Some(i) = &self.inner else {
                return;
            };
            let m = method_index(method);
            i.durations[m].observe(took.as_secs_f64());
            COUNTERS.with(|cache| {
                let mut cache = cache.borrow_mut();
                if let Some((.., c)) = cache
                    .iter()
                    .find(|(id, cm, cs, _)| *id == i.id && *cm == m && *cs == status)
                {
                    c.inc();
                    return;
                }
                let name = METHODS.get(m).copied().unwrap_or("other");
                match i.requests.with_label_values(&[name, &status.to_string()]) {
                    Ok(c) => {
                        c.inc();
                        // Entries of instances gone from this thread go too.
                        cache.retain(|e| e.0 == i.id);
                        cache.push((i.id, m, status, c));
                    }
                    Err(e) if !i.lost_said.swap(true, Ordering::Relaxed) => {
                        slog::error!(
                            i.logger,
                            "cannot add {}_total{{method=\"{}\",status=\"{}\"}} to the metric files: {}; requests without a series go uncounted",
                            i.requests_name,
                            name,
                            status,
                            e
                        );
                    }
                    Err(_) => {}
                }
            });
        }
    }
}

#[cfg(feature = "metrics")]
pub(crate) use enabled::{AcceptWait, Metrics};

/// The worker's metric handles: no-op without the `metrics` feature.
#[cfg(not(feature = "metrics"))]
#[derive(Clone, Default)]
pub(crate) struct Metrics {}

#[cfg(not(feature = "metrics"))]
impl Metrics {
    pub(crate) fn active_connections(&self, _n: usize) {}
    pub(crate) fn active_threads(&self, _n: usize) {}
    pub(crate) fn pending_requests(&self, _n: usize) {}
    pub(crate) fn request(&self, _method: &str, _status: u16, _took: std::time::Duration) {}
    pub(crate) fn closed_early(&self) {}
    pub(crate) fn accept_wait(&self, _listener: &str) -> Option<AcceptWait> {
        None
    }
}

/// No accept-queue wait histogram without the `metrics` feature.
#[cfg(not(feature = "metrics"))]
#[derive(Clone)]
pub(crate) struct AcceptWait {}
