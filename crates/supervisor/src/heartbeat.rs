//! Worker heartbeats in a shared anonymous mapping.
//!
//! The supervisor maps one page-rounded array of `AtomicU64` slots with
//! `MAP_SHARED | MAP_ANONYMOUS` before it forks, so every worker shares the
//! same physical memory. A worker beats by storing the coarse
//! `CLOCK_MONOTONIC` time in milliseconds into its slot (`clock_gettime` is a
//! vDSO call, not a syscall); the supervisor compares the slot with its own
//! reading of the same system-wide clock. Slot value 0 means "not beaten yet".

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The shared array of slots; unmapped when the last handle goes away.
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
        let bytes = len * std::mem::size_of::<AtomicU64>();
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
        Ok(Arc::new(Slots {
            ptr: ptr as *const AtomicU64,
            len,
            bytes,
        }))
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
        // SAFETY: `i < len`, the mapping holds `len` initialised AtomicU64s
        // and lives as long as `self`.
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
}

impl std::fmt::Debug for Heartbeat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Heartbeat")
            .field("slot", &self.slot)
            .field("watched", &self.slots.is_some())
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
    }
}
