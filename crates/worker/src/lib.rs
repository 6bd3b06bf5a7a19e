//! The mio-based HTTP/1.1 worker.
//!
//! **Not built yet.** This crate is a documented skeleton: see issue 5.
#![deny(missing_docs)]
