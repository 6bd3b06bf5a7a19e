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

/// The worker's settings: those whose entry in `settings.rs` says `worker:`.
pub fn worker_config(c: &Config) -> WorkerConfig {
    let mut worker = WorkerConfig::default();
    c.settings.to_worker(&mut worker);
    worker
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::*;

    #[test]
    fn every_worker_setting_reaches_the_worker() {
        let argv = [
            "ferrocorn",
            "--threads=3",
            "--worker-connections=7",
            "--keep-alive=11",
            "--timeout=13",
            "--graceful-timeout=17",
            "--max-requests=19",
            "--max-requests-jitter=23",
            "--limit-request-line=29",
            "--limit-request-fields=31",
            "--limit-request-field-size=37",
            "--limit-request-body=41",
            "--header-timeout=43",
            "--stall-timeout=47",
            "--health-path=/hz",
        ];
        let args = crate::cli::Cli::try_parse_from(argv).unwrap().serve;
        let c = Config::load(&args, &|_| None).unwrap();
        let w = worker_config(&c);
        let secs = Duration::from_secs;
        assert_eq!(w.threads, 3);
        assert_eq!(w.worker_connections, 7);
        assert_eq!(w.keepalive, secs(11));
        assert_eq!(w.timeout, secs(13));
        assert_eq!(w.graceful_timeout, secs(17));
        assert_eq!(w.max_requests, 19);
        assert_eq!(w.max_requests_jitter, 23);
        assert_eq!(w.limit_request_line, 29);
        assert_eq!(w.limit_request_fields, 31);
        assert_eq!(w.limit_request_field_size, 37);
        assert_eq!(w.limit_request_body, 41);
        assert_eq!(w.header_timeout, secs(43));
        assert_eq!(w.stall_timeout, secs(47));
        assert_eq!(w.health_path.as_deref(), Some("/hz"));
        // What no setting sets keeps the worker's default.
        assert_eq!(w.inline, WorkerConfig::default().inline);
    }
}
