//! Fuzz the request parser: head parsing with the worker's checks, and the
//! chunked decoder (whole and byte by byte must agree).
//!
//! `cargo +nightly fuzz run parse_request /tmp/corpus` (see ../README.md)
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ferrocorn_worker::parse::fuzz_one(data);
});
