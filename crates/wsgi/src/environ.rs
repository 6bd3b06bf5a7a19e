//! The WSGI environ of a request, built as gunicorn builds it.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use ferrocorn_worker::{Request, Version};

/// Which peers may set `wsgi.url_scheme` through `secure_scheme_headers`
/// (gunicorn's `forwarded_allow_ips`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ForwardedAllow {
    /// `*`: every peer.
    Any,
    /// These addresses and networks (`ADDR` or `ADDR/PREFIX`).
    Networks(Vec<(IpAddr, u8)>),
}

impl Default for ForwardedAllow {
    /// gunicorn's default, `127.0.0.1,::1`.
    fn default() -> Self {
        ForwardedAllow::Networks(vec![
            (IpAddr::from([127, 0, 0, 1]), 32),
            (IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]), 128),
        ])
    }
}

impl std::str::FromStr for ForwardedAllow {
    type Err = String;

    /// A comma-separated list of addresses or CIDR networks, or `*`.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut nets = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part == "*" {
                return Ok(ForwardedAllow::Any);
            }
            let (addr, prefix) = match part.split_once('/') {
                Some((a, p)) => (a, Some(p)),
                None => (part, None),
            };
            let ip: IpAddr = addr
                .parse()
                .map_err(|_| format!("{part:?} is not an IP address or network"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => max,
                Some(p) => match p.parse::<u8>() {
                    Ok(n) if n <= max => n,
                    _ => return Err(format!("{part:?}: bad network prefix")),
                },
            };
            nets.push((ip, prefix));
        }
        Ok(ForwardedAllow::Networks(nets))
    }
}

impl fmt::Display for ForwardedAllow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ForwardedAllow::Any => f.write_str("*"),
            ForwardedAllow::Networks(n) => {
                let parts: Vec<String> = n
                    .iter()
                    .map(|(ip, p)| match (ip, p) {
                        (IpAddr::V4(_), 32) | (IpAddr::V6(_), 128) => ip.to_string(),
                        _ => format!("{ip}/{p}"),
                    })
                    .collect();
                f.write_str(&parts.join(","))
            }
        }
    }
}

impl ForwardedAllow {
    /// Whether a peer is trusted; a unix-socket peer (`None`) always is.
    /// An IPv4-mapped IPv6 address never matches an IPv4 entry (gunicorn).
    pub fn trusts(&self, peer: Option<IpAddr>) -> bool {
        let Some(peer) = peer else {
            return true;
        };
        match self {
            ForwardedAllow::Any => true,
            ForwardedAllow::Networks(nets) => nets.iter().any(|(net, prefix)| match (net, peer) {
                (IpAddr::V4(n), IpAddr::V4(p)) => {
                    let mask = u32::MAX.checked_shl(32 - u32::from(*prefix)).unwrap_or(0);
                    u32::from(*n) & mask == u32::from(p) & mask
                }
                (IpAddr::V6(n), IpAddr::V6(p)) => {
                    let mask = u128::MAX.checked_shl(128 - u32::from(*prefix)).unwrap_or(0);
                    u128::from(*n) & mask == u128::from(p) & mask
                }
                _ => false,
            }),
        }
    }
}

/// gunicorn's default `secure_scheme_headers`.
pub fn default_secure_scheme_headers() -> Vec<(String, String)> {
    vec![
        ("X-FORWARDED-PROTOCOL".into(), "ssl".into()),
        ("X-FORWARDED-PROTO".into(), "https".into()),
        ("X-FORWARDED-SSL".into(), "on".into()),
    ]
}

/// Why a request cannot get an environ: answered with this status.
#[derive(Debug)]
pub(crate) struct Refused {
    pub(crate) status: u16,
    pub(crate) why: String,
}

fn refuse(status: u16, why: impl Into<String>) -> Refused {
    Refused {
        status,
        why: why.into(),
    }
}

/// Everything of the environ that is text, computed without the GIL.
pub(crate) struct Parts {
    /// `(key, value)` with values as latin-1 bytes.
    pub(crate) vars: Vec<(Key, Vec<u8>)>,
    pub(crate) https: bool,
    /// Names of headers dropped for their `_`.
    pub(crate) dropped: Vec<String>,
}

/// The environ keys every request has, and the common headers': their
/// Python strings are made once (interned, hash cached), not per request.
pub(crate) const KNOWN_KEYS: [&str; 22] = [
    "REQUEST_METHOD",
    "SCRIPT_NAME",
    "PATH_INFO",
    "QUERY_STRING",
    "RAW_URI",
    "SERVER_PROTOCOL",
    "REMOTE_ADDR",
    "REMOTE_PORT",
    "SERVER_NAME",
    "SERVER_PORT",
    "CONTENT_TYPE",
    "CONTENT_LENGTH",
    "HTTP_HOST",
    "HTTP_USER_AGENT",
    "HTTP_ACCEPT",
    "HTTP_ACCEPT_ENCODING",
    "HTTP_ACCEPT_LANGUAGE",
    "HTTP_CONNECTION",
    "HTTP_COOKIE",
    "HTTP_REFERER",
    "HTTP_X_FORWARDED_FOR",
    "HTTP_X_FORWARDED_PROTO",
];

/// The index of `name` in [`KNOWN_KEYS`] (a compile-time error if it is
/// not there, in a const context).
const fn known(name: &str) -> usize {
    let mut i = 0;
    while i < KNOWN_KEYS.len() {
        if str_eq(KNOWN_KEYS[i], name) {
            return i;
        }
        i += 1;
    }
    panic!("not a known environ key")
}

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// An environ key: one of [`KNOWN_KEYS`] (by index) or another header's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Key {
    Known(usize),
    Other(String),
}

impl Key {
    fn new(name: String) -> Key {
        match KNOWN_KEYS.iter().position(|k| *k == name) {
            Some(i) => Key::Known(i),
            None => Key::Other(name),
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        match self {
            Key::Known(i) => KNOWN_KEYS[*i],
            Key::Other(s) => s,
        }
    }
}

fn percent_decode(s: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%'
            && i + 2 < s.len()
            && let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// The per-request variables of the environ.
pub(crate) fn parts(
    req: &Request<'_>,
    script_name: &str,
    allow: &ForwardedAllow,
    secure_headers: &[(String, String)],
) -> Result<Parts, Refused> {
    let peer = req.peer_addr();
    let trusted = allow.trusts(peer.map(|p| p.ip()));
    let mut vars: Vec<(Key, Vec<u8>)> = Vec::with_capacity(24);
    let mut dropped = Vec::new();
    let mut script_name = script_name.as_bytes().to_vec();

    // Headers: HTTP_*, CONTENT_TYPE, CONTENT_LENGTH; repeats joined by ",".
    let mut headers: Vec<(Key, Vec<u8>)> = Vec::with_capacity(16);
    for (name, value) in req.headers() {
        if name.contains('_') {
            if trusted && name == "SCRIPT_NAME" {
                script_name = value.to_vec();
            } else {
                dropped.push(name.to_owned());
            }
            continue;
        }
        let upper = name.to_ascii_uppercase().replace('-', "_");
        let key = Key::new(match upper.as_str() {
            "CONTENT_TYPE" | "CONTENT_LENGTH" => upper,
            _ => format!("HTTP_{upper}"),
        });
        match headers.iter_mut().find(|(k, _)| *k == key) {
            Some(_)
                if matches!(
                    key.as_str(),
                    "CONTENT_TYPE" | "CONTENT_LENGTH" | "HTTP_HOST"
                ) =>
            {
                return Err(refuse(400, format!("duplicate header {name}")));
            }
            Some((_, v)) => {
                v.push(b',');
                v.extend_from_slice(value);
            }
            None => headers.push((key, value.to_vec())),
        }
    }

    // wsgi.url_scheme from a trusted proxy's headers.
    let mut https = false;
    if trusted {
        let mut seen: Option<bool> = None;
        for (hname, hvalue) in secure_headers {
            if let Some(v) = req.header(hname) {
                let secure = v == hvalue.as_bytes();
                if seen.is_some_and(|s| s != secure) {
                    return Err(refuse(400, "Contradictory scheme headers"));
                }
                seen = Some(secure);
            }
        }
        https = seen.unwrap_or(false);
    }

    let path = req.path().as_bytes();
    let rest = if script_name.is_empty() {
        path
    } else if let Some(rest) = path.strip_prefix(&script_name[..]) {
        rest
    } else {
        return Err(refuse(400, "Request path does not start with SCRIPT_NAME"));
    };
    // Known keys, looked up at compile time.
    let mut push = |k: usize, v: &[u8]| vars.push((Key::Known(k), v.to_vec()));
    push(const { known("REQUEST_METHOD") }, req.method().as_bytes());
    push(const { known("SCRIPT_NAME") }, &script_name);
    push(const { known("PATH_INFO") }, &percent_decode(rest));
    push(const { known("QUERY_STRING") }, req.query().as_bytes());
    push(const { known("RAW_URI") }, req.target().as_bytes());
    push(
        const { known("SERVER_PROTOCOL") },
        match req.version() {
            Version::Http10 => b"HTTP/1.0",
            _ => b"HTTP/1.1",
        },
    );
    match peer {
        Some(p) => {
            push(
                const { known("REMOTE_ADDR") },
                p.ip().to_string().as_bytes(),
            );
            push(
                const { known("REMOTE_PORT") },
                p.port().to_string().as_bytes(),
            );
        }
        None => push(const { known("REMOTE_ADDR") }, b""),
    }
    let (name, port) = server_name(req.local_addr(), req.header("host"), https);
    push(const { known("SERVER_NAME") }, name.as_bytes());
    push(const { known("SERVER_PORT") }, port.as_bytes());
    vars.extend(headers);
    Ok(Parts {
        vars,
        https,
        dropped,
    })
}

/// SERVER_NAME and SERVER_PORT: the bound address on TCP (gunicorn), the
/// Host header on a unix socket.
fn server_name(local: Option<SocketAddr>, host: Option<&[u8]>, https: bool) -> (String, String) {
    if let Some(a) = local {
        return (a.ip().to_string(), a.port().to_string());
    }
    let default_port = if https { "443" } else { "80" };
    match host.map(|h| String::from_utf8_lossy(h).into_owned()) {
        Some(h) => {
            // [v6]:port, host:port or a bare host.
            let (name, port) = match h.rfind(':') {
                Some(i) if !h[i..].contains(']') => (h[..i].to_owned(), h[i + 1..].to_owned()),
                _ => (h.clone(), default_port.to_owned()),
            };
            (name, port)
        }
        None => (String::new(), String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_allow() {
        let d = ForwardedAllow::default();
        assert!(d.trusts(Some("127.0.0.1".parse().unwrap())));
        assert!(d.trusts(Some("::1".parse().unwrap())));
        assert!(d.trusts(None));
        assert!(!d.trusts(Some("10.0.0.1".parse().unwrap())));
        assert!(!d.trusts(Some("::ffff:127.0.0.1".parse().unwrap())));
        let n: ForwardedAllow = "10.0.0.0/8, 192.168.1.5".parse().unwrap();
        assert!(n.trusts(Some("10.200.3.4".parse().unwrap())));
        assert!(!n.trusts(Some("11.0.0.1".parse().unwrap())));
        assert!(n.trusts(Some("192.168.1.5".parse().unwrap())));
        assert_eq!(n.to_string(), "10.0.0.0/8,192.168.1.5");
        assert_eq!("*".parse::<ForwardedAllow>().unwrap(), ForwardedAllow::Any);
        assert!("10.0.0.0/33".parse::<ForwardedAllow>().is_err());
        assert!("nope".parse::<ForwardedAllow>().is_err());
        let zero: ForwardedAllow = "0.0.0.0/0".parse().unwrap();
        assert!(zero.trusts(Some("8.8.8.8".parse().unwrap())));
    }

    #[test]
    fn decoding() {
        assert_eq!(percent_decode(b"/a%20b%2Fc%e9"), b"/a b/c\xe9");
        assert_eq!(percent_decode(b"/100%"), b"/100%");
        assert_eq!(percent_decode(b"/%zz%4"), b"/%zz%4");
    }

    #[test]
    fn server_names() {
        assert_eq!(
            server_name(
                Some("127.0.0.1:8000".parse().unwrap()),
                Some(b"example.com"),
                false
            ),
            ("127.0.0.1".into(), "8000".into())
        );
        assert_eq!(
            server_name(None, Some(b"example.com:81"), false),
            ("example.com".into(), "81".into())
        );
        assert_eq!(
            server_name(None, Some(b"example.com"), true),
            ("example.com".into(), "443".into())
        );
        assert_eq!(
            server_name(None, None, false),
            (String::new(), String::new())
        );
    }
}
