//! Serving without the supervisor: this process binds the listeners and
//! runs one worker itself. Settings that need the supervisor (workers > 1)
//! are refused when the config is loaded.

use std::net::ToSocketAddrs;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;

use ferrocorn_worker::Listener;
use socket2::{Domain, SockAddr, Socket, Type};

use crate::Failure;
use crate::cli::ServeArgs;
use crate::compose;
use crate::config::{Bind, Config};
use crate::metrics;
use crate::python;

fn bind(b: &Bind, config: &Config) -> Result<Listener, String> {
    let fail = |e: std::io::Error| format!("can't listen on {b}: {e}");
    match b {
        Bind::Tcp { host, port } => {
            let addr = (host.as_str(), *port)
                .to_socket_addrs()
                .map_err(fail)?
                .next()
                .ok_or_else(|| format!("can't listen on {b}: {host} has no address"))?;
            let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None).map_err(fail)?;
            sock.set_reuse_address(true).map_err(fail)?;
            if config.reuse_port {
                sock.set_reuse_port(true).map_err(fail)?;
            }
            sock.set_tcp_nodelay(true).map_err(fail)?;
            sock.bind(&addr.into()).map_err(fail)?;
            sock.listen(config.backlog).map_err(fail)?;
            Ok(Listener::Tcp(sock.into()))
        }
        Bind::Unix(path) => {
            // A stale socket file is removed; any other file is an error.
            if let Ok(meta) = std::fs::symlink_metadata(path) {
                if meta.file_type().is_socket() {
                    std::fs::remove_file(path).map_err(fail)?;
                } else {
                    return Err(format!(
                        "can't listen on {b}: the file exists and is not a socket"
                    ));
                }
            }
            let sock = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(fail)?;
            sock.bind(&SockAddr::unix(path).map_err(fail)?)
                .map_err(fail)?;
            sock.listen(config.backlog).map_err(fail)?;
            Ok(Listener::Unix(sock.into()))
        }
        Bind::Fd(fd) => {
            // SAFETY: fcntl(F_GETFD) only queries the descriptor table.
            if unsafe { libc::fcntl(*fd, libc::F_GETFD) } == -1 {
                return Err(fail(std::io::Error::last_os_error()));
            }
            // SAFETY: the user told us (fd://N) that this process inherited
            // descriptor N as a listening socket and that nothing else owns it.
            let owned = unsafe { OwnedFd::from_raw_fd(*fd) };
            let sock = Socket::from(owned);
            let local = sock.local_addr().map_err(fail)?;
            if local.is_unix() {
                Ok(Listener::Unix(sock.into()))
            } else {
                Ok(Listener::Tcp(sock.into()))
            }
        }
    }
}

/// Removes the pid file when serving ends.
struct Pidfile(std::path::PathBuf);

impl Drop for Pidfile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Binds and serves in this process until a stop signal.
pub fn serve(_args: ServeArgs, config: Config) -> Result<(), Failure> {
    let logs = compose::open_logs(&config).map_err(Failure::Runtime)?;
    let log = logs.error().clone();
    let fail = |m: String| {
        slog::error!(log, "{}", m);
        logs.flush();
        if config.errorlog == "-" && config.loglevel != "critical" {
            Failure::Logged(1)
        } else {
            Failure::Runtime(m)
        }
    };
    let pid = std::process::id();
    slog::info!(
        log,
        "Starting ferrocorn {} (single process: the supervisor is not built into this binary)",
        env!("CARGO_PKG_VERSION")
    );
    let mut listeners = Vec::new();
    let mut labels = Vec::new();
    // Duplicates of the TCP listeners, for the listen-backlog gauges.
    let mut watched = Vec::new();
    for b in &config.binds {
        let l = bind(b, &config).map_err(fail)?;
        labels.push(match (&l, b) {
            (Listener::Tcp(t), _) => {
                let label = match t.local_addr() {
                    Ok(a) => format!("http://{a}"),
                    Err(_) => b.to_string(),
                };
                if let Ok(dup) = t.try_clone() {
                    watched.push((label.clone(), dup));
                }
                label
            }
            (Listener::Unix(_), _) => b.to_string(),
        });
        listeners.push(l);
    }
    let _pidfile = match &config.pidfile {
        Some(p) => {
            std::fs::write(p, format!("{pid}\n"))
                .map_err(|e| fail(format!("can't write the pid file {}: {e}", p.display())))?;
            Some(Pidfile(p.clone()))
        }
        None => None,
    };
    for label in &labels {
        slog::info!(log, "Listening at: {} ({})", label, pid);
    }
    let exporter = match &config.metrics {
        Some(m) => {
            let e = metrics::Exporter::start(m, &config.prefix, std::mem::take(&mut watched))
                .map_err(fail)?;
            slog::info!(log, "Serving metrics at: http://{}/metrics", m.bind);
            Some(e)
        }
        None => None,
    };
    ignore_supervisor_signals();
    let built = match &config.python.wsgi_app {
        Some(_) => match python::load(
            &config,
            Some(&logs),
            &log,
            exporter.as_ref().map(|e| e.dir()),
        ) {
            Ok(app) => compose::build_worker_serving(&config, listeners, &logs, app),
            Err(trace) => {
                slog::error!(log, "Exception in worker process\n{}", trace);
                logs.flush();
                return Err(Failure::Logged(crate::APP_LOAD_ERROR));
            }
        },
        None => compose::build_worker(&config, listeners, &logs),
    };
    let mut worker = built.map_err(|e| fail(format!("cannot start the worker: {e}")))?;
    if let Some(e) = &exporter {
        let wait = config.metrics.as_ref().is_some_and(|m| m.accept_queue_wait);
        worker = metrics::attach(worker, e.dir(), &config.prefix, wait);
    }
    slog::info!(log, "Booting worker with pid: {}", pid);
    // The exporter (and a private metrics directory) lives as long as the worker.
    let result = {
        let _exporter = exporter;
        worker.run()
    };
    match result {
        Ok(()) => {
            slog::info!(log, "Shutting down");
            logs.flush();
            Ok(())
        }
        Err(e) => Err(fail(format!("the worker failed: {e}"))),
    }
}

/// HUP, USR2, TTIN and TTOU ask a supervisor for something; a single
/// process ignores them rather than die of their default action.
fn ignore_supervisor_signals() {
    for sig in [libc::SIGHUP, libc::SIGUSR2, libc::SIGTTIN, libc::SIGTTOU] {
        // SAFETY: setting a signal's disposition to SIG_IGN installs no
        // handler code and touches no memory of ours.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
}
