//! gunicorn's `access_log_format`: parsed once into a template, rendered per
//! request into a reused buffer.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use crate::config::ParseError;
use crate::escape::push_escaped;
use crate::time;

/// One finished request, as the access log needs it. Borrowed from the
/// worker's buffers: building one allocates nothing.
#[derive(Debug, Clone, Copy)]
pub struct AccessRecord<'a> {
    /// The peer (`h`); `None` for a Unix socket or when unknown.
    pub remote: Option<SocketAddr>,
    /// Request method (`m`). Empty, with an empty `version`, for a request
    /// the server refused before its request line could be read as
    /// `method target version`: `target` then holds what arrived of the
    /// line, and `r` renders it alone (or `-` when it is empty too).
    pub method: &'a str,
    /// The raw request-target as received, query included (in `r`).
    pub target: &'a str,
    /// Path without the query (`U`).
    pub path: &'a str,
    /// Query string without `?`, empty when none (`q`).
    pub query: &'a str,
    /// Protocol, e.g. `HTTP/1.1` (`H`).
    pub version: &'a str,
    /// Response status code (`s`).
    pub status: u16,
    /// Response body bytes sent; `None` when unknown (`b` renders `-`).
    pub response_bytes: Option<u64>,
    /// Time from the start of the request to the end of the response (`T`, `M`, `D`, `L`).
    pub request_time: Duration,
    /// Request headers as received (`{name}i`, `u`, `f`, `a`).
    pub request_headers: &'a [(&'a str, &'a [u8])],
    /// Response headers as sent (`{name}o`).
    pub response_headers: &'a [(&'a str, &'a [u8])],
    /// The worker's process id (`p`).
    pub pid: u32,
}

/// A CGI/WSGI environ variable a request provides (`{name}e`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum EnvVar {
    RequestMethod,
    PathInfo,
    QueryString,
    RawUri,
    ServerProtocol,
    RemoteAddr,
    RemotePort,
    /// `HTTP_*`: a request header, `-` and `_` equal; duplicates joined by `,`.
    Header(Box<str>),
    /// Anything else: the process environment when the format was parsed.
    Process(Option<Box<[u8]>>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Atom {
    RemoteAddr,
    Ident,
    User,
    Time,
    RequestLine,
    Status,
    Method,
    Path,
    Query,
    Protocol,
    BytesOrDash,
    Bytes,
    Referer,
    UserAgent,
    Seconds,
    Millis,
    Micros,
    DecimalSeconds,
    Pid,
    RequestHeader(Box<str>),
    ResponseHeader(Box<str>),
    Env(EnvVar),
    /// An unknown name: gunicorn renders `-`.
    Missing,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(Box<str>),
    Atom(Atom, Spec),
}

/// The printf part of `%(name)-15s`, `%(s)03d`: Python's %-formatting flags,
/// minimum width and precision, which gunicorn's `format % atoms` applies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Spec {
    /// `-`: pad on the right.
    left: bool,
    /// `0`: pad numbers with zeros (ignored for `s`, as Python does).
    zero: bool,
    /// `+`: a sign before a number; ` `: a space before a positive number.
    sign: Option<u8>,
    /// Minimum width in characters.
    width: usize,
    /// `s`: at most this many characters; `d`: at least this many digits.
    precision: Option<usize>,
    /// A numeric conversion (`d`, `i`, `u`).
    numeric: bool,
}

impl Spec {
    fn is_plain(&self) -> bool {
        self.width == 0 && self.precision.is_none() && self.sign.is_none()
    }

    /// Parses `[flags][width][.precision][hlL]conversion` at the start of
    /// `s`: the spec and the rest after the conversion, or what was found
    /// where a conversion was expected.
    fn parse(s: &str) -> Result<(Spec, &str), Option<char>> {
        let mut spec = Spec::default();
        let mut rest = s;
        while let Some(c) = rest.chars().next() {
            match c {
                '-' => spec.left = true,
                '0' => spec.zero = true,
                '+' => spec.sign = Some(b'+'),
                ' ' => {
                    if spec.sign.is_none() {
                        spec.sign = Some(b' ');
                    }
                }
                '#' => {}
                _ => break,
            }
            rest = &rest[1..];
        }
        let digits = |r: &str| r.bytes().take_while(u8::is_ascii_digit).count();
        let n = digits(rest);
        // A width past this is a typo, not a format (and no line is that long).
        const MAX: usize = 4096;
        let number = |d: &str| d.parse::<usize>().ok().filter(|v| *v <= MAX).ok_or(None);
        if n > 0 {
            spec.width = number(&rest[..n])?;
            rest = &rest[n..];
        }
        if let Some(r) = rest.strip_prefix('.') {
            let n = digits(r);
            spec.precision = Some(if n == 0 { 0 } else { number(&r[..n])? });
            rest = &r[n..];
        }
        rest = rest.trim_start_matches(['h', 'l', 'L']);
        let mut chars = rest.chars();
        match chars.next() {
            Some('s') => {}
            Some('d' | 'i' | 'u') => spec.numeric = true,
            other => return Err(other),
        }
        if !spec.numeric {
            spec.sign = None;
        }
        Ok((spec, chars.as_str()))
    }

    /// Applies the spec to the value rendered at `out[start..]`.
    fn apply(&self, out: &mut Vec<u8>, start: usize) {
        let value = out.split_off(start);
        let chars = |b: &[u8]| b.iter().filter(|&&c| c & 0xc0 != 0x80).count();
        let number = self.numeric && !value.is_empty() && value.iter().all(u8::is_ascii_digit);
        let mut body: &[u8] = &value;
        let mut prefix: &[u8] = &[];
        let sign = [self.sign.unwrap_or(b'+')];
        if number && self.sign.is_some() {
            prefix = &sign;
        }
        if !self.numeric
            && let Some(p) = self.precision
            && chars(body) > p
        {
            // Cut after `p` characters (never inside one).
            let mut seen = 0;
            let end = body
                .iter()
                .position(|&c| {
                    if c & 0xc0 != 0x80 {
                        seen += 1;
                    }
                    seen > p
                })
                .unwrap_or(body.len());
            body = &body[..end];
        }
        let mut zeros = 0;
        if number && let Some(p) = self.precision {
            zeros = p.saturating_sub(body.len());
        }
        let len = prefix.len() + zeros + chars(body);
        let pad = self.width.saturating_sub(len);
        if number && self.zero && !self.left && self.precision.is_none() {
            zeros += pad;
        } else if !self.left {
            out.resize(out.len() + pad, b' ');
        }
        out.extend_from_slice(prefix);
        out.resize(out.len() + zeros, b'0');
        out.extend_from_slice(body);
        if self.left {
            out.resize(out.len() + pad, b' ');
        }
    }
}

/// A compiled `access_log_format`.
///
/// The format is Python %-formatting with a mapping, as gunicorn uses it:
/// `%(name)s` (or `d`/`i`/`u`) inserts an atom, `%%` is a literal `%`.
/// Python's flags, width and precision apply as in gunicorn: `%(h)-15s`
/// (left-aligned in 15 characters), `%(s)5d`, `%(D)08d`, `%(a).20s` (at
/// most 20 characters). Atoms:
///
/// | atom | value |
/// |---|---|
/// | `h` | remote address (`-` when unknown) |
/// | `l` | `-` |
/// | `u` | user name from `Authorization: Basic`, else `-` |
/// | `t` | local time of the log line, `[25/Nov/2026:09:27:47 +0000]` |
/// | `r` | `METHOD TARGET PROTOCOL` |
/// | `s` | status |
/// | `m`, `U`, `q`, `H` | method, path, query, protocol |
/// | `b` | response bytes, `-` when unknown |
/// | `B` | response bytes (`-` when unknown; gunicorn prints `None`) |
/// | `f`, `a` | `Referer`, `User-Agent` (`-` when absent) |
/// | `T`, `M`, `D`, `L` | request time in whole seconds, milliseconds, microseconds, decimal seconds |
/// | `p` | `<pid>` |
/// | `{name}i`, `{name}o` | request / response header (case-insensitive; `-` when absent) |
/// | `{name}e` | a WSGI environ variable of the request (`REMOTE_ADDR`, `HTTP_HOST`, ...), else the process environment at parse time |
///
/// Unknown atom names render `-`, as in gunicorn. Values from the request are
/// escaped so that they can never break a line: `"` as `\"` (gunicorn's
/// escape), `\` as `\\`, control bytes and invalid UTF-8 as `\xNN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogFormat {
    parts: Vec<Part>,
    source: String,
    /// Whether a `t` atom needs the clock.
    needs_time: bool,
    /// Whether atoms show request / response headers.
    uses_request_headers: bool,
    uses_response_headers: bool,
}

impl AccessLogFormat {
    /// Parses a format once; rendering never parses again.
    pub fn parse(format: &str) -> Result<AccessLogFormat, ParseError> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = format;
        while let Some(i) = rest.find('%') {
            lit.push_str(&rest[..i]);
            rest = &rest[i + 1..];
            if let Some(r) = rest.strip_prefix('%') {
                lit.push('%');
                rest = r;
                continue;
            }
            let Some(r) = rest.strip_prefix('(') else {
                return Err(ParseError::new(format!(
                    "access log format {format:?}: a '%' must be followed by '(name)s' or '%'"
                )));
            };
            let Some(close) = r.find(')') else {
                return Err(ParseError::new(format!(
                    "access log format {format:?}: unclosed '%('"
                )));
            };
            let name = &r[..close];
            let after = &r[close + 1..];
            let spec = match Spec::parse(after) {
                Ok((spec, r)) => {
                    rest = r;
                    spec
                }
                Err(other) => {
                    return Err(ParseError::new(format!(
                        "access log format {format:?}: '%({name})' must be followed by 's' (or printf flags, a width and 's' or 'd': '-15s') (found {})",
                        other.map_or_else(|| "the end".to_string(), |c| format!("{c:?}"))
                    )));
                }
            };
            if !lit.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut lit).into_boxed_str()));
            }
            parts.push(Part::Atom(atom(name), spec));
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Literal(lit.into_boxed_str()));
        }
        let needs_time = parts.iter().any(|p| matches!(p, Part::Atom(Atom::Time, _)));
        let uses_request_headers = parts.iter().any(|p| {
            matches!(
                p,
                Part::Atom(
                    Atom::User
                        | Atom::Referer
                        | Atom::UserAgent
                        | Atom::RequestHeader(_)
                        | Atom::Env(EnvVar::Header(_)),
                    _
                )
            )
        });
        let uses_response_headers = parts
            .iter()
            .any(|p| matches!(p, Part::Atom(Atom::ResponseHeader(_), _)));
        Ok(AccessLogFormat {
            parts,
            source: format.to_string(),
            needs_time,
            uses_request_headers,
            uses_response_headers,
        })
    }

    /// The format string it was parsed from.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether a line shows request headers (`u`, `f`, `a`, `{name}i`,
    /// `{HTTP_*}e`): when not, a caller may pass none.
    pub fn uses_request_headers(&self) -> bool {
        self.uses_request_headers
    }

    /// Whether a line shows response headers (`{name}o`): when not, a
    /// caller may pass none.
    pub fn uses_response_headers(&self) -> bool {
        self.uses_response_headers
    }

    /// Appends the line for `rec` (without a newline) to `out`. The `t` atom
    /// takes the current time (the clock is read only if the format has one).
    pub fn render(&self, rec: &AccessRecord<'_>, out: &mut Vec<u8>) {
        let now = if self.needs_time {
            std::time::SystemTime::now()
        } else {
            std::time::UNIX_EPOCH
        };
        self.render_at(rec, now, out);
    }

    /// [`render`](Self::render) with the time of the `t` atom given.
    pub fn render_at(&self, rec: &AccessRecord<'_>, now: std::time::SystemTime, out: &mut Vec<u8>) {
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.extend_from_slice(s.as_bytes()),
                Part::Atom(a, spec) if spec.is_plain() => render_atom(a, rec, now, out),
                Part::Atom(a, spec) => {
                    let start = out.len();
                    render_atom(a, rec, now, out);
                    spec.apply(out, start);
                }
            }
        }
    }
}

impl std::str::FromStr for AccessLogFormat {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AccessLogFormat::parse(s)
    }
}

impl Default for AccessLogFormat {
    fn default() -> Self {
        // The default format always parses.
        AccessLogFormat::parse(crate::config::DEFAULT_ACCESS_LOG_FORMAT).unwrap_or_else(|_| {
            AccessLogFormat {
                parts: Vec::new(),
                source: String::new(),
                needs_time: false,
                uses_request_headers: false,
                uses_response_headers: false,
            }
        })
    }
}

fn atom(name: &str) -> Atom {
    match name {
        "h" => Atom::RemoteAddr,
        "l" => Atom::Ident,
        "u" => Atom::User,
        "t" => Atom::Time,
        "r" => Atom::RequestLine,
        "s" => Atom::Status,
        "m" => Atom::Method,
        "U" => Atom::Path,
        "q" => Atom::Query,
        "H" => Atom::Protocol,
        "b" => Atom::BytesOrDash,
        "B" => Atom::Bytes,
        "f" => Atom::Referer,
        "a" => Atom::UserAgent,
        "T" => Atom::Seconds,
        "M" => Atom::Millis,
        "D" => Atom::Micros,
        "L" => Atom::DecimalSeconds,
        "p" => Atom::Pid,
        _ => braced(name).unwrap_or(Atom::Missing),
    }
}

/// `{name}i`, `{name}o`, `{name}e` (gunicorn lowercases the whole key).
fn braced(name: &str) -> Option<Atom> {
    let inner = name.strip_prefix('{')?;
    let close = inner.rfind('}')?;
    let (key, kind) = (&inner[..close], &inner[close + 1..]);
    let key = key.to_ascii_lowercase().into_boxed_str();
    match kind.to_ascii_lowercase().as_str() {
        "i" => Some(Atom::RequestHeader(key)),
        "o" => Some(Atom::ResponseHeader(key)),
        "e" => Some(Atom::Env(env_var(&inner[..close]))),
        _ => None,
    }
}

fn env_var(name: &str) -> EnvVar {
    let lower = name.to_ascii_lowercase();
    match lower.as_str() {
        "request_method" => EnvVar::RequestMethod,
        "path_info" => EnvVar::PathInfo,
        "query_string" => EnvVar::QueryString,
        "raw_uri" => EnvVar::RawUri,
        "server_protocol" => EnvVar::ServerProtocol,
        "remote_addr" => EnvVar::RemoteAddr,
        "remote_port" => EnvVar::RemotePort,
        "content_type" => EnvVar::Header("content_type".into()),
        "content_length" => EnvVar::Header("content_length".into()),
        _ => match lower.strip_prefix("http_") {
            Some(h) => EnvVar::Header(h.into()),
            None => {
                let value = std::env::var_os(name)
                    .or_else(|| std::env::var_os(name.to_ascii_uppercase()))
                    .map(|v| {
                        use std::os::unix::ffi::OsStrExt;
                        v.as_bytes().to_vec().into_boxed_slice()
                    });
                EnvVar::Process(value)
            }
        },
    }
}

/// The last header named `name` (gunicorn builds a dict: the last one wins).
fn last_header<'a>(headers: &[(&str, &'a [u8])], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .rev()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

/// Header name as a WSGI environ key matches: case-insensitive, `-` == `_`.
fn environ_name_eq(header: &str, key: &str) -> bool {
    header.len() == key.len()
        && header.bytes().zip(key.bytes()).all(|(h, k)| {
            let h = if h == b'-' {
                b'_'
            } else {
                h.to_ascii_lowercase()
            };
            h == k
        })
}

/// Every header matching, joined with `,` (gunicorn's environ for `HTTP_*`).
fn push_environ_header(headers: &[(&str, &[u8])], key: &str, out: &mut Vec<u8>) {
    let mut found = false;
    for (n, v) in headers {
        if environ_name_eq(n, key) {
            if found {
                out.push(b',');
            }
            push_escaped(out, v);
            found = true;
        }
    }
    if !found {
        out.push(b'-');
    }
}

fn push_opt(out: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        Some(v) => push_escaped(out, v),
        None => out.push(b'-'),
    }
}

fn push_num(out: &mut Vec<u8>, n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

struct VecFmt<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for VecFmt<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

fn render_atom(a: &Atom, rec: &AccessRecord<'_>, now: std::time::SystemTime, out: &mut Vec<u8>) {
    let t = rec.request_time;
    match a {
        Atom::RemoteAddr | Atom::Env(EnvVar::RemoteAddr) => match rec.remote {
            Some(SocketAddr::V4(addr)) => {
                // By hand: std's Display goes through the formatting machinery.
                for (i, octet) in addr.ip().octets().into_iter().enumerate() {
                    if i > 0 {
                        out.push(b'.');
                    }
                    push_num(out, u64::from(octet));
                }
            }
            Some(addr) => {
                let _ = write!(VecFmt(out), "{}", addr.ip());
            }
            None => out.push(b'-'),
        },
        Atom::Env(EnvVar::RemotePort) => match rec.remote {
            Some(addr) => push_num(out, u64::from(addr.port())),
            None => out.push(b'-'),
        },
        Atom::Ident | Atom::Missing => out.push(b'-'),
        Atom::User => match basic_auth_user(rec.request_headers) {
            Some(user) => push_escaped(out, user.bytes()),
            None => out.push(b'-'),
        },
        Atom::Time => time::push_clf(out, time::Now::from(now).secs),
        // A request refused before its line could be split (see
        // `AccessRecord::method`): what arrived, or `-`.
        Atom::RequestLine if rec.method.is_empty() && rec.version.is_empty() => {
            if rec.target.is_empty() {
                out.push(b'-');
            } else {
                push_escaped(out, rec.target.as_bytes());
            }
        }
        Atom::RequestLine => {
            push_escaped(out, rec.method.as_bytes());
            out.push(b' ');
            push_escaped(out, rec.target.as_bytes());
            out.push(b' ');
            push_escaped(out, rec.version.as_bytes());
        }
        Atom::Status => push_num(out, u64::from(rec.status)),
        Atom::Method | Atom::Env(EnvVar::RequestMethod) => push_escaped(out, rec.method.as_bytes()),
        Atom::Path | Atom::Env(EnvVar::PathInfo) => push_escaped(out, rec.path.as_bytes()),
        Atom::Query | Atom::Env(EnvVar::QueryString) => push_escaped(out, rec.query.as_bytes()),
        Atom::Env(EnvVar::RawUri) => push_escaped(out, rec.target.as_bytes()),
        Atom::Protocol | Atom::Env(EnvVar::ServerProtocol) => {
            push_escaped(out, rec.version.as_bytes())
        }
        Atom::BytesOrDash | Atom::Bytes => match rec.response_bytes {
            Some(n) => push_num(out, n),
            None => out.push(b'-'),
        },
        Atom::Referer => push_environ_header(rec.request_headers, "referer", out),
        Atom::UserAgent => push_environ_header(rec.request_headers, "user_agent", out),
        Atom::Seconds => push_num(out, t.as_secs()),
        Atom::Millis => push_num(out, t.as_secs() * 1000 + u64::from(t.subsec_millis())),
        Atom::Micros => push_num(out, t.as_secs() * 1_000_000 + u64::from(t.subsec_micros())),
        Atom::DecimalSeconds => {
            push_num(out, t.as_secs());
            out.push(b'.');
            let us = t.subsec_micros();
            let _ = write!(VecFmt(out), "{us:06}");
        }
        Atom::Pid => {
            out.push(b'<');
            push_num(out, u64::from(rec.pid));
            out.push(b'>');
        }
        Atom::RequestHeader(name) => push_opt(out, last_header(rec.request_headers, name)),
        Atom::ResponseHeader(name) => push_opt(out, last_header(rec.response_headers, name)),
        Atom::Env(EnvVar::Header(key)) => push_environ_header(rec.request_headers, key, out),
        Atom::Env(EnvVar::Process(v)) => push_opt(out, v.as_deref()),
    }
}

/// The user name decoded from Basic credentials: on the stack up to 256
/// bytes, on the heap beyond (no fixed bound: an ECR token is `AWS:` and
/// 400 bytes and more).
struct User {
    stack: [u8; 256],
    len: usize,
    heap: Vec<u8>,
    /// The `:` was seen: the rest is the password.
    done: bool,
}

impl User {
    fn new() -> User {
        User {
            stack: [0; 256],
            len: 0,
            heap: Vec::new(),
            done: false,
        }
    }

    fn push(&mut self, b: u8) {
        if self.done {
            return;
        }
        if b == b':' {
            self.done = true;
        } else if self.heap.is_empty() && self.len < self.stack.len() {
            self.stack[self.len] = b;
            self.len += 1;
        } else {
            if self.heap.is_empty() {
                self.heap.extend_from_slice(&self.stack[..self.len]);
            }
            self.heap.push(b);
        }
    }

    fn bytes(&self) -> &[u8] {
        if self.heap.is_empty() {
            &self.stack[..self.len]
        } else {
            &self.heap
        }
    }
}

/// The user of `Authorization: Basic <base64(user:password)>`, as gunicorn
/// finds it: scheme matched case-insensitively, the credentials after the
/// first space, base64-decoded, cut at the first `:`; `None` when anything
/// fails (including a user name that is not UTF-8). Only the user name is
/// kept, whatever the credentials' length.
fn basic_auth_user(headers: &[(&str, &[u8])]) -> Option<User> {
    // gunicorn reads environ HTTP_AUTHORIZATION: duplicates joined with ','.
    let mut value = None;
    for (n, v) in headers {
        if n.eq_ignore_ascii_case("authorization") {
            if value.is_some() {
                return None; // joined duplicates never decode cleanly
            }
            value = Some(*v);
        }
    }
    let value = value?;
    if value.len() < 5 || !value[..5].eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let space = value.iter().position(|&b| b == b' ')?;
    let creds = value[space + 1..].trim_ascii();
    let mut user = User::new();
    base64_decode(creds, |b| user.push(b))?;
    std::str::from_utf8(user.bytes()).ok()?;
    if user.bytes().is_empty() {
        return None; // gunicorn: `user or '-'`
    }
    Some(user)
}

/// Python's `base64.b64decode` (non-validating): characters outside the
/// alphabet are dropped, the rest must be padded to a multiple of 4. Each
/// decoded byte goes to `emit`; `None` when the input does not decode.
fn base64_decode(input: &[u8], mut emit: impl FnMut(u8)) -> Option<()> {
    fn val(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let mut acc = 0u32;
    let mut nbits = 0u32;
    let mut symbols = 0usize;
    let mut pad = 0usize;
    for &c in input {
        if c == b'=' {
            pad += 1;
            continue;
        }
        let Some(v) = val(c) else { continue };
        if pad > 0 {
            return None; // data after padding
        }
        symbols += 1;
        acc = (acc << 6) | v;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            emit((acc >> nbits) as u8);
            acc &= (1 << nbits) - 1;
        }
    }
    if symbols % 4 == 1 || !(symbols + pad).is_multiple_of(4) {
        return None;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(input: &[u8]) -> Option<Vec<u8>> {
        let mut v = Vec::new();
        base64_decode(input, |b| v.push(b)).map(|()| v)
    }

    #[test]
    fn base64_like_python() {
        assert_eq!(decode(b"dXNlcjpwYXNz").unwrap(), b"user:pass");
        assert_eq!(decode(b"YQ==").unwrap(), b"a");
        assert!(decode(b"YQ").is_none(), "missing padding");
        assert!(decode(b"Y").is_none());
        assert_eq!(
            decode(b"dXNl\ncjpw YXNz").unwrap(),
            b"user:pass",
            "non-alphabet bytes dropped"
        );
    }

    /// Issue 19: credentials decoding to more than 256 bytes gave `-`.
    #[test]
    fn basic_user_of_long_credentials() {
        let b64 = |raw: &[u8]| {
            const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            let mut out = Vec::new();
            for c in raw.chunks(3) {
                let n = c
                    .iter()
                    .enumerate()
                    .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
                for i in 0..4 {
                    out.push(if i <= c.len() {
                        A[(n >> (18 - 6 * i) & 63) as usize]
                    } else {
                        b'='
                    });
                }
            }
            out
        };
        let user = |creds: &[u8]| {
            let mut header = b"Basic ".to_vec();
            header.extend_from_slice(&b64(creds));
            let headers = [("Authorization", &header[..])];
            basic_auth_user(&headers).map(|u| u.bytes().to_vec())
        };
        assert_eq!(decode(&b64(b"user:pass")).unwrap(), b"user:pass");
        let token = "t".repeat(400);
        assert_eq!(user(format!("AWS:{token}").as_bytes()).unwrap(), b"AWS");
        let long = "u".repeat(300);
        assert_eq!(
            user(format!("{long}:pw").as_bytes()).unwrap(),
            long.as_bytes()
        );
        assert_eq!(user(long.as_bytes()).unwrap(), long.as_bytes());
        assert_eq!(user(b":pw"), None);
    }

    /// Issue 19: gunicorn's formats with printf flags were refused.
    #[test]
    fn printf_flags_as_python() {
        let rec = AccessRecord {
            remote: Some("10.0.0.1:5000".parse().unwrap()),
            method: "GET",
            target: "/",
            path: "/",
            query: "",
            version: "HTTP/1.1",
            status: 200,
            response_bytes: Some(42),
            request_time: Duration::from_micros(1500),
            request_headers: &[("User-Agent", "curl/8.5.0 \u{e9}t\u{e9}".as_bytes())],
            response_headers: &[],
            pid: 7,
        };
        let line = |f: &str| {
            let mut out = Vec::new();
            AccessLogFormat::parse(f)
                .unwrap_or_else(|e| panic!("{f}: {e}"))
                .render(&rec, &mut out);
            String::from_utf8(out).unwrap()
        };
        // Each expected value is Python's `f % atoms` with gunicorn's atoms.
        assert_eq!(line("%(h)-15s|"), "10.0.0.1       |");
        assert_eq!(line("%(h)15s|"), "       10.0.0.1|");
        assert_eq!(line("%(s)3d %(s)5d %(s)-5d|"), "200   200 200  |");
        assert_eq!(line("%(D)08d %(D)+d %(D).6d"), "00001500 +1500 001500");
        assert_eq!(line("%(b)05ld %(B)05s"), "00042    42");
        assert_eq!(
            line("%(a).6s|%(a)-16s|"),
            "curl/8|curl/8.5.0 \u{e9}t\u{e9}  |"
        );
        assert_eq!(line("%(h)#-6.4s|"), "10.0  |");
        assert_eq!(line("%(x)3s"), "  -");
        assert!(AccessLogFormat::parse("%(h)-s %(h).s").is_ok());
        for bad in [
            "%(h)-15",
            "%(h)-15x",
            "%(h)*s",
            "%(h)99999999999999999999s",
            "%(h)5000s",
        ] {
            assert!(AccessLogFormat::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parse_errors() {
        assert!(AccessLogFormat::parse("%(h)").is_err());
        assert!(AccessLogFormat::parse("%(h").is_err());
        assert!(AccessLogFormat::parse("100% sure").is_err());
        assert!(AccessLogFormat::parse("%(h)x").is_err());
        assert!(AccessLogFormat::parse("100%% %(h)s %(s)d").is_ok());
    }
}
