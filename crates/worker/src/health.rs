//! The health endpoint ([`WorkerConfig::health_path`](crate::WorkerConfig::health_path)):
//! a request for that path is answered by the event loop itself, never by
//! the app, so that a probe tells whether the worker serves even while
//! every pool thread is busy in a slow request (gunicorn #3518), and turns
//! to `503` as soon as the worker stops.

use crate::Response;
use crate::encode;
use crate::parse::{Framing, Head};

/// Whether the request with `head` (parsed from `buf`) is for the health
/// path `path` (the path of the target, without the query, compared byte
/// for byte).
pub(crate) fn is_probe(path: Option<&str>, head: &Head, buf: &[u8]) -> bool {
    path.is_some_and(|p| head.path.get(buf) == p.as_bytes())
}

/// The answer to a probe, serialized into `out`; returns its status and
/// whether the connection closes after it.
///
/// `GET` and `HEAD`: `200 ok` while the worker serves, `503 stopping` (with
/// `Connection: close`) once it stops. Any other method: `405` with `Allow:
/// GET, HEAD` and a close (the path is the server's, not the app's; the
/// caller counts and logs it as a refusal). A
/// request with a body is answered and the connection closed, as the loop
/// does not read the body. Never cached (`Cache-Control: no-store`).
pub(crate) fn answer(
    head: &Head,
    buf: &[u8],
    stopping: bool,
    keep_alive: bool,
    out: &mut Vec<u8>,
) -> (u16, bool) {
    let method = head.method.get(buf);
    let is_head = method == b"HEAD";
    let resp = if is_head || method == b"GET" {
        if stopping {
            Response::text(503, "stopping\n")
        } else {
            Response::text(200, "ok\n")
        }
    } else {
        Response::text(405, "method not allowed\n").header("Allow", "GET, HEAD")
    };
    let status = resp.status();
    let resp = resp.header("Cache-Control", "no-store");
    let keep_alive = keep_alive && status == 200 && head.framing == Framing::None;
    let close = encode::serialize(resp, is_head, head.version, keep_alive, out).close;
    (status, close)
}
