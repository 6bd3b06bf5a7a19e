//! Python WSGI apps (feature `wsgi`): checks, loading, and CPython's fork
//! protocol around the supervisor's forks for `--preload`.

// Preloading and the fork hooks are for the supervisor's forks.
#![cfg_attr(not(feature = "supervisor"), allow(dead_code))]

use std::sync::Arc;

use ferrocorn_worker::App;
use ferrocorn_wsgi::{ForwardedAllow, WsgiApp, WsgiConfig};

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

fn import(c: &Config, logger: &slog::Logger) -> Result<WsgiApp, String> {
    let p = &c.python;
    let spec = p.wsgi_app.as_deref().unwrap_or("");
    ferrocorn_wsgi::initialize(p.virtualenv.as_deref()).map_err(|e| e.to_string())?;
    ferrocorn_wsgi::setup_paths(p.chdir.as_deref(), &p.pythonpath).map_err(|e| e.0)?;
    WsgiApp::load(spec, wsgi_config(c, logger)).map_err(|e| e.0)
}

/// Imports the configured app in this process. `Err` is the traceback (or
/// gunicorn's one-line reason).
pub fn load(c: &Config, logger: &slog::Logger) -> Result<Arc<dyn App>, String> {
    import(c, logger).map(|a| Arc::new(a) as Arc<dyn App>)
}

/// Imports the app in the supervisor (`--preload`).
pub fn preload(c: &Config, logger: &slog::Logger) -> Result<Preloaded, String> {
    import(c, logger).map(Preloaded)
}

/// The preloaded app in a worker, logging to the worker's error log.
pub fn preloaded_app(p: &Preloaded, logger: &slog::Logger) -> Arc<dyn App> {
    Arc::new(p.0.with_logger(logger.clone()))
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
