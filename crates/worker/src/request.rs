//! What an [`App`](crate::App) sees of a request: the head and a body reader.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};

use crate::parse::{Head, HeaderSpan, Version};

/// A parsed request head and the buffer it points into, owned by a job.
#[derive(Debug)]
pub(crate) struct OwnedHead {
    pub(crate) buf: Vec<u8>,
    pub(crate) head: Head,
    pub(crate) headers: Vec<HeaderSpan>,
}

impl OwnedHead {
    pub(crate) fn str_of(&self, span: crate::parse::Span) -> &str {
        // The parser only produces spans over ASCII tokens for the method,
        // target and header names (httparse validates them).
        std::str::from_utf8(span.get(&self.buf)).unwrap_or("")
    }
    pub(crate) fn method(&self) -> &str {
        self.str_of(self.head.method)
    }
    pub(crate) fn target(&self) -> &str {
        self.str_of(self.head.target)
    }
    pub(crate) fn path(&self) -> &str {
        self.str_of(self.head.path)
    }
    pub(crate) fn query(&self) -> &str {
        let t = self.head.target;
        let end = self.head.path.end;
        if end < t.end {
            self.str_of(crate::parse::Span {
                start: end + 1,
                end: t.end,
            })
        } else {
            ""
        }
    }
    pub(crate) fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.name.get(&self.buf).eq_ignore_ascii_case(name.as_bytes()))
            .map(|h| h.value.get(&self.buf))
    }
    pub(crate) fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.headers
            .iter()
            .map(|h| (self.str_of(h.name), h.value.get(&self.buf)))
    }
}

/// An HTTP request as given to [`App::call`](crate::App::call).
///
/// The head accessors return slices that live as long as the request, so a
/// handler may hold the path while it reads the body.
pub struct Request<'a> {
    pub(crate) head: &'a OwnedHead,
    pub(crate) body: &'a mut Body,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) local: Option<SocketAddr>,
}

impl<'a> Request<'a> {
    /// The method, `GET`.
    pub fn method(&self) -> &'a str {
        self.head.method()
    }
    /// The raw request target, `/search?q=rust`.
    pub fn target(&self) -> &'a str {
        self.head.target()
    }
    /// The path: the target up to the `?`, `/search` (for an absolute-form
    /// target `http://host/search?q`, also `/search`).
    pub fn path(&self) -> &'a str {
        self.head.path()
    }
    /// The target after the `?` (empty when none), `q=rust`.
    pub fn query(&self) -> &'a str {
        self.head.query()
    }
    /// The protocol version.
    pub fn version(&self) -> Version {
        self.head.head.version
    }
    /// Header fields in the order received (names as sent, values trimmed).
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        self.head.headers()
    }
    /// The first header field with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.head.header(name)
    }
    /// The client's address (`None` on a unix socket).
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }
    /// The address the connection was accepted on (`None` on a unix socket).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local
    }
    /// The request body, streamed from the connection as it is read.
    pub fn body(&mut self) -> &mut Body {
        self.body
    }
}

impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method())
            .field("target", &self.target())
            .field("version", &self.version())
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

/// Why a streamed body failed, decided by the event loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BodyError {
    /// Malformed chunked framing: 400.
    Framing(&'static str),
    /// Over `limit_request_body`: 413.
    TooLarge,
    /// The client sent nothing for `timeout`: 408.
    TimedOut,
    /// The client went away before the body ended.
    Eof,
    /// The connection was closed by the worker (stop).
    Aborted,
}

impl BodyError {
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            BodyError::Framing(_) => Some(400),
            BodyError::TooLarge => Some(413),
            BodyError::TimedOut => Some(408),
            BodyError::Eof => Some(400),
            BodyError::Aborted => None,
        }
    }
    fn to_io(self) -> io::Error {
        match self {
            BodyError::Framing(r) => io::Error::new(io::ErrorKind::InvalidData, r),
            BodyError::TooLarge => {
                io::Error::new(io::ErrorKind::InvalidData, "request body too large")
            }
            BodyError::TimedOut => {
                io::Error::new(io::ErrorKind::TimedOut, "request body timed out")
            }
            BodyError::Eof => io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "client closed the connection before the body ended",
            ),
            BodyError::Aborted => {
                io::Error::new(io::ErrorKind::ConnectionAborted, "connection closed")
            }
        }
    }
}

/// Shared between a pool thread reading a body and the loop feeding it.
pub(crate) struct BodyChan {
    pub(crate) state: Mutex<ChanState>,
    pub(crate) cond: Condvar,
    pub(crate) notify: Arc<dyn Fn(BodyEvent) + Send + Sync>,
    pub(crate) token: u32,
    pub(crate) generation: u32,
}

/// What a reader asks of the loop.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BodyEvent {
    pub(crate) token: u32,
    pub(crate) generation: u32,
}

#[derive(Default)]
pub(crate) struct ChanState {
    pub(crate) data: Vec<u8>,
    pub(crate) pos: usize,
    pub(crate) eof: bool,
    pub(crate) error: Option<BodyError>,
    /// The reader has started reading (100-continue may be sent).
    pub(crate) started: bool,
    /// The loop stopped reading because `data` is full.
    pub(crate) loop_paused: bool,
    /// The app returned: nobody reads any more.
    pub(crate) closed: bool,
    /// A reader waits on the condition variable.
    pub(crate) waiting: bool,
}

/// Bytes buffered for a reader before the loop stops reading the socket.
pub(crate) const BODY_HIGH_WATER: usize = 256 * 1024;
/// Bytes left in the buffer when a paused loop is asked to read again.
pub(crate) const BODY_LOW_WATER: usize = 64 * 1024;

impl ChanState {
    pub(crate) fn buffered(&self) -> usize {
        self.data.len() - self.pos
    }
}

/// A request body: [`Read`] it for the bytes, decoded (`Content-Length` or
/// chunked). Reading blocks while the client is sending; the first read of a
/// request with `Expect: 100-continue` sends `100 Continue`.
pub struct Body {
    inner: BodyInner,
}

enum BodyInner {
    Empty,
    Full { data: Vec<u8>, pos: usize },
    Stream(Arc<BodyChan>),
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            BodyInner::Empty => f.write_str("Body::Empty"),
            BodyInner::Full { data, pos } => {
                write!(f, "Body::Full({} bytes left)", data.len() - pos)
            }
            BodyInner::Stream(_) => f.write_str("Body::Stream"),
        }
    }
}

impl Body {
    /// An empty body.
    pub fn empty() -> Body {
        Body {
            inner: BodyInner::Empty,
        }
    }

    /// A body already in memory.
    pub fn from_bytes(data: Vec<u8>) -> Body {
        Body {
            inner: BodyInner::Full { data, pos: 0 },
        }
    }

    pub(crate) fn stream(chan: Arc<BodyChan>) -> Body {
        Body {
            inner: BodyInner::Stream(chan),
        }
    }

    /// Read the whole (rest of the) body into a vector.
    pub fn read_all(&mut self) -> io::Result<Vec<u8>> {
        let mut v = Vec::new();
        self.read_to_end(&mut v)?;
        Ok(v)
    }

    /// Whether the loop saw the end of the body's framing (the next request
    /// may follow on the connection). Also marks a streamed body closed.
    pub(crate) fn finish(&mut self) -> (bool, Option<BodyError>) {
        match &self.inner {
            BodyInner::Empty | BodyInner::Full { .. } => (true, None),
            BodyInner::Stream(chan) => {
                let mut st = chan.state.lock().unwrap_or_else(|e| e.into_inner());
                st.closed = true;
                // A paused loop must learn that nobody reads any more.
                let wake = st.loop_paused;
                st.loop_paused = false;
                let r = (st.eof, st.error);
                drop(st);
                if wake {
                    (chan.notify)(BodyEvent {
                        token: chan.token,
                        generation: chan.generation,
                    });
                }
                r
            }
        }
    }
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.inner {
            BodyInner::Empty => Ok(0),
            BodyInner::Full { data, pos } => {
                let n = buf.len().min(data.len() - *pos);
                buf[..n].copy_from_slice(&data[*pos..*pos + n]);
                *pos += n;
                Ok(n)
            }
            BodyInner::Stream(chan) => read_chan(chan, buf),
        }
    }
}

fn read_chan(chan: &BodyChan, buf: &mut [u8]) -> io::Result<usize> {
    if buf.is_empty() {
        return Ok(0);
    }
    let mut st = chan.state.lock().unwrap_or_else(|e| e.into_inner());
    let mut notified = false;
    loop {
        let buffered = st.buffered();
        if buffered > 0 {
            let n = buf.len().min(buffered);
            buf[..n].copy_from_slice(&st.data[st.pos..st.pos + n]);
            st.pos += n;
            if st.pos == st.data.len() {
                st.data.clear();
                st.pos = 0;
            }
            let wake = st.loop_paused && st.buffered() < BODY_LOW_WATER;
            if wake {
                st.loop_paused = false;
            }
            drop(st);
            if wake {
                (chan.notify)(BodyEvent {
                    token: chan.token,
                    generation: chan.generation,
                });
            }
            return Ok(n);
        }
        if let Some(e) = st.error {
            return Err(e.to_io());
        }
        if st.eof {
            return Ok(0);
        }
        if !st.started || (st.loop_paused && !notified) {
            // First read: the loop sends 100 Continue if the client waits
            // for it, and reads on.
            st.started = true;
            st.loop_paused = false;
            notified = true;
            drop(st);
            (chan.notify)(BodyEvent {
                token: chan.token,
                generation: chan.generation,
            });
            st = chan.state.lock().unwrap_or_else(|e| e.into_inner());
            continue;
        }
        st.waiting = true;
        let wait = crate::busy::ClientWait::begin();
        st = chan.cond.wait(st).unwrap_or_else(|e| e.into_inner());
        drop(wait);
        st.waiting = false;
    }
}
