//! Helpers shared by the integration tests: run a worker on a thread, talk
//! to it over real sockets, read HTTP responses strictly.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ferrocorn_worker::{
    App, Listener, Request, Response, ShutdownHandle, Worker, WorkerConfig, WorkerStats,
};

pub struct TestServer {
    pub addr: SocketAddr,
    pub stop: ShutdownHandle,
    pub stats: Arc<WorkerStats>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl TestServer {
    pub fn start(config: WorkerConfig, app: impl App) -> TestServer {
        Self::start_with(config, Arc::new(app), |w| w)
    }

    pub fn start_with(
        config: WorkerConfig,
        app: Arc<dyn App>,
        f: impl FnOnce(Worker) -> Worker,
    ) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        Self::start_on(listener, config, app, f)
    }

    /// A worker serving `listener`, set up by the caller.
    pub fn start_on(
        listener: TcpListener,
        config: WorkerConfig,
        app: Arc<dyn App>,
        f: impl FnOnce(Worker) -> Worker,
    ) -> TestServer {
        let addr = listener.local_addr().unwrap();
        let worker = f(Worker::new(config, vec![Listener::Tcp(listener)], app).unwrap());
        let stop = worker.shutdown_handle();
        let stats = worker.stats();
        let thread = std::thread::spawn(move || worker.run());
        TestServer {
            addr,
            stop,
            stats,
            thread: Some(thread),
        }
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    /// Wait for the worker thread to return, at most `limit`.
    pub fn join_within(&mut self, limit: Duration) -> io::Result<()> {
        let t = self.thread.take().expect("joined once");
        let start = Instant::now();
        while !t.is_finished() {
            assert!(
                start.elapsed() < limit,
                "worker did not stop within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        t.join().unwrap()
    }

    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.quick();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Poll `cond` until it holds, failing after `limit`.
pub fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn body_str(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }
    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// A reader that keeps bytes across responses (pipelining).
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn new(stream: TcpStream) -> Client {
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut tmp = [0u8; 8192];
        let n = self.stream.read(&mut tmp)?;
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(n)
    }

    fn line(&mut self) -> io::Result<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8(self.buf[..i].to_vec()).unwrap();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            if self.fill()? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    fn exact(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if self.fill()? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Read one response; `head` = it answers a HEAD request.
    pub fn response_to(&mut self, head: bool) -> io::Result<Resp> {
        let status_line = self.line()?;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap().to_owned();
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let line = self.line()?;
            if line.is_empty() {
                break;
            }
            let (n, v) = line.split_once(':').expect("header line");
            headers.push((n.to_owned(), v.trim().to_owned()));
        }
        let mut resp = Resp {
            status,
            version,
            headers,
            body: Vec::new(),
        };
        if head || status < 200 || status == 204 || status == 304 {
            return Ok(resp);
        }
        if let Some(cl) = resp.header("content-length") {
            let n: usize = cl.parse().unwrap();
            resp.body = self.exact(n)?;
        } else if resp
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            loop {
                let size_line = self.line()?;
                let size = usize::from_str_radix(size_line.trim(), 16).unwrap();
                if size == 0 {
                    let end = self.line()?;
                    assert_eq!(end, "", "trailers are not expected");
                    break;
                }
                let data = self.exact(size)?;
                resp.body.extend_from_slice(&data);
                assert_eq!(self.line()?, "");
            }
        } else {
            // Close-delimited.
            loop {
                if self.fill()? == 0 {
                    break;
                }
            }
            resp.body = std::mem::take(&mut self.buf);
        }
        Ok(resp)
    }

    pub fn response(&mut self) -> Resp {
        self.response_to(false).expect("a response")
    }

    /// The server closed the connection: EOF (or a reset) with no more bytes.
    pub fn assert_closed(&mut self) {
        assert!(
            self.buf.is_empty(),
            "unexpected bytes {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        let mut tmp = [0u8; 1024];
        match self.stream.read(&mut tmp) {
            Ok(0) => {}
            Ok(n) => panic!(
                "expected close, got {:?}",
                String::from_utf8_lossy(&tmp[..n])
            ),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("expected close, got {e}"),
        }
    }
}

/// Send raw bytes on a new connection, expect one response with `status`
/// and then a closed connection.
pub fn expect_refused(server: &TestServer, request: &[u8], status: u16) -> Resp {
    let mut c = Client::new(server.connect());
    c.send(request);
    let r = c
        .response_to(false)
        .unwrap_or_else(|e| panic!("no response to {:?}: {e}", String::from_utf8_lossy(request)));
    assert_eq!(
        r.status,
        status,
        "request {:?} answered {} {:?}",
        String::from_utf8_lossy(request),
        r.status,
        r.body_str()
    );
    assert!(r.closes(), "error response without Connection: close");
    c.assert_closed();
    r
}

/// An app for tests: routes by path.
pub struct TestApp;

impl App for TestApp {
    fn call(&self, req: &mut Request<'_>) -> Response {
        let path = req.path();
        match path {
            "/" => Response::text(200, "hello\n"),
            "/echo" => {
                let body = match req.body().read_all() {
                    Ok(b) => b,
                    Err(e) => return Response::text(499, &e.to_string()),
                };
                Response::new(200)
                    .header("Content-Type", "application/octet-stream")
                    .header("X-Method", req.method())
                    .header("X-Query", req.query())
                    .body(body)
            }
            "/info" => {
                let headers: Vec<String> = req
                    .headers()
                    .map(|(n, v)| format!("{n}={}", String::from_utf8_lossy(v)))
                    .collect();
                Response::text(
                    200,
                    &format!(
                        "method={} target={} path={} query={} version={} peer={} local={} headers={}",
                        req.method(),
                        req.target(),
                        req.path(),
                        req.query(),
                        req.version().as_str(),
                        req.peer_addr()
                            .map(|a| a.ip().to_string())
                            .unwrap_or_default(),
                        req.local_addr().map(|a| a.to_string()).unwrap_or_default(),
                        headers.join(",")
                    ),
                )
            }
            "/noread" => Response::text(200, "ignored your body\n"),
            "/panic" => panic!("test handler panics on purpose"),
            "/sleep" => {
                let ms: u64 = req.query().parse().unwrap_or(100);
                std::thread::sleep(Duration::from_millis(ms));
                Response::text(200, "slept\n")
            }
            "/stream" => {
                let n: usize = req.query().parse().unwrap_or(3);
                let it = (0..n).map(|i| Ok(format!("part {i}\n").into_bytes()));
                Response::new(200).stream(Box::new(it))
            }
            "/stream-fail" => {
                let panics = req.query() == "panic";
                let mut n = 0;
                let it = std::iter::from_fn(move || {
                    n += 1;
                    match n {
                        1 => Some(Ok(b"first\n".to_vec())),
                        2 if panics => panic!("stream panics on purpose"),
                        2 => Some(Err(io::Error::other("stream fails on purpose"))),
                        _ => None,
                    }
                });
                Response::new(200).stream(Box::new(it))
            }
            "/stream-len" => {
                let it = ["abc", "def"]
                    .into_iter()
                    .map(|s| Ok(s.as_bytes().to_vec()));
                Response::new(200)
                    .header("Content-Length", "6")
                    .stream(Box::new(it))
            }
            "/big" => {
                let n: usize = req.query().parse().unwrap_or(1 << 20);
                let pattern: Vec<u8> = (0..251u32).map(|i| i as u8).collect();
                let mut body = Vec::with_capacity(n + 251);
                while body.len() < n {
                    body.extend_from_slice(&pattern);
                }
                body.truncate(n);
                Response::new(200).body(body)
            }
            "/close" => Response::text(200, "bye\n").header("Connection", "close"),
            "/badheader" => Response::text(200, "x").header("X-Bad", "a\r\nInjected: yes"),
            "/status" => {
                let s: u16 = req.query().parse().unwrap_or(200);
                Response::new(s)
            }
            _ => Response::text(404, "not found\n"),
        }
    }
}
