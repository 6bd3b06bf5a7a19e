//! The exporter against clients that half-close, dawdle or crowd it, over
//! real sockets: a scraper always gets its answer within a second.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferrocorn_shm_metrics::{Exporter, MultiProcessCollector, Registry};

fn start() -> (SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    Registry::new(dir.path())
        .counter("served", "Served.", &[])
        .with_label_values(&[])
        .unwrap()
        .inc();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let collector = MultiProcessCollector::new(dir.path());
    Exporter::spawn_thread(listener, Box::new(move |out| collector.encode_text_to(out))).unwrap();
    (addr, dir)
}

/// Sends `request` (then half-closes when `shut` is set) and reads the
/// whole answer; its status line.
fn status_of(addr: SocketAddr, request: &str, shut: bool) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    if shut {
        s.shutdown(Shutdown::Write).unwrap();
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let raw = String::from_utf8_lossy(&raw);
    raw.lines().next().unwrap_or("").to_string()
}

#[test]
fn a_half_closed_client_gets_its_answer() {
    let (addr, _dir) = start();
    let status = status_of(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", true);
    assert_eq!(status, "HTTP/1.1 200 OK");
    // A half-closed partial request is just closed.
    assert_eq!(status_of(addr, "GET /metr", true), "");
}

#[test]
fn an_absolute_form_target_is_served_as_its_path() {
    let (addr, _dir) = start();
    let status = status_of(
        addr,
        "GET http://127.0.0.1/metrics HTTP/1.1\r\nHost: x\r\n\r\n",
        false,
    );
    assert_eq!(status, "HTTP/1.1 200 OK");
}

#[test]
fn a_client_that_never_finishes_its_request_is_cut_within_seconds() {
    let (addr, _dir) = start();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    s.write_all(b"GET /metr").unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 64];
    // EOF (or a reset) from the exporter, not our read timeout.
    let r = s.read(&mut buf);
    assert!(
        matches!(r, Ok(0))
            || r.as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "{r:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn scrapes_are_answered_while_forty_idle_clients_crowd_the_exporter() {
    let (addr, _dir) = start();
    let stop = Arc::new(AtomicBool::new(false));
    let connects = Arc::new(AtomicU64::new(0));
    // 40 clients that send a partial request, and reconnect when cut.
    let crowd: Vec<_> = (0..40)
        .map(|_| {
            let (stop, connects) = (stop.clone(), connects.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut s) = TcpStream::connect(addr) else {
                        continue;
                    };
                    connects.fetch_add(1, Ordering::Relaxed);
                    s.set_read_timeout(Some(Duration::from_millis(200)))
                        .unwrap();
                    let _ = s.write_all(b"GET /metr");
                    let mut buf = [0u8; 256];
                    // Until the exporter cuts (or answers) us.
                    loop {
                        match s.read(&mut buf) {
                            Ok(0) => break,
                            Ok(_) => {}
                            Err(e)
                                if e.kind() == std::io::ErrorKind::WouldBlock
                                    || e.kind() == std::io::ErrorKind::TimedOut =>
                            {
                                if stop.load(Ordering::Relaxed) {
                                    break;
                                }
                            }
                            Err(_) => break,
                        }
                    }
                }
            })
        })
        .collect();
    // The crowd holds every slot before the scrapes start.
    let t = Instant::now();
    while connects.load(Ordering::Relaxed) < 40 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the crowd did not connect"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut slow = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let status = status_of(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", false);
        assert_eq!(status, "HTTP/1.1 200 OK");
        if t.elapsed() >= Duration::from_secs(1) {
            slow.push(t.elapsed());
        }
    }
    stop.store(true, Ordering::Relaxed);
    for c in crowd {
        c.join().unwrap();
    }
    assert!(
        slow.is_empty(),
        "scrapes that took a second or more: {slow:?}"
    );
    assert!(
        connects.load(Ordering::Relaxed) > 40,
        "no idle client was ever cut"
    );
}
