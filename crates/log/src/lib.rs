//! Logging for pre-fork servers: slog drains that write structlog-compatible
//! console or JSON lines, gunicorn's access-log format, and log files that
//! reopen on demand.
//!
//! # Brief overview
//!
//! - [`LogConfig`] holds the settings: [`Format`] (`default` = colored
//!   console, `json`, `plain`), [`ColorChoice`], [`Level`], and a
//!   [`Destination`] for the error log and, optionally, the access log.
//! - [`Logs::new`] opens the destinations and builds an error logger (a
//!   plain [`slog::Logger`] named `<prefix>.error`) and an [`AccessLog`]
//!   (`<prefix>.access`) that formats an [`AccessRecord`] with a compiled
//!   [`AccessLogFormat`].
//! - [`Logs::reopen`] reopens every file (for `SIGUSR1` after logrotate)
//!   without losing or splitting a line.
//!
//! Lines look like the seed's structlog output. JSON:
//!
//! ```text
//! {"event":"Booting worker with pid: 8","level":"info","logger":"gunicorn.error","pid":8,"tid":140084244772672,"timestamp":"2026-11-25T09:27:47.056397Z"}
//! ```
//!
//! Console (colored when the destination is a terminal):
//!
//! ```text
//! 2026-11-25T09:27:47.056397Z [info     ] Booting worker with pid: 8     [gunicorn.error] pid=8 tid=140084244772672
//! ```
//!
//! `tid` is `pthread_self()` as an integer, what the seed's
//! `threading.get_ident()` reports. Timestamps are UTC with microseconds;
//! gunicorn's own formats (the access log's `t` atom, the plain error log)
//! use local time, as gunicorn does.
//!
//! Differences from the seed's output worth knowing:
//! - JSON is compact (`{"event":"x","level":"info",...}`; Python's
//!   `json.dumps` puts a space after `:` and `,`). Keys, order of the six
//!   seed keys, and value types are the same. The logger's context and the
//!   call site's key-values follow, in the order written (a key written
//!   twice keeps its first place and its last value, as in a Python dict);
//!   `slog::Serde` values become nested JSON.
//! - Messages in the console and plain formats never span lines: control
//!   characters in them are written as `\n`, `\r`, `\xNN` (structlog writes
//!   them raw). JSON escapes them as JSON does.
//! - Console values are rendered as structlog renders Python values: strings
//!   with a space, `=` or a quote in `repr()` quotes, `True`/`False`/`None`.
//!
//! # Writing
//!
//! Every line is rendered into a thread-local buffer and written with one
//! `write(2)` under the destination's mutex. There is no background thread:
//! build [`Logs`] after `fork`, in each process, and nothing is left to
//! flush on exit. (Logs built before a fork still work in the child and
//! stamp the child's pid, provided no other thread held a log's lock at
//! the fork.) A destination that blocks (a full pipe) blocks the logging
//! thread, as in gunicorn; a failed write is counted in
//! [`Logs::dropped_lines`] (and [`AccessLog::dropped_lines`]), never
//! retried; ferrocorn's workers report the access log's count in the error
//! log, at most once a minute.
//!
//! # Features
//!
//! `structured` (default): the console and JSON formats (slog-json). Without
//! it only [`Format::Plain`] exists and asking for the others fails with
//! "structured logs are not built into this binary".
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use ferrocorn_log::{AccessRecord, Destination, Format, LogConfig, Logs, MemoryLog};
//!
//! let error = MemoryLog::new();
//! let access = MemoryLog::new();
//! let config = LogConfig {
//!     format: Format::Plain,
//!     error_log: Destination::Memory(error.clone()),
//!     access_log: Some(Destination::Memory(access.clone())),
//!     access_log_format: r#"%(h)s "%(r)s" %(s)s %(b)s %(D)s"#.to_string(),
//!     ..LogConfig::default()
//! };
//! let logs = Logs::new(&config)?;
//!
//! slog::info!(logs.error(), "Listening at: {}", "http://127.0.0.1:8000"; "workers" => 2);
//! slog::debug!(logs.error(), "not written at the default level (info)");
//!
//! logs.access().expect("access log configured").log(&AccessRecord {
//!     remote: Some("127.0.0.1:50000".parse().unwrap()),
//!     method: "GET",
//!     target: "/search?q=\"x\"",
//!     path: "/search",
//!     query: "q=\"x\"",
//!     version: "HTTP/1.1",
//!     status: 200,
//!     response_bytes: Some(13),
//!     request_time: Duration::from_micros(1500),
//!     request_headers: &[("User-Agent", b"curl/8.5.0")],
//!     response_headers: &[],
//!     pid: std::process::id(),
//! });
//!
//! let errors = error.lines();
//! assert_eq!(errors.len(), 1);
//! assert!(errors[0].ends_with("[INFO] Listening at: http://127.0.0.1:8000 workers=2"));
//! assert_eq!(access.lines(), [r#"127.0.0.1 "GET /search?q=\"x\" HTTP/1.1" 200 13 1500"#]);
//! # Ok::<(), std::io::Error>(())
//! ```
#![deny(missing_docs)]

mod access;
mod config;
mod drain;
mod escape;
#[cfg(feature = "structured")]
mod json;
mod sink;
mod sys;
mod time;

use std::fmt;
use std::io;
use std::sync::Arc;

pub use access::{AccessLogFormat, AccessRecord};

/// The default `prefix`: the first part of every metric name and logger
/// name (`gunicorn_requests_total`, `gunicorn.error`), as gunicorn's. Every
/// crate's default is this one.
pub const DEFAULT_PREFIX: &str = "gunicorn";
pub use config::{
    ColorChoice, DEFAULT_ACCESS_LOG_FORMAT, Destination, Format, Level, LogConfig, ParseError,
    STRUCTURED_NOT_BUILT,
};
pub use sink::{HeldLines, MemoryLog};

use drain::{LineDrain, Style};
use sink::{Sink, Sinks};

/// The logs of one process: an error logger and an optional access log.
///
/// Cheap to clone (an `Arc`); clones write to the same destinations.
#[derive(Clone)]
pub struct Logs {
    inner: Arc<LogsInner>,
}

struct LogsInner {
    config: LogConfig,
    error: slog::Logger,
    error_sink: Arc<Sink>,
    access: Option<AccessLog>,
    sinks: Vec<Arc<Sink>>,
}

impl Logs {
    /// Opens the destinations and builds the loggers.
    ///
    /// Fails with `Unsupported` when the format is not built in, with
    /// `InvalidInput` when the access-log format does not parse, and with
    /// the open error of a log file.
    pub fn new(config: &LogConfig) -> io::Result<Logs> {
        if !config.format.is_available() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                STRUCTURED_NOT_BUILT,
            ));
        }
        let format = AccessLogFormat::parse(&config.access_log_format)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let mut sinks = Sinks::default();
        let error_sink = sinks.get(&config.error_log)?;
        let error_name = logger_name(&config.logger_prefix, "error");
        let error = slog::Logger::root(
            drain_for(config, &error_name, config.level, &error_sink, false),
            slog::o!(),
        );
        let access = match &config.access_log {
            None => None,
            Some(dest) => {
                let sink = sinks.get(dest)?;
                let name = logger_name(&config.logger_prefix, "access");
                // gunicorn logs access lines at info whatever --log-level says.
                let logger = slog::Logger::root(
                    drain_for(config, &name, Level::Info, &sink, true),
                    slog::o!(),
                );
                Some(AccessLog {
                    inner: Arc::new(AccessInner {
                        logger,
                        format,
                        typed_keys: config.format == Format::Json,
                        overhead: LINE_OVERHEAD + name.len(),
                        sink,
                    }),
                })
            }
        };
        Ok(Logs {
            inner: Arc::new(LogsInner {
                config: config.clone(),
                error,
                error_sink,
                access,
                sinks: sinks.into_vec(),
            }),
        })
    }

    /// The error logger, named `<prefix>.error`, filtered at the configured level.
    pub fn error(&self) -> &slog::Logger {
        &self.inner.error
    }

    /// The access log, when one is configured.
    pub fn access(&self) -> Option<&AccessLog> {
        self.inner.access.as_ref()
    }

    /// Another logger named `<prefix>.<suffix>` (for example `app`), writing
    /// to the error log's destination at its level.
    pub fn logger(&self, suffix: &str) -> slog::Logger {
        let config = &self.inner.config;
        let name = logger_name(&config.logger_prefix, suffix);
        slog::Logger::root(
            drain_for(config, &name, config.level, &self.inner.error_sink, false),
            slog::o!(),
        )
    }

    /// A logger named exactly `name` (a Python logger's name, say),
    /// writing to the error log's destination at its level.
    pub fn logger_named(&self, name: &str) -> slog::Logger {
        let config = &self.inner.config;
        slog::Logger::root(
            drain_for(config, name, config.level, &self.inner.error_sink, false),
            slog::o!(),
        )
    }

    /// The settings these logs were built from.
    pub fn config(&self) -> &LogConfig {
        &self.inner.config
    }

    /// Reopens every log file by its path (after logrotate moved it; gunicorn
    /// does this on `SIGUSR1`), after writing the lines this thread holds
    /// ([`HeldLines`]). Each file is swapped under its lock, so every
    /// line lands whole in the old file or in the new one. Standard streams
    /// are left alone. On error the old file stays in use and the first
    /// error is returned after trying every file.
    pub fn reopen(&self) -> io::Result<()> {
        // Lines this thread holds belong to the file being rotated away.
        sink::flush_held();
        let mut first = Ok(());
        for sink in &self.inner.sinks {
            if let Err(e) = sink.reopen()
                && first.is_ok()
            {
                first = Err(e);
            }
        }
        first
    }

    /// Closes the log files of this process (standard streams stay open):
    /// for a forked child that opens its own logs, so that it does not keep
    /// its parent's files open (a file that logrotate moved and deleted
    /// would stay allocated until the child exits). Lines written to a
    /// closed file afterwards are dropped and counted; [`reopen`](Self::reopen)
    /// leaves it closed.
    pub fn close_files(&self) {
        for sink in &self.inner.sinks {
            sink.close();
        }
    }

    /// Writes the access-log lines this thread holds ([`HeldLines`]) and
    /// flushes the destinations. Lines of other threads that hold lines are
    /// written by their own flushes; call this before exit anyway.
    pub fn flush(&self) {
        sink::flush_held();
        for sink in &self.inner.sinks {
            sink.flush();
        }
    }

    /// Lines that could not be written (a full disk, a closed pipe) since start.
    pub fn dropped_lines(&self) -> u64 {
        self.inner.sinks.iter().map(|s| s.dropped()).sum()
    }
}

impl fmt::Debug for Logs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Logs")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// `<prefix>.<suffix>`, or `<suffix>` alone when the prefix is empty.
fn logger_name(prefix: &str, suffix: &str) -> String {
    if prefix.is_empty() {
        suffix.to_string()
    } else {
        format!("{prefix}.{suffix}")
    }
}

fn drain_for(
    config: &LogConfig,
    name: &str,
    level: Level,
    sink: &Arc<Sink>,
    access: bool,
) -> LineDrain {
    let style = match config.format {
        Format::Plain if access => Style::Message,
        Format::Plain => Style::Plain,
        #[cfg(feature = "structured")]
        Format::Console => Style::Console {
            colors: match config.color {
                ColorChoice::Always => true,
                ColorChoice::Never => false,
                ColorChoice::Auto => {
                    sink.is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                }
            },
        },
        #[cfg(feature = "structured")]
        Format::Json => Style::Json(json::JsonFormat::new(name, !access)),
        // `Logs::new` checked availability; unreachable without the feature.
        #[cfg(not(feature = "structured"))]
        Format::Console | Format::Json => Style::Plain,
    };
    LineDrain {
        name: name.into(),
        min: level.to_slog(),
        style,
        sink: Arc::clone(sink),
        holdable: access,
    }
}

/// The access log: one line per request in gunicorn's `access_log_format`.
///
/// In JSON mode the formatted line is the `event` and the request's facts
/// are typed keys too: `method`, `path`, `status` (integer), `bytes`
/// (integer, `null` when unknown) and `duration_s` (seconds, a float).
#[derive(Clone)]
pub struct AccessLog {
    inner: Arc<AccessInner>,
}

struct AccessInner {
    logger: slog::Logger,
    format: AccessLogFormat,
    typed_keys: bool,
    /// Bytes a line has besides its message (and its `path` key in JSON),
    /// at most: see [`LINE_OVERHEAD`].
    overhead: usize,
    sink: Arc<sink::Sink>,
}

/// What a line holds besides its message and the logger's name, at most:
/// the timestamp, level, pid, tid and the console's colors, or JSON's keys
/// with the access line's typed values (but `path`, counted apart).
const LINE_OVERHEAD: usize = 320;

/// Bytes of `s` once escaped in a JSON string (a control byte as `\u00XX`).
fn json_len(s: &[u8]) -> usize {
    s.iter()
        .map(|&b| match b {
            b'"' | b'\\' => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum()
}

/// The longest prefix of `s` (cut where [`sink::safe_cut`] may) whose JSON
/// form, or plain bytes, fits in `room`.
fn prefix_within(s: &[u8], room: usize, json: bool) -> usize {
    let max = if json {
        let mut cost = 0;
        s.iter()
            .position(|&b| {
                cost += json_len(&[b]);
                cost > room
            })
            .unwrap_or(s.len())
    } else {
        room.min(s.len())
    };
    sink::safe_cut(s, max)
}

/// `s[..keep]` followed by the cut marker, as a string.
fn cut_with_marker(s: &[u8], keep: usize, into: &mut Vec<u8>) {
    into.extend_from_slice(&s[..keep]);
    into.extend_from_slice(sink::cut_marker(s.len() - keep).as_bytes());
}

thread_local! {
    static ACCESS_LINE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl AccessLog {
    /// Lines of this log's destination that could not be written (a full
    /// disk, a closed pipe) since start, access lines or others sharing it.
    pub fn dropped_lines(&self) -> u64 {
        self.inner.sink.dropped()
    }

    /// Where the lines go: a path, `stdout` or `stderr`.
    pub fn destination(&self) -> String {
        self.inner.sink.destination().to_string()
    }

    /// Formats and writes the line for one request.
    ///
    /// A line going anywhere but a regular file (a pipe shared by every
    /// worker) is kept within `PIPE_BUF` (4096 bytes), so that one
    /// `write(2)` places it whole: a longer access line (an 8 KB
    /// `User-Agent`) is cut, ending in `[...N bytes cut]`, and in JSON the
    /// line stays valid JSON with every key (a long `path` key is cut too).
    pub fn log(&self, rec: &AccessRecord<'_>) {
        let write = |buf: &mut Vec<u8>| {
            buf.clear();
            self.inner.format.render(rec, buf);
            let mut cut_path = Vec::new();
            let mut path = rec.path;
            // JSON at most doubles a string: a shorter line always fits.
            let longest = 2 * (buf.len() + rec.path.len()) + self.inner.overhead;
            if longest > sink::PIPE_BUF && self.inner.sink.cuts_long_lines() {
                path = self.bound(buf, rec.path, &mut cut_path);
            }
            // Every atom escapes what is not UTF-8, so this never fails.
            let line = std::str::from_utf8(buf).unwrap_or("<access line not UTF-8>");
            if self.inner.typed_keys {
                // Listed in reverse: slog serializes the last key first.
                slog::info!(self.inner.logger, "{}", line;
                    "duration_s" => rec.request_time.as_secs_f64(),
                    "bytes" => rec.response_bytes,
                    "status" => rec.status,
                    "path" => path,
                    "method" => rec.method,
                );
            } else {
                slog::info!(self.inner.logger, "{}", line);
            }
        };
        let done = ACCESS_LINE.try_with(|b| match b.try_borrow_mut() {
            Ok(mut b) => {
                write(&mut b);
                if b.capacity() > 64 * 1024 {
                    *b = Vec::new();
                }
                true
            }
            Err(_) => false,
        });
        if done != Ok(true) {
            write(&mut Vec::new());
        }
    }

    /// Cuts the rendered line in `buf` (and in JSON the `path` key, into
    /// `cut_path`) so that the written line fits in `PIPE_BUF`; the path
    /// to log.
    fn bound<'a>(&self, buf: &mut Vec<u8>, path: &'a str, cut_path: &'a mut Vec<u8>) -> &'a str {
        let json = self.inner.typed_keys;
        let mut room = sink::PIPE_BUF.saturating_sub(self.inner.overhead);
        let mut path = path;
        if json {
            // The path shows in the line too: its key gets at most 1 KiB.
            const PATH_ROOM: usize = 1024;
            if json_len(path.as_bytes()) > PATH_ROOM {
                let keep = prefix_within(path.as_bytes(), PATH_ROOM - 32, true);
                cut_with_marker(path.as_bytes(), keep, cut_path);
                path = std::str::from_utf8(cut_path).unwrap_or("-");
            }
            room = room.saturating_sub(json_len(path.as_bytes()));
        }
        if (if json { json_len(buf) } else { buf.len() }) > room {
            let marker = sink::cut_marker(buf.len()).len();
            let room = room.saturating_sub(marker * if json { 2 } else { 1 });
            let keep = prefix_within(buf, room, json);
            let line = std::mem::take(buf);
            cut_with_marker(&line, keep, buf);
        }
        path
    }

    /// The compiled format.
    pub fn format(&self) -> &AccessLogFormat {
        &self.inner.format
    }
}

impl fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessLog")
            .field("format", &self.inner.format.as_str())
            .finish_non_exhaustive()
    }
}
