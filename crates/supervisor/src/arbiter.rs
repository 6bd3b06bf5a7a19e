//! The supervisor's loop: one thread, one poll, gunicorn's arbiter.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use slog::{Logger, crit, debug, error, info, warn};

use crate::config::{BindAddr, SupervisorConfig};
use crate::error::SupervisorError;
use crate::heartbeat::{Heartbeat, LoadBoard, Slots, now_ms};
use crate::listen::{self, BindOptions, Listener};
use crate::logs::SwitchLogs;
use crate::metrics::Metrics;
use crate::notify::{self, Pidfile};
use crate::service::{ExitReason, Hooks, Service, WorkerContext, WorkerExit, signal_name};
use crate::{APP_LOAD_ERROR, Supervisor, WORKER_BOOT_ERROR, backlog, sys};

const SIGNAL_TOKEN: Token = Token(0);
const EXPORTER_FIRST_TOKEN: usize = 1;
/// Env var of a re-executed supervisor: the inherited listener fds.
pub(crate) const ENV_FDS: &str = "FERROCORN_FDS";
/// Env var of a re-executed supervisor: the old supervisor's pid.
pub(crate) const ENV_MASTER_PID: &str = "FERROCORN_MASTER_PID";
/// Env var of a re-executed supervisor: the metrics exporter's listener fd.
pub(crate) const ENV_METRICS_FD: &str = "FERROCORN_METRICS_FD";
/// A worker that ignores SIGABRT this long after a timeout gets SIGKILL.
const ABORT_GRACE: Duration = Duration::from_secs(1);
/// A stopping worker gets its signal again this often (one sent while it
/// was still installing its handlers can be lost).
const RESEND: Duration = Duration::from_secs(1);
/// Workers dying before their first heartbeat this many times in a row stop the server.
const MAX_BOOT_DEATHS: u32 = 5;
/// The loop wakes at least once a second; a longer gap than this between
/// two heartbeat checks means the supervisor itself did not run (the
/// container frozen, the process stopped, the machine starved), and so,
/// most likely, neither did the workers: their heartbeats are then judged
/// from the moment it runs again, not from before the gap.
const STALL_MS: u64 = 2000;
/// The loop's pace while something is in transition.
const FAST_TICK: Duration = Duration::from_millis(20);
/// The signal that retires one worker: a graceful stop that leaves the
/// connections waiting in the listen queue to the other workers.
const RETIRE: i32 = libc::SIGHUP;

/// Where a worker process is in its life, as the arbiter sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WorkerState {
    Running,
    /// Asked to stop with `sig` (TERM or QUIT), last `sent` then; SIGKILL
    /// after the deadline.
    Stopping {
        sig: i32,
        sent: Instant,
        deadline: Instant,
        killed: bool,
    },
    /// Timed out: SIGABRT sent, SIGKILL after ABORT_GRACE.
    Aborted {
        at: Instant,
        killed: bool,
    },
}

#[derive(Debug)]
struct WorkerRec {
    id: usize,
    slot: usize,
    spawned_ms: u64,
    spawned: Instant,
    generation: u64,
    booted: bool,
    state: WorkerState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// Graceful stop, step 1: workers keep accepting until the listen queues
    /// are empty (or `until`); see `Arbiter::drain_step`. `deadline` ends
    /// the whole stop.
    Draining {
        until: Instant,
        deadline: Instant,
    },
    /// Workers were told to stop; wait for them, SIGKILL at the deadline.
    Stopping {
        quick: bool,
        deadline: Instant,
        killed: bool,
    },
}

struct Arbiter {
    cfg: SupervisorConfig,
    logs: SwitchLogs,
    log: Logger,
    hooks: Hooks,
    bind_opts: BindOptions,
    listeners: Vec<Listener>,
    /// Listeners came from another process (USR2 parent, systemd, fd://):
    /// do not unlink their socket files.
    inherited: bool,
    slots: Arc<Slots>,
    free_slots: Vec<usize>,
    workers: BTreeMap<i32, WorkerRec>,
    next_id: usize,
    num_workers: usize,
    generation: u64,
    reload_until: Option<Instant>,
    phase: Phase,
    poll: Poll,
    sigpipe: Option<sys::SignalPipe>,
    metrics: Option<Metrics>,
    pidfile: Option<Pidfile>,
    /// Set in a supervisor started by USR2 until its parent exits.
    master_pid: u32,
    promote_to: Option<PathBuf>,
    reexec_child: Option<i32>,
    boot_deaths: u32,
    /// When the heartbeats were last checked (or the loop started), and when
    /// the supervisor last ran again after a stall ([`STALL_MS`]; 0 =
    /// never), in heartbeat-clock ms.
    checked_ms: u64,
    resumed_ms: u64,
    halt: Option<SupervisorError>,
    halted: Option<SupervisorError>,
}

pub(crate) fn run<S: Service>(sup: Supervisor, mut service: S) -> Result<(), SupervisorError> {
    let Supervisor {
        config,
        logs,
        mut hooks,
        bind_attempts,
        bind_retry_delay,
        unix_socket_mode,
        metrics_prefix,
    } = sup;
    let logs = SwitchLogs::new(logs);
    let log = logs.logger();
    if let Some(h) = hooks.on_starting.as_mut() {
        h(&config);
    }
    let bind_opts = BindOptions {
        attempts: bind_attempts,
        delay: bind_retry_delay,
        unix_mode: unix_socket_mode,
    };
    let mut arbiter =
        match Arbiter::start(config, logs, log.clone(), hooks, bind_opts, &metrics_prefix) {
            Ok(a) => a,
            Err(e) => {
                error!(log, "{}", e);
                return Err(e);
            }
        };
    let result = arbiter.main_loop(&mut service);
    arbiter.finish();
    if let Err(e) = &result {
        error!(log, "{}", e);
    }
    arbiter.logs.flush();
    result
}

impl Arbiter {
    fn start(
        cfg: SupervisorConfig,
        logs: SwitchLogs,
        log: Logger,
        hooks: Hooks,
        bind_opts: BindOptions,
        metrics_prefix: &str,
    ) -> Result<Arbiter, SupervisorError> {
        info!(
            log,
            "Starting ferrocorn supervisor {}",
            env!("CARGO_PKG_VERSION")
        );

        // A supervisor re-executed by USR2 inherits its listeners.
        let master_pid: u32 = std::env::var(ENV_MASTER_PID)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let reexec_fds: Option<Vec<RawFd>> = std::env::var(ENV_FDS)
            .ok()
            .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect());
        let metrics_fd: Option<RawFd> = std::env::var(ENV_METRICS_FD)
            .ok()
            .and_then(|v| v.trim().parse().ok());
        sys::remove_env(ENV_FDS);
        sys::remove_env(ENV_MASTER_PID);
        sys::remove_env(ENV_METRICS_FD);
        let master_pid = if master_pid != 0 && sys::getppid() == master_pid {
            master_pid
        } else {
            0
        };

        let (listeners, inherited) = if let Some(fds) = reexec_fds {
            let mut v = Vec::new();
            for fd in fds {
                let mut l =
                    listen::adopt(fd, BindAddr::Fd(fd)).map_err(|e| SupervisorError::Bind {
                        addr: format!("fd://{fd} (inherited from pid {master_pid})"),
                        source: e,
                    })?;
                // Our socket files now: removed at exit once promoted.
                l.unix_path = l
                    .sock
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_pathname().map(|p| p.to_path_buf()));
                v.push(l);
            }
            (v, false)
        } else if let Some(fds) = listen::systemd_fds() {
            let mut v = Vec::new();
            for fd in fds {
                v.push(
                    listen::adopt(fd, BindAddr::Fd(fd)).map_err(|e| SupervisorError::Bind {
                        addr: format!("fd://{fd} (LISTEN_FDS)"),
                        source: e,
                    })?,
                );
            }
            (v, true)
        } else {
            let v = listen::bind_all(&cfg, &bind_opts, &log)?;
            let inherited = v.iter().any(|l| matches!(l.addr, BindAddr::Fd(_)));
            (v, inherited)
        };
        if listeners.is_empty() {
            return Err(SupervisorError::Config("no listener".to_string()));
        }
        if cfg.workers == 0 {
            return Err(SupervisorError::Config(
                "workers must be at least 1".to_string(),
            ));
        }

        let capacity = (cfg.workers * 4).max(1024);
        let slots = Slots::new(capacity)?;
        let free_slots = (0..capacity).rev().collect();

        let poll = Poll::new()?;
        let metrics = match &cfg.metrics {
            None => None,
            Some(mc) => {
                // A USR2 child shares the directory with its parent's live
                // workers: it must not clear their files.
                let inherited = metrics_fd.filter(|_| master_pid != 0);
                let mut m = Metrics::new(mc, master_pid != 0, inherited, metrics_prefix, &log)?;
                m.register(poll.registry(), EXPORTER_FIRST_TOKEN)?;
                m.set_listeners(&listeners);
                Some(m)
            }
        };
        if metrics.is_some() && !backlog::BUILT {
            warn!(
                log,
                "the listen-backlog gauge (feature tcpinfo) is not built into this binary"
            );
        }

        let sigpipe = sys::SignalPipe::install()?;
        poll.registry().register(
            &mut SourceFd(&sigpipe.read_fd()),
            SIGNAL_TOKEN,
            Interest::READABLE,
        )?;

        // Last: nothing after this can fail and leave a stale pidfile.
        let (pidfile, promote_to) = match &cfg.pidfile {
            None => (None, None),
            Some(p) if master_pid != 0 => {
                let mut two = p.clone().into_os_string();
                two.push(".2");
                let two = PathBuf::from(two);
                (
                    Some(Pidfile::create(&two).map_err(SupervisorError::Io)?),
                    Some(p.clone()),
                )
            }
            Some(p) => (Some(Pidfile::create(p).map_err(SupervisorError::Io)?), None),
        };

        listen::log_listening(&listeners, &log);
        let num_workers = cfg.workers;
        Ok(Arbiter {
            cfg,
            logs,
            log,
            hooks,
            bind_opts,
            listeners,
            inherited,
            slots,
            free_slots,
            workers: BTreeMap::new(),
            next_id: 1,
            num_workers,
            generation: 0,
            reload_until: None,
            phase: Phase::Running,
            poll,
            sigpipe: Some(sigpipe),
            metrics,
            pidfile,
            master_pid,
            promote_to,
            reexec_child: None,
            boot_deaths: 0,
            checked_ms: 0,
            resumed_ms: 0,
            halt: None,
            halted: None,
        })
    }

    fn main_loop<S: Service>(&mut self, service: &mut S) -> Result<(), SupervisorError> {
        self.manage_workers(service);
        if let Err(e) = notify::sd_notify("READY=1") {
            warn!(self.log, "sd_notify READY=1 failed: {}", e);
        }
        let labels: Vec<String> = self.listeners.iter().map(|l| l.label.clone()).collect();
        if let Some(h) = self.hooks.when_ready.as_mut() {
            h(&labels);
        }
        let mut events = Events::with_capacity(64);
        let mut signals = Vec::new();
        self.checked_ms = now_ms();
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != std::io::ErrorKind::Interrupted
            {
                // Cannot supervise any more: leave no orphan behind.
                error!(self.log, "poll failed: {}; killing the workers", e);
                self.signal_all(libc::SIGKILL);
                return Err(e.into());
            }
            for ev in events.iter() {
                if ev.token() == SIGNAL_TOKEN {
                    continue;
                }
                if let Some(m) = self.metrics.as_mut()
                    && m.owns(ev.token())
                {
                    m.handle(self.poll.registry(), ev);
                }
            }
            if let Some(p) = &self.sigpipe {
                p.drain(&mut signals);
            }
            for sig in signals.drain(..) {
                self.handle_signal(sig, service);
            }
            self.reap();
            if let Some(e) = self.halt.take()
                && self.halted.is_none()
            {
                self.halted = Some(e);
                self.begin_stop(false, Instant::now() + self.cfg.graceful_timeout);
            }
            self.maybe_promote();
            self.murder_workers();
            match self.phase {
                Phase::Running => self.manage_workers(service),
                Phase::Draining { until, deadline } => {
                    self.manage_workers(service);
                    self.drain_step(until, deadline);
                }
                Phase::Stopping {
                    quick,
                    deadline,
                    killed,
                } => {
                    if self.workers.is_empty() {
                        break;
                    }
                    if !killed && Instant::now() >= deadline {
                        warn!(
                            self.log,
                            "{} worker(s) still running after the graceful timeout; sending SIGKILL",
                            self.workers.len()
                        );
                        self.signal_all(libc::SIGKILL);
                        self.phase = Phase::Stopping {
                            quick,
                            deadline,
                            killed: true,
                        };
                    }
                }
            }
            self.update_metrics();
        }
        match self.halted.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// How long the loop may sleep: at most a second; 20 ms while it polls
    /// for something (queues to drain, new workers' first beat); until the
    /// next SIGKILL deadline otherwise. Exits wake it through SIGCHLD.
    fn poll_timeout(&mut self) -> Duration {
        let mut t = Duration::from_secs(1);
        if let Some(m) = self.metrics.as_mut() {
            t = t.min(m.tick(self.poll.registry()));
        }
        if matches!(self.phase, Phase::Draining { .. }) || self.reload_until.is_some() {
            t = t.min(FAST_TICK);
        }
        let now = Instant::now();
        let mut until = |at: Instant| t = t.min(at.saturating_duration_since(now));
        if let Phase::Stopping {
            deadline,
            killed: false,
            ..
        } = self.phase
        {
            until(deadline);
        }
        for w in self.workers.values() {
            match w.state {
                WorkerState::Stopping {
                    sent,
                    deadline,
                    killed: false,
                    ..
                } => until(deadline.min(sent + RESEND)),
                WorkerState::Aborted { at, killed: false } => until(at + ABORT_GRACE),
                _ => {}
            }
        }
        t
    }

    // ---------------------------------------------------------------- signals

    fn handle_signal<S: Service>(&mut self, sig: i32, service: &mut S) {
        if sig == libc::SIGCHLD {
            return;
        }
        let name = signal_name(sig);
        info!(
            self.log,
            "Handling signal: {}",
            name.trim_start_matches("SIG").to_lowercase()
        );
        match sig {
            libc::SIGTERM if self.phase == Phase::Running => {
                self.begin_graceful_stop();
            }
            libc::SIGINT | libc::SIGQUIT => {
                let already_quick = matches!(self.phase, Phase::Stopping { quick: true, .. });
                if !already_quick {
                    self.begin_stop(true, Instant::now() + self.cfg.graceful_timeout);
                }
            }
            libc::SIGHUP if self.phase == Phase::Running => self.reload(service),
            libc::SIGTTIN if self.phase == Phase::Running => {
                self.set_num_workers(self.num_workers + 1);
            }
            libc::SIGTTOU if self.phase == Phase::Running && self.num_workers > 1 => {
                self.set_num_workers(self.num_workers - 1);
            }
            libc::SIGWINCH if self.phase == Phase::Running => {
                info!(self.log, "graceful stop of workers");
                self.set_num_workers(0);
            }
            libc::SIGUSR1 => {
                if let Err(e) = self.logs.reopen() {
                    error!(self.log, "reopening log files failed: {}", e);
                }
                self.signal_all(libc::SIGUSR1);
            }
            libc::SIGUSR2 if self.phase == Phase::Running => self.reexec(),
            _ => {}
        }
    }

    fn set_num_workers(&mut self, n: usize) {
        let old = self.num_workers;
        self.num_workers = n;
        if n != old
            && let Some(h) = self.hooks.nworkers_changed.as_mut()
        {
            h(n, old);
        }
    }

    fn signal_all(&mut self, sig: i32) {
        for &pid in self.workers.keys() {
            let _ = sys::kill(pid, sig);
        }
    }

    /// TERM: keep the workers accepting until the connections already in the
    /// listen queues are accepted, then stop them gracefully.
    ///
    /// The whole stop takes at most `graceful_timeout` (then SIGKILL): the
    /// drain at most half of it, the workers' own graceful exit the rest.
    fn begin_graceful_stop(&mut self) {
        let _ = notify::sd_notify("STOPPING=1");
        let now = Instant::now();
        let until = now + self.cfg.graceful_timeout / 2;
        let deadline = now + self.cfg.graceful_timeout;
        self.phase = Phase::Draining { until, deadline };
        self.drain_step(until, deadline);
    }

    /// Stop once no listener has a connection waiting for accept().
    ///
    /// Workers stop accepting as soon as they get SIGTERM, and the kernel
    /// resets every connection still queued when the last descriptor of a
    /// listener closes (gunicorn #3397). So the supervisor keeps the workers
    /// accepting until the listen queues are empty (a listening socket polls
    /// readable exactly when its queue is not), and only then sends SIGTERM
    /// and closes its own copies of the listeners. Connections that arrive
    /// after that moment are refused or reset, as with gunicorn. Bounded by
    /// half the `graceful_timeout`.
    fn drain_step(&mut self, until: Instant, deadline: Instant) {
        let alive = self
            .workers
            .values()
            .filter(|w| w.state == WorkerState::Running)
            .count();
        let busy: Vec<&str> = self
            .listeners
            .iter()
            .filter(|l| sys::has_pending(l.fd()))
            .map(|l| l.label.as_str())
            .collect();
        if busy.is_empty() || alive == 0 || Instant::now() >= until {
            if !busy.is_empty() {
                warn!(
                    self.log,
                    "connections still queued on {} after half the graceful timeout",
                    busy.join(", ")
                );
            }
            self.begin_stop(false, deadline);
        }
    }

    /// Tell every worker to stop (TERM graceful, QUIT quick) and close the
    /// supervisor's copies of the listeners.
    /// SIGKILL for whatever still runs at `deadline`.
    ///
    /// After an upgrade (USR2) the new supervisor's workers serve the same
    /// listeners: a graceful stop then retires the workers (HUP), leaving
    /// the listen queue to them.
    fn begin_stop(&mut self, quick: bool, deadline: Instant) {
        if self.phase == Phase::Running {
            let _ = notify::sd_notify("STOPPING=1");
        }
        let sig = if quick {
            libc::SIGQUIT
        } else if self.reexec_child.is_some() {
            RETIRE
        } else {
            libc::SIGTERM
        };
        info!(self.log, "Shutting down: Master");
        for (&pid, w) in self.workers.iter_mut() {
            let _ = sys::kill(pid, sig);
            if !matches!(
                w.state,
                WorkerState::Stopping { .. } | WorkerState::Aborted { .. }
            ) || quick
            {
                w.state = WorkerState::Stopping {
                    sig,
                    sent: Instant::now(),
                    deadline,
                    killed: false,
                };
            }
        }
        self.phase = Phase::Stopping {
            quick,
            deadline,
            killed: false,
        };
        self.close_listeners();
    }

    fn close_listeners(&mut self) {
        if let Some(m) = &self.metrics {
            m.set_listeners(&[]);
        }
        // After a USR2 the new supervisor serves the same socket files.
        let unlink = !self.inherited && self.reexec_child.is_none() && self.master_pid == 0;
        for l in self.listeners.drain(..) {
            if unlink && let Some(p) = &l.unix_path {
                let _ = std::fs::remove_file(p);
            }
        }
    }

    // ----------------------------------------------------------------- reload

    fn reload<S: Service>(&mut self, service: &mut S) {
        info!(self.log, "Hang up: Master");
        let new = match service.reload() {
            Ok(c) if c.workers == 0 => {
                error!(
                    self.log,
                    "reload failed, keeping the running workers: workers must be at least 1"
                );
                return;
            }
            Ok(c) => c,
            Err(e) => {
                error!(
                    self.log,
                    "reload failed, keeping the running workers: {}", e
                );
                return;
            }
        };
        if (new.binds != self.cfg.binds
            || new.backlog != self.cfg.backlog
            || new.reuse_port != self.cfg.reuse_port)
            && let Err(e) = self.rebind(&new)
        {
            error!(
                self.log,
                "reload failed, keeping the running workers: {}", e
            );
            return;
        }
        if new.metrics != self.cfg.metrics {
            warn!(self.log, "metrics settings change only with a restart");
        }
        if new.pidfile != self.cfg.pidfile {
            warn!(self.log, "the pidfile changes only with a restart");
        }
        match service.reload_logs() {
            Some(logs) => self.logs.switch(logs),
            None => {
                if let Err(e) = self.logs.reopen() {
                    error!(self.log, "reopening log files failed: {}", e);
                }
            }
        }
        let metrics = self.cfg.metrics.clone();
        let pidfile = self.cfg.pidfile.clone();
        self.cfg = new;
        self.cfg.metrics = metrics;
        self.cfg.pidfile = pidfile;
        self.generation += 1;
        self.reload_until = Some(Instant::now() + self.cfg.graceful_timeout.max(self.cfg.timeout));
        self.set_num_workers(self.cfg.workers);
        if let Some(h) = self.hooks.on_reload.as_mut() {
            h(&self.cfg);
        }
    }

    /// Bind the addresses new in `new`, keep the ones still wanted, close
    /// the others.
    fn rebind(&mut self, new: &SupervisorConfig) -> Result<(), SupervisorError> {
        let opts = BindOptions {
            attempts: 1,
            delay: Duration::ZERO,
            unix_mode: self.bind_opts.unix_mode,
        };
        let mut old: Vec<Option<Listener>> = self.listeners.drain(..).map(Some).collect();
        // (index in `old` when kept, listener), in the new order.
        let mut out: Vec<(Option<usize>, Listener)> = Vec::new();
        let mut result = Ok(());
        for addr in &new.binds {
            let keep = old.iter().position(|l| {
                l.as_ref()
                    .is_some_and(|l| &l.addr == addr || l.label == addr.to_string())
            });
            if let Some(i) = keep {
                out.push((Some(i), old[i].take().expect("found above")));
                continue;
            }
            let one = SupervisorConfig {
                binds: vec![addr.clone()],
                ..new.clone()
            };
            match listen::bind_all(&one, &opts, &self.log) {
                Ok(v) => out.extend(v.into_iter().map(|l| (None, l))),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if let Err(e) = result {
            // Put everything back as it was; the new sockets are closed.
            for (i, l) in out {
                if let Some(i) = i {
                    old[i] = Some(l);
                }
            }
            self.listeners = old.into_iter().flatten().collect();
            return Err(e);
        }
        if new.backlog != self.cfg.backlog {
            for (i, l) in &out {
                if i.is_some() {
                    let _ = l.sock.listen(new.backlog);
                }
            }
        }
        let out: Vec<Listener> = out.into_iter().map(|(_, l)| l).collect();
        for l in old.into_iter().flatten() {
            info!(self.log, "Closing listener {}", l.label);
            if !self.inherited
                && let Some(p) = &l.unix_path
            {
                let _ = std::fs::remove_file(p);
            }
        }
        self.listeners = out;
        listen::log_listening(&self.listeners, &self.log);
        if let Some(m) = &self.metrics {
            m.set_listeners(&self.listeners);
        }
        Ok(())
    }

    // ------------------------------------------------------------------ USR2

    fn reexec(&mut self) {
        if self.reexec_child.is_some() {
            warn!(self.log, "USR2 signal ignored. Child exists.");
            return;
        }
        if self.master_pid != 0 {
            warn!(self.log, "USR2 signal ignored. Parent exists.");
            return;
        }
        let mut args = std::env::args_os();
        let Some(program) = args.next() else {
            error!(self.log, "USR2: cannot find the program to re-execute");
            return;
        };
        let fds: Vec<RawFd> = self.listeners.iter().map(|l| l.fd()).collect();
        for &fd in &fds {
            if let Err(e) = sys::set_cloexec(fd, false) {
                error!(self.log, "USR2: cannot pass fd {}: {}", fd, e);
            }
        }
        let list = fds
            .iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let mut cmd = std::process::Command::new(&program);
        cmd.args(args)
            .env(ENV_FDS, &list)
            .env(ENV_MASTER_PID, std::process::id().to_string());
        // The exporter's socket too: the port stays ours, both supervisors
        // answer scrapes until the old one exits.
        let metrics_fd = self.metrics.as_ref().map(|m| m.listener_fd());
        if let Some(fd) = metrics_fd
            && sys::set_cloexec(fd, false).is_ok()
        {
            cmd.env(ENV_METRICS_FD, fd.to_string());
        }
        let spawned = cmd.spawn();
        for &fd in fds.iter().chain(metrics_fd.iter()) {
            let _ = sys::set_cloexec(fd, true);
        }
        match spawned {
            Ok(child) => {
                info!(
                    self.log,
                    "Re-executed {} as pid {} with listeners {}",
                    program.to_string_lossy(),
                    child.id(),
                    list
                );
                self.reexec_child = Some(child.id() as i32);
            }
            Err(e) => error!(self.log, "USR2: re-executing {:?} failed: {}", program, e),
        }
    }

    fn maybe_promote(&mut self) {
        if self.master_pid == 0 || sys::getppid() == self.master_pid {
            return;
        }
        info!(self.log, "Master has been promoted.");
        self.master_pid = 0;
        if let (Some(p), Some(to)) = (self.pidfile.as_mut(), self.promote_to.take())
            && let Err(e) = p.rename(&to)
        {
            error!(
                self.log,
                "moving pidfile {} to {}: {}",
                p.path().display(),
                to.display(),
                e
            );
        }
    }

    // --------------------------------------------------------------- workers

    fn manage_workers<S: Service>(&mut self, service: &mut S) {
        if self.halt.is_some() || self.halted.is_some() {
            return;
        }
        let current: Vec<i32> = self
            .workers
            .iter()
            .filter(|(_, w)| w.generation == self.generation && w.state == WorkerState::Running)
            .map(|(&p, _)| p)
            .collect();
        if current.len() > self.num_workers {
            // Oldest first, as gunicorn.
            let mut by_age: Vec<(usize, i32)> =
                current.iter().map(|p| (self.workers[p].id, *p)).collect();
            by_age.sort();
            for &(_, pid) in by_age.iter().take(current.len() - self.num_workers) {
                self.stop_worker(pid);
            }
        }
        for _ in current.len()..self.num_workers {
            if !self.spawn_worker(service) {
                break;
            }
        }
        // Reload: stop the old generation once the new one has booted.
        let old: Vec<i32> = self
            .workers
            .iter()
            .filter(|(_, w)| w.generation != self.generation && w.state == WorkerState::Running)
            .map(|(&p, _)| p)
            .collect();
        if old.is_empty() {
            self.reload_until = None;
            return;
        }
        let booted = self
            .workers
            .values()
            .filter(|w| {
                w.generation == self.generation && w.booted && w.state == WorkerState::Running
            })
            .count();
        let timed_out = self.reload_until.is_none_or(|t| Instant::now() >= t);
        if booted >= self.num_workers || timed_out {
            if timed_out && booted < self.num_workers {
                warn!(
                    self.log,
                    "new workers did not all boot in time; stopping the old ones anyway"
                );
            }
            for pid in old {
                self.stop_worker(pid);
            }
            self.reload_until = None;
        }
    }

    /// Retire one worker while others (or its replacement) serve the same
    /// listeners: SIGHUP, a graceful stop that leaves the listen queue to
    /// them (SIGTERM would have it serve the queue too, which only a
    /// whole-server stop wants).
    fn stop_worker(&mut self, pid: i32) {
        if let Some(w) = self.workers.get_mut(&pid) {
            debug!(self.log, "Stopping worker (pid:{})", pid);
            let _ = sys::kill(pid, RETIRE);
            w.state = WorkerState::Stopping {
                sig: RETIRE,
                sent: Instant::now(),
                deadline: Instant::now() + self.cfg.graceful_timeout,
                killed: false,
            };
        }
    }

    /// Fork one worker; false when no more can be forked now.
    fn spawn_worker<S: Service>(&mut self, service: &mut S) -> bool {
        let Some(slot) = self.free_slots.pop() else {
            error!(self.log, "no heartbeat slot left for a new worker");
            return false;
        };
        let id = self.next_id;
        self.next_id += 1;
        self.slots.prepare(slot);
        if let Some(h) = self.hooks.pre_fork.as_mut() {
            h(id);
        }
        self.logs.flush();
        // The worker's parent is this process. Read it before the fork: a
        // child that asked getppid() after a supervisor already killed would
        // get 1 and never notice that its parent is gone.
        let supervisor_pid = std::process::id();
        let mask = sys::block_all();
        let forked = sys::fork();
        if !matches!(forked, Ok(None))
            && let Some(h) = self.hooks.after_fork_parent.as_mut()
        {
            h(id);
        }
        match forked {
            Err(e) => {
                sys::restore_mask(&mask);
                error!(self.log, "fork failed: {}", e);
                self.slots.release(slot);
                self.free_slots.push(slot);
                false
            }
            Ok(Some(pid)) => {
                sys::restore_mask(&mask);
                info!(self.log, "Booting worker with pid: {}", pid);
                self.workers.insert(
                    pid,
                    WorkerRec {
                        id,
                        slot,
                        spawned_ms: now_ms(),
                        spawned: Instant::now(),
                        generation: self.generation,
                        booted: false,
                        state: WorkerState::Running,
                    },
                );
                true
            }
            Ok(None) => self.become_worker(service, id, slot, supervisor_pid),
        }
    }

    /// In the forked child: shed the supervisor's private state, run the
    /// service, exit.
    fn become_worker<S: Service>(
        &mut self,
        service: &mut S,
        id: usize,
        slot: usize,
        supervisor_pid: u32,
    ) -> ! {
        if let Some(p) = &self.sigpipe {
            p.reset_in_child();
        }
        sys::unblock_all();
        sys::close(self.poll.as_raw_fd());
        let keep: Vec<RawFd> = self.listeners.iter().map(|l| l.fd()).collect();
        let metrics_dir = self.metrics.as_ref().map(|m| {
            m.in_child(&keep);
            m.dir().to_path_buf()
        });
        let listeners = std::mem::take(&mut self.listeners)
            .into_iter()
            .map(Listener::into_inherited)
            .collect();
        if let Some(h) = self.hooks.post_fork.as_mut() {
            h(id);
        }
        // The worker writes to its own logs: the supervisor's files would
        // stay allocated after logrotate deletes them (issue 19).
        self.logs.close_in_child();
        let ctx = WorkerContext {
            listeners,
            heartbeat: Heartbeat::new(self.slots.clone(), slot),
            load: LoadBoard::new(self.slots.clone(), slot),
            ppid: supervisor_pid,
            worker_id: id,
            metrics_dir,
        };
        let service: &S = service;
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| service.worker(ctx)))
            .unwrap_or(1);
        if let Some(h) = self.hooks.worker_exit.as_mut() {
            h(id, code);
        }
        self.logs.flush();
        use std::io::Write;
        let _ = std::io::stdout().flush();
        sys::exit_now(code)
    }

    fn reap(&mut self) {
        while let Some((pid, reason)) = sys::try_wait_any() {
            if Some(pid) == self.reexec_child {
                warn!(
                    self.log,
                    "the re-executed supervisor (pid:{}) {}", pid, reason
                );
                self.reexec_child = None;
                continue;
            }
            let Some(mut w) = self.workers.remove(&pid) else {
                continue;
            };
            // A worker may beat, serve and exit (max_requests) between two
            // looks at its slot: its beat, not our last look, tells whether
            // it booted. Read before the slot is reused.
            if self.slots.slot(w.slot).load(Ordering::Relaxed) != 0 && !w.booted {
                w.booted = true;
                self.boot_deaths = 0;
            }
            // A worker that said it recycles (max_requests) and exits
            // cleanly is replaced as planned: not an unexpected restart.
            let recycled = self.slots.planned(w.slot).load(Ordering::SeqCst) != 0
                && reason == ExitReason::Code(0)
                && w.state == WorkerState::Running;
            self.slots.release(w.slot);
            self.free_slots.push(w.slot);
            let expected = matches!(w.state, WorkerState::Stopping { .. }) || recycled;
            let timed_out = matches!(w.state, WorkerState::Aborted { .. });
            let restart: Option<&'static str> = if expected {
                None
            } else if timed_out {
                Some("timeout")
            } else {
                Some(match reason {
                    ExitReason::Code(0) => "exited",
                    ExitReason::Code(_) => "error",
                    ExitReason::Signal(libc::SIGKILL) => "killed",
                    ExitReason::Signal(_) => "signal",
                })
            };
            match reason {
                ExitReason::Code(0) if recycled => {
                    info!(self.log, "Worker (pid:{}) recycled as planned", pid)
                }
                ExitReason::Code(0) if expected => {
                    info!(self.log, "Worker exiting (pid: {})", pid)
                }
                ExitReason::Code(0) => info!(self.log, "Worker (pid:{}) exited with code 0", pid),
                ExitReason::Code(c) => {
                    error!(self.log, "Worker (pid:{}) exited with code {}", pid, c)
                }
                ExitReason::Signal(libc::SIGKILL) => error!(
                    self.log,
                    "Worker (pid:{}) was sent SIGKILL! Perhaps out of memory?", pid
                ),
                ExitReason::Signal(s) if expected || (timed_out && s == libc::SIGABRT) => {
                    info!(self.log, "Worker (pid:{}) was sent {}", pid, signal_name(s))
                }
                ExitReason::Signal(s) => {
                    error!(
                        self.log,
                        "Worker (pid:{}) was sent {}!",
                        pid,
                        signal_name(s)
                    )
                }
            }
            if let Some(m) = &self.metrics {
                let counted = if self.phase == Phase::Running {
                    restart
                } else {
                    None
                };
                m.worker_exited(pid as u32, counted);
            }
            if let Some(h) = self.hooks.child_exit.as_mut() {
                h(&WorkerExit {
                    pid: pid as u32,
                    worker_id: w.id,
                    reason,
                });
            }
            if expected || self.phase != Phase::Running {
                continue;
            }
            match reason {
                ExitReason::Code(WORKER_BOOT_ERROR) => {
                    self.halt = Some(SupervisorError::WorkerBootFailed { pid: pid as u32 });
                }
                ExitReason::Code(APP_LOAD_ERROR) => {
                    self.halt = Some(SupervisorError::AppLoadFailed { pid: pid as u32 });
                }
                _ if !w.booted && !timed_out && w.spawned.elapsed() < Duration::from_secs(5) => {
                    self.boot_deaths += 1;
                    if self.boot_deaths >= MAX_BOOT_DEATHS {
                        self.halt = Some(SupervisorError::WorkersKeepDying {
                            count: self.boot_deaths,
                            last: reason.to_string(),
                        });
                    }
                }
                _ => {}
            }
        }
    }

    /// Kill workers whose heartbeat is older than `timeout`; SIGKILL the ones
    /// that linger after SIGABRT or after the graceful timeout.
    fn murder_workers(&mut self) {
        let now = now_ms();
        let timeout_ms = self.cfg.timeout.as_millis() as u64;
        if now.saturating_sub(self.checked_ms) > STALL_MS {
            warn!(
                self.log,
                "the supervisor did not run for {} ms (stopped, frozen or starved); the workers' heartbeats count from now",
                now - self.checked_ms
            );
            self.resumed_ms = now;
        }
        self.checked_ms = now;
        for (&pid, w) in self.workers.iter_mut() {
            let beat = self.slots.slot(w.slot).load(Ordering::Relaxed);
            if beat != 0 && !w.booted {
                w.booted = true;
                self.boot_deaths = 0;
            }
            match w.state {
                WorkerState::Running => {
                    let last = if beat == 0 { w.spawned_ms } else { beat };
                    let last = last.max(self.resumed_ms);
                    if timeout_ms > 0 && now.saturating_sub(last) > timeout_ms {
                        crit!(self.log, "WORKER TIMEOUT (pid:{})", pid);
                        let _ = sys::kill(pid, libc::SIGABRT);
                        w.state = WorkerState::Aborted {
                            at: Instant::now(),
                            killed: false,
                        };
                    }
                }
                WorkerState::Aborted { at, killed: false } if at.elapsed() >= ABORT_GRACE => {
                    let _ = sys::kill(pid, libc::SIGKILL);
                    w.state = WorkerState::Aborted { at, killed: true };
                }
                WorkerState::Stopping {
                    sig,
                    sent,
                    deadline,
                    killed: false,
                } => {
                    if Instant::now() >= deadline {
                        warn!(
                            self.log,
                            "Worker (pid:{}) did not stop within the graceful timeout; killing it",
                            pid
                        );
                        let _ = sys::kill(pid, libc::SIGKILL);
                        w.state = WorkerState::Stopping {
                            sig,
                            sent,
                            deadline,
                            killed: true,
                        };
                    } else if sent.elapsed() >= RESEND {
                        // A signal that arrived while the worker was still
                        // installing its handlers may have been lost.
                        let _ = sys::kill(pid, sig);
                        w.state = WorkerState::Stopping {
                            sig,
                            sent: Instant::now(),
                            deadline,
                            killed: false,
                        };
                    }
                }
                _ => {}
            }
        }
    }

    fn update_metrics(&self) {
        if let Some(m) = &self.metrics {
            let alive = self.workers.len();
            m.set_workers(alive, self.num_workers);
        }
    }

    /// After the loop: listeners, pidfile, metrics directory, hooks.
    fn finish(&mut self) {
        self.close_listeners();
        if let Some(p) = self.sigpipe.take() {
            p.uninstall();
        }
        if let Some(p) = self.pidfile.take() {
            p.unlink();
        }
        if let Some(m) = self.metrics.take() {
            m.finish();
        }
        if let Some(h) = self.hooks.on_exit.as_mut() {
            h();
        }
    }
}
