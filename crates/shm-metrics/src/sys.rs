//! Every `unsafe` block of the crate lives here: shared mappings of metric
//! files, atomic access to their 8-byte values, the fork hook and `flock`.
//!
//! Mapping strategy: a metric file is mapped once at its current size. When an
//! append does not fit, the file is extended with its blocks allocated
//! ([`reserve`]: `posix_fallocate`, so that a full disk is an error here
//! rather than a SIGBUS at the next store) and a *second*,
//! larger `MAP_SHARED` mapping of the same file is added; the older mappings
//! stay mapped for as long as the file object lives (and a handle keeps the
//! file object alive). Shared mappings of one file share the page cache, so a
//! value written through an old mapping is the same memory a reader sees
//! through a new one, and a handle's pointer never dangles. The cost is at
//! most twice the file size in address space.

use std::fs::File;
use std::io;
use std::sync::Once;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

/// One shared, writable mapping of the first `len` bytes of a file.
pub(crate) struct Map {
    raw: memmap2::MmapRaw,
}

impl Map {
    /// Maps the first `len` bytes of `file` shared and writable. `len` must not
    /// exceed the file's size (accessing beyond EOF would raise SIGBUS).
    pub(crate) fn new(file: &File, len: usize) -> io::Result<Map> {
        let raw = memmap2::MmapOptions::new().len(len).map_raw(file)?;
        Ok(Map { raw })
    }

    pub(crate) fn len(&self) -> usize {
        self.raw.len()
    }

    /// Copies `bytes` into the mapping at `offset`.
    pub(crate) fn write(&self, offset: usize, bytes: &[u8]) {
        assert!(
            offset
                .checked_add(bytes.len())
                .is_some_and(|end| end <= self.len())
        );
        // SAFETY: the range is inside the mapping (asserted above); the mapping
        // is writable and lives as long as `self`. The bytes written are beyond
        // the file's `used` mark, so no other thread of this process touches
        // them (appends hold the file's mutex) and readers ignore them.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.raw.as_mut_ptr().add(offset),
                bytes.len(),
            );
        }
    }

    /// Reads the `i32` at `offset` (4-aligned) atomically.
    pub(crate) fn load_i32(&self, offset: usize) -> i32 {
        self.atomic_i32(offset).load(Ordering::Acquire)
    }

    /// Stores the `i32` at `offset` (4-aligned) atomically, after every write
    /// before it (Release): used to publish a new entry.
    pub(crate) fn store_i32(&self, offset: usize, v: i32) {
        self.atomic_i32(offset).store(v, Ordering::Release)
    }

    fn atomic_i32(&self, offset: usize) -> &AtomicI32 {
        assert!(offset.is_multiple_of(4) && offset + 4 <= self.len());
        // SAFETY: in bounds and 4-aligned (asserted; mappings are page
        // aligned); the memory lives as long as `&self`; every access to it
        // from this process is atomic.
        unsafe { &*(self.raw.as_ptr().add(offset) as *const AtomicI32) }
    }

    /// Returns a slot for the 8-byte value at `offset` (8-aligned), followed by
    /// its 8-byte timestamp.
    pub(crate) fn slot(&self, offset: usize) -> Slot {
        assert!(offset.is_multiple_of(8) && offset + 16 <= self.len());
        // SAFETY: in bounds (asserted), so the pointer stays inside the mapping.
        Slot(unsafe { self.raw.as_ptr().add(offset) } as *const AtomicU64)
    }
}

/// A pointer to a 16-byte (value, timestamp) pair inside a [`Map`], or to a
/// heap fallback. The owner of the slot keeps the memory alive.
#[derive(Clone, Copy)]
pub(crate) struct Slot(*const AtomicU64);

// SAFETY: a Slot is a pointer to two AtomicU64, which are Sync; the memory is
// kept alive by whoever hands out the slot (a Binding holding its file).
unsafe impl Send for Slot {}
// SAFETY: as above; all access through the pointer is atomic.
unsafe impl Sync for Slot {}

impl Slot {
    /// A slot in leaked heap memory, for updates that have nowhere to go.
    pub(crate) fn scratch() -> Slot {
        let b: &'static [AtomicU64; 2] =
            Box::leak(Box::new([AtomicU64::new(0), AtomicU64::new(0)]));
        Slot(b.as_ptr())
    }

    #[inline]
    pub(crate) fn value(&self) -> &AtomicU64 {
        // SAFETY: the pointer is 8-aligned, points at live memory (see the
        // type's doc) and is only ever accessed atomically in this process.
        unsafe { &*self.0 }
    }

    #[inline]
    pub(crate) fn timestamp(&self) -> &AtomicU64 {
        // SAFETY: the timestamp follows the value in the same 16-byte pair.
        unsafe { &*self.0.add(1) }
    }
}

static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);
static PID: AtomicU32 = AtomicU32::new(0);
static HOOK: Once = Once::new();

extern "C" fn after_fork_in_child() {
    // Only async-signal-safe work here: two atomic operations and getpid.
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
    // SAFETY: getpid has no preconditions and is async-signal-safe.
    PID.store(unsafe { libc::getpid() } as u32, Ordering::Relaxed);
}

/// Installs the fork hook (once per process) and returns nothing; after it,
/// [`fork_generation`] changes in every child created by `fork()`.
pub(crate) fn install_fork_hook() {
    HOOK.call_once(|| {
        PID.store(std::process::id(), Ordering::Relaxed);
        // SAFETY: registering a handler that only touches atomics and calls
        // getpid (async-signal-safe), as required of a child handler.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
        assert_eq!(rc, 0, "pthread_atfork failed");
    });
}

/// A number that changes in a child process after every `fork()`.
#[inline]
pub(crate) fn fork_generation() -> u64 {
    FORK_GENERATION.load(Ordering::Relaxed)
}

/// The current pid, cached (refreshed by the fork hook).
pub(crate) fn pid() -> u32 {
    install_fork_hook();
    PID.load(Ordering::Relaxed)
}

/// Takes a `flock` on `file` (exclusive or shared), waiting at most
/// `wait`: `Ok(false)` when another holder kept it that long (a lock file
/// that anyone who can write the directory may lock must not hang us).
/// Released when the file is closed.
#[cfg(unix)]
pub(crate) fn lock(file: &File, exclusive: bool, wait: std::time::Duration) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    let op = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    };
    let deadline = std::time::Instant::now() + wait;
    loop {
        // SAFETY: flock on a valid, open descriptor borrowed from `file`.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::Interrupted => {}
            io::ErrorKind::WouldBlock => {
                if std::time::Instant::now() >= deadline {
                    return Ok(false);
                }
                // Folds hold the lock for milliseconds: poll for it (flock
                // has no timeout, and a blocking call would not return).
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            _ => return Err(err),
        }
    }
}

/// Makes `file` at least `size` bytes long with every block from `from` on
/// allocated, so that writing through a mapping of it cannot raise SIGBUS:
/// on a full filesystem this fails with `ENOSPC` instead. (A file extended
/// with `ftruncate` alone is sparse, and a store into a page of it the
/// filesystem then has no room for kills the process with SIGBUS.)
#[cfg(target_os = "linux")]
pub(crate) fn reserve(file: &File, from: u64, size: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let off = libc::off_t::try_from(from);
    let len = size.checked_sub(from).map(libc::off_t::try_from);
    let (Ok(off), Some(Ok(len))) = (off, len) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "metric file range out of bounds",
        ));
    };
    if len == 0 {
        return Ok(());
    }
    loop {
        // SAFETY: posix_fallocate takes a descriptor borrowed from `file`,
        // open for writing while `file` lives, and two integers; it returns
        // an error number and touches no memory of ours.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), off, len) };
        match rc {
            0 => return Ok(()),
            libc::EINTR => {}
            // A filesystem without fallocate (the C library did not emulate
            // it): extend the file sparse, as Python's prometheus_client does.
            libc::EOPNOTSUPP | libc::EINVAL => {
                if file.metadata()?.len() < size {
                    file.set_len(size)?;
                }
                return Ok(());
            }
            e => return Err(io::Error::from_raw_os_error(e)),
        }
    }
}

/// Off Linux: the file is extended sparse (`ftruncate`), as Python's
/// prometheus_client does; a full filesystem can then raise SIGBUS.
#[cfg(not(target_os = "linux"))]
pub(crate) fn reserve(file: &File, _from: u64, size: u64) -> io::Result<()> {
    if file.metadata()?.len() < size {
        file.set_len(size)?;
    }
    Ok(())
}

/// A value replaced now and then (after a fork) and read on every update
/// without a lock. Replaced values are kept until the cell drops, so a
/// reference obtained from [`SwapCell::get`] stays valid for `&self`'s life.
pub(crate) struct SwapCell<T> {
    current: std::sync::atomic::AtomicPtr<T>,
    all: std::sync::Mutex<Vec<Box<T>>>,
    // Shared `&T`s cross threads: require `T: Sync` for `SwapCell<T>: Sync`.
    _marker: std::marker::PhantomData<T>,
}

impl<T> SwapCell<T> {
    pub(crate) fn new(value: T) -> SwapCell<T> {
        let mut b = Box::new(value);
        let ptr: *mut T = &mut *b;
        SwapCell {
            current: std::sync::atomic::AtomicPtr::new(ptr),
            all: std::sync::Mutex::new(vec![b]),
            _marker: std::marker::PhantomData,
        }
    }

    #[inline]
    pub(crate) fn get(&self) -> &T {
        let ptr = self.current.load(Ordering::Acquire);
        // SAFETY: `ptr` came from a Box stored in `self.all`; boxes are only
        // pushed, never removed or freed before `self` drops, and a Box's
        // heap address does not move when the Vec reallocates. The value was
        // fully written before the Release store that published it.
        unsafe { &*ptr }
    }

    /// Publishes `value` as the current one and returns it.
    pub(crate) fn replace(&self, value: T) -> &T {
        let mut all = self.all.lock().unwrap_or_else(|p| p.into_inner());
        let mut b = Box::new(value);
        let ptr: *mut T = &mut *b;
        all.push(b);
        self.current.store(ptr, Ordering::Release);
        // SAFETY: as in `get`: the box now lives in `self.all` until `self` drops.
        unsafe { &*ptr }
    }
}

/// Opens `name` in the directory `dir` read-only (`openat`): no walk of the
/// directory's path for every file of a scrape. Reads through it leave the
/// access time alone (`O_NOATIME`, allowed for the file's owner, which the
/// scraping supervisor normally is; without it when refused): a scrape reads
/// every file, and updating (or checking) their access times is wasted work.
pub(crate) fn open_in(dir: &File, name: &std::ffi::OsStr) -> io::Result<File> {
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::ffi::OsStrExt;
    let name = std::ffi::CString::new(name.as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    const NOATIME: libc::c_int = libc::O_NOATIME;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    const NOATIME: libc::c_int = 0;
    // Never blocking (a FIFO planted under a metric file's name would block
    // `open` until a writer came) and never through a symbolic link.
    let mut flags =
        libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOFOLLOW | NOATIME;
    loop {
        // SAFETY: `dir` is an open descriptor and `name` a NUL-terminated
        // string, both alive for the call.
        let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags) };
        if fd >= 0 {
            // SAFETY: `fd` is a descriptor we just opened and own alone.
            return Ok(unsafe { File::from_raw_fd(fd) });
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => {}
            // Not the file's owner: read it with access times.
            Some(libc::EPERM) if flags & NOATIME != 0 => flags &= !NOATIME,
            _ => return Err(err),
        }
    }
}

/// The soft limit on open file descriptors (1024 when it cannot be read).
pub(crate) fn nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit we own; the resource id is valid.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
    let cur = lim.rlim_cur as u64;
    if rc == 0 { cur } else { 1024 }
}
