//! `just bench`: ferrocorn against nginx, hyper and gunicorn on loopback,
//! measured in the same run, printed as medians and ratios and written to
//! `benches/RESULTS.md`.
//!
//! Installs nothing: it checks for wrk, nginx and a gunicorn venv and says how
//! to get them. Flags: `--quick` (1 round of 2 s, for trying the harness),
//! `--rounds N`, `--duration SECS`, `--only throughput|idle|respawn|scrape`
//! (repeatable), `--no-write` (do not touch RESULTS.md), `--baseline BIN`
//! (another ferrocorn build, e.g. the commit before a change, measured in
//! the same interleaved rounds as `ferrocorn baseline`, with its ratios).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufRead, BufReader, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferrocorn_benches::server::{Server, Workers, free_port};
use ferrocorn_benches::{http, procfs, stats, sys, wrk};

/// Connections held open for the idle keep-alive measurement.
const IDLE_CONNECTIONS: usize = 10_000;
/// Scrapes of each exporter, in alternation, for the scrape measurement.
const SCRAPE_PAIRS: usize = 15;
/// Worker files and series per file for the scrape measurement.
const SCRAPE_FILES: usize = 64;

fn main() {
    if let Err(e) = run() {
        eprintln!("loadbench: {e}");
        std::process::exit(1);
    }
}

struct Options {
    rounds: usize,
    duration: Duration,
    connections: Vec<usize>,
    only: Vec<String>,
    write: bool,
    /// Another ferrocorn binary measured beside this one.
    baseline: Option<PathBuf>,
}

impl Options {
    fn parse() -> Result<Options, String> {
        let mut o = Options {
            rounds: 3,
            duration: Duration::from_secs(5),
            connections: vec![32, 256],
            only: Vec::new(),
            write: true,
            baseline: None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
            match a.as_str() {
                "--quick" => {
                    o.rounds = 1;
                    o.duration = Duration::from_secs(2);
                }
                "--rounds" => {
                    o.rounds = value("--rounds")?
                        .parse()
                        .map_err(|e| format!("--rounds: {e}"))?
                }
                "--duration" => {
                    o.duration = Duration::from_secs(
                        value("--duration")?
                            .parse()
                            .map_err(|e| format!("--duration: {e}"))?,
                    )
                }
                "--only" => o.only.push(value("--only")?),
                "--no-write" => o.write = false,
                "--baseline" => o.baseline = Some(PathBuf::from(value("--baseline")?)),
                "-h" | "--help" => {
                    println!(
                        "loadbench [--quick] [--rounds N] [--duration SECS] [--only throughput|idle|respawn|scrape|acceptwait]... [--no-write] [--baseline BIN]"
                    );
                    std::process::exit(0);
                }
                other => return Err(format!("unknown argument {other:?} (try --help)")),
            }
        }
        Ok(o)
    }

    fn wants(&self, phase: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| p == phase)
    }
}

/// Where things are.
struct Paths {
    root: PathBuf,
    ferrocorn: PathBuf,
    hyper: PathBuf,
    venv: PathBuf,
    seed_config: PathBuf,
    tmp: tempfile::TempDir,
}

fn run() -> Result<(), String> {
    let opts = Options::parse()?;
    let paths = locate(&opts)?;
    let nofile = sys::raise_nofile(IDLE_CONNECTIONS as u64 * 2 + 1000)
        .map_err(|e| format!("setrlimit: {e}"))?;
    let mut report = Report::default();
    report.notes.push(format!(
        "RLIMIT_NOFILE raised to {nofile} for the bench and the servers it starts."
    ));

    // ferrocorn's own `/` answer: the bytes every peer serves.
    let (body, content_type) = {
        let probe = start_ferrocorn(&paths, "probe", &[], &[])?;
        let resp = http::get(probe.addr, "/", Duration::from_secs(2))
            .map_err(|e| format!("GET / on ferrocorn: {e}"))?;
        let content_type = resp
            .header("content-type")
            .unwrap_or("text/plain")
            .to_owned();
        (
            String::from_utf8(resp.body).map_err(|_| "ferrocorn's / is not UTF-8".to_owned())?,
            content_type,
        )
    };
    report.notes.push(format!(
        "Every server answers `GET /` with ferrocorn's {} bytes ({content_type}).",
        body.len()
    ));

    if opts.wants("throughput") {
        throughput(&opts, &paths, &body, &content_type, &mut report)?;
    }
    if opts.wants("idle") {
        idle(&paths, &body, &content_type, &mut report)?;
    }
    if opts.wants("respawn") {
        respawn(&paths, &mut report)?;
    }
    if opts.wants("scrape") {
        scrape(&paths, &mut report)?;
    }
    if opts.wants("acceptwait") {
        accept_wait(&opts, &paths, &mut report)?;
    }

    let text = report.render(&paths, &opts);
    println!("\n{text}");
    if opts.write {
        let out = paths.root.join("benches/RESULTS.md");
        fs::write(&out, &text).map_err(|e| format!("{}: {e}", out.display()))?;
        println!("written to {}", out.display());
    }
    Ok(())
}

/// Finds the binaries and tools the chosen phases need, or says how to get
/// them (`--only acceptwait` needs only wrk and ferrocorn).
fn locate(opts: &Options) -> Result<Paths, String> {
    let peers = opts.wants("throughput") || opts.wants("idle");
    let python = peers || opts.wants("scrape");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("no workspace root")?
        .to_path_buf();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let bin_dir = exe.parent().ok_or("no exe dir")?.to_path_buf();
    let ferrocorn = std::env::var_os("FERROCORN_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| bin_dir.join("ferrocorn"));
    let hyper = bin_dir.join("hyper-hello");
    let venv = std::env::var_os("FERROCORN_BENCH_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv-bench"));
    let seed_config = std::env::var_os("FERROCORN_SEED_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../shared/seed/gunicorn.config.py"));

    let mut missing = Vec::new();
    if !on_path("wrk") {
        missing.push("wrk: apt-get install wrk".to_owned());
    }
    if peers && !Path::new(NGINX).exists() {
        missing.push("nginx: apt-get install nginx-light".to_owned());
    }
    let venv_ok = Command::new(venv.join("bin/python"))
        .args(["-c", "import gunicorn, prometheus_client, structlog; assert gunicorn.__version__ == '23.0.0'"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if python && !venv_ok {
        missing.push(format!(
            "gunicorn 23 venv at {}: python3 -m venv .venv-bench && .venv-bench/bin/pip install gunicorn==23.0.0 prometheus_client structlog (or set FERROCORN_BENCH_VENV)",
            venv.display()
        ));
    }
    if peers && !seed_config.exists() {
        missing.push(format!(
            "the seed config {} (or set FERROCORN_SEED_CONFIG)",
            seed_config.display()
        ));
    }
    for (what, p) in [("ferrocorn", &ferrocorn), ("hyper-hello", &hyper)] {
        if !p.exists() && (peers || what == "ferrocorn") {
            missing.push(format!(
                "{what} at {}: cargo build --release -p ferrocorn -p ferrocorn-benches",
                p.display()
            ));
        }
    }
    if let Some(b) = opts.baseline.as_ref().filter(|b| !b.is_file()) {
        missing.push(format!("the --baseline binary {}", b.display()));
    }
    if !missing.is_empty() {
        return Err(format!("missing:\n  {}", missing.join("\n  ")));
    }
    let tmp = tempfile::Builder::new()
        .prefix("loadbench")
        .tempdir()
        .map_err(|e| e.to_string())?;
    Ok(Paths {
        root,
        ferrocorn,
        hyper,
        venv,
        seed_config,
        tmp,
    })
}

const NGINX: &str = "/usr/sbin/nginx";

fn on_path(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
}

/// Starts ferrocorn with `args` (2 workers unless `-w` is given; an exporter
/// on a free port unless `--no-metrics`).
fn start_ferrocorn(
    paths: &Paths,
    name: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<Server, String> {
    start_ferrocorn_bin(&paths.ferrocorn, name, args, env)
}

/// [`start_ferrocorn`] with another binary.
fn start_ferrocorn_bin(
    bin: &Path,
    name: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<Server, String> {
    let port = free_port().map_err(|e| e.to_string())?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut cmd = Command::new(bin);
    cmd.arg("-b").arg(addr.to_string());
    if !args.contains(&"-w") {
        cmd.args(["-w", "2"]);
    }
    let mut metrics = None;
    if !args.contains(&"--no-metrics") {
        let mport = free_port().map_err(|e| e.to_string())?;
        metrics = Some(SocketAddr::from(([127, 0, 0, 1], mport)));
        cmd.args([
            "--metrics-bind",
            "127.0.0.1",
            "--metrics-port",
            &mport.to_string(),
        ]);
    }
    // Server::start sends stdout (the access log) and stderr to a file.
    cmd.args(args).envs(env.iter().copied());
    let workers = args
        .windows(2)
        .find(|w| w[0] == "-w")
        .map_or(2, |w| w[1].parse().unwrap_or(2));
    let mut s = Server::start(name, cmd, addr, Workers::Children, workers)?;
    s.metrics = metrics;
    Ok(s)
}

fn start_nginx(paths: &Paths, body: &str, content_type: &str) -> Result<Server, String> {
    if body.contains('$') {
        return Err("ferrocorn's body contains '$', which nginx's return would expand".into());
    }
    let port = free_port().map_err(|e| e.to_string())?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let prefix = paths.tmp.path().join("nginx");
    fs::create_dir_all(&prefix).map_err(|e| e.to_string())?;
    let quoted = body
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
        .replace('\t', "\\t");
    let p = prefix.display();
    let conf = format!(
        r#"# loadbench: nginx answering ferrocorn's bytes.
worker_processes 2;
worker_rlimit_nofile {nofile};
daemon off;
master_process on;
pid {p}/nginx.pid;
error_log {p}/error.log error;
events {{ worker_connections {nofile}; }}
http {{
    access_log off;
    keepalive_timeout 120s;
    keepalive_requests 100000000;
    client_body_temp_path {p}/body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    server {{
        listen {addr};
        location / {{
            default_type "{content_type}";
            return 200 "{quoted}";
        }}
    }}
}}
"#,
        nofile = IDLE_CONNECTIONS * 2,
    );
    let conf_path = prefix.join("nginx.conf");
    fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(NGINX);
    cmd.arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf_path)
        .arg("-e")
        .arg(prefix.join("error.log"));
    Server::start("nginx", cmd, addr, Workers::Children, 2)
}

fn start_hyper(paths: &Paths, body: &str, content_type: &str) -> Result<Server, String> {
    let port = free_port().map_err(|e| e.to_string())?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut cmd = Command::new(&paths.hyper);
    cmd.arg(addr.to_string())
        .arg("2")
        .env("BENCH_BODY", body)
        .env("BENCH_CONTENT_TYPE", content_type)
        .stdout(Stdio::null());
    Server::start("hyper", cmd, addr, Workers::Itself, 1)
}

const WSGI_APP: &str = r#"# loadbench: a WSGI hello app answering ferrocorn's bytes.
import os

BODY = os.environ["BENCH_BODY"].encode()
HEADERS = [
    ("Content-Type", os.environ.get("BENCH_CONTENT_TYPE", "text/plain")),
    ("Content-Length", str(len(BODY))),
]


def app(environ, start_response):
    start_response("200 OK", HEADERS)
    return [BODY]
"#;

fn start_gunicorn(paths: &Paths, body: &str, content_type: &str) -> Result<Server, String> {
    let port = free_port().map_err(|e| e.to_string())?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let dir = paths.tmp.path().join("gunicorn");
    let prom = dir.join("prom");
    fs::create_dir_all(&prom).map_err(|e| e.to_string())?;
    fs::write(dir.join("bench_app.py"), WSGI_APP).map_err(|e| e.to_string())?;
    let metrics_port = free_port().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(paths.venv.join("bin/gunicorn"));
    cmd.arg("-c")
        .arg(&paths.seed_config)
        .args(["-k", "gthread", "-w", "2", "--threads", "4", "-b"])
        .arg(addr.to_string())
        .arg("--chdir")
        .arg(&dir)
        .arg("bench_app:app")
        .env("BENCH_BODY", body)
        .env("BENCH_CONTENT_TYPE", content_type)
        .env("PROMETHEUS_METRICS_EXPORT_PORT", metrics_port.to_string())
        .env("PROMETHEUS_MULTIPROC_DIR", &prom)
        .stdout(Stdio::null());
    let mut s = Server::start("gunicorn", cmd, addr, Workers::Children, 2)?;
    s.metrics = Some(([127, 0, 0, 1], metrics_port).into());
    Ok(s)
}

/// One cell of the throughput table: a server at a connection count.
#[derive(Default)]
struct Cell {
    rps: Vec<f64>,
    /// Requests per CPU-second the server's processes used.
    per_cpu: Vec<f64>,
    /// The server's user and system (kernel) CPU per request, microseconds.
    user_us: Vec<f64>,
    sys_us: Vec<f64>,
    /// wrk's own CPU (user + system) per request, microseconds.
    client_us: Vec<f64>,
    p50_us: Vec<f64>,
    p99_us: Vec<f64>,
    errors: u64,
}

const FERRO: &str = "ferrocorn";
const FERRO_OBS: &str = "ferrocorn+metrics+jsonlog";
/// `--baseline BIN`: another build, with the same flags as [`FERRO`].
const FERRO_BASE: &str = "ferrocorn baseline";

fn throughput(
    opts: &Options,
    paths: &Paths,
    body: &str,
    content_type: &str,
    report: &mut Report,
) -> Result<(), String> {
    let script = paths.tmp.path().join("done.lua");
    fs::write(&script, wrk::DONE_SCRIPT).map_err(|e| e.to_string())?;
    let obs_dir = paths.tmp.path().join("ferrocorn-metrics");
    fs::create_dir_all(&obs_dir).map_err(|e| e.to_string())?;

    println!("== starting servers");
    let mut servers: Vec<Server> = Vec::new();
    type Start<'a> = Box<dyn Fn() -> Result<Server, String> + 'a>;
    let mut starts: Vec<(&str, Start<'_>)> = vec![
        ("nginx", Box::new(|| start_nginx(paths, body, content_type))),
        ("hyper", Box::new(|| start_hyper(paths, body, content_type))),
        (
            "gunicorn",
            Box::new(|| start_gunicorn(paths, body, content_type)),
        ),
        (
            FERRO,
            Box::new(|| start_ferrocorn(paths, FERRO, &["--no-metrics"], &[])),
        ),
        (
            FERRO_OBS,
            // The access log to stdout, which the bench sends to a file:
            // `--access-logfile FILE` writes gunicorn's plain lines even with
            // LOGGING_FORMATTER_NAME=json; stdout gets the JSON lines.
            Box::new(|| {
                let dir = obs_dir.to_str().expect("utf-8 temp path");
                start_ferrocorn(
                    paths,
                    FERRO_OBS,
                    &["--access-logfile", "-", "--metrics-dir", dir],
                    &[("LOGGING_FORMATTER_NAME", "json")],
                )
            }),
        ),
    ];
    if let Some(bin) = &opts.baseline {
        starts.push((
            FERRO_BASE,
            Box::new(move || start_ferrocorn_bin(bin, FERRO_BASE, &["--no-metrics"], &[])),
        ));
    }
    for (name, start) in &starts {
        match start() {
            Ok(s) => {
                let resp = http::get(s.addr, "/", Duration::from_secs(2))
                    .map_err(|e| format!("{name}: {e}"))?;
                if resp.body != body.as_bytes() {
                    return Err(format!(
                        "{name} answers {:?}, not ferrocorn's bytes",
                        String::from_utf8_lossy(&resp.body)
                    ));
                }
                println!(
                    "   {name:<26} {} (pid {}, workers {:?})",
                    s.addr,
                    s.pid(),
                    s.worker_pids()
                );
                servers.push(s);
            }
            Err(e) => {
                println!("   {name}: NOT MEASURED: {e}");
                report.notes.push(format!("{name} not measured: {e}"));
            }
        }
    }

    println!("== warm-up (1 s each)");
    for s in &servers {
        let url = format!("http://{}/", s.addr);
        wrk::run(&url, 2, 32, Duration::from_secs(1), &script)
            .map_err(|e| format!("{}: {e}", s.name))?;
    }

    let mut cells: BTreeMap<(String, usize), Cell> = BTreeMap::new();
    for round in 0..opts.rounds {
        for &conns in &opts.connections {
            // Rotate the order each round so no server always runs first.
            let n = servers.len();
            for i in 0..n {
                let s = &servers[(i + round) % n];
                let url = format!("http://{}/", s.addr);
                let mut pids = s.worker_pids();
                pids.push(s.pid());
                pids.dedup();
                let (user0, sys0) = procfs::cpu_user_system_sum(&pids);
                let r = wrk::run(&url, 2, conns, opts.duration, &script)
                    .map_err(|e| format!("{}: {e}", s.name))?;
                let (user1, sys1) = procfs::cpu_user_system_sum(&pids);
                let (user, sys) = (user1 - user0, sys1 - sys0);
                let cpu = user + sys;
                println!(
                    "   round {} c={conns:<4} {:<26} {:>9.0} req/s {:>7.0} req/CPU-s  wrk {:>5.2} µs/req  p50 {:>7.3} ms  p99 {:>7.3} ms  errors {}",
                    round + 1,
                    s.name,
                    r.requests_per_sec(),
                    r.requests as f64 / cpu.max(0.01),
                    r.client_cpu_s * 1e6 / (r.requests as f64).max(1.0),
                    r.p50_us / 1e3,
                    r.p99_us / 1e3,
                    r.errors
                );
                let cell = cells.entry((s.name.clone(), conns)).or_default();
                cell.rps.push(r.requests_per_sec());
                cell.per_cpu.push(r.requests as f64 / cpu.max(0.01));
                let per_req = 1e6 / (r.requests as f64).max(1.0);
                cell.user_us.push(user * per_req);
                cell.sys_us.push(sys * per_req);
                cell.client_us.push(r.client_cpu_s * per_req);
                cell.p50_us.push(r.p50_us);
                cell.p99_us.push(r.p99_us);
                cell.errors += r.errors;
            }
        }
    }
    if let Some(obs) = servers.iter().find(|s| s.name == FERRO_OBS) {
        let text = fs::read_to_string(&obs.log).unwrap_or_default();
        let access: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("\"gunicorn.access\""))
            .collect();
        report.notes.push(format!(
            "{FERRO_OBS}: metrics on (exporter on its own port, scraped by nobody), JSON logs, JSON access log to stdout redirected to a file ({} lines written).",
            access.len()
        ));
        if let Some(first) = access.first() {
            report.notes.push(format!("An access log line: `{first}`"));
        }
    }
    report.servers = servers.iter().map(|s| s.name.clone()).collect();
    report.cells = cells
        .into_iter()
        .map(|(k, c)| {
            (
                k,
                Summary {
                    rps: stats::median(&c.rps),
                    per_cpu: stats::median(&c.per_cpu),
                    user_us: stats::median(&c.user_us),
                    sys_us: stats::median(&c.sys_us),
                    client_us: stats::median(&c.client_us),
                    rps_rounds: c.rps.clone(),
                    per_cpu_rounds: c.per_cpu.clone(),
                    p50_ms: stats::median(&c.p50_us) / 1e3,
                    p99_ms: stats::median(&c.p99_us) / 1e3,
                    errors: c.errors,
                },
            )
        })
        .collect();
    report.connections = opts.connections.clone();
    report.rounds = opts.rounds;
    report.duration = opts.duration;
    Ok(())
}

/// The cost of `gunicorn_accept_queue_wait_seconds` (one `getsockopt` per
/// accepted connection, issue 22): ferrocorn with metrics, with and without
/// `--no-accept-queue-wait`, each request on a new connection (wrk with
/// `Connection: close`, the case where the cost shows most; keep-alive
/// traffic accepts rarely), interleaved rounds; the server's user and
/// kernel CPU per request.
fn accept_wait(opts: &Options, paths: &Paths, report: &mut Report) -> Result<(), String> {
    let script = paths.tmp.path().join("done.lua");
    fs::write(&script, wrk::DONE_SCRIPT).map_err(|e| e.to_string())?;
    let on_dir = paths.tmp.path().join("acceptwait-on");
    let off_dir = paths.tmp.path().join("acceptwait-off");
    for d in [&on_dir, &off_dir] {
        fs::create_dir_all(d).map_err(|e| e.to_string())?;
    }
    println!("== accept queue wait: on against off, a new connection per request");
    let on = start_ferrocorn(
        paths,
        "ferrocorn+metrics (wait on)",
        &["--metrics-dir", on_dir.to_str().expect("utf-8 temp path")],
        &[],
    )?;
    let off = start_ferrocorn(
        paths,
        "ferrocorn+metrics (wait off)",
        &[
            "--metrics-dir",
            off_dir.to_str().expect("utf-8 temp path"),
            "--no-accept-queue-wait",
        ],
        &[],
    )?;
    let servers = [on, off];
    let mut user: [Vec<f64>; 2] = Default::default();
    let mut sys: [Vec<f64>; 2] = Default::default();
    let mut rps: [Vec<f64>; 2] = Default::default();
    for round in 0..opts.rounds {
        for k in 0..2 {
            let i = (k + round) % 2;
            let s = &servers[i];
            let url = format!("http://{}/", s.addr);
            let mut pids = s.worker_pids();
            pids.push(s.pid());
            pids.dedup();
            let (user0, sys0) = procfs::cpu_user_system_sum(&pids);
            let r = wrk::run_with(
                &url,
                2,
                32,
                opts.duration,
                &script,
                &["-H", "Connection: close"],
            )
            .map_err(|e| format!("{}: {e}", s.name))?;
            let (user1, sys1) = procfs::cpu_user_system_sum(&pids);
            let per_req = 1e6 / (r.requests as f64).max(1.0);
            user[i].push((user1 - user0) * per_req);
            sys[i].push((sys1 - sys0) * per_req);
            rps[i].push(r.requests_per_sec());
            println!(
                "   round {} {:<30} {:>8.0} req/s  user {:>6.2} µs/req  kernel {:>6.2} µs/req  errors {}",
                round + 1,
                s.name,
                r.requests_per_sec(),
                (user1 - user0) * per_req,
                (sys1 - sys0) * per_req,
                r.errors
            );
        }
    }
    let (u_on, u_off) = (stats::median(&user[0]), stats::median(&user[1]));
    let (s_on, s_off) = (stats::median(&sys[0]), stats::median(&sys[1]));
    let line = format!(
        "Accept queue wait histogram, a new connection per request (wrk -c32 `Connection: close`, {} rounds of {} s, medians): on {:.0} req/s, user {u_on:.2} µs + kernel {s_on:.2} µs per request; off {:.0} req/s, user {u_off:.2} µs + kernel {s_off:.2} µs: user CPU on/off {:.3}x, user+kernel {:.3}x.",
        opts.rounds,
        opts.duration.as_secs(),
        stats::median(&rps[0]),
        stats::median(&rps[1]),
        u_on / u_off.max(1e-9),
        (u_on + s_on) / (u_off + s_off).max(1e-9),
    );
    println!("   {line}");
    report.notes.push(line);
    Ok(())
}

/// Opens `n` keep-alive connections to `addr`, one request each, and keeps them.
fn open_idle(addr: SocketAddr, n: usize) -> Result<Vec<TcpStream>, String> {
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = http::Conn::connect(addr, Duration::from_secs(5))
            .map_err(|e| format!("connection {i}: {e}"))?;
        let r = c
            .get("/")
            .map_err(|e| format!("request on connection {i}: {e}"))?;
        if r.status != 200 || r.closes() {
            return Err(format!(
                "connection {i}: status {} close={}",
                r.status,
                r.closes()
            ));
        }
        conns.push(c.stream().try_clone().map_err(|e| e.to_string())?);
    }
    Ok(conns)
}

fn idle(paths: &Paths, body: &str, content_type: &str, report: &mut Report) -> Result<(), String> {
    println!("== bytes per idle keep-alive connection ({IDLE_CONNECTIONS} connections)");
    let limit = IDLE_CONNECTIONS.to_string();
    let servers: Vec<(&str, Result<Server, String>)> = vec![
        (
            FERRO,
            start_ferrocorn(paths, FERRO, &["--worker-connections", &limit], &[]),
        ),
        ("nginx", start_nginx(paths, body, content_type)),
        ("hyper", start_hyper(paths, body, content_type)),
    ];
    for (name, server) in servers {
        let server = match server {
            Ok(s) => s,
            Err(e) => {
                report.notes.push(format!("idle {name}: not measured: {e}"));
                continue;
            }
        };
        // Warm: one request on one connection, as every idle one will have had.
        let _ = http::get(server.addr, "/", Duration::from_secs(2));
        std::thread::sleep(Duration::from_millis(300));
        let pids = server.worker_pids();
        let before = procfs::rss_sum(&pids);
        let t = Instant::now();
        let conns = match open_idle(server.addr, IDLE_CONNECTIONS) {
            Ok(c) => c,
            Err(e) => {
                println!("   {name}: {e}");
                report.notes.push(format!("idle {name}: {e}"));
                continue;
            }
        };
        let opened = t.elapsed();
        std::thread::sleep(Duration::from_secs(1));
        let after = procfs::rss_sum(&pids);
        // Still open? A read would block if the server kept them.
        let alive = conns
            .iter()
            .filter(|c| {
                c.set_nonblocking(true).is_ok()
                    && matches!(c.peek(&mut [0u8; 1]), Err(ref e) if e.kind() == io::ErrorKind::WouldBlock)
            })
            .count();
        let per = (after as f64 - before as f64) / IDLE_CONNECTIONS as f64;
        println!(
            "   {name:<10} RSS {:.1} MiB -> {:.1} MiB: {per:.0} bytes/connection ({alive} still open; opened in {:.2} s)",
            before as f64 / 1048576.0,
            after as f64 / 1048576.0,
            opened.as_secs_f64()
        );
        report.idle.push(IdleResult {
            name: name.to_owned(),
            before,
            after,
            per_conn: per,
            alive,
        });
        drop(conns);
        drop(server);
    }
    Ok(())
}

fn respawn(paths: &Paths, report: &mut Report) -> Result<(), String> {
    println!(
        "== SIGKILL of a worker to its replacement serving (-w 1: every answer after the kill is the replacement's)"
    );
    let server = start_ferrocorn(paths, "ferrocorn -w 1", &["-w", "1"], &[])?;
    let mut times = Vec::new();
    for i in 0..7 {
        // Exactly one worker, serving.
        let deadline = Instant::now() + Duration::from_secs(10);
        let worker = loop {
            let w = server.worker_pids();
            if w.len() == 1
                && http::get(server.addr, "/", Duration::from_secs(2))
                    .is_ok_and(|r| r.status == 200)
            {
                break w[0];
            }
            if Instant::now() > deadline {
                return Err(format!("respawn: no single serving worker ({w:?})"));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // Let the worker live past its first heartbeats: the supervisor counts
        // a worker that dies before it saw one as a failed boot, and stops
        // the server after 5 in a row.
        std::thread::sleep(Duration::from_millis(1500));
        let t0 = Instant::now();
        sys::kill(worker, libc::SIGKILL).map_err(|e| format!("kill {worker}: {e}"))?;
        // The connection must not reach the dying worker.
        while procfs::stat(worker).is_some_and(|(_, s)| s != 'Z' && s != 'X') {
            std::hint::spin_loop();
        }
        let served = http::get(server.addr, "/", Duration::from_secs(10));
        let dt = t0.elapsed();
        match served {
            Ok(r) if r.status == 200 => {
                let new = server.worker_pids();
                println!(
                    "   kill {} of {worker}: served by the replacement {new:?} after {:.2} ms",
                    i + 1,
                    dt.as_secs_f64() * 1e3
                );
                times.push(dt.as_secs_f64() * 1e3);
            }
            other => return Err(format!("respawn: after killing {worker}: {other:?}")),
        }
    }
    report.respawn_ms = times;
    Ok(())
}

/// Writes 64 workers' files of ~1,000 series each with Python's
/// prometheus_client in multiprocess mode (each child a real process with its
/// own pid, so the file names are the ones a real deployment has).
const GENERATE: &str = r#"
import os, sys
d, nproc = sys.argv[1], int(sys.argv[2])
os.environ["PROMETHEUS_MULTIPROC_DIR"] = d
from prometheus_client import Counter, Gauge, Histogram
for _ in range(nproc):
    pid = os.fork()
    if pid == 0:
        c = Counter("app_requests", "Requests served.", ["method", "status", "path"])
        g = Gauge("app_queue_depth", "Queue depth.", ["queue"], multiprocess_mode="all")
        h = Histogram("app_request_duration_seconds", "Request duration.", ["route"])
        for m in ("GET", "POST", "PUT"):
            for s in ("200", "201", "404", "500", "503"):
                for p in range(20):
                    c.labels(m, s, "/path/%d" % p).inc(p + 1)
        for q in range(100):
            g.labels("q%d" % q).set(q)
        for r in range(36):
            for i in range(10):
                h.labels("/route/%d" % r).observe(0.001 * (i + 1) * (r + 1))
        os._exit(0)
    os.waitpid(pid, 0)
print(len(os.listdir(d)), "files")
"#;

/// Python's in-process merge and encoding of the same files, timed: median ms.
const PY_INPROCESS: &str = r#"
import sys, time
from prometheus_client import CollectorRegistry, multiprocess, generate_latest
registry = CollectorRegistry()
multiprocess.MultiProcessCollector(registry, path=sys.argv[1])
times = []
for _ in range(5):
    t = time.perf_counter()
    generate_latest(registry)
    times.append((time.perf_counter() - t) * 1e3)
times.sort()
print(times[len(times) // 2])
"#;

const PY_EXPORTER: &str = r#"
import sys, time
from prometheus_client import CollectorRegistry, multiprocess, start_http_server
registry = CollectorRegistry()
multiprocess.MultiProcessCollector(registry, path=sys.argv[1])
start_http_server(int(sys.argv[2]), addr="127.0.0.1", registry=registry)
print("ready", flush=True)
while True:
    time.sleep(3600)
"#;

/// Time of one scrape over HTTP and the number of samples in it.
fn timed_scrape(addr: SocketAddr) -> Result<(f64, usize), String> {
    let t = Instant::now();
    let r = http::get(addr, "/metrics", Duration::from_secs(60))
        .map_err(|e| format!("scrape {addr}: {e}"))?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    if r.status != 200 {
        return Err(format!("scrape {addr}: status {}", r.status));
    }
    let text = String::from_utf8_lossy(&r.body);
    let samples = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count();
    Ok((ms, samples))
}

fn scrape(paths: &Paths, report: &mut Report) -> Result<(), String> {
    println!("== scrape of {SCRAPE_FILES} workers' files, ~1,000 series each");
    let files = paths.tmp.path().join("scrape-files");
    fs::create_dir_all(&files).map_err(|e| e.to_string())?;
    let python = paths.venv.join("bin/python");
    let out = Command::new(&python)
        .args(["-c", GENERATE])
        .arg(&files)
        .arg(SCRAPE_FILES.to_string())
        .output()
        .map_err(|e| format!("generating files: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "generating files: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    println!("   {}", String::from_utf8_lossy(&out.stdout).trim());

    // Python: prometheus_client's own exporter over MultiProcessCollector.
    let port = free_port().map_err(|e| e.to_string())?;
    let mut py = Command::new(&python)
        .args(["-c", PY_EXPORTER])
        .arg(&files)
        .arg(port.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("python exporter: {e}"))?;
    let mut line = String::new();
    BufReader::new(py.stdout.take().ok_or("no stdout")?)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let py_addr: SocketAddr = ([127, 0, 0, 1], port).into();
    // Killed on every way out of this function.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _py = KillOnDrop(py);
    let (_, py_samples) = timed_scrape(py_addr)?;

    // ferrocorn: the real binary's exporter, with the files copied into its
    // metrics directory after it started (it cleans the directory at start).
    let dir = paths.tmp.path().join("ferrocorn-scrape");
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let dir_s = dir.to_str().ok_or("utf-8 temp path")?.to_owned();
    let server = start_ferrocorn(paths, "ferrocorn scrape", &["--metrics-dir", &dir_s], &[])?;
    let maddr = server.metrics.ok_or("no metrics address")?;
    let (_, base_samples) = timed_scrape(maddr)?;
    for e in fs::read_dir(&files).map_err(|e| e.to_string())? {
        let e = e.map_err(|e| e.to_string())?;
        fs::copy(e.path(), dir.join(e.file_name())).map_err(|e| e.to_string())?;
    }
    let (_, rs_samples) = timed_scrape(maddr)?;

    // The two exporters in alternation (which goes first alternates too), so
    // that each ratio compares scrapes a fraction of a second apart on this
    // shared machine, whose speed drifts.
    let mut py_ms = Vec::new();
    let mut rs_ms = Vec::new();
    let mut ratios = Vec::new();
    for pair in 0..SCRAPE_PAIRS {
        let (py, rs) = if pair % 2 == 0 {
            let py = timed_scrape(py_addr)?.0;
            (py, timed_scrape(maddr)?.0)
        } else {
            let rs = timed_scrape(maddr)?.0;
            (timed_scrape(py_addr)?.0, rs)
        };
        py_ms.push(py);
        rs_ms.push(rs);
        ratios.push(py / rs);
    }
    drop(_py);
    println!(
        "   python MultiProcessCollector: median {:.1} ms ({py_samples} samples)",
        stats::median(&py_ms)
    );
    println!(
        "   ferrocorn /metrics: median {:.2} ms ({rs_samples} samples, {base_samples} of them its own before the copy)",
        stats::median(&rs_ms)
    );
    let out = Command::new(&python)
        .args(["-c", PY_INPROCESS])
        .arg(&files)
        .output()
        .map_err(|e| format!("python in-process: {e}"))?;
    let py_inproc_ms: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| {
            format!(
                "python in-process: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let mut lib_ms = Vec::new();
    for _ in 0..30 {
        let t = Instant::now();
        let text =
            ferrocorn_shm_metrics::render_dir(&files).map_err(|e| format!("render_dir: {e}"))?;
        lib_ms.push(t.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(text);
    }
    println!(
        "   in-process merge + encode: python generate_latest {py_inproc_ms:.1} ms, ferrocorn_shm_metrics::render_dir {:.2} ms",
        stats::median(&lib_ms)
    );
    drop(server);
    report.scrape = Some(ScrapeResult {
        python_inproc_ms: py_inproc_ms,
        lib_ms: stats::median(&lib_ms),
        python_ms: stats::median(&py_ms),
        python_samples: py_samples,
        ferrocorn_ms: stats::median(&rs_ms),
        ratios,
        ferrocorn_samples: rs_samples,
        ferrocorn_own_samples: base_samples,
    });
    Ok(())
}

struct Summary {
    rps: f64,
    per_cpu: f64,
    /// Each round's req/s and req per CPU-second, in round order (the
    /// servers of a round run back to back, so their ratio is a fair pair).
    rps_rounds: Vec<f64>,
    per_cpu_rounds: Vec<f64>,
    /// Median user and system CPU microseconds per request.
    user_us: f64,
    sys_us: f64,
    /// Median CPU microseconds wrk spent per request.
    client_us: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

/// ` (rounds A-B)`: the lowest and highest ratio of one round's pair, or
/// nothing for a single round.
fn round_spread(ours: &[f64], theirs: &[f64]) -> String {
    let ratios: Vec<f64> = ours
        .iter()
        .zip(theirs)
        .filter(|(_, t)| **t > 0.0)
        .map(|(o, t)| o / t)
        .collect();
    if ratios.len() < 2 {
        return String::new();
    }
    let (lo, hi) = stats::min_max(&ratios);
    format!(" (rounds {lo:.2}-{hi:.2})")
}

struct IdleResult {
    name: String,
    before: u64,
    after: u64,
    per_conn: f64,
    alive: usize,
}

struct ScrapeResult {
    python_inproc_ms: f64,
    lib_ms: f64,
    python_ms: f64,
    python_samples: usize,
    ferrocorn_ms: f64,
    /// Python's time over ferrocorn's, one per pair of scrapes.
    ratios: Vec<f64>,
    ferrocorn_samples: usize,
    ferrocorn_own_samples: usize,
}

#[derive(Default)]
struct Report {
    servers: Vec<String>,
    connections: Vec<usize>,
    rounds: usize,
    duration: Duration,
    cells: BTreeMap<(String, usize), Summary>,
    idle: Vec<IdleResult>,
    respawn_ms: Vec<f64>,
    scrape: Option<ScrapeResult>,
    notes: Vec<String>,
}

fn command_output(cmd: &str, args: &[&str]) -> String {
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

fn lock_version(root: &Path, package: &str) -> String {
    let lock = fs::read_to_string(root.join("Cargo.lock")).unwrap_or_default();
    let needle = format!("name = \"{package}\"\nversion = \"");
    lock.find(&needle)
        .and_then(|i| lock[i + needle.len()..].split('"').next())
        .unwrap_or("?")
        .to_owned()
}

fn goal(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

impl Report {
    fn cell(&self, name: &str, conns: usize) -> Option<&Summary> {
        self.cells.get(&(name.to_owned(), conns))
    }

    /// How fast the run could go if ferrocorn's own code took no time: wrk
    /// and the server share the machine's CPUs, so wrk's CPU per request plus
    /// the kernel's work for the server (system calls, the loopback delivery)
    /// cap what user-space changes can reach.
    fn render_client_bound(&self, o: &mut String) {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let mut rows = String::new();
        for &c in &self.connections {
            let Some(f) = self.cell(FERRO, c) else {
                continue;
            };
            if f.client_us <= 0.0 {
                continue;
            }
            let floor_us = f.client_us + f.sys_us;
            let bound = cpus * 1e6 / floor_us;
            let vs = |peer: &str| {
                self.cell(peer, c)
                    .map_or("-".to_owned(), |p| format!("{:.2}x", bound / p.rps))
            };
            let _ = writeln!(
                rows,
                "| {c} | {:.2} | {:.2} | {bound:.0} | {:.2}x | {} | {} |",
                f.client_us,
                f.sys_us,
                bound / f.rps,
                vs("nginx"),
                vs("hyper")
            );
        }
        if rows.is_empty() {
            return;
        }
        let _ = writeln!(o, "\n## The load generator's share\n");
        let _ = writeln!(
            o,
            "wrk runs on the same {cpus:.0} CPUs as the server. If ferrocorn's own code took no time (no user CPU), each request would still cost wrk's CPU and the kernel's work for ferrocorn (its two system calls and the loopback delivery they run), both medians from the table above; filling all {cpus:.0} CPUs with nothing else gives the bound. A throughput ratio above the bound's ratio cannot be reached by changing ferrocorn's code, only by fewer or cheaper system calls.\n"
        );
        let _ = writeln!(
            o,
            "| connections | wrk µs/req | ferrocorn kernel µs/req | bound req/s | bound / ferrocorn | bound / nginx | bound / hyper |"
        );
        let _ = writeln!(o, "|---:|---:|---:|---:|---:|---:|---:|");
        o.push_str(&rows);
    }

    fn render(&self, paths: &Paths, opts: &Options) -> String {
        let mut o = String::new();
        let date = command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
        let cpu = fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| {
                t.lines().find_map(|l| {
                    l.strip_prefix("model name")
                        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
                })
            })
            .unwrap_or_else(|| "?".into());
        let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let _ = writeln!(o, "# ferrocorn load benchmark\n");
        let _ = writeln!(
            o,
            "Produced by `just bench` (benches/src/bin/loadbench.rs); all servers on loopback, measured in the same run.\n"
        );
        let _ = writeln!(o, "- date: {date}");
        let root = paths.root.to_str().unwrap_or(".");
        let dirty = Command::new("git")
            .args(["-C", root, "status", "--porcelain", "--untracked-files=no"])
            .output()
            .map_or(true, |o| !o.stdout.is_empty());
        let _ = writeln!(
            o,
            "- commit: {}{}",
            command_output("git", &["-C", root, "rev-parse", "--short", "HEAD"]),
            if dirty {
                " with uncommitted changes in the working tree"
            } else {
                " (clean working tree)"
            }
        );
        let _ = writeln!(
            o,
            "- load average at the end: {} (the machine is shared: what else runs moves throughput most, the CPU per request less, but both)",
            fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        );
        let _ = writeln!(
            o,
            "- machine: {nproc} CPUs ({cpu}), kernel {}",
            kernel.trim()
        );
        let _ = writeln!(
            o,
            "- ferrocorn: {}",
            command_output(
                paths.ferrocorn.to_str().unwrap_or("ferrocorn"),
                &["--version"]
            )
        );
        if let Some(b) = &opts.baseline {
            let _ = writeln!(
                o,
                "- ferrocorn baseline: {} ({}), the same flags as ferrocorn",
                command_output(b.to_str().unwrap_or("ferrocorn"), &["--version"]),
                b.display()
            );
        }
        let _ = writeln!(o, "- nginx: {}", command_output(NGINX, &["-v"]));
        let _ = writeln!(
            o,
            "- hyper {} / tokio {} (benches/src/bin/hyper-hello.rs, 2 threads)",
            lock_version(&paths.root, "hyper"),
            lock_version(&paths.root, "tokio")
        );
        let _ = writeln!(
            o,
            "- gunicorn {} gthread 2 workers x 4 threads, seed config; {}",
            command_output(
                paths
                    .venv
                    .join("bin/gunicorn")
                    .to_str()
                    .unwrap_or("gunicorn"),
                &["--version"]
            )
            .trim_start_matches("gunicorn (version ")
            .trim_end_matches(')'),
            command_output(
                paths.venv.join("bin/python").to_str().unwrap_or("python3"),
                &["--version"]
            )
        );
        let _ = writeln!(
            o,
            "- load: {}; {} round(s) x {} s per server and connection count, interleaved, keep-alive, 2 wrk threads",
            command_output("wrk", &["-v"]),
            self.rounds,
            self.duration.as_secs()
        );
        let _ = writeln!(o, "- rustc: {}", command_output("rustc", &["-V"]));
        if opts.rounds < 3 {
            let _ = writeln!(
                o,
                "- NOTE: a quick run (fewer rounds than the default 3): numbers are indicative only."
            );
        }

        if !self.cells.is_empty() {
            let _ = writeln!(
                o,
                "\n## Keep-alive throughput and latency (medians of rounds)\n"
            );
            let _ = writeln!(
                o,
                "CPU of the serving processes from /proc/PID/stat, split into user and kernel time per request: on loopback most of a request's cost is the kernel's (the `send` runs the delivery to wrk), the user part is the server's own code. `wrk µs/req` is the CPU wrk itself used per request (getrusage of the finished wrk), on the same two CPUs.\n"
            );
            let _ = writeln!(
                o,
                "| server | connections | req/s | req per server CPU-s | user µs/req | kernel µs/req | wrk µs/req | p50 ms | p99 ms | errors |"
            );
            let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
            for &c in &self.connections {
                for s in &self.servers {
                    if let Some(x) = self.cell(s, c) {
                        let _ = writeln!(
                            o,
                            "| {s} | {c} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.3} | {:.3} | {} |",
                            x.rps,
                            x.per_cpu,
                            x.user_us,
                            x.sys_us,
                            x.client_us,
                            x.p50_ms,
                            x.p99_ms,
                            x.errors
                        );
                    }
                }
            }
            let _ = writeln!(o, "\n## Ratios\n");
            let _ = writeln!(
                o,
                "Ratios of the medians; in brackets the lowest and highest ratio of the two servers within one round (a round runs every server once, in an order rotated each round), which shows how much the shared machine moves a ratio.\n"
            );
            let _ = writeln!(o, "| ratio | connections | value | goal | |");
            let _ = writeln!(o, "|---|---:|---:|---|---|");
            for &c in &self.connections {
                let Some(f) = self.cell(FERRO, c) else {
                    continue;
                };
                for (peer, want) in [
                    ("nginx", Some(1.2)),
                    ("hyper", Some(1.1)),
                    ("gunicorn", None),
                ] {
                    if let Some(p) = self.cell(peer, c) {
                        let r = f.rps / p.rps;
                        let (g, m) = match want {
                            Some(w) => (format!(">= {w}"), goal(r >= w)),
                            None => ("".into(), ""),
                        };
                        let spread = round_spread(&f.rps_rounds, &p.rps_rounds);
                        let _ = writeln!(
                            o,
                            "| throughput ferrocorn / {peer} | {c} | {r:.2}x{spread} | {g} | {m} |"
                        );
                        let e = f.per_cpu / p.per_cpu;
                        let spread = round_spread(&f.per_cpu_rounds, &p.per_cpu_rounds);
                        let _ = writeln!(
                            o,
                            "| requests per CPU-second ferrocorn / {peer} | {c} | {e:.2}x{spread} | | |"
                        );
                    }
                }
                if let Some(h) = self.cell("hyper", c) {
                    let _ = writeln!(
                        o,
                        "| p99 ferrocorn / hyper | {c} | {:.2}x ({:.3} vs {:.3} ms) | <= 1 | {} |",
                        f.p99_ms / h.p99_ms,
                        f.p99_ms,
                        h.p99_ms,
                        goal(f.p99_ms <= h.p99_ms)
                    );
                }
                if let Some(b) = self.cell(FERRO_BASE, c) {
                    let _ = writeln!(
                        o,
                        "| throughput ferrocorn / baseline | {c} | {:.2}x{} | | |",
                        f.rps / b.rps,
                        round_spread(&f.rps_rounds, &b.rps_rounds)
                    );
                    let _ = writeln!(
                        o,
                        "| requests per CPU-second ferrocorn / baseline | {c} | {:.2}x{} | | |",
                        f.per_cpu / b.per_cpu,
                        round_spread(&f.per_cpu_rounds, &b.per_cpu_rounds)
                    );
                    let _ = writeln!(
                        o,
                        "| user CPU per request ferrocorn / baseline | {c} | {:.2}x ({:.2} vs {:.2} µs) | | |",
                        f.user_us / b.user_us,
                        f.user_us,
                        b.user_us
                    );
                }
                if let Some(m) = self.cell(FERRO_OBS, c) {
                    let cost = 1.0 - m.rps / f.rps;
                    let _ = writeln!(
                        o,
                        "| metrics + JSON access log cost (1 - {FERRO_OBS} / {FERRO}) | {c} | {:.1}% | <= 10% | {} |",
                        cost * 100.0,
                        goal(cost <= 0.10)
                    );
                    let cpu_cost = 1.0 - m.per_cpu / f.per_cpu;
                    let _ = writeln!(
                        o,
                        "| metrics + JSON access log cost in CPU per request | {c} | {:.1}% | | |",
                        cpu_cost * 100.0
                    );
                }
            }
            self.render_client_bound(&mut o);
        }
        if !self.idle.is_empty() {
            let _ = writeln!(
                o,
                "\n## Memory per idle keep-alive connection ({IDLE_CONNECTIONS} connections, one request each)\n"
            );
            let _ = writeln!(
                o,
                "Sum of the serving processes' VmRSS before and after opening the connections (socket buffers are kernel memory and not in it). ferrocorn grows its connection table on demand (`--worker-connections 10000`); nginx allocates and initializes its connection and event arrays for `worker_connections` (20000 here) at start, so that part of its per-connection cost is in the \"before\" figure, not in the difference. hyper: one tokio task per connection.\n"
            );
            let _ = writeln!(
                o,
                "| server | RSS before MiB | RSS after MiB | bytes / connection | still open | goal |"
            );
            let _ = writeln!(o, "|---|---:|---:|---:|---:|---|");
            for r in &self.idle {
                let g = if r.name == FERRO {
                    format!("<= 512: {}", goal(r.per_conn <= 512.0))
                } else {
                    String::new()
                };
                let _ = writeln!(
                    o,
                    "| {} | {:.1} | {:.1} | {:.0} | {} | {g} |",
                    r.name,
                    r.before as f64 / 1048576.0,
                    r.after as f64 / 1048576.0,
                    r.per_conn,
                    r.alive
                );
            }
        }
        if !self.respawn_ms.is_empty() {
            let med = stats::median(&self.respawn_ms);
            let max = self.respawn_ms.iter().copied().fold(0.0, f64::max);
            let _ = writeln!(o, "\n## SIGKILL of a worker to its replacement serving\n");
            let _ = writeln!(
                o,
                "ferrocorn -w 1 (so that any answer after the kill is the replacement's): SIGKILL, then a request on a new connection, timed from the kill to the response. {} kills.\n",
                self.respawn_ms.len()
            );
            let _ = writeln!(
                o,
                "| median ms | max ms | goal |\n|---:|---:|---|\n| {med:.1} | {max:.1} | <= 50 ms: {} |",
                goal(med <= 50.0)
            );
        }
        if let Some(s) = &self.scrape {
            let ratio = stats::median(&s.ratios);
            let (lo, hi) = stats::min_max(&s.ratios);
            let _ = writeln!(
                o,
                "\n## Scrape of {SCRAPE_FILES} workers' files, ~1,000 series each\n"
            );
            let _ = writeln!(
                o,
                "Files written by prometheus_client in multiprocess mode (64 processes: 300 counter, 100 `all` gauge and 612 histogram series each). Python: prometheus_client's start_http_server over MultiProcessCollector. ferrocorn: the binary's exporter with the same files copied into its metrics directory. Time of a whole HTTP GET /metrics, median of {SCRAPE_PAIRS} scrapes of each, in alternation; the ratio is the median of the {SCRAPE_PAIRS} pairs' ratios.\n"
            );
            let _ = writeln!(o, "| exporter | ms | samples |\n|---|---:|---:|");
            let _ = writeln!(
                o,
                "| Python MultiProcessCollector (HTTP GET) | {:.1} | {} |",
                s.python_ms, s.python_samples
            );
            let _ = writeln!(
                o,
                "| ferrocorn /metrics (HTTP GET) | {:.2} | {} ({} its own) |",
                s.ferrocorn_ms, s.ferrocorn_samples, s.ferrocorn_own_samples
            );
            let _ = writeln!(
                o,
                "| Python generate_latest, in process | {:.1} | |",
                s.python_inproc_ms
            );
            let _ = writeln!(
                o,
                "| ferrocorn_shm_metrics::render_dir, in process | {:.2} | |",
                s.lib_ms
            );
            let _ = writeln!(
                o,
                "\nferrocorn's scrape is {ratio:.0}x faster over HTTP (pairs {lo:.0}-{hi:.0}x; goal >= 50x: {}), {:.0}x in process.",
                goal(ratio >= 50.0),
                s.python_inproc_ms / s.lib_ms
            );
        }
        if !self.notes.is_empty() {
            let _ = writeln!(o, "\n## Notes\n");
            for n in &self.notes {
                let _ = writeln!(o, "- {n}");
            }
        }
        let _ = io::stdout().flush();
        o
    }
}
