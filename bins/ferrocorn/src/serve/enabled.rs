//! Serving with the supervisor: one supervisor process forking `workers`
//! worker processes that share the listeners (gunicorn's model).

use std::sync::Arc;

use ferrocorn_log::Logs;
use ferrocorn_supervisor::{
    BindAddr, InheritedListener, LoadBoard, MetricsConfig, Service, Supervisor, SupervisorConfig,
    SupervisorError, WORKER_BOOT_ERROR, WorkerContext,
};
use ferrocorn_worker::{Listener, Siblings};

use crate::Failure;
use crate::cli::ServeArgs;
use crate::compose;
use crate::config::Config;
use crate::metrics;

/// The supervisor's settings.
fn supervisor_config(c: &Config) -> Result<SupervisorConfig, String> {
    let binds = c
        .binds
        .iter()
        .map(|b| b.to_string().parse::<BindAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("invalid value for `bind`: {e}"))?;
    Ok(SupervisorConfig {
        binds,
        backlog: c.backlog,
        reuse_port: c.reuse_port,
        workers: c.workers,
        timeout: c.timeout,
        graceful_timeout: c.graceful_timeout,
        pidfile: c.pidfile.clone(),
        metrics: c.metrics.as_ref().map(|m| MetricsConfig {
            bind: m.bind,
            dir: m.dir.clone(),
            update_interval: m.update_interval,
        }),
    })
}

/// The supervisor's board of open connections, as the worker's siblings.
struct Board(LoadBoard);

impl Siblings for Board {
    fn publish(&self, open: Option<usize>) {
        self.0.publish(open);
    }

    fn least_loaded(&self) -> Option<usize> {
        self.0.least_sibling()
    }
}

/// What the supervisor forks: a worker with the current config, and the
/// reload that re-reads the config file and the environment.
struct Ferrocorn {
    args: ServeArgs,
    config: Config,
}

impl Service for Ferrocorn {
    fn worker(&self, ctx: WorkerContext) -> i32 {
        // In the forked child: logs, poll and thread pool are built here.
        let logs = match compose::open_logs(&self.config) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("ferrocorn: error: worker (pid:{}): {e}", std::process::id());
                return WORKER_BOOT_ERROR;
            }
        };
        let log = logs.error().clone();
        let listeners = ctx
            .listeners
            .into_iter()
            .map(|l| match l {
                InheritedListener::Tcp(t) => Listener::Tcp(t),
                InheritedListener::Unix(u) => Listener::Unix(u),
            })
            .collect();
        let worker = match compose::build_worker(&self.config, listeners, &logs) {
            Ok(w) => w,
            Err(e) => {
                slog::error!(log, "Exception in worker process: {}", e);
                logs.flush();
                return WORKER_BOOT_ERROR;
            }
        };
        let heartbeat = ctx.heartbeat.clone();
        let mut worker = worker
            .heartbeat(Arc::new(move || heartbeat.beat()))
            .siblings(Arc::new(Board(ctx.load.clone())))
            .parent_pid(ctx.ppid);
        if let Some(dir) = &ctx.metrics_dir {
            let wait = (self.config.metrics.as_ref()).is_some_and(|m| m.accept_queue_wait);
            worker = metrics::attach(worker, dir, &self.config.prefix, wait);
        }
        // The first heartbeat comes from the serving loop, once the worker
        // is set up: a worker dying before it counts as failing to boot, and
        // workers failing to boot stop the server instead of being respawned
        // for ever (the supervisor's timeout covers a slow setup).
        let code = match worker.run() {
            Ok(()) => 0,
            Err(e) => {
                slog::error!(log, "Worker (pid:{}) failed: {}", std::process::id(), e);
                1
            }
        };
        logs.flush();
        code
    }

    fn reload(&mut self) -> Result<SupervisorConfig, String> {
        let config = Config::load_from_process(&self.args).map_err(|e| e.0)?;
        // Open the new logs once here: a log file the new workers could not
        // open would otherwise stop the supervisor (workers failing to boot).
        compose::open_logs(&config)?;
        let sc = supervisor_config(&config)?;
        self.config = config;
        Ok(sc)
    }
}

/// Runs the supervisor until a stop signal.
pub fn serve(args: ServeArgs, config: Config) -> Result<(), Failure> {
    let sc = supervisor_config(&config).map_err(Failure::Config)?;
    let logs: Logs = compose::open_logs(&config).map_err(Failure::Runtime)?;
    // The supervisor logs its own errors to the error log; repeat the line
    // on stderr only when the error log would not show it there.
    let logged_on_stderr = config.errorlog == "-" && config.loglevel != "critical";
    let prefix = config.prefix.clone();
    let service = Ferrocorn { args, config };
    match Supervisor::new(sc, logs)
        .metrics_prefix(prefix)
        .run(service)
    {
        Ok(()) => Ok(()),
        Err(e) => {
            let failure = match e {
                SupervisorError::Config(m) => Failure::Config(m),
                e => Failure::Runtime(e.to_string()),
            };
            if logged_on_stderr {
                Err(Failure::Logged(failure.exit_code()))
            } else {
                Err(failure)
            }
        }
    }
}
