//! The fault tests' pieces (tests/tests/faults.rs with the built-in app,
//! tests/tests/wsgi_faults.rs with a Python app): the supervisor and its
//! workers seen through /proc, a keep-alive load generator that retries
//! nothing and counts every request that fails, and the no-loss assertion.
//!
//! The load generator retries nothing: a request that gets no complete
//! response is a failure. Like every pooled HTTP client (urllib3, Go's
//! transport), it checks that an idle connection is still open before sending
//! on it, and opens a new one if the server closed it in between; that is not
//! a retry, since no request was sent on the closed connection.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::{ferrocorn_bin, free_port, request, samples, wait_for};

/// One fault test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Holds the fault tests of one test binary to one at a time: they count
/// failures and latency on a 2-core CI machine.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------
// The binary and its processes.

/// Parent pid and state letter from /proc/PID/stat.
pub fn proc_stat(pid: u32) -> Option<(u32, char)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let mut f = rest.split_ascii_whitespace();
    let state = f.next()?.chars().next()?;
    Some((f.next()?.parse().ok()?, state))
}

/// Whether `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|(_, s)| s != 'Z' && s != 'X')
}

/// Live children of `pid`.
pub fn children(pid: u32) -> BTreeSet<u32> {
    fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .filter(|&c| proc_stat(c).is_some_and(|(pp, s)| pp == pid && s != 'Z' && s != 'X'))
                .collect()
        })
        .unwrap_or_default()
}

/// Sends `sig` to `pid`; panics when it cannot.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill() has no memory effects; errors are reported below.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}): {}", io::Error::last_os_error());
}

/// The socket inodes of the IPv4 TCP connections whose local end is
/// `local`, by their remote end (/proc/net/tcp, read once: with the
/// thousands of TIME_WAIT sockets earlier tests leave, each read takes a
/// while).
pub fn tcp_inodes(local: SocketAddr) -> std::collections::HashMap<SocketAddr, u64> {
    let parse = |hex: &str| -> Option<SocketAddr> {
        let (ip, port) = hex.split_once(':')?;
        let ip = u32::from_str_radix(ip, 16).ok()?.to_ne_bytes();
        Some(SocketAddr::from((ip, u16::from_str_radix(port, 16).ok()?)))
    };
    let text = fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_ascii_whitespace().collect();
            if f.len() <= 9 || parse(f[1])? != local {
                return None;
            }
            // TIME_WAIT leftovers have no inode.
            let inode: u64 = f[9].parse().ok()?;
            (inode != 0).then_some((parse(f[2])?, inode))
        })
        .collect()
}

/// The socket inodes process `pid` holds.
pub fn socket_inodes(pid: u32) -> BTreeSet<u64> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| {
                let l = fs::read_link(e.ok()?.path()).ok()?;
                l.to_str()?
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .parse()
                    .ok()
            })
            .collect()
        })
        .unwrap_or_default()
}

/// Connections waiting in the accept queue of the listener on `port`
/// (rx_queue of the LISTEN entry in /proc/net/tcp).
pub fn accept_queue(port: u16) -> Option<u32> {
    let text = fs::read_to_string("/proc/net/tcp").ok()?;
    let want = format!(":{port:04X}");
    text.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        if f.len() > 4 && f[1].ends_with(&want) && f[3] == "0A" {
            u32::from_str_radix(f[4].split(':').nth(1)?, 16).ok()
        } else {
            None
        }
    })
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (the slowloris test holds
/// over a thousand sockets; servers started afterwards inherit it).
pub fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read or write the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// A running supervisor (and whatever it forked or exec'd), killed on drop.
pub struct Ferrocorn {
    /// The supervisor.
    pub child: Child,
    /// Where it serves.
    pub addr: SocketAddr,
    /// The metrics exporter's address, when it is on.
    pub metrics: Option<SocketAddr>,
    /// Its scratch directory (`stderr.log`, `metrics/`).
    pub tmp: tempfile::TempDir,
    /// Supervisors started by USR2, to clean up too.
    pub others: Vec<u32>,
}

impl Ferrocorn {
    /// `ferrocorn -b 127.0.0.1:PORT` plus `args`, metrics on a free loopback
    /// port and a private directory, logs in the temp dir. Waits until `/`
    /// answers and `workers` workers run.
    pub fn start(args: &[&str], workers: usize) -> Ferrocorn {
        Ferrocorn::start_with(args, workers, true)
    }

    /// As [`Ferrocorn::start`], with the metrics exporter on or off.
    pub fn start_with(args: &[&str], workers: usize, metrics: bool) -> Ferrocorn {
        Ferrocorn::start_env(args, workers, metrics, &[])
    }

    /// As [`Ferrocorn::start_with`], with environment variables set (an
    /// empty value removes the variable).
    pub fn start_env(
        args: &[&str],
        workers: usize,
        metrics: bool,
        env: &[(&str, &str)],
    ) -> Ferrocorn {
        let tmp = tempfile::Builder::new()
            .prefix("ferrocorn-faults")
            .tempdir()
            .expect("tempdir");
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let metrics_dir = tmp.path().join("metrics");
        fs::create_dir_all(&metrics_dir).expect("metrics dir");
        let metrics_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let stderr = fs::File::create(tmp.path().join("stderr.log")).expect("stderr log");
        let mut cmd = Command::new(ferrocorn_bin());
        for (k, v) in env {
            if v.is_empty() {
                cmd.env_remove(k);
            } else {
                cmd.env(k, v);
            }
        }
        cmd.arg("-b").arg(addr.to_string());
        if metrics {
            cmd.args([
                "--metrics-bind",
                "127.0.0.1",
                "--metrics-port",
                &metrics_addr.port().to_string(),
            ])
            .arg("--metrics-dir")
            .arg(&metrics_dir);
        } else {
            cmd.arg("--no-metrics");
        }
        let child = cmd
            .args(["--log-format", "plain"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn ferrocorn");
        let mut f = Ferrocorn {
            child,
            addr,
            metrics: metrics.then_some(metrics_addr),
            tmp,
            others: Vec::new(),
        };
        // Python workers import their app first: slow on a loaded machine.
        let up = wait_for(Duration::from_secs(30), || {
            get_once(addr, "/").is_ok_and(|r| r.status == 200) && children(f.pid()).len() == workers
        });
        if !up {
            let status = f.child.try_wait();
            panic!(
                "ferrocorn {args:?} did not serve with {workers} workers within 30 s (workers {:?}, exit {status:?}); stderr:\n{}",
                children(f.pid()),
                f.stderr()
            );
        }
        f
    }

    /// The supervisor's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The sum of `gunicorn_requests_total` over its series, from one scrape.
    pub fn requests_total(&self) -> f64 {
        let addr = self.metrics.expect("metrics are on");
        let r = request(addr, "GET", "/metrics", &[], b"")
            .unwrap_or_else(|e| panic!("scrape {addr}: {e}; stderr:\n{}", self.stderr()));
        assert_eq!(r.status, 200, "scrape status");
        let text = r.text();
        samples(&text, "gunicorn_requests_total")
            .iter()
            .map(|l| {
                l.rsplit(' ')
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or_else(|| panic!("bad sample {l:?}"))
            })
            .sum()
    }

    /// Its live workers.
    pub fn workers(&self) -> BTreeSet<u32> {
        children(self.pid())
    }

    /// All of its stderr so far.
    pub fn stderr_all(&self) -> String {
        fs::read_to_string(self.tmp.path().join("stderr.log")).unwrap_or_default()
    }

    /// The last 40 lines of its stderr.
    pub fn stderr(&self) -> String {
        let text = fs::read_to_string(self.tmp.path().join("stderr.log")).unwrap_or_default();
        // The tail is what matters when a test fails.
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Waits up to `within` for the supervisor to exit; its exit status.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Ferrocorn {
    fn drop(&mut self) {
        let mut pids: Vec<u32> = vec![self.pid()];
        pids.extend(&self.others);
        let mut all = Vec::new();
        for p in pids {
            all.extend(children(p));
            all.push(p);
        }
        for p in all {
            if alive(p) {
                // SAFETY: kill() has no memory effects.
                unsafe { libc::kill(p as libc::pid_t, libc::SIGKILL) };
            }
        }
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// A tiny HTTP/1.1 client.

/// A response as the load generator reads it.
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Whether it said `Connection: close`.
    pub close: bool,
    /// The body.
    pub body: Vec<u8>,
}

/// Reads one response (Content-Length framing; the built-in app's answers).
pub fn read_response(r: &mut impl BufRead) -> io::Result<Response> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "closed before the status line",
        ));
    }
    let status = line
        .split_ascii_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, format!("status line {line:?}"))
        })?;
    let mut len = 0usize;
    let mut close = false;
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed in the headers",
            ));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((n, v)) = l.split_once(':') {
            let (n, v) = (n.trim().to_ascii_lowercase(), v.trim().to_owned());
            if n == "content-length" {
                len = v
                    .parse()
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "content-length"))?;
            }
            if n == "connection" && v.eq_ignore_ascii_case("close") {
                close = true;
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok(Response {
        status,
        close,
        body,
    })
}

/// A keep-alive connection.
pub struct Conn {
    /// The connection, buffered for reading.
    pub r: BufReader<TcpStream>,
}

impl Conn {
    /// Connects with `timeout` for the connect and every read and write.
    pub fn open(addr: SocketAddr, timeout: Duration) -> io::Result<Conn> {
        let s = TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        s.set_nodelay(true)?;
        Ok(Conn {
            r: BufReader::new(s),
        })
    }

    /// Sends `GET path` without reading the answer.
    pub fn send(&mut self, path: &str) -> io::Result<()> {
        let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        self.r.get_mut().write_all(req.as_bytes())
    }

    /// Sends `GET path` and reads the answer.
    pub fn get(&mut self, path: &str) -> io::Result<Response> {
        self.send(path)?;
        read_response(&mut self.r)
    }

    /// True when the server closed (or wrote to) this idle connection: the
    /// check every pooled client makes before reusing a connection.
    pub fn stale(&self) -> bool {
        let mut p = libc::pollfd {
            fd: self.r.get_ref().as_raw_fd(),
            events: libc::POLLIN | libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        n != 0 || !self.r.buffer().is_empty()
    }

    /// The connection's local address.
    pub fn local(&self) -> Option<SocketAddr> {
        self.r.get_ref().local_addr().ok()
    }
}

/// One `GET path` on a new connection.
pub fn get_once(addr: SocketAddr, path: &str) -> io::Result<Response> {
    Conn::open(addr, Duration::from_secs(2))?.get(path)
}

// ---------------------------------------------------------------------------
// The load generator.

/// What one load client counted.
#[derive(Default, Debug, Clone)]
pub struct ClientStats {
    /// Requests answered as expected.
    pub ok: u64,
    /// Requests not answered, or answered with another status.
    pub failed: u64,
    /// Idle connections found closed by the server before a request was sent.
    pub stale: u64,
    /// Answers with `Connection: close`.
    pub closed_by_server: u64,
    /// Of `failed`: requests sent on a reused keep-alive connection that the
    /// server reset or closed before any byte of a response (it closed the
    /// connection as the request arrived).
    pub failed_reused_unanswered: u64,
    /// Each answered request's latency.
    pub latencies_us: Vec<u32>,
    /// The first few failures.
    pub errors: Vec<String>,
}

/// Keep-alive clients on std threads, each sending `GET path` back to back.
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<ClientStats>>,
    /// Each client's current connection (local address), for finding which
    /// worker serves it.
    pub current: Vec<Arc<Mutex<Option<SocketAddr>>>>,
}

/// What all the clients of a [`Load`] counted.
#[derive(Debug, Default)]
pub struct Totals {
    /// Summed over the clients: see [`ClientStats`].
    pub ok: u64,
    /// Summed over the clients.
    pub failed: u64,
    /// Summed over the clients.
    pub stale: u64,
    /// Summed over the clients.
    pub closed_by_server: u64,
    /// Summed over the clients.
    pub failed_reused_unanswered: u64,
    /// Each client's own.
    pub per_client: Vec<ClientStats>,
}

impl Totals {
    /// The `p` percentile of the answered requests' latency, in ms.
    pub fn latency_percentile_ms(&self, p: f64) -> f64 {
        let mut all: Vec<u32> = self
            .per_client
            .iter()
            .flat_map(|c| c.latencies_us.iter().copied())
            .collect();
        if all.is_empty() {
            return f64::NAN;
        }
        all.sort_unstable();
        let rank = ((p / 100.0) * all.len() as f64).ceil() as usize;
        f64::from(all[rank.clamp(1, all.len()) - 1]) / 1e3
    }

    /// The first failures of the clients, at most 10.
    pub fn first_errors(&self) -> Vec<&str> {
        self.per_client
            .iter()
            .flat_map(|c| c.errors.iter().map(String::as_str))
            .take(10)
            .collect()
    }
}

impl Load {
    /// Starts `clients` clients; each stops at `stop()` or after `bound`.
    pub fn start(addr: SocketAddr, clients: usize, path: &'static str, bound: Duration) -> Load {
        Load::start_expecting(addr, clients, path, bound, 200)
    }

    /// As [`Load::start`], counting an answer with status `expect` as ok
    /// (and any other as failed).
    pub fn start_expecting(
        addr: SocketAddr,
        clients: usize,
        path: &'static str,
        bound: Duration,
        expect: u16,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let mut current = Vec::new();
        for _ in 0..clients {
            let stop = stop.clone();
            let cur = Arc::new(Mutex::new(None));
            current.push(cur.clone());
            threads.push(thread::spawn(move || {
                client(addr, path, expect, &stop, bound, &cur)
            }));
        }
        // Every client connected and served once, so the load is steady.
        let started = Instant::now();
        while current.iter().any(|c| c.lock().unwrap().is_none())
            && started.elapsed() < Duration::from_secs(5)
        {
            thread::sleep(Duration::from_millis(5));
        }
        Load {
            stop,
            threads,
            current,
        }
    }

    /// Stops the clients and adds up what they counted.
    pub fn finish(self) -> Totals {
        self.stop.store(true, Ordering::SeqCst);
        let mut t = Totals::default();
        for h in self.threads {
            let c = h.join().expect("client thread");
            t.ok += c.ok;
            t.failed += c.failed;
            t.stale += c.stale;
            t.closed_by_server += c.closed_by_server;
            t.failed_reused_unanswered += c.failed_reused_unanswered;
            t.per_client.push(c);
        }
        t
    }
}

/// One client of a [`Load`]: `GET path` back to back on a keep-alive
/// connection until `stop` or `bound`.
pub fn client(
    addr: SocketAddr,
    path: &str,
    expect: u16,
    stop: &AtomicBool,
    bound: Duration,
    current: &Mutex<Option<SocketAddr>>,
) -> ClientStats {
    let mut s = ClientStats::default();
    let start = Instant::now();
    let mut conn: Option<Conn> = None;
    // Requests answered on the current connection.
    let mut served_on_conn = 0u64;
    let fail = |s: &mut ClientStats, what: String| {
        s.failed += 1;
        if s.errors.len() < 5 {
            s.errors
                .push(format!("{:.3}s {what}", start.elapsed().as_secs_f64()));
        }
    };
    while !stop.load(Ordering::Relaxed) && start.elapsed() < bound {
        if conn.as_ref().is_some_and(Conn::stale) {
            s.stale += 1;
            conn = None;
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::open(addr, Duration::from_secs(5)) {
                Ok(c) => {
                    *current.lock().unwrap() = c.local();
                    served_on_conn = 0;
                    conn.insert(c)
                }
                Err(e) => {
                    fail(&mut s, format!("connect: {e}"));
                    thread::sleep(Duration::from_millis(10));
                    continue;
                }
            },
        };
        let t = Instant::now();
        match c.get(path) {
            Ok(r) if r.status == expect => {
                s.ok += 1;
                served_on_conn += 1;
                s.latencies_us
                    .push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                if r.close {
                    s.closed_by_server += 1;
                    conn = None;
                }
            }
            Ok(r) => {
                fail(&mut s, format!("status {}", r.status));
                if r.close {
                    conn = None;
                }
            }
            Err(e) => {
                let unanswered = matches!(e.kind(), io::ErrorKind::ConnectionReset)
                    || e.to_string().contains("before the status line");
                if served_on_conn > 0 && unanswered {
                    s.failed_reused_unanswered += 1;
                }
                fail(
                    &mut s,
                    format!(
                        "{:?}: {e} (request {} on its connection)",
                        e.kind(),
                        served_on_conn + 1
                    ),
                );
                conn = None;
            }
        }
    }
    s
}

/// Prints what a load counted under `name`.
pub fn report(name: &str, t: &Totals) {
    println!(
        "{name}: {} requests ok, {} failed ({} of them reset or closed unanswered on a reused keep-alive connection), {} idle connections found closed, {} answers with Connection: close; p50 {:.2} ms, p99 {:.2} ms",
        t.ok,
        t.failed,
        t.failed_reused_unanswered,
        t.stale,
        t.closed_by_server,
        t.latency_percentile_ms(50.0),
        t.latency_percentile_ms(99.0)
    );
    for e in t.first_errors() {
        println!("  failure: {e}");
    }
}

/// Prints the counts and asserts no request failed and at least `min_ok`
/// were answered.
pub fn assert_no_loss(name: &str, t: &Totals, f: &Ferrocorn, min_ok: u64) {
    report(name, t);
    assert_eq!(
        t.failed,
        0,
        "{name}: {} failed requests (first: {:?}); ferrocorn stderr:\n{}",
        t.failed,
        t.first_errors(),
        f.stderr()
    );
    assert!(
        t.ok >= min_ok,
        "{name}: only {} requests served (want >= {min_ok})",
        t.ok
    );
}
