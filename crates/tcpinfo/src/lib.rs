//! Read Linux `struct tcp_info` from any socket: every field, typed, and the
//! listen queue of a listening socket.
//!
//! # Brief overview
//!
//! - [`TcpInfo::of`] asks the kernel for its whole `struct tcp_info`
//!   (`getsockopt(IPPROTO_TCP, TCP_INFO)`) and decodes every field with its
//!   unit: times as [`Duration`](std::time::Duration)s, states as enums,
//!   option bits as [`TcpOptions`]. Older kernels return shorter structs;
//!   the fields they did not fill are `None`, never zero, and
//!   [`TcpInfo::len`] says how many bytes came back. A newer kernel's longer
//!   struct is fine too: the fields this crate does not know are ignored.
//! - [`TcpInfo::from_bytes`] is the decoder on its own, a pure function from
//!   bytes, for captured buffers (and for tests).
//! - [`listen_queue`] reads just the two counters of a listening socket:
//!   connections waiting for `accept` and the backlog limit. It is cheap
//!   (one `getsockopt` of 32 bytes, no allocation), so it can run on every
//!   metrics scrape. On a socket that is not listening it returns an
//!   [`InvalidInput`](std::io::ErrorKind::InvalidInput) error.
//! - [`accept_queue_wait`] reads, on a connection just returned by
//!   `accept`, a lower bound of how long it waited in the accept queue (one
//!   `getsockopt` of 60 bytes).
//!
//! On other systems than Linux everything compiles and the socket functions
//! return [`Unsupported`](std::io::ErrorKind::Unsupported) errors.
//!
//! # Example
//!
//! ```
//! use std::net::{TcpListener, TcpStream};
//! use ferrocorn_tcpinfo::{listen_queue, TcpInfo, TcpState};
//!
//! # fn main() -> std::io::Result<()> {
//! # if !cfg!(target_os = "linux") { return Ok(()); }
//! let listener = TcpListener::bind("127.0.0.1:0")?;
//! let client = TcpStream::connect(listener.local_addr()?)?;
//!
//! // The connection waits in the accept queue until someone accepts it.
//! let queue = listen_queue(&listener)?;
//! assert!(queue.queued <= 1);
//! assert!(queue.capacity > 0);
//!
//! let info = TcpInfo::of(&client)?;
//! assert_eq!(info.state, Some(TcpState::Established));
//! println!("rtt {:?}, cwnd {:?} segments", info.rtt, info.snd_cwnd);
//!
//! // A connected socket has no listen queue.
//! let err = listen_queue(&client).unwrap_err();
//! assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod info;
mod sys;
mod types;

use std::io;
use std::os::fd::AsFd;

pub use info::TcpInfo;
pub use types::{
    AccEcnFailMode, AccEcnOptSeen, CaState, EcnMode, FastOpenClientFail, TcpOptions, TcpState,
};

/// The accept queue of a listening TCP socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenQueue {
    /// Connections fully established and waiting for `accept`
    /// (`tcpi_unacked` on a listening socket).
    pub queued: u32,
    /// How many may wait: the `listen` backlog as the kernel clamped it
    /// (to `net.core.somaxconn`); `tcpi_sacked` on a listening socket.
    /// The kernel drops new connection attempts once `queued` exceeds it.
    pub capacity: u32,
}

/// Bytes offered to the kernel by [`TcpInfo::of`]: more than any known
/// `struct tcp_info`, so a newer kernel's longer struct is not cut short
/// before the fields this crate knows.
const ASK_LEN: usize = 512;

impl TcpInfo {
    /// Reads `struct tcp_info` of a TCP socket (connected, listening or
    /// other) and decodes every field the kernel filled.
    ///
    /// Errors are the kernel's: for instance a Unix socket gives
    /// `EOPNOTSUPP`, a file `ENOTSOCK`. On non-Linux systems:
    /// [`io::ErrorKind::Unsupported`].
    pub fn of(socket: &(impl AsFd + ?Sized)) -> io::Result<TcpInfo> {
        let mut buf = [0u8; ASK_LEN];
        let len = sys::tcp_info(socket.as_fd(), &mut buf)?;
        Ok(TcpInfo::from_bytes(&buf[..len]))
    }
}

/// Reads the accept queue of a listening TCP socket: how many connections
/// wait for `accept` and how many may.
///
/// One `getsockopt` that copies only the first 32 bytes of `struct
/// tcp_info`, into a stack buffer.
///
/// # Errors
///
/// - [`io::ErrorKind::InvalidInput`] when the socket is not in `LISTEN`
///   state, naming the state it is in ("socket is not listening (state
///   ESTABLISHED)");
/// - the kernel's error when the descriptor is not a TCP socket;
/// - [`io::ErrorKind::Unsupported`] on non-Linux systems.
pub fn listen_queue(socket: &(impl AsFd + ?Sized)) -> io::Result<ListenQueue> {
    let mut buf = [0u8; info::LISTEN_QUEUE_LEN];
    let len = sys::tcp_info(socket.as_fd(), &mut buf)?;
    match info::listen_fields(&buf[..len]) {
        (Some(TcpState::Listen), Some(queued), Some(capacity)) => {
            Ok(ListenQueue { queued, capacity })
        }
        (Some(TcpState::Listen), _, _) | (None, _, _) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the kernel returned only {len} bytes of tcp_info, too few for the listen queue"
            ),
        )),
        (Some(state), _, _) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("socket is not listening (state {state})"),
        )),
    }
}

/// How long a connection just returned by `accept` waited in the listen
/// (accept) queue, at least.
///
/// The kernel keeps two timestamps on every TCP socket: when the peer last
/// sent data (`tcpi_last_data_recv`) and when it last sent an ACK
/// (`tcpi_last_ack_recv`), both reported as milliseconds since. On an
/// accepted socket both start when the handshake completes, which is when
/// the connection enters the accept queue, and move forward with each
/// segment the client sends. So right after `accept`:
///
/// - a client that sent nothing while queued gives the time since its
///   handshake's last ACK: the whole wait;
/// - a client that sent its request while queued gives the time since its
///   last segment: less than the wait by however long it took to send.
///
/// The result is the later of the two: a lower bound of the wait, never an
/// overestimate. Read later in a connection's life, it measures how long
/// the client has been silent instead.
///
/// Resolution: the kernel stamps in jiffies and converts to milliseconds,
/// so the value has a granularity of 1 to 10 ms (`CONFIG_HZ` 1000 to 100;
/// 4 ms at Debian's 250) and a connection accepted at once reads 0 to a few
/// milliseconds.
///
/// One `getsockopt` that copies the first 60 bytes of `struct tcp_info`
/// into a stack buffer (`benches/accept_queue_wait.rs` measures it against
/// `accept` itself).
///
/// # Errors
///
/// - the kernel's when the descriptor is not a TCP socket (a Unix socket
///   gives `EOPNOTSUPP`: it has no TCP_INFO);
/// - [`io::ErrorKind::InvalidData`] when the kernel returned too few bytes;
/// - [`io::ErrorKind::Unsupported`] on non-Linux systems.
///
/// # Example
///
/// ```
/// use std::net::{TcpListener, TcpStream};
/// use std::time::Duration;
///
/// # fn main() -> std::io::Result<()> {
/// # if !cfg!(target_os = "linux") { return Ok(()); }
/// let listener = TcpListener::bind("127.0.0.1:0")?;
/// let _client = TcpStream::connect(listener.local_addr()?)?;
/// let (conn, _) = listener.accept()?;
/// // Accepted at once: well under a second in the queue.
/// assert!(ferrocorn_tcpinfo::accept_queue_wait(&conn)? < Duration::from_secs(1));
/// # Ok(())
/// # }
/// ```
pub fn accept_queue_wait(socket: &(impl AsFd + ?Sized)) -> io::Result<std::time::Duration> {
    let mut buf = [0u8; info::QUEUE_WAIT_LEN];
    let len = sys::tcp_info(socket.as_fd(), &mut buf)?;
    info::queue_wait_field(&buf[..len]).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the kernel returned only {len} bytes of tcp_info, too few for the last receive times"
            ),
        )
    })
}
