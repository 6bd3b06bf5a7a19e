//! The command line: gunicorn's flag names and short forms.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[cfg(test)]
use crate::seconds::Seconds;
pub use crate::settings::ServeArgs;

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
