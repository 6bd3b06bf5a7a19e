//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::time::Duration;

use ferrocorn_log::{AccessRecord, Destination, Format, Level, LogConfig, Logs, MemoryLog};

/// Logs whose error and access logs go to two memory buffers.
pub fn memory_logs(format: Format, level: Level) -> (Logs, MemoryLog, MemoryLog) {
    let error = MemoryLog::new();
    let access = MemoryLog::new();
    let config = LogConfig {
        format,
        level,
        error_log: Destination::Memory(error.clone()),
        access_log: Some(Destination::Memory(access.clone())),
        ..LogConfig::default()
    };
    (Logs::new(&config).expect("logs"), error, access)
}

pub const REQUEST_HEADERS: &[(&str, &[u8])] = &[
    ("Host", b"example.com"),
    ("User-Agent", b"curl/8.5.0"),
    ("Referer", b"http://ref/"),
    ("Authorization", b"Basic dXNlcjpwYXNz"),
    ("X-Request-Id", b"abc"),
];

pub const RESPONSE_HEADERS: &[(&str, &[u8])] =
    &[("Content-Type", b"text/plain"), ("X-Resp", b"r\"1")];

/// The request of gunicorn's reference output in `tests/access.rs`.
pub fn record() -> AccessRecord<'static> {
    AccessRecord {
        remote: Some("127.0.0.1:50000".parse().unwrap()),
        method: "GET",
        target: "/search?q=\"1\"",
        path: "/search",
        query: "q=\"1\"",
        version: "HTTP/1.1",
        status: 200,
        response_bytes: Some(1234),
        request_time: Duration::new(2, 345_678_000),
        request_headers: REQUEST_HEADERS,
        response_headers: RESPONSE_HEADERS,
        pid: 28441,
    }
}

/// Replaces every ISO timestamp (`2026-11-25T09:27:47.056397Z`) with `TS`.
pub fn mask_timestamps(s: &str) -> String {
    const SHAPE: &[u8] = b"dddd-dd-ddTdd:dd:dd.ddddddZ";
    let b = s.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        let fits = b.len() - i >= SHAPE.len()
            && SHAPE.iter().zip(&b[i..]).all(|(&p, &c)| {
                if p == b'd' {
                    c.is_ascii_digit()
                } else {
                    c == p
                }
            });
        if fits {
            out.push_str("TS");
            i += SHAPE.len();
        } else {
            let ch = s[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// Replaces the digits right after each `marker` with `with`.
pub fn mask_after(s: &str, marker: &str, with: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find(marker) {
        out.push_str(&rest[..i + marker.len()]);
        rest = &rest[i + marker.len()..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 {
            out.push_str(with);
            rest = &rest[digits..];
        }
    }
    out.push_str(rest);
    out
}
