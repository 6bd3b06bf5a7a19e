//! The test binary run as a server, for the tests of this folder: start
//! it, read its stderr, watch its children, signal it, send it requests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_ferrocorn-supervisor-testbin");

pub struct Server {
    pub child: Child,
    pub pid: i32,
    pub labels: Vec<String>,
    pub stderr: Arc<Mutex<String>>,
}

impl Server {
    pub fn start(args: &[&str]) -> Server {
        let mut cmd = Command::new(BIN);
        cmd.args(args);
        Server::spawn(cmd)
    }

    pub fn spawn(mut cmd: Command) -> Server {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the test binary");
        let stderr = Arc::new(Mutex::new(String::new()));
        let err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx.recv_timeout(Duration::from_secs(10));
        let Ok(line) = line else {
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
            panic!("no READY line; stderr:\n{}", stderr.lock().unwrap());
        };
        let mut parts = line.split_whitespace();
        assert_eq!(parts.next(), Some("READY"), "{line}");
        let pid: i32 = parts.next().unwrap().parse().unwrap();
        let labels = parts.map(str::to_string).collect();
        Server {
            child,
            pid,
            labels,
            stderr,
        }
    }

    /// `host:port` of a TCP listener.
    pub fn addr(&self, i: usize) -> String {
        self.labels[i].strip_prefix("http://").unwrap().to_string()
    }

    pub fn workers(&self) -> Vec<i32> {
        children(self.pid)
    }

    pub fn signal(&self, sig: i32) {
        send(self.pid, sig);
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                panic!("supervisor did not exit; stderr:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The stderr once it contains every needle (waits up to 10 s: the
    /// reader thread lags the process a little).
    pub fn stderr_with(&self, needles: &[&str]) -> String {
        let mut err = String::new();
        wait_for("stderr lines", Duration::from_secs(10), || {
            err = self.stderr();
            needles.iter().all(|n| err.contains(n))
        })
        .unwrap_or_else(|e| panic!("{e} {needles:?}; stderr:\n{err}"));
        err
    }

    /// Wait until these workers have installed their signal handlers.
    pub fn wait_ready(&self, workers: &[i32]) {
        wait_for(
            "the workers' signal handlers",
            Duration::from_secs(10),
            || {
                let err = self.stderr();
                workers
                    .iter()
                    .all(|p| err.contains(&format!("WORKER_READY {p}\n")))
            },
        )
        .unwrap_or_else(|e| panic!("{e}; stderr:\n{}", self.stderr()));
    }

    /// Wait until the worker set satisfies `f`; returns it.
    pub fn wait_workers(&self, what: &str, f: impl Fn(&[i32]) -> bool) -> Vec<i32> {
        let mut last = Vec::new();
        wait_for(what, Duration::from_secs(10), || {
            last = self.workers();
            f(&last)
        })
        .unwrap_or_else(|e| panic!("{e}: workers {last:?}; stderr:\n{}", self.stderr()));
        last
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let workers = self.workers();
            send(self.pid, libc::SIGKILL);
            for w in workers {
                send(w, libc::SIGCONT);
                send(w, libc::SIGKILL);
            }
            let _ = self.child.wait();
        }
    }
}

pub fn send(pid: i32, sig: i32) {
    assert!(pid > 0);
    // SAFETY: kill(2) with a positive pid and integer signal.
    unsafe {
        libc::kill(pid, sig);
    }
}

pub fn children(pid: i32) -> Vec<i32> {
    let mut v: Vec<i32> = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    v.sort();
    v
}

pub fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + within;
    while !f() {
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

pub fn request(mut s: impl Read + Write, path: &str) -> std::io::Result<String> {
    write!(s, "GET {path} HTTP/1.1\r\nHost: t\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    if !out.starts_with("HTTP/1.1 200 ") {
        return Err(std::io::Error::other(format!("bad response {out:?}")));
    }
    Ok(out
        .rsplit("\r\n\r\n")
        .next()
        .unwrap_or("")
        .trim()
        .to_string())
}

/// GET `path`; the body (the worker's pid).
pub fn get(addr: &str, path: &str) -> std::io::Result<String> {
    let s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    request(s, path)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The state letter of `/proc/PID/stat` (`T` stopped, `Z` zombie, ...).
pub fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Wakes the supervisor's loop every 20 ms until dropped, with SIGCHLD
/// (which it takes as "look at the children"), so it checks the workers'
/// heartbeats often instead of about once a second.
pub struct Poker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

pub fn poke(pid: i32) -> Poker {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        while !flag.load(Ordering::SeqCst) {
            send(pid, libc::SIGCHLD);
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    Poker {
        stop,
        thread: Some(thread),
    }
}

impl Drop for Poker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
