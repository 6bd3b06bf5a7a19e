//! Settings: one validated [`Config`] from a TOML file, the environment and
//! the command line.
//!
//! Precedence, as gunicorn: built-in defaults < `PORT` / `WEB_CONCURRENCY`
//! (gunicorn reads them as the *defaults* of `bind` and `workers`) < config
//! file < the seed's environment variables < command line.
//!
//! Each source becomes a [`Layer`] of optional values that remembers where
//! every value came from; the layers are stacked and [`Layer::resolve`]
//! validates the result into a [`Config`], naming the setting and its source
//! in every error. [`Config::load`] does all of it from the command line's
//! [`ServeArgs`] and an environment lookup, so a reload (SIGHUP) re-reads the
//! file and the environment with the same command-line arguments.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli::ServeArgs;
use crate::seconds::{Seconds, parse_seconds};

// The Python (WSGI) settings, resolved in their own file.
#[path = "pyconfig.rs"]
mod pyconfig;
use pyconfig::PythonLayer;
pub use pyconfig::PythonSettings;

/// Where a value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// ferrocorn's default.
    Default,
    /// A config file (`-c`).
    File(PathBuf),
    /// An environment variable.
    Env(&'static str),
    /// A command-line flag.
    Cli(&'static str),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(p) => write!(f, "config file {}", p.display()),
            Source::Env(name) => write!(f, "environment variable {name}"),
            Source::Cli(flag) => write!(f, "command line {flag}"),
        }
    }
}

/// A configuration error: one line naming the setting and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

/// A value with the source it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Sourced<T> {
    /// The value.
    pub value: T,
    /// Where it came from.
    pub source: Source,
}

/// How a setting's type reads from TOML and from an environment variable.
trait SettingValue: Sized {
    /// What the value must look like, for error messages.
    const EXPECTED: &'static str;
    fn from_toml(v: &toml::Value) -> Option<Self>;
    fn from_env(s: &str) -> Option<Self>;
}

impl SettingValue for u64 {
    const EXPECTED: &'static str = "a non-negative integer";
    fn from_toml(v: &toml::Value) -> Option<Self> {
        v.as_integer().and_then(|i| u64::try_from(i).ok())
    }
    fn from_env(s: &str) -> Option<Self> {
        s.trim().parse().ok()
    }
}

impl SettingValue for Seconds {
    const EXPECTED: &'static str = "a number of seconds";
    fn from_toml(v: &toml::Value) -> Option<Self> {
        match v {
            toml::Value::Integer(i) => Some(Seconds(*i as f64)),
            toml::Value::Float(f) if f.is_finite() => Some(Seconds(*f)),
            _ => None,
        }
    }
    fn from_env(s: &str) -> Option<Self> {
        parse_seconds(s).ok()
    }
}

impl SettingValue for String {
    const EXPECTED: &'static str = "a string";
    fn from_toml(v: &toml::Value) -> Option<Self> {
        v.as_str().map(str::to_owned)
    }
    fn from_env(s: &str) -> Option<Self> {
        Some(s.to_owned())
    }
}

impl SettingValue for PathBuf {
    const EXPECTED: &'static str = "a path (string)";
    fn from_toml(v: &toml::Value) -> Option<Self> {
        v.as_str().map(PathBuf::from)
    }
    fn from_env(s: &str) -> Option<Self> {
        Some(PathBuf::from(s))
    }
}

impl SettingValue for bool {
    const EXPECTED: &'static str = "true or false";
    fn from_toml(v: &toml::Value) -> Option<Self> {
        v.as_bool()
    }
    fn from_env(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Some(true),
            "0" | "false" | "no" | "off" => Some(false),
            _ => None,
        }
    }
}

impl SettingValue for Vec<String> {
    const EXPECTED: &'static str = "a string or an array of strings";
    fn from_toml(v: &toml::Value) -> Option<Self> {
        match v {
            toml::Value::String(s) => Some(vec![s.clone()]),
            toml::Value::Array(a) => a.iter().map(|v| v.as_str().map(str::to_owned)).collect(),
            _ => None,
        }
    }
    fn from_env(s: &str) -> Option<Self> {
        Some(s.split_whitespace().map(str::to_owned).collect())
    }
}

/// Header/value pairs (`secure_scheme_headers`): a TOML table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderPairs(pub Vec<(String, String)>);

impl SettingValue for HeaderPairs {
    const EXPECTED: &'static str = "a table of header = value strings";
    fn from_toml(v: &toml::Value) -> Option<Self> {
        let t = v.as_table()?;
        t.iter()
            .map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
            .collect::<Option<Vec<_>>>()
            .map(HeaderPairs)
    }
    fn from_env(_: &str) -> Option<Self> {
        None
    }
}

macro_rules! layer {
    ($( $(#[doc = $doc:literal])* $name:ident : $ty:ty, )*) => {
        /// One source's settings: every field optional, with its source.
        #[derive(Debug, Clone, Default, PartialEq)]
        pub struct Layer {
            $( $(#[doc = $doc])* pub $name: Option<Sourced<$ty>>, )*
        }

        /// Every setting's name, as written in the config file.
        pub const SETTINGS: &[&str] = &[$(stringify!($name)),*];

        impl Layer {
            /// Sets `key` from a TOML value; `Err` names the key and the source.
            fn set_toml(&mut self, key: &str, value: &toml::Value, source: &Source) -> Result<(), ConfigError> {
                match key {
                    $( stringify!($name) => {
                        match <$ty as SettingValue>::from_toml(value) {
                            Some(v) => self.$name = Some(Sourced { value: v, source: source.clone() }),
                            None => return err(format!(
                                "invalid value for `{}` in {}: expected {}, got {}",
                                key, source, <$ty as SettingValue>::EXPECTED, describe_toml(value)
                            )),
                        }
                    } )*
                    _ => return err(unknown_setting(key, source)),
                }
                Ok(())
            }

            /// This layer over `lower`: a value set here wins.
            pub fn over(self, lower: Layer) -> Layer {
                Layer { $( $name: self.$name.or(lower.$name), )* }
            }
        }
    };
}

layer! {
    /// Addresses to listen on (`-b`, repeatable).
    bind: Vec<String>,
    /// Worker processes (`-w`).
    workers: u64,
    /// Threads per worker.
    threads: u64,
    /// Maximum open connections per worker.
    worker_connections: u64,
    /// listen() backlog.
    backlog: u64,
    /// Seconds without progress before a worker is killed.
    timeout: Seconds,
    /// Seconds a graceful stop waits for in-flight requests.
    graceful_timeout: Seconds,
    /// Seconds an idle keep-alive connection stays open.
    keepalive: Seconds,
    /// Seconds a client has to send a complete request head.
    header_timeout: Seconds,
    /// Seconds a body or a response write may stall.
    stall_timeout: Seconds,
    /// A path the workers answer themselves (a health probe); empty = off.
    health_path: String,
    /// Requests before a worker restarts (0 = never).
    max_requests: u64,
    /// Random extra requests before a restart.
    max_requests_jitter: u64,
    /// Longest request line in bytes.
    limit_request_line: u64,
    /// Most header fields in a request.
    limit_request_fields: u64,
    /// Longest header field in bytes.
    limit_request_field_size: u64,
    /// Largest request body in bytes.
    limit_request_body: u64,
    /// Error log level.
    loglevel: String,
    /// Error log destination (`-` = stderr).
    errorlog: String,
    /// Access log destination (`-` = stdout).
    accesslog: String,
    /// Access log format (gunicorn atoms).
    access_log_format: String,
    /// Log format: default (console), json or plain.
    log_format: String,
    /// Console colors: auto, always, never.
    log_color: String,
    /// Pid file of the supervisor.
    pidfile: PathBuf,
    /// SO_REUSEPORT on the listeners.
    reuse_port: bool,
    /// The built-in app to serve.
    app: String,
    /// Prefix of metric and logger names.
    prefix: String,
    /// Serve metrics at all.
    metrics: bool,
    /// Address the metrics exporter binds.
    metrics_bind: String,
    /// Port of the metrics exporter.
    metrics_port: u64,
    /// Seconds between samples of sampled gauges.
    metrics_update_seconds: Seconds,
    /// Directory of the shm metric files.
    metrics_dir: PathBuf,
    /// A Python WSGI app (gunicorn's APP_MODULE).
    wsgi_app: String,
    /// Directory to change to before loading the app.
    chdir: PathBuf,
    /// Comma-separated directories put first on sys.path.
    pythonpath: String,
    /// Environment variables for the app, `KEY=VALUE` each (`--env`).
    raw_env: Vec<String>,
    /// The virtualenv the app runs in.
    virtualenv: PathBuf,
    /// Import the app in the supervisor before forking.
    preload_app: bool,
    /// The app's stdout and stderr (print()) to the error log.
    capture_output: bool,
    /// gunicorn's worker class: sync or gthread.
    worker_class: String,
    /// Peers trusted to set the scheme through secure_scheme_headers.
    forwarded_allow_ips: String,
    /// Headers and values that mean https from a trusted peer.
    secure_scheme_headers: HeaderPairs,
    /// Observe each connection's wait in the listen queue (TCP_INFO at accept).
    accept_queue_wait: bool,
}

/// gunicorn settings that ferrocorn does not have (yet): named as such
/// instead of "unknown", so a gunicorn user knows why.
const GUNICORN_ONLY: &[&str] = &[
    "reload",
    "reload_engine",
    "reload_extra_files",
    "spew",
    "daemon",
    "worker_tmp_dir",
    "user",
    "group",
    "umask",
    "initgroups",
    "tmp_upload_dir",
    "proxy_protocol",
    "proxy_allow_ips",
    "certfile",
    "keyfile",
    "ca_certs",
    "ssl_version",
    "cert_reqs",
    "suppress_ragged_eofs",
    "do_handshake_on_connect",
    "ciphers",
    "logger_class",
    "logconfig",
    "logconfig_dict",
    "logconfig_json",
    "syslog",
    "syslog_addr",
    "syslog_prefix",
    "syslog_facility",
    "enable_stdio_inheritance",
    "statsd_host",
    "statsd_prefix",
    "dogstatsd_tags",
    "proc_name",
    "default_proc_name",
    "paste",
    "disable_redirect_access_to_syslog",
    "sendfile",
    "strip_header_spaces",
    "print_config",
    "check_config",
    "config",
    "on_starting",
    "on_reload",
    "when_ready",
    "pre_fork",
    "post_fork",
    "post_worker_init",
    "worker_int",
    "worker_abort",
    "pre_exec",
    "pre_request",
    "post_request",
    "child_exit",
    "worker_exit",
    "nworkers_changed",
    "on_exit",
    "ssl_context",
    "header_map",
];

/// The message for an unknown key: the nearest known name, if one is close.
fn unknown_setting(key: &str, source: &Source) -> String {
    if GUNICORN_ONLY.contains(&key) {
        return format!(
            "setting `{key}` in {source} is a gunicorn setting ferrocorn does not support"
        );
    }
    match nearest_setting(key) {
        Some(near) => format!("unknown setting `{key}` in {source} (did you mean `{near}`?)"),
        None => format!(
            "unknown setting `{key}` in {source} (`ferrocorn --print-config` lists every setting)"
        ),
    }
}

/// The known setting nearest to `key`, if it is close enough to be a typo.
pub fn nearest_setting(key: &str) -> Option<&'static str> {
    let normalized = key.to_ascii_lowercase().replace('-', "_");
    SETTINGS
        .iter()
        .map(|name| (strsim::damerau_levenshtein(&normalized, name), *name))
        .filter(|(d, name)| *d <= 3.max(name.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, name)| name)
}

fn describe_toml(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("string {s:?}"),
        toml::Value::Integer(i) => format!("integer {i}"),
        toml::Value::Float(f) => format!("float {f}"),
        toml::Value::Boolean(b) => format!("boolean {b}"),
        toml::Value::Datetime(d) => format!("datetime {d}"),
        toml::Value::Array(_) => "an array".to_owned(),
        toml::Value::Table(_) => "a table".to_owned(),
    }
}

impl Layer {
    /// Parses TOML text (the config file's content).
    pub fn from_toml_str(text: &str, source: Source) -> Result<Layer, ConfigError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let msg = e.message().trim().replace('\n', " ");
            match line {
                Some(line) => {
                    ConfigError(format!("{source} is not valid TOML: line {line}: {msg}"))
                }
                None => ConfigError(format!("{source} is not valid TOML: {msg}")),
            }
        })?;
        let mut layer = Layer::default();
        for (key, value) in &table {
            layer.set_toml(key, value, &source)?;
        }
        Ok(layer)
    }

    /// gunicorn's environment-dependent defaults: `PORT` (bind
    /// `0.0.0.0:$PORT`) and `WEB_CONCURRENCY` (workers). A config file or a
    /// flag overrides them, as in gunicorn where they are defaults.
    pub fn env_defaults(env: &dyn Fn(&str) -> Option<String>) -> Result<Layer, ConfigError> {
        let mut layer = Layer::default();
        if let Some(port) = nonempty(env("PORT")) {
            match port.trim().parse::<u16>() {
                Ok(p) if p > 0 => {
                    layer.bind = Some(Sourced {
                        value: vec![format!("0.0.0.0:{p}")],
                        source: Source::Env("PORT"),
                    })
                }
                _ => {
                    return err(format!(
                        "invalid value for `bind` in environment variable PORT: expected a port number 1-65535, got {port:?}"
                    ));
                }
            }
        }
        layer.workers = env_value(env, "WEB_CONCURRENCY", "workers")?;
        layer.virtualenv = env_value(env, "VIRTUAL_ENV", "virtualenv")?;
        layer.forwarded_allow_ips = env_value(env, "FORWARDED_ALLOW_IPS", "forwarded_allow_ips")?;
        Ok(layer)
    }

    /// The seed's environment variables, which override the config file.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Layer, ConfigError> {
        Ok(Layer {
            metrics_port: env_value(env, "PROMETHEUS_METRICS_EXPORT_PORT", "metrics_port")?,
            metrics_update_seconds: env_value(
                env,
                "GUNICORN_METRICS_UPDATE_SECONDS",
                "metrics_update_seconds",
            )?,
            log_format: env_value(env, "LOGGING_FORMATTER_NAME", "log_format")?,
            metrics_dir: env_value(env, "PROMETHEUS_MULTIPROC_DIR", "metrics_dir")?,
            ..Layer::default()
        })
    }

    /// The command line's settings.
    pub fn from_cli(args: &ServeArgs) -> Layer {
        fn cli<T: Clone>(v: &Option<T>, flag: &'static str) -> Option<Sourced<T>> {
            v.as_ref().map(|v| Sourced {
                value: v.clone(),
                source: Source::Cli(flag),
            })
        }
        Layer {
            bind: if args.bind.is_empty() {
                None
            } else {
                Some(Sourced {
                    value: args.bind.clone(),
                    source: Source::Cli("--bind"),
                })
            },
            workers: cli(&args.workers, "--workers"),
            threads: cli(&args.threads, "--threads"),
            worker_connections: cli(&args.worker_connections, "--worker-connections"),
            backlog: cli(&args.backlog, "--backlog"),
            timeout: cli(&args.timeout, "--timeout"),
            graceful_timeout: cli(&args.graceful_timeout, "--graceful-timeout"),
            keepalive: cli(&args.keep_alive, "--keep-alive"),
            header_timeout: cli(&args.header_timeout, "--header-timeout"),
            stall_timeout: cli(&args.stall_timeout, "--stall-timeout"),
            health_path: cli(&args.health_path, "--health-path"),
            max_requests: cli(&args.max_requests, "--max-requests"),
            max_requests_jitter: cli(&args.max_requests_jitter, "--max-requests-jitter"),
            limit_request_line: cli(&args.limit_request_line, "--limit-request-line"),
            limit_request_fields: cli(&args.limit_request_fields, "--limit-request-fields"),
            limit_request_field_size: cli(
                &args.limit_request_field_size,
                "--limit-request-field-size",
            ),
            limit_request_body: cli(&args.limit_request_body, "--limit-request-body"),
            loglevel: cli(&args.log_level, "--log-level"),
            errorlog: cli(&args.error_logfile, "--error-logfile"),
            accesslog: cli(&args.access_logfile, "--access-logfile"),
            access_log_format: cli(&args.access_logformat, "--access-logformat"),
            log_format: cli(&args.log_format, "--log-format"),
            log_color: cli(&args.log_color, "--log-color"),
            pidfile: cli(&args.pid, "--pid"),
            reuse_port: cli(&args.reuse_port.then_some(true), "--reuse-port"),
            app: cli(&args.app, "--app"),
            prefix: cli(&args.prefix, "--prefix"),
            metrics: cli(&args.no_metrics.then_some(false), "--no-metrics"),
            metrics_bind: cli(&args.metrics_bind, "--metrics-bind"),
            metrics_port: cli(&args.metrics_port.map(u64::from), "--metrics-port"),
            metrics_update_seconds: cli(&args.metrics_update_seconds, "--metrics-update-seconds"),
            metrics_dir: cli(&args.metrics_dir, "--metrics-dir"),
            wsgi_app: cli(&args.app_module, "APP_MODULE"),
            chdir: cli(&args.chdir, "--chdir"),
            pythonpath: cli(&args.pythonpath, "--pythonpath"),
            raw_env: (!args.env.is_empty()).then(|| Sourced {
                value: args.env.clone(),
                source: Source::Cli("--env"),
            }),
            virtualenv: cli(&args.virtualenv, "--virtualenv"),
            preload_app: cli(&args.preload.then_some(true), "--preload"),
            capture_output: cli(&args.capture_output.then_some(true), "--capture-output"),
            worker_class: cli(&args.worker_class, "--worker-class"),
            forwarded_allow_ips: cli(&args.forwarded_allow_ips, "--forwarded-allow-ips"),
            secure_scheme_headers: None,
            accept_queue_wait: cli(
                &args.no_accept_queue_wait.then_some(false),
                "--no-accept-queue-wait",
            ),
        }
    }
}

/// The largest config file read: a settings file is a few KiB.
const MAX_CONFIG_FILE: u64 = 1 << 20;

/// The text of a config file: a regular file of at most
/// [`MAX_CONFIG_FILE`] bytes. A FIFO, a device or a pipe (`-c <(...)`) is
/// refused without blocking: opened non-blocking, checked with fstat, so
/// `/dev/zero` cannot fill the memory, a FIFO cannot hang the start or a
/// reload, and a pipe already drained cannot read as an empty config on
/// SIGHUP (issue 19).
pub fn read_config_file(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let fail = |what: &dyn fmt::Display| {
        ConfigError(format!(
            "cannot read config file {}: {what}",
            path.display()
        ))
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| fail(&e))?;
    let meta = file.metadata().map_err(|e| fail(&e))?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let what = if kind.is_fifo() {
            "a pipe or FIFO"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else if kind.is_dir() {
            "a directory"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a file"
        };
        return Err(fail(&format_args!(
            "it is {what}, not a regular file (give the path of a file)"
        )));
    }
    if meta.len() > MAX_CONFIG_FILE {
        return Err(fail(&format_args!(
            "{} bytes is more than the limit of {MAX_CONFIG_FILE}",
            meta.len()
        )));
    }
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(&e))?;
    if bytes.len() as u64 > MAX_CONFIG_FILE {
        return Err(fail(&format_args!(
            "more than the limit of {MAX_CONFIG_FILE} bytes"
        )));
    }
    String::from_utf8(bytes).map_err(|_| fail(&"it is not UTF-8 text"))
}

fn nonempty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

fn env_value<T: SettingValue>(
    env: &dyn Fn(&str) -> Option<String>,
    var: &'static str,
    setting: &str,
) -> Result<Option<Sourced<T>>, ConfigError> {
    let Some(raw) = nonempty(env(var)) else {
        return Ok(None);
    };
    match T::from_env(&raw) {
        Some(value) => Ok(Some(Sourced {
            value,
            source: Source::Env(var),
        })),
        None => err(format!(
            "invalid value for `{setting}` in environment variable {var}: expected {}, got {raw:?}",
            T::EXPECTED
        )),
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

impl fmt::Display for Bind {
    /// The canonical form, accepted by [`Bind::parse`] and the supervisor.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bind::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Bind::Tcp { host, port } => write!(f, "{host}:{port}"),
            Bind::Unix(p) => write!(f, "unix:{}", p.display()),
            Bind::Fd(fd) => write!(f, "fd://{fd}"),
        }
    }
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

/// The metrics exporter's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSettings {
    /// Address the exporter binds (`metrics_bind`:`metrics_port`).
    pub bind: SocketAddr,
    /// Directory of the shm files; `None` = a private temporary directory.
    pub dir: Option<PathBuf>,
    /// Seconds between samples of sampled gauges.
    pub update_interval: Duration,
    /// Workers observe each accepted TCP connection's listen-queue wait
    /// (`gunicorn_accept_queue_wait_seconds`, one `getsockopt` per accept).
    pub accept_queue_wait: bool,
}

/// gunicorn's default access log format.
pub use ferrocorn_log::DEFAULT_ACCESS_LOG_FORMAT;

/// ferrocorn's limit on a request body when none is configured: 1 GiB.
/// gunicorn has no limit (gunicorn #1659); 0 turns the limit off.
pub const DEFAULT_LIMIT_REQUEST_BODY: u64 = 1 << 30;

/// Every setting, validated, with its defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Addresses to listen on.
    pub binds: Vec<Bind>,
    /// Worker processes.
    pub workers: usize,
    /// Threads per worker.
    pub threads: usize,
    /// Maximum open connections per worker.
    pub worker_connections: usize,
    /// listen() backlog.
    pub backlog: i32,
    /// A worker making no progress this long is killed (zero = never).
    pub timeout: Duration,
    /// How long a graceful stop waits.
    pub graceful_timeout: Duration,
    /// Idle keep-alive time (zero = no keep-alive).
    pub keepalive: Duration,
    /// Time a client has to send a request head (zero = no limit).
    pub header_timeout: Duration,
    /// A request body or a response write stalled this long is cut (zero =
    /// no limit).
    pub stall_timeout: Duration,
    /// The path each worker answers itself as a health probe; `None` = off.
    pub health_path: Option<String>,
    /// Requests before a worker restarts (0 = never).
    pub max_requests: u64,
    /// Random extra requests before a restart.
    pub max_requests_jitter: u64,
    /// Longest request line (0 = the maximum, 8190).
    pub limit_request_line: usize,
    /// Most header fields.
    pub limit_request_fields: usize,
    /// Longest header field line, its CRLF included (0 = 8190, at most 65536).
    pub limit_request_field_size: usize,
    /// Largest request body (0 = unlimited).
    pub limit_request_body: u64,
    /// Error log level: debug, info, warning, error or critical.
    pub loglevel: String,
    /// Error log destination: `-` (stderr) or a path.
    pub errorlog: String,
    /// Access log destination: `-` (stdout) or a path; `None` = off.
    pub accesslog: Option<String>,
    /// Access log format.
    pub access_log_format: String,
    /// Log format: default, json or plain.
    pub log_format: String,
    /// Console colors: auto, always or never.
    pub log_color: String,
    /// Pid file.
    pub pidfile: Option<PathBuf>,
    /// SO_REUSEPORT.
    pub reuse_port: bool,
    /// The built-in app.
    pub app: AppName,
    /// Prefix of metric and logger names (`gunicorn`).
    pub prefix: String,
    /// The metrics exporter, `None` when turned off.
    pub metrics: Option<MetricsSettings>,
    /// The Python (WSGI) app and its settings.
    pub python: PythonSettings,
    /// The config file read, if any.
    pub config_file: Option<PathBuf>,
    /// Whether that file was empty (or blank): a reload refuses a file
    /// found empty where it was not, a file being rewritten.
    pub config_file_empty: bool,
    /// Every setting's source, for `--print-config` and for the parts of
    /// the binary that must say when a setting asks for a part not built.
    pub explicit: Vec<(&'static str, Source)>,
}

impl Config {
    /// Reads the config file named by `args` (if any), the environment and
    /// the command line, and validates the result. Called again on SIGHUP.
    pub fn load(
        args: &ServeArgs,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let (file, file_empty) = match &args.config {
            Some(path) => {
                let text = read_config_file(path)?;
                let layer = Layer::from_toml_str(&text, Source::File(path.to_owned()))?;
                (layer, text.trim().is_empty())
            }
            None => (Layer::default(), false),
        };
        let layer = Layer::from_cli(args)
            .over(Layer::from_env(env)?)
            .over(file)
            .over(Layer::env_defaults(env)?);
        let mut config = layer.resolve()?;
        config.config_file = args.config.clone();
        config.config_file_empty = file_empty;
        Ok(config)
    }

    /// Loads the config with the process environment.
    pub fn load_from_process(args: &ServeArgs) -> Result<Config, ConfigError> {
        Config::load(args, &|name| std::env::var(name).ok())
    }

    /// The source of a setting set explicitly (not a default), if any.
    #[cfg(test)]
    pub fn source_of(&self, name: &str) -> Option<&Source> {
        self.explicit
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| s)
    }

    /// The effective configuration as a TOML document that `-c` accepts.
    pub fn to_toml(&self) -> String {
        use toml::Value as V;
        let mut t = toml::Table::new();
        // Every integer setting is validated to fit (`I64_MAX`): never clamped.
        let int = |v: u64| V::Integer(i64::try_from(v).unwrap_or(i64::MAX));
        let secs = |d: Duration| Seconds(d.as_secs_f64()).to_toml();
        t.insert(
            "bind".into(),
            V::Array(
                self.binds
                    .iter()
                    .map(|b| V::String(b.to_string()))
                    .collect(),
            ),
        );
        t.insert("workers".into(), int(self.workers as u64));
        t.insert("threads".into(), int(self.threads as u64));
        t.insert(
            "worker_connections".into(),
            int(self.worker_connections as u64),
        );
        t.insert("backlog".into(), int(self.backlog as u64));
        t.insert("timeout".into(), secs(self.timeout));
        t.insert("graceful_timeout".into(), secs(self.graceful_timeout));
        t.insert("keepalive".into(), secs(self.keepalive));
        t.insert("header_timeout".into(), secs(self.header_timeout));
        t.insert("stall_timeout".into(), secs(self.stall_timeout));
        if let Some(p) = &self.health_path {
            t.insert("health_path".into(), V::String(p.clone()));
        }
        t.insert("max_requests".into(), int(self.max_requests));
        t.insert("max_requests_jitter".into(), int(self.max_requests_jitter));
        t.insert(
            "limit_request_line".into(),
            int(self.limit_request_line as u64),
        );
        t.insert(
            "limit_request_fields".into(),
            int(self.limit_request_fields as u64),
        );
        t.insert(
            "limit_request_field_size".into(),
            int(self.limit_request_field_size as u64),
        );
        t.insert("limit_request_body".into(), int(self.limit_request_body));
        t.insert("loglevel".into(), V::String(self.loglevel.clone()));
        t.insert("errorlog".into(), V::String(self.errorlog.clone()));
        if let Some(a) = &self.accesslog {
            t.insert("accesslog".into(), V::String(a.clone()));
        }
        t.insert(
            "access_log_format".into(),
            V::String(self.access_log_format.clone()),
        );
        t.insert("log_format".into(), V::String(self.log_format.clone()));
        t.insert("log_color".into(), V::String(self.log_color.clone()));
        if let Some(p) = &self.pidfile {
            t.insert("pidfile".into(), V::String(p.display().to_string()));
        }
        t.insert("reuse_port".into(), V::Boolean(self.reuse_port));
        if self.python.wsgi_app.is_none() {
            t.insert("app".into(), V::String(self.app.as_str().into()));
        }
        t.insert("prefix".into(), V::String(self.prefix.clone()));
        t.insert("metrics".into(), V::Boolean(self.metrics.is_some()));
        if let Some(m) = &self.metrics {
            t.insert("metrics_bind".into(), V::String(m.bind.ip().to_string()));
            t.insert("metrics_port".into(), int(u64::from(m.bind.port())));
            t.insert("metrics_update_seconds".into(), secs(m.update_interval));
            t.insert("accept_queue_wait".into(), V::Boolean(m.accept_queue_wait));
            if let Some(d) = &m.dir {
                t.insert("metrics_dir".into(), V::String(d.display().to_string()));
            }
        }
        self.python.to_toml(&mut t);
        toml::to_string(&t).unwrap_or_default()
    }
}

/// The defaults that depend on how the binary was built.
fn default_log_format() -> &'static str {
    if cfg!(feature = "structured-log") {
        "default"
    } else {
        "plain"
    }
}

fn default_metrics() -> bool {
    cfg!(feature = "metrics")
}

/// Takes a value or its default and remembers whether it was explicit.
struct Resolver {
    explicit: Vec<(&'static str, Source)>,
}

impl Resolver {
    fn take<T>(&mut self, name: &'static str, v: Option<Sourced<T>>, default: T) -> Sourced<T> {
        match v {
            Some(s) => {
                self.explicit.push((name, s.source.clone()));
                s
            }
            None => Sourced {
                value: default,
                source: Source::Default,
            },
        }
    }
}

fn bad<T>(name: &str, source: &Source, msg: impl fmt::Display) -> Result<T, ConfigError> {
    match source {
        Source::Default => err(format!("invalid default for `{name}`: {msg}")),
        _ => err(format!("invalid value for `{name}` in {source}: {msg}")),
    }
}

fn count(
    name: &'static str,
    v: &Sourced<u64>,
    min: u64,
    max: u64,
    note: &str,
) -> Result<u64, ConfigError> {
    if v.value < min || v.value > max {
        return bad(
            name,
            &v.source,
            format_args!("{} is out of range {min}..={max}{note}", v.value),
        );
    }
    Ok(v.value)
}

/// The largest integer a TOML file holds: the bound of the u64 settings, so
/// that `--print-config` prints what is used and it loads back.
const I64_MAX: u64 = i64::MAX as u64;

/// The smallest positive duration: shorter ones would round to zero, which
/// means "disabled" for most durations (issue 19).
const MIN_DURATION: Duration = Duration::from_millis(1);

fn duration(
    name: &'static str,
    v: &Sourced<Seconds>,
    positive: bool,
) -> Result<Duration, ConfigError> {
    let s = v.value.0;
    if positive && s <= 0.0 {
        return bad(
            name,
            &v.source,
            format_args!("{s} must be more than 0 seconds"),
        );
    }
    if s < 0.0 {
        return bad(name, &v.source, format_args!("{s} must not be negative"));
    }
    // A year bounds every duration: larger values are typos.
    if s > 365.0 * 86400.0 {
        return bad(
            name,
            &v.source,
            format_args!("{s} seconds is more than a year"),
        );
    }
    let d = Duration::from_secs_f64(s);
    if s > 0.0 && d < MIN_DURATION {
        return bad(
            name,
            &v.source,
            format_args!(
                "{s} seconds is less than the smallest duration, 0.001 seconds{}",
                if positive { "" } else { " (0 disables)" }
            ),
        );
    }
    Ok(d)
}

/// `health_path`: empty is off; else an origin-form path, matched byte for
/// byte against a request's path (without its query).
fn health_path(v: &Sourced<String>) -> Result<Option<String>, ConfigError> {
    let p = v.value.as_str();
    if p.is_empty() {
        return Ok(None);
    }
    if !p.starts_with('/') {
        return bad(
            "health_path",
            &v.source,
            format_args!("{p:?} does not start with `/`"),
        );
    }
    if let Some(c) = p
        .chars()
        .find(|c| matches!(c, '?' | '#') || !c.is_ascii_graphic())
    {
        return bad(
            "health_path",
            &v.source,
            format_args!("{p:?} has {c:?}: a path without query, fragment, spaces or non-ASCII"),
        );
    }
    if p.len() > 1024 {
        return bad("health_path", &v.source, "longer than 1024 bytes");
    }
    Ok(Some(p.to_owned()))
}

fn one_of<'a>(
    name: &'static str,
    v: &Sourced<String>,
    allowed: &[&'a str],
) -> Result<&'a str, ConfigError> {
    let lower = v.value.to_ascii_lowercase();
    match allowed.iter().find(|a| **a == lower) {
        Some(a) => Ok(a),
        None => bad(
            name,
            &v.source,
            format_args!("{:?} is not one of {}", v.value, allowed.join(", ")),
        ),
    }
}

/// The longest unix socket path: `sun_path` holds 108 bytes with the NUL.
const MAX_UNIX_PATH: usize = 107;

/// Two TCP binds of IP addresses on one port where one covers the other
/// (`0.0.0.0:80` and `127.0.0.1:80`; `[::]:80` and any address of port 80
/// while `net.ipv6.bindv6only` is 0, Linux's default), in `binds`' order.
/// Host names are not resolved here; port 0 never overlaps.
fn overlapping_binds(binds: &[Bind]) -> Option<(&Bind, &Bind)> {
    let v6_covers_v4 =
        std::fs::read_to_string("/proc/sys/net/ipv6/bindv6only").map_or(true, |s| s.trim() == "0");
    let ip_port = |b: &Bind| match b {
        Bind::Tcp { host, port } if *port != 0 => host.parse::<IpAddr>().ok().map(|ip| (ip, *port)),
        _ => None,
    };
    let covers = |wide: IpAddr, other: IpAddr| match (wide, other) {
        (IpAddr::V4(w), IpAddr::V4(_)) => w.is_unspecified(),
        (IpAddr::V6(w), IpAddr::V6(_)) => w.is_unspecified(),
        (IpAddr::V6(w), IpAddr::V4(_)) => w.is_unspecified() && v6_covers_v4,
        (IpAddr::V4(_), IpAddr::V6(_)) => false,
    };
    for (i, a) in binds.iter().enumerate() {
        for b in &binds[i + 1..] {
            if let (Some((ia, pa)), Some((ib, pb))) = (ip_port(a), ip_port(b))
                && pa == pb
                && (ia == ib || covers(ia, ib) || covers(ib, ia))
            {
                return Some((a, b));
            }
        }
    }
    None
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

impl Layer {
    /// Applies defaults and validates every value.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let mut r = Resolver {
            explicit: Vec::new(),
        };

        let bind = r.take("bind", self.bind, vec!["127.0.0.1:8000".to_owned()]);
        if bind.value.is_empty() {
            return bad("bind", &bind.source, "no address given");
        }
        let mut binds = Vec::new();
        for b in &bind.value {
            let parsed = Bind::parse(b).or_else(|e| bad("bind", &bind.source, e))?;
            if binds.contains(&parsed) {
                return bad(
                    "bind",
                    &bind.source,
                    format_args!("{parsed} is given twice"),
                );
            }
            if let Bind::Unix(path) = &parsed
                && path.as_os_str().len() > MAX_UNIX_PATH
            {
                return bad(
                    "bind",
                    &bind.source,
                    format_args!(
                        "unix socket path {} is {} bytes, more than the {MAX_UNIX_PATH} a socket address holds",
                        path.display(),
                        path.as_os_str().len()
                    ),
                );
            }
            binds.push(parsed);
        }

        let workers = r.take("workers", self.workers, 1);
        let workers = count("workers", &workers, 1, 4096, "")? as usize;
        let threads = r.take("threads", self.threads, 1);
        let threads = count("threads", &threads, 1, 10_000, "")? as usize;
        let wc = r.take("worker_connections", self.worker_connections, 1000);
        let worker_connections = count("worker_connections", &wc, 1, 1_000_000, "")? as usize;
        let backlog = r.take("backlog", self.backlog, 2048);
        let backlog = count("backlog", &backlog, 1, i32::MAX as u64, "")? as i32;

        let v = r.take("timeout", self.timeout, Seconds(30.0));
        let timeout = duration("timeout", &v, false)?;
        let v = r.take("graceful_timeout", self.graceful_timeout, Seconds(30.0));
        let graceful_timeout = duration("graceful_timeout", &v, false)?;
        // gunicorn's default is 2 s; behind a load balancer whose idle
        // timeout is longer that causes 502s (gunicorn #1296). The seed's 120.
        let v = r.take("keepalive", self.keepalive, Seconds(120.0));
        let keepalive = duration("keepalive", &v, false)?;
        let v = r.take("header_timeout", self.header_timeout, Seconds(30.0));
        let header_timeout = duration("header_timeout", &v, false)?;
        // Apart from `timeout`, which judges the app: `timeout = 0` (never
        // kill) is common in gunicorn configs and must not make a body or a
        // write that pauses for a millisecond fail.
        let v = r.take("stall_timeout", self.stall_timeout, Seconds(30.0));
        let stall_timeout = duration("stall_timeout", &v, false)?;
        let health_path = match self.health_path {
            Some(v) => {
                r.explicit.push(("health_path", v.source.clone()));
                health_path(&v)?
            }
            None => None,
        };

        // TOML integers are i64: a larger value would not load back from
        // `--print-config` (issue 19), and no worker serves that many.
        let v = r.take("max_requests", self.max_requests, 0);
        let max_requests = count("max_requests", &v, 0, I64_MAX, "")?;
        let v = r.take("max_requests_jitter", self.max_requests_jitter, 0);
        let max_requests_jitter = count("max_requests_jitter", &v, 0, I64_MAX, "")?;

        let v = r.take("limit_request_line", self.limit_request_line, 4094);
        let limit_request_line = count("limit_request_line", &v, 0, 8190, " (0 = 8190)")? as usize;
        let v = r.take("limit_request_fields", self.limit_request_fields, 100);
        let limit_request_fields = count("limit_request_fields", &v, 0, 32768, "")? as usize;
        let v = r.take(
            "limit_request_field_size",
            self.limit_request_field_size,
            8190,
        );
        // Honoured above 8190 as gunicorn does, up to the worker's maximum.
        let limit_request_field_size = count(
            "limit_request_field_size",
            &v,
            0,
            ferrocorn_worker::parse::MAX_FIELD_SIZE as u64,
            " (0 = 8190)",
        )? as usize;
        let v = r.take(
            "limit_request_body",
            self.limit_request_body,
            DEFAULT_LIMIT_REQUEST_BODY,
        );
        let limit_request_body = count("limit_request_body", &v, 0, I64_MAX, " (0 = unlimited)")?;

        let v = r.take("loglevel", self.loglevel, "info".to_owned());
        let loglevel = match one_of(
            "loglevel",
            &v,
            &["debug", "info", "warning", "warn", "error", "critical"],
        )? {
            "warn" => "warning",
            l => l,
        }
        .to_owned();
        let v = r.take("errorlog", self.errorlog, "-".to_owned());
        if v.value.is_empty() {
            return bad("errorlog", &v.source, "empty path (use `-` for stderr)");
        }
        let errorlog = v.value;
        let accesslog = match self.accesslog {
            Some(v) => {
                r.explicit.push(("accesslog", v.source.clone()));
                if v.value.is_empty() {
                    return bad("accesslog", &v.source, "empty path (use `-` for stdout)");
                }
                Some(v.value)
            }
            None => None,
        };
        let v = r.take(
            "access_log_format",
            self.access_log_format,
            DEFAULT_ACCESS_LOG_FORMAT.to_owned(),
        );
        if let Err(e) = ferrocorn_log::AccessLogFormat::parse(&v.value) {
            return bad("access_log_format", &v.source, e);
        }
        let access_log_format = v.value;
        let v = r.take(
            "log_format",
            self.log_format,
            default_log_format().to_owned(),
        );
        let log_format = one_of("log_format", &v, &["default", "json", "plain"])?;
        if !cfg!(feature = "structured-log") && log_format != "plain" {
            return bad(
                "log_format",
                &v.source,
                format_args!(
                    "{log_format:?} needs structured logs, which are not built into this binary (feature `structured-log`); use \"plain\""
                ),
            );
        }
        let log_format = log_format.to_owned();
        let v = r.take("log_color", self.log_color, "auto".to_owned());
        let log_color = one_of("log_color", &v, &["auto", "always", "never"])?.to_owned();

        let pidfile = match self.pidfile {
            Some(v) => {
                r.explicit.push(("pidfile", v.source.clone()));
                if v.value.as_os_str().is_empty() {
                    return bad("pidfile", &v.source, "empty path");
                }
                Some(v.value)
            }
            None => None,
        };
        let reuse_port = r.take("reuse_port", self.reuse_port, false).value;
        // Without SO_REUSEPORT the second of two overlapping binds fails at
        // start: say so now, for --check-config too (issue 19).
        if !reuse_port && let Some((a, b)) = overlapping_binds(&binds) {
            return bad(
                "bind",
                &bind.source,
                format_args!("{a} and {b} overlap (the second cannot be bound)"),
            );
        }

        let v = r.take("app", self.app, "demo".to_owned());
        let app = match AppName::parse(&v.value) {
            Some(a) => a,
            None => {
                return bad(
                    "app",
                    &v.source,
                    format_args!(
                        "no built-in app {:?} (built-in apps: {})",
                        v.value,
                        AppName::NAMES.join(", ")
                    ),
                );
            }
        };
        let v = r.take(
            "prefix",
            self.prefix,
            ferrocorn_log::DEFAULT_PREFIX.to_owned(),
        );
        if !is_metric_name(&v.value) {
            return bad(
                "prefix",
                &v.source,
                format_args!(
                    "{:?} is not a valid metric name prefix ([a-zA-Z_:][a-zA-Z0-9_:]*)",
                    v.value
                ),
            );
        }
        let prefix = v.value;

        let metrics_on = r.take("metrics", self.metrics, default_metrics());
        let metrics_bind = r.take("metrics_bind", self.metrics_bind, "0.0.0.0".to_owned());
        let metrics_port = r.take("metrics_port", self.metrics_port, 8001);
        let metrics_update = r.take(
            "metrics_update_seconds",
            self.metrics_update_seconds,
            Seconds(5.0),
        );
        let metrics_dir = self
            .metrics_dir
            .inspect(|v| r.explicit.push(("metrics_dir", v.source.clone())));
        let accept_queue_wait = r.take("accept_queue_wait", self.accept_queue_wait, true);

        let metrics = if !cfg!(feature = "metrics") {
            // A part built out fails clearly when asked for, never silently.
            let asked = [
                ("metrics", &metrics_on.source),
                ("metrics_bind", &metrics_bind.source),
                ("metrics_port", &metrics_port.source),
                ("metrics_update_seconds", &metrics_update.source),
                ("accept_queue_wait", &accept_queue_wait.source),
            ]
            .into_iter()
            .chain(metrics_dir.as_ref().map(|d| ("metrics_dir", &d.source)))
            .find(|(_, s)| **s != Source::Default);
            match asked {
                Some(("metrics", _)) if !metrics_on.value => {}
                Some((name, source)) => {
                    return err(format!(
                        "metrics are not built into this binary (feature `metrics`), but `{name}` is set in {source}"
                    ));
                }
                None => {}
            }
            None
        } else if metrics_on.value {
            let ip: IpAddr = metrics_bind.value.trim().parse().or_else(|_| {
                bad(
                    "metrics_bind",
                    &metrics_bind.source,
                    format_args!("{:?} is not an IP address", metrics_bind.value),
                )
            })?;
            let port = count("metrics_port", &metrics_port, 1, 65535, "")? as u16;
            let update_interval = duration("metrics_update_seconds", &metrics_update, true)?;
            if let Some(d) = &metrics_dir
                && d.value.as_os_str().is_empty()
            {
                return bad("metrics_dir", &d.source, "empty path");
            }
            let bind = SocketAddr::new(ip, port);
            if binds
                .iter()
                .any(|b| matches!(b, Bind::Tcp { port: p, .. } if *p == port))
            {
                return bad(
                    "metrics_port",
                    &metrics_port.source,
                    format_args!("{port} is also a port of `bind`"),
                );
            }
            Some(MetricsSettings {
                bind,
                dir: metrics_dir.map(|d| d.value),
                update_interval,
                accept_queue_wait: accept_queue_wait.value,
            })
        } else {
            None
        };

        let app_explicit = r.explicit.iter().find(|(n, _)| *n == "app").cloned();
        let python = PythonSettings::resolve(
            &mut r,
            PythonLayer {
                wsgi_app: self.wsgi_app,
                chdir: self.chdir,
                pythonpath: self.pythonpath,
                raw_env: self.raw_env,
                virtualenv: self.virtualenv,
                preload_app: self.preload_app,
                capture_output: self.capture_output,
                worker_class: self.worker_class,
                forwarded_allow_ips: self.forwarded_allow_ips,
                secure_scheme_headers: self.secure_scheme_headers,
            },
        )?;
        if let (Some(spec), Some((_, app_source))) = (&python.wsgi_app, &app_explicit) {
            return err(format!(
                "both a built-in app (`app` in {app_source}) and a WSGI app ({spec:?}) are given: choose one"
            ));
        }

        if !cfg!(feature = "supervisor") && workers > 1 {
            let source = r
                .explicit
                .iter()
                .find(|(n, _)| *n == "workers")
                .map(|(_, s)| s.to_string())
                .unwrap_or_default();
            return err(format!(
                "the supervisor is not built into this binary (feature `supervisor`): it serves from one process, but `workers` = {workers} in {source}"
            ));
        }

        Ok(Config {
            binds,
            workers,
            threads,
            worker_connections,
            backlog,
            timeout,
            graceful_timeout,
            keepalive,
            header_timeout,
            stall_timeout,
            health_path,
            max_requests,
            max_requests_jitter,
            limit_request_line,
            limit_request_fields,
            limit_request_field_size,
            limit_request_body,
            loglevel,
            errorlog,
            accesslog,
            access_log_format,
            log_format,
            log_color,
            pidfile,
            reuse_port,
            app,
            prefix,
            metrics,
            python,
            config_file: None,
            config_file_empty: false,
            explicit: r.explicit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::collections::HashMap;

    fn args(argv: &[&str]) -> ServeArgs {
        let mut full = vec!["ferrocorn"];
        full.extend_from_slice(argv);
        crate::cli::Cli::try_parse_from(full).unwrap().serve
    }

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
        f
    }

    fn load(argv: &[&str], vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::load(&args(argv), &env(vars))
    }

    #[test]
    fn defaults_are_gunicorns_except_keepalive() {
        let c = load(&[], &[]).unwrap();
        assert_eq!(c.binds, vec![Bind::parse("127.0.0.1:8000").unwrap()]);
        assert_eq!(c.workers, 1);
        assert_eq!(c.threads, 1);
        assert_eq!(c.worker_connections, 1000);
        assert_eq!(c.backlog, 2048);
        assert_eq!(c.timeout, Duration::from_secs(30));
        assert_eq!(c.stall_timeout, Duration::from_secs(30));
        assert_eq!(c.graceful_timeout, Duration::from_secs(30));
        assert_eq!(c.keepalive, Duration::from_secs(120));
        assert_eq!(c.limit_request_line, 4094);
        assert_eq!(c.limit_request_fields, 100);
        assert_eq!(c.limit_request_field_size, 8190);
        assert_eq!(c.loglevel, "info");
        assert_eq!(c.errorlog, "-");
        assert_eq!(c.accesslog, None);
        assert_eq!(c.access_log_format, DEFAULT_ACCESS_LOG_FORMAT);
        assert_eq!(c.prefix, "gunicorn");
        assert_eq!(c.app, AppName::Demo);
        assert!(c.explicit.is_empty());
        if cfg!(feature = "metrics") {
            let m = c.metrics.unwrap();
            assert_eq!(m.bind, "0.0.0.0:8001".parse().unwrap());
            assert_eq!(m.update_interval, Duration::from_secs(5));
            assert_eq!(m.dir, None);
        } else {
            assert_eq!(c.metrics, None);
        }
    }

    #[test]
    fn health_path_is_off_by_default_and_validated() {
        assert_eq!(load(&[], &[]).unwrap().health_path, None);
        let f = file("health_path = \"/healthz\"\n");
        let path = f.path().to_str().unwrap();
        let c = load(&["-c", path], &[]).unwrap();
        assert_eq!(c.health_path.as_deref(), Some("/healthz"));
        // Printed so that `-c` reads it back, and turned off by "".
        let printed = file(&c.to_toml());
        let again = load(&["-c", printed.path().to_str().unwrap()], &[]).unwrap();
        assert_eq!(again.health_path.as_deref(), Some("/healthz"));
        let c = load(&["-c", path, "--health-path", ""], &[]).unwrap();
        assert_eq!(c.health_path, None);
        assert!(!c.to_toml().contains("health_path"));
        for (bad, why) in [
            ("healthz", "does not start with `/`"),
            ("/healthz?x=1", "'?'"),
            ("/a b", "' '"),
            ("/é", "'é'"),
        ] {
            let e = load(&["--health-path", bad], &[]).unwrap_err();
            assert!(
                e.0.contains("`health_path`") && e.0.contains("--health-path") && e.0.contains(why),
                "{bad:?}: {e}"
            );
        }
    }

    #[test]
    fn file_then_env_then_cli() {
        let f = file("timeout = 15\nthreads = 2\nworkers = 1\nlog_format = \"plain\"\n");
        let path = f.path().to_str().unwrap();
        let c = load(&["-c", path], &[]).unwrap();
        assert_eq!(c.timeout, Duration::from_secs(15));
        assert_eq!(c.threads, 2);
        assert_eq!(c.source_of("timeout"), Some(&Source::File(f.path().into())));

        // The seed's env var beats the file ...
        let c = load(&["-c", path], &[("LOGGING_FORMATTER_NAME", "plain")]).unwrap();
        assert_eq!(
            c.source_of("log_format"),
            Some(&Source::Env("LOGGING_FORMATTER_NAME"))
        );
        // ... and the command line beats both.
        let c = load(
            &[
                "-c",
                path,
                "--timeout",
                "7",
                "--threads",
                "3",
                "--log-format",
                "plain",
            ],
            &[("LOGGING_FORMATTER_NAME", "json")],
        )
        .unwrap();
        assert_eq!(c.timeout, Duration::from_secs(7));
        assert_eq!(c.threads, 3);
        assert_eq!(
            c.source_of("log_format"),
            Some(&Source::Cli("--log-format"))
        );
    }

    #[test]
    fn port_and_web_concurrency_are_defaults_as_in_gunicorn() {
        let vars = [("PORT", "9000"), ("WEB_CONCURRENCY", "3")];
        if cfg!(feature = "supervisor") {
            let c = load(&[], &vars).unwrap();
            assert_eq!(c.binds, vec![Bind::parse("0.0.0.0:9000").unwrap()]);
            assert_eq!(c.workers, 3);
        } else {
            // One process only: asking for 3 workers says so.
            let e = load(&[], &vars).unwrap_err();
            assert!(
                e.0.contains("supervisor is not built") && e.0.contains("WEB_CONCURRENCY"),
                "{e}"
            );
        }
        // A config file overrides them.
        let f = file("bind = \"127.0.0.1:7000\"\nworkers = 1\n");
        let c = load(&["-c", f.path().to_str().unwrap()], &vars).unwrap();
        assert_eq!(c.binds, vec![Bind::parse("127.0.0.1:7000").unwrap()]);
        assert_eq!(c.workers, 1);
        // So does the command line.
        let c = load(
            &["-b", "unix:/tmp/x.sock", "-b", "[::1]:81", "-w", "1"],
            &vars,
        )
        .unwrap();
        assert_eq!(
            c.binds,
            vec![
                Bind::Unix("/tmp/x.sock".into()),
                Bind::Tcp {
                    host: "::1".into(),
                    port: 81
                }
            ]
        );
        let e = load(&[], &[("PORT", "http")]).unwrap_err();
        assert!(e.0.contains("PORT"), "{e}");
    }

    #[test]
    fn unknown_key_suggests_nearest() {
        let f = file("grateful_timeout = 120\n");
        let e = load(&["-c", f.path().to_str().unwrap()], &[]).unwrap_err();
        assert!(e.0.contains("unknown setting `grateful_timeout`"), "{e}");
        assert!(e.0.contains("did you mean `graceful_timeout`?"), "{e}");
        assert_eq!(nearest_setting("keep-alive"), Some("keepalive"));
        assert_eq!(nearest_setting("worker"), Some("workers"));
        assert_eq!(nearest_setting("wsgi_application_module_path"), None);
        let e = Layer::from_toml_str("daemon = true", Source::Default).unwrap_err();
        assert!(
            e.0.contains("gunicorn setting ferrocorn does not support"),
            "{e}"
        );
    }

    #[test]
    fn python_settings_as_gunicorn() {
        let f = file(
            "wsgi_app = \"proj.wsgi:application\"\nraw_env = [\"A=1\", \"B=x=y\"]\npythonpath = \"a, b\"\npreload_app = true\nworker_class = \"gthread\"\n[secure_scheme_headers]\nX-PROTO = \"https\"\n",
        );
        let c = load(
            &["-c", f.path().to_str().unwrap()],
            &[("VIRTUAL_ENV", "/v")],
        )
        .unwrap();
        let p = &c.python;
        assert_eq!(p.wsgi_app.as_deref(), Some("proj.wsgi:application"));
        assert_eq!(
            p.raw_env,
            vec![("A".into(), "1".into()), ("B".into(), "x=y".into())]
        );
        assert_eq!(p.pythonpath, vec![PathBuf::from("a"), PathBuf::from("b")]);
        assert!(p.preload);
        assert_eq!(p.virtualenv, Some(PathBuf::from("/v")));
        assert_eq!(p.forwarded_allow_ips, "127.0.0.1,::1");
        assert_eq!(
            p.secure_scheme_headers,
            vec![("X-PROTO".into(), "https".into())]
        );
        // --print-config's output reads back the same.
        let again = file(&c.to_toml());
        let c2 = load(&["-c", again.path().to_str().unwrap()], &[]).unwrap();
        assert_eq!(c2.python, c.python);
        // The positional APP_MODULE beats the file; FORWARDED_ALLOW_IPS is read.
        let c = load(
            &["-c", f.path().to_str().unwrap(), "other:app"],
            &[("FORWARDED_ALLOW_IPS", "*")],
        )
        .unwrap();
        assert_eq!(c.python.wsgi_app.as_deref(), Some("other:app"));
        assert_eq!(c.python.forwarded_allow_ips, "*");
    }

    #[test]
    fn python_settings_refused_with_one_line() {
        let e = load(&["-k", "uvicorn.workers.UvicornWorker", "m:app"], &[]).unwrap_err();
        assert!(
            e.0.contains("\"uvicorn.workers.UvicornWorker\" is not supported"),
            "{e}"
        );
        assert!(e.0.contains("use sync or gthread"), "{e}");
        assert!(!e.0.contains('\n'), "{e}");
        let e = load(&["-k", "gevent"], &[]).unwrap_err();
        assert!(e.0.contains("gevent"), "{e}");
        let e = load(&["--app", "demo", "m:app"], &[]).unwrap_err();
        assert!(e.0.contains("choose one"), "{e}");
        let e = load(&["--env", "NOEQUALS", "m:app"], &[]).unwrap_err();
        assert!(e.0.contains("is not KEY=VALUE"), "{e}");
        let e = load(&["--forwarded-allow-ips", "10.0.0.0/99"], &[]).unwrap_err();
        assert!(e.0.contains("forwarded_allow_ips"), "{e}");
        for class in ["sync", "gthread"] {
            assert!(load(&["-k", class, "m:app"], &[]).is_ok());
        }
    }

    #[test]
    fn values_are_validated_naming_the_setting() {
        type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case<'_>] = &[
            (
                &["--threads", "0"],
                &[],
                "`threads` in command line --threads",
            ),
            (&["--timeout=-1"], &[], "`timeout`"),
            (&["--log-level", "loud"], &[], "`loglevel`"),
            (&["-b", "localhost:http"], &[], "`bind`"),
            (&["-b", "::1:80"], &[], "`bind`"),
            (
                &["--limit-request-line", "9000"],
                &[],
                "`limit_request_line`",
            ),
            (&["--prefix", "my-app"], &[], "`prefix`"),
            (&["--app", "nope"], &[], "`app`"),
            (&["--log-format", "xml"], &[], "`log_format`"),
            (&[], &[("WEB_CONCURRENCY", "many")], "WEB_CONCURRENCY"),
            (
                &[],
                &[("GUNICORN_METRICS_UPDATE_SECONDS", "soon")],
                "GUNICORN_METRICS_UPDATE_SECONDS",
            ),
            (
                &[],
                &[("PROMETHEUS_METRICS_EXPORT_PORT", "x")],
                "PROMETHEUS_METRICS_EXPORT_PORT",
            ),
        ];
        for (argv, vars, needle) in cases {
            let e = load(argv, vars).expect_err(needle);
            assert!(e.0.contains(needle), "{argv:?} {vars:?}: {e}");
            assert!(!e.0.contains('\n'), "one line: {e}");
        }
        let f = file("timeout = \"soon\"\n");
        let e = load(&["-c", f.path().to_str().unwrap()], &[]).unwrap_err();
        assert!(
            e.0.contains("`timeout`") && e.0.contains("string \"soon\""),
            "{e}"
        );
        let f = file("timeout = \n");
        let e = load(&["-c", f.path().to_str().unwrap()], &[]).unwrap_err();
        assert!(e.0.contains("not valid TOML: line 1"), "{e}");
        let e = load(&["-c", "/nonexistent/ferrocorn.toml"], &[]).unwrap_err();
        assert!(
            e.0.contains("cannot read config file /nonexistent/ferrocorn.toml"),
            "{e}"
        );
    }

    #[test]
    fn metrics_settings() {
        let r = load(
            &["--metrics-port", "9101", "--metrics-bind", "127.0.0.1"],
            &[
                ("PROMETHEUS_MULTIPROC_DIR", "/tmp/m"),
                ("GUNICORN_METRICS_UPDATE_SECONDS", "2"),
            ],
        );
        if cfg!(feature = "metrics") {
            let m = r.unwrap().metrics.unwrap();
            assert_eq!(m.bind, "127.0.0.1:9101".parse().unwrap());
            assert_eq!(m.dir, Some("/tmp/m".into()));
            assert_eq!(m.update_interval, Duration::from_secs(2));
            let c = load(&["--no-metrics"], &[]).unwrap();
            assert_eq!(c.metrics, None);
            let e = load(&["-b", "127.0.0.1:8001"], &[]).unwrap_err();
            assert!(e.0.contains("`metrics_port`"), "{e}");
        } else {
            let e = r.unwrap_err();
            assert!(
                e.0.contains("metrics are not built into this binary"),
                "{e}"
            );
            let e = load(&[], &[("PROMETHEUS_METRICS_EXPORT_PORT", "9000")]).unwrap_err();
            assert!(e.0.contains("PROMETHEUS_METRICS_EXPORT_PORT"), "{e}");
            assert!(load(&["--no-metrics"], &[]).is_ok());
        }
    }

    #[test]
    fn print_config_round_trips() {
        let c = load(
            &[
                "-b",
                "127.0.0.1:9000",
                "--threads",
                "4",
                "--timeout",
                "0.5",
                "--access-logfile",
                "-",
            ],
            &[],
        )
        .unwrap();
        let text = c.to_toml();
        let f = file(&text);
        let again = load(&["-c", f.path().to_str().unwrap()], &[]).unwrap();
        assert_eq!(again.threads, 4);
        assert_eq!(again.timeout, Duration::from_millis(500));
        assert_eq!(again.binds, c.binds);
        assert_eq!(again.accesslog.as_deref(), Some("-"));
        assert_eq!(again.to_toml(), text);
    }

    #[test]
    fn integers_fit_a_toml_file_and_never_wrap() {
        // Issue 19: `x % (jitter + 1)` wrapped to a division by zero in
        // every worker; values past i64::MAX printed clamped.
        for flag in [
            "--max-requests-jitter",
            "--max-requests",
            "--limit-request-body",
        ] {
            for big in ["18446744073709551615", "9223372036854775808"] {
                let e = load(&[flag, big], &[]).unwrap_err();
                let name = flag.trim_start_matches("--").replace('-', "_");
                assert!(
                    e.0.contains(&format!("`{name}`")) && e.0.contains("out of range"),
                    "{flag} {big}: {e}"
                );
            }
        }
        let c = load(&["--max-requests-jitter", "9223372036854775807"], &[]).unwrap();
        assert_eq!(c.max_requests_jitter, i64::MAX as u64);
        assert!(
            c.to_toml()
                .contains("max_requests_jitter = 9223372036854775807")
        );
    }

    #[test]
    fn tiny_durations_are_refused_not_rounded_to_zero() {
        for (flag, v) in [
            ("--timeout", "1e-10"),
            ("--keep-alive", "0.0009"),
            ("--metrics-update-seconds", "1e-12"),
        ] {
            let arg = format!("{flag}={v}");
            let r = load(&[&arg], &[]);
            if flag == "--metrics-update-seconds" && !cfg!(feature = "metrics") {
                continue;
            }
            let e = r.unwrap_err();
            assert!(e.0.contains("smallest duration, 0.001"), "{flag}: {e}");
        }
        // The smallest duration loads back from --print-config.
        let c = load(&["--timeout", "0.001", "--keep-alive", "0"], &[]).unwrap();
        assert_eq!(c.timeout, Duration::from_millis(1));
        assert_eq!(c.keepalive, Duration::ZERO);
        let f = file(&c.to_toml());
        let again = load(&["-c", f.path().to_str().unwrap()], &[]).unwrap();
        assert_eq!(again.timeout, Duration::from_millis(1));
        assert_eq!(again.to_toml(), c.to_toml());
    }

    #[test]
    fn config_files_that_are_not_regular_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.toml");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        // Neither reads /dev/zero for ever nor waits for a FIFO's writer.
        for (path, what) in [
            (Path::new("/dev/zero"), "a device"),
            (fifo.as_path(), "a pipe or FIFO"),
            (dir.path(), "a directory"),
        ] {
            let e = load(&["-c", path.to_str().unwrap()], &[]).unwrap_err();
            assert!(
                e.0.contains(&format!("cannot read config file {}", path.display()))
                    && e.0.contains(what),
                "{e}"
            );
        }
        let big = file(&format!("# {}\nworkers = 1\n", "x".repeat(1 << 20)));
        let e = load(&["-c", big.path().to_str().unwrap()], &[]).unwrap_err();
        assert!(e.0.contains("more than the limit"), "{e}");
        let empty = file(" \n");
        let c = load(&["-c", empty.path().to_str().unwrap()], &[]).unwrap();
        assert!(c.config_file_empty);
        let f = file("workers = 1\n");
        let c = load(&["-c", f.path().to_str().unwrap()], &[]).unwrap();
        assert!(!c.config_file_empty);
    }

    #[test]
    fn binds_that_cannot_all_be_bound_are_refused() {
        let long = format!("unix:/tmp/{}", "s".repeat(103));
        let e = load(&["-b", &long], &[]).unwrap_err();
        assert!(e.0.contains("more than the 107"), "{e}");
        let fits = format!("unix:/{}", "s".repeat(106));
        assert!(load(&["-b", &fits], &[]).is_ok());
        for (a, b) in [
            ("0.0.0.0:9000", "127.0.0.1:9000"),
            ("127.0.0.2:9000", "0.0.0.0:9000"),
            ("[::]:9000", "[::1]:9000"),
            ("[::1]:9000", "[0:0::1]:9000"),
        ] {
            let e = load(&["-b", a, "-b", b], &[]).unwrap_err();
            assert!(e.0.contains("overlap"), "{a} {b}: {e}");
        }
        for (a, b) in [
            ("0.0.0.0:9000", "127.0.0.1:9001"),
            ("127.0.0.1:9000", "127.0.0.2:9000"),
            ("127.0.0.1:0", "0.0.0.0:0"),
            ("localhost:9000", "0.0.0.0:9000"),
        ] {
            assert!(load(&["-b", a, "-b", b], &[]).is_ok(), "{a} {b}");
        }
        // SO_REUSEPORT binds both.
        assert!(
            load(
                &["-b", "0.0.0.0:9000", "-b", "127.0.0.1:9000", "--reuse-port"],
                &[]
            )
            .is_ok()
        );
    }

    #[test]
    fn seed_example_has_the_seeds_values() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/seed.toml");
        let c = load(&["-c", path.to_str().unwrap()], &[]).unwrap();
        assert_eq!(c.loglevel, "error");
        assert_eq!(c.keepalive, Duration::from_secs(120));
        assert_eq!(c.timeout, Duration::from_secs(15));
        assert_eq!(c.graceful_timeout, Duration::from_secs(120));
    }

    #[test]
    fn bind_forms() {
        assert_eq!(
            Bind::parse("127.0.0.1").unwrap(),
            Bind::Tcp {
                host: "127.0.0.1".into(),
                port: 8000
            }
        );
        assert_eq!(Bind::parse("[::]").unwrap().to_string(), "[::]:8000");
        assert_eq!(Bind::parse("fd://3").unwrap(), Bind::Fd(3));
        assert_eq!(
            Bind::parse("unix:/run/a.sock").unwrap().to_string(),
            "unix:/run/a.sock"
        );
        assert!(Bind::parse("unix:").is_err());
        assert!(Bind::parse("fd://x").is_err());
        assert_eq!(Bind::parse(":80").unwrap().to_string(), "0.0.0.0:80");
        assert_eq!(
            Bind::parse("tcp://127.0.0.1:81").unwrap().to_string(),
            "127.0.0.1:81"
        );
        assert!(Bind::parse("[::1]80").is_err());
    }
}
