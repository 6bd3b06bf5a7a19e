//! `just bench-wsgi`: one Python WSGI app served by ferrocorn, granian and
//! gunicorn on loopback, measured in the same run, printed as medians and
//! ratios and written to `benches/RESULTS-wsgi.md`.
//!
//! The same app file, 2 workers and the same number of app threads per
//! worker for all three (ferrocorn `--threads`, gunicorn gthread `--threads`
//! with the seed config, granian `--blocking-threads`), keep-alive, wrk with
//! 2 threads, interleaved rounds (the order rotates every round).
//!
//! Scenarios: `hello` (13 bytes with Content-Length), `django` (a Django view
//! rendering a small template from a dict, no database), `sleep` (a view
//! sleeping 50 ms, at 64 connections: the ceiling is workers x threads /
//! 0.05 s), `stream` (a 1 MiB response from a generator, no length) and
//! `upload` (a 1 MiB POST body read through `wsgi.input`). Two light
//! sections without wrk: `memory` (RSS and PSS from
//! `/proc/PID/smaps_rollup` of the supervisor and 4 workers serving the
//! Django app, ferrocorn and gunicorn, each with and without `--preload`)
//! and `startup` (time from the spawn to the first 200 from the Django app,
//! median of 5 starts, for all three).
//!
//! Installs nothing: it checks for wrk, the release binary and a venv with
//! gunicorn 27, granian 2.8 and Django 5.2, and says how to get them. Flags:
//! `--quick`, `--rounds N`, `--duration SECS`, `--threads N`,
//! `--only hello|django|sleep|stream|upload|memory|startup` (repeatable), `--no-write`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use ferrocorn_benches::server::{Server, Workers, free_port};
use ferrocorn_benches::{http, procfs, stats, sys, wrk};

const WORKERS: usize = 2;
const MIB: f64 = 1_048_576.0;

fn main() {
    if let Err(e) = run() {
        eprintln!("wsgibench: {e}");
        std::process::exit(1);
    }
}

struct Options {
    rounds: usize,
    duration: Duration,
    threads: usize,
    only: Vec<String>,
    write: bool,
}

impl Options {
    fn parse() -> Result<Options, String> {
        let mut o = Options {
            rounds: 5,
            duration: Duration::from_secs(5),
            threads: 4,
            only: Vec::new(),
            write: true,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut number = |name: &str| -> Result<u64, String> {
                args.next()
                    .ok_or(format!("{name} needs a value"))?
                    .parse()
                    .map_err(|e| format!("{name}: {e}"))
            };
            match a.as_str() {
                "--quick" => {
                    o.rounds = 1;
                    o.duration = Duration::from_secs(2);
                }
                "--rounds" => o.rounds = number("--rounds")?.max(1) as usize,
                "--duration" => o.duration = Duration::from_secs(number("--duration")?.max(1)),
                "--threads" => o.threads = number("--threads")?.max(1) as usize,
                "--only" => o.only.push(args.next().ok_or("--only needs a value")?),
                "--no-write" => o.write = false,
                "-h" | "--help" => {
                    println!(
                        "wsgibench [--quick] [--rounds N] [--duration SECS] [--threads N] [--only hello|django|sleep|stream|upload|memory|startup]... [--no-write]"
                    );
                    std::process::exit(0);
                }
                other => return Err(format!("unknown argument {other:?} (try --help)")),
            }
        }
        Ok(o)
    }

    fn wants(&self, what: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == what)
    }
}

struct Paths {
    root: PathBuf,
    ferrocorn: PathBuf,
    venv: PathBuf,
    seed_config: PathBuf,
    /// The app files, written by the bench.
    apps: PathBuf,
    _tmp: tempfile::TempDir,
}

/// The app files every server serves.
const APPS_PY: &str = r#"# wsgibench: the plain WSGI apps.
import time

HELLO = b"Hello, world!"
HELLO_HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(HELLO)))]


def hello(environ, start_response):
    start_response("200 OK", HELLO_HEADERS)
    return [HELLO]


def sleep(environ, start_response):
    time.sleep(0.05)
    start_response("200 OK", HELLO_HEADERS)
    return [HELLO]


CHUNK = b"x" * 65536


def stream(environ, start_response):
    # 1 MiB in 16 chunks from a generator: no Content-Length, so chunked.
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return (CHUNK for _ in range(16))


def upload(environ, start_response):
    stream = environ["wsgi.input"]
    total = 0
    while True:
        block = stream.read(65536)
        if not block:
            break
        total += len(block)
    body = str(total).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"#;

/// A one-file Django project: settings, one view rendering a template, the
/// WSGI application. No database, the middleware a project without sessions
/// keeps.
const DJANGO_PY: &str = r#"# wsgibench: a Django view rendering a small template from a dict.
import os

from django.conf import settings

settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["*"],
    SECRET_KEY="wsgibench-not-secret",
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=[],
    MIDDLEWARE=[
        "django.middleware.security.SecurityMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
    ],
    TEMPLATES=[
        {
            "BACKEND": "django.template.backends.django.DjangoTemplates",
            "DIRS": [os.path.dirname(os.path.abspath(__file__))],
        }
    ],
    USE_TZ=True,
)

import django  # noqa: E402

django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.shortcuts import render  # noqa: E402
from django.urls import path  # noqa: E402

ITEMS = [{"name": f"item {i}", "price": i * 1.25, "stock": i % 3 != 0} for i in range(10)]


def index(request):
    return render(request, "bench.html", {"title": "wsgibench", "items": ITEMS, "user": "operator"})


urlpatterns = [path("", index)]

application = get_wsgi_application()
"#;

const DJANGO_TEMPLATE: &str = r#"<!doctype html>
<html><head><title>{{ title }}</title></head>
<body>
<h1>{{ title|upper }}</h1>
<p>Hello, {{ user }}.</p>
<ul>
{% for item in items %}<li>{{ item.name }}: {{ item.price|floatformat:2 }}{% if not item.stock %} (out of stock){% endif %}</li>
{% endfor %}</ul>
</body></html>
"#;

fn run() -> Result<(), String> {
    let opts = Options::parse()?;
    let paths = locate()?;
    sys::raise_nofile(20_000).map_err(|e| format!("setrlimit: {e}"))?;
    let done = paths.apps.join("done.lua");
    fs::write(&done, wrk::DONE_SCRIPT).map_err(|e| e.to_string())?;
    let upload_script = paths.apps.join("upload.lua");
    fs::write(
        &upload_script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = string.rep(\"x\", 1048576)\nwrk.headers[\"Content-Type\"] = \"application/octet-stream\"\n{}",
            wrk::DONE_SCRIPT
        ),
    )
    .map_err(|e| e.to_string())?;

    let scenarios = [
        Scenario {
            name: "hello",
            app: "wsgibench_apps:hello",
            connections: &[32, 256],
            script: &done,
            bytes_per_request: 0.0,
        },
        Scenario {
            name: "django",
            app: "wsgibench_django:application",
            connections: &[32, 256],
            script: &done,
            bytes_per_request: 0.0,
        },
        Scenario {
            name: "sleep",
            app: "wsgibench_apps:sleep",
            connections: &[64],
            script: &done,
            bytes_per_request: 0.0,
        },
        Scenario {
            name: "stream",
            app: "wsgibench_apps:stream",
            connections: &[16],
            script: &done,
            bytes_per_request: MIB,
        },
        Scenario {
            name: "upload",
            app: "wsgibench_apps:upload",
            connections: &[16],
            script: &upload_script,
            bytes_per_request: MIB,
        },
    ];
    let mut report = Report {
        threads: opts.threads,
        rounds: opts.rounds,
        duration: opts.duration,
        ..Report::default()
    };
    for s in scenarios.iter().filter(|s| opts.wants(s.name)) {
        measure(&opts, &paths, s, &mut report)?;
    }
    if opts.wants("memory") {
        measure_memory(&opts, &paths, &mut report)?;
    }
    if opts.wants("startup") {
        measure_startup(&opts, &paths, &mut report)?;
    }
    let text = report.render(&paths);
    println!("\n{text}");
    if opts.write {
        let out = paths.root.join("benches/RESULTS-wsgi.md");
        fs::write(&out, &text).map_err(|e| format!("{}: {e}", out.display()))?;
        println!("written to {}", out.display());
    }
    Ok(())
}

/// Finds the binary and the venv, or says how to get them; writes the apps.
fn locate() -> Result<Paths, String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("no workspace root")?
        .to_path_buf();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let ferrocorn = std::env::var_os("FERROCORN_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| exe.with_file_name("ferrocorn"));
    let venv = std::env::var_os("FERROCORN_WSGI_BENCH_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv-wsgibench"));
    let seed_config = std::env::var_os("FERROCORN_SEED_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../shared/seed/gunicorn.config.py"));

    let mut missing = Vec::new();
    if !std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("wrk").is_file()))
    {
        missing.push("wrk: apt-get install wrk".to_owned());
    }
    let venv_ok = Command::new(venv.join("bin/python"))
        .args([
            "-c",
            "import gunicorn, granian, django, prometheus_client, structlog; \
             assert gunicorn.__version__.startswith('27.'), gunicorn.__version__; \
             assert granian.__version__.startswith('2.8'), granian.__version__; \
             assert django.__version__.startswith('5.2'), django.__version__",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !venv_ok {
        missing.push(format!(
            "a venv at {} with the peers: python3 -m venv .venv-wsgibench && .venv-wsgibench/bin/pip install -r benches/requirements-wsgi.txt (or set FERROCORN_WSGI_BENCH_VENV)",
            venv.display()
        ));
    }
    if !seed_config.exists() {
        missing.push(format!(
            "the seed config {} (or set FERROCORN_SEED_CONFIG)",
            seed_config.display()
        ));
    }
    if !ferrocorn.exists() {
        missing.push(format!(
            "ferrocorn at {}: cargo build --release -p ferrocorn -p ferrocorn-benches",
            ferrocorn.display()
        ));
    }
    if !missing.is_empty() {
        return Err(format!("missing:\n  {}", missing.join("\n  ")));
    }
    let tmp = tempfile::Builder::new()
        .prefix("wsgibench")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let apps = tmp.path().join("apps");
    fs::create_dir_all(&apps).map_err(|e| e.to_string())?;
    for (name, text) in [
        ("wsgibench_apps.py", APPS_PY),
        ("wsgibench_django.py", DJANGO_PY),
        ("bench.html", DJANGO_TEMPLATE),
    ] {
        fs::write(apps.join(name), text).map_err(|e| e.to_string())?;
    }
    Ok(Paths {
        root,
        ferrocorn,
        venv,
        seed_config,
        apps,
        _tmp: tmp,
    })
}

/// One app measured on every server.
struct Scenario<'a> {
    name: &'static str,
    /// `module:callable` in the apps folder.
    app: &'static str,
    connections: &'static [usize],
    /// wrk's Lua script (the done hook, and the upload's body).
    script: &'a Path,
    /// Response or request body bytes per request, for MB/s (0: not shown).
    bytes_per_request: f64,
}

const FERRO: &str = "ferrocorn";
const GRANIAN: &str = "granian";
const GUNICORN: &str = "gunicorn";

fn start(paths: &Paths, server: &str, app: &str, threads: usize) -> Result<Server, String> {
    start_with(paths, server, app, threads, WORKERS, false)
}

/// [`start`] with `workers` workers and, for ferrocorn and gunicorn, the
/// app imported in the supervisor before the fork (`--preload`).
fn start_with(
    paths: &Paths,
    server: &str,
    app: &str,
    threads: usize,
    worker_count: usize,
    preload: bool,
) -> Result<Server, String> {
    let port = free_port().map_err(|e| e.to_string())?;
    start_on(paths, server, app, threads, worker_count, preload, port)
}

/// [`start_with`] on a port given.
fn start_on(
    paths: &Paths,
    server: &str,
    app: &str,
    threads: usize,
    worker_count: usize,
    preload: bool,
    port: u16,
) -> Result<Server, String> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let threads = threads.to_string();
    let workers = worker_count.to_string();
    let venv_bin = paths.venv.join("bin");
    // Every server's Python sees the venv first (ferrocorn takes the venv
    // from VIRTUAL_ENV, as a gunicorn installed in it would).
    let path = format!(
        "{}:{}",
        venv_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd;
    let mut metrics = None;
    match server {
        FERRO => {
            let mport = free_port().map_err(|e| e.to_string())?;
            metrics = Some(SocketAddr::from(([127, 0, 0, 1], mport)));
            cmd = Command::new(&paths.ferrocorn);
            cmd.args(["-w", &workers, "--threads", &threads, "-b"])
                .arg(addr.to_string())
                .args(["--metrics-bind", "127.0.0.1", "--metrics-port"])
                .arg(mport.to_string())
                .arg("--chdir")
                .arg(&paths.apps)
                .arg(app)
                .env("VIRTUAL_ENV", &paths.venv);
        }
        GUNICORN => {
            let mport = free_port().map_err(|e| e.to_string())?;
            metrics = Some(SocketAddr::from(([127, 0, 0, 1], mport)));
            let prom = paths.apps.join(format!("prom-{port}"));
            fs::create_dir_all(&prom).map_err(|e| e.to_string())?;
            cmd = Command::new(venv_bin.join("gunicorn"));
            cmd.arg("-c")
                .arg(&paths.seed_config)
                .args(["-k", "gthread", "-w", &workers, "--threads", &threads, "-b"])
                .arg(addr.to_string())
                .arg("--chdir")
                .arg(&paths.apps)
                .arg(app)
                .env("PROMETHEUS_METRICS_EXPORT_PORT", mport.to_string())
                .env("PROMETHEUS_MULTIPROC_DIR", &prom);
        }
        GRANIAN => {
            cmd = Command::new(venv_bin.join("granian"));
            cmd.args(["--interface", "wsgi", "--host", "127.0.0.1", "--port"])
                .arg(port.to_string())
                .args(["--workers", &workers, "--blocking-threads", &threads])
                .arg("--working-dir")
                .arg(&paths.apps)
                .arg("--no-access-log")
                .arg(app);
        }
        other => return Err(format!("unknown server {other}")),
    }
    if preload {
        if server == GRANIAN {
            return Err("granian has no --preload".into());
        }
        cmd.arg("--preload");
    }
    cmd.env("PATH", path);
    let name = if preload {
        format!("{server} --preload")
    } else {
        server.to_owned()
    };
    let mut s = Server::start(&name, cmd, addr, Workers::Children, worker_count)?;
    s.metrics = metrics;
    Ok(s)
}

/// One cell: a server at a connection count, one value per round.
#[derive(Default)]
struct Cell {
    rps: Vec<f64>,
    per_cpu: Vec<f64>,
    user_us: Vec<f64>,
    sys_us: Vec<f64>,
    p50_us: Vec<f64>,
    p99_us: Vec<f64>,
    errors: u64,
    requests: u64,
}

fn measure(
    opts: &Options,
    paths: &Paths,
    scenario: &Scenario<'_>,
    report: &mut Report,
) -> Result<(), String> {
    println!("== {}: {}", scenario.name, scenario.app);
    let mut servers = Vec::new();
    for name in [FERRO, GRANIAN, GUNICORN] {
        match start(paths, name, scenario.app, opts.threads) {
            Ok(s) => {
                let resp = http::get(s.addr, "/", Duration::from_secs(5))
                    .map_err(|e| format!("{name}: {e}"))?;
                if resp.status != 200 {
                    return Err(format!(
                        "{name} answered {} to GET /\n{}",
                        resp.status,
                        s.log_tail()
                    ));
                }
                println!(
                    "   {name:<10} {} (pid {}, workers {:?})",
                    s.addr,
                    s.pid(),
                    s.worker_pids()
                );
                servers.push(s);
            }
            Err(e) => {
                println!("   {name}: NOT MEASURED: {e}");
                report
                    .notes
                    .push(format!("{}: {name} not measured: {e}", scenario.name));
            }
        }
    }
    for s in &servers {
        let url = format!("http://{}/", s.addr);
        wrk::run(
            &url,
            2,
            scenario.connections[0],
            Duration::from_secs(1),
            scenario.script,
        )
        .map_err(|e| format!("{} warm-up: {e}", s.name))?;
    }
    for round in 0..opts.rounds {
        for &conns in scenario.connections {
            let n = servers.len();
            for i in 0..n {
                let s = &servers[(i + round) % n];
                let url = format!("http://{}/", s.addr);
                let pids = s.all_pids();
                let (user0, sys0) = procfs::cpu_user_system_sum(&pids);
                let r = wrk::run(&url, 2, conns, opts.duration, scenario.script)
                    .map_err(|e| format!("{}: {e}", s.name))?;
                let (user1, sys1) = procfs::cpu_user_system_sum(&pids);
                let (user, sys) = (user1 - user0, sys1 - sys0);
                let per_req = 1e6 / (r.requests as f64).max(1.0);
                println!(
                    "   round {} c={conns:<4} {:<10} {:>8.0} req/s {:>7.0} req/CPU-s  user {:>6.1} sys {:>6.1} µs/req  p50 {:>8.3} ms  p99 {:>8.3} ms  errors {}",
                    round + 1,
                    s.name,
                    r.requests_per_sec(),
                    r.requests as f64 / (user + sys).max(0.01),
                    user * per_req,
                    sys * per_req,
                    r.p50_us / 1e3,
                    r.p99_us / 1e3,
                    r.errors
                );
                let cell = report
                    .cells
                    .entry((scenario.name.to_owned(), s.name.clone(), conns))
                    .or_default();
                cell.rps.push(r.requests_per_sec());
                cell.per_cpu
                    .push(r.requests as f64 / (user + sys).max(0.01));
                cell.user_us.push(user * per_req);
                cell.sys_us.push(sys * per_req);
                cell.p50_us.push(r.p50_us);
                cell.p99_us.push(r.p99_us);
                cell.errors += r.errors;
                cell.requests += r.requests;
            }
        }
    }
    report.scenarios.push((
        scenario.name,
        scenario.app,
        scenario.connections,
        scenario.bytes_per_request,
    ));
    Ok(())
}

/// `--only memory`: memory of the Django app served by ferrocorn and by
/// gunicorn, each with 4 workers, with and without `--preload`.
const MEMORY_WORKERS: usize = 4;
/// `--only startup`: starts per server (after one unmeasured start).
const STARTS: usize = 5;
/// The Django app the memory and start-up sections serve.
const DJANGO_APP: &str = "wsgibench_django:application";

/// One server's memory after serving: the supervisor's and each worker's
/// RSS and PSS, in bytes.
struct MemoryRow {
    name: String,
    supervisor: (u64, u64),
    workers: Vec<(u64, u64)>,
    requests: u64,
}

/// `requests` GETs of `/` on fresh connections from 8 threads (so that
/// every worker serves some and has run the view, its templates and
/// middleware); how many answered 200.
fn warm(addr: SocketAddr, requests: u64) -> u64 {
    let clients = 8;
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            std::thread::spawn(move || {
                (0..requests / clients)
                    .filter(|_| {
                        http::get(addr, "/", Duration::from_secs(10)).is_ok_and(|r| r.status == 200)
                    })
                    .count() as u64
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
}

fn measure_memory(opts: &Options, paths: &Paths, report: &mut Report) -> Result<(), String> {
    println!(
        "== memory: {DJANGO_APP}, {MEMORY_WORKERS} workers x {} threads",
        opts.threads
    );
    for (server, preload) in [
        (FERRO, false),
        (FERRO, true),
        (GUNICORN, false),
        (GUNICORN, true),
    ] {
        let s = match start_with(
            paths,
            server,
            DJANGO_APP,
            opts.threads,
            MEMORY_WORKERS,
            preload,
        ) {
            Ok(s) => s,
            Err(e) => {
                println!("   {server} (preload {preload}): NOT MEASURED: {e}");
                report.notes.push(format!(
                    "memory: {server} (preload {preload}) not measured: {e}"
                ));
                continue;
            }
        };
        let sent = 400;
        let ok = warm(s.addr, sent);
        let read = |pid: u32| {
            procfs::rss_pss_bytes(pid)
                .map_err(|e| format!("{}: smaps_rollup of {pid}: {e}", s.name))
        };
        let supervisor = read(s.pid())?;
        let workers = s
            .worker_pids()
            .into_iter()
            .map(read)
            .collect::<Result<Vec<_>, _>>()?;
        let row = MemoryRow {
            name: s.name.clone(),
            supervisor,
            workers,
            requests: ok,
        };
        let (rss, pss) = row.total();
        println!(
            "   {:<22} {ok}/{sent} warm-up requests 200; supervisor RSS {:.1} PSS {:.1} MiB; workers RSS {:?} PSS {:?} MiB; all RSS {:.1} PSS {:.1} MiB",
            row.name,
            row.supervisor.0 as f64 / MIB,
            row.supervisor.1 as f64 / MIB,
            row.workers
                .iter()
                .map(|w| (w.0 as f64 / MIB * 10.0).round() / 10.0)
                .collect::<Vec<_>>(),
            row.workers
                .iter()
                .map(|w| (w.1 as f64 / MIB * 10.0).round() / 10.0)
                .collect::<Vec<_>>(),
            rss as f64 / MIB,
            pss as f64 / MIB,
        );
        report.memory.push(row);
    }
    Ok(())
}

impl MemoryRow {
    /// RSS and PSS summed over the supervisor and the workers.
    fn total(&self) -> (u64, u64) {
        self.workers
            .iter()
            .chain([&self.supervisor])
            .fold((0, 0), |(r, p), w| (r + w.0, p + w.1))
    }
}

/// Starts `server` (with `preload`) and measures the time from the spawn to
/// the first `200` for `GET /` of the Django app, polled every 5 ms by a
/// thread that starts probing before the spawn.
fn time_to_first_200(
    paths: &Paths,
    server: &str,
    threads: usize,
    preload: bool,
) -> Result<Duration, String> {
    let port = free_port().map_err(|e| e.to_string())?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let t0 = std::time::Instant::now();
    let prober = std::thread::spawn(move || {
        while t0.elapsed() < Duration::from_secs(60) {
            if let Ok(r) = http::get(addr, "/", Duration::from_secs(30))
                && r.status == 200
            {
                return Some(t0.elapsed());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    });
    let s = start_on(paths, server, DJANGO_APP, threads, WORKERS, preload, port);
    let first = prober.join().ok().flatten();
    drop(s?);
    first.ok_or_else(|| format!("{server}: no 200 within 60 s"))
}

fn measure_startup(opts: &Options, paths: &Paths, report: &mut Report) -> Result<(), String> {
    println!(
        "== startup: {DJANGO_APP}, {WORKERS} workers x {} threads, {STARTS} starts each after one unmeasured",
        opts.threads
    );
    let servers = [
        (FERRO, false),
        (FERRO, true),
        (GRANIAN, false),
        (GUNICORN, false),
        (GUNICORN, true),
    ];
    let name = |&(server, preload): &(&str, bool)| {
        if preload {
            format!("{server} --preload")
        } else {
            server.to_owned()
        }
    };
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); servers.len()];
    let mut failed = vec![false; servers.len()];
    // One start each first (bytecode written, files in the page cache).
    for (i, s) in servers.iter().enumerate() {
        if let Err(e) = time_to_first_200(paths, s.0, opts.threads, s.1) {
            println!("   {}: NOT MEASURED: {e}", name(s));
            report
                .notes
                .push(format!("startup: {} not measured: {e}", name(s)));
            failed[i] = true;
        }
    }
    for round in 0..STARTS {
        for k in 0..servers.len() {
            let i = (k + round) % servers.len();
            if failed[i] {
                continue;
            }
            let s = &servers[i];
            let t = time_to_first_200(paths, s.0, opts.threads, s.1)
                .map_err(|e| format!("startup of {}: {e}", name(s)))?;
            println!(
                "   start {} {:<22} first 200 after {:.0} ms",
                round + 1,
                name(s),
                t.as_secs_f64() * 1e3
            );
            times[i].push(t.as_secs_f64() * 1e3);
        }
    }
    for (i, s) in servers.iter().enumerate() {
        if !failed[i] {
            report.startup.push((name(s), times[i].clone()));
        }
    }
    Ok(())
}

#[derive(Default)]
struct Report {
    threads: usize,
    rounds: usize,
    duration: Duration,
    /// (scenario, app, connections, bytes per request), in order.
    scenarios: Vec<(&'static str, &'static str, &'static [usize], f64)>,
    /// (scenario, server, connections) -> rounds.
    cells: BTreeMap<(String, String, usize), Cell>,
    /// `--only memory`, in order.
    memory: Vec<MemoryRow>,
    /// `--only startup`: (server, milliseconds of each start).
    startup: Vec<(String, Vec<f64>)>,
    notes: Vec<String>,
}

/// The median of the per-round ratios of `ours` over `theirs` and their
/// spread: rounds run the servers back to back, so each round is a pair.
fn round_ratio(ours: &[f64], theirs: &[f64]) -> Option<(f64, f64, f64)> {
    let ratios: Vec<f64> = ours
        .iter()
        .zip(theirs)
        .filter(|(_, t)| **t > 0.0)
        .map(|(o, t)| o / t)
        .collect();
    if ratios.is_empty() {
        return None;
    }
    let (lo, hi) = stats::min_max(&ratios);
    Some((stats::median(&ratios), lo, hi))
}

fn command_output(cmd: &Path, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s.lines().next().unwrap_or("").trim().to_owned()
        })
        .unwrap_or_else(|e| format!("? ({e})"))
}

/// The goals of issue 25, per scenario and peer: (scenario, peer, throughput
/// ratio, per-CPU ratio); 0 means no goal.
const GOALS: &[(&str, &str, f64, f64)] = &[
    ("hello", GRANIAN, 1.5, 2.0),
    ("hello", GUNICORN, 7.0, 7.0),
    ("django", GRANIAN, 1.1, 0.0),
    ("django", GUNICORN, 1.5, 0.0),
];

impl Report {
    fn render(&self, paths: &Paths) -> String {
        let mut o = String::new();
        let date = Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M UTC"])
            .output()
            .map(|d| String::from_utf8_lossy(&d.stdout).trim().to_owned())
            .unwrap_or_default();
        let py = paths.venv.join("bin/python");
        let version = |module: &str| {
            command_output(
                &py,
                &[
                    "-c",
                    &format!("import {module}; print({module}.__version__)"),
                ],
            )
        };
        let _ = writeln!(o, "# WSGI benchmark results\n");
        let root = paths.root.to_str().unwrap_or(".");
        let git = |args: &[&str]| {
            Command::new("git")
                .arg("-C")
                .arg(root)
                .args(args)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_default()
        };
        let dirty = !git(&["status", "--porcelain", "--untracked-files=no"]).is_empty();
        let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let _ = writeln!(
            o,
            "`just bench-wsgi` (benches/src/bin/wsgibench.rs), {date}, commit {}{}; load average at the end {} (the machine is shared). {} CPUs; {}; {}, granian {}, gunicorn {} (gthread, the seed config), Django {}; {}.\n",
            git(&["rev-parse", "--short", "HEAD"]),
            if dirty {
                " with uncommitted changes"
            } else {
                " (clean working tree)"
            },
            load.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            command_output(Path::new("uname"), &["-sr"]),
            command_output(&paths.ferrocorn, &["--version"]),
            version("granian"),
            version("gunicorn"),
            version("django"),
            command_output(&py, &["--version"]),
        );
        if !self.scenarios.is_empty() {
            let _ = writeln!(
                o,
                "Every server: the same app file, {WORKERS} workers x {} app threads, keep-alive; wrk 2 threads; {} interleaved rounds of {} s (the order rotates each round). Medians of the rounds; a ratio is the median of the per-round ratios, with their spread. CPU is the server's processes' user + system time (wrk shares the 2 CPUs, so requests per server CPU-second is the fairer figure).\n",
                self.threads,
                self.rounds,
                self.duration.as_secs()
            );
        }
        for &(scenario, app, conns_list, bytes) in &self.scenarios {
            let _ = writeln!(o, "## {scenario} (`{app}`)\n");
            let mb = bytes > 0.0;
            let _ = writeln!(
                o,
                "| c | server | req/s |{} req/CPU-s | user µs/req | sys µs/req | p50 ms | p99 ms | errors / requests |",
                if mb { " MB/s |" } else { "" }
            );
            let _ = writeln!(
                o,
                "|---|---|---|{}---|---|---|---|---|---|",
                if mb { "---|" } else { "" }
            );
            for &conns in conns_list {
                for server in [FERRO, GRANIAN, GUNICORN] {
                    let Some(c) = self
                        .cells
                        .get(&(scenario.to_owned(), server.to_owned(), conns))
                    else {
                        continue;
                    };
                    let rps = stats::median(&c.rps);
                    let _ = writeln!(
                        o,
                        "| {conns} | {server} | {rps:.0} |{} {:.0} | {:.1} | {:.1} | {:.2} | {:.2} | {} / {} |",
                        if mb {
                            format!(" {:.0} |", rps * bytes / 1e6)
                        } else {
                            String::new()
                        },
                        stats::median(&c.per_cpu),
                        stats::median(&c.user_us),
                        stats::median(&c.sys_us),
                        stats::median(&c.p50_us) / 1e3,
                        stats::median(&c.p99_us) / 1e3,
                        c.errors,
                        c.requests,
                    );
                }
            }
            let _ = writeln!(o);
            for &conns in conns_list {
                let Some(ours) = self
                    .cells
                    .get(&(scenario.to_owned(), FERRO.to_owned(), conns))
                else {
                    continue;
                };
                for peer in [GRANIAN, GUNICORN] {
                    let Some(theirs) =
                        self.cells
                            .get(&(scenario.to_owned(), peer.to_owned(), conns))
                    else {
                        continue;
                    };
                    let goal = GOALS
                        .iter()
                        .find(|g| g.0 == scenario && g.1 == peer)
                        .copied();
                    let fmt = |r: Option<(f64, f64, f64)>, want: f64| match r {
                        Some((m, lo, hi)) => format!(
                            "{m:.2}x (rounds {lo:.2}-{hi:.2}){}",
                            if want > 0.0 {
                                format!(
                                    ", goal >= {want}x: {}",
                                    if m >= want { "met" } else { "MISSED" }
                                )
                            } else {
                                String::new()
                            }
                        ),
                        None => "-".to_owned(),
                    };
                    let p99 = (stats::median(&ours.p99_us), stats::median(&theirs.p99_us));
                    let _ = writeln!(
                        o,
                        "- c={conns}, ferrocorn / {peer}: throughput {}; per server CPU-second {}; p99 {:.2}x{}",
                        fmt(
                            round_ratio(&ours.rps, &theirs.rps),
                            goal.map_or(0.0, |g| g.2)
                        ),
                        fmt(
                            round_ratio(&ours.per_cpu, &theirs.per_cpu),
                            goal.map_or(0.0, |g| g.3)
                        ),
                        p99.0 / p99.1.max(1.0),
                        if peer == GRANIAN {
                            format!(
                                ", goal <= 1x: {}",
                                if p99.0 <= p99.1 { "met" } else { "MISSED" }
                            )
                        } else {
                            String::new()
                        }
                    );
                }
                if scenario == "sleep" {
                    let ceiling = (WORKERS * self.threads) as f64 / 0.05;
                    for server in [FERRO, GRANIAN, GUNICORN] {
                        if let Some(c) =
                            self.cells
                                .get(&(scenario.to_owned(), server.to_owned(), conns))
                        {
                            let _ = writeln!(
                                o,
                                "- {server}: {:.0} req/s, {:.0}% of the ceiling of {ceiling:.0} req/s ({WORKERS} workers x {} threads / 50 ms)",
                                stats::median(&c.rps),
                                100.0 * stats::median(&c.rps) / ceiling,
                                self.threads
                            );
                        }
                    }
                }
            }
            let _ = writeln!(o);
        }
        self.render_memory(&mut o);
        self.render_startup(&mut o);
        if !self.notes.is_empty() {
            let _ = writeln!(o, "## Notes\n");
            for n in &self.notes {
                let _ = writeln!(o, "- {n}");
            }
        }
        o
    }
}

impl Report {
    fn render_memory(&self, o: &mut String) {
        if self.memory.is_empty() {
            return;
        }
        let _ = writeln!(o, "## memory (`{DJANGO_APP}`)\n");
        let _ = writeln!(
            o,
            "{MEMORY_WORKERS} workers x {} threads each, after 400 requests to `/` on fresh connections from 8 clients (every worker has run the view). From `/proc/PID/smaps_rollup`: RSS counts a page shared copy-on-write after the fork once in every process; PSS divides it among them, so the PSS column \"all\" is the memory the server takes. gunicorn runs with the seed config (prometheus_client, structlog), ferrocorn with its metrics on.\n",
            self.threads
        );
        let _ = writeln!(
            o,
            "| server | supervisor RSS / PSS MiB | worker RSS MiB (median) | worker PSS MiB (median) | all RSS MiB | all PSS MiB | warm-up 200s |"
        );
        let _ = writeln!(o, "|---|---|---|---|---|---|---|");
        let mib = |b: u64| b as f64 / MIB;
        for r in &self.memory {
            let rss: Vec<f64> = r.workers.iter().map(|w| mib(w.0)).collect();
            let pss: Vec<f64> = r.workers.iter().map(|w| mib(w.1)).collect();
            let (all_rss, all_pss) = r.total();
            let _ = writeln!(
                o,
                "| {} | {:.1} / {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} / 400 |",
                r.name,
                mib(r.supervisor.0),
                mib(r.supervisor.1),
                stats::median(&rss),
                stats::median(&pss),
                mib(all_rss),
                mib(all_pss),
                r.requests
            );
        }
        let pss_of = |name: &str| {
            self.memory
                .iter()
                .find(|r| r.name == name)
                .map(|r| r.total().1 as f64)
        };
        let _ = writeln!(o);
        for (ours, theirs) in [
            (FERRO.to_owned(), GUNICORN.to_owned()),
            (
                format!("{FERRO} --preload"),
                format!("{GUNICORN} --preload"),
            ),
        ] {
            if let (Some(a), Some(b)) = (pss_of(&ours), pss_of(&theirs)) {
                let _ = writeln!(
                    o,
                    "- {ours} / {theirs}: all PSS {:.2}x ({:+.1} MiB)",
                    a / b,
                    (a - b) / MIB
                );
            }
        }
        let _ = writeln!(o);
    }

    fn render_startup(&self, o: &mut String) {
        if self.startup.is_empty() {
            return;
        }
        let _ = writeln!(o, "## startup (`{DJANGO_APP}`)\n");
        let _ = writeln!(
            o,
            "Time from spawning the server to the first `200` for `GET /` (polled every 5 ms from before the spawn), {WORKERS} workers x {} threads, {STARTS} starts each after one unmeasured start, the servers interleaved.\n",
            self.threads
        );
        let _ = writeln!(o, "| server | median ms | min ms | max ms |");
        let _ = writeln!(o, "|---|---|---|---|");
        for (name, ms) in &self.startup {
            let (lo, hi) = stats::min_max(ms);
            let _ = writeln!(
                o,
                "| {name} | {:.0} | {lo:.0} | {hi:.0} |",
                stats::median(ms)
            );
        }
        let _ = writeln!(o);
    }
}
