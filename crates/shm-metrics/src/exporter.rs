//! A small HTTP endpoint for `GET /metrics`, driven by the caller's mio loop.

use std::io::{self, Read, Write};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Token};
use prometheus::proto::MetricFamily;

use crate::text::{TEXT_CONTENT_TYPE, encode_text};

/// Where the exporter gets the families to serve, called once per scrape.
pub type Source = Box<dyn FnMut() -> Vec<MetricFamily> + Send>;

/// Where the exporter gets the exposition text to serve, called once per
/// scrape to append it to the buffer given (for example with
/// [`MultiProcessCollector::encode_text_to`](crate::MultiProcessCollector::encode_text_to)).
pub type TextSource = Box<dyn FnMut(&mut Vec<u8>) + Send>;

const MAX_CLIENTS: usize = 32;
const MAX_REQUEST: usize = 16 * 1024;
/// How long a client may take to send its whole request head: a scraper
/// sends it at once; a client that dawdles holds a slot for nothing.
const HEAD_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves `GET /metrics` (and `HEAD`) in the Prometheus text format, gzip
/// when the client accepts it; other paths get 404, other methods 405.
///
/// Non-blocking, for a single-threaded [`mio`] loop: every client has its own
/// buffers and a deadline (10 s by default) and must send its whole request
/// head within 2 s; each response closes the connection. At most 32 clients
/// are held at once: when all slots are taken, the clients still sending
/// their request are read once more (a complete request is answered), and
/// the one that has been sending longest is cut to make room, so a scraper
/// gets its answer while idle or slow clients come and go; only when every
/// slot is being answered is a new client turned away (503). A scrape runs
/// the source synchronously (a few milliseconds for a large directory) when
/// a request is complete.
///
/// The port serves every series to whoever connects: bind it to a private
/// interface (or firewall it), not to the open internet.
pub struct Exporter {
    listener: TcpListener,
    scrape: Scrape,
    first_token: usize,
    clients: Vec<Option<Client>>,
    timeout: Duration,
}

/// The source and the buffer a scrape renders into, kept between scrapes
/// (at most twice the last page's size): a large page (a megabyte for 64
/// workers' files) is rendered without growing a buffer step by step and
/// without fresh pages from the kernel.
struct Scrape {
    source: TextSource,
    /// The largest response buffer given back, for the next scrape.
    spare: Vec<u8>,
    /// The length of the last page rendered: room reserved for the next.
    last_len: usize,
}

/// Room left in front of a page for the response head, which is written
/// there once the page's length is known: the page is not copied.
const HEAD_ROOM: usize = 256;

struct Client {
    stream: TcpStream,
    input: Vec<u8>,
    output: Vec<u8>,
    written: usize,
    /// When it was accepted: the oldest client still reading is cut first.
    accepted: Instant,
    deadline: Instant,
    writing: bool,
}

enum Progress {
    Open,
    Close,
}

impl Exporter {
    /// Tokens an exporter uses: its listener's and one per client slot.
    pub const TOKENS: usize = 1 + MAX_CLIENTS;

    /// An exporter serving families from `source` on `listener`.
    pub fn new(listener: TcpListener, mut source: Source) -> Exporter {
        Exporter::with_text(listener, Box::new(move |out| encode_text(&source(), out)))
    }

    /// An exporter serving the text `source` writes on `listener`.
    pub fn with_text(listener: TcpListener, source: TextSource) -> Exporter {
        Exporter {
            listener,
            scrape: Scrape {
                source,
                spare: Vec::new(),
                last_len: 0,
            },
            first_token: 0,
            clients: (0..MAX_CLIENTS).map(|_| None).collect(),
            timeout: Duration::from_secs(10),
        }
    }

    /// Sets how long one client may take from connecting to having read the
    /// whole response (default 10 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Exporter {
        self.timeout = timeout;
        self
    }

    /// Registers the listener; the exporter uses tokens
    /// `first_token .. first_token + Exporter::TOKENS`.
    pub fn register(&mut self, registry: &mio::Registry, first_token: usize) -> io::Result<()> {
        self.first_token = first_token;
        registry.register(&mut self.listener, Token(first_token), Interest::READABLE)
    }

    /// Whether `token` is one of this exporter's.
    pub fn owns(&self, token: Token) -> bool {
        token.0 >= self.first_token && token.0 < self.first_token + Self::TOKENS
    }

    /// Handles a readiness event for one of [`owns`](Self::owns)'s tokens
    /// (others are ignored).
    pub fn handle(&mut self, registry: &mio::Registry, event: &mio::event::Event) {
        let token = event.token();
        if !self.owns(token) {
            return;
        }
        if token.0 == self.first_token {
            self.accept(registry);
            return;
        }
        let idx = token.0 - self.first_token - 1;
        let Some(client) = self.clients[idx].as_mut() else {
            return;
        };
        let progress = if client.writing {
            client.flush(registry, token)
        } else {
            client.read(registry, token, &mut self.scrape)
        };
        if let Progress::Close = progress {
            self.close(registry, idx);
        }
    }

    /// Drops clients past their deadline and retries accepting. Call at least
    /// once a second.
    pub fn tick(&mut self, registry: &mio::Registry) {
        let now = Instant::now();
        for idx in 0..self.clients.len() {
            if self.clients[idx].as_ref().is_some_and(|c| {
                c.deadline <= now || (!c.writing && c.accepted + HEAD_TIMEOUT <= now)
            }) {
                self.close(registry, idx);
            }
        }
        self.accept(registry);
    }

    /// Number of clients being served.
    pub fn clients(&self) -> usize {
        self.clients.iter().filter(|c| c.is_some()).count()
    }

    fn close(&mut self, registry: &mio::Registry, idx: usize) {
        if let Some(mut c) = self.clients[idx].take() {
            let _ = registry.deregister(&mut c.stream);
            // The largest buffer is kept for the next scrape.
            let cap = c.output.capacity();
            if cap > self.scrape.spare.capacity() && cap <= self.scrape.keep_at_most() {
                self.scrape.spare = c.output;
            }
        }
    }

    fn accept(&mut self, registry: &mio::Registry) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    let Some(idx) = self.free_slot(registry) else {
                        // Every slot is being answered: close at once
                        // rather than queue behind slow readers.
                        let _ = stream.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                        continue;
                    };
                    let token = Token(self.first_token + 1 + idx);
                    if registry
                        .register(&mut stream, token, Interest::READABLE)
                        .is_err()
                    {
                        continue;
                    }
                    let now = Instant::now();
                    self.clients[idx] = Some(Client {
                        stream,
                        input: Vec::new(),
                        output: Vec::new(),
                        written: 0,
                        accepted: now,
                        deadline: now + self.timeout,
                        writing: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // WouldBlock, or out of descriptors: try again on the next event or tick.
                Err(_) => return,
            }
        }
    }

    /// A free client slot; when there is none, the clients still sending
    /// their request are read once more (those whose request is now
    /// complete are answered, those that hung up are closed), and if that
    /// frees nothing, the one among them accepted first is cut. `None` when
    /// every client is being answered.
    fn free_slot(&mut self, registry: &mio::Registry) -> Option<usize> {
        if let Some(idx) = self.clients.iter().position(|c| c.is_none()) {
            return Some(idx);
        }
        let mut closed = None;
        for idx in 0..self.clients.len() {
            let token = Token(self.first_token + 1 + idx);
            let Some(c) = self.clients[idx].as_mut().filter(|c| !c.writing) else {
                continue;
            };
            if let Progress::Close = c.read(registry, token, &mut self.scrape) {
                self.close(registry, idx);
                closed = Some(idx);
            }
        }
        if closed.is_some() {
            return closed;
        }
        let oldest = self
            .clients
            .iter()
            .enumerate()
            .filter_map(|(i, c)| Some((i, c.as_ref().filter(|c| !c.writing)?.accepted)))
            .min_by_key(|&(_, accepted)| accepted)
            .map(|(i, _)| i)?;
        self.close(registry, oldest);
        Some(oldest)
    }

    /// Serves on `listener` from a thread of its own, forever: for a single
    /// process that will not fork afterwards (a forked child would not have
    /// the thread).
    pub fn spawn_thread(
        listener: std::net::TcpListener,
        source: TextSource,
    ) -> io::Result<JoinHandle<()>> {
        listener.set_nonblocking(true)?;
        let mut poll = mio::Poll::new()?;
        let mut exporter = Exporter::with_text(TcpListener::from_std(listener), source);
        exporter.register(poll.registry(), 0)?;
        std::thread::Builder::new()
            .name("metrics-exporter".into())
            .spawn(move || {
                let mut events = mio::Events::with_capacity(64);
                loop {
                    if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(500)))
                        && e.kind() != io::ErrorKind::Interrupted
                    {
                        return;
                    }
                    for ev in events.iter() {
                        exporter.handle(poll.registry(), ev);
                    }
                    exporter.tick(poll.registry());
                }
            })
    }
}

impl Client {
    fn read(&mut self, registry: &mio::Registry, token: Token, scrape: &mut Scrape) -> Progress {
        let mut chunk = [0u8; 4096];
        let mut eof = false;
        loop {
            match self.stream.read(&mut chunk) {
                // Half-closed after its request (`shutdown(SHUT_WR)`): the
                // request read so far is answered all the same.
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    self.input.extend_from_slice(&chunk[..n]);
                    if self.input.len() > MAX_REQUEST {
                        return self.respond(
                            registry,
                            token,
                            simple(431, "Request Header Fields Too Large", &[]),
                        );
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Progress::Close,
            }
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        let response = match req.parse(&self.input) {
            Ok(httparse::Status::Partial) if eof => return Progress::Close,
            Ok(httparse::Status::Partial) => return Progress::Open,
            Err(_) => simple(400, "Bad Request", &[]),
            Ok(httparse::Status::Complete(_)) => {
                let method = req.method.unwrap_or("");
                let path = origin_form(req.path.unwrap_or(""))
                    .split('?')
                    .next()
                    .unwrap_or("");
                if path != "/metrics" {
                    simple(404, "Not Found", &[])
                } else if method != "GET" && method != "HEAD" {
                    simple(405, "Method Not Allowed", &["Allow: GET, HEAD"])
                } else {
                    let gzip = req
                        .headers
                        .iter()
                        .filter(|h| h.name.eq_ignore_ascii_case("accept-encoding"))
                        .any(|h| accepts_gzip(h.value));
                    let (response, start) = scrape.respond(gzip, method == "HEAD");
                    return self.respond_from(registry, token, response, start);
                }
            }
        };
        self.respond(registry, token, response)
    }

    fn respond(&mut self, registry: &mio::Registry, token: Token, response: Vec<u8>) -> Progress {
        self.respond_from(registry, token, response, 0)
    }

    /// Sends `response[start..]` and closes.
    fn respond_from(
        &mut self,
        registry: &mio::Registry,
        token: Token,
        response: Vec<u8>,
        start: usize,
    ) -> Progress {
        self.output = response;
        self.written = start;
        self.writing = true;
        match self.flush(registry, token) {
            Progress::Open => {
                if registry
                    .reregister(&mut self.stream, token, Interest::WRITABLE)
                    .is_err()
                {
                    return Progress::Close;
                }
                Progress::Open
            }
            Progress::Close => Progress::Close,
        }
    }

    fn flush(&mut self, _registry: &mio::Registry, _token: Token) -> Progress {
        while self.written < self.output.len() {
            match self.stream.write(&self.output[self.written..]) {
                Ok(0) => return Progress::Close,
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::Open,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Progress::Close,
            }
        }
        Progress::Close
    }
}

/// The path of a request target: an absolute-form target
/// (`http://host:8001/metrics`, as a proxy-minded client sends it) without
/// its scheme and authority; any other target as it is.
fn origin_form(target: &str) -> &str {
    // The scheme is case-insensitive (RFC 9110, 4.2.3).
    let after = |scheme: &str| {
        target
            .get(..scheme.len())
            .filter(|s| s.eq_ignore_ascii_case(scheme))
            .map(|_| &target[scheme.len()..])
    };
    let Some(rest) = after("http://").or_else(|| after("https://")) else {
        return target;
    };
    match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => &rest[i..],
        _ => "/",
    }
}

/// Whether an `Accept-Encoding` value accepts gzip (`gzip`, `x-gzip`, not `q=0`).
fn accepts_gzip(value: &[u8]) -> bool {
    let Ok(value) = std::str::from_utf8(value) else {
        return false;
    };
    value.split(',').any(|item| {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim();
        let q_zero = parts.any(|p| {
            let p = p.trim();
            p.strip_prefix("q=")
                .or_else(|| p.strip_prefix("Q="))
                .is_some_and(|q| q.trim().parse::<f64>().ok() == Some(0.0))
        });
        (coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip")) && !q_zero
    })
}

fn simple(status: u16, reason: &str, extra: &[&str]) -> Vec<u8> {
    let body = format!("{status} {reason}\n");
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for h in extra {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.push_str(&body);
    out.into_bytes()
}

impl Scrape {
    /// The largest buffer kept between scrapes: twice the last page, and
    /// 64 KiB more.
    fn keep_at_most(&self) -> usize {
        2 * (HEAD_ROOM + self.last_len) + 64 * 1024
    }

    /// Renders the page and makes the response of a scrape. Returns the
    /// buffer and where the response starts in it: the page is rendered
    /// behind [`HEAD_ROOM`] bytes of room, and the head, once the length is
    /// known, is written at the end of that room, right before the body.
    fn respond(&mut self, gzip: bool, head: bool) -> (Vec<u8>, usize) {
        let mut page = std::mem::take(&mut self.spare);
        if page.capacity() > self.keep_at_most() {
            // Pages got smaller: the memory goes back.
            page = Vec::new();
        }
        page.clear();
        page.resize(HEAD_ROOM, 0);
        page.reserve(self.last_len + self.last_len / 8);
        (self.source)(&mut page);
        self.last_len = page.len() - HEAD_ROOM;
        let mut gzipped = false;
        if gzip {
            let mut z = Vec::with_capacity(HEAD_ROOM + self.last_len / 4);
            z.resize(HEAD_ROOM, 0);
            let mut enc = flate2::write::GzEncoder::new(z, flate2::Compression::fast());
            if enc.write_all(&page[HEAD_ROOM..]).is_ok()
                && let Ok(z) = enc.finish()
            {
                // The text's buffer is kept for the next scrape.
                self.spare = std::mem::replace(&mut page, z);
                gzipped = true;
            }
        }
        let head_text = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {TEXT_CONTENT_TYPE}\r\nContent-Length: {}\r\n{}Vary: Accept-Encoding\r\nConnection: close\r\n\r\n",
            page.len() - HEAD_ROOM,
            if gzipped {
                "Content-Encoding: gzip\r\n"
            } else {
                ""
            }
        );
        if head {
            page.truncate(HEAD_ROOM);
        }
        match HEAD_ROOM.checked_sub(head_text.len()) {
            Some(start) => {
                page[start..HEAD_ROOM].copy_from_slice(head_text.as_bytes());
                (page, start)
            }
            // Longer than any head this writes; copied rather than cut.
            None => {
                let mut out = head_text.into_bytes();
                out.extend_from_slice(&page[HEAD_ROOM..]);
                (out, 0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{accepts_gzip, origin_form};

    #[test]
    fn absolute_form_targets() {
        assert_eq!(origin_form("/metrics"), "/metrics");
        assert_eq!(origin_form("http://h/metrics"), "/metrics");
        assert_eq!(origin_form("http://h:8001/metrics?x=1"), "/metrics?x=1");
        assert_eq!(origin_form("HTTP://h/metrics"), "/metrics");
        assert_eq!(origin_form("https://h/metrics"), "/metrics");
        assert_eq!(origin_form("httpx://h/metrics"), "httpx://h/metrics");
        assert_eq!(origin_form("http://h"), "/");
        assert_eq!(origin_form("http://h?x"), "/");
    }

    #[test]
    fn gzip_negotiation() {
        assert!(accepts_gzip(b"gzip"));
        assert!(accepts_gzip(b"deflate, gzip;q=0.5"));
        assert!(accepts_gzip(b"GZIP"));
        assert!(!accepts_gzip(b"gzip;q=0"));
        assert!(!accepts_gzip(b"identity"));
        assert!(!accepts_gzip(b"br"));
    }
}
