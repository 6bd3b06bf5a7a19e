//! Feeding a request body to the app's reader as it arrives, within
//! `limit_request_body`, with `100 Continue` owed until the first read.

use std::io::{self, Read};
use std::sync::Arc;

use super::conn::{CLOSE_AFTER, LINGER_ON_CLOSE, NEW_DATA, PEER_HUP, READ_EOF, READABLE};
use super::{Server, Step};
use crate::buf::BUF_SIZE;
use crate::parse::ChunkedDecoder;
use crate::pool::lock;
use crate::request::{BODY_HIGH_WATER, BodyChan, BodyError};

/// A streamed request body being fed to a reader.
pub(super) struct Feed {
    pub(super) chan: Arc<BodyChan>,
    pub(super) kind: FeedKind,
    pub(super) received: u64,
    /// `100 Continue` is owed on the first read.
    pub(super) expect: bool,
}

pub(super) enum FeedKind {
    Length(u64),
    Chunked(ChunkedDecoder),
}

impl Server {
    /// Read body bytes for the app's reader.
    pub(super) fn read_body(&mut self, idx: usize) -> Step {
        let limit = self.config.limit_request_body;
        let stall = self.stall_deadline();
        let c = self.conns[idx].as_mut().expect("live");
        let feed = c.feed.as_mut().expect("feed");
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
        if c.rbuf.is_none() {
            c.rbuf = Some(self.bufs.get());
        }
        let rbuf = c.rbuf.as_mut().expect("some");
        if rbuf.is_empty() {
            let spare = rbuf.spare(BUF_SIZE);
            let want = spare.len();
            match c.sock.read(spare) {
                Ok(0) => {
                    c.flags = (c.flags | READ_EOF | CLOSE_AFTER) & !READABLE;
                    let feed = c.feed.take().expect("feed");
                    fail_feed(&feed, BodyError::Eof);
                    return Step::Stop;
                }
                Ok(n) => {
                    rbuf.advance(n);
                    if n < want && c.flags & PEER_HUP == 0 {
                        c.flags &= !READABLE;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    c.flags &= !READABLE;
                    return Step::Stop;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Step::Continue,
                Err(_) => {
                    self.close(idx);
                    return Step::Stop;
                }
            }
        }
        // Decode what is buffered into the reader's buffer.
        let mut st = lock(&feed.chan.state);
        if st.pos > 0 && st.pos * 2 >= st.data.len() {
            let pos = st.pos;
            st.data.drain(..pos);
            st.pos = 0;
        }
        let before = st.data.len();
        let mut failed = None;
        let mut done = false;
        match &mut feed.kind {
            FeedKind::Length(rem) => {
                let take = (rbuf.len() as u64).min(*rem) as usize;
                st.data.extend_from_slice(&rbuf.filled()[..take]);
                rbuf.consume(take);
                *rem -= take as u64;
                done = *rem == 0;
            }
            FeedKind::Chunked(dec) => match dec.decode(rbuf.filled(), &mut st.data) {
                Ok(d) => {
                    rbuf.consume(d.consumed);
                    done = d.done;
                }
                Err(e) => failed = Some(BodyError::Framing(e.reason)),
            },
        }
        feed.received += (st.data.len() - before) as u64;
        if failed.is_none() && limit > 0 && feed.received > limit {
            failed = Some(BodyError::TooLarge);
        }
        if let Some(e) = failed {
            st.error = Some(e);
        } else if done {
            st.eof = true;
        }
        let wake = st.waiting;
        drop(st);
        if wake {
            feed.chan.cond.notify_all();
        }
        if failed.is_some() {
            c.feed = None;
            c.flags |= CLOSE_AFTER | LINGER_ON_CLOSE;
            if let Some(b) = c.rbuf.take() {
                self.bufs.put(b);
            }
            self.set_deadline(idx, 0);
            return Step::Stop;
        }
        if done {
            c.feed = None;
            if c.rbuf.as_ref().is_some_and(|b| b.is_empty()) {
                let b = c.rbuf.take().expect("some");
                self.bufs.put(b);
            } else {
                c.flags |= NEW_DATA;
            }
            self.set_deadline(idx, 0);
            return Step::Stop;
        }
        self.set_deadline(idx, stall);
        Step::Continue
    }
}

pub(super) fn fail_feed(feed: &Feed, e: BodyError) {
    let mut st = lock(&feed.chan.state);
    if !st.eof && st.error.is_none() {
        st.error = Some(e);
    }
    drop(st);
    feed.chan.cond.notify_all();
}
