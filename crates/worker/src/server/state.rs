//! A connection's state: where its exchange is, how it closes, which
//! deadline runs, what the read side saw, the body being fed; as enums
//! that leave no room for a combination that means nothing.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;

use mio::net::{TcpStream, UnixStream};

use crate::buf::Buf;
use crate::msg::{StreamResp, Window};
use crate::parse::ChunkedDecoder;
use crate::pool::lock;
use crate::request::{BodyChan, BodyError};
use crate::write_buf::WriteBuf;

/// Whether [`Server::drive`](super::Server::drive) goes on with a connection after a step.
pub(super) enum Step {
    /// The state changed: look again.
    Continue,
    /// Nothing to do until an event, a message or a timer.
    Stop,
}

/// Where a connection is in its current exchange (request and response).
pub(super) enum Exchange {
    /// No request in progress: the next head is read and parsed.
    Idle,
    /// A request is with the app; a body it reads is fed while it arrives.
    InApp { feed: Option<Box<Feed>> },
    /// The app answered with a streamed response: its next piece is to be
    /// pulled when the written bytes run low.
    Streaming(Box<StreamResp>),
    /// The pool pulls the next pieces of the streamed response, as far
    /// ahead of the client as the window lets it.
    Pulling(Arc<Window>),
}

/// What happens once the pending output is written. The order matters: a
/// connection only moves up ([`Conn::close_after`]).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(super) enum Closing {
    /// Read the next request (keep-alive).
    No,
    /// Close; a lingering close if unread input is buffered.
    AfterWrite,
    /// Shut the write side and drain input before closing.
    LingerAfterWrite,
    /// Lingering: write side shut, dropping input until EOF.
    Lingering,
}

/// Which deadline runs while a connection waits for a request head.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum HeadTimer {
    /// Neither (a request is in progress, or the deadline is another one).
    None,
    /// The keep-alive deadline, or the first-byte one of a new connection.
    Idle,
    /// The head deadline: part of a head arrived.
    Head,
}

/// The read side as the edge-triggered poll left it.
#[derive(Clone, Copy, Default, Debug)]
pub(super) struct ReadSide {
    /// The socket may have bytes to read (no WouldBlock since the last event).
    pub(super) readable: bool,
    /// The poll reported the peer's FIN (EPOLLRDHUP): a short read no longer
    /// means the socket is drained (the FIN came with the same edge as the
    /// last data and brings no new one), so reads go on until EOF or
    /// WouldBlock.
    pub(super) peer_hup: bool,
    /// The peer closed its write side (a read returned 0).
    pub(super) eof: bool,
}

impl ReadSide {
    /// A read of `n` bytes where `want` fitted.
    pub(super) fn got(&mut self, n: usize, want: usize) {
        if n == 0 {
            self.eof = true;
            self.readable = false;
        } else if n < want && !self.peer_hup {
            // A short read drained the socket; the next arrival brings a
            // new edge.
            self.readable = false;
        }
    }
}

pub(super) enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
    /// In-memory bytes for the state machine's unit tests.
    #[cfg(test)]
    Mem(super::tests::MemIo),
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.read(buf),
            Sock::Unix(s) => s.read(buf),
            #[cfg(test)]
            Sock::Mem(s) => s.read(buf),
        }
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.write(buf),
            Sock::Unix(s) => s.write(buf),
            #[cfg(test)]
            Sock::Mem(s) => s.write(buf),
        }
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.write_vectored(bufs),
            Sock::Unix(s) => s.write_vectored(bufs),
            #[cfg(test)]
            Sock::Mem(s) => s.write_vectored(bufs),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Sock {
    /// Reads up to `max` bytes and appends them to `buf` (see
    /// [`crate::sys::read_append`]).
    pub(super) fn read_append(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        match self {
            Sock::Tcp(s) => crate::sys::read_append(s.as_raw_fd(), buf, max),
            Sock::Unix(s) => crate::sys::read_append(s.as_raw_fd(), buf, max),
            #[cfg(test)]
            Sock::Mem(s) => {
                let start = buf.len();
                buf.resize(start + max, 0);
                let r = s.read(&mut buf[start..]);
                buf.truncate(start + *r.as_ref().unwrap_or(&0));
                r
            }
        }
    }

    pub(super) fn shutdown_write(&self) {
        let _ = match self {
            Sock::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
            Sock::Unix(s) => s.shutdown(std::net::Shutdown::Write),
            #[cfg(test)]
            Sock::Mem(s) => {
                s.shutdown_write();
                Ok(())
            }
        };
    }
}

pub(super) struct Conn {
    pub(super) sock: Sock,
    pub(super) generation: u32,
    pub(super) exchange: Exchange,
    pub(super) closing: Closing,
    pub(super) timer: HeadTimer,
    pub(super) read: ReadSide,
    /// Bytes arrived since the last parse attempt.
    pub(super) unparsed: bool,
    /// The loop answered the held request's `Expect: 100-continue`.
    pub(super) continue_sent: bool,
    /// Loop-epoch milliseconds; 0 = none.
    pub(super) deadline: u64,
    /// The earliest heap entry for this connection; 0 = none.
    pub(super) timer_at: u64,
    pub(super) rbuf: Option<Buf>,
    pub(super) wbuf: Option<WriteBuf>,
    pub(super) peer: Option<SocketAddr>,
    pub(super) local: Option<SocketAddr>,
    /// Loop-epoch milliseconds when the buffered bytes began to arrive (the
    /// start of a refused request, for its duration).
    pub(super) head_at: u64,
}

impl Conn {
    pub(super) fn new(
        sock: Sock,
        generation: u32,
        peer: Option<SocketAddr>,
        local: Option<SocketAddr>,
    ) -> Conn {
        Conn {
            sock,
            generation,
            exchange: Exchange::Idle,
            closing: Closing::No,
            timer: HeadTimer::Idle,
            // Data may already be there: try reading at once.
            read: ReadSide {
                readable: true,
                ..ReadSide::default()
            },
            unparsed: false,
            continue_sent: false,
            deadline: 0,
            timer_at: 0,
            rbuf: None,
            wbuf: None,
            peer,
            local,
            head_at: 0,
        }
    }

    /// Close once the output is written (at least; a lingering close stays).
    pub(super) fn close_after(&mut self, how: Closing) {
        self.closing = self.closing.max(how);
    }

    /// The body being fed to the app's reader.
    pub(super) fn feed(&mut self) -> Option<&mut Feed> {
        match &mut self.exchange {
            Exchange::InApp { feed: Some(f) } => Some(f),
            _ => None,
        }
    }

    /// Stop feeding the body (the feed is returned to be failed or dropped).
    pub(super) fn take_feed(&mut self) -> Option<Box<Feed>> {
        match &mut self.exchange {
            Exchange::InApp { feed } => feed.take(),
            _ => None,
        }
    }

    /// Bytes are buffered (part of a request, or pipelined ones).
    pub(super) fn has_input(&self) -> bool {
        self.rbuf.as_ref().is_some_and(|b| !b.is_empty())
    }

    /// No request in progress, nothing to write, nothing buffered.
    pub(super) fn is_idle(&self) -> bool {
        matches!(self.exchange, Exchange::Idle)
            && self.closing == Closing::No
            && self.wbuf.is_none()
            && !self.has_input()
    }
}

/// A streamed request body being fed to a reader.
pub(super) struct Feed {
    pub(super) chan: Arc<BodyChan>,
    pub(super) kind: FeedKind,
    pub(super) received: u64,
    /// The loop's vector for bytes read straight from the socket, swapped
    /// with the reader's when the reader has taken all before it.
    pub(super) incoming: Vec<u8>,
    /// `100 Continue` is owed on the first read.
    pub(super) expect: bool,
}

pub(super) enum FeedKind {
    Length(u64),
    Chunked(ChunkedDecoder),
}

impl Feed {
    /// Tell the reader the body ends with `e` (unless it already ended).
    pub(super) fn fail(&self, e: BodyError) {
        let mut st = lock(&self.chan.state);
        if !st.eof && st.error.is_none() {
            st.error = Some(e);
        }
        drop(st);
        self.chan.cond.notify_all();
    }
}
