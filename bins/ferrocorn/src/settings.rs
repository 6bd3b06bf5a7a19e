//! Every setting, declared once: its flag (gunicorn's names and short
//! forms), TOML key, environment variable, type, default, check, and the
//! README's text. [`declare_settings!`] derives the command line
//! ([`ServeArgs`]), the config file's and the environment's reading
//! ([`Layer`]), the defaults and checks ([`Taken`] into [`Settings`],
//! [`MetricsValues`] and [`PythonSettings`]), `--print-config` and the
//! README's tables from this list; `config.rs` adds the checks that involve
//! several settings.
//!
//! Adding a setting is adding an entry here (`worker: field` hands its value
//! to the worker's `WorkerConfig`; other parts read it from `Config`); the
//! README's tables follow
//! (`cargo test -p ferrocorn readme` says what to paste, or writes it with
//! `FERROCORN_WRITE_README=1`).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::ArgAction;

use crate::pyconfig::{
    check_allow_ips, check_raw_env, check_worker_class, check_wsgi_app,
    default_secure_scheme_headers, print_pythonpath, print_raw_env, print_secure_scheme_headers,
    split_pythonpath,
};
use crate::seconds::{Seconds, parse_seconds};
use crate::setting::{
    ConfigError, HeaderPairs, I64_MAX, Sourced, any, bad, declare_settings, destination, err,
    one_of, range, secs, some, some_path,
};

declare_settings! {
    /// Print the version and exit.
    version: Option<bool> = flag [short = 'v', long = "version", visible_short_alias = 'V', action = ArgAction::Version];

    /// A TOML config file (settings in snake_case).
    config: Option<PathBuf> = flag [short = 'c', long, value_name = "FILE"];

    /// Validate the configuration, print one line and exit (0 = valid).
    /// Checks every value, unix socket path lengths and overlapping binds;
    /// whether a port is free is only found out when serving starts.
    check_config: bool = flag [long];

    /// Print the effective configuration as TOML and exit.
    print_config: bool = flag [long];

    /// Addresses to listen on (repeatable).
    binds (core) {
        flag: "--bind" bind: Vec<String> = list [
            short = 'b',
            long,
            value_name = "ADDRESS",
            action = ArgAction::Append,
            help = "Address to listen on: HOST:PORT, [V6]:PORT, unix:PATH or fd://N. Repeatable. [default: 127.0.0.1:8000, or 0.0.0.0:$PORT]"
        ],
        key: "bind",
        type: Vec<String> => Vec<Bind>,
        env: (Default "PORT", port_bind, "a port number 1-65535"),
        default: { vec!["127.0.0.1:8000".to_owned()] },
        check: check_binds,
        readme: "`127.0.0.1:8000`, or `0.0.0.0:$PORT`; a string or an array; forms `HOST:PORT`, `[V6]:PORT`, `unix:PATH`, `fd://N`",
    }

    /// Number of worker processes. [default: 1, or $WEB_CONCURRENCY]
    workers (core) {
        flag: "--workers" workers: Option<u64> = opt [short = 'w', long, value_name = "INT"],
        type: u64 => usize,
        env: (Default "WEB_CONCURRENCY"),
        default: 1,
        check: range(1, 4096, ""),
        readme: "1",
    }

    /// Threads per worker handling requests. [default: 1]
    threads (core) {
        flag: "--threads" threads: Option<u64> = opt [long, value_name = "INT"],
        worker: threads,
        type: u64 => usize,
        default: 1,
        check: range(1, 10_000, ""),
        readme: "1",
    }

    /// Maximum open connections per worker. [default: 1000]
    worker_connections (core) {
        flag: "--worker-connections" worker_connections: Option<u64> = opt [long, value_name = "INT"],
        worker: worker_connections,
        type: u64 => usize,
        default: 1000,
        check: range(1, 1_000_000, ""),
        readme: "1000",
    }

    /// Maximum number of pending connections (listen backlog). [default: 2048]
    backlog (core) {
        flag: "--backlog" backlog: Option<u64> = opt [long, value_name = "INT"],
        type: u64 => i32,
        default: 2048,
        check: range(1, i32::MAX as u64, ""),
        readme: "2048",
    }

    /// Workers silent (no progress) for more than this many seconds are
    /// killed and restarted; 0 disables. [default: 30]
    timeout (core) {
        flag: "--timeout" timeout: Option<Seconds> = opt [short = 't', long, value_name = "SECONDS", value_parser = parse_seconds],
        worker: timeout,
        type: Seconds => Duration,
        default: { Seconds(30.0) },
        check: secs(false),
        readme: "30 (0 = never kill; a worker is killed when every thread has been held by the app this long, time spent waiting for a client's body bytes not counted)",
    }

    /// Seconds a graceful stop waits for in-flight requests. [default: 30]
    graceful_timeout (core) {
        flag: "--graceful-timeout" graceful_timeout: Option<Seconds> = opt [long, value_name = "SECONDS", value_parser = parse_seconds],
        worker: graceful_timeout,
        type: Seconds => Duration,
        default: { Seconds(30.0) },
        check: secs(false),
        readme: "30",
    }

    // gunicorn's default is 2 s; behind a load balancer whose idle timeout
    // is longer that causes 502s (gunicorn #1296). The seed's 120.
    /// Seconds to wait for requests on a keep-alive connection. [default: 120]
    keepalive (core) {
        flag: "--keep-alive" keep_alive: Option<Seconds> = opt [long, value_name = "SECONDS", value_parser = parse_seconds],
        worker: keepalive,
        type: Seconds => Duration,
        default: { Seconds(120.0) },
        check: secs(false),
        readme: "120",
    }

    /// Seconds a client has to send a complete request head (and up to 64 KiB
    /// of its body). [default: 30]
    header_timeout (core) {
        flag: "--header-timeout" header_timeout: Option<Seconds> = opt [long, value_name = "SECONDS", value_parser = parse_seconds],
        worker: header_timeout,
        type: Seconds => Duration,
        default: { Seconds(30.0) },
        check: secs(false),
        readme: "30 (ferrocorn: a slow client's request head, or its first 64 KiB of body, is cut with 408)",
    }

    // Apart from `timeout`, which judges the app: `timeout = 0` (never kill)
    // is common in gunicorn configs and must not make a body or a write that
    // pauses for a millisecond fail.
    /// Seconds a request body may stop arriving, or a response stop being
    /// read, before the request is cut (408) or the connection closed; 0 =
    /// no limit. [default: 30]
    stall_timeout (core) {
        flag: "--stall-timeout" stall_timeout: Option<Seconds> = opt [long, value_name = "SECONDS", value_parser = parse_seconds],
        worker: stall_timeout,
        type: Seconds => Duration,
        default: { Seconds(30.0) },
        check: secs(false),
        readme: "30 (ferrocorn: a request body that stops arriving for this long is cut with 408, a response the client stops reading closes the connection; 0 = no limit; apart from `timeout`, so `timeout = 0` never makes a pause fail)",
    }

    /// A path (e.g. /healthz) each worker answers itself, never the app: 200
    /// while it serves, 503 once it stops; "" = off. [default: off]
    health_path (core) {
        flag: "--health-path" health_path: Option<String> = opt [long, value_name = "PATH"],
        worker: health_path,
        type: String => Option<String>,
        default: none,
        check: check_health_path,
        readme: "off (`\"\"`); e.g. `/healthz`: see [Health endpoint](#health-endpoint)",
    }

    // TOML integers are i64: a larger value would not load back from
    // `--print-config` (issue 19), and no worker serves that many.
    /// Requests a worker serves before it restarts; 0 = never. [default: 0]
    max_requests (core) {
        flag: "--max-requests" max_requests: Option<u64> = opt [long, value_name = "INT"],
        worker: max_requests,
        type: u64 => u64,
        default: 0,
        check: range(0, I64_MAX, ""),
        readme: "0 (never restart)",
    }

    /// Random extra requests (0..=N) added to --max-requests per worker. [default: 0]
    max_requests_jitter (core) {
        flag: "--max-requests-jitter" max_requests_jitter: Option<u64> = opt [long, value_name = "INT"],
        worker: max_requests_jitter,
        type: u64 => u64,
        default: 0,
        check: range(0, I64_MAX, ""),
        readme: "0",
    }

    /// Maximum size of the request line in bytes; 0 = the maximum, 8190. [default: 4094]
    limit_request_line (core) {
        flag: "--limit-request-line" limit_request_line: Option<u64> = opt [long, value_name = "INT"],
        worker: limit_request_line,
        type: u64 => usize,
        default: 4094,
        check: range(0, 8190, " (0 = 8190)"),
        readme: "4094 (at most 8190)",
    }

    /// Maximum number of header fields; 0 = the maximum, 32768 (as gunicorn). [default: 100]
    limit_request_fields (core) {
        flag: "--limit-request-fields" limit_request_fields: Option<u64> = opt [long, value_name = "INT"],
        worker: limit_request_fields,
        type: u64 => usize,
        default: 100,
        check: range(0, 32768, " (0 = 32768)"),
        readme: "100 (0 = 32768, at most 32768)",
    }

    // Honoured above 8190 as gunicorn does, up to the worker's maximum.
    /// Maximum size of a header field line in bytes, its CRLF included, as gunicorn counts; 0 = 8190, at most 65536. [default: 8190]
    limit_request_field_size (core) {
        flag: "--limit-request-field-size" limit_request_field_size: Option<u64> = opt [long, value_name = "INT"],
        worker: limit_request_field_size,
        type: u64 => usize,
        default: 8190,
        check: range(0, ferrocorn_worker::parse::MAX_FIELD_SIZE as u64, " (0 = 8190)"),
        readme: "8190 (the line with its CRLF, as gunicorn counts; larger values honoured up to 65536)",
    }

    /// Maximum size of a request body in bytes; 0 = unlimited. [default: 1073741824]
    limit_request_body (core) {
        flag: "--limit-request-body" limit_request_body: Option<u64> = opt [long, value_name = "INT"],
        worker: limit_request_body,
        type: u64 => u64,
        default: DEFAULT_LIMIT_REQUEST_BODY,
        check: range(0, I64_MAX, " (0 = unlimited)"),
        readme: "1073741824 (ferrocorn; 0 = no limit, gunicorn #1659)",
    }

    /// Error log level: debug, info, warning, error, critical. [default: info]
    loglevel (core) {
        flag: "--log-level" log_level: Option<String> = opt [long, value_name = "LEVEL"],
        type: String => String,
        default: { "info".to_owned() },
        check: check_loglevel,
        readme: "`info`",
    }

    /// Access log file; `-` = stdout. [default: off]
    accesslog (core) {
        flag: "--access-logfile" access_logfile: Option<String> = opt [long, value_name = "FILE"],
        type: String => Option<String>,
        default: none,
        check: access_log,
        readme: "off; `-` = stdout",
    }

    /// Error log file; `-` = stderr. [default: -]
    errorlog (core) {
        flag: "--error-logfile" error_logfile: Option<String> = opt [long, alias = "log-file", value_name = "FILE"],
        type: String => String,
        default: { "-".to_owned() },
        check: destination("empty path (use `-` for stderr)"),
        readme: "`-` (stderr)",
    }

    /// Access log format (gunicorn's atoms, e.g. %(h)s %(r)s %(s)s).
    access_log_format (core) {
        flag: "--access-logformat" access_logformat: Option<String> = opt [long, value_name = "FORMAT"],
        type: String => String,
        default: { DEFAULT_ACCESS_LOG_FORMAT.to_owned() },
        check: check_access_log_format,
        readme: "gunicorn's (`%(h)s %(l)s %(u)s %(t)s \"%(r)s\" %(s)s %(b)s \"%(f)s\" \"%(a)s\"`)",
    }

    /// Log format: default (colored console), json or plain. [env: LOGGING_FORMATTER_NAME]
    log_format (core) {
        flag: "--log-format" log_format: Option<String> = opt [long, value_name = "FORMAT"],
        type: String => String,
        env: (Override "LOGGING_FORMATTER_NAME"),
        default: { default_log_format().to_owned() },
        check: check_log_format,
        readme: "`default` (`plain` without `structured-log`)",
    }

    /// Console colors: auto, always, never. [default: auto]
    log_color (core) {
        flag: "--log-color" log_color: Option<String> = opt [long, value_name = "WHEN"],
        type: String => String,
        default: { "auto".to_owned() },
        check: one_of(&["auto", "always", "never"]),
        readme: "`auto`",
    }

    /// A file to write the supervisor's pid to.
    pidfile (core) {
        flag: "--pid" pid: Option<PathBuf> = opt [short = 'p', long, value_name = "FILE"],
        type: PathBuf => Option<PathBuf>,
        default: none,
        check: some_path,
        readme: "none",
    }

    /// Set SO_REUSEPORT on the listening sockets.
    reuse_port (core) {
        flag: "--reuse-port" reuse_port: bool = on [long],
        type: bool => bool,
        default: false,
        check: any,
        readme: "false",
    }

    /// The built-in app to serve: demo (/, /healthz, /echo, /delay/MS,
    /// /status/CODE) or hello. [default: demo]
    app (core) {
        flag: "--app" app: Option<String> = opt [long, value_name = "NAME"],
        type: String => AppName,
        default: { "demo".to_owned() },
        check: check_app,
        print: |a: &AppName| Some(toml::Value::String(a.as_str().into())),
        readme: "`demo`",
    }

    /// A Python WSGI app to serve, as gunicorn's APP_MODULE:
    /// `module:callable`, `module:factory(args)`, or `module` (=
    /// `module:application`). [config: wsgi_app]
    wsgi_app (python) {
        flag: "APP_MODULE" app_module: Option<String> = opt [value_name = "APP_MODULE"],
        type: String => Option<String>,
        default: none,
        check: check_wsgi_app,
        readme: "the app; `--app` with it is an error",
    }

    /// Change to this directory before loading the app (and put it first
    /// on sys.path).
    chdir (python) {
        flag: "--chdir" chdir: Option<PathBuf> = opt [long, value_name = "DIR"],
        type: PathBuf => Option<PathBuf>,
        default: none,
        check: some,
        readme: "change directory first and put it first on `sys.path`",
    }

    /// Comma-separated directories put first on sys.path.
    pythonpath (python) {
        flag: "--pythonpath" pythonpath: Option<String> = opt [long, value_name = "PATHS"],
        type: String => Vec<PathBuf>,
        default: none,
        check: split_pythonpath,
        print: print_pythonpath,
        readme: "comma-separated directories put first on `sys.path`",
    }

    /// Set an environment variable for the app: KEY=VALUE (repeatable).
    raw_env (python) {
        flag: "--env" env: Vec<String> = list [short = 'e', long = "env", value_name = "KEY=VALUE", action = ArgAction::Append],
        type: Vec<String> => Vec<(String, String)>,
        default: none,
        check: check_raw_env,
        print: print_raw_env,
        readme: "environment variables for the app, `KEY=VALUE` each",
    }

    /// The virtualenv the app runs in (its site-packages). [env: VIRTUAL_ENV]
    virtualenv (python) {
        flag: "--virtualenv" virtualenv: Option<PathBuf> = opt [long, value_name = "DIR"],
        type: PathBuf => Option<PathBuf>,
        // An empty VIRTUAL_ENV means none (env_value drops empty values).
        env: (Default "VIRTUAL_ENV"),
        default: none,
        check: some,
        readme: "the virtualenv the app runs in",
    }

    /// Import the app in the supervisor before forking the workers.
    preload (python) {
        flag: "--preload" preload: bool = on [long = "preload"],
        key: "preload_app",
        type: bool => bool,
        default: false,
        check: any,
        readme: "import the app in the supervisor before forking",
    }

    /// Send the app's stdout and stderr (print()) to the error log.
    capture_output (python) {
        flag: "--capture-output" capture_output: bool = on [long = "capture-output"],
        type: bool => bool,
        default: false,
        check: any,
        readme: "the app's `sys.stdout`/`sys.stderr` (`print()`) to the error log, line by line (loggers `stdout` at info, `stderr` at error); off by default, as in gunicorn",
    }

    /// gunicorn's worker class: sync or gthread (both run ferrocorn's
    /// worker: processes with a thread pool each); others are refused.
    worker_class (python) {
        flag: "--worker-class" worker_class: Option<String> = opt [short = 'k', long, value_name = "CLASS"],
        type: String => Option<String>,
        default: none,
        check: check_worker_class,
        readme: "`sync` or `gthread`",
    }

    /// Import the app (without serving), then exit: 0 when it loads, 4 when
    /// it cannot.
    check_app: bool = flag [long];

    /// Proxies (IPs, CIDR networks, or *) whose secure_scheme_headers set
    /// wsgi.url_scheme. [env: FORWARDED_ALLOW_IPS] [default: 127.0.0.1,::1]
    forwarded_allow_ips (python) {
        flag: "--forwarded-allow-ips" forwarded_allow_ips: Option<String> = opt [long, value_name = "ADDRESSES"],
        type: String => String,
        env: (Default "FORWARDED_ALLOW_IPS"),
        default: { "127.0.0.1,::1".to_owned() },
        check: check_allow_ips,
        readme: "`127.0.0.1,::1`; addresses, CIDR networks or `*`",
    }

    /// Headers and values that mean https from a trusted peer.
    secure_scheme_headers (python) {
        type: HeaderPairs => Vec<(String, String)>,
        default: { HeaderPairs(default_secure_scheme_headers()) },
        check: |_, v: &Sourced<HeaderPairs>| Ok::<_, ConfigError>(v.value.0.clone()),
        print: print_secure_scheme_headers,
        readme: "gunicorn's: `X-FORWARDED-PROTOCOL = \"ssl\"`, `X-FORWARDED-PROTO = \"https\"`, `X-FORWARDED-SSL = \"on\"` (a TOML table)",
    }

    /// Prefix of metric names and logger names. [default: gunicorn]
    prefix (core) {
        flag: "--prefix" prefix: Option<String> = opt [long, value_name = "PREFIX"],
        type: String => String,
        default: { ferrocorn_log::DEFAULT_PREFIX.to_owned() },
        check: check_prefix,
        readme: "`gunicorn` (metric and logger names)",
    }

    /// Do not serve metrics.
    metrics_on (core) {
        flag: "--no-metrics" no_metrics: bool = off [long],
        key: "metrics",
        type: bool => bool,
        default: { cfg!(feature = "metrics") },
        check: check_metrics_on,
        readme: "true when built",
    }

    /// Do not observe how long each connection waited in the listen queue (gunicorn_accept_queue_wait_seconds: one getsockopt per accepted TCP connection).
    accept_queue_wait (metrics) {
        flag: "--no-accept-queue-wait" no_accept_queue_wait: bool = off [long],
        type: bool => bool,
        default: true,
        check: any,
        readme: "true: workers observe each TCP connection's listen-queue wait (one `getsockopt` per accept)",
    }

    /// IP address the metrics exporter binds. [default: 0.0.0.0]
    metrics_bind (metrics) {
        flag: "--metrics-bind" metrics_bind: Option<String> = opt [long, value_name = "IP"],
        type: String => IpAddr,
        default: { "0.0.0.0".to_owned() },
        check: check_ip,
        readme: "`0.0.0.0`",
    }

    /// Port of the metrics exporter. [env: PROMETHEUS_METRICS_EXPORT_PORT] [default: 8001]
    metrics_port (metrics) {
        flag: "--metrics-port" metrics_port: Option<u16> = opt [long, value_name = "PORT"],
        type: u64 => u16,
        env: (Override "PROMETHEUS_METRICS_EXPORT_PORT"),
        default: 8001,
        check: range(1, 65535, ""),
        readme: "8001",
    }

    /// Seconds between samples of sampled gauges. [env: GUNICORN_METRICS_UPDATE_SECONDS] [default: 5]
    metrics_update_seconds (metrics) {
        flag: "--metrics-update-seconds" metrics_update_seconds: Option<Seconds> = opt [long, value_name = "SECONDS", value_parser = parse_seconds],
        type: Seconds => Duration,
        env: (Override "GUNICORN_METRICS_UPDATE_SECONDS"),
        default: { Seconds(5.0) },
        check: secs(true),
        readme: "5",
    }

    /// Directory of the shm metric files. [env: PROMETHEUS_MULTIPROC_DIR]
    metrics_dir (metrics) {
        flag: "--metrics-dir" metrics_dir: Option<PathBuf> = opt [long, value_name = "DIR"],
        type: PathBuf => Option<PathBuf>,
        env: (Override "PROMETHEUS_MULTIPROC_DIR"),
        default: none,
        check: some_path,
        readme: "a private temporary directory",
    }
}

// ---- The values' types and the checks of single settings. ----

/// gunicorn's default access log format.
pub use ferrocorn_log::DEFAULT_ACCESS_LOG_FORMAT;

/// ferrocorn's limit on a request body when none is configured: 1 GiB.
/// gunicorn has no limit (gunicorn #1659); 0 turns the limit off.
pub const DEFAULT_LIMIT_REQUEST_BODY: u64 = 1 << 30;

/// The defaults that depend on how the binary was built.
fn default_log_format() -> &'static str {
    if cfg!(feature = "structured-log") {
        "default"
    } else {
        "plain"
    }
}

/// An address to listen on, in gunicorn's forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    /// `HOST:PORT` or `[V6]:PORT` (a missing port means 8000, as gunicorn).
    Tcp {
        /// Host name or IP address (without brackets).
        host: String,
        /// Port.
        port: u16,
    },
    /// `unix:PATH`.
    Unix(PathBuf),
    /// `fd://N`: an inherited, already listening socket.
    Fd(i32),
}

impl Bind {
    /// Parses gunicorn's bind forms.
    pub fn parse(s: &str) -> Result<Bind, String> {
        let s = s.trim();
        if let Some(path) = s.strip_prefix("unix:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err("`unix:` needs a path".into());
            }
            return Ok(Bind::Unix(PathBuf::from(path)));
        }
        if let Some(fd) = s.strip_prefix("fd://") {
            return match fd.parse::<i32>() {
                Ok(fd) if fd >= 0 => Ok(Bind::Fd(fd)),
                _ => Err(format!(
                    "`fd://` needs a file descriptor number, got {fd:?}"
                )),
            };
        }
        if s.is_empty() {
            return Err("empty address".into());
        }
        let s = s
            .strip_prefix("tcp://")
            .or_else(|| s.strip_prefix("http://"))
            .unwrap_or(s);
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let Some((host, after)) = rest.split_once(']') else {
                return Err(format!("{s:?}: missing `]`"));
            };
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!("{s:?}: {host:?} is not an IPv6 address"));
            }
            match after {
                "" => (host, None),
                _ => match after.strip_prefix(':') {
                    Some(p) => (host, Some(p)),
                    None => return Err(format!("{s:?}: expected `:PORT` after `]`")),
                },
            }
        } else {
            match s.rsplit_once(':') {
                Some((host, _)) if host.contains(':') => {
                    return Err(format!("{s:?}: write IPv6 addresses as [ADDR]:PORT"));
                }
                Some((host, port)) => (host, Some(port)),
                None => (s, None),
            }
        };
        // gunicorn: `:PORT` listens on every IPv4 address.
        let host = if host.is_empty() { "0.0.0.0" } else { host };
        let port = match port {
            None => 8000,
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| format!("{s:?}: {p:?} is not a port number"))?,
        };
        Ok(Bind::Tcp {
            host: host.to_owned(),
            port,
        })
    }
}

impl std::fmt::Display for Bind {
    /// The canonical form, accepted by [`Bind::parse`] and the supervisor.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bind::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Bind::Tcp { host, port } => write!(f, "{host}:{port}"),
            Bind::Unix(p) => write!(f, "unix:{}", p.display()),
            Bind::Fd(fd) => write!(f, "fd://{fd}"),
        }
    }
}

impl crate::setting::Print for Vec<Bind> {
    fn print(&self) -> Option<toml::Value> {
        Some(toml::Value::Array(
            self.iter()
                .map(|b| toml::Value::String(b.to_string()))
                .collect(),
        ))
    }
}

/// `PORT` as gunicorn reads it: the default bind `0.0.0.0:$PORT`.
fn port_bind(s: &str) -> Option<Vec<String>> {
    match s.trim().parse::<u16>() {
        Ok(p) if p > 0 => Some(vec![format!("0.0.0.0:{p}")]),
        _ => None,
    }
}

/// The longest unix socket path: `sun_path` holds 108 bytes with the NUL.
const MAX_UNIX_PATH: usize = 107;

fn check_binds(name: &'static str, v: &Sourced<Vec<String>>) -> Result<Vec<Bind>, ConfigError> {
    if v.value.is_empty() {
        return bad(name, &v.source, "no address given");
    }
    let mut binds = Vec::new();
    for b in &v.value {
        let parsed = Bind::parse(b).or_else(|e| bad(name, &v.source, e))?;
        if binds.contains(&parsed) {
            return bad(name, &v.source, format_args!("{parsed} is given twice"));
        }
        if let Bind::Unix(path) = &parsed
            && path.as_os_str().len() > MAX_UNIX_PATH
        {
            return bad(
                name,
                &v.source,
                format_args!(
                    "unix socket path {} is {} bytes, more than the {MAX_UNIX_PATH} a socket address holds",
                    path.display(),
                    path.as_os_str().len()
                ),
            );
        }
        binds.push(parsed);
    }
    Ok(binds)
}

/// `health_path`: empty is off; else an origin-form path, matched byte for
/// byte against a request's path (without its query).
fn check_health_path(
    name: &'static str,
    v: &Sourced<String>,
) -> Result<Option<String>, ConfigError> {
    let p = v.value.as_str();
    if p.is_empty() {
        return Ok(None);
    }
    if !p.starts_with('/') {
        return bad(
            name,
            &v.source,
            format_args!("{p:?} does not start with `/`"),
        );
    }
    if let Some(c) = p
        .chars()
        .find(|c| matches!(c, '?' | '#') || !c.is_ascii_graphic())
    {
        return bad(
            name,
            &v.source,
            format_args!("{p:?} has {c:?}: a path without query, fragment, spaces or non-ASCII"),
        );
    }
    if p.len() > 1024 {
        return bad(name, &v.source, "longer than 1024 bytes");
    }
    Ok(Some(p.to_owned()))
}

fn check_loglevel(name: &'static str, v: &Sourced<String>) -> Result<String, ConfigError> {
    let level = one_of(&["debug", "info", "warning", "warn", "error", "critical"])(name, v)?;
    Ok(if level == "warn" {
        "warning".to_owned()
    } else {
        level
    })
}

/// The access log: off unless set, never an empty path.
fn access_log(name: &'static str, v: &Sourced<String>) -> Result<Option<String>, ConfigError> {
    destination("empty path (use `-` for stdout)")(name, v).map(Some)
}

fn check_access_log_format(name: &'static str, v: &Sourced<String>) -> Result<String, ConfigError> {
    if let Err(e) = ferrocorn_log::AccessLogFormat::parse(&v.value) {
        return bad(name, &v.source, e);
    }
    Ok(v.value.clone())
}

fn check_log_format(name: &'static str, v: &Sourced<String>) -> Result<String, ConfigError> {
    let format = one_of(&["default", "json", "plain"])(name, v)?;
    if !cfg!(feature = "structured-log") && format != "plain" {
        return bad(
            name,
            &v.source,
            format_args!(
                "{format:?} needs structured logs, which are not built into this binary (feature `structured-log`); use \"plain\""
            ),
        );
    }
    Ok(format)
}

/// The built-in apps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppName {
    /// `/`, `/healthz`, `/echo`, `/delay/MS`, `/status/CODE`.
    Demo,
    /// "Hello, world!" for every request: a baseline for benchmarks.
    Hello,
}

impl AppName {
    /// Every built-in app's name.
    pub const NAMES: &[&str] = &["demo", "hello"];

    fn parse(s: &str) -> Option<AppName> {
        match s {
            "demo" => Some(AppName::Demo),
            "hello" => Some(AppName::Hello),
            _ => None,
        }
    }

    /// The name as given on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            AppName::Demo => "demo",
            AppName::Hello => "hello",
        }
    }
}

fn check_app(name: &'static str, v: &Sourced<String>) -> Result<AppName, ConfigError> {
    match AppName::parse(&v.value) {
        Some(a) => Ok(a),
        None => bad(
            name,
            &v.source,
            format_args!(
                "no built-in app {:?} (built-in apps: {})",
                v.value,
                AppName::NAMES.join(", ")
            ),
        ),
    }
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn check_prefix(name: &'static str, v: &Sourced<String>) -> Result<String, ConfigError> {
    if !is_metric_name(&v.value) {
        return bad(
            name,
            &v.source,
            format_args!(
                "{:?} is not a valid metric name prefix ([a-zA-Z_:][a-zA-Z0-9_:]*)",
                v.value
            ),
        );
    }
    Ok(v.value.clone())
}

/// The metrics part built out fails clearly when asked for, never silently.
fn check_metrics_on(name: &'static str, v: &Sourced<bool>) -> Result<bool, ConfigError> {
    if !cfg!(feature = "metrics") && v.value {
        return err(format!(
            "metrics are not built into this binary (feature `metrics`), but `{name}` is set in {}",
            v.source
        ));
    }
    Ok(v.value)
}

fn check_ip(name: &'static str, v: &Sourced<String>) -> Result<IpAddr, ConfigError> {
    v.value.trim().parse().or_else(|_| {
        bad(
            name,
            &v.source,
            format_args!("{:?} is not an IP address", v.value),
        )
    })
}

/// The README's settings tables are rendered from the list: this test fails
/// when README.md's differ, printing the tables to paste (or writing them
/// with `FERROCORN_WRITE_README=1`).
#[cfg(test)]
mod readme {
    use clap::CommandFactory;

    use super::{CORE_DOCS, METRICS_DOCS, PYTHON_DOCS};
    use crate::cli::Cli;
    use crate::setting::SettingDoc;

    /// The README's tables: the marker line before each, its header, its rows.
    const TABLES: &[(&str, &str, &[&[SettingDoc]])] = &[
        (
            "<!-- settings table: server -->",
            "| TOML key | flag | env | default |",
            &[CORE_DOCS, METRICS_DOCS],
        ),
        (
            "<!-- settings table: python -->",
            "| setting | flag | env | what |",
            &[PYTHON_DOCS],
        ),
    ];

    /// The line after each table.
    const END: &str =
        "<!-- end of settings table (generated from bins/ferrocorn/src/settings.rs) -->";

    /// The flag's cell: `-b`, `--bind` (repeatable); `APP_MODULE` (positional).
    fn flag_cell(cmd: &clap::Command, doc: &SettingDoc) -> String {
        let Some((label, id)) = doc.flag else {
            return String::new();
        };
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_id() == id)
            .unwrap_or_else(|| panic!("no flag {id} for `{}`", doc.key));
        if arg.is_positional() {
            return format!("`{label}` (positional)");
        }
        let mut cell = String::new();
        if let Some(short) = arg.get_short() {
            cell.push_str(&format!("`-{short}`, "));
        }
        cell.push_str(&format!("`{label}`"));
        if matches!(arg.get_action(), clap::ArgAction::Append) {
            cell.push_str(" (repeatable)");
        }
        cell
    }

    fn render(header: &str, parts: &[&[SettingDoc]]) -> String {
        let cmd = Cli::command();
        let mut out = format!("{header}\n|---|---|---|---|\n");
        for doc in parts.iter().flat_map(|p| p.iter()) {
            let cells = [
                format!("`{}`", doc.key),
                flag_cell(&cmd, doc),
                doc.env.map(|v| format!("`{v}`")).unwrap_or_default(),
                doc.readme.to_owned(),
            ];
            for cell in cells {
                match cell.is_empty() {
                    true => out.push_str("| "),
                    false => out.push_str(&format!("| {cell} ")),
                }
            }
            out.push_str("|\n");
        }
        out
    }

    /// README.md with its settings tables rendered from the list.
    fn rendered_readme(readme: &str) -> String {
        let mut out = readme.to_owned();
        for (marker, header, parts) in TABLES {
            let start = out
                .find(marker)
                .unwrap_or_else(|| panic!("README.md lacks the line {marker}"))
                + marker.len()
                + 1;
            let end = start
                + out[start..]
                    .find(END)
                    .unwrap_or_else(|| panic!("README.md lacks {END} after {marker}"));
            out.replace_range(start..end, &render(header, parts));
        }
        out
    }

    #[test]
    fn readme_settings_tables_are_the_lists() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
        let readme = std::fs::read_to_string(&path).expect("README.md");
        let expected = rendered_readme(&readme);
        if expected == readme {
            return;
        }
        if std::env::var_os("FERROCORN_WRITE_README").is_some() {
            std::fs::write(&path, &expected).expect("write README.md");
            return;
        }
        let tables: Vec<String> = TABLES
            .iter()
            .map(|(marker, header, parts)| format!("{marker}\n{}{END}", render(header, parts)))
            .collect();
        panic!(
            "README.md's settings tables differ from settings.rs; replace them with (or run with FERROCORN_WRITE_README=1):\n\n{}",
            tables.join("\n\n")
        );
    }

    #[test]
    fn each_environment_variable_is_in_the_help() {
        // The help's environment section is written by hand in cli.rs.
        let cmd = Cli::command();
        let help = cmd
            .get_after_help()
            .expect("the help's environment section")
            .to_string();
        for doc in [CORE_DOCS, METRICS_DOCS, PYTHON_DOCS].concat() {
            if let Some(var) = doc.env {
                let line = help.lines().find(|l| l.trim_start().starts_with(var));
                assert!(line.is_some(), "--help does not list {var} (`{}`)", doc.key);
            }
        }
    }

    #[test]
    fn each_flag_label_is_its_flag() {
        // Errors name a flag by its label (`command line --keep-alive`).
        let cmd = Cli::command();
        for doc in [CORE_DOCS, METRICS_DOCS, PYTHON_DOCS].concat() {
            let Some((label, id)) = doc.flag else {
                continue;
            };
            let arg = cmd.get_arguments().find(|a| a.get_id() == id).unwrap();
            let named = match arg.get_long() {
                Some(long) => format!("--{long}"),
                None => arg.get_value_names().unwrap()[0].to_string(),
            };
            assert_eq!(label, named, "`{}`", doc.key);
        }
    }
}
