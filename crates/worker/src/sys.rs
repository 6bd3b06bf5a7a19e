//! The libc calls the worker makes itself.

/// Ignore SIGPIPE: a client that goes away must cost an EPIPE error on the
/// write, not the process (mio writes with write(2), not send(MSG_NOSIGNAL)).
/// Rust binaries ignore it already; a host process (an embedding) may not.
pub(crate) fn ignore_sigpipe() {
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler
    // code and touches no memory of ours; it is safe at any time.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// Reads up to `max` bytes from `fd` and appends them to `buf`, into its
/// spare capacity as it is (not zeroed first, as a read into a slice must
/// be): a request body's bytes go from the socket to the app's reader with
/// no copy in between.
pub(crate) fn read_append(
    fd: std::os::fd::RawFd,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<usize> {
    buf.reserve(max);
    let spare = &mut buf.spare_capacity_mut()[..max];
    // SAFETY: `spare` is `max` bytes of `buf`'s allocation that nothing else
    // refers to; read(2) writes at most `max` bytes there.
    let n = unsafe { libc::read(fd, spare.as_mut_ptr().cast(), max) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: read(2) initialized the first `n` (<= `max`) bytes of the spare
    // capacity, right after the `len` initialized ones.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}
