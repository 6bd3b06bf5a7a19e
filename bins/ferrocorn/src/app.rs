//! The built-in apps, chosen with `--app`: enough to try a deployment's load
//! balancer, timeouts and graceful drains by hand.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use ferrocorn_worker::{App, Request, Response};

use crate::config::AppName;

/// The longest `/delay/MS` sleeps: a minute.
pub const MAX_DELAY_MS: u64 = 60_000;

/// The most of a request body `/echo` sends back (the rest is read and counted).
pub const MAX_ECHO_BODY: usize = 1 << 20;

/// The app named `name`.
pub fn builtin(name: AppName) -> Arc<dyn App> {
    match name {
        AppName::Demo => Arc::new(Demo),
        AppName::Hello => Arc::new(Hello),
    }
}

/// `text/plain` with a body that is not copied.
fn static_text(status: u16, body: &'static str) -> Response {
    Response::new(status)
        .header("Content-Type", "text/plain; charset=utf-8")
        .body(body)
}

/// "Hello, world!" for every request: a baseline for benchmarks.
struct Hello;

impl App for Hello {
    fn call(&self, _req: &mut Request<'_>) -> Response {
        static_text(200, "Hello, world!\n")
    }

    fn nonblocking(&self, _method: &str, _path: &str) -> bool {
        true
    }
}

/// `/`, `/healthz`, `/echo`, `/delay/MS`, `/status/CODE`.
struct Demo;

impl App for Demo {
    fn call(&self, req: &mut Request<'_>) -> Response {
        let path = req.path();
        if path == "/echo" {
            return echo(req);
        }
        if !matches!(req.method(), "GET" | "HEAD") {
            return Response::text(405, "method not allowed: use GET (or /echo)\n")
                .header("Allow", "GET, HEAD");
        }
        if path == "/" {
            return static_text(
                200,
                concat!(
                    "ferrocorn ",
                    env!("CARGO_PKG_VERSION"),
                    ": it works. Try /healthz, /echo, /delay/MS, /status/CODE.\n"
                ),
            );
        }
        if path == "/healthz" {
            return static_text(200, "ok\n");
        }
        if let Some(ms) = path.strip_prefix("/delay/") {
            return delay(ms);
        }
        if let Some(code) = path.strip_prefix("/status/") {
            return status(code);
        }
        Response::text(404, "not found\n")
    }

    /// `/`, `/healthz` and `/status/CODE` answer at once, without reading a
    /// body: the worker runs them on its event loop. `/echo` reads the body
    /// and `/delay/MS` sleeps, so they (and anything else) go to the pool.
    fn nonblocking(&self, _method: &str, path: &str) -> bool {
        path == "/" || path == "/healthz" || path.starts_with("/status/")
    }
}

/// The request back as JSON: method, target, path, query, version, headers
/// (names lower-cased, repeated ones joined with ", ") and body.
fn echo(req: &mut Request<'_>) -> Response {
    let mut headers = serde_json::Map::new();
    for (name, value) in req.headers() {
        let name = name.to_ascii_lowercase();
        let value = String::from_utf8_lossy(value);
        match headers.get_mut(&name) {
            Some(serde_json::Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(&value);
            }
            _ => {
                headers.insert(name, serde_json::Value::String(value.into_owned()));
            }
        }
    }
    let method = req.method();
    let target = req.target();
    let path = req.path();
    let query = req.query();
    let version = req.version().as_str();
    let mut body = Vec::new();
    let mut total: u64 = 0;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match req.body().read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                total += n as u64;
                let room = MAX_ECHO_BODY.saturating_sub(body.len());
                body.extend_from_slice(&chunk[..n.min(room)]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Response::text(400, &format!("cannot read the request body: {e}\n"));
            }
        }
    }
    let json = serde_json::json!({
        "method": method,
        "target": target,
        "path": path,
        "query": query,
        "version": version,
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
        "body_length": total,
        "body_truncated": total > body.len() as u64,
    });
    let mut text = json.to_string();
    text.push('\n');
    Response::json(200, text)
}

fn delay(ms: &str) -> Response {
    let Ok(ms) = ms.parse::<u64>() else {
        return Response::text(400, "usage: /delay/MS with MS a number of milliseconds\n");
    };
    let ms = ms.min(MAX_DELAY_MS);
    std::thread::sleep(Duration::from_millis(ms));
    Response::text(200, &format!("waited {ms} ms\n"))
}

fn status(code: &str) -> Response {
    match code.parse::<u16>() {
        Ok(code @ 200..=599) => match code {
            // No body allowed.
            204 | 304 => Response::new(code),
            _ => Response::text(
                code,
                &format!("{code} {}\n", ferrocorn_worker::reason(code)),
            ),
        },
        _ => Response::text(400, "usage: /status/CODE with CODE in 200..=599\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_requests_that_cannot_block_run_inline() {
        let demo = builtin(AppName::Demo);
        for path in ["/", "/healthz", "/status/204", "/status/nope"] {
            assert!(demo.nonblocking("GET", path), "{path}");
        }
        for path in ["/echo", "/delay/100", "/delay/", "/elsewhere"] {
            assert!(!demo.nonblocking("POST", path), "{path}");
        }
        assert!(builtin(AppName::Hello).nonblocking("POST", "/anything"));
    }
}
