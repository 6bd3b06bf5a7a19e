//! The command line: gunicorn's flag names and short forms.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};

use crate::seconds::{Seconds, parse_seconds};

const AFTER_HELP: &str = "\
Environment (overrides the config file; flags override both):
  PROMETHEUS_METRICS_EXPORT_PORT   metrics_port (default 8001)
  GUNICORN_METRICS_UPDATE_SECONDS  metrics_update_seconds (default 5)
  LOGGING_FORMATTER_NAME           log_format: default | json | plain
  PROMETHEUS_MULTIPROC_DIR         metrics_dir (default: a private temporary directory)
Defaults read from the environment, as gunicorn (a config file overrides them):
  PORT                             bind 0.0.0.0:$PORT
  WEB_CONCURRENCY                  workers

  VIRTUAL_ENV                      virtualenv (the app's site-packages)
  FORWARDED_ALLOW_IPS              forwarded_allow_ips (default 127.0.0.1,::1)
  SCRIPT_NAME                      the WSGI SCRIPT_NAME (mount point)

Serving a WSGI app as gunicorn does: ferrocorn [OPTIONS] myproject.wsgi:application

Config file (-c): TOML with the settings' names in snake_case, e.g.
  workers = 4
  timeout = 15
  graceful_timeout = 120
`ferrocorn --print-config` prints every setting.";

/// ferrocorn: a pre-fork HTTP server with gunicorn's model.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "ferrocorn",
    version,
    about = "A pre-fork HTTP application server with gunicorn's model, Prometheus metrics and structured logs.",
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true,
    disable_version_flag = true
)]
pub struct Cli {
    /// A subcommand instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Serving flags.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Print the metrics of a directory of shm metric files
    /// (PROMETHEUS_MULTIPROC_DIR) in the Prometheus text format.
    Metrics {
        /// The directory (as prometheus_client's multiprocess mode writes it).
        dir: PathBuf,
    },
}

/// The flags of `ferrocorn` serving: every setting, all optional so that
/// the config file and the environment can supply them.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// Print the version and exit.
    #[arg(short = 'v', long = "version", visible_short_alias = 'V', action = ArgAction::Version)]
    pub version: Option<bool>,

    /// A TOML config file (settings in snake_case).
    #[arg(short = 'c', long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Validate the configuration, print one line and exit (0 = valid).
    /// Checks every value, unix socket path lengths and overlapping binds;
    /// whether a port is free is only found out when serving starts.
    #[arg(long)]
    pub check_config: bool,

    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,

    /// Addresses to listen on (repeatable).
    #[arg(
        short = 'b',
        long,
        value_name = "ADDRESS",
        action = ArgAction::Append,
        help = "Address to listen on: HOST:PORT, [V6]:PORT, unix:PATH or fd://N. Repeatable. [default: 127.0.0.1:8000, or 0.0.0.0:$PORT]"
    )]
    pub bind: Vec<String>,

    /// Number of worker processes. [default: 1, or $WEB_CONCURRENCY]
    #[arg(short = 'w', long, value_name = "INT")]
    pub workers: Option<u64>,

    /// Threads per worker handling requests. [default: 1]
    #[arg(long, value_name = "INT")]
    pub threads: Option<u64>,

    /// Maximum open connections per worker. [default: 1000]
    #[arg(long, value_name = "INT")]
    pub worker_connections: Option<u64>,

    /// Maximum number of pending connections (listen backlog). [default: 2048]
    #[arg(long, value_name = "INT")]
    pub backlog: Option<u64>,

    /// Workers silent (no progress) for more than this many seconds are
    /// killed and restarted; 0 disables. [default: 30]
    #[arg(short = 't', long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub timeout: Option<Seconds>,

    /// Seconds a graceful stop waits for in-flight requests. [default: 30]
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub graceful_timeout: Option<Seconds>,

    /// Seconds to wait for requests on a keep-alive connection. [default: 120]
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub keep_alive: Option<Seconds>,

    /// Seconds a client has to send a complete request head (and up to 64 KiB
    /// of its body). [default: 30]
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub header_timeout: Option<Seconds>,

    /// Seconds a request body may stop arriving, or a response stop being
    /// read, before the request is cut (408) or the connection closed; 0 =
    /// no limit. [default: 30]
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub stall_timeout: Option<Seconds>,

    /// A path (e.g. /healthz) each worker answers itself, never the app: 200
    /// while it serves, 503 once it stops; "" = off. [default: off]
    #[arg(long, value_name = "PATH")]
    pub health_path: Option<String>,

    /// Requests a worker serves before it restarts; 0 = never. [default: 0]
    #[arg(long, value_name = "INT")]
    pub max_requests: Option<u64>,

    /// Random extra requests (0..=N) added to --max-requests per worker. [default: 0]
    #[arg(long, value_name = "INT")]
    pub max_requests_jitter: Option<u64>,

    /// Maximum size of the request line in bytes; 0 = the maximum, 8190. [default: 4094]
    #[arg(long, value_name = "INT")]
    pub limit_request_line: Option<u64>,

    /// Maximum number of header fields (max 32768). [default: 100]
    #[arg(long, value_name = "INT")]
    pub limit_request_fields: Option<u64>,

    /// Maximum size of a header field line in bytes, its CRLF included, as gunicorn counts; 0 = 8190, at most 65536. [default: 8190]
    #[arg(long, value_name = "INT")]
    pub limit_request_field_size: Option<u64>,

    /// Maximum size of a request body in bytes; 0 = unlimited. [default: 1073741824]
    #[arg(long, value_name = "INT")]
    pub limit_request_body: Option<u64>,

    /// Error log level: debug, info, warning, error, critical. [default: info]
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,

    /// Access log file; `-` = stdout. [default: off]
    #[arg(long, value_name = "FILE")]
    pub access_logfile: Option<String>,

    /// Error log file; `-` = stderr. [default: -]
    #[arg(long, alias = "log-file", value_name = "FILE")]
    pub error_logfile: Option<String>,

    /// Access log format (gunicorn's atoms, e.g. %(h)s %(r)s %(s)s).
    #[arg(long, value_name = "FORMAT")]
    pub access_logformat: Option<String>,

    /// Log format: default (colored console), json or plain. [env: LOGGING_FORMATTER_NAME]
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,

    /// Console colors: auto, always, never. [default: auto]
    #[arg(long, value_name = "WHEN")]
    pub log_color: Option<String>,

    /// A file to write the supervisor's pid to.
    #[arg(short = 'p', long, value_name = "FILE")]
    pub pid: Option<PathBuf>,

    /// Set SO_REUSEPORT on the listening sockets.
    #[arg(long)]
    pub reuse_port: bool,

    /// The built-in app to serve: demo (/, /healthz, /echo, /delay/MS,
    /// /status/CODE) or hello. [default: demo]
    #[arg(long, value_name = "NAME")]
    pub app: Option<String>,

    /// A Python WSGI app to serve, as gunicorn's APP_MODULE:
    /// `module:callable`, `module:factory(args)`, or `module` (=
    /// `module:application`). [config: wsgi_app]
    #[arg(value_name = "APP_MODULE")]
    pub app_module: Option<String>,

    /// Change to this directory before loading the app (and put it first
    /// on sys.path).
    #[arg(long, value_name = "DIR")]
    pub chdir: Option<PathBuf>,

    /// Comma-separated directories put first on sys.path.
    #[arg(long, value_name = "PATHS")]
    pub pythonpath: Option<String>,

    /// Set an environment variable for the app: KEY=VALUE (repeatable).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE", action = ArgAction::Append)]
    pub env: Vec<String>,

    /// The virtualenv the app runs in (its site-packages). [env: VIRTUAL_ENV]
    #[arg(long, value_name = "DIR")]
    pub virtualenv: Option<PathBuf>,

    /// Import the app in the supervisor before forking the workers.
    #[arg(long = "preload")]
    pub preload: bool,

    /// Send the app's stdout and stderr (print()) to the error log.
    #[arg(long = "capture-output")]
    pub capture_output: bool,

    /// gunicorn's worker class: sync or gthread (both run ferrocorn's
    /// worker: processes with a thread pool each); others are refused.
    #[arg(short = 'k', long, value_name = "CLASS")]
    pub worker_class: Option<String>,

    /// Import the app (without serving), then exit: 0 when it loads, 4 when
    /// it cannot.
    #[arg(long)]
    pub check_app: bool,

    /// Proxies (IPs, CIDR networks, or *) whose secure_scheme_headers set
    /// wsgi.url_scheme. [env: FORWARDED_ALLOW_IPS] [default: 127.0.0.1,::1]
    #[arg(long, value_name = "ADDRESSES")]
    pub forwarded_allow_ips: Option<String>,

    /// Prefix of metric names and logger names. [default: gunicorn]
    #[arg(long, value_name = "PREFIX")]
    pub prefix: Option<String>,

    /// Do not serve metrics.
    #[arg(long)]
    pub no_metrics: bool,

    /// Do not observe how long each connection waited in the listen queue (gunicorn_accept_queue_wait_seconds: one getsockopt per accepted TCP connection).
    #[arg(long)]
    pub no_accept_queue_wait: bool,

    /// IP address the metrics exporter binds. [default: 0.0.0.0]
    #[arg(long, value_name = "IP")]
    pub metrics_bind: Option<String>,

    /// Port of the metrics exporter. [env: PROMETHEUS_METRICS_EXPORT_PORT] [default: 8001]
    #[arg(long, value_name = "PORT")]
    pub metrics_port: Option<u16>,

    /// Seconds between samples of sampled gauges. [env: GUNICORN_METRICS_UPDATE_SECONDS] [default: 5]
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub metrics_update_seconds: Option<Seconds>,

    /// Directory of the shm metric files. [env: PROMETHEUS_MULTIPROC_DIR]
    #[arg(long, value_name = "DIR")]
    pub metrics_dir: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn gunicorn_short_forms() {
        let cli = Cli::try_parse_from([
            "ferrocorn",
            "-b",
            "127.0.0.1:1",
            "-b",
            "unix:/x",
            "-w",
            "2",
            "-t",
            "5",
            "-c",
            "f.toml",
            "-p",
            "pid",
        ])
        .unwrap();
        assert_eq!(cli.serve.bind, vec!["127.0.0.1:1", "unix:/x"]);
        assert_eq!(cli.serve.workers, Some(2));
        assert_eq!(cli.serve.timeout, Some(Seconds(5.0)));
        assert_eq!(cli.serve.config, Some(PathBuf::from("f.toml")));
        assert_eq!(cli.serve.pid, Some(PathBuf::from("pid")));
        assert!(cli.command.is_none());
    }

    #[test]
    fn app_module_and_gunicorn_python_flags() {
        let cli = Cli::try_parse_from([
            "ferrocorn",
            "-k",
            "gthread",
            "--env",
            "A=1",
            "--env",
            "B=2",
            "--chdir",
            "/srv",
            "--pythonpath",
            "a,b",
            "--preload",
            "myproject.wsgi:application",
        ])
        .unwrap();
        assert!(cli.command.is_none());
        let s = cli.serve;
        assert_eq!(s.app_module.as_deref(), Some("myproject.wsgi:application"));
        assert_eq!(s.worker_class.as_deref(), Some("gthread"));
        assert_eq!(s.env, vec!["A=1", "B=2"]);
        assert_eq!(s.chdir, Some(PathBuf::from("/srv")));
        assert_eq!(s.pythonpath.as_deref(), Some("a,b"));
        assert!(s.preload);
        // The subcommand still wins over an APP_MODULE named like it.
        let cli = Cli::try_parse_from(["ferrocorn", "metrics", "/tmp/m"]).unwrap();
        assert!(cli.command.is_some());
    }

    #[test]
    fn metrics_subcommand() {
        let cli = Cli::try_parse_from(["ferrocorn", "metrics", "/tmp/m"]).unwrap();
        assert!(
            matches!(cli.command, Some(Command::Metrics { dir }) if dir == std::path::Path::new("/tmp/m"))
        );
    }

    #[test]
    fn version_flags() {
        for flag in ["-v", "-V", "--version"] {
            let e = Cli::try_parse_from(["ferrocorn", flag]).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::DisplayVersion, "{flag}");
        }
    }
}
