//! Helpers for ferrocorn's end-to-end tests: run the built binary, wait for
//! its ports, talk to it with real clients.
//!
//! Every wait has a deadline; every server started is stopped by its guard
//! ([`Server`]'s `Drop`: SIGTERM, then SIGKILL to its whole process group).
#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

pub mod load;

/// How long a server may take to answer after it was started.
pub const START_DEADLINE: Duration = Duration::from_secs(10);

/// The ferrocorn binary: `target/<profile>/ferrocorn` next to the directory
/// of this test executable (`target/<profile>/deps/NAME-HASH`), or
/// `FERROCORN_BIN`. Panics with what to do when it is not built.
pub fn ferrocorn_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("FERROCORN_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    let mut dir = exe
        .parent()
        .expect("the test executable's directory")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("ferrocorn");
    assert!(
        bin.is_file(),
        "{} is missing: build it first (`cargo build -p ferrocorn`; `cargo test --workspace` does) or set FERROCORN_BIN",
        bin.display()
    );
    bin
}

/// A command that runs ferrocorn (its arguments appended, for
/// [`Server::builder_wrapped`]) in a mount namespace of its own where `mnt`
/// (created here) is a 64 KiB tmpfs filled up, with an empty directory `m`
/// in it: every write of file data there fails with ENOSPC. `None`, after
/// saying on stderr that the calling test is skipped, when no mount
/// namespace can be made here (root can make one; anyone else, or root in a
/// container that may not, needs a user namespace too; both are tried, with
/// `unshare` from util-linux).
pub fn on_a_full_filesystem(mnt: &Path) -> Option<Command> {
    on_a_small_filesystem(mnt, 64, true)
}

/// As [`on_a_full_filesystem`], with a tmpfs of `kib` KiB, filled up only
/// when `fill`.
pub fn on_a_small_filesystem(mnt: &Path, kib: u32, fill: bool) -> Option<Command> {
    fs::create_dir_all(mnt).expect("mount point");
    let variants: [&[&str]; 2] = [
        &["--mount", "--propagation", "private"],
        &["--map-root-user", "--mount"],
    ];
    let Some(ns) = variants.into_iter().find(|ns| {
        Command::new("unshare")
            .args(*ns)
            .args(["sh", "-c", "mount -t tmpfs probe /mnt"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }) else {
        // Not a pass: say so where the test output shows it (libtest names
        // the test's thread after the test).
        eprintln!(
            "SKIPPED {}: no mount namespace here",
            thread::current().name().unwrap_or("this test")
        );
        return None;
    };
    let mut wrapper = Command::new("unshare");
    wrapper.args(ns).args([
        "sh",
        "-c",
        // The fill stops at ENOSPC; whatever head says of it is expected.
        r#"d="$1"; size="$2"; fill="$3"; shift 3
           mount -t tmpfs -o "size=${size}k" ferrocorn-small "$d" && mkdir "$d/m" || exit 97
           [ "$fill" = no ] || head -c 1073741824 /dev/zero > "$d/fill" 2>/dev/null
           exec "$@""#,
        "sh",
    ]);
    wrapper
        .arg(mnt)
        .arg(kib.to_string())
        .arg(if fill { "yes" } else { "no" })
        .arg(ferrocorn_bin());
    Some(wrapper)
}

/// A port that was free a moment ago (bound to 127.0.0.1:0 and released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("an ephemeral port")
        .port()
}

/// Whether `port` can be bound on every address right now.
pub fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("0.0.0.0", port)).is_ok() && TcpListener::bind(("127.0.0.1", port)).is_ok()
}
/// The WSGI test apps (`tests/wsgi`).
pub fn wsgi_apps() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("wsgi")
}

/// The tests' Python: `FERROCORN_TEST_PYTHON` (scripts/test sets it to its
/// venv's) or `python3`.
pub fn test_python() -> String {
    std::env::var("FERROCORN_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// The virtualenv of the tests' Python, checked to import `modules` (a
/// comma-separated list); panics with what to do otherwise.
pub fn test_venv(modules: &str) -> PathBuf {
    let py = PathBuf::from(test_python());
    let venv = py
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .filter(|v| v.join("pyvenv.cfg").is_file())
        .unwrap_or_else(|| {
            panic!("FERROCORN_TEST_PYTHON must be a virtualenv's python (run ./scripts/test)")
        });
    let ok = Command::new(&py)
        .args(["-c", &format!("import {modules}")])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{} cannot import {modules}: run ./scripts/test (scripts/requirements-test.txt)",
        py.display()
    );
    venv
}

/// promtool's verdict on an exposition (`promtool check metrics`): parse
/// errors fail the test; lint warnings, which make it exit 1 too, do not.
pub fn promtool_parses(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is needed by this test; scripts/test installs it");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !report.contains("error while linting") && !report.contains("text format parsing error"),
        "{report}\n{text}"
    );
}

/// Polls `cond` every 20 ms until it holds (true) or `within` passed (false).
pub fn wait_for(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A `ferrocorn` command with a clean environment for the variables
/// ferrocorn reads (so the caller's shell does not leak into a test).
pub fn ferrocorn() -> Command {
    let mut cmd = Command::new(ferrocorn_bin());
    clean_env(&mut cmd);
    cmd
}

/// Removes the variables ferrocorn reads from `cmd`'s environment and gives
/// it no stdin.
fn clean_env(cmd: &mut Command) {
    for var in [
        "PORT",
        "WEB_CONCURRENCY",
        "PROMETHEUS_METRICS_EXPORT_PORT",
        "GUNICORN_METRICS_UPDATE_SECONDS",
        "LOGGING_FORMATTER_NAME",
        "PROMETHEUS_MULTIPROC_DIR",
        "LISTEN_FDS",
        "LISTEN_PID",
        "RUST_BACKTRACE",
        "VIRTUAL_ENV",
        "FORWARDED_ALLOW_IPS",
        "SCRIPT_NAME",
    ] {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null());
}

/// Runs a command that should end by itself (`--check-config`, a failing
/// start) and returns its output; kills it and panics after `within`.
pub fn run_to_end(mut cmd: Command, within: Duration) -> Output {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out_path = tmp.path().join("stdout");
    let err_path = tmp.path().join("stderr");
    cmd.stdout(fs::File::create(&out_path).expect("stdout file"))
        .stderr(fs::File::create(&err_path).expect("stderr file"))
        .process_group(0);
    let mut child = cmd.spawn().expect("spawn ferrocorn");
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() >= deadline {
            kill_group(child.id(), libc::SIGKILL);
            let _ = child.wait();
            panic!(
                "{cmd:?} did not exit within {within:?}; stderr:\n{}",
                fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: fs::read(&out_path).unwrap_or_default(),
        stderr: fs::read(&err_path).unwrap_or_default(),
    }
}

/// Asserts what every failure of the binary must look like: a non-zero
/// exit, no panic and no backtrace, and `needle` on stderr's last line.
pub fn assert_clean_failure(out: &Output, code: i32, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit status; stderr:\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked")
            && !stderr.contains("RUST_BACKTRACE")
            && !stderr.contains("stack backtrace"),
        "a panic instead of a message:\n{stderr}"
    );
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains(needle),
        "stderr's last line should mention {needle:?}:\n{stderr}"
    );
}

fn kill_group(pid: u32, sig: i32) {
    // SAFETY: kill() has no memory effects; a negative pid names the process
    // group the guard created for this server (process_group(0)).
    unsafe { libc::kill(-(pid as libc::pid_t), sig) };
}

/// A running ferrocorn (its own process group) with its stdout and stderr
/// in files; stopped when dropped.
pub struct Server {
    child: Option<Child>,
    /// Where the server listens (the first `-b`).
    pub addr: SocketAddr,
    /// Where its metrics are served, if they are.
    pub metrics: Option<SocketAddr>,
    dir: tempfile::TempDir,
}

/// Builds a [`Server`].
pub struct ServerBuilder {
    cmd: Command,
    addr: Option<SocketAddr>,
    metrics: Option<SocketAddr>,
    explicit_bind: bool,
    explicit_metrics: bool,
    explicit_log_format: bool,
    health: String,
}

impl Server {
    /// A server on a free loopback port with metrics on another free
    /// loopback port (unless `args` choose otherwise) and plain logs.
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            cmd: ferrocorn(),
            addr: None,
            metrics: None,
            explicit_bind: false,
            explicit_metrics: false,
            explicit_log_format: false,
            health: "/healthz".into(),
        }
    }

    /// As [`Server::builder`], for a ferrocorn that `wrapper` starts: a
    /// command ending in ferrocorn's path, run with the builder's arguments
    /// appended (`unshare -m sh -c '...; exec "$@"' sh BIN`, say) and
    /// becoming ferrocorn's process (`exec`), so that [`Server::pid`] is the
    /// supervisor's.
    pub fn builder_wrapped(mut wrapper: Command) -> ServerBuilder {
        clean_env(&mut wrapper);
        ServerBuilder {
            cmd: wrapper,
            addr: None,
            metrics: None,
            explicit_bind: false,
            explicit_metrics: false,
            explicit_log_format: false,
            health: "/healthz".into(),
        }
    }

    /// The supervisor's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// A scratch directory of this server (removed with it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything the server wrote on stdout so far.
    pub fn stdout(&self) -> String {
        fs::read_to_string(self.dir.path().join("stdout")).unwrap_or_default()
    }

    /// Everything the server wrote on stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    /// `GET path` on the server.
    pub fn get(&self, path: &str) -> Response {
        let r = request(self.addr, "GET", path, &[], b"");
        r.unwrap_or_else(|e| panic!("GET {path}: {e}; stderr:\n{}", self.stderr()))
    }

    /// The metrics page, scraped once.
    pub fn scrape(&self) -> String {
        let addr = self.metrics.expect("this server serves no metrics");
        let r = request(addr, "GET", "/metrics", &[], b"")
            .unwrap_or_else(|e| panic!("scrape {addr}: {e}; stderr:\n{}", self.stderr()));
        assert_eq!(r.status, 200, "scrape status");
        r.text()
    }

    /// Waits until `cond(stderr)` holds; panics with stderr after `within`.
    pub fn wait_stderr(&self, within: Duration, what: &str, cond: impl Fn(&str) -> bool) {
        if !wait_for(within, || cond(&self.stderr())) {
            panic!("waited {within:?} for {what}; stderr:\n{}", self.stderr());
        }
    }

    /// Sends `sig` to the supervisor.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill() has no memory effects.
        unsafe { libc::kill(self.pid() as libc::pid_t, sig) };
    }

    /// Waits for the supervisor to exit by itself; its status.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(Some(_)) = child.try_wait() {
            kill_group(child.id(), libc::SIGKILL);
            return;
        }
        // Quick stop, then no mercy for anything left in the group.
        // SAFETY: kill() has no memory effects.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        kill_group(child.id(), libc::SIGKILL);
        let _ = child.wait();
    }
}

impl ServerBuilder {
    /// Adds arguments. A `-b`/`--bind` among them replaces the default
    /// bind; `--metrics-port`/`--no-metrics` the default metrics port.
    pub fn args<I, S>(mut self, args: I) -> ServerBuilder
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let args: Vec<String> = args.into_iter().map(|s| s.as_ref().to_owned()).collect();
        for (i, a) in args.iter().enumerate() {
            let next = args.get(i + 1);
            match a.as_str() {
                "-b" | "--bind" => {
                    self.explicit_bind = true;
                    if self.addr.is_none() {
                        self.addr = next.and_then(|v| v.parse().ok());
                    }
                }
                "--metrics-port" => {
                    let port: Option<u16> = next.and_then(|v| v.parse().ok());
                    self.metrics = port.map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
                    self.explicit_metrics = true;
                }
                "--no-metrics" => {
                    self.metrics = None;
                    self.explicit_metrics = true;
                }
                "--log-format" => self.explicit_log_format = true,
                _ => {}
            }
        }
        self.cmd.args(&args);
        self
    }

    /// Sets an environment variable of the server.
    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> ServerBuilder {
        if key == "PROMETHEUS_METRICS_EXPORT_PORT" {
            let port: Option<u16> = value.as_ref().to_str().and_then(|v| v.parse().ok());
            self.metrics = port.map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
            self.explicit_metrics = true;
        }
        if key == "LOGGING_FORMATTER_NAME" {
            self.explicit_log_format = true;
        }
        self.cmd.env(key, value);
        self
    }

    /// Expects metrics on this address (when set through a config file).
    pub fn metrics_at(mut self, addr: Option<SocketAddr>) -> ServerBuilder {
        self.metrics = addr;
        self.explicit_metrics = true;
        self
    }

    /// Expects the server on this address (when set through a config file
    /// or the environment).
    pub fn serving_at(mut self, addr: SocketAddr) -> ServerBuilder {
        self.addr = Some(addr);
        self.explicit_bind = true;
        self
    }

    /// The path whose `200` says the server is up (default `/healthz`).
    pub fn health_path(mut self, path: &str) -> ServerBuilder {
        self.health = path.to_owned();
        self
    }

    /// Starts the server and waits until `GET /healthz` answers (and the
    /// metrics port, when there is one, accepts).
    pub fn start(self) -> Server {
        let ServerBuilder {
            mut cmd,
            addr,
            mut metrics,
            explicit_bind,
            explicit_metrics,
            explicit_log_format,
            health,
        } = self;
        let addr = match addr {
            Some(a) => a,
            None => {
                let a = SocketAddr::from(([127, 0, 0, 1], free_port()));
                if !explicit_bind {
                    cmd.arg("-b").arg(a.to_string());
                }
                a
            }
        };
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        if !explicit_metrics {
            let port = free_port();
            cmd.args([
                "--metrics-bind",
                "127.0.0.1",
                "--metrics-port",
                &port.to_string(),
            ]);
            metrics = Some(SocketAddr::from(([127, 0, 0, 1], port)));
        }
        if !explicit_log_format {
            cmd.args(["--log-format", "plain"]);
        }
        let dir = tempfile::Builder::new()
            .prefix("ferrocorn-e2e")
            .tempdir()
            .expect("tempdir");
        cmd.stdout(fs::File::create(dir.path().join("stdout")).expect("stdout file"))
            .stderr(fs::File::create(dir.path().join("stderr")).expect("stderr file"))
            .process_group(0);
        let child = cmd.spawn().expect("spawn ferrocorn");
        let mut server = Server {
            child: Some(child),
            addr,
            metrics,
            dir,
        };
        let up = wait_for(START_DEADLINE, || {
            if let Some(Ok(Some(_))) = server.child.as_mut().map(|c| c.try_wait()) {
                return true;
            }
            request(addr, "GET", &health, &[], b"").is_ok_and(|r| r.status == 200)
                && metrics.is_none_or(|m| TcpStream::connect(m).is_ok())
        });
        let exited = server
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        if !up || exited.is_some() {
            panic!(
                "ferrocorn {args:?} did not serve on {addr} within {START_DEADLINE:?} (exit: {exited:?}); stderr:\n{}",
                server.stderr()
            );
        }
        server
    }
}

/// An HTTP response as read off the wire.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased (a repeated header keeps its last value).
    pub headers: BTreeMap<String, String>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// One HTTP/1.1 request on a new connection (`Connection: close`), with a
/// 10 s read timeout; reads the whole response.
pub fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Response> {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())?;
    conn.write_all(body)?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw)?;
    parse_response(&raw, method == "HEAD")
}

/// Parses a complete response (Content-Length, chunked, or to EOF).
pub fn parse_response(raw: &[u8], head_only: bool) -> io::Result<Response> {
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_owned());
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of the response head"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad("head not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let mut headers = BTreeMap::new();
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let rest = &raw[end + 4..];
    let body = if head_only {
        Vec::new()
    } else if headers
        .get("transfer-encoding")
        .is_some_and(|t| t.contains("chunked"))
    {
        let mut body = Vec::new();
        let mut r = rest;
        loop {
            let nl = r
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or_else(|| bad("truncated chunk size"))?;
            let size_text = std::str::from_utf8(&r[..nl]).map_err(|_| bad("chunk size"))?;
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| bad("chunk size"))?;
            r = &r[nl + 2..];
            if size == 0 {
                break;
            }
            if r.len() < size + 2 {
                return Err(bad("truncated chunk"));
            }
            body.extend_from_slice(&r[..size]);
            r = &r[size + 2..];
        }
        body
    } else if let Some(len) = headers.get("content-length") {
        let len: usize = len.parse().map_err(|_| bad("content-length"))?;
        if rest.len() < len {
            return Err(bad("truncated body"));
        }
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// Runs curl with `args` (`-s`, a 10 s limit); panics when curl is missing
/// (scripts/test installs it).
pub fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["-s", "--max-time", "10"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("curl is needed by this test ({e}); scripts/test installs it"))
}

/// The value of a sample line `name{labels} value` in an exposition text,
/// for the first line starting with `prefix`.
pub fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Every sample line of metric `name` (exactly that name, any labels).
pub fn samples<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .collect()
}

/// The pids the kernel's children file of `pid` lists (its main thread's
/// children: a supervisor's workers).
pub fn children(pid: u32) -> Vec<u32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_ascii_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Whether process `pid` has the TCP socket listening on `port` of
/// 127.0.0.1 registered in one of its epoll instances (a worker that
/// accepts from it, as opposed to one still starting or draining). Read
/// from /proc: the listener's inode in /proc/net/tcp, the process's fd
/// for that inode, and a `tfd:` line for that fd in an fdinfo file.
pub fn polls_listener(pid: u32, port: u16) -> bool {
    let tcp = fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let want = format!("0100007F:{port:04X}");
    let Some(inode) = tcp.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_ascii_whitespace().collect();
        (f.len() > 9 && f[1] == want && f[3] == "0A").then(|| f[9].to_owned())
    }) else {
        return false;
    };
    let target = format!("socket:[{inode}]");
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    let fds: Vec<String> = fds
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let Some(fd) = fds.iter().find(|fd| {
        fs::read_link(format!("/proc/{pid}/fd/{fd}"))
            .is_ok_and(|t| t.as_os_str() == target.as_str())
    }) else {
        return false;
    };
    fds.iter().any(|other| {
        fs::read_to_string(format!("/proc/{pid}/fdinfo/{other}")).is_ok_and(|info| {
            info.lines().any(|l| {
                l.strip_prefix("tfd:")
                    .and_then(|rest| rest.split_ascii_whitespace().next())
                    == Some(fd.as_str())
            })
        })
    })
}

/// Writes `text` to `name` in `dir`; returns the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, text).expect("write a test file");
    p
}
