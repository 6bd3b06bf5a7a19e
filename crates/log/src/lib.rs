//! slog drains: console and JSON, error and access logs.
//!
//! **Not built yet.** This crate is a documented skeleton: see issue 4.
#![deny(missing_docs)]
