//! The pre-fork supervisor.
//!
//! **Not built yet.** This crate is a documented skeleton: see issue 6.
#![deny(missing_docs)]
