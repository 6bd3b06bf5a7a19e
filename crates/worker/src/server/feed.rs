//! Feeding a request body to the app's reader as it arrives, within
//! `limit_request_body`, with `100 Continue` owed until the first read.

use std::io::{self, Read};

use super::Server;
use super::state::{Closing, Exchange, FeedKind, Step};
use crate::buf::BUF_SIZE;
use crate::pool::lock;
use crate::request::{BODY_HIGH_WATER, BodyError};

/// A reader waiting for body bytes is woken when this much is buffered,
/// even while the socket has more.
const BODY_WAKE: usize = 128 * 1024;

/// A body's bytes are read from the socket up to this much at a time
/// (a head's at most [`BUF_SIZE`]): a 1 MiB upload in 16 reads, not 64;
/// a large Content-Length body straight into the reader's buffer.
const BODY_READ: usize = 64 * 1024;

impl Server {
    /// Read body bytes for the app's reader.
    pub(super) fn read_body(&mut self, idx: usize) -> Step {
        let limit = self.config.limit_request_body;
        let stall = self.stall_deadline();
        let Some(c) = self.conns[idx].as_mut() else {
            return Step::Stop;
        };
        let Exchange::InApp { feed: Some(feed) } = &mut c.exchange else {
            return Step::Stop;
        };
        {
            let mut st = lock(&feed.chan.state);
            if st.closed {
                return Step::Stop;
            }
            if st.buffered() >= BODY_HIGH_WATER {
                st.loop_paused = true;
                return Step::Stop;
            }
        }
        // A large Content-Length body with nothing buffered: read straight
        // into a vector the reader can take whole.
        let nothing_buffered = c.rbuf.as_ref().is_none_or(|b| b.is_empty());
        let direct =
            nothing_buffered && matches!(feed.kind, FeedKind::Length(rem) if rem > BUF_SIZE as u64);
        if nothing_buffered {
            let (want, read) = match feed.kind {
                FeedKind::Length(rem) if direct => {
                    let want = rem.min(BODY_READ as u64) as usize;
                    (want, c.sock.read_append(&mut feed.incoming, want))
                }
                _ => {
                    let rbuf = c.rbuf.get_or_insert_with(|| self.bufs.get());
                    if matches!(feed.kind, FeedKind::Chunked(_)) && feed.received > BUF_SIZE as u64
                    {
                        rbuf.grow_to(BODY_READ);
                    }
                    let spare = rbuf.spare(BODY_READ);
                    let want = spare.len();
                    let read = c.sock.read(spare);
                    if let Ok(n) = read {
                        rbuf.advance(n);
                    }
                    (want, read)
                }
            };
            match read {
                Ok(0) => {
                    c.read.got(0, want);
                    c.close_after(Closing::AfterWrite);
                    if let Some(feed) = c.take_feed() {
                        feed.fail(BodyError::Eof);
                    }
                    return Step::Stop;
                }
                Ok(n) => c.read.got(n, want),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    c.read.readable = false;
                    // Bytes held back from a waiting reader go now.
                    let st = lock(&feed.chan.state);
                    let wake = st.waiting && st.buffered() > 0;
                    drop(st);
                    if wake {
                        feed.chan.cond.notify_all();
                    }
                    return Step::Stop;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Step::Continue,
                Err(_) => {
                    self.close(idx);
                    return Step::Stop;
                }
            }
        }
        // Hand what was read to the reader's buffer.
        let mut st = lock(&feed.chan.state);
        let before = st.buffered();
        let mut failed = None;
        let mut done = false;
        match &mut feed.kind {
            FeedKind::Length(rem) if direct => {
                *rem -= feed.incoming.len() as u64;
                done = *rem == 0;
                feed.incoming = st.push(std::mem::take(&mut feed.incoming));
                if feed.incoming.capacity() == 0 {
                    feed.incoming = std::mem::take(&mut st.spare);
                }
            }
            FeedKind::Length(rem) => {
                let rbuf = c.rbuf.as_mut().expect("read above or holding bytes");
                let take = (rbuf.len() as u64).min(*rem) as usize;
                st.append(|v| v.extend_from_slice(&rbuf.filled()[..take]));
                rbuf.consume(take);
                *rem -= take as u64;
                done = *rem == 0;
            }
            FeedKind::Chunked(dec) => {
                let rbuf = c.rbuf.as_mut().expect("read above or holding bytes");
                match st.append(|v| dec.decode(rbuf.filled(), v)) {
                    Ok(d) => {
                        rbuf.consume(d.consumed);
                        done = d.done;
                    }
                    Err(e) => failed = Some(BodyError::Framing(e.reason)),
                }
            }
        }
        feed.received += (st.buffered() - before) as u64;
        if failed.is_none() && limit > 0 && feed.received > limit {
            failed = Some(BodyError::TooLarge);
        }
        if let Some(e) = failed {
            st.error = Some(e);
        } else if done {
            st.eof = true;
        }
        // A waiting reader is woken once per batch of reads, not per read
        // of BUF_SIZE: when a read comes short (the socket is drained for
        // now, no more reads follow until the next event), at BODY_WAKE,
        // at the end, on an error, or when output waits (`100 Continue`:
        // drive may stop at its write before reading on).
        let wake = st.waiting
            && (done
                || failed.is_some()
                || !c.read.readable
                || c.wbuf.is_some()
                || st.buffered() >= BODY_WAKE);
        drop(st);
        if wake {
            feed.chan.cond.notify_all();
        }
        if failed.is_some() {
            c.take_feed();
            c.close_after(Closing::LingerAfterWrite);
            if let Some(b) = c.rbuf.take() {
                self.bufs.put(b);
            }
            self.set_deadline(idx, 0);
            return Step::Stop;
        }
        if done {
            c.take_feed();
            if c.has_input() {
                c.unparsed = true;
            } else if let Some(b) = c.rbuf.take() {
                self.bufs.put(b);
            }
            self.set_deadline(idx, 0);
            return Step::Stop;
        }
        self.set_deadline(idx, stall);
        Step::Continue
    }
}
