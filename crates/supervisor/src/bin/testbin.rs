//! A tiny supervised HTTP server for the integration tests of
//! `ferrocorn-supervisor` (the tests run it as a separate process because
//! the supervisor forks). Not a product binary.
//!
//! Flags: `--bind ADDR` (repeatable), `--workers N`, `--timeout SECS`,
//! `--graceful-timeout SECS`,
//! `--mode serve|deaf|bootfail|crash|beatexit|nobeat|abrtignore`,
//! `--metrics ADDR`, `--metrics-dir DIR`, `--update-interval SECS`,
//! `--reuse-port true`, `--metrics-prefix P`, `--pidfile PATH`, `--backlog N`, `--bind-retries N`, `--reload-file PATH` (on HUP the
//! worker count is read from it).
//!
//! The workers answer `GET /` with their pid, `GET /slow?ms=N` after N ms,
//! and `GET /stall` by stopping their heartbeat. TERM: stop accepting,
//! finish in-flight requests, exit; INT/QUIT: exit at once.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ferrocorn_supervisor::{
    InheritedListener, MetricsConfig, Service, Supervisor, SupervisorConfig, WorkerContext,
};

/// One line on stderr in a single write(2), so lines of several processes
/// sharing the pipe do not interleave.
macro_rules! say {
    ($($t:tt)*) => {{
        let line = format!("{}\n", format_args!($($t)*));
        let _ = std::io::stderr().write_all(line.as_bytes());
    }};
}

struct Opts {
    config: SupervisorConfig,
    mode: String,
    bind_retries: u32,
    reload_file: Option<PathBuf>,
    metrics_prefix: String,
}

fn secs(v: &str) -> Duration {
    Duration::from_secs_f64(v.parse().expect("seconds"))
}

fn parse() -> Opts {
    let mut config = SupervisorConfig {
        binds: vec![],
        ..SupervisorConfig::default()
    };
    let mut mode = "serve".to_string();
    let mut bind_retries = 1;
    let mut reload_file = None;
    let mut metrics_prefix = ferrocorn_log::DEFAULT_PREFIX.to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--bind" => config.binds.push(v.parse().expect("bind")),
            "--workers" => config.workers = v.parse().expect("workers"),
            "--timeout" => config.timeout = secs(&v),
            "--graceful-timeout" => config.graceful_timeout = secs(&v),
            "--mode" => mode = v,
            "--metrics" => {
                config
                    .metrics
                    .get_or_insert_with(MetricsConfig::default)
                    .bind = v.parse().expect("metrics addr")
            }
            "--metrics-dir" => {
                config
                    .metrics
                    .get_or_insert_with(MetricsConfig::default)
                    .dir = Some(v.into())
            }
            "--update-interval" => {
                config
                    .metrics
                    .get_or_insert_with(MetricsConfig::default)
                    .update_interval = secs(&v)
            }
            "--pidfile" => config.pidfile = Some(v.into()),
            "--backlog" => config.backlog = v.parse().expect("backlog"),
            "--reuse-port" => config.reuse_port = v == "true",
            "--bind-retries" => bind_retries = v.parse().expect("retries"),
            "--reload-file" => reload_file = Some(v.into()),
            "--metrics-prefix" => metrics_prefix = v,
            _ => panic!("unknown flag {a}"),
        }
    }
    if config.binds.is_empty() {
        config.binds.push("127.0.0.1:0".parse().unwrap());
    }
    Opts {
        config,
        mode,
        bind_retries,
        reload_file,
        metrics_prefix,
    }
}

struct TestService {
    mode: String,
    config: SupervisorConfig,
    reload_file: Option<PathBuf>,
}

impl Service for TestService {
    fn worker(&self, ctx: WorkerContext) -> i32 {
        match self.mode.as_str() {
            "bootfail" => return ferrocorn_supervisor::WORKER_BOOT_ERROR,
            "crash" => return 1,
            // Beat once and leave at once, as a worker restarting at
            // max_requests under load can (within one heartbeat check).
            "beatexit" => {
                ctx.heartbeat.beat();
                return 0;
            }
            // Live for 300 ms without a beat (through a few heartbeat
            // checks when the supervisor is woken), then fail.
            "nobeat" => {
                std::thread::sleep(Duration::from_millis(300));
                return 1;
            }
            _ => {}
        }
        // "deaf": the first SIGTERM is lost, as one arriving while a worker
        // installs its handlers can be (said as `LOST TERM pid ms`, the
        // next as `TERM pid ms`). "abrtignore": SIGABRT is caught and
        // ignored (said as `ABRT pid ms`, then `ALIVE pid ms` on every loop
        // turn, ms since the worker started).
        serve(ctx, self.mode == "deaf", self.mode == "abrtignore")
    }

    fn reload(&mut self) -> Result<SupervisorConfig, String> {
        if let Some(p) = &self.reload_file {
            // "WORKERS [BIND...]"
            let s = std::fs::read_to_string(p).map_err(|e| e.to_string())?;
            let mut words = s.split_whitespace();
            let n = words.next().ok_or("empty reload file")?;
            self.config.workers = n.parse().map_err(|e| format!("{e}"))?;
            let binds: Vec<_> = words.map(|w| w.parse()).collect::<Result<_, _>>()?;
            if !binds.is_empty() {
                self.config.binds = binds;
            }
        }
        Ok(self.config.clone())
    }
}

#[cfg(feature = "metrics")]
fn worker_metrics(ctx: &WorkerContext) -> Option<ferrocorn_shm_metrics::Counter> {
    use ferrocorn_shm_metrics::{GaugeMode, Registry};
    let dir = ctx.metrics_dir.as_ref()?;
    let reg = Registry::new(dir);
    let pid = std::process::id().to_string();
    reg.gauge(
        "testbin_worker",
        "A live gauge per worker.",
        &["pid"],
        GaugeMode::LiveAll,
    )
    .with_label_values(&[&pid])
    .ok()?
    .set(1.0);
    reg.counter("testbin_requests", "Requests served.", &[])
        .with_label_values(&[])
        .ok()
}

fn serve(ctx: WorkerContext, deaf: bool, ignore_abrt: bool) -> i32 {
    use mio::{Events, Interest, Poll, Token};
    let started = Instant::now();
    let abrt = Arc::new(AtomicBool::new(false));
    if ignore_abrt {
        signal_hook::flag::register(signal_hook::consts::SIGABRT, abrt.clone()).unwrap();
    }
    let mut aborted = false;
    let term = Arc::new(AtomicBool::new(false));
    let term_signal = Arc::new(AtomicBool::new(false));
    let mut terms_lost = 0;
    let usr1 = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGUSR1, usr1.clone()).unwrap();
    let quit = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, term_signal.clone()).unwrap();
    // Retire: this worker does not take queued connections either.
    signal_hook::flag::register(signal_hook::consts::SIGHUP, term_signal.clone()).unwrap();
    for s in [signal_hook::consts::SIGQUIT, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(s, quit.clone()).unwrap();
    }
    #[cfg(feature = "metrics")]
    let requests = worker_metrics(&ctx).map(Arc::new);
    let stalled = Arc::new(AtomicBool::new(false));
    let inflight = Arc::new(AtomicUsize::new(0));
    let mut poll = Poll::new().unwrap();
    enum L {
        Tcp(mio::net::TcpListener),
        Unix(mio::net::UnixListener),
    }
    let mut listeners: Vec<L> = Vec::new();
    for (i, l) in ctx.listeners.into_iter().enumerate() {
        let mut l = match l {
            InheritedListener::Tcp(t) => {
                t.set_nonblocking(true).unwrap();
                L::Tcp(mio::net::TcpListener::from_std(t))
            }
            InheritedListener::Unix(u) => {
                u.set_nonblocking(true).unwrap();
                L::Unix(mio::net::UnixListener::from_std(u))
            }
        };
        let r = poll.registry();
        match &mut l {
            L::Tcp(t) => r.register(t, Token(i), Interest::READABLE).unwrap(),
            L::Unix(u) => r.register(u, Token(i), Interest::READABLE).unwrap(),
        }
        listeners.push(l);
    }
    let verbose = std::env::var_os("TESTBIN_VERBOSE").is_some();
    let mut events = Events::with_capacity(64);
    say!("WORKER_READY {}", std::process::id());
    let mut stopping_since: Option<Instant> = None;
    loop {
        if quit.load(Ordering::SeqCst) {
            return 0;
        }
        if usr1.swap(false, Ordering::SeqCst) {
            say!("USR1 {}", std::process::id());
        }
        if abrt.swap(false, Ordering::SeqCst) {
            aborted = true;
            say!(
                "ABRT {} {}",
                std::process::id(),
                started.elapsed().as_millis()
            );
        } else if aborted {
            say!(
                "ALIVE {} {}",
                std::process::id(),
                started.elapsed().as_millis()
            );
        }
        if !stalled.load(Ordering::SeqCst) {
            ctx.heartbeat.beat();
        }
        if ferrocorn_getppid() != ctx.ppid {
            return 0;
        }
        if term_signal.swap(false, Ordering::SeqCst) {
            let ms = started.elapsed().as_millis();
            if deaf && terms_lost == 0 {
                terms_lost += 1;
                say!("LOST TERM {} {ms}", std::process::id());
            } else {
                if deaf {
                    say!("TERM {} {ms}", std::process::id());
                }
                term.store(true, Ordering::SeqCst);
            }
        }
        if term.load(Ordering::SeqCst) && stopping_since.is_none() {
            // Graceful: stop accepting (close our copies), finish in-flight.
            listeners.clear();
            stopping_since = Some(Instant::now());
        }
        if stopping_since.is_some() && inflight.load(Ordering::SeqCst) == 0 {
            return 0;
        }
        match poll.poll(&mut events, Some(Duration::from_millis(50))) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("{e}"),
        }
        for ev in events.iter() {
            let Some(l) = listeners.get(ev.token().0) else {
                continue;
            };
            // Like a real worker, stop accepting the moment TERM arrives
            // (the supervisor drains the listen queue before sending it).
            while !term.load(Ordering::SeqCst) {
                let conn: Box<dyn ReadWrite> = match l {
                    L::Tcp(t) => match t.accept() {
                        Ok((s, _)) => {
                            let s: std::net::TcpStream = s.into();
                            s.set_nonblocking(false).unwrap();
                            Box::new(s)
                        }
                        Err(_) => break,
                    },
                    L::Unix(u) => match u.accept() {
                        Ok((s, _)) => {
                            let s: std::os::unix::net::UnixStream = s.into();
                            s.set_nonblocking(false).unwrap();
                            Box::new(s)
                        }
                        Err(_) => break,
                    },
                };
                let n = inflight.fetch_add(1, Ordering::SeqCst) + 1;
                if verbose {
                    say!("ACCEPTED {} {n}", std::process::id());
                }
                let inflight = inflight.clone();
                let stalled = stalled.clone();
                #[cfg(feature = "metrics")]
                let requests = requests.clone();
                std::thread::spawn(move || {
                    handle(conn, &stalled);
                    #[cfg(feature = "metrics")]
                    if let Some(r) = requests {
                        r.inc();
                    }
                    inflight.fetch_sub(1, Ordering::SeqCst);
                });
            }
        }
    }
}

fn ferrocorn_getppid() -> u32 {
    std::os::unix::process::parent_id()
}

trait ReadWrite: Read + Write + Send {}
impl<T: Read + Write + Send> ReadWrite for T {}

fn handle(mut conn: Box<dyn ReadWrite>, stalled: &AtomicBool) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let target = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    if let Some(ms) = target.strip_prefix("/slow?ms=") {
        std::thread::sleep(Duration::from_millis(ms.parse().unwrap_or(100)));
    }
    if target == "/stall" {
        stalled.store(true, Ordering::SeqCst);
    }
    let body = format!("{}\n", std::process::id());
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        body.len(),
        body
    );
    let _ = conn.write_all(resp.as_bytes());
}

fn main() {
    let opts = parse();
    let log = ferrocorn_log::Logs::new(&ferrocorn_log::LogConfig {
        format: ferrocorn_log::Format::Plain,
        ..ferrocorn_log::LogConfig::default()
    })
    .expect("plain logs");
    let service = TestService {
        mode: opts.mode,
        config: opts.config.clone(),
        reload_file: opts.reload_file,
    };
    let result = Supervisor::new(opts.config, log)
        .bind_retries(opts.bind_retries, Duration::from_millis(50))
        .metrics_prefix(opts.metrics_prefix)
        .when_ready(|labels| {
            println!("READY {} {}", std::process::id(), labels.join(" "));
            let _ = std::io::stdout().flush();
        })
        .nworkers_changed(|new, old| say!("NWORKERS {old} -> {new}"))
        .on_starting(|c| say!("ON_STARTING {}", c.workers))
        .pre_fork(|id| say!("PRE_FORK {id}"))
        .post_fork(|id| say!("POST_FORK {id} {}", std::process::id()))
        .worker_exit(|id, code| say!("WORKER_EXIT {id} {} {code}", std::process::id()))
        .child_exit(|e| say!("CHILD_EXIT {} {} {}", e.worker_id, e.pid, e.reason))
        .on_reload(|c| say!("ON_RELOAD {}", c.workers))
        .on_exit(|| say!("ON_EXIT"))
        .run(service);
    if let Err(e) = result {
        say!("error: {e}");
        std::process::exit(1);
    }
}
