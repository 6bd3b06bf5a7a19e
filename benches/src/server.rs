//! A server process a benchmark started: waited for until it answers, its
//! workers found in `/proc`, its output kept in a file, and killed (with its
//! workers) when dropped.

use std::fs;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{http, procfs, sys};

/// A free loopback port (bound, then released: racy in principle, fine here).
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Which processes do the serving (whose CPU and memory count).
#[derive(Clone, Copy, Debug)]
pub enum Workers {
    /// The process itself (hyper).
    Itself,
    /// The children of the process we started (pre-fork servers).
    Children,
}

/// A server process we started; killed (with its children) on drop.
pub struct Server {
    /// The name the reports use.
    pub name: String,
    /// Where it serves.
    pub addr: SocketAddr,
    /// The process.
    pub child: Child,
    /// Whose CPU and memory count.
    pub workers: Workers,
    /// Exporter address, when it has one.
    pub metrics: Option<SocketAddr>,
    /// Its stdout and stderr (removed on drop).
    pub log: PathBuf,
}

impl Server {
    /// Spawns `cmd` (stdout and stderr to a file), waits until `GET ready_path`
    /// on `addr` answers 200 and until `expect_workers` workers exist.
    pub fn start(
        name: &str,
        cmd: Command,
        addr: SocketAddr,
        workers: Workers,
        expect_workers: usize,
    ) -> Result<Server, String> {
        Server::start_at(name, cmd, addr, "/", workers, expect_workers)
    }

    /// [`Server::start`] with the readiness path given.
    pub fn start_at(
        name: &str,
        mut cmd: Command,
        addr: SocketAddr,
        ready_path: &str,
        workers: Workers,
        expect_workers: usize,
    ) -> Result<Server, String> {
        let log = std::env::temp_dir().join(format!(
            "loadbench-{}-{}.log",
            name.replace([' ', '+', '/'], "-"),
            std::process::id()
        ));
        let out = fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("starting {name} ({cmd:?}): {e}"))?;
        let mut server = Server {
            name: name.to_owned(),
            addr,
            child,
            workers,
            metrics: None,
            log,
        };
        // Ready when it answers; a server that exits meanwhile fails at once.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("{name} exited: {status}\n{}", server.log_tail()));
            }
            match http::wait_ready(addr, ready_path, Duration::from_millis(200)) {
                Ok(_) => break,
                Err(e) if Instant::now() > deadline => {
                    return Err(format!(
                        "{name} did not answer on {addr}: {e}\n{}",
                        server.log_tail()
                    ));
                }
                Err(_) => {}
            }
        }
        // Every worker up, so that memory and kill measurements see them all.
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.worker_pids().len() < expect_workers {
            if Instant::now() > deadline {
                return Err(format!(
                    "{name}: expected {expect_workers} workers, found {:?}",
                    server.worker_pids()
                ));
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("{name} exited: {status}\n{}", server.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    /// The process id of the process we started.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines the server printed.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// The processes that serve.
    pub fn worker_pids(&self) -> Vec<u32> {
        match self.workers {
            Workers::Itself => vec![self.pid()],
            Workers::Children => procfs::children(self.pid()),
        }
    }

    /// Every process of the server (itself and its workers): whose CPU counts.
    pub fn all_pids(&self) -> Vec<u32> {
        let mut pids = self.worker_pids();
        pids.push(self.pid());
        pids.sort_unstable();
        pids.dedup();
        pids
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let workers = self.worker_pids();
        let _ = sys::kill(self.pid(), libc::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for w in workers {
            if procfs::alive(w) {
                let _ = sys::kill(w, libc::SIGKILL);
            }
        }
        let _ = fs::remove_file(&self.log);
    }
}
