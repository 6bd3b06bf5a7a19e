//! Prometheus metrics in memory-mapped files compatible with Python's prometheus_client.
//!
//! **Not built yet.** This crate is a documented skeleton: see issue 3.
#![deny(missing_docs)]
