//! The thread pool running the app, and the messages between it and the
//! event loop. Requests go to the pool through a mutex-protected queue; results
//! come back through a vector the loop swaps out after a [`mio::Waker`] wake
//! (one wake per batch: only a push onto an empty vector wakes the loop).

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use crate::access::{AccessSink, Record};
use crate::metrics::Metrics;
use crate::parse::{HeaderSpan, Version};
use crate::request::{Body, BodyEvent, OwnedHead, Request};
use crate::response::{BodyStream, Response, ResponseBody, header_lines, reason};
use crate::stats::WorkerStats;
use crate::{App, date};

/// Response bodies up to this size are copied after the head (one write);
/// larger ones are written with `writev` from where they are.
const COPY_BODY_MAX: usize = 8 * 1024;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A [`Shared::busy_since`] value: the thread waits for the client's bytes,
/// which is no sign of a stuck app.
const WAITING_FOR_CLIENT: u64 = u64::MAX;

/// The busy clock of the pool thread running on this thread.
struct BusyClock {
    slots: Arc<[AtomicU64]>,
    index: usize,
    epoch: Instant,
}

thread_local! {
    /// Set on pool threads (not on the loop thread, whose inline calls
    /// never read a streamed body).
    static BUSY_CLOCK: std::cell::RefCell<Option<BusyClock>> =
        const { std::cell::RefCell::new(None) };
}

/// While alive, the calling pool thread counts as waiting for the client
/// (reading a request body), not as held by the app: the heartbeat's stuck
/// check ([`Shared::pool_healthy`]) passes over it, and when the wait ends
/// the app's time starts again. A slow upload is not a stuck worker (a
/// chunked body trickled a byte every 2 s made the supervisor kill a
/// 1-thread worker at `timeout`); a body that stalls is cut by
/// `stall_timeout` instead.
pub(crate) struct ClientWait(());

impl ClientWait {
    pub(crate) fn begin() -> ClientWait {
        BUSY_CLOCK.with(|c| {
            if let Some(c) = &*c.borrow() {
                c.slots[c.index].store(WAITING_FOR_CLIENT, Relaxed);
            }
        });
        ClientWait(())
    }
}

impl Drop for ClientWait {
    fn drop(&mut self) {
        BUSY_CLOCK.with(|c| {
            if let Some(c) = &*c.borrow() {
                let now = c.epoch.elapsed().as_millis() as u64;
                c.slots[c.index].store(now + 1, Relaxed);
            }
        });
    }
}

/// State shared by the loop and the pool threads.
pub(crate) struct Shared {
    pub(crate) app: Arc<dyn App>,
    pub(crate) stats: Arc<WorkerStats>,
    pub(crate) logger: slog::Logger,
    pub(crate) access: Option<AccessSink>,
    pub(crate) metrics: Metrics,
    msgs: Mutex<Vec<Msg>>,
    waker: Arc<mio::Waker>,
    tasks: Mutex<Tasks>,
    task_cond: Condvar,
    pub(crate) queued: AtomicUsize,
    /// Set during a graceful stop: every response gets `Connection: close`.
    pub(crate) draining: AtomicBool,
    /// Per pool thread: 1 + the loop-epoch millisecond its current task
    /// started (or last got its thread back from a wait for the client),
    /// 0 when idle, [`WAITING_FOR_CLIENT`] while it waits for body bytes.
    pub(crate) busy_since: Arc<[AtomicU64]>,
    pub(crate) epoch: Instant,
    pub(crate) pid: u32,
}

#[derive(Default)]
struct Tasks {
    q: VecDeque<Task>,
    stop: bool,
    /// Pool threads waiting on the condition variable: a submit wakes one
    /// only when some thread sleeps (a futex call saved per request when the
    /// pool is busy).
    idle: usize,
}

// A job moves through the queue by value: boxing it would cost an
// allocation per request.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Task {
    Call(Job),
    Pull(Pull),
}

/// A request for the app.
pub(crate) struct Job {
    pub(crate) token: u32,
    pub(crate) generation: u32,
    pub(crate) head: OwnedHead,
    pub(crate) body: Body,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) local: Option<SocketAddr>,
    /// The loop allows keep-alive after this response.
    pub(crate) keep_alive: bool,
    /// An empty vector for the response head.
    pub(crate) out: Vec<u8>,
    pub(crate) start: Instant,
}

/// Fetch the next piece of a streamed response.
pub(crate) struct Pull {
    pub(crate) token: u32,
    pub(crate) generation: u32,
    pub(crate) stream: Box<StreamResp>,
}

/// A streamed response in progress.
pub(crate) struct StreamResp {
    iter: BodyStream,
    chunked: bool,
    remaining: Option<u64>,
    sent: u64,
    status: u16,
    ctx: Box<LogCtx>,
}

/// What the access log and metrics need once a streamed response ends.
struct LogCtx {
    head: OwnedHead,
    peer: Option<SocketAddr>,
    resp_headers: Vec<u8>,
    start: Instant,
}

pub(crate) enum Msg {
    Done(Done),
    Chunk(Chunk),
    Body(BodyEvent),
}

/// Bytes waiting to be written: a head, then a body.
pub(crate) struct WBuf {
    pub(crate) head: Vec<u8>,
    pub(crate) body: OutBody,
    pub(crate) pos: usize,
}

pub(crate) enum OutBody {
    None,
    Bytes(Vec<u8>),
    Static(&'static [u8]),
}

impl OutBody {
    fn bytes(&self) -> &[u8] {
        match self {
            OutBody::None => &[],
            OutBody::Bytes(b) => b,
            OutBody::Static(b) => b,
        }
    }
}

impl WBuf {
    pub(crate) fn new(head: Vec<u8>) -> WBuf {
        WBuf {
            head,
            body: OutBody::None,
            pos: 0,
        }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.head.len() + self.body.bytes().len() - self.pos
    }

    pub(crate) fn append(&mut self, data: &[u8]) {
        if !matches!(self.body, OutBody::None) {
            let body = std::mem::replace(&mut self.body, OutBody::None);
            self.head.extend_from_slice(body.bytes());
        }
        if self.pos > 0 && self.pos == self.head.len() {
            self.head.clear();
            self.pos = 0;
        }
        self.head.extend_from_slice(data);
    }

    pub(crate) fn append_wbuf(&mut self, other: WBuf) {
        self.append(&other.head[other.pos.min(other.head.len())..]);
        let body = other.body.bytes();
        let skip = other.pos.saturating_sub(other.head.len());
        self.append(&body[skip..]);
    }

    /// Write what the socket takes. `Ok(true)`: all written; `Ok(false)`:
    /// the socket is full (a writable event will follow).
    pub(crate) fn flush<W: Write>(&mut self, w: &mut W) -> io::Result<bool> {
        loop {
            let hl = self.head.len();
            let body = self.body.bytes();
            let (res, wanted) = if self.pos < hl {
                if body.is_empty() {
                    (w.write(&self.head[self.pos..]), hl - self.pos)
                } else {
                    let bufs = [IoSlice::new(&self.head[self.pos..]), IoSlice::new(body)];
                    (w.write_vectored(&bufs), hl - self.pos + body.len())
                }
            } else {
                let off = self.pos - hl;
                (w.write(&body[off..]), body.len() - off)
            };
            match res {
                Ok(0) if wanted > 0 => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.pos += n;
                    if n == wanted {
                        return Ok(true);
                    }
                    // A short write means the send buffer is full.
                    return Ok(false);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// A response produced by the app.
pub(crate) struct Done {
    pub(crate) token: u32,
    pub(crate) generation: u32,
    pub(crate) out: WBuf,
    pub(crate) close: bool,
    pub(crate) stream: Option<Box<StreamResp>>,
    /// The request head, back for reuse.
    pub(crate) recycle: Option<(Vec<u8>, Vec<HeaderSpan>)>,
}

/// A piece of a streamed response. `stream` is `None` when it ended.
pub(crate) struct Chunk {
    pub(crate) token: u32,
    pub(crate) generation: u32,
    pub(crate) data: Vec<u8>,
    pub(crate) stream: Option<Box<StreamResp>>,
    pub(crate) close: bool,
}

impl Shared {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        app: Arc<dyn App>,
        stats: Arc<WorkerStats>,
        logger: slog::Logger,
        access: Option<AccessSink>,
        metrics: Metrics,
        waker: Arc<mio::Waker>,
        threads: usize,
        epoch: Instant,
    ) -> Shared {
        Shared {
            app,
            stats,
            logger,
            access,
            metrics,
            msgs: Mutex::new(Vec::new()),
            waker,
            tasks: Mutex::new(Tasks::default()),
            task_cond: Condvar::new(),
            queued: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            busy_since: (0..threads).map(|_| AtomicU64::new(0)).collect(),
            epoch,
            pid: std::process::id(),
        }
    }

    /// Hand a message to the loop.
    pub(crate) fn send(&self, msg: Msg) {
        let mut q = lock(&self.msgs);
        let was_empty = q.is_empty();
        q.push(msg);
        drop(q);
        if was_empty {
            let _ = self.waker.wake();
        }
    }

    /// Take every message sent so far (swapping with `into`).
    pub(crate) fn take_msgs(&self, into: &mut Vec<Msg>) {
        let mut q = lock(&self.msgs);
        std::mem::swap(&mut *q, into);
    }

    pub(crate) fn submit(&self, task: Task) {
        let mut t = lock(&self.tasks);
        t.q.push_back(task);
        self.queued.store(t.q.len(), Relaxed);
        let wake = t.idle > 0;
        drop(t);
        if wake {
            self.task_cond.notify_one();
        }
    }

    pub(crate) fn stop_pool(&self) {
        let mut t = lock(&self.tasks);
        t.stop = true;
        t.q.clear();
        drop(t);
        self.task_cond.notify_all();
    }

    fn next_task(&self) -> Option<Task> {
        let mut t = lock(&self.tasks);
        loop {
            if t.stop {
                return None;
            }
            if let Some(task) = t.q.pop_front() {
                self.queued.store(t.q.len(), Relaxed);
                return Some(task);
            }
            t.idle += 1;
            t = self.task_cond.wait(t).unwrap_or_else(|e| e.into_inner());
            t.idle -= 1;
        }
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Whether some pool thread is idle or started its task within `timeout`
    /// (always, for a zero `timeout`).
    pub(crate) fn pool_healthy(&self, now_ms: u64, timeout_ms: u64) -> bool {
        timeout_ms == 0
            || self.busy_since.iter().any(|b| {
                let v = b.load(Relaxed);
                v == 0 || v == WAITING_FOR_CLIENT || v - 1 + timeout_ms > now_ms
            })
    }
}

/// Start `threads` pool threads.
pub(crate) fn spawn(shared: &Arc<Shared>, threads: usize) -> io::Result<()> {
    for i in 0..threads {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name(format!("ferrocorn-pool-{i}"))
            .spawn(move || pool_thread(&shared, i))?;
    }
    Ok(())
}

fn pool_thread(shared: &Shared, i: usize) {
    BUSY_CLOCK.with(|c| {
        *c.borrow_mut() = Some(BusyClock {
            slots: shared.busy_since.clone(),
            index: i,
            epoch: shared.epoch,
        });
    });
    while let Some(task) = shared.next_task() {
        shared.busy_since[i].store(shared.now_ms() + 1, Relaxed);
        let n = shared.stats.active_threads.fetch_add(1, Relaxed) + 1;
        shared.metrics.active_threads(n);
        let msg = match task {
            Task::Call(job) => run_call(shared, job),
            Task::Pull(pull) => run_pull(shared, pull),
        };
        let n = shared.stats.active_threads.fetch_sub(1, Relaxed) - 1;
        shared.metrics.active_threads(n);
        shared.busy_since[i].store(0, Relaxed);
        shared.send(msg);
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = p.downcast_ref::<&str>() {
        s
    } else if let Some(s) = p.downcast_ref::<String>() {
        s
    } else {
        "panic"
    }
}

/// Run the app for one request on the calling (event-loop) thread, counted
/// as an active thread while it runs, as a pool thread would be.
pub(crate) fn run_inline(shared: &Shared, job: Job) -> Msg {
    let n = shared.stats.active_threads.fetch_add(1, Relaxed) + 1;
    shared.metrics.active_threads(n);
    let msg = run_call(shared, job);
    let n = shared.stats.active_threads.fetch_sub(1, Relaxed) - 1;
    shared.metrics.active_threads(n);
    msg
}

/// Run the app for one request and serialize its response.
pub(crate) fn run_call(shared: &Shared, mut job: Job) -> Msg {
    let result = catch_unwind(AssertUnwindSafe(|| {
        let mut req = Request {
            head: &job.head,
            body: &mut job.body,
            peer: job.peer,
            local: job.local,
        };
        shared.app.call(&mut req)
    }));
    let mut resp = match result {
        Ok(r) => r,
        Err(payload) => {
            slog::error!(shared.logger, "Error handling request {}", job.head.target();
                "method" => job.head.method(), "panic" => panic_message(&*payload));
            // Dropping a payload may itself panic.
            let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
            Response::text(500, "Internal Server Error\n")
        }
    };
    let (body_done, body_err) = job.body.finish();
    if let Some(status) = body_err.and_then(|e| e.status()) {
        resp = Response::text(status, &format!("{}\n", reason(status)));
    }
    if let Some(why) = resp.invalid.take() {
        slog::error!(
            shared.logger,
            "Error handling request {}: {}",
            job.head.target(),
            why
        );
        resp = Response::text(500, "Internal Server Error\n");
    }
    let keep_alive =
        job.keep_alive && body_done && body_err.is_none() && !shared.draining.load(Relaxed);
    let head_req = job.head.method() == "HEAD";
    let version = job.head.head.version;
    let status = resp.status();
    let mut out = std::mem::take(&mut job.out);
    let s = serialize(resp, head_req, version, keep_alive, &mut out);
    let mut wbuf = WBuf::new(out);
    wbuf.body = s.body;
    let (stream, recycle) = match s.stream {
        Some((iter, chunked, remaining)) => {
            let ctx = Box::new(LogCtx {
                head: job.head,
                peer: job.peer,
                resp_headers: s.app_headers,
                start: job.start,
            });
            let stream = Box::new(StreamResp {
                iter,
                chunked,
                remaining,
                sent: 0,
                status,
                ctx,
            });
            (Some(stream), None)
        }
        None => {
            finish_request(
                shared,
                &job.head,
                job.peer,
                status,
                s.body_len,
                &s.app_headers,
                job.start,
            );
            (None, Some((job.head.buf, job.head.headers)))
        }
    };
    Msg::Done(Done {
        token: job.token,
        generation: job.generation,
        out: wbuf,
        close: s.close,
        stream,
        recycle,
    })
}

/// Produce the next piece of a streamed response.
pub(crate) fn run_pull(shared: &Shared, mut pull: Pull) -> Msg {
    let mut data = Vec::new();
    let stream = &mut pull.stream;
    // Skip empty items (an empty chunk would end a chunked body).
    let item = loop {
        match catch_unwind(AssertUnwindSafe(|| stream.iter.next())) {
            Ok(Some(Ok(v))) if v.is_empty() => continue,
            Ok(item) => break Ok(item),
            Err(payload) => {
                let msg = panic_message(&*payload).to_owned();
                let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
                break Err(msg);
            }
        }
    };
    // None: the stream goes on; Some(close): it ended (close the connection
    // after this chunk if `close`).
    let ended = match item {
        Ok(Some(Ok(mut v))) => {
            let mut close = false;
            if let Some(rem) = stream.remaining.as_mut() {
                if v.len() as u64 > *rem {
                    slog::error!(
                        shared.logger,
                        "response body longer than its Content-Length"
                    );
                    v.truncate(*rem as usize);
                    close = true;
                }
                *rem -= v.len() as u64;
            }
            stream.sent += v.len() as u64;
            if stream.chunked {
                data.reserve(v.len() + 20);
                let _ = write!(data, "{:x}\r\n", v.len());
                data.extend_from_slice(&v);
                data.extend_from_slice(b"\r\n");
            } else {
                data = v;
            }
            close.then_some(true)
        }
        Ok(None) => {
            let mut close = false;
            if stream.chunked {
                data.extend_from_slice(b"0\r\n\r\n");
            }
            if stream.remaining.is_some_and(|r| r > 0) {
                slog::error!(
                    shared.logger,
                    "response body shorter than its Content-Length"
                );
                close = true;
            }
            Some(close)
        }
        Ok(Some(Err(e))) => {
            slog::error!(shared.logger, "Error streaming response: {}", e);
            Some(true)
        }
        Err(msg) => {
            slog::error!(shared.logger, "Error streaming response"; "panic" => msg);
            Some(true)
        }
    };
    let (stream, close) = match ended {
        None => (Some(pull.stream), false),
        Some(close) => {
            end_stream(shared, &pull.stream);
            (None, close)
        }
    };
    Msg::Chunk(Chunk {
        token: pull.token,
        generation: pull.generation,
        data,
        stream,
        close,
    })
}

fn end_stream(shared: &Shared, stream: &StreamResp) {
    let ctx = &stream.ctx;
    finish_request(
        shared,
        &ctx.head,
        ctx.peer,
        stream.status,
        Some(stream.sent),
        &ctx.resp_headers,
        ctx.start,
    );
}

/// Access log and request metrics for one answered request.
fn finish_request(
    shared: &Shared,
    head: &OwnedHead,
    peer: Option<SocketAddr>,
    status: u16,
    bytes: Option<u64>,
    resp_headers: &[u8],
    start: Instant,
) {
    let took = start.elapsed();
    shared.metrics.request(head.method(), status, took);
    if let Some(access) = &shared.access {
        // Headers only when the format shows them, on the stack when few.
        let format = access.format();
        let (mut req_stack, mut req_heap, mut resp_stack, mut resp_heap);
        let req_headers = if format.uses_request_headers() {
            (req_stack, req_heap) = ([("", &b""[..]); 32], Vec::new());
            collect_small(head.headers(), &mut req_stack, &mut req_heap)
        } else {
            &[]
        };
        let resp_headers = if format.uses_response_headers() {
            (resp_stack, resp_heap) = ([("", &b""[..]); 16], Vec::new());
            collect_small(header_lines(resp_headers), &mut resp_stack, &mut resp_heap)
        } else {
            &[]
        };
        access.log(&Record {
            remote: peer,
            method: head.method(),
            target: head.target(),
            path: head.path(),
            query: head.query(),
            version: head.head.version.as_str(),
            status,
            response_bytes: bytes,
            request_time: took,
            request_headers: req_headers,
            response_headers: resp_headers,
            pid: shared.pid,
        });
    }
}

/// The items of `it`, in `stack` when they fit, else in `heap`.
fn collect_small<'a, T: Copy>(
    mut it: impl Iterator<Item = T>,
    stack: &'a mut [T],
    heap: &'a mut Vec<T>,
) -> &'a [T] {
    let mut n = 0;
    while let Some(x) = it.next() {
        if n == stack.len() {
            heap.extend_from_slice(stack);
            heap.push(x);
            heap.extend(it);
            return heap;
        }
        stack[n] = x;
        n += 1;
    }
    &stack[..n]
}

pub(crate) struct Serialized {
    pub(crate) body: OutBody,
    pub(crate) body_len: Option<u64>,
    pub(crate) close: bool,
    pub(crate) stream: Option<(BodyStream, bool, Option<u64>)>,
    pub(crate) app_headers: Vec<u8>,
}

fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

fn status_line(out: &mut Vec<u8>, status: u16, phrase: Option<&str>) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_u64(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(phrase.unwrap_or(reason(status)).as_bytes());
    out.extend_from_slice(b"\r\n");
}

pub(crate) const SERVER: &[u8] = b"Server: ferrocorn\r\n";

/// Write the response head into `out` and decide the body framing.
pub(crate) fn serialize(
    resp: Response,
    head_req: bool,
    version: Version,
    keep_alive: bool,
    out: &mut Vec<u8>,
) -> Serialized {
    let mut status = resp.status();
    let mut phrase = resp.reason.as_deref();
    if !(100..=999).contains(&status) {
        status = 500;
        phrase = None;
    }
    let no_body = status < 200 || status == 204 || status == 304;
    let mut close = !keep_alive || resp.close;
    out.clear();
    status_line(out, status, phrase);
    if !resp.has_server {
        out.extend_from_slice(SERVER);
    }
    if !resp.has_date {
        out.extend_from_slice(b"Date: ");
        date::append_date(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(&resp.head);
    let mut stream = None;
    let mut body_len = None;
    let body = match resp.body {
        ResponseBody::Stream(iter) => {
            if no_body {
                body_len = Some(0);
            } else if let Some(n) = resp.content_length {
                out.extend_from_slice(b"Content-Length: ");
                push_u64(out, n);
                out.extend_from_slice(b"\r\n");
                if head_req {
                    body_len = Some(0);
                } else {
                    stream = Some((iter, false, Some(n)));
                }
            } else if head_req {
                body_len = Some(0);
                if version == Version::Http11 {
                    out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
                }
            } else if version == Version::Http11 {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
                stream = Some((iter, true, None));
            } else {
                // HTTP/1.0 without a length: the close delimits the body.
                close = true;
                stream = Some((iter, false, None));
            }
            ResponseBody::Empty
        }
        other => {
            let len = other.bytes().len() as u64;
            if no_body {
                body_len = Some(0);
            } else {
                let advertised = if head_req {
                    resp.content_length.unwrap_or(len)
                } else {
                    len
                };
                out.extend_from_slice(b"Content-Length: ");
                push_u64(out, advertised);
                out.extend_from_slice(b"\r\n");
                body_len = Some(if head_req { 0 } else { len });
            }
            if head_req || no_body {
                ResponseBody::Empty
            } else {
                other
            }
        }
    };
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if version == Version::Http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    let body = match body {
        ResponseBody::Bytes(b) if b.len() <= COPY_BODY_MAX => {
            out.extend_from_slice(&b);
            OutBody::None
        }
        ResponseBody::Static(b) if b.len() <= COPY_BODY_MAX => {
            out.extend_from_slice(b);
            OutBody::None
        }
        ResponseBody::Bytes(b) => OutBody::Bytes(b),
        ResponseBody::Static(b) => OutBody::Static(b),
        _ => OutBody::None,
    };
    Serialized {
        body,
        body_len,
        close,
        stream,
        app_headers: resp.head,
    }
}

/// A complete error response (the connection closes after it).
pub(crate) fn error_response(status: u16, why: &str) -> Vec<u8> {
    let body = format!("{}\n", if why.is_empty() { reason(status) } else { why });
    let mut out = Vec::with_capacity(160 + body.len());
    status_line(&mut out, status, None);
    out.extend_from_slice(SERVER);
    out.extend_from_slice(b"Date: ");
    date::append_date(&mut out);
    out.extend_from_slice(
        b"\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ",
    );
    push_u64(&mut out, body.len() as u64);
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::{Response, Version, collect_small, serialize};

    fn head_of(resp: Response) -> String {
        let mut out = Vec::new();
        serialize(resp, false, Version::Http11, true, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_apps_reason_phrase_is_sent() {
        let head = head_of(Response::new(299).reason_phrase("My Own Reason"));
        assert!(head.starts_with("HTTP/1.1 299 My Own Reason\r\n"), "{head}");
        let head = head_of(Response::new(200));
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        // A phrase that would split the response is the app's error.
        let resp = Response::new(200).reason_phrase("OK\r\nX-Evil: 1");
        assert!(resp.invalid.is_some());
        // Not for a status the worker replaces.
        let head = head_of(Response::new(1000).reason_phrase("Weird"));
        assert!(
            head.starts_with("HTTP/1.1 500 Internal Server Error\r\n"),
            "{head}"
        );
    }

    #[test]
    fn collect_small_keeps_order_on_the_stack_and_beyond() {
        for n in [0usize, 1, 3, 4, 5, 40] {
            let mut stack = [0usize; 4];
            let mut heap = Vec::new();
            let got = collect_small(0..n, &mut stack, &mut heap).to_vec();
            assert_eq!(got, (0..n).collect::<Vec<_>>(), "{n} items");
            assert_eq!(
                heap.is_empty(),
                n <= 4,
                "{n} items: heap used only past the stack"
            );
        }
    }
}
