//! The messages between the event loop and the pool: tasks for the pool
//! (a request for the app, the next piece of a streamed response) and what
//! comes back (a response, a piece, a reader's wish for body bytes).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::time::Instant;

use crate::parse::HeaderSpan;
use crate::request::{Body, BodyEvent, OwnedHead};
use crate::response::BodyStream;
use crate::write_buf::WriteBuf;

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

pub(crate) enum Msg {
    Done(Done),
    Chunk(Chunk),
    Body(BodyEvent),
}

/// A response produced by the app.
pub(crate) struct Done {
    pub(crate) token: u32,
    pub(crate) generation: u32,
    pub(crate) out: WriteBuf,
    pub(crate) close: bool,
    pub(crate) stream: Option<Box<StreamResp>>,
    /// The request head, back for reuse.
    pub(crate) recycle: Option<(Vec<u8>, Vec<HeaderSpan>)>,
}

/// A piece of a streamed response. `stream` is `None` when it ended, or,
/// with `more`, while the pool thread goes on pulling it.
pub(crate) struct Chunk {
    pub(crate) token: u32,
    pub(crate) generation: u32,
    pub(crate) data: Vec<u8>,
    pub(crate) stream: Option<Box<StreamResp>>,
    pub(crate) close: bool,
    /// The pool thread still holds the stream: more pieces follow.
    pub(crate) more: bool,
}

/// How far a pool thread may pull a stream ahead of its client: shared by
/// the pull and the connection while the pool holds the stream.
#[derive(Default)]
pub(crate) struct Window {
    /// Bytes in pieces sent to the loop and not yet queued on the
    /// connection (the pool adds, the loop takes away).
    pub(crate) in_flight: AtomicUsize,
    /// What the connection's write buffer still holds, as the loop last
    /// saw it.
    pub(crate) unsent: AtomicUsize,
    /// The connection closed: stop pulling.
    pub(crate) gone: AtomicBool,
}

/// A streamed response in progress.
pub(crate) struct StreamResp {
    pub(crate) iter: BodyStream,
    /// Chunked framing (else the bytes as they are).
    pub(crate) chunked: bool,
    /// What `Content-Length` still allows.
    pub(crate) remaining: Option<u64>,
    pub(crate) sent: u64,
    pub(crate) status: u16,
    pub(crate) ctx: Box<LogCtx>,
    pub(crate) window: Arc<Window>,
}

/// What the access log and metrics need once a streamed response ends.
pub(crate) struct LogCtx {
    pub(crate) head: OwnedHead,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) resp_headers: Vec<u8>,
    pub(crate) start: Instant,
}
