//! Built without the `wsgi` feature: no Python. The config already refuses
//! a WSGI app ("not built into this binary"); these keep the callers'
//! signatures.

// Preloading and the fork hooks are for the supervisor's forks.
#![cfg_attr(not(feature = "supervisor"), allow(dead_code))]

use std::sync::Arc;

use ferrocorn_worker::App;

use crate::config::Config;

/// Never made: nothing can be preloaded without Python.
pub enum Preloaded {}

const NOT_BUILT: &str = "WSGI apps are not built into this binary (feature `wsgi`)";

/// Nothing to check.
pub fn check(_: &Config) -> Result<(), String> {
    Ok(())
}

/// Sets the `--env` variables in this process (as with Python).
pub fn apply_env(c: &Config) {
    for (k, v) in &c.python.raw_env {
        // SAFETY: called from main before any thread exists.
        unsafe { std::env::set_var(k, v) };
    }
}

/// Fails: no Python.
pub fn load(
    _: &Config,
    _: Option<&ferrocorn_log::Logs>,
    _: &slog::Logger,
    _: Option<&std::path::Path>,
) -> Result<Arc<dyn App>, String> {
    Err(NOT_BUILT.into())
}

/// Fails: no Python.
pub fn preload(_: &Config, _: &ferrocorn_log::Logs) -> Result<Preloaded, String> {
    Err(NOT_BUILT.into())
}

/// Unreachable (no `Preloaded` exists).
pub fn preloaded_app(
    p: &Preloaded,
    _: &Config,
    _: &ferrocorn_log::Logs,
    _: Option<&std::path::Path>,
) -> Result<Arc<dyn App>, String> {
    match *p {}
}

/// Nothing to do.
pub fn before_fork() {}

/// Nothing to do.
pub fn after_fork_parent() {}

/// Nothing to do.
pub fn after_fork_child() {}

/// Nothing to do.
pub fn at_exit() {}
