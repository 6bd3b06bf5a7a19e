//! The bytes a connection still has to write: a response head with a body
//! copied after it, or a large body written with `writev` from where the
//! app left it. Everything the loop sends (responses, streamed pieces,
//! `100 Continue`, error responses) goes through [`WriteBuf::queue`].

use std::io::{self, IoSlice, Write};

/// Bytes waiting to be written: a head, then a body.
pub(crate) struct WriteBuf {
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

impl WriteBuf {
    pub(crate) fn new(head: Vec<u8>) -> WriteBuf {
        WriteBuf {
            head,
            body: OutBody::None,
            pos: 0,
        }
    }

    /// Bytes that live as long as the program (`100 Continue`).
    pub(crate) fn from_static(bytes: &'static [u8]) -> WriteBuf {
        WriteBuf {
            head: Vec::new(),
            body: OutBody::Static(bytes),
            pos: 0,
        }
    }

    /// Queue `out` after what `slot` still has to write, or as all of it.
    pub(crate) fn queue(slot: &mut Option<WriteBuf>, out: WriteBuf) {
        match slot {
            Some(w) => w.append_buf(out),
            None => *slot = Some(out),
        }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.head.len() + self.body.bytes().len() - self.pos
    }

    fn append(&mut self, data: &[u8]) {
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

    pub(crate) fn append_buf(&mut self, other: WriteBuf) {
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
