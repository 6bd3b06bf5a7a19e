//! The listen queue of a TCP listener, read with TCP_INFO (feature `tcpinfo`).
// Read by the metrics exporter only.
#![cfg_attr(not(feature = "metrics"), allow(dead_code))]

use std::os::fd::AsFd;

/// Whether the listen queue can be read in this build.
pub(crate) const BUILT: bool = true;

/// `(queued, capacity)` of a listening TCP socket; `None` when the kernel
/// cannot tell (unix sockets, non-Linux).
pub(crate) fn listen_queue(sock: &impl AsFd) -> Option<(u32, u32)> {
    ferrocorn_tcpinfo::listen_queue(sock)
        .ok()
        .map(|q| (q.queued, q.capacity))
}
