//! The bytes a connection still has to write: a response head with a body
//! copied after it, or a large body written with `writev` from where the
//! app left it, then whole pieces queued after it (a streamed response's
//! pieces, kept as they came and written together with one `writev`).
//! Everything the loop sends (responses, streamed pieces,
//! `100 Continue`, error responses) goes through [`WriteBuf::queue`].

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

/// A queued buffer this large is kept as a piece of its own, not copied.
const PIECE_MIN: usize = 4096;
/// At most this many buffers go to one `writev`.
const MAX_SLICES: usize = 16;

/// Bytes waiting to be written: a head, then a body, then `more`.
pub(crate) struct WriteBuf {
    pub(crate) head: Vec<u8>,
    pub(crate) body: OutBody,
    pub(crate) pos: usize,
    /// Whole pieces after the body (boxed: most buffers never have any,
    /// and a connection's state stays small).
    more: Option<Box<Pieces>>,
}

#[derive(Default)]
struct Pieces {
    /// In order.
    q: VecDeque<Vec<u8>>,
    /// Their total length.
    len: usize,
    /// Written buffers (heads and pieces), for reuse.
    spent: Vec<Vec<u8>>,
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
            more: None,
        }
    }

    /// Bytes that live as long as the program (`100 Continue`).
    pub(crate) fn from_static(bytes: &'static [u8]) -> WriteBuf {
        WriteBuf {
            head: Vec::new(),
            body: OutBody::Static(bytes),
            pos: 0,
            more: None,
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
            + self.more.as_ref().map_or(0, |m| m.len)
    }

    /// Written buffers given back for reuse.
    pub(crate) fn take_spent(&mut self) -> Option<std::vec::Drain<'_, Vec<u8>>> {
        match &mut self.more {
            Some(m) if !m.spent.is_empty() => Some(m.spent.drain(..)),
            _ => None,
        }
    }

    fn append(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if let Some(m) = &mut self.more
            && let Some(last) = m.q.back_mut()
        {
            last.extend_from_slice(data);
            m.len += data.len();
            return;
        }
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

    pub(crate) fn append_buf(&mut self, mut other: WriteBuf) {
        if other.pos == 0
            && matches!(other.body, OutBody::None)
            && other.head.len() >= PIECE_MIN
            && self.remaining() > 0
        {
            let m = self.more.get_or_insert_default();
            m.len += other.head.len();
            m.q.push_back(std::mem::take(&mut other.head));
        } else {
            self.append(&other.head[other.pos.min(other.head.len())..]);
            let body = other.body.bytes();
            let skip = other.pos.saturating_sub(other.head.len());
            self.append(&body[skip..]);
        }
        if let Some(o) = other.more {
            let m = self.more.get_or_insert_default();
            for piece in o.q {
                m.len += piece.len();
                m.q.push_back(piece);
            }
        }
    }

    /// The first queued piece becomes the head (the current head and body
    /// are all written).
    fn next_piece(&mut self) -> bool {
        let Some(m) = &mut self.more else {
            return false;
        };
        let Some(piece) = m.q.pop_front() else {
            return false;
        };
        m.len -= piece.len();
        m.spent.push(std::mem::replace(&mut self.head, piece));
        self.body = OutBody::None;
        self.pos = 0;
        true
    }

    /// Write what the socket takes. `Ok(true)`: all written; `Ok(false)`:
    /// the socket is full (a writable event will follow).
    pub(crate) fn flush<W: Write>(&mut self, w: &mut W) -> io::Result<bool> {
        loop {
            let hl = self.head.len();
            let body = self.body.bytes();
            let mut bufs = [IoSlice::new(&[]); MAX_SLICES];
            let mut k = 0;
            if self.pos < hl {
                bufs[k] = IoSlice::new(&self.head[self.pos..]);
                k += 1;
            }
            let off = self.pos.saturating_sub(hl);
            if off < body.len() {
                bufs[k] = IoSlice::new(&body[off..]);
                k += 1;
            }
            for piece in self.more.iter().flat_map(|m| &m.q).take(MAX_SLICES - k) {
                bufs[k] = IoSlice::new(piece);
                k += 1;
            }
            let wanted: usize = bufs[..k].iter().map(|b| b.len()).sum();
            if wanted == 0 {
                return Ok(true);
            }
            let res = if k == 1 {
                w.write(&bufs[0])
            } else {
                w.write_vectored(&bufs[..k])
            };
            match res {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(mut n) => {
                    let full = n == wanted;
                    // Past the head and body, into the pieces.
                    let cur = hl + body.len() - self.pos;
                    if n < cur {
                        self.pos += n;
                    } else {
                        self.pos += cur;
                        n -= cur;
                        while self.next_piece() {
                            if n < self.head.len() {
                                self.pos = n;
                                break;
                            }
                            self.pos = self.head.len();
                            n -= self.head.len();
                        }
                    }
                    if !full {
                        // A short write means the send buffer is full.
                        return Ok(false);
                    }
                    if self.remaining() == 0 {
                        return Ok(true);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{OutBody, PIECE_MIN, WriteBuf};
    use std::io::{self, Write};

    /// Takes at most `limits[i]` bytes on its i-th call (0: WouldBlock),
    /// then everything.
    struct Trickle {
        out: Vec<u8>,
        limits: Vec<usize>,
        calls: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[io::IoSlice::new(buf)])
        }
        fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
            let limit = self.limits.get(self.calls).copied().unwrap_or(usize::MAX);
            self.calls += 1;
            if limit == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(limit - n);
                self.out.extend_from_slice(&b[..take]);
                n += take;
                if n == limit {
                    break;
                }
            }
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn piece(i: usize, len: usize) -> Vec<u8> {
        (0..len).map(|j| (i * 31 + j) as u8).collect()
    }

    #[test]
    fn pieces_are_written_in_order_through_short_writes() {
        for limits in [
            vec![],
            vec![1, 0, 5000, 0, 70000, 3, 0, 4096, 65536 * 3],
            vec![7; 400],
            vec![PIECE_MIN; 200],
        ] {
            let mut slot = None;
            let mut want = Vec::new();
            let mut first = WriteBuf::new(b"HTTP/1.1 200 OK\r\n\r\n".to_vec());
            first.body = OutBody::Bytes(piece(0, 9000));
            want.extend_from_slice(&first.head);
            want.extend_from_slice(&piece(0, 9000));
            WriteBuf::queue(&mut slot, first);
            // More pieces than one writev takes, small ones copied after
            // big ones, a static one.
            for i in 1..40 {
                let len = [PIECE_MIN, 10, 65545, PIECE_MIN - 1, 5][i % 5];
                want.extend_from_slice(&piece(i, len));
                WriteBuf::queue(&mut slot, WriteBuf::new(piece(i, len)));
            }
            want.extend_from_slice(b"0\r\n\r\n");
            WriteBuf::queue(&mut slot, WriteBuf::from_static(b"0\r\n\r\n"));
            let mut w = Trickle {
                out: Vec::new(),
                limits: limits.clone(),
                calls: 0,
            };
            let wbuf = slot.as_mut().unwrap();
            assert_eq!(wbuf.remaining(), want.len());
            let mut rounds = 0;
            while !wbuf.flush(&mut w).unwrap() {
                assert_eq!(wbuf.remaining(), want.len() - w.out.len());
                rounds += 1;
                assert!(rounds < 10_000, "no progress");
            }
            assert_eq!(wbuf.remaining(), 0, "limits {limits:?}");
            assert!(w.out == want, "limits {limits:?}: bytes out of order");
        }
    }
}
