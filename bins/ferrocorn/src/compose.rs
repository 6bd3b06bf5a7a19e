//! Turns a [`Config`] into the parts' own settings and builds a worker:
//! shared by the supervised (forked) and the single-process modes.

use std::sync::Arc;

use ferrocorn_log::{ColorChoice, Destination, Format, Level, LogConfig, Logs};
use ferrocorn_worker::{Listener, Worker, WorkerConfig};

use crate::app;
use crate::config::Config;

/// The log crate's settings.
pub fn log_config(c: &Config) -> Result<LogConfig, String> {
    let format: Format = c
        .log_format
        .parse()
        .map_err(|e| format!("log_format: {e}"))?;
    let level: Level = c.loglevel.parse().map_err(|e| format!("loglevel: {e}"))?;
    let color: ColorChoice = c.log_color.parse().map_err(|e| format!("log_color: {e}"))?;
    let error_log =
        Destination::parse_error_log(&c.errorlog).map_err(|e| format!("errorlog: {e}"))?;
    let access_log = match &c.accesslog {
        None => None,
        Some(a) => Some(a.parse().map_err(|e| format!("accesslog: {e}"))?),
    };
    Ok(LogConfig {
        format,
        color,
        level,
        error_log,
        access_log,
        access_log_format: c.access_log_format.clone(),
        logger_prefix: c.prefix.clone(),
    })
}

/// Opens the logs of this process (call it after fork, in each process).
pub fn open_logs(c: &Config) -> Result<Logs, String> {
    let config = log_config(c)?;
    Logs::new(&config).map_err(|e| {
        let dest = |d: &Destination| d.to_string();
        format!(
            "cannot open the logs (error log {}{}): {e}",
            dest(&config.error_log),
            config
                .access_log
                .as_ref()
                .map(|d| format!(", access log {}", dest(d)))
                .unwrap_or_default()
        )
    })
}

/// The worker's settings.
pub fn worker_config(c: &Config) -> WorkerConfig {
    WorkerConfig {
        threads: c.threads,
        worker_connections: c.worker_connections,
        keepalive: c.keepalive,
        timeout: c.timeout,
        graceful_timeout: c.graceful_timeout,
        max_requests: c.max_requests,
        max_requests_jitter: c.max_requests_jitter,
        limit_request_line: c.limit_request_line,
        limit_request_fields: c.limit_request_fields,
        limit_request_field_size: c.limit_request_field_size,
        limit_request_body: c.limit_request_body,
        header_timeout: c.header_timeout,
        stall_timeout: c.stall_timeout,
        health_path: c.health_path.clone(),
        ..WorkerConfig::default()
    }
}

/// A worker serving the configured built-in app on `listeners`, logging to
/// `logs`, with its signal handling on (TERM graceful, INT/QUIT quick,
/// USR1 reopen logs).
pub fn build_worker(c: &Config, listeners: Vec<Listener>, logs: &Logs) -> std::io::Result<Worker> {
    build_worker_serving(c, listeners, logs, app::builtin(c.app))
}

/// [`build_worker`] serving `app` (a WSGI app) instead of the built-in one.
pub fn build_worker_serving(
    c: &Config,
    listeners: Vec<Listener>,
    logs: &Logs,
    app: Arc<dyn ferrocorn_worker::App>,
) -> std::io::Result<Worker> {
    let reopen = logs.clone();
    let log = logs.error().clone();
    let mut worker = Worker::new(worker_config(c), listeners, app)?
        .logger(logs.error().clone())
        .handle_signals(true)
        .on_reopen_logs(Arc::new(move || {
            if let Err(e) = reopen.reopen() {
                slog::error!(log, "reopening log files failed: {}", e);
            }
        }));
    if let Some(access) = logs.access() {
        worker = worker.access_log(access.clone());
    }
    Ok(worker)
}
