//! Python WSGI apps (feature `wsgi`): checks, loading, and CPython's fork
//! protocol around the supervisor's forks for `--preload`.

// Preloading and the fork hooks are for the supervisor's forks.
#![cfg_attr(not(feature = "supervisor"), allow(dead_code))]

use std::path::Path;
use std::sync::Arc;

use ferrocorn_log::Logs;
use ferrocorn_worker::App;
use ferrocorn_wsgi::{ForwardedAllow, GilWait, PythonLogging, WsgiApp, WsgiConfig};

use crate::config::Config;

/// An app imported in the supervisor (`--preload`).
pub struct Preloaded(WsgiApp);

/// Checks what can be checked without importing anything: the
/// virtualenv's Python version against the linked one, the trusted proxies.
pub fn check(c: &Config) -> Result<(), String> {
    let p = &c.python;
    if p.wsgi_app.is_none() {
        return Ok(());
    }
    if let Some(v) = &p.virtualenv {
        ferrocorn_wsgi::check_virtualenv(v).map_err(|e| e.to_string())?;
    }
    p.forwarded_allow_ips
        .parse::<ForwardedAllow>()
        .map_err(|e| format!("invalid value for `forwarded_allow_ips`: {e}"))?;
    Ok(())
}

/// Sets the `--env` variables in this process; call while it has one
/// thread: in the supervisor before any fork (workers inherit them), and in
/// a new worker right after its fork (a HUP's new values).
pub fn apply_env(c: &Config) {
    for (k, v) in &c.python.raw_env {
        // SAFETY: called while this process has one thread (main before
        // any thread exists; a worker right after the fork, before its pool
        // and before Python's threads, which a fork does not copy), so no
        // other thread reads the environment concurrently.
        unsafe { std::env::set_var(k, v) };
    }
}

/// `{prefix}_python_gil_wait_seconds` in the worker's metrics directory.
#[cfg(feature = "metrics")]
fn gil_wait(c: &Config, metrics_dir: Option<&Path>) -> Option<GilWait> {
    let dir = metrics_dir?;
    let h = ferrocorn_shm_metrics::Registry::new(dir)
        .histogram(
            &format!("{}_python_gil_wait_seconds", c.prefix),
            "How long a pool thread waited for the GIL before calling the app, per request.",
            &[],
            &GIL_WAIT_BUCKETS,
        )
        .with_label_values(&[])
        .ok()?;
    Some(GilWait(Arc::new(move |d| h.observe(d.as_secs_f64()))))
}

#[cfg(not(feature = "metrics"))]
fn gil_wait(_: &Config, _: Option<&Path>) -> Option<GilWait> {
    None
}

/// From 50 µs (no contention) to 5 s (a thread holding the GIL in C code).
#[cfg(feature = "metrics")]
const GIL_WAIT_BUCKETS: [f64; 14] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0,
];

fn wsgi_config(c: &Config, logger: &slog::Logger) -> WsgiConfig {
    let p = &c.python;
    WsgiConfig {
        multithread: c.threads > 1,
        multiprocess: c.workers > 1,
        forwarded_allow_ips: p.forwarded_allow_ips.parse().unwrap_or_default(),
        secure_scheme_headers: p.secure_scheme_headers.clone(),
        logger: logger.clone(),
        ..WsgiConfig::default()
    }
}

/// Where the app's prometheus_client writes: in a worker, the metrics
/// directory (`None`: metrics are off, prometheus_client left alone); in
/// the supervisor before a `--preload` import, whether metrics are on and
/// the directory if it is known yet.
#[derive(Clone, Copy)]
pub enum PromDir<'a> {
    /// In a worker.
    Worker(Option<&'a Path>),
    /// In the supervisor, before the fork.
    Supervisor(Option<Option<&'a Path>>),
}

fn setup_prometheus(dir: PromDir<'_>) -> Result<(), String> {
    let done = match dir {
        PromDir::Worker(Some(d)) => ferrocorn_wsgi::setup_prometheus(Some(d), false),
        PromDir::Supervisor(Some(d)) => ferrocorn_wsgi::setup_prometheus(d, true),
        PromDir::Worker(None) | PromDir::Supervisor(None) => return Ok(()),
    };
    done.map(drop).map_err(|e| e.0)
}

/// The app's Python logging into `logs` (the root logger at `loglevel`).
fn setup_logging(c: &Config, logs: Option<&Logs>) -> Result<(), String> {
    let Some(logs) = logs else {
        return Ok(());
    };
    let named = logs.clone();
    ferrocorn_wsgi::setup_logging(PythonLogging {
        named: Arc::new(move |name: &str| named.logger_named(name)),
        level: c.loglevel.to_uppercase(),
        capture_output: c.python.capture_output,
    })
    .map_err(|e| e.0)
}

fn import(
    c: &Config,
    logs: Option<&Logs>,
    logger: &slog::Logger,
    dir: PromDir<'_>,
) -> Result<WsgiApp, String> {
    let p = &c.python;
    let spec = p.wsgi_app.as_deref().unwrap_or("");
    ferrocorn_wsgi::initialize(p.virtualenv.as_deref()).map_err(|e| e.to_string())?;
    ferrocorn_wsgi::setup_paths(p.chdir.as_deref(), &p.pythonpath).map_err(|e| e.0)?;
    setup_prometheus(dir)?;
    setup_logging(c, logs)?;
    let mut config = wsgi_config(c, logger);
    if let PromDir::Worker(d) = dir {
        config.gil_wait = gil_wait(c, d);
    }
    WsgiApp::load(spec, config).map_err(|e| e.0)
}

/// Imports the configured app in this process (a worker writing its
/// metrics in `metrics_dir`). `Err` is the traceback (or gunicorn's
/// one-line reason).
pub fn load(
    c: &Config,
    logs: Option<&Logs>,
    logger: &slog::Logger,
    metrics_dir: Option<&Path>,
) -> Result<Arc<dyn App>, String> {
    let app = import(c, logs, logger, PromDir::Worker(metrics_dir))?;
    watch_abort(logger);
    Ok(Arc::new(app))
}

/// At a WORKER TIMEOUT's SIGABRT: the stacks of the threads in a request.
fn watch_abort(logger: &slog::Logger) {
    if let Err(e) = ferrocorn_wsgi::dump_stacks_on_abort(logger.clone()) {
        slog::warn!(logger, "no Python stacks at a worker timeout: {}", e);
    }
}

/// Imports the app in the supervisor (`--preload`).
pub fn preload(c: &Config, logs: &Logs) -> Result<Preloaded, String> {
    let dir = c.metrics.as_ref().map(|m| m.dir.as_deref());
    import(c, Some(logs), logs.error(), PromDir::Supervisor(dir)).map(Preloaded)
}

/// The preloaded app in a worker, logging to the worker's error log, its
/// prometheus_client values now written in `metrics_dir`.
pub fn preloaded_app(
    p: &Preloaded,
    c: &Config,
    logs: &Logs,
    metrics_dir: Option<&Path>,
) -> Result<Arc<dyn App>, String> {
    let logger = logs.error();
    setup_prometheus(PromDir::Worker(metrics_dir))?;
    setup_logging(c, Some(logs))?;
    watch_abort(logger);
    let app = p.0.with_logger(logger.clone());
    Ok(Arc::new(app.with_gil_wait(gil_wait(c, metrics_dir))))
}

/// Before the supervisor forks (the GIL taken, `register_at_fork` before-hooks).
pub fn before_fork() {
    ferrocorn_wsgi::fork::before_fork();
}

/// In the supervisor after a fork.
pub fn after_fork_parent() {
    ferrocorn_wsgi::fork::after_fork_parent();
}

/// In the new worker after the fork.
pub fn after_fork_child() {
    ferrocorn_wsgi::fork::after_fork_child();
}

/// When a worker is done serving: the app's `atexit` functions.
pub fn at_exit() {
    ferrocorn_wsgi::run_atexit();
}
