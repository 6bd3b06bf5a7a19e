//! The one libc call the worker makes itself.

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
