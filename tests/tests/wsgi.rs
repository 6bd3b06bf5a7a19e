//! Python WSGI apps served by the binary (ferrocorn-wsgi), checked with
//! real clients (curl, Python's http.client, raw sockets): an app wrapped
//! in wsgiref.validate.validator (a PEP 3333 violation by the server is an
//! AssertionError or a WSGIWarning in the error log, which fails the test),
//! a Flask app, a Django 5.2 project, import errors, a virtualenv,
//! --preload and HUP.
//!
//! Flask and Django come from the test venv (`FERROCORN_TEST_PYTHON`, which
//! scripts/test makes from scripts/requirements-test.txt), given to the
//! server as its virtualenv, as a gunicorn installed in it would run.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ferrocorn_tests::{
    Server, assert_clean_failure, children, curl, ferrocorn, request, run_to_end, wait_for,
};

/// The test apps (tests/wsgi).
fn apps() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("wsgi")
}

/// The tests' Python (with Flask, Django): FERROCORN_TEST_PYTHON or python3.
fn python() -> String {
    std::env::var("FERROCORN_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// The virtualenv of the tests' Python; panics with what to do when it is
/// not one or lacks the frameworks.
fn test_venv() -> PathBuf {
    let py = PathBuf::from(python());
    let venv = py
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .filter(|v| v.join("pyvenv.cfg").is_file())
        .unwrap_or_else(|| {
            panic!("FERROCORN_TEST_PYTHON must be a virtualenv's python (run ./scripts/test)")
        });
    let ok = Command::new(&py)
        .args(["-c", "import flask, django"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{} lacks Flask or Django: run ./scripts/test (scripts/requirements-test.txt)",
        py.display()
    );
    venv
}

/// A server for the validated test app, its state directory in the
/// environment as FERROCORN_TEST_STATE.
fn validated_server(state: &Path, extra: &[&str]) -> Server {
    let chdir = apps();
    let mut args = vec![
        "--chdir",
        chdir.to_str().unwrap(),
        "--no-metrics",
        "--log-level",
        "debug",
    ];
    args.extend_from_slice(extra);
    args.push("validated:application");
    Server::builder()
        .env("FERROCORN_TEST_STATE", state)
        .args(args)
        .start()
}

/// The error log holds no validator complaint and no unexpected traceback.
fn assert_no_violation(server: &Server) {
    let err = server.stderr();
    assert!(
        !err.contains("AssertionError") && !err.contains("WSGIWarning"),
        "wsgiref.validate found a PEP 3333 violation:\n{err}"
    );
}

fn lines_of(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Runs a Python http.client script with HOST and PORT set; its stdout.
fn http_client(addr: SocketAddr, script: &str) -> String {
    let out = Command::new(python())
        .args([
            "-c",
            script,
            &addr.ip().to_string(),
            &addr.port().to_string(),
        ])
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "http.client script failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn environ_as_gunicorn_builds_it() {
    let state = tempfile::tempdir().unwrap();
    let server = validated_server(state.path(), &["--threads", "2", "-w", "2"]);
    let r = request(
        server.addr,
        "POST",
        "/environ/a%20b%2Fc%E9?x=1&y=%20",
        &[
            ("Content-Type", "text/plain"),
            ("X-Multi", "a"),
            ("X-Multi", "b"),
            ("X_Forwarded_Proto", "https"),
            ("X-Forwarded-Proto", "http"),
        ],
        b"abc",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", server.stderr());
    let env = r.json();
    assert_eq!(env["REQUEST_METHOD"], "POST");
    assert_eq!(env["SCRIPT_NAME"], "");
    // Percent-decoded, %2F included, as a latin-1 native string.
    assert_eq!(env["PATH_INFO"], "/environ/a b/c\u{e9}");
    assert_eq!(env["QUERY_STRING"], "x=1&y=%20");
    assert_eq!(env["RAW_URI"], "/environ/a%20b%2Fc%E9?x=1&y=%20");
    assert_eq!(env["CONTENT_TYPE"], "text/plain");
    assert_eq!(env["CONTENT_LENGTH"], "3");
    assert_eq!(env["SERVER_NAME"], "127.0.0.1");
    assert_eq!(env["SERVER_PORT"], server.addr.port().to_string());
    assert_eq!(env["SERVER_PROTOCOL"], "HTTP/1.1");
    assert_eq!(env["REMOTE_ADDR"], "127.0.0.1");
    assert!(env["REMOTE_PORT"].as_str().unwrap().parse::<u16>().is_ok());
    assert!(
        env["SERVER_SOFTWARE"]
            .as_str()
            .unwrap()
            .starts_with("ferrocorn/")
    );
    assert_eq!(env["wsgi.version"], serde_json::json!([1, 0]));
    assert_eq!(env["wsgi.multithread"], true);
    assert_eq!(env["wsgi.multiprocess"], true);
    assert_eq!(env["wsgi.run_once"], false);
    assert_eq!(env["wsgi.input_terminated"], true);
    // A trusted peer (127.0.0.1) says http; the underscore spelling that
    // said https never reaches the app.
    assert_eq!(env["wsgi.url_scheme"], "http");
    let headers = env["headers"].as_object().unwrap();
    assert_eq!(headers["HTTP_X_MULTI"], "a,b");
    assert_eq!(headers["HTTP_X_FORWARDED_PROTO"], "http");
    assert!(!headers.contains_key("HTTP_CONTENT_TYPE"), "{headers:?}");
    assert!(!headers.contains_key("HTTP_CONTENT_LENGTH"), "{headers:?}");
    // The drop is said at debug level.
    server.wait_stderr(Duration::from_secs(5), "the debug line", |e| {
        e.contains("X_Forwarded_Proto")
    });

    // From a trusted proxy, X-Forwarded-Proto: https makes it https;
    // contradicting scheme headers are a 400.
    let r = request(
        server.addr,
        "GET",
        "/environ",
        &[("X-Forwarded-Proto", "https")],
        b"",
    )
    .unwrap();
    assert_eq!(r.json()["wsgi.url_scheme"], "https");
    let r = request(
        server.addr,
        "GET",
        "/environ",
        &[("X-Forwarded-Proto", "https"), ("X-Forwarded-Ssl", "off")],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 400);
    // HTTP/1.0 and the Host header seen by curl.
    let out = curl(&["--http1.0", &format!("http://{}/environ", server.addr)]);
    let env: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(env["SERVER_PROTOCOL"], "HTTP/1.0");
    assert_no_violation(&server);
}

#[test]
fn forwarded_allow_ips_decides_who_sets_the_scheme() {
    let state = tempfile::tempdir().unwrap();
    // 127.0.0.1 is not in the list: its X-Forwarded-Proto is ignored.
    let server = validated_server(state.path(), &["--forwarded-allow-ips", "10.0.0.0/8"]);
    let r = request(
        server.addr,
        "GET",
        "/environ",
        &[("X-Forwarded-Proto", "https")],
        b"",
    )
    .unwrap();
    assert_eq!(r.json()["wsgi.url_scheme"], "http");
    drop(server);
    let addr = SocketAddr::from(([127, 0, 0, 1], ferrocorn_tests::free_port())).to_string();
    let server = Server::builder()
        .env("FERROCORN_TEST_STATE", state.path())
        .env("FORWARDED_ALLOW_IPS", "*")
        .env("SCRIPT_NAME", "/mount")
        .args([
            "-b",
            &addr,
            "--chdir",
            apps().to_str().unwrap(),
            "--no-metrics",
            "validated:application",
        ])
        .health_path("/mount/healthz")
        .start();
    let r = request(
        server.addr,
        "GET",
        "/mount/environ",
        &[("X-Forwarded-Ssl", "on")],
        b"",
    )
    .unwrap();
    let env = r.json();
    assert_eq!(env["wsgi.url_scheme"], "https");
    assert_eq!(env["SCRIPT_NAME"], "/mount");
    assert_eq!(env["PATH_INFO"], "/environ");
    // A path outside SCRIPT_NAME cannot be routed.
    let r = request(server.addr, "GET", "/elsewhere", &[], b"").unwrap();
    assert_eq!(r.status, 400);
    assert_no_violation(&server);
}
