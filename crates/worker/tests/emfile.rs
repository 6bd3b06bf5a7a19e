//! Out of file descriptors: accept fails with EMFILE while clients wait in
//! the backlog. The loop must not spin on the readable listener, and must
//! serve the waiting clients once descriptors are free again. In its own
//! test binary: it lowers this process's descriptor limit.

mod common;

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{TestApp, TestServer, wait_for};
use ferrocorn_worker::WorkerConfig;

/// CPU time (user + system) of this process, in clock ticks, read from a
/// file opened beforehand (no descriptor is free later).
fn cpu_ticks(stat: &mut std::fs::File) -> u64 {
    use std::io::{Read, Seek};
    stat.seek(std::io::SeekFrom::Start(0)).unwrap();
    let mut stat_text = String::new();
    stat.read_to_string(&mut stat_text).unwrap();
    let stat = stat_text;
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn nofile() -> (u64, u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) }, 0);
    (r.rlim_cur, r.rlim_max)
}

fn set_nofile(soft: u64, hard: u64) {
    let r = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads the struct we own.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) }, 0);
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn emfile_does_not_spin_and_recovers() {
    let s = TestServer::start(WorkerConfig::default(), TestApp);
    let mut stat = std::fs::File::open("/proc/self/stat").unwrap();
    let (soft, hard) = nofile();
    // A client process holding 20 connections, each with a request.
    let script = r#"
import socket, sys, time
import resource
port = int(sys.argv[1])
sys.stdin.readline()
socks = []
for i in range(20):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    socks.append(s)
print("connected", flush=True)
sys.stdin.readline()
# Close the first five: their descriptors free up in the worker.
for s in socks[:5]:
    s.close()
ok = 0
for s in socks[5:]:
    s.settimeout(10)
    if s.recv(4096).startswith(b"HTTP/1.1 200"):
        ok += 1
print("answered", ok, flush=True)
"#;
    let mut child =
        Command::new(std::env::var("FERROCORN_TEST_PYTHON").unwrap_or_else(|_| "python3".into()))
            .args(["-c", script, &s.addr.port().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 is needed for this test");
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    // Room for a few connections only.
    set_nofile(open_fds() as u64 + 4, hard);
    child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"connect\n")
        .unwrap();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "connected");
    wait_for(
        Duration::from_secs(5),
        "the worker to hold what it can",
        || s.stats.active_connections() >= 1,
    );
    std::thread::sleep(Duration::from_millis(200));
    let held = s.stats.active_connections();
    assert!(
        held < 20,
        "accepted {held} connections with a low descriptor limit"
    );
    // While accept fails, the process stays nearly idle.
    let start_ticks = cpu_ticks(&mut stat);
    let start = Instant::now();
    std::thread::sleep(Duration::from_millis(1000));
    let ticks = cpu_ticks(&mut stat) - start_ticks;
    let hz = 100; // USER_HZ on Linux
    let cpu = Duration::from_millis(ticks * 1000 / hz);
    assert!(
        cpu < start.elapsed() / 4,
        "busy loop on EMFILE: {cpu:?} CPU in {:?}",
        start.elapsed()
    );
    // Give descriptors back: everyone is answered.
    set_nofile(soft, hard);
    child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "answered 15");
    assert!(child.wait().unwrap().success());
}
