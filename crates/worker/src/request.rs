//! What an [`App`](crate::App) sees of a request: the head and a body reader.

use std::collections::VecDeque;
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
    /// The bytes read and not yet taken: `chunks[0][pos..]`, then the
    /// other chunks whole. A large read is a chunk of its own, which the
    /// reader takes without a copy; smaller ones are appended to the last.
    chunks: VecDeque<Vec<u8>>,
    pos: usize,
    /// Bytes in `chunks` not yet taken.
    len: usize,
    /// An emptied chunk's vector, for the loop's next read.
    pub(crate) spare: Vec<u8>,
    pub(crate) eof: bool,
    pub(crate) error: Option<BodyError>,
    /// The reader has started reading (100-continue may be sent).
    pub(crate) started: bool,
    /// The loop stopped reading because the buffer is full.
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
/// A read of at least this many bytes becomes a chunk of its own (taken
/// by the reader without a copy); a smaller one is copied to the end of
/// the last chunk, so that a client sending in small pieces costs no more
/// than [`BODY_HIGH_WATER`] / this many chunks' capacity.
pub(crate) const CHUNK_MIN: usize = 32 * 1024;

impl ChanState {
    /// A channel holding `data` already.
    pub(crate) fn with(data: Vec<u8>) -> ChanState {
        let mut st = ChanState::default();
        st.push(data);
        st
    }

    pub(crate) fn buffered(&self) -> usize {
        self.len
    }

    /// Adds bytes read: `v` becomes a chunk if it holds at least
    /// [`CHUNK_MIN`] bytes or nothing is buffered, else it is copied to the
    /// last chunk and handed back empty for the next read.
    pub(crate) fn push(&mut self, mut v: Vec<u8>) -> Vec<u8> {
        self.len += v.len();
        match self.chunks.back_mut() {
            Some(last) if v.len() < CHUNK_MIN => {
                last.extend_from_slice(&v);
                v.clear();
                v
            }
            _ if v.is_empty() => v,
            _ => {
                self.chunks.push_back(v);
                Vec::new()
            }
        }
    }

    /// Lets `f` append bytes to the last chunk (a decoder's output).
    pub(crate) fn append<R>(&mut self, f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        if self.chunks.is_empty() {
            self.chunks.push_back(std::mem::take(&mut self.spare));
        }
        let last = self.chunks.back_mut().expect("pushed above");
        let before = last.len();
        let r = f(last);
        self.len += last.len() - before;
        if self.len == 0 {
            // Nothing was added to an empty chunk.
            self.spare = self.chunks.pop_back().unwrap_or_default();
        }
        r
    }

    /// Hands the unread part of the first chunk, `chunk[pos..]`, to
    /// `take`, which returns how many bytes it took; it may swap the
    /// chunk for an empty vector when it takes them all.
    fn take(&mut self, take: impl FnOnce(&mut Vec<u8>, usize) -> usize) -> usize {
        let Some(front) = self.chunks.front_mut() else {
            return 0;
        };
        let n = take(front, self.pos);
        self.pos += n;
        self.len -= n;
        if self.pos >= front.len() {
            let mut done = self.chunks.pop_front().expect("front");
            self.pos = 0;
            if done.capacity() > self.spare.capacity() {
                done.clear();
                self.spare = done;
            }
        }
        n
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
        self.transfer(buf.len(), |data, pos| {
            let n = (data.len() - pos).min(buf.len());
            buf[..n].copy_from_slice(&data[pos..pos + n]);
            n
        })
    }
}

impl Body {
    /// Appends up to `max` body bytes (at least one, 0 at the end) to `out`,
    /// blocking as [`Read::read`] does. Where `out` is empty and all the
    /// bytes waiting fit, the two vectors are swapped instead of copied:
    /// the reader gets the loop's buffer and the loop fills the reader's.
    pub fn read_append(&mut self, out: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        self.transfer(max, |data, pos| {
            if pos == 0 && out.is_empty() && data.len() <= max {
                std::mem::swap(out, data);
                return out.len();
            }
            let n = (data.len() - pos).min(max);
            out.extend_from_slice(&data[pos..pos + n]);
            n
        })
    }

    /// Hands the unread bytes, `data[pos..]` (never empty), to `take`,
    /// which returns how many it took; it may swap `data` for an empty
    /// vector when it takes them all.
    fn transfer(
        &mut self,
        max: usize,
        take: impl FnOnce(&mut Vec<u8>, usize) -> usize,
    ) -> io::Result<usize> {
        if max == 0 {
            return Ok(0);
        }
        match &mut self.inner {
            BodyInner::Empty => Ok(0),
            BodyInner::Full { data, pos } => {
                if *pos >= data.len() {
                    return Ok(0);
                }
                let n = take(data, *pos);
                *pos += n;
                if *pos >= data.len() {
                    data.clear();
                    *pos = 0;
                }
                Ok(n)
            }
            BodyInner::Stream(chan) => read_chan(chan, take),
        }
    }
}

fn read_chan(
    chan: &BodyChan,
    take: impl FnOnce(&mut Vec<u8>, usize) -> usize,
) -> io::Result<usize> {
    let mut st = chan.state.lock().unwrap_or_else(|e| e.into_inner());
    let mut notified = false;
    loop {
        if st.buffered() > 0 {
            let n = st.take(take);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A streamed body whose loop side is `state` (started, so that a read
    /// does not ask the loop for `100 Continue`).
    fn stream(data: &[u8], eof: bool) -> (Body, Arc<BodyChan>) {
        let chan = Arc::new(BodyChan {
            state: Mutex::new(ChanState {
                eof,
                started: true,
                ..ChanState::with(data.to_vec())
            }),
            cond: Condvar::new(),
            notify: Arc::new(|_| {}),
            token: 0,
            generation: 0,
        });
        (Body::stream(chan.clone()), chan)
    }

    #[test]
    fn read_append_swaps_all_that_waits_into_an_empty_vector() {
        let (mut body, chan) = stream(b"hello world", true);
        let mut mine = Vec::with_capacity(4096);
        let mine_ptr = mine.as_ptr();
        let mut out = Vec::new();
        std::mem::swap(&mut out, &mut mine);
        assert_eq!(body.read_append(&mut out, 1 << 20).unwrap(), 11);
        assert_eq!(out, b"hello world");
        // The reader's old vector is the loop's for its next read.
        let st = chan.state.lock().unwrap();
        assert_eq!((st.buffered(), st.chunks.len()), (0, 0));
        assert_eq!(st.spare.as_ptr(), mine_ptr);
        drop(st);
        let mut more = Vec::new();
        assert_eq!(body.read_append(&mut more, 1 << 20).unwrap(), 0);
    }

    #[test]
    fn read_append_copies_into_a_vector_holding_bytes_and_up_to_max() {
        let (mut body, chan) = stream(b"0123456789", true);
        let mut out = b"ab".to_vec();
        assert_eq!(body.read_append(&mut out, 4).unwrap(), 4);
        assert_eq!(out, b"ab0123");
        // Into an empty vector, but more waits than `max`: copied, not swapped.
        let mut out = Vec::new();
        assert_eq!(body.read_append(&mut out, 4).unwrap(), 4);
        assert_eq!(out, b"4567");
        assert_eq!(chan.state.lock().unwrap().pos, 8);
        assert_eq!(chan.state.lock().unwrap().buffered(), 2);
        // The rest, from a position past 0: copied.
        let mut out = Vec::new();
        assert_eq!(body.read_append(&mut out, 100).unwrap(), 2);
        assert_eq!(out, b"89");
        let st = chan.state.lock().unwrap();
        assert_eq!((st.buffered(), st.chunks.len(), st.pos), (0, 0, 0));
        drop(st);
        let mut buf = [0u8; 8];
        assert_eq!(body.read(&mut buf).unwrap(), 0);
    }

    #[test]
    fn large_reads_are_chunks_of_their_own_small_ones_are_appended() {
        let mut st = ChanState::default();
        let back = st.push(vec![1; CHUNK_MIN]);
        assert_eq!((back.capacity(), st.chunks.len()), (0, 1));
        // A small read is copied to the last chunk; its vector comes back.
        let back = st.push(vec![2; 100]);
        assert_eq!((back.len(), back.capacity(), st.chunks.len()), (0, 100, 1));
        // A client sending in small pieces adds no chunks.
        for _ in 0..1000 {
            st.push(vec![3; CHUNK_MIN - 1]);
        }
        assert_eq!(st.chunks.len(), 1);
        st.push(vec![4; CHUNK_MIN]);
        assert_eq!(st.chunks.len(), 2);
        assert_eq!(st.buffered(), 2 * CHUNK_MIN + 100 + 1000 * (CHUNK_MIN - 1));
        // A decoder's output goes to the last chunk; nothing added, nothing kept.
        st.append(|v| v.extend_from_slice(b"xy"));
        assert_eq!(
            st.chunks.back().map(|c| &c[c.len() - 3..]),
            Some(&[4, b'x', b'y'][..])
        );
        let mut empty = ChanState::default();
        empty.append(|_| ());
        assert_eq!((empty.chunks.len(), empty.buffered()), (0, 0));
        // A reader with an empty vector takes a whole chunk at a time.
        let (mut body, chan) = stream(b"", true);
        *chan.state.lock().unwrap() = ChanState {
            eof: true,
            started: true,
            ..st
        };
        let mut out = Vec::new();
        let first = body.read_append(&mut out, usize::MAX).unwrap();
        assert_eq!(first, CHUNK_MIN + 100 + 1000 * (CHUNK_MIN - 1));
        assert_eq!((out[0], out[CHUNK_MIN], out[first - 1]), (1, 2, 3));
        let mut out = Vec::new();
        assert_eq!(
            body.read_append(&mut out, usize::MAX).unwrap(),
            CHUNK_MIN + 2
        );
        assert_eq!(body.read_append(&mut Vec::new(), usize::MAX).unwrap(), 0);
    }

    #[test]
    fn read_append_of_a_body_in_memory() {
        let mut body = Body::from_bytes(b"abcdef".to_vec());
        let mut out = b"x".to_vec();
        assert_eq!(body.read_append(&mut out, 2).unwrap(), 2);
        let mut rest = Vec::new();
        assert_eq!(body.read_append(&mut rest, 100).unwrap(), 4);
        assert_eq!(
            (out.as_slice(), rest.as_slice()),
            (&b"xab"[..], &b"cdef"[..])
        );
        assert_eq!(body.read_append(&mut rest, 100).unwrap(), 0);
        assert_eq!(body.read_append(&mut Vec::new(), 0).unwrap(), 0);
        assert_eq!(Body::empty().read_append(&mut rest, 100).unwrap(), 0);
    }
}
