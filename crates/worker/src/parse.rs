//! The request parser: pure functions over byte slices, no I/O.
//!
//! [`parse_head`] reads a request head (request line and header fields) with
//! [`httparse`] and then makes the checks httparse leaves to the caller, the
//! ones request smuggling relies on: conflicting or list-valued
//! `Content-Length`, `Transfer-Encoding` with `Content-Length`, unknown or
//! repeated transfer codings, chunked on HTTP/1.0, duplicate `Host`, missing
//! `Host` on HTTP/1.1, bare LF line endings, malformed request targets and
//! methods (gunicorn 22-26 hardening, CVE-2024-1135, CVE-2024-6827).
//! [`ChunkedDecoder`] decodes a chunked body incrementally, strictly.
//!
//! Everything here is a pure function of its input so it can be fuzzed
//! (`fuzz/` at the repository root) and replayed from a corpus in tests.

use std::mem::MaybeUninit;

/// HTTP version of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    /// `HTTP/1.0`
    Http10,
    /// `HTTP/1.1`
    Http11,
}

impl Version {
    /// The version as it appears on the request line, `HTTP/1.1`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

/// Size limits on a request head, gunicorn's `limit_request_*` settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest request line in bytes, without CRLF (0 = 8190, gunicorn's maximum).
    pub request_line: usize,
    /// Most header fields (0 = 32768, gunicorn's maximum).
    pub fields: usize,
    /// Longest header field line in bytes, counted as gunicorn counts it:
    /// the line as received (`name: value`) plus its CRLF (0 = 8190; at most
    /// [`MAX_FIELD_SIZE`]).
    pub field_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            request_line: 4094,
            fields: 100,
            field_size: 8190,
        }
    }
}

/// The largest `field_size` honoured. gunicorn honours any value above its
/// 8190 default (operators raise it for large cookies and tokens); ferrocorn
/// honours up to this much and the binary refuses more, so that the head
/// buffer of one connection stays bounded.
pub const MAX_FIELD_SIZE: usize = 65536;

/// The most header fields honoured, gunicorn's `MAX_HEADERS`.
pub const MAX_FIELDS: usize = 32768;

impl Limits {
    /// The limits as applied: 0 and values above 8190 mean 8190 for the
    /// request line (gunicorn's maximum); 0 means 8190 for the field size,
    /// larger values are honoured as gunicorn does, up to
    /// [`MAX_FIELD_SIZE`]; 0 and values above 32768 mean 32768 fields
    /// (gunicorn's maximum: a config file with `limit_request_fields = 0`
    /// refuses no request for its header count).
    pub fn normalized(self) -> Limits {
        let clamp = |v: usize| if v == 0 || v > 8190 { 8190 } else { v };
        Limits {
            request_line: clamp(self.request_line),
            fields: match self.fields {
                0 => MAX_FIELDS,
                v => v.min(MAX_FIELDS),
            },
            field_size: match self.field_size {
                0 => 8190,
                v => v.min(MAX_FIELD_SIZE),
            },
        }
    }

    /// The largest head the limits allow, after any empty lines sent first: a
    /// buffer holding more of it without a whole head is too large (bytes).
    pub fn max_head(&self) -> usize {
        let l = self.normalized();
        (l.request_line + 2) + l.fields * (l.field_size + 2) + 2
    }
}

/// Why a request was refused, with the status code to answer before closing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// 400, 413, 431 or 501.
    pub status: u16,
    /// A short description for the response body and the log.
    pub reason: &'static str,
}

impl ParseError {
    const fn bad(reason: &'static str) -> ParseError {
        ParseError {
            status: 400,
            reason,
        }
    }
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.reason, self.status)
    }
}

impl std::error::Error for ParseError {}

/// A byte range in the buffer a head was parsed from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    /// First byte.
    pub start: u32,
    /// One past the last byte.
    pub end: u32,
}

impl Span {
    fn of(base: &[u8], part: &[u8]) -> Span {
        let start = part.as_ptr() as usize - base.as_ptr() as usize;
        Span {
            start: start as u32,
            end: (start + part.len()) as u32,
        }
    }

    /// The bytes of this span in `buf`.
    pub fn get<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        &buf[self.start as usize..self.end as usize]
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    /// Whether the span is empty.
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// A header field: name and value spans.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeaderSpan {
    /// The field name (a token).
    pub name: Span,
    /// The field value, without surrounding whitespace.
    pub value: Span,
}

/// How the request body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// `Content-Length: n` (n > 0).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed request head. Spans point into the parsed buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// Bytes taken by the head, including the empty line ending it.
    pub len: usize,
    /// The method token.
    pub method: Span,
    /// The raw request target.
    pub target: Span,
    /// The path within the target: up to the `?`, without the scheme and
    /// authority of an absolute-form target (`http://host/p?q` has path `/p`).
    pub path: Span,
    /// The version.
    pub version: Version,
    /// How the body is delimited.
    pub framing: Framing,
    /// Whether the client allows the connection to stay open afterwards.
    pub keep_alive: bool,
    /// `Expect: 100-continue` on an HTTP/1.1 request.
    pub expect_continue: bool,
}

/// Header slots on the stack (4 KiB): enough for gunicorn's default
/// `limit_request_fields` of 100, so a request is parsed without an
/// allocation unless the limit is raised above this.
mod chunked;
pub use chunked::{ChunkedDecoder, Decoded};

const STACK_HEADERS: usize = 128;

fn eq_ic(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

fn is_tchar(b: u8) -> bool {
    matches!(b,
        b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' |
        b'^' | b'_' | b'`' | b'|' | b'~' | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z')
}

/// Parse a request head from the start of `buf`.
///
/// Returns `Ok(None)` when `buf` holds only part of a head that may still
/// become valid (read more), `Ok(Some(head))` with the header spans in
/// `headers` (cleared first), or the error to answer.
pub fn parse_head(
    buf: &[u8],
    limits: &Limits,
    headers: &mut Vec<HeaderSpan>,
) -> Result<Option<Head>, ParseError> {
    let limits = limits.normalized();
    headers.clear();
    // Reject leading empty lines beyond a couple (httparse skips them): a
    // client may send a stray CRLF after a body (RFC 9112 2.2), no more.
    let mut skip = 0;
    while skip < buf.len() && (buf[skip] == b'\r' || buf[skip] == b'\n') {
        skip += 1;
        if skip > 4 {
            return Err(ParseError::bad("invalid request line"));
        }
    }
    let result = if limits.fields <= STACK_HEADERS {
        let mut stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_HEADERS];
        parse_with(buf, &limits, headers, &mut stack[..limits.fields])
    } else {
        let mut heap = Vec::with_capacity(limits.fields);
        heap.resize_with(limits.fields, MaybeUninit::uninit);
        parse_with(buf, &limits, headers, &mut heap)
    };
    match result {
        Ok(Some(head)) => Ok(Some(head)),
        Ok(None) => {
            // Incomplete: refuse early once a limit is already exceeded.
            check_partial(buf, &limits)?;
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

fn check_partial(buf: &[u8], limits: &Limits) -> Result<(), ParseError> {
    // Empty lines before the request line are skipped (as httparse skips
    // them), not counted as the request line and a field.
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let rest = &buf[start..];
    let line_end = rest.iter().position(|&b| b == b'\n');
    match line_end {
        None => {
            if rest.len() > limits.request_line + 1 {
                return Err(ParseError::bad("request line too long"));
            }
        }
        Some(end) => {
            let line = trim_cr(&rest[..end]);
            if line.len() > limits.request_line {
                return Err(ParseError::bad("request line too long"));
            }
            // Header lines seen so far.
            let mut count = 0;
            for line in rest[end + 1..].split(|&b| b == b'\n') {
                let line = trim_cr(line);
                // As gunicorn: the line with its CRLF (the last piece may
                // still lack it, but it will end with one).
                if !line.is_empty() && line.len() + 2 > limits.field_size {
                    return Err(ParseError {
                        status: 431,
                        reason: "request header field too large",
                    });
                }
                count += 1;
            }
            // The last piece may be an incomplete line.
            if count > limits.fields + 1 {
                return Err(ParseError {
                    status: 431,
                    reason: "too many request header fields",
                });
            }
        }
    }
    if buf.len() > start + limits.max_head() {
        return Err(ParseError {
            status: 431,
            reason: "request header fields too large",
        });
    }
    Ok(())
}

fn trim_cr(line: &[u8]) -> &[u8] {
    match line {
        [rest @ .., b'\r'] => rest,
        _ => line,
    }
}

fn parse_with<'b>(
    buf: &'b [u8],
    limits: &Limits,
    out: &mut Vec<HeaderSpan>,
    storage: &mut [MaybeUninit<httparse::Header<'b>>],
) -> Result<Option<Head>, ParseError> {
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, storage) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ParseError {
                status: 431,
                reason: "too many request header fields",
            });
        }
        Err(httparse::Error::Version) => return Err(ParseError::bad("invalid HTTP version")),
        Err(httparse::Error::Token) => return Err(ParseError::bad("invalid request method")),
        Err(httparse::Error::HeaderName) => return Err(ParseError::bad("invalid header name")),
        Err(httparse::Error::HeaderValue) => return Err(ParseError::bad("invalid header value")),
        Err(_) => return Err(ParseError::bad("invalid request line")),
    };
    let head_bytes = &buf[..len];
    // httparse accepts bare LF as a line ending; a proxy in front may not
    // (a smuggling vector): require CRLF everywhere in the head.
    let mut prev = 0u8;
    for &b in head_bytes {
        if b == b'\n' && prev != b'\r' {
            return Err(ParseError::bad("bare LF in request head"));
        }
        prev = b;
    }
    let method = req.method.unwrap_or_default();
    let target = req.path.unwrap_or_default();
    let version = if req.version == Some(0) {
        Version::Http10
    } else {
        Version::Http11
    };
    // Request line length: from the method to the end of the version.
    let line_start = method.as_ptr() as usize - buf.as_ptr() as usize;
    let line_len = head_bytes[line_start..]
        .iter()
        .position(|&b| b == b'\r')
        .unwrap_or(0);
    if line_len > limits.request_line {
        return Err(ParseError::bad("request line too long"));
    }
    check_method(method.as_bytes())?;
    check_target(method.as_bytes(), target.as_bytes())?;

    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut has_te = false;
    let mut host = false;
    let mut content_type = false;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut expect_continue = false;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        let value = h.value;
        if field_line_len(head_bytes, name, value) > limits.field_size {
            return Err(ParseError {
                status: 431,
                reason: "request header field too large",
            });
        }
        if value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(ParseError::bad("invalid header value"));
        }
        let value = trim_ows(value);
        out.push(HeaderSpan {
            name: Span::of(buf, name),
            value: Span::of(buf, value),
        });
        match name.len() {
            4 if eq_ic(name, "host") => {
                if host {
                    return Err(ParseError::bad("duplicate Host header"));
                }
                host = true;
            }
            6 if eq_ic(name, "expect") && eq_ic(value, "100-continue") => {
                expect_continue = true;
            }
            10 if eq_ic(name, "connection") => {
                for token in value.split(|&b| b == b',') {
                    let token = trim_ows(token);
                    if eq_ic(token, "close") {
                        conn_close = true;
                    } else if eq_ic(token, "keep-alive") {
                        conn_keep_alive = true;
                    }
                }
            }
            12 if eq_ic(name, "content-type") => {
                if content_type {
                    return Err(ParseError::bad("duplicate Content-Type header"));
                }
                content_type = true;
            }
            14 if eq_ic(name, "content-length") => {
                if content_length.is_some() {
                    return Err(ParseError::bad("duplicate Content-Length header"));
                }
                content_length = Some(parse_content_length(value)?);
            }
            17 if eq_ic(name, "transfer-encoding") => {
                has_te = true;
                for coding in value.split(|&b| b == b',') {
                    let coding = trim_ows(coding);
                    if chunked {
                        // Nothing may follow chunked, not even another chunked.
                        return Err(ParseError::bad("chunked must be the last transfer coding"));
                    }
                    if eq_ic(coding, "chunked") {
                        chunked = true;
                    } else if ["gzip", "x-gzip", "deflate", "compress", "x-compress"]
                        .iter()
                        .any(|c| eq_ic(coding, c))
                    {
                        return Err(ParseError {
                            status: 501,
                            reason: "unsupported transfer coding",
                        });
                    } else {
                        return Err(ParseError::bad("unknown transfer coding"));
                    }
                }
            }
            _ => {}
        }
    }
    if version == Version::Http11 && !host {
        return Err(ParseError::bad("missing Host header"));
    }
    if has_te {
        if version == Version::Http10 {
            return Err(ParseError::bad("Transfer-Encoding on HTTP/1.0"));
        }
        if content_length.is_some() {
            return Err(ParseError::bad("both Content-Length and Transfer-Encoding"));
        }
        if !chunked {
            return Err(ParseError::bad("chunked must be the last transfer coding"));
        }
    }
    let framing = if chunked {
        Framing::Chunked
    } else {
        match content_length {
            Some(0) | None => Framing::None,
            Some(n) => Framing::Length(n),
        }
    };
    let keep_alive = match version {
        Version::Http11 => !conn_close,
        Version::Http10 => conn_keep_alive && !conn_close,
    };
    let target_span = Span::of(buf, target.as_bytes());
    let t = target.as_bytes();
    let path_end = t.iter().position(|&b| b == b'?').unwrap_or(t.len());
    let path_start = match t.windows(3).position(|w| w == b"://") {
        // absolute-form: the path starts at the first '/' after the authority
        Some(i) if t[0] != b'/' => t[i + 3..path_end]
            .iter()
            .position(|&b| b == b'/')
            .map_or(path_end, |p| i + 3 + p),
        _ => 0,
    };
    let path = Span {
        start: target_span.start + path_start as u32,
        end: target_span.start + path_end as u32,
    };
    Ok(Some(Head {
        len,
        method: Span::of(buf, method.as_bytes()),
        target: target_span,
        path,
        version,
        framing,
        keep_alive,
        expect_continue: expect_continue && version == Version::Http11,
    }))
}

/// The length of a header field line as gunicorn counts it for
/// `limit_request_field_size`: from the name to the end of the line as
/// received (whitespace around the value included), plus its CRLF.
fn field_line_len(head: &[u8], name: &[u8], value: &[u8]) -> usize {
    let base = head.as_ptr() as usize;
    let start = name.as_ptr() as usize - base;
    // The scan for the line end starts after the value, when httparse gave
    // one inside the head (an empty value may point anywhere).
    let value_end = (value.as_ptr() as usize)
        .checked_sub(base)
        .map(|v| v + value.len())
        .filter(|&v| !value.is_empty() && v <= head.len() && v >= start);
    let from = value_end.unwrap_or(start + name.len());
    match head[from..].iter().position(|&b| b == b'\n') {
        // The LF is the line's last byte: CRLF included.
        Some(lf) => from + lf + 1 - start,
        None => head.len() - start,
    }
}

fn check_method(method: &[u8]) -> Result<(), ParseError> {
    // gunicorn's default (permit_unconventional_http_method off): 3 to 20
    // characters, upper case letters, digits and a few punctuation marks.
    let ok = (3..=20).contains(&method.len())
        && method
            .iter()
            .all(|&b| matches!(b, b'A'..=b'Z' | b'0'..=b'9' | b'$' | b'_' | b'.' | b'-'))
        && method.iter().any(|b| b.is_ascii_uppercase());
    if ok {
        Ok(())
    } else {
        Err(ParseError::bad("invalid request method"))
    }
}

fn check_target(method: &[u8], target: &[u8]) -> Result<(), ParseError> {
    let bad = || Err(ParseError::bad("invalid request target"));
    // Only visible ASCII: raw UTF-8 or other bytes above 0x7f must be
    // percent-encoded (RFC 3986); found by fuzzing (httparse lets them by).
    if target.is_empty() || target.iter().any(|&b| b <= 0x20 || b >= 0x7f) {
        return bad();
    }
    // No form of request-target has a fragment (RFC 9112 3.2): a `#` would
    // land in the path or the query.
    if target.contains(&b'#') {
        return bad();
    }
    if method == b"CONNECT" {
        // authority-form: host:port
        if target.starts_with(b"/") || !is_authority(target, true) {
            return bad();
        }
        return Ok(());
    }
    match target[0] {
        b'/' => Ok(()),
        b'*' if target.len() == 1 && method == b"OPTIONS" => Ok(()),
        _ => {
            // absolute-form: scheme "://" ...
            let scheme_end = target.iter().position(|&b| b == b':');
            match scheme_end {
                Some(i)
                    if i > 0
                        && target[0].is_ascii_alphabetic()
                        && target[..i]
                            .iter()
                            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(b))
                        && target[i..].starts_with(b"://") =>
                {
                    let rest = &target[i + 3..];
                    let end = rest
                        .iter()
                        .position(|&b| b == b'/' || b == b'?')
                        .unwrap_or(rest.len());
                    if is_authority(&rest[..end], false) {
                        Ok(())
                    } else {
                        bad()
                    }
                }
                _ => bad(),
            }
        }
    }
}

/// Whether `a` is an authority an HTTP server accepts (RFC 3986 3.2, RFC
/// 9110 4.2): `host [":" port]` with a non-empty host (a reg-name, an IPv4
/// address, or an IP-literal in brackets) and a port of digits, required
/// when `need_port` (CONNECT's authority-form). No userinfo: RFC 9110 4.2.4
/// asks a recipient to treat one as an error.
fn is_authority(a: &[u8], need_port: bool) -> bool {
    let (host_ok, rest) = if let Some(inner) = a.strip_prefix(b"[") {
        match inner.iter().position(|&b| b == b']') {
            Some(j) => (is_ip_literal(&inner[..j]), &inner[j + 1..]),
            None => return false,
        }
    } else {
        let end = a.iter().position(|&b| b == b':').unwrap_or(a.len());
        (is_reg_name(&a[..end]), &a[end..])
    };
    let port_ok = match rest {
        [] => !need_port,
        [b':', port @ ..] => {
            (!need_port || !port.is_empty()) && port.iter().all(u8::is_ascii_digit)
        }
        _ => false,
    };
    host_ok && port_ok
}

fn is_unreserved_or_sub_delim(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b)
}

/// A non-empty reg-name or IPv4 address: unreserved, sub-delims and
/// percent-encoded bytes.
fn is_reg_name(h: &[u8]) -> bool {
    let mut i = 0;
    while i < h.len() {
        match h[i] {
            b'%' if h.len() > i + 2
                && h[i + 1].is_ascii_hexdigit()
                && h[i + 2].is_ascii_hexdigit() =>
            {
                i += 3;
            }
            b if is_unreserved_or_sub_delim(b) => i += 1,
            _ => return false,
        }
    }
    !h.is_empty()
}

/// The inside of `[...]`: an IPv6 address (with an optional RFC 6874 zone,
/// `%25` and a name) or an IPvFuture (`v` hex `.` ...).
fn is_ip_literal(h: &[u8]) -> bool {
    if let [b'v' | b'V', rest @ ..] = h {
        let dot = rest.iter().position(|&b| b == b'.');
        return match dot {
            Some(d) => {
                d > 0
                    && rest[..d].iter().all(u8::is_ascii_hexdigit)
                    && rest.len() > d + 1
                    && rest[d + 1..]
                        .iter()
                        .all(|&b| is_unreserved_or_sub_delim(b) || b == b':')
            }
            None => false,
        };
    }
    let (addr, zone) = match h.windows(3).position(|w| w == b"%25") {
        Some(z) => (&h[..z], Some(&h[z + 3..])),
        None => (h, None),
    };
    let addr_ok = std::str::from_utf8(addr).is_ok_and(|s| s.parse::<std::net::Ipv6Addr>().is_ok());
    addr_ok && zone.is_none_or(is_reg_name)
}

/// Request-targets and header lines found by a peer's parser corpus
/// (issue 22); kept apart from the main tests module.
#[cfg(test)]
mod issue22_tests;

fn parse_content_length(value: &[u8]) -> Result<u64, ParseError> {
    if value.is_empty() || value.len() > 19 {
        return Err(ParseError::bad("invalid Content-Length"));
    }
    let mut n: u64 = 0;
    for &b in value {
        if !b.is_ascii_digit() {
            return Err(ParseError::bad("invalid Content-Length"));
        }
        n = n * 10 + u64::from(b - b'0');
    }
    Ok(n)
}

/// Whether `name` is a valid header field name (an RFC 9110 token).
pub fn is_token(name: &[u8]) -> bool {
    !name.is_empty() && name.iter().all(|&b| is_tchar(b))
}

/// Whether `value` may be sent as a header field value (no CR, LF, NUL or
/// other control bytes except HTAB).
pub fn is_field_value(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// Parse one whole request (head and body) from `buf`, as the worker would:
/// the entry point of the fuzz target and the corpus replay. Returns the
/// head, the decoded body and the bytes consumed, `Ok(None)` when more
/// input is needed.
pub fn parse_request(
    buf: &[u8],
    limits: &Limits,
) -> Result<Option<(Head, Vec<u8>, usize)>, ParseError> {
    let mut headers = Vec::new();
    let Some(head) = parse_head(buf, limits, &mut headers)? else {
        return Ok(None);
    };
    // Every span must lie inside the head.
    for h in &headers {
        debug_assert!(h.name.end as usize <= head.len && h.value.end as usize <= head.len);
    }
    let rest = &buf[head.len..];
    match head.framing {
        Framing::None => Ok(Some((head, Vec::new(), head.len))),
        Framing::Length(n) => {
            if (rest.len() as u64) < n {
                return Ok(None);
            }
            let n = n as usize;
            Ok(Some((head, rest[..n].to_vec(), head.len + n)))
        }
        Framing::Chunked => {
            let mut dec = ChunkedDecoder::new(limits);
            let mut body = Vec::new();
            let d = dec.decode(rest, &mut body)?;
            if d.done {
                Ok(Some((head, body, head.len + d.consumed)))
            } else {
                Ok(None)
            }
        }
    }
}

/// Run the parser over arbitrary input and check its invariants (panics on a
/// violation): the fuzz target's body, and what the corpus replay test runs.
///
/// - a parsed head lies within the input, its spans within the head, its
///   method and target are ASCII, and parsing just the head gives the same;
/// - a chunked body decodes the same in one piece and byte by byte;
/// - tighter limits never turn a refusal into an acceptance.
#[doc(hidden)]
pub fn fuzz_one(data: &[u8]) {
    let limits = Limits::default();
    let mut headers = Vec::new();
    let full = parse_head(data, &limits, &mut headers);
    if let Ok(Some(head)) = &full {
        assert!(head.len <= data.len());
        for s in [head.method, head.target] {
            assert!(s.end as usize <= head.len && s.start <= s.end);
            assert!(s.get(data).is_ascii());
        }
        assert!(head.path.start >= head.target.start && head.path.end <= head.target.end);
        assert!(head.path.start <= head.path.end);
        for h in &headers {
            assert!(h.name.end as usize <= head.len && h.value.end as usize <= head.len);
            assert!(is_token(h.name.get(data)));
            assert!(is_field_value(h.value.get(data)));
        }
        let mut again = Vec::new();
        assert_eq!(
            parse_head(&data[..head.len], &limits, &mut again),
            Ok(Some(*head))
        );
        assert_eq!(again, headers);
        if head.framing == Framing::Chunked {
            check_chunked(&data[head.len..], &limits);
        }
    }
    // Tighter limits: a refusal stays a refusal (maybe another one).
    let tight = Limits {
        request_line: 64,
        fields: 4,
        field_size: 64,
    };
    let tight_result = parse_head(data, &tight, &mut headers);
    if full.is_err() {
        assert!(tight_result.is_err(), "{full:?} vs {tight_result:?}");
    }
    let _ = parse_request(data, &limits);
    // Any input as a chunked body.
    check_chunked(data, &limits);
}

fn check_chunked(body: &[u8], limits: &Limits) {
    let mut whole = ChunkedDecoder::new(limits);
    let mut out_whole = Vec::new();
    let r_whole = whole.decode(body, &mut out_whole);
    let mut bytewise = ChunkedDecoder::new(limits);
    let mut out_bytes = Vec::new();
    let mut consumed = 0;
    let mut r_bytes = Ok(Decoded {
        consumed: 0,
        done: false,
    });
    for b in body {
        match bytewise.decode(std::slice::from_ref(b), &mut out_bytes) {
            Ok(d) => {
                consumed += d.consumed;
                r_bytes = Ok(Decoded {
                    consumed,
                    done: d.done,
                });
                if d.done {
                    break;
                }
            }
            Err(e) => {
                r_bytes = Err(e);
                break;
            }
        }
    }
    match (&r_whole, &r_bytes) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a.done, b.done);
            if a.done {
                assert_eq!(a.consumed, b.consumed);
            }
            assert_eq!(out_whole, out_bytes);
        }
        (Err(a), Err(b)) => assert_eq!(a.status, b.status),
        _ => panic!("chunked decoding differs: {r_whole:?} vs {r_bytes:?}"),
    }
}

#[cfg(test)]
mod tests;
