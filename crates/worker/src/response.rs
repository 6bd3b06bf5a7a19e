//! What an [`App`](crate::App) answers: status, headers and a body that is
//! bytes or a stream.

use std::io;

use crate::parse::{is_field_value, is_token};

/// A streamed response body: each item is sent as it comes (as a chunk when
/// the response has no `Content-Length`). The iterator runs on a pool thread
/// and may block.
pub type BodyStream = Box<dyn Iterator<Item = io::Result<Vec<u8>>> + Send>;

/// The body of a [`Response`].
pub enum ResponseBody {
    /// No body.
    Empty,
    /// Bytes in memory.
    Bytes(Vec<u8>),
    /// Static bytes (no copy, no allocation).
    Static(&'static [u8]),
    /// A stream of chunks.
    Stream(BodyStream),
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResponseBody::Empty => f.write_str("Empty"),
            ResponseBody::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            ResponseBody::Static(b) => write!(f, "Static({} bytes)", b.len()),
            ResponseBody::Stream(_) => f.write_str("Stream"),
        }
    }
}

impl From<Vec<u8>> for ResponseBody {
    fn from(v: Vec<u8>) -> Self {
        ResponseBody::Bytes(v)
    }
}
impl From<String> for ResponseBody {
    fn from(v: String) -> Self {
        ResponseBody::Bytes(v.into_bytes())
    }
}
impl From<&'static str> for ResponseBody {
    fn from(v: &'static str) -> Self {
        ResponseBody::Static(v.as_bytes())
    }
}
impl From<&'static [u8]> for ResponseBody {
    fn from(v: &'static [u8]) -> Self {
        ResponseBody::Static(v)
    }
}
impl<const N: usize> From<&'static [u8; N]> for ResponseBody {
    fn from(v: &'static [u8; N]) -> Self {
        ResponseBody::Static(v)
    }
}
impl From<BodyStream> for ResponseBody {
    fn from(v: BodyStream) -> Self {
        ResponseBody::Stream(v)
    }
}

impl ResponseBody {
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            ResponseBody::Bytes(b) => b,
            ResponseBody::Static(b) => b,
            _ => &[],
        }
    }
}

/// An HTTP response built by an [`App`](crate::App).
///
/// `Date`, `Server`, `Content-Length` or `Transfer-Encoding`, and
/// `Connection` are added by the worker; a `Content-Length` set by the app is
/// kept for a stream and for `HEAD`, a `Transfer-Encoding` set by the app is
/// dropped (the worker frames the body), `Connection: close` is honoured.
#[derive(Debug)]
pub struct Response {
    status: u16,
    /// The app's own reason phrase, if any (else the standard one).
    pub(crate) reason: Option<Box<str>>,
    /// Header lines, `Name: value\r\n` each, validated on insertion.
    pub(crate) head: Vec<u8>,
    pub(crate) content_length: Option<u64>,
    pub(crate) close: bool,
    pub(crate) has_date: bool,
    pub(crate) has_server: bool,
    pub(crate) invalid: Option<String>,
    pub(crate) body: ResponseBody,
}

impl Response {
    /// A response with this status, no headers and no body.
    pub fn new(status: u16) -> Response {
        Response {
            status,
            reason: None,
            head: Vec::new(),
            content_length: None,
            close: false,
            has_date: false,
            has_server: false,
            invalid: None,
            body: ResponseBody::Empty,
        }
    }

    /// `text/plain; charset=utf-8` with this body.
    pub fn text(status: u16, body: &str) -> Response {
        Response::new(status)
            .header("Content-Type", "text/plain; charset=utf-8")
            .body(body.to_owned())
    }

    /// `application/json` with this body.
    pub fn json(status: u16, body: String) -> Response {
        Response::new(status)
            .header("Content-Type", "application/json")
            .body(body)
    }

    /// Add a header field. A name that is not a token or a value with CR, LF
    /// or other control bytes turns the response into a 500 (and is logged):
    /// no response splitting.
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Response {
        let value = value.as_ref();
        if !is_token(name.as_bytes()) || !is_field_value(value) {
            if self.invalid.is_none() {
                self.invalid = Some(format!("invalid response header {name:?}"));
            }
            return self;
        }
        let n = name.as_bytes();
        let is = |s: &str| n.eq_ignore_ascii_case(s.as_bytes());
        match n.len() {
            4 if is("date") => self.has_date = true,
            6 if is("server") => self.has_server = true,
            10 if is("connection") => {
                if value
                    .split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
                {
                    self.close = true;
                }
                return self;
            }
            14 if is("content-length") => {
                match std::str::from_utf8(value)
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                {
                    Some(n) => self.content_length = Some(n),
                    None => self.invalid = Some("invalid response Content-Length".into()),
                }
                return self;
            }
            17 if is("transfer-encoding") => return self,
            _ => {}
        }
        // Room for the whole line at once (for the first header, for a few
        // more), not a reallocation per piece as the Vec grows.
        let line = n.len() + value.len() + 4;
        let room = if self.head.capacity() == 0 {
            line.max(128)
        } else {
            line
        };
        self.head.reserve(room);
        self.head.extend_from_slice(n);
        self.head.extend_from_slice(b": ");
        self.head.extend_from_slice(value);
        self.head.extend_from_slice(b"\r\n");
        self
    }

    /// Send this reason phrase in the status line instead of the standard
    /// one (`299 My Reason`, as a WSGI app's status says). A phrase with
    /// control characters turns the response into a 500 (and is logged).
    pub fn reason_phrase(mut self, phrase: &str) -> Response {
        if phrase
            .bytes()
            .any(|b| (b < 0x20 && b != b'\t') || b == 0x7f)
        {
            if self.invalid.is_none() {
                self.invalid = Some(format!("invalid reason phrase {phrase:?}"));
            }
            return self;
        }
        self.reason = Some(phrase.into());
        self
    }

    /// Set the body: bytes (`Vec<u8>`, `String`, `&'static str`, ...).
    pub fn body(mut self, body: impl Into<ResponseBody>) -> Response {
        self.body = body.into();
        self
    }

    /// Set a streamed body.
    pub fn stream(mut self, stream: BodyStream) -> Response {
        self.body = ResponseBody::Stream(stream);
        self
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The header fields set by the app (without those the worker adds).
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        header_lines(&self.head)
    }

    /// The body.
    pub fn body_ref(&self) -> &ResponseBody {
        &self.body
    }
}

/// Iterate over `Name: value\r\n` lines.
pub(crate) fn header_lines(head: &[u8]) -> impl Iterator<Item = (&str, &[u8])> + '_ {
    head.split(|&b| b == b'\n').filter_map(|line| {
        let line = line.strip_suffix(b"\r")?;
        let colon = line.iter().position(|&b| b == b':')?;
        let name = std::str::from_utf8(&line[..colon]).ok()?;
        Some((name, line[colon + 1..].trim_ascii_start()))
    })
}

/// The reason phrase of a status code.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        418 => "I'm a teapot",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}
