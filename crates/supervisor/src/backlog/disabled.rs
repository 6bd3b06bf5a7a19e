//! Without the `tcpinfo` feature the listen queue cannot be read.
// Read by the metrics exporter only.
#![cfg_attr(not(feature = "metrics"), allow(dead_code))]

use std::os::fd::AsFd;

/// Whether the listen queue can be read in this build.
pub(crate) const BUILT: bool = false;

/// Always `None`: the backlog gauge is not built into this binary.
pub(crate) fn listen_queue(_sock: &impl AsFd) -> Option<(u32, u32)> {
    None
}
