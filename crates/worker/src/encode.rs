//! HTTP/1.1 going out: the status line, a response's head and how its body
//! is framed (`Content-Length`, chunked, or the close), the chunked framing
//! of streamed pieces, the worker's own error responses, and the interim
//! `100 Continue`.

use crate::date;
use crate::parse::Version;
use crate::response::{BodyStream, Response, ResponseBody, reason};
use crate::write_buf::OutBody;

/// Response bodies up to this size are copied after the head (one write);
/// larger ones are written with `writev` from where they are.
const COPY_BODY_MAX: usize = 8 * 1024;

/// The interim response sent, once per request, to a client that waits
/// with `Expect: 100-continue` before sending its body.
pub(crate) const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The end of a chunked body (no trailers).
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

pub(crate) struct Serialized {
    pub(crate) body: OutBody,
    pub(crate) body_len: Option<u64>,
    pub(crate) close: bool,
    pub(crate) stream: Option<(BodyStream, bool, Option<u64>)>,
    pub(crate) app_headers: Vec<u8>,
}

/// `n` in decimal.
fn push_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn status_line(out: &mut Vec<u8>, status: u16, phrase: Option<&str>) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_u64(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(phrase.unwrap_or(reason(status)).as_bytes());
    out.extend_from_slice(b"\r\n");
}

pub(crate) const SERVER: &[u8] = b"Server: ferrocorn\r\n";

/// Write the response head into `out` and decide the body framing.
pub(crate) fn serialize(
    resp: Response,
    head_req: bool,
    version: Version,
    keep_alive: bool,
    out: &mut Vec<u8>,
) -> Serialized {
    let mut status = resp.status();
    let mut phrase = resp.reason.as_deref();
    if !(100..=999).contains(&status) {
        status = 500;
        phrase = None;
    }
    let no_body = status < 200 || status == 204 || status == 304;
    let mut close = !keep_alive || resp.close;
    out.clear();
    status_line(out, status, phrase);
    if !resp.has_server {
        out.extend_from_slice(SERVER);
    }
    if !resp.has_date {
        out.extend_from_slice(b"Date: ");
        date::append_date(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(&resp.head);
    let mut stream = None;
    let mut body_len = None;
    let body = match resp.body {
        ResponseBody::Stream(iter) => {
            if no_body {
                body_len = Some(0);
            } else if let Some(n) = resp.content_length {
                out.extend_from_slice(b"Content-Length: ");
                push_u64(out, n);
                out.extend_from_slice(b"\r\n");
                if head_req {
                    body_len = Some(0);
                } else {
                    stream = Some((iter, false, Some(n)));
                }
            } else if head_req {
                body_len = Some(0);
                if version == Version::Http11 {
                    out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
                }
            } else if version == Version::Http11 {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
                stream = Some((iter, true, None));
            } else {
                // HTTP/1.0 without a length: the close delimits the body.
                close = true;
                stream = Some((iter, false, None));
            }
            ResponseBody::Empty
        }
        other => {
            let len = other.bytes().len() as u64;
            if no_body {
                body_len = Some(0);
            } else {
                let advertised = if head_req {
                    resp.content_length.unwrap_or(len)
                } else {
                    len
                };
                out.extend_from_slice(b"Content-Length: ");
                push_u64(out, advertised);
                out.extend_from_slice(b"\r\n");
                body_len = Some(if head_req { 0 } else { len });
            }
            if head_req || no_body {
                ResponseBody::Empty
            } else {
                other
            }
        }
    };
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if version == Version::Http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    let body = match body {
        ResponseBody::Bytes(b) if b.len() <= COPY_BODY_MAX => {
            out.extend_from_slice(&b);
            OutBody::None
        }
        ResponseBody::Static(b) if b.len() <= COPY_BODY_MAX => {
            out.extend_from_slice(b);
            OutBody::None
        }
        ResponseBody::Bytes(b) => OutBody::Bytes(b),
        ResponseBody::Static(b) => OutBody::Static(b),
        _ => OutBody::None,
    };
    Serialized {
        body,
        body_len,
        close,
        stream,
        app_headers: resp.head,
    }
}

/// A complete error response (the connection closes after it).
pub(crate) fn error_response(status: u16, why: &str) -> Vec<u8> {
    let body = format!("{}\n", if why.is_empty() { reason(status) } else { why });
    let mut out = Vec::with_capacity(160 + body.len());
    status_line(&mut out, status, None);
    out.extend_from_slice(SERVER);
    out.extend_from_slice(b"Date: ");
    date::append_date(&mut out);
    out.extend_from_slice(
        b"\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ",
    );
    push_u64(&mut out, body.len() as u64);
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body.as_bytes());
    out
}

/// One piece of a chunked body: its size in hex, the bytes, CRLF.
pub(crate) fn chunk(data: &[u8], out: &mut Vec<u8>) {
    out.reserve(data.len() + 20);
    let mut hex = [0u8; 16];
    let mut i = hex.len();
    let mut n = data.len();
    loop {
        i -= 1;
        hex[i] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&hex[i..]);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::{Response, Version, chunk, serialize};

    fn head_of(resp: Response) -> String {
        let mut out = Vec::new();
        serialize(resp, false, Version::Http11, true, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_apps_reason_phrase_is_sent() {
        let head = head_of(Response::new(299).reason_phrase("My Own Reason"));
        assert!(head.starts_with("HTTP/1.1 299 My Own Reason\r\n"), "{head}");
        let head = head_of(Response::new(200));
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        // A phrase that would split the response is the app's error.
        let resp = Response::new(200).reason_phrase("OK\r\nX-Evil: 1");
        assert!(resp.invalid.is_some());
        // Not for a status the worker replaces.
        let head = head_of(Response::new(1000).reason_phrase("Weird"));
        assert!(
            head.starts_with("HTTP/1.1 500 Internal Server Error\r\n"),
            "{head}"
        );
    }

    #[test]
    fn chunks_carry_their_size_in_lower_case_hex() {
        for (len, size) in [(1usize, "1"), (10, "a"), (255, "ff"), (4096, "1000")] {
            let data = vec![b'x'; len];
            let mut out = Vec::new();
            chunk(&data, &mut out);
            let mut want = format!("{size}\r\n").into_bytes();
            want.extend_from_slice(&data);
            want.extend_from_slice(b"\r\n");
            assert_eq!(out, want, "{len} bytes");
        }
    }
}
