//! Requests the worker answers itself (400 for a bad request line or
//! framing, 408 for a head that did not arrive in time, 413, 431, 501):
//! counted in `requests_total{method,status}` and the duration histogram
//! and written to the access log like any answered request, so that a proxy
//! sending malformed requests, or a slowloris, shows in dashboards (nginx
//! logs these too).
//!
//! What is known of such a request is what the client sent of its head. The
//! access log gets its request line as far as it is printable, split into
//! method, target and version when it has that shape; the method label of
//! the metrics is bounded as always (anything else is `other`).

use std::net::SocketAddr;
use std::time::Duration;

use crate::pool::Shared;
use crate::response::header_lines;
use ferrocorn_log::AccessRecord;

/// The request line of a refused request, as far as it can be read.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Line<'a> {
    /// The method; empty when the line does not have three parts.
    pub(crate) method: &'a str,
    /// The request-target; the whole printable line when it does not have
    /// three parts; empty when nothing printable arrived.
    pub(crate) target: &'a str,
    pub(crate) path: &'a str,
    pub(crate) query: &'a str,
    /// `HTTP/...`; empty when the line does not end in one.
    pub(crate) version: &'a str,
}

/// The longest request line kept (gunicorn's largest `limit_request_line`).
const MAX_LINE: usize = 8190;

/// The first line of `head`: after at most the stray empty lines the parser
/// allows, up to the first CR or LF (or [`MAX_LINE`] bytes), cut at the
/// first byte that is not printable (a control byte, or bytes that are not
/// UTF-8: a TLS handshake sent to a plain port gives an empty line).
pub(crate) fn request_line(head: &[u8]) -> Line<'_> {
    let mut start = 0;
    while start < head.len().min(4) && matches!(head[start], b'\r' | b'\n') {
        start += 1;
    }
    let rest = &head[start..head.len().min(start + MAX_LINE)];
    let end = rest
        .iter()
        .position(|&b| b < 0x20 || b == 0x7f)
        .unwrap_or(rest.len());
    let printable = match std::str::from_utf8(&rest[..end]) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&rest[..e.valid_up_to()]).unwrap_or_default(),
    };
    let mut parts = printable.splitn(3, ' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(method), Some(target), Some(version))
            if !method.is_empty()
                && !target.is_empty()
                && version.starts_with("HTTP/")
                && !version.contains(' ') =>
        {
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            Line {
                method,
                target,
                path,
                query,
                version,
            }
        }
        _ => Line {
            target: printable,
            ..Line::default()
        },
    }
}

/// Counts and logs a response the worker sent itself: `head` is what
/// arrived of the request, `response` the whole response sent.
pub(crate) fn record(
    shared: &Shared,
    head: &[u8],
    peer: Option<SocketAddr>,
    status: u16,
    response: &[u8],
    took: Duration,
) {
    let line = request_line(head);
    shared.metrics.request(line.method, status, took);
    let Some(access) = &shared.access else {
        return;
    };
    let (resp_head, body) = match response.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => (&response[..i + 2], &response[i + 4..]),
        None => (response, &[][..]),
    };
    let mut resp_headers: Vec<(&str, &[u8])> = Vec::new();
    if access.format().uses_response_headers() {
        resp_headers.extend(header_lines(resp_head));
    }
    access.log(&AccessRecord {
        remote: peer,
        method: line.method,
        target: line.target,
        path: line.path,
        query: line.query,
        version: line.version,
        status,
        response_bytes: Some(body.len() as u64),
        request_time: took,
        request_headers: &[],
        response_headers: &resp_headers,
        pid: shared.pid,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_well_formed_line_is_split() {
        let l = request_line(b"GET s://]ufd/echo?a=1 HTTP/1.1\r\nHost: x\r\n");
        assert_eq!(
            l,
            Line {
                method: "GET",
                target: "s://]ufd/echo?a=1",
                path: "s://]ufd/echo",
                query: "a=1",
                version: "HTTP/1.1",
            }
        );
        // Stray empty lines before it, as the parser allows.
        assert_eq!(request_line(b"\r\nPOST / HTTP/1.0\r\n").method, "POST");
    }

    #[test]
    fn anything_else_is_kept_whole_as_far_as_printable() {
        for (head, want) in [
            (&b"GET /partial"[..], "GET /partial"),
            (b"GET / HTTP/1.1 extra\r\n", "GET / HTTP/1.1 extra"),
            (b"GET /a\x00b HTTP/1.1\r\n", "GET /a"),
            (b"hello world\r\n", "hello world"),
            (b"\x16\x03\x01\x02\x00", ""),
            (b"", ""),
            (b"caf\xc3\xa9 \xff\xfe", "caf\u{e9} "),
        ] {
            let l = request_line(head);
            assert_eq!((l.method, l.target, l.version), ("", want, ""), "{head:?}");
        }
    }

    #[test]
    fn a_long_line_is_cut() {
        let long = vec![b'a'; 20_000];
        assert_eq!(request_line(&long).target.len(), MAX_LINE);
    }
}
