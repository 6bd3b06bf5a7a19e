//! ferrocorn: a pre-fork HTTP application server with gunicorn's model.
//!
//! `main` parses the command line, loads one validated [`config::Config`]
//! and maps every failure to one line on stderr and an exit code:
//! 0 success, 1 a runtime failure (bind, permission, a worker that cannot
//! boot), 2 a bad command line or configuration, 4 a WSGI app that cannot
//! be imported (gunicorn's APP_LOAD_ERROR).

mod app;
mod cli;
mod compose;
mod config;
mod pyconfig;
mod seconds;
mod setting;
mod settings;

// Optional parts: a module each, with the same signatures whether built in
// or not (ripgrep's pattern); the disabled variants fail clearly.
#[cfg_attr(feature = "supervisor", path = "serve/enabled.rs")]
#[cfg_attr(not(feature = "supervisor"), path = "serve/disabled.rs")]
mod serve;

#[cfg_attr(feature = "wsgi", path = "python/enabled.rs")]
#[cfg_attr(not(feature = "wsgi"), path = "python/disabled.rs")]
mod python;

#[cfg_attr(feature = "metrics", path = "metrics/enabled.rs")]
#[cfg_attr(not(feature = "metrics"), path = "metrics/disabled.rs")]
mod metrics;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, ServeArgs};
use crate::config::Config;

/// Why the process stops with a non-zero exit code.
#[derive(Debug)]
enum Failure {
    /// A bad command line, config file, or environment variable: exit 2.
    Config(String),
    /// Anything failing at run time (bind, permission, ...): exit 1.
    Runtime(String),
    /// A failure the error log already showed on stderr: only the exit code.
    Logged(u8),
}

impl Failure {
    fn exit_code(&self) -> u8 {
        match self {
            Failure::Config(_) => 2,
            Failure::Runtime(_) => 1,
            Failure::Logged(code) => *code,
        }
    }

    fn message(&self) -> Option<&str> {
        match self {
            Failure::Config(m) | Failure::Runtime(m) => Some(m),
            Failure::Logged(_) => None,
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // clap prints help, version and usage errors itself (exit 0 or 2).
        Err(e) => e.exit(),
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if let Some(m) = f.message() {
                eprintln!("ferrocorn: error: {m}");
            }
            ExitCode::from(f.exit_code())
        }
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Some(Command::Metrics { dir }) => metrics_command(&dir),
        None => serve(cli.serve),
    }
}

fn load(args: &ServeArgs) -> Result<Config, Failure> {
    Config::load_from_process(args).map_err(|e| Failure::Config(e.0))
}

fn serve(args: ServeArgs) -> Result<(), Failure> {
    let config = load(&args)?;
    compose::log_config(&config).map_err(Failure::Config)?;
    python::check(&config).map_err(Failure::Config)?;
    if args.print_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    if args.check_config {
        println!("{}", check_line(&config));
        return Ok(());
    }
    python::apply_env(&config);
    if args.check_app {
        return check_app(&config);
    }
    serve::serve(args, config)
}

/// `--check-app`: import the WSGI app here and say whether it loads
/// (exit 0), or print why not (exit 4).
fn check_app(config: &Config) -> Result<(), Failure> {
    let Some(spec) = &config.python.wsgi_app else {
        return Err(Failure::Config(
            "--check-app needs a WSGI app (APP_MODULE or `wsgi_app`)".into(),
        ));
    };
    let discard = slog::Logger::root(slog::Discard, slog::o!());
    match python::load(config, None, &discard, None) {
        Ok(_) => {
            println!("app OK: {spec}");
            Ok(())
        }
        Err(trace) => {
            eprintln!("ferrocorn: error: cannot load the app {spec:?}:\n{trace}");
            Err(Failure::Logged(APP_LOAD_ERROR))
        }
    }
}

/// gunicorn's exit code for an app that cannot be loaded.
pub const APP_LOAD_ERROR: u8 = 4;

/// The line `--check-config` prints for a valid configuration.
fn check_line(config: &Config) -> String {
    let binds: Vec<String> = config.binds.iter().map(|b| b.to_string()).collect();
    let from = match &config.config_file {
        Some(p) => format!(" ({})", p.display()),
        None => String::new(),
    };
    let app = match &config.python.wsgi_app {
        Some(spec) => format!(" serving {spec}"),
        None => String::new(),
    };
    format!(
        "config OK{from}: {} worker(s) x {} thread(s) on {}{app}",
        config.workers,
        config.threads,
        binds.join(", ")
    )
}

fn metrics_command(dir: &std::path::Path) -> Result<(), Failure> {
    let text = metrics::render_dir(dir).map_err(Failure::Runtime)?;
    use std::io::Write;
    std::io::stdout()
        .write_all(&text)
        .map_err(|e| Failure::Runtime(format!("writing the metrics: {e}")))
}
