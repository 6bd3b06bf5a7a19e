//! The pool threads' busy clocks: when each thread's current task started,
//! for the heartbeat's stuck check ([`crate::pool::Shared::pool_healthy`]),
//! and [`ClientWait`], which takes a thread off that clock while it waits
//! for the client's body bytes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// A [`busy_since`](crate::pool::Shared::busy_since) value: the thread waits for the client's bytes,
/// which is no sign of a stuck app.
pub(crate) const WAITING_FOR_CLIENT: u64 = u64::MAX;

/// The busy clock of the pool thread running on this thread.
pub(crate) struct BusyClock {
    pub(crate) slots: Arc<[AtomicU64]>,
    pub(crate) index: usize,
    pub(crate) epoch: Instant,
    /// The pool, woken for queued tasks while this thread waits.
    pub(crate) pool: Arc<crate::pool::Shared>,
}

thread_local! {
    /// Set on pool threads (not on the loop thread, whose inline calls
    /// never read a streamed body).
    pub(crate) static BUSY_CLOCK: std::cell::RefCell<Option<BusyClock>> =
        const { std::cell::RefCell::new(None) };
}

/// The calling pool thread's current task starts again now (a streamed
/// response's next piece, pulled by the same task).
pub(crate) fn restart() {
    BUSY_CLOCK.with(|c| {
        if let Some(c) = &*c.borrow() {
            let now = c.epoch.elapsed().as_millis() as u64;
            c.slots[c.index].store(now + 1, Relaxed);
        }
    });
}

/// While alive, the calling pool thread counts as waiting for the client
/// (reading a request body), not as held by the app: the heartbeat's stuck
/// check ([`Shared::pool_healthy`](crate::pool::Shared::pool_healthy)) passes over it, and when the wait ends
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
                // This thread may have been the one serving the queue.
                c.pool.wake_if_queued();
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
