//! Prints a few lines in every format, for eyeballing against structlog.
use std::time::Duration;

use ferrocorn_log::{AccessRecord, ColorChoice, Destination, Format, LogConfig, Logs};

fn main() -> std::io::Result<()> {
    let format: Format = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("default")
        .parse()
        .map_err(std::io::Error::other)?;
    let config = LogConfig {
        format,
        color: ColorChoice::Auto,
        level: ferrocorn_log::Level::Debug,
        error_log: Destination::Stderr,
        access_log: Some(Destination::Stdout),
        ..LogConfig::default()
    };
    let logs = Logs::new(&config)?;
    slog::info!(logs.error(), "Starting gunicorn {}", "23.0.0");
    slog::warn!(logs.error(), "short"; "b" => true, "a" => 1, "s" => "x y", "f" => 0.5, "n" => None::<u8>);
    slog::debug!(logs.error(), "dbg");
    slog::crit!(logs.error(), "WORKER TIMEOUT (pid:{})", 12);
    if let Some(access) = logs.access() {
        access.log(&AccessRecord {
            remote: Some("127.0.0.1:5000".parse().unwrap()),
            method: "GET",
            target: "/a?b=c",
            path: "/a",
            query: "b=c",
            version: "HTTP/1.1",
            status: 200,
            response_bytes: Some(12),
            request_time: Duration::from_micros(1234),
            request_headers: &[("User-Agent", b"curl/8")],
            response_headers: &[],
            pid: std::process::id(),
        });
    }
    Ok(())
}
