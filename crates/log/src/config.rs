//! Settings: format, level, destinations, colors.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::sink::MemoryLog;

/// The message a build without the `structured` feature gives when asked for
/// the console or JSON format.
pub const STRUCTURED_NOT_BUILT: &str = "structured logs are not built into this binary";

/// gunicorn's default `access_log_format`.
pub const DEFAULT_ACCESS_LOG_FORMAT: &str =
    r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#;

/// How lines are laid out.
///
/// Parsed from the seed's `LOGGING_FORMATTER_NAME` values: `default` (the
/// colored console format) and `json`, plus `plain` (gunicorn's own
/// error-log format). `console` is accepted as another name for `default`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// structlog's `ConsoleRenderer` layout: timestamp, `[level]`, event,
    /// `[logger]`, sorted `key=value` pairs; colored when asked or on a terminal.
    Console,
    /// One JSON object per line with structlog's keys (`event`, `level`,
    /// `logger`, `pid`, `tid`, `timestamp`) and the call site's key-values.
    Json,
    /// gunicorn's error-log format `[%Y-%m-%d %H:%M:%S %z] [pid] [LEVEL] message`;
    /// access lines are the formatted line alone. Always built.
    Plain,
}

impl Format {
    /// Whether this build can write the format (Console and Json need the
    /// `structured` feature).
    pub fn is_available(self) -> bool {
        match self {
            Format::Plain => true,
            Format::Console | Format::Json => cfg!(feature = "structured"),
        }
    }

    /// The name `FromStr` accepts for it (`default`, `json`, `plain`).
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Console => "default",
            Format::Json => "json",
            Format::Plain => "plain",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Format {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let format = match s.trim().to_ascii_lowercase().as_str() {
            "default" | "console" => Format::Console,
            "json" => Format::Json,
            "plain" => Format::Plain,
            _ => {
                return Err(ParseError::new(format!(
                    "unknown log format {s:?} (expected default, json or plain)"
                )));
            }
        };
        if !format.is_available() {
            return Err(ParseError::new(STRUCTURED_NOT_BUILT.to_string()));
        }
        Ok(format)
    }
}

/// The least severe level written to the error log (gunicorn's `--log-level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// `debug`
    Debug,
    /// `info` (gunicorn's default)
    Info,
    /// `warning` (`warn` is accepted too)
    Warning,
    /// `error`
    Error,
    /// `critical`
    Critical,
}

impl Level {
    /// structlog's lowercase name (`add_log_level`): `debug`, `info`,
    /// `warning`, `error`, `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Error => "error",
            Level::Critical => "critical",
        }
    }

    /// Python logging's `levelname`: `DEBUG`, `INFO`, `WARNING`, `ERROR`, `CRITICAL`.
    pub fn as_upper_str(self) -> &'static str {
        match self {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
            Level::Critical => "CRITICAL",
        }
    }

    /// The slog level of the same severity.
    pub fn to_slog(self) -> slog::Level {
        match self {
            Level::Debug => slog::Level::Debug,
            Level::Info => slog::Level::Info,
            Level::Warning => slog::Level::Warning,
            Level::Error => slog::Level::Error,
            Level::Critical => slog::Level::Critical,
        }
    }

    /// The level of a slog record (`Trace` counts as `Debug`).
    pub fn from_slog(level: slog::Level) -> Level {
        match level {
            slog::Level::Critical => Level::Critical,
            slog::Level::Error => Level::Error,
            slog::Level::Warning => Level::Warning,
            slog::Level::Info => Level::Info,
            slog::Level::Debug | slog::Level::Trace => Level::Debug,
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Level {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // gunicorn lowercases the name; unlike gunicorn (which silently falls
        // back to info), an unknown name is an error.
        match s.trim().to_ascii_lowercase().as_str() {
            "debug" => Ok(Level::Debug),
            "info" => Ok(Level::Info),
            "warning" | "warn" => Ok(Level::Warning),
            "error" => Ok(Level::Error),
            "critical" => Ok(Level::Critical),
            _ => Err(ParseError::new(format!(
                "unknown log level {s:?} (expected debug, info, warning, error or critical)"
            ))),
        }
    }
}

/// Where a log's lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// Standard output (file descriptor 1).
    Stdout,
    /// Standard error (file descriptor 2).
    Stderr,
    /// A file, opened for appending (created if missing) and reopened by
    /// [`Logs::reopen`](crate::Logs::reopen).
    File(PathBuf),
    /// An in-memory buffer, for tests and embedding.
    Memory(MemoryLog),
}

impl Destination {
    /// Parses an `--error-logfile` value: like [`FromStr`], except that `-`
    /// means standard *error*, as in gunicorn.
    pub fn parse_error_log(s: &str) -> Result<Destination, ParseError> {
        if s == "-" {
            Ok(Destination::Stderr)
        } else {
            s.parse()
        }
    }
}

impl FromStr for Destination {
    type Err = ParseError;

    /// `-` (and `/dev/stdout`) = standard output, `/dev/stderr` = standard
    /// error, anything else a file path. This is `--access-logfile`'s reading;
    /// see [`Destination::parse_error_log`] for `--error-logfile`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" => Err(ParseError::new("empty log destination".to_string())),
            "-" | "/dev/stdout" => Ok(Destination::Stdout),
            "/dev/stderr" => Ok(Destination::Stderr),
            path => Ok(Destination::File(PathBuf::from(path))),
        }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Stdout => f.write_str("stdout"),
            Destination::Stderr => f.write_str("stderr"),
            Destination::File(path) => write!(f, "{}", path.display()),
            Destination::Memory(_) => f.write_str("memory"),
        }
    }
}

/// Whether the console format uses colors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ColorChoice {
    /// Colors when the destination is a terminal and `NO_COLOR` is unset or empty.
    #[default]
    Auto,
    /// Always colors (the seed's `ConsoleRenderer(colors=True)`), even into a file.
    Always,
    /// Never colors.
    Never,
}

impl FromStr for ColorChoice {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(ColorChoice::Auto),
            "always" | "on" | "true" | "yes" => Ok(ColorChoice::Always),
            "never" | "off" | "false" | "no" => Ok(ColorChoice::Never),
            _ => Err(ParseError::new(format!(
                "unknown color choice {s:?} (expected auto, always or never)"
            ))),
        }
    }
}

/// Everything [`Logs::new`](crate::Logs::new) needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Line layout of both logs.
    pub format: Format,
    /// Colors of the console format.
    pub color: ColorChoice,
    /// Least severe level of the error log (the access log always logs at info).
    pub level: Level,
    /// Where the error log goes (gunicorn: stderr).
    pub error_log: Destination,
    /// Where the access log goes; `None` = no access log (gunicorn's default).
    pub access_log: Option<Destination>,
    /// gunicorn's `access_log_format`.
    pub access_log_format: String,
    /// Logger names are `<prefix>.error` and `<prefix>.access` (`error` and
    /// `access` when empty).
    pub logger_prefix: String,
}

impl Default for LogConfig {
    /// Console (plain when the `structured` feature is off), auto colors,
    /// info, stderr, no access log, gunicorn's access format, prefix `gunicorn`.
    fn default() -> Self {
        LogConfig {
            format: if cfg!(feature = "structured") {
                Format::Console
            } else {
                Format::Plain
            },
            color: ColorChoice::Auto,
            level: Level::Info,
            error_log: Destination::Stderr,
            access_log: None,
            access_log_format: DEFAULT_ACCESS_LOG_FORMAT.to_string(),
            logger_prefix: crate::DEFAULT_PREFIX.to_string(),
        }
    }
}

/// A setting that did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    message: String,
}

impl ParseError {
    pub(crate) fn new(message: String) -> ParseError {
        ParseError { message }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ParseError {}
