//! Your own pre-fork server from ferrocorn's crates: your `App`, served by
//! worker processes that a supervisor forks, watches and restarts.
//!
//! ```sh
//! cargo run --example custom_app          # then: curl localhost:8080/hello/you
//! ```
//!
//! The supervisor handles gunicorn's signals (TERM graceful stop, HUP reload,
//! TTIN/TTOU one worker more/less, ...); each worker handles its own (TERM
//! finishes in-flight requests, USR1 reopens logs).

use std::sync::Arc;

use ferrocorn_log::{LogConfig, Logs};
use ferrocorn_supervisor::{
    InheritedListener, Service, Supervisor, SupervisorConfig, WORKER_BOOT_ERROR, WorkerContext,
};
use ferrocorn_worker::{App, Listener, Request, Response, Worker, WorkerConfig};

/// The application: runs on a worker's thread pool and may block.
struct Greeter;

impl App for Greeter {
    fn call(&self, req: &mut Request<'_>) -> Response {
        match req.path().strip_prefix("/hello/") {
            Some(name) if !name.is_empty() => Response::text(200, &format!("Hello, {name}!\n")),
            _ => Response::text(404, "try /hello/NAME\n"),
        }
    }
}

/// What the supervisor forks: one worker per call, in the child process.
struct Greeters {
    config: SupervisorConfig,
}

impl Service for Greeters {
    fn worker(&self, ctx: WorkerContext) -> i32 {
        // Logs, poll and threads are built after the fork, in the worker.
        let Ok(logs) = Logs::new(&LogConfig::default()) else {
            return WORKER_BOOT_ERROR;
        };
        let listeners = ctx
            .listeners
            .into_iter()
            .map(|l| match l {
                InheritedListener::Tcp(l) => Listener::Tcp(l),
                InheritedListener::Unix(l) => Listener::Unix(l),
            })
            .collect();
        let config = WorkerConfig {
            threads: 4,
            ..WorkerConfig::default()
        };
        let heartbeat = ctx.heartbeat.clone();
        let worker = match Worker::new(config, listeners, Arc::new(Greeter)) {
            Ok(w) => w
                .logger(logs.error().clone())
                .heartbeat(Arc::new(move || heartbeat.beat()))
                .parent_pid(ctx.ppid)
                .handle_signals(true),
            Err(e) => {
                slog::error!(logs.error(), "cannot start the worker: {}", e);
                return WORKER_BOOT_ERROR;
            }
        };
        match worker.run() {
            Ok(()) => 0,
            Err(e) => {
                slog::error!(logs.error(), "worker failed: {}", e);
                1
            }
        }
    }

    /// SIGHUP: re-read your configuration here; new workers start with it.
    fn reload(&mut self) -> Result<SupervisorConfig, String> {
        Ok(self.config.clone())
    }
}

fn main() {
    let config = SupervisorConfig {
        binds: vec!["127.0.0.1:8080".parse().expect("a bind address")],
        workers: 2,
        ..SupervisorConfig::default()
    };
    let logs = Logs::new(&LogConfig::default()).expect("logs on stderr");
    let service = Greeters {
        config: config.clone(),
    };
    if let Err(e) = Supervisor::new(config, logs).run(service) {
        eprintln!("custom_app: {e}");
        std::process::exit(1);
    }
}
