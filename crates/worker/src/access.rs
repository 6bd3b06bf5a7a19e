//! The access log hook: one record per answered request.
//!
//! Wired to `ferrocorn_log::AccessLog` once that type exists; until then the
//! sink is never constructed and the worker logs no access records.

use std::net::SocketAddr;
use std::time::Duration;

/// Everything an access-log line may need about one request.
#[allow(dead_code)]
pub(crate) struct Record<'a> {
    pub(crate) remote: Option<SocketAddr>,
    pub(crate) method: &'a str,
    pub(crate) target: &'a str,
    pub(crate) path: &'a str,
    pub(crate) query: &'a str,
    pub(crate) version: &'a str,
    pub(crate) status: u16,
    pub(crate) response_bytes: Option<u64>,
    pub(crate) request_time: Duration,
    pub(crate) request_headers: &'a [(&'a str, &'a [u8])],
    pub(crate) response_headers: &'a [(&'a str, &'a [u8])],
    pub(crate) pid: u32,
}

/// Where access records go.
#[derive(Clone)]
pub(crate) enum AccessSink {}

impl AccessSink {
    pub(crate) fn log(&self, _rec: &Record<'_>) {
        match *self {}
    }
}
