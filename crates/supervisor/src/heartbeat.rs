//! Worker heartbeats in a shared anonymous mapping.
//!
//! The supervisor maps one page-rounded array of `AtomicU64` slots with
//! `MAP_SHARED | MAP_ANONYMOUS` before it forks, so every worker shares the
//! same physical memory. A worker beats by storing the coarse
//! `CLOCK_MONOTONIC` time in milliseconds into its slot (`clock_gettime` is a
//! vDSO call, not a syscall); the supervisor compares the slot with its own
//! reading of the same system-wide clock. Slot value 0 means "not beaten yet".
//!
//! The same mapping holds each worker's open connections (its
//! [`LoadBoard`]): a worker holding clearly more connections than its least
//! loaded sibling leaves a new connection to that sibling for a moment (see
//! the worker's accept loop), so the kernel's "whoever calls accept first"
//! does not pile most keep-alive connections onto one worker.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Load value of a slot whose worker does not accept (not started, draining,
/// full or gone).
const NOT_ACCEPTING: u64 = u64::MAX;

/// A sibling whose last beat is older than this is not left connections: its
/// loop is stuck (a running loop beats at least about once a second, an idle
/// one included) and the supervisor will kill it at `timeout`.
const STALE_BEAT_MS: u64 = 3000;

/// The shared array of slots; unmapped when the last handle goes away.
///
/// Layout, in `AtomicU64`s: `len` heartbeats, then `len` loads (open
/// connections, or [`NOT_ACCEPTING`]), then one past the highest slot ever
/// handed out (so a worker looks at the few slots in use, not all `len`),
/// then `len` planned-exit marks (see [`Heartbeat::planned_exit`]).
pub(crate) struct Slots {
    ptr: *const AtomicU64,
    len: usize,
    bytes: usize,
}

// SAFETY: the mapping is only accessed through `AtomicU64`, which is Sync;
// the pointer stays valid until `Drop`, which runs once no handle remains.
unsafe impl Send for Slots {}
// SAFETY: as above, all access is atomic.
unsafe impl Sync for Slots {}

impl Slots {
    /// Map `len` zeroed slots shared with future children.
    #[cfg(target_os = "linux")]
    pub(crate) fn new(len: usize) -> io::Result<Arc<Slots>> {
        let len = len.max(1);
        let bytes = (3 * len + 1) * std::mem::size_of::<AtomicU64>();
        // SAFETY: an anonymous mapping with no address hint and no fd; the
        // result is checked against MAP_FAILED before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // Anonymous mappings are zero-filled, which is a valid AtomicU64(0);
        // mmap returns page-aligned memory, enough for AtomicU64.
        let slots = Slots {
            ptr: ptr as *const AtomicU64,
            len,
            bytes,
        };
        for i in 0..len {
            slots.load(i).store(NOT_ACCEPTING, Ordering::Relaxed);
        }
        Ok(Arc::new(slots))
    }

    /// Anonymous shared mappings need Linux here.
    #[cfg(not(target_os = "linux"))]
    pub(crate) fn new(_len: usize) -> io::Result<Arc<Slots>> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "heartbeat slots need Linux",
        ))
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn slot(&self, i: usize) -> &AtomicU64 {
        assert!(i < self.len, "heartbeat slot {i} out of range");
        self.word(i)
    }

    /// Slot `i`'s open connections ([`NOT_ACCEPTING`] when it does not accept).
    pub(crate) fn load(&self, i: usize) -> &AtomicU64 {
        assert!(i < self.len, "load slot {i} out of range");
        self.word(self.len + i)
    }

    /// One past the highest slot handed out so far.
    fn in_use(&self) -> &AtomicU64 {
        self.word(2 * self.len)
    }

    /// Slot `i`'s worker said it exits on purpose (non-zero).
    pub(crate) fn planned(&self, i: usize) -> &AtomicU64 {
        assert!(i < self.len, "planned-exit slot {i} out of range");
        self.word(2 * self.len + 1 + i)
    }

    /// Hand slot `i` to a new worker (before the fork): no beat yet, not
    /// accepting yet, and within the range siblings look at.
    pub(crate) fn prepare(&self, i: usize) {
        self.slot(i).store(0, Ordering::SeqCst);
        self.load(i).store(NOT_ACCEPTING, Ordering::SeqCst);
        self.planned(i).store(0, Ordering::SeqCst);
        self.in_use().fetch_max(i as u64 + 1, Ordering::SeqCst);
    }

    /// Slot `i`'s worker is gone: siblings no longer count on it.
    pub(crate) fn release(&self, i: usize) {
        self.load(i).store(NOT_ACCEPTING, Ordering::Relaxed);
    }

    fn word(&self, i: usize) -> &AtomicU64 {
        assert!(i <= 3 * self.len);
        // SAFETY: `i <= 3 * len`, the mapping holds `3 * len + 1`
        // initialised AtomicU64s and lives as long as `self`.
        unsafe { &*self.ptr.add(i) }
    }
}

impl Drop for Slots {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`bytes` are exactly what mmap returned; no reference
        // into the mapping outlives `self` (slot borrows are tied to it).
        #[cfg(target_os = "linux")]
        unsafe {
            libc::munmap(self.ptr as *mut libc::c_void, self.bytes);
        }
        let _ = self.bytes;
    }
}

/// Milliseconds of the coarse system-wide monotonic clock (never 0).
pub(crate) fn now_ms() -> u64 {
    #[cfg(target_os = "linux")]
    let clock = libc::CLOCK_MONOTONIC_COARSE;
    #[cfg(not(target_os = "linux"))]
    let clock = libc::CLOCK_MONOTONIC;
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime cannot fail
    // for a clock id the kernel supports, and we only read it on success.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return 1;
    }
    (ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000).max(1)
}

/// A worker's handle on its heartbeat slot.
///
/// `beat()` is one atomic store of the coarse monotonic clock into shared
/// memory: no syscall, cheap enough to call on every loop turn. The
/// supervisor kills a worker whose last beat is older than `timeout`.
#[derive(Clone)]
pub struct Heartbeat {
    slots: Option<Arc<Slots>>,
    slot: usize,
}

impl Heartbeat {
    pub(crate) fn new(slots: Arc<Slots>, slot: usize) -> Heartbeat {
        assert!(slot < slots.len());
        Heartbeat {
            slots: Some(slots),
            slot,
        }
    }

    /// A heartbeat nobody watches (for a worker run without a supervisor).
    pub fn noop() -> Heartbeat {
        Heartbeat {
            slots: None,
            slot: 0,
        }
    }

    /// Record progress now.
    #[inline]
    pub fn beat(&self) {
        if let Some(s) = &self.slots {
            s.slot(self.slot).store(now_ms(), Ordering::Relaxed);
        }
    }

    /// Say that this worker is about to exit on purpose, as a planned
    /// recycle (it reached `max_requests`): when it then exits with code 0
    /// the supervisor logs a recycle and replaces it without counting an
    /// unexpected restart (`worker_restarts_total`).
    pub fn planned_exit(&self) {
        if let Some(s) = &self.slots {
            s.planned(self.slot).store(1, Ordering::SeqCst);
        }
    }
}

impl std::fmt::Debug for Heartbeat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Heartbeat")
            .field("slot", &self.slot)
            .field("watched", &self.slots.is_some())
            .finish()
    }
}

/// A worker's place on the supervisor's shared board of open connections.
///
/// [`publish`](Self::publish) is one relaxed store into shared memory;
/// [`least_loaded`](Self::least_loaded) reads the slots of the workers
/// started so far (a few words for a few workers).
#[derive(Clone)]
pub struct LoadBoard {
    slots: Option<Arc<Slots>>,
    slot: usize,
}

impl LoadBoard {
    pub(crate) fn new(slots: Arc<Slots>, slot: usize) -> LoadBoard {
        assert!(slot < slots.len());
        LoadBoard {
            slots: Some(slots),
            slot,
        }
    }

    /// A board with no siblings (for a worker run without a supervisor).
    pub fn alone() -> LoadBoard {
        LoadBoard {
            slots: None,
            slot: 0,
        }
    }

    /// Record this worker's open connections; `None` when it does not
    /// accept new ones (draining, at its connection limit, or its pool
    /// saturated).
    #[inline]
    pub fn publish(&self, open: Option<usize>) {
        if let Some(s) = &self.slots {
            let v = open.map_or(NOT_ACCEPTING, |n| (n as u64).min(NOT_ACCEPTING - 1));
            s.load(self.slot).store(v, Ordering::Relaxed);
        }
    }

    /// The fewest open connections of another worker that accepts and whose
    /// heartbeat is fresh; `None` when there is none.
    pub fn least_loaded(&self) -> Option<usize> {
        let s = self.slots.as_ref()?;
        let n = (s.in_use().load(Ordering::Relaxed) as usize).min(s.len());
        let now = now_ms();
        (0..n)
            .filter(|&i| i != self.slot)
            .filter(|&i| {
                let beat = s.slot(i).load(Ordering::Relaxed);
                beat == 0 || now.saturating_sub(beat) <= STALE_BEAT_MS
            })
            .map(|i| s.load(i).load(Ordering::Relaxed))
            .filter(|&v| v != NOT_ACCEPTING)
            .min()
            .map(|v| v as usize)
    }
}

impl std::fmt::Debug for LoadBoard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadBoard")
            .field("slot", &self.slot)
            .field("shared", &self.slots.is_some())
            .finish()
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn beat_is_visible_through_the_slot() {
        let slots = Slots::new(4).unwrap();
        assert_eq!(slots.slot(2).load(Ordering::Relaxed), 0);
        let hb = Heartbeat::new(slots.clone(), 2);
        hb.beat();
        let v = slots.slot(2).load(Ordering::Relaxed);
        assert!(v > 0 && v <= now_ms());
        assert_eq!(slots.slot(1).load(Ordering::Relaxed), 0);
        Heartbeat::noop().beat();
        // A planned exit is marked in its own slot and cleared for the next
        // worker there.
        hb.planned_exit();
        assert_eq!(slots.planned(2).load(Ordering::Relaxed), 1);
        assert_eq!(slots.planned(1).load(Ordering::Relaxed), 0);
        assert_eq!(slots.load(3).load(Ordering::Relaxed), NOT_ACCEPTING);
        slots.prepare(2);
        assert_eq!(slots.planned(2).load(Ordering::Relaxed), 0);
        Heartbeat::noop().planned_exit();
    }

    #[test]
    fn least_loaded_skips_self_idle_and_released_slots() {
        let slots = Slots::new(8).unwrap();
        for i in 0..4 {
            slots.prepare(i);
        }
        let boards: Vec<LoadBoard> = (0..4).map(|i| LoadBoard::new(slots.clone(), i)).collect();
        // Nobody accepts yet.
        assert_eq!(boards[0].least_loaded(), None);
        boards[0].publish(Some(3));
        boards[1].publish(Some(7));
        boards[2].publish(Some(5));
        assert_eq!(boards[0].least_loaded(), Some(5));
        assert_eq!(boards[2].least_loaded(), Some(3));
        assert_eq!(boards[3].least_loaded(), Some(3));
        boards[0].publish(None);
        assert_eq!(boards[3].least_loaded(), Some(5));
        slots.release(2);
        assert_eq!(boards[3].least_loaded(), Some(7));
        // A sibling whose loop stopped beating is passed over.
        slots.slot(1).store(
            now_ms().saturating_sub(STALE_BEAT_MS + 1000).max(1),
            Ordering::Relaxed,
        );
        assert_eq!(boards[3].least_loaded(), None);
        slots.slot(1).store(now_ms(), Ordering::Relaxed);
        assert_eq!(boards[3].least_loaded(), Some(7));
        // A slot handed out again starts as not accepting.
        slots.prepare(1);
        assert_eq!(boards[3].least_loaded(), None);
        assert_eq!(LoadBoard::alone().least_loaded(), None);
        LoadBoard::alone().publish(Some(1));
    }
}
