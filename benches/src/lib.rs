//! ferrocorn's load benchmarks against peers (nginx, hyper, gunicorn).
//!
//! `just bench` runs the `loadbench` binary of this package: it starts every
//! server on loopback, drives each with [wrk](https://github.com/wg/wrk) in
//! interleaved rounds and prints medians and ratios measured in the same run
//! (also written to `benches/RESULTS.md`). This library holds the pieces the
//! binary is made of, kept small and testable:
//!
//! - [`wrk`] runs wrk with a Lua `done` script and parses what it reports;
//! - [`http`] is a minimal blocking HTTP/1.1 client (readiness, one-shot GETs,
//!   idle keep-alive connections);
//! - [`procfs`] reads children, resident memory and socket owners from `/proc`;
//! - [`server`] starts a server process, finds its workers and stops it;
//! - [`stats`] computes medians and percentiles;
//! - [`sys`] raises `RLIMIT_NOFILE` and sends signals.
//!
//! ```
//! let r = ferrocorn_benches::wrk::parse(
//!     "LOADBENCH requests=1000 duration_us=1000000 p50_us=100 p99_us=900 \
//!      max_us=1200 connect=0 read=0 write=0 status=0 timeout=0",
//! )
//! .unwrap();
//! assert_eq!(r.requests_per_sec(), 1000.0);
//! assert_eq!(ferrocorn_benches::stats::median(&[3.0, 1.0, 2.0]), 2.0);
//! ```
#![deny(missing_docs)]

pub mod http;
pub mod procfs;
pub mod server;
pub mod stats;
pub mod sys;
pub mod wrk;
