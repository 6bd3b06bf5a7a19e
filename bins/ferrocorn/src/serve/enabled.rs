//! Serving with the supervisor: one supervisor process forking `workers`
//! worker processes that share the listeners (gunicorn's model).

use std::sync::Arc;

use ferrocorn_log::Logs;
use ferrocorn_supervisor::{
    APP_LOAD_ERROR, BindAddr, InheritedListener, LoadBoard, MetricsConfig, Service, Supervisor,
    SupervisorConfig, SupervisorError, SupervisorLogs, WORKER_BOOT_ERROR, WorkerContext,
};
use ferrocorn_worker::{Listener, Siblings};

use crate::Failure;
use crate::cli::ServeArgs;
use crate::compose;
use crate::config::Config;
use crate::metrics;
use crate::python;

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
        self.0.least_loaded()
    }
}

/// What the supervisor forks: a worker with the current config, and the
/// reload that re-reads the config file and the environment.
struct Ferrocorn {
    args: ServeArgs,
    config: Config,
    /// The supervisor's logs for the config the last reload read.
    reloaded_logs: Option<Logs>,
    /// The WSGI app imported before forking (`--preload`): kept across
    /// reloads, as gunicorn keeps it on HUP.
    preloaded: Option<python::Preloaded>,
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
        let built = if self.config.python.wsgi_app.is_some() {
            // The --env of the current config (re-read on HUP), as gunicorn
            // sets them in each worker before it loads the app.
            python::apply_env(&self.config);
            let dir = ctx.metrics_dir.as_deref();
            let app = match &self.preloaded {
                Some(p) => python::preloaded_app(p, &self.config, &logs, dir),
                None => python::load(&self.config, Some(&logs), &log, dir),
            };
            match app {
                Ok(app) => compose::build_worker_serving(&self.config, listeners, &logs, app),
                Err(trace) => {
                    // gunicorn's APP_LOAD_ERROR: the supervisor stops, no respawn.
                    slog::error!(log, "Exception in worker process\n{}", trace);
                    logs.flush();
                    return APP_LOAD_ERROR;
                }
            }
        } else {
            compose::build_worker(&self.config, listeners, &logs)
        };
        let worker = match built {
            Ok(w) => w,
            Err(e) => {
                slog::error!(log, "Exception in worker process: {}", e);
                logs.flush();
                return WORKER_BOOT_ERROR;
            }
        };
        let heartbeat = ctx.heartbeat.clone();
        let recycle = ctx.heartbeat.clone();
        let mut worker = worker
            .heartbeat(Arc::new(move || heartbeat.beat()))
            .on_recycle(Arc::new(move || recycle.planned_exit()))
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
        if self.config.python.wsgi_app.is_some() {
            python::at_exit();
        }
        logs.flush();
        code
    }

    fn reload(&mut self) -> Result<SupervisorConfig, String> {
        let config = Config::load_from_process(&self.args).map_err(|e| e.0)?;
        // A file caught empty while being rewritten is not a request for
        // the defaults (issue 19): keep the running config.
        if config.config_file_empty
            && !self.config.config_file_empty
            && let Some(path) = &config.config_file
        {
            return Err(format!(
                "config file {} is empty and was not at the last load",
                path.display()
            ));
        }
        // Open the new logs once here: a log file the new workers could not
        // open would otherwise stop the supervisor (workers failing to boot).
        // The supervisor writes to them from now on (its new level, format
        // and error log apply too).
        let logs = compose::open_logs(&config)?;
        let sc = supervisor_config(&config)?;
        self.config = config;
        self.reloaded_logs = Some(logs);
        Ok(sc)
    }

    fn reload_logs(&mut self) -> Option<Box<dyn SupervisorLogs>> {
        self.reloaded_logs
            .take()
            .map(|l| Box::new(l) as Box<dyn SupervisorLogs>)
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
    if let Some(class) = &config.python.worker_class {
        slog::info!(
            logs.error(),
            "Worker class {}: ferrocorn runs {} worker process(es) with {} thread(s) each (gthread's model)",
            class,
            config.workers,
            config.threads
        );
    }
    let preloaded = if config.python.preload && config.python.wsgi_app.is_some() {
        match python::preload(&config, &logs) {
            Ok(p) => Some(p),
            Err(trace) => {
                // Before any worker exists: the traceback once, exit 4.
                slog::error!(
                    logs.error(),
                    "Exception while preloading the app\n{}",
                    trace
                );
                logs.flush();
                return Err(Failure::Logged(crate::APP_LOAD_ERROR));
            }
        }
    } else {
        None
    };
    let with_python = preloaded.is_some();
    let service = Ferrocorn {
        args,
        config,
        reloaded_logs: None,
        preloaded,
    };
    let mut supervisor = Supervisor::new(sc, logs).metrics_prefix(prefix);
    if with_python {
        supervisor = supervisor
            .pre_fork(|_| python::before_fork())
            .after_fork_parent(|_| python::after_fork_parent())
            .post_fork(|_| python::after_fork_child());
    }
    match supervisor.run(service) {
        Ok(()) => Ok(()),
        Err(e) => {
            let failure = match e {
                SupervisorError::Config(m) => Failure::Config(m),
                SupervisorError::AppLoadFailed { .. } => {
                    let m = e.to_string();
                    if logged_on_stderr {
                        return Err(Failure::Logged(crate::APP_LOAD_ERROR));
                    }
                    eprintln!("ferrocorn: error: {m}");
                    return Err(Failure::Logged(crate::APP_LOAD_ERROR));
                }
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
