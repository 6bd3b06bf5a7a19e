//! The one system call this crate makes, and its non-Linux stand-in.
//!
//! All of the crate's `unsafe` code lives here.

use std::io;
use std::os::fd::BorrowedFd;

/// Fills `buf` with the kernel's `struct tcp_info` for `fd` and returns how
/// many bytes the kernel wrote.
///
/// The kernel copies `min(buf.len(), sizeof(struct tcp_info))` bytes, so the
/// caller chooses how much it wants: a few bytes for the listen queue, a
/// buffer larger than any known struct to get everything.
#[cfg(target_os = "linux")]
pub(crate) fn tcp_info(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;

    let mut len = libc::socklen_t::try_from(buf.len()).unwrap_or(libc::socklen_t::MAX);
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole
    // call and `len` never exceeds `buf.len()`, so the kernel writes only
    // inside `buf` (it copies at most `len` bytes). `len` is a valid, live
    // `socklen_t` the kernel updates in place. `fd` is a borrowed descriptor
    // that stays open for the duration of the call; a descriptor that is not
    // a TCP socket makes getsockopt fail with an errno, not misbehave.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            buf.as_mut_ptr().cast::<libc::c_void>(),
            &mut len,
        )
    };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    // The kernel never reports more than it was offered; clamp anyway so a
    // surprise can only shorten what we decode.
    Ok(usize::try_from(len).map_or(0, |n| n.min(buf.len())))
}

/// TCP_INFO is Linux's: elsewhere there is nothing to read.
#[cfg(not(target_os = "linux"))]
pub(crate) fn tcp_info(_fd: BorrowedFd<'_>, _buf: &mut [u8]) -> io::Result<usize> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "TCP_INFO is only available on Linux",
    ))
}
