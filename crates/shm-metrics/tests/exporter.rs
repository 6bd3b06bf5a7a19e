//! The exporter over real sockets.

#[allow(unused)]
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ferrocorn_shm_metrics::{Exporter, MultiProcessCollector, Registry};

fn start() -> (SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let r = Registry::new(dir.path());
    let c = r.counter("served", "Served \"things\".", &["kind"]);
    for i in 0..2000 {
        c.with_label_values(&[&format!("k{i}")]).unwrap().inc();
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let collector = MultiProcessCollector::new(dir.path());
    Exporter::spawn_thread(listener, Box::new(move |out| collector.encode_text_to(out))).unwrap();
    (addr, dir)
}

/// Sends `request`, reads to EOF; returns (status line, headers, body).
fn exchange(addr: SocketAddr, request: &str) -> (String, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let (status, headers) = head.split_once("\r\n").unwrap_or((&head, ""));
    (
        status.to_string(),
        headers.to_ascii_lowercase(),
        raw[split + 4..].to_vec(),
    )
}

#[test]
fn serves_metrics_gzip_404_405() {
    let (addr, _dir) = start();
    let (status, headers, body) = exchange(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        headers.contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{headers}"
    );
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("served_total{kind=\"k1999\"} 1.0\n"));
    assert!(headers.contains(&format!("content-length: {}", text.len())));

    let (status, headers, body) = exchange(
        addr,
        "GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\nAccept-Encoding: deflate, gzip\r\n\r\n",
    );
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(headers.contains("content-encoding: gzip"), "{headers}");
    let mut unzipped = String::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_string(&mut unzipped)
        .unwrap();
    assert_eq!(unzipped, text);
    assert!(body.len() < text.len() / 3);

    let (status, _, _) = exchange(addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, headers, _) = exchange(
        addr,
        "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    assert!(headers.contains("allow: get, head"));
    let (status, _, body) = exchange(addr, "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.is_empty());
    let (status, _, _) = exchange(addr, "NOT HTTP\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 400 Bad Request");
}

#[test]
fn curl_gets_metrics() {
    let (addr, _dir) = start();
    let Ok(out) = std::process::Command::new("curl")
        .args(["-sS", "--compressed", "-D", "-"])
        .arg(format!("http://{addr}/metrics"))
        .output()
    else {
        panic!("curl is missing (apt-get install curl)");
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Content-Encoding: gzip"), "{text}");
    assert!(text.contains("served_total{kind=\"k0\"} 1.0"));
}

#[test]
fn slow_clients_do_not_block_others() {
    let (addr, _dir) = start();
    // Stalls halfway through its request, and another that never reads.
    let mut stalled = TcpStream::connect(addr).unwrap();
    stalled.write_all(b"GET /metr").unwrap();
    let mut nonreader = TcpStream::connect(addr).unwrap();
    for _ in 0..20 {
        nonreader
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
    }
    let mut idle: Vec<TcpStream> = (0..10).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let start = Instant::now();
    let (status, _, body) = exchange(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(!body.is_empty());
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
    // The stalled client still gets its answer once it finishes.
    stalled.write_all(b"ics HTTP/1.1\r\n\r\n").unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut first = [0u8; 15];
    stalled.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200 OK");
    idle.clear();
}

#[test]
fn mio_loop_drops_clients_past_their_deadline() {
    let (addr, _dir) = {
        let dir = tempfile::tempdir().unwrap();
        let listener = mio::net::TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut exporter =
            Exporter::new(listener, Box::new(Vec::new)).with_timeout(Duration::from_millis(200));
        let mut poll = mio::Poll::new().unwrap();
        exporter.register(poll.registry(), 100).unwrap();
        assert!(
            exporter.owns(mio::Token(100)) && exporter.owns(mio::Token(100 + Exporter::TOKENS - 1))
        );
        assert!(
            !exporter.owns(mio::Token(100 + Exporter::TOKENS)) && !exporter.owns(mio::Token(99))
        );
        std::thread::spawn(move || {
            let mut events = mio::Events::with_capacity(16);
            loop {
                poll.poll(&mut events, Some(Duration::from_millis(50)))
                    .unwrap();
                for ev in events.iter() {
                    exporter.handle(poll.registry(), ev);
                }
                exporter.tick(poll.registry());
            }
        });
        (addr, dir)
    };
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 16];
    // Closed by the exporter without an answer once the deadline passed.
    let n = s.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0);
    assert!(
        start.elapsed() >= Duration::from_millis(150),
        "{:?}",
        start.elapsed()
    );
    // An empty source still answers.
    let (status, _, body) = exchange(addr, "GET /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.is_empty());
}

/// The page's buffer is kept from one scrape to the next: pages that grow
/// and shrink, plain, gzipped and HEAD, each come out whole and alone.
#[test]
fn pages_of_changing_size_come_out_exact() {
    // Page n: `lines[n % 4]` lines of `p{n} {i}`.
    let lines = [50_000usize, 3, 0, 20_000];
    let page = move |n: usize| -> String {
        (0..lines[n % lines.len()])
            .map(|i| format!("p{n} {i}\n"))
            .collect()
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut n = 0;
    Exporter::spawn_thread(
        listener,
        Box::new(move |out| {
            out.extend_from_slice(page(n).as_bytes());
            n += 1;
        }),
    )
    .unwrap();
    for n in 0..12 {
        let want = page(n);
        let length = format!("content-length: {}\r\n", want.len());
        match n % 3 {
            0 => {
                let (status, headers, body) =
                    exchange(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
                assert_eq!(status, "HTTP/1.1 200 OK");
                assert!(headers.contains(&length), "page {n}: {headers}");
                assert_eq!(String::from_utf8(body).unwrap(), want, "page {n}");
            }
            1 => {
                let (status, headers, body) = exchange(
                    addr,
                    "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n",
                );
                assert_eq!(status, "HTTP/1.1 200 OK");
                assert!(headers.contains("content-encoding: gzip"), "{headers}");
                assert!(
                    headers.contains(&format!("content-length: {}\r\n", body.len())),
                    "page {n}: {headers}"
                );
                let mut unzipped = String::new();
                flate2::read::GzDecoder::new(&body[..])
                    .read_to_string(&mut unzipped)
                    .unwrap();
                assert_eq!(unzipped, want, "page {n}");
            }
            _ => {
                let (status, headers, body) =
                    exchange(addr, "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
                assert_eq!(status, "HTTP/1.1 200 OK");
                assert!(headers.contains(&length), "page {n}: {headers}");
                assert!(body.is_empty(), "page {n}");
            }
        }
    }
}
