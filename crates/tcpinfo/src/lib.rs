//! Read Linux `struct tcp_info` from a socket.
//!
//! **Not built yet.** This crate is a documented skeleton: see issue 2.
#![deny(missing_docs)]
