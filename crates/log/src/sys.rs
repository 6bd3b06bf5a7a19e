//! The crate's only `unsafe`: `write(2)` and `fstat(2)` on the standard descriptors,
//! `localtime_r(3)`, `pthread_self(3)` and a `pthread_atfork(3)` handler.

use std::io;
use std::os::fd::RawFd;
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};

/// Writes all of `buf` to `fd` with `write(2)`: one call for a whole line
/// unless the kernel takes less (then the rest follows), retrying `EINTR`.
///
/// std's `Stdout` is line-buffered behind its own lock; writing to the
/// descriptor directly keeps one line = one `write(2)`, and still follows a
/// later `dup2` onto fd 1 or 2.
pub(crate) fn write_all_fd(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: `buf` is a live slice, so its pointer is valid for reads of
        // `buf.len()` bytes for the duration of the call; `write` does not keep
        // the pointer. A closed or invalid `fd` only makes it return EBADF.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// Whether `fd` is open on a regular file (false when it cannot be asked).
pub(crate) fn is_regular_file(fd: RawFd) -> bool {
    // SAFETY: `stat` is plain old data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is valid for writes for the call and not kept; a closed
    // or invalid `fd` only makes fstat return EBADF.
    let r = unsafe { libc::fstat(fd, &mut st) };
    r == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFREG
}

/// Local broken-down time of `secs` (Unix time): (year, month 1-12, day,
/// hour, minute, second, UTC offset in seconds). `None` if the C library
/// cannot convert it.
pub(crate) fn local_time(secs: i64) -> Option<LocalTime> {
    // time_t is 32 bits on some targets.
    #[allow(clippy::useless_conversion)]
    let t: libc::time_t = secs.try_into().ok()?;
    // SAFETY: `tm` is plain old data; all-zero is a valid value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call; localtime_r is the
    // reentrant variant and writes only into `tm`.
    let r = unsafe { libc::localtime_r(&t, &mut tm) };
    if r.is_null() {
        return None;
    }
    Some(LocalTime {
        year: i64::from(tm.tm_year) + 1900,
        month: (tm.tm_mon + 1) as u32,
        day: tm.tm_mday as u32,
        hour: tm.tm_hour as u32,
        minute: tm.tm_min as u32,
        second: tm.tm_sec as u32,
        offset_secs: tm_gmtoff(&tm),
    })
}

#[cfg(any(target_os = "linux", target_os = "macos", target_os = "freebsd"))]
#[allow(clippy::unnecessary_cast)] // c_long is 32 bits on some targets
fn tm_gmtoff(tm: &libc::tm) -> i64 {
    tm.tm_gmtoff as i64
}

#[cfg(not(any(target_os = "linux", target_os = "macos", target_os = "freebsd")))]
fn tm_gmtoff(_tm: &libc::tm) -> i64 {
    0
}

/// A local calendar time with its UTC offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LocalTime {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub offset_secs: i64,
}

/// The calling thread's id as Python's `threading.get_ident()` reports it:
/// `pthread_self()` as an integer (what the seed's `tid` holds).
pub(crate) fn thread_ident() -> u64 {
    // SAFETY: pthread_self has no preconditions and always succeeds.
    let t = unsafe { libc::pthread_self() };
    t as usize as u64
}

/// The process id, cached: `getpid(2)` is a real system call (no libc
/// caches it any more) and every JSON and console line carries the pid.
static PID: AtomicU32 = AtomicU32::new(0);
static AT_FORK: Once = Once::new();

/// Runs in the child of every `fork(3)`: forget the parent's pid.
extern "C" fn forget_pid() {
    // An atomic store is async-signal-safe, as a fork child handler must be.
    PID.store(0, Ordering::Relaxed);
}

/// `std::process::id()` without a system call per line, correct across
/// `fork(3)` (a child handler clears the cache in the child).
pub(crate) fn pid() -> u32 {
    let cached = PID.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    AT_FORK.call_once(|| {
        // SAFETY: registers a handler that only performs an atomic store,
        // which is async-signal-safe as required in a fork child. The
        // handler is a plain `extern "C" fn` with 'static lifetime.
        unsafe {
            libc::pthread_atfork(None, None, Some(forget_pid));
        }
    });
    let pid = std::process::id();
    PID.store(pid, Ordering::Relaxed);
    pid
}
