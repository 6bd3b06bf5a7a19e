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
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ferrocorn_tests::{
    Server, assert_clean_failure, children, curl, ferrocorn, request, run_to_end, test_python,
    test_venv, wait_for, wsgi_apps,
};

/// A server for the validated test app, its state directory in the
/// environment as FERROCORN_TEST_STATE.
fn validated_server(state: &Path, extra: &[&str]) -> Server {
    let chdir = wsgi_apps();
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
    let out = Command::new(test_python())
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
            wsgi_apps().to_str().unwrap(),
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

#[test]
fn wsgi_input_every_way_content_length_and_chunked() {
    let state = tempfile::tempdir().unwrap();
    let server = validated_server(state.path(), &[]);
    // Lines of varied length, ~300 KiB: more than one read of the worker.
    let mut body = Vec::new();
    for i in 0..20_000u32 {
        body.extend_from_slice(format!("line {i} {}\n", "x".repeat((i % 13) as usize)).as_bytes());
    }
    body.extend_from_slice(b"no newline at the end");
    let file = state.path().join("body.txt");
    fs::write(&file, &body).unwrap();
    let sha = {
        let out = Command::new("sha256sum").arg(&file).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split(' ')
            .next()
            .unwrap()
            .to_owned()
    };
    let want = format!("{} {sha} 0", body.len());
    for how in [
        "read",
        "readn",
        "readbig",
        "readline",
        "readlinen",
        "readlines",
        "iter",
    ] {
        let url = format!("http://{}/echo?{how}", server.addr);
        let data = format!("@{}", file.display());
        // Content-Length, then chunked (curl streams the file).
        let out = curl(&["--data-binary", &data, &url]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            want,
            "{how} (Content-Length)"
        );
        let out = curl(&[
            "--data-binary",
            &data,
            "-H",
            "Transfer-Encoding: chunked",
            &url,
        ]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            want,
            "{how} (chunked)"
        );
    }
    // Reads past the end give b"".
    let r = request(server.addr, "POST", "/broken/readpast", &[], b"0123456789").unwrap();
    assert_eq!((r.status, r.text()), (200, String::new()));
    // A body over limit_request_body: 413 before the app reads it all.
    drop(server);
    let server = validated_server(state.path(), &["--limit-request-body", "1000"]);
    let r = request(server.addr, "POST", "/echo?read", &[], &[b'x'; 5000]).unwrap();
    assert_eq!(r.status, 413);
    assert_no_violation(&server);
}

#[test]
fn a_client_leaving_mid_body_is_an_oserror_in_the_app() {
    let state = tempfile::tempdir().unwrap();
    let server = validated_server(state.path(), &[]);
    let mut conn = TcpStream::connect(server.addr).unwrap();
    conn.write_all(
        b"POST /broken/disconnect HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n",
    )
    .unwrap();
    conn.write_all(&[b'y'; 100_000]).unwrap();
    drop(conn);
    let log = state.path().join("disconnect");
    assert!(
        wait_for(Duration::from_secs(10), || !lines_of(&log).is_empty()),
        "the app never returned; stderr:\n{}",
        server.stderr()
    );
    let lines = lines_of(&log);
    assert!(lines[0].starts_with("OSError"), "{lines:?}");
}

#[test]
fn responses_streamed_framed_and_closed_once() {
    let state = tempfile::tempdir().unwrap();
    let server = validated_server(state.path(), &["--threads", "1"]);
    let base = format!("http://{}", server.addr);

    // A list gets a Content-Length (behind the validator's iterator it is
    // an iterable like any other); the app's reason phrase is kept.
    let r = request(server.addr, "GET", "/raw/list", &[], b"").unwrap();
    assert_eq!(
        r.headers.get("content-length").map(String::as_str),
        Some("13")
    );
    assert_eq!(r.text(), "one two three");
    let r = request(server.addr, "GET", "/list", &[], b"").unwrap();
    assert_eq!(
        r.headers.get("transfer-encoding").map(String::as_str),
        Some("chunked")
    );
    assert_eq!(r.text(), "one two three");
    // An iterable whose iterator is a list's (Django's HttpResponse) is
    // taken whole: a Content-Length, close() once.
    let r = request(server.addr, "GET", "/raw/listbacked", &[], b"").unwrap();
    assert_eq!(
        r.headers.get("content-length").map(String::as_str),
        Some("7")
    );
    assert_eq!(r.text(), "one two");
    assert_eq!(lines_of(&state.path().join("listbacked")), vec!["closed"]);
    let out = curl(&["-i", &format!("{base}/reason")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/1.1 299 My Own Reason\r\n"), "{text}");
    // Hop-by-hop headers and Server/Date from the app are the server's.
    let r = request(server.addr, "GET", "/hop", &[], b"").unwrap();
    assert_eq!(r.text(), "hop");
    assert_eq!(r.headers.get("x-kept").map(String::as_str), Some("yes"));
    assert_eq!(
        r.headers.get("server").map(String::as_str),
        Some("ferrocorn")
    );
    assert!(!r.headers.contains_key("keep-alive") && !r.headers.contains_key("upgrade"));
    // write() then the iterable; exc_info replaces the status before any byte.
    let r = request(server.addr, "GET", "/write", &[], b"").unwrap();
    assert_eq!(r.text(), "written then iterated");
    let r = request(server.addr, "GET", "/exc_info", &[], b"").unwrap();
    assert_eq!((r.status, r.text()), (503, "sorry".to_owned()));

    // A generator's first chunk reaches the client before its next is made
    // (the app waits for the marker the client writes once it has it).
    let marker = state.path().join("got-first");
    let mut conn = TcpStream::connect(server.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        conn,
        "GET /stream?{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        marker.display()
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("first") {
        let n = conn.read(&mut buf).unwrap();
        assert!(n > 0, "closed before the first chunk");
        got.extend_from_slice(&buf[..n]);
    }
    fs::write(&marker, "").unwrap();
    conn.read_to_end(&mut got).unwrap();
    let r = ferrocorn_tests::parse_response(&got, false).unwrap();
    assert_eq!(
        r.headers.get("transfer-encoding").map(String::as_str),
        Some("chunked")
    );
    assert_eq!(r.text(), "firstsecond:seenx");
    // HTTP/1.0: close-delimited.
    let out = curl(&["--http1.0", "-i", &format!("{base}/closing")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("Transfer-Encoding") && !text.contains("Content-Length"),
        "{text}"
    );
    assert!(text.ends_with(&"a".repeat(3000)), "{text}");

    // close() exactly once: after the body, after HEAD, after a client
    // that went away mid-stream, after an exception mid-stream.
    let once = |name: &str| {
        let path = state.path().join(name);
        assert!(
            wait_for(Duration::from_secs(10), || !lines_of(&path).is_empty()),
            "{name}: close() never called; stderr:\n{}",
            server.stderr()
        );
        path
    };
    let closing = once("stream");
    let r = request(server.addr, "HEAD", "/head", &[], b"").unwrap();
    assert_eq!((r.status, r.body.len()), (200, 0));
    let head = once("head");
    let mut conn = TcpStream::connect(server.addr).unwrap();
    conn.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 1024];
    let _ = conn.read(&mut first).unwrap();
    drop(conn);
    let big = once("big");
    let r = request(server.addr, "GET", "/broken/after", &[], b"");
    // The head went out: the client sees a truncated body, not a 500.
    match r {
        Ok(r) => panic!("a complete response after an exception mid-stream: {r:?}"),
        Err(e) => assert!(e.to_string().contains("truncated"), "{e}"),
    }
    let after = once("after");
    // Later requests on the one pool thread work, and no close came twice.
    assert_eq!(
        request(server.addr, "GET", "/list", &[], b"")
            .unwrap()
            .status,
        200
    );
    for p in [closing, head, big, after] {
        assert_eq!(lines_of(&p), vec!["closed"], "{}", p.display());
    }
    assert_no_violation(&server);
}

#[test]
fn app_errors_are_500s_or_cut_connections_and_the_worker_lives() {
    let state = tempfile::tempdir().unwrap();
    let server = validated_server(state.path(), &[]);
    let worker = children(server.pid());
    for path in [
        "/broken/before",
        "/broken/header",
        "/broken/name",
        "/broken/twice",
        "/broken/nostart",
    ] {
        let r = request(server.addr, "GET", path, &[], b"").unwrap();
        assert_eq!(r.status, 500, "{path}");
        assert_eq!(r.text(), "Internal Server Error\n", "{path}");
    }
    // An item that is not bytes, before the first byte: 500 too.
    let r = request(server.addr, "GET", "/broken/notbytes", &[], b"").unwrap();
    assert_eq!(r.status, 500);
    let err = server.stderr();
    assert!(
        err.contains("Error handling request GET /broken/before"),
        "{err}"
    );
    assert!(
        err.contains("ValueError: raised before the first byte"),
        "{err}"
    );
    assert!(err.contains("Traceback (most recent call last)"), "{err}");
    assert!(err.contains("invalid value for header"), "{err}");
    assert!(err.contains("without exc_info"), "{err}");
    assert!(err.contains("without calling start_response"), "{err}");
    // The same worker still serves.
    assert_eq!(
        request(server.addr, "GET", "/list", &[], b"")
            .unwrap()
            .status,
        200
    );
    assert_eq!(children(server.pid()), worker);
}

#[test]
fn threading_local_survives_across_requests_of_a_pool_thread() {
    let state = tempfile::tempdir().unwrap();
    let server = validated_server(state.path(), &["--threads", "1"]);
    let counts: Vec<String> = (0..5)
        .map(|_| {
            request(server.addr, "GET", "/local", &[], b"")
                .unwrap()
                .text()
        })
        .collect();
    let first: Vec<&str> = counts
        .iter()
        .map(|c| c.split(' ').next().unwrap())
        .collect();
    assert_eq!(first, ["1", "2", "3", "4", "5"], "{counts:?}");
}

#[test]
fn file_wrapper_sends_the_file_from_its_offset() {
    let state = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(state.path().join("file.bin"), &data).unwrap();
    let server = validated_server(state.path(), &[]);
    // Unwrapped, the file is read by the server (a Content-Length from the
    // file's size); behind the validator, item by item (chunked).
    let r = request(server.addr, "GET", "/raw/file", &[], b"").unwrap();
    assert_eq!(
        r.headers.get("content-length").map(String::as_str),
        Some("1000000")
    );
    assert!(r.body == data, "file body differs");
    let r = request(server.addr, "GET", "/raw/file?999000", &[], b"").unwrap();
    assert_eq!(
        r.headers.get("content-length").map(String::as_str),
        Some("1000")
    );
    assert_eq!(r.body, &data[999_000..]);
    let r = request(server.addr, "GET", "/file?999000", &[], b"").unwrap();
    assert_eq!(
        r.headers.get("transfer-encoding").map(String::as_str),
        Some("chunked")
    );
    assert_eq!(r.body, &data[999_000..]);
    // Python's http.client as a second client.
    let out = http_client(
        server.addr,
        "import http.client, sys, hashlib\n\
         c = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]))\n\
         c.request('GET', '/raw/file')\n\
         r = c.getresponse()\n\
         print(r.status, len(r.read()))",
    );
    assert_eq!(out.trim(), "200 1000000");
    assert_no_violation(&server);
}

/// Runs ferrocorn on an app in `dir` to its end; (output, seconds taken).
fn run_app(dir: &Path, extra: &[&str], spec: &str) -> (std::process::Output, f64) {
    let mut cmd = ferrocorn();
    cmd.args([
        "-b",
        &format!("127.0.0.1:{}", ferrocorn_tests::free_port()),
        "--no-metrics",
        "--log-format",
        "plain",
        "--chdir",
        dir.to_str().unwrap(),
    ])
    .args(extra)
    .arg(spec);
    let start = Instant::now();
    let out = run_to_end(cmd, Duration::from_secs(30));
    (out, start.elapsed().as_secs_f64())
}

#[test]
fn an_app_that_cannot_load_stops_the_server_with_exit_4() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(
        d.join("syntax.py"),
        "def application(environ, start_response)\n    pass\n",
    )
    .unwrap();
    fs::write(d.join("raises.py"), "raise RuntimeError('at import')\n").unwrap();
    fs::write(
        d.join("fine.py"),
        "def application(environ, start_response):\n    start_response('200 OK', [])\n    return [b'']\n\
         def factory(greeting):\n    return application\n\
         notcallable = 42\n",
    )
    .unwrap();
    let cases: &[(&str, &str)] = &[
        (
            "nosuchmodule:application",
            "ModuleNotFoundError: No module named 'nosuchmodule'",
        ),
        ("syntax:application", "SyntaxError"),
        ("raises", "RuntimeError: at import"),
        (
            "fine:missing",
            "Failed to find attribute 'missing' in 'fine'.",
        ),
        ("fine:notcallable", "Application object must be callable."),
        (
            "fine:factory()",
            "missing 1 required positional argument: 'greeting'",
        ),
        (
            "fine:factory(x)",
            "Failed to parse arguments as literal values: 'factory(x)'",
        ),
        (
            "fine:a.b()",
            "Function reference must be a simple name: 'a.b()'",
        ),
        (
            "fine:a.b",
            "Failed to parse 'a.b' as an attribute name or function call.",
        ),
    ];
    for (spec, needle) in cases {
        // Two workers: each fails, neither is respawned.
        let (out, secs) = run_app(d, &["-w", "2"], spec);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(4),
            "{spec}: exit status; stderr:\n{err}"
        );
        assert!(err.contains(needle), "{spec}: no {needle:?} in:\n{err}");
        assert!(!err.contains("panicked"), "{spec}:\n{err}");
        let boots = err.matches("Booting worker").count();
        assert!(
            boots <= 2,
            "{spec}: {boots} workers booted (respawned):\n{err}"
        );
        // Gunicorn's "within a second", with room for a loaded machine.
        assert!(secs < 5.0, "{spec}: took {secs:.2} s");
        eprintln!("{spec}: exit 4 after {secs:.2} s");
    }
    // --preload fails in the supervisor, before any worker exists.
    let (out, _) = run_app(d, &["--preload"], "raises");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("RuntimeError: at import"), "{err}");
    assert!(!err.contains("Booting worker"), "{err}");
    assert_eq!(err.matches("RuntimeError: at import").count(), 1, "{err}");
}

#[test]
fn check_app_imports_check_config_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("raises.py"), "raise RuntimeError('at import')\n").unwrap();
    fs::write(
        d.join("fine.py"),
        "def application(environ, start_response):\n    return []\n",
    )
    .unwrap();
    let (out, _) = run_app(d, &["--check-config"], "raises");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("serving raises"));
    let (out, _) = run_app(d, &["--check-app"], "raises");
    assert_clean_failure(&out, 4, "RuntimeError: at import");
    let (out, _) = run_app(d, &["--check-app"], "fine");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "app OK: fine");
}

#[test]
fn gunicorn_command_lines_refused_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (args, needle) in [
        (
            &["-k", "uvicorn.workers.UvicornWorker"][..],
            "use sync or gthread",
        ),
        (
            &["--worker-class", "gevent"][..],
            "\"gevent\" is not supported",
        ),
        (&["--app", "hello"][..], "choose one"),
        (&["--no-such-gunicorn-flag"][..], "--no-such-gunicorn-flag"),
    ] {
        let (out, _) = run_app(d, args, "fine:application");
        let code = out.status.code();
        assert_eq!(
            code,
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    // A virtualenv of another Python version: one line naming both.
    let venv = d.join("venv");
    fs::create_dir(&venv).unwrap();
    fs::write(
        venv.join("pyvenv.cfg"),
        "home = /usr/bin\nversion = 3.9.18\n",
    )
    .unwrap();
    let mut cmd = ferrocorn();
    cmd.env("VIRTUAL_ENV", &venv)
        .args(["--no-metrics", "fine:application"]);
    let out = run_to_end(cmd, Duration::from_secs(10));
    assert_clean_failure(
        &out,
        2,
        "is Python 3.9 but ferrocorn is built with Python 3.",
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
    // -k sync and gthread run ferrocorn's model, said at startup.
    fs::write(
        d.join("ok.py"),
        "def application(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [b'ok']\n",
    )
    .unwrap();
    let server = Server::builder()
        .args([
            "--chdir",
            d.to_str().unwrap(),
            "--no-metrics",
            "-k",
            "sync",
            "ok",
        ])
        .start();
    assert!(
        server
            .stderr()
            .contains("Worker class sync: ferrocorn runs"),
        "{}",
        server.stderr()
    );
}

#[test]
fn the_app_runs_in_the_virtualenv_of_virtual_env() {
    let dir = tempfile::tempdir().unwrap();
    let venv = dir.path().join("venv");
    // A venv of the Python ferrocorn links (python3 on PATH at build time).
    let made = Command::new("python3")
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .status()
        .unwrap();
    assert!(made.success());
    let site = fs::read_dir(venv.join("lib"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path()
        .join("site-packages");
    fs::create_dir_all(site.join("onlyinvenv")).unwrap();
    fs::write(site.join("onlyinvenv/__init__.py"), "WHERE = __file__\n").unwrap();
    let app_dir = dir.path().join("app");
    fs::create_dir(&app_dir).unwrap();
    fs::write(
        app_dir.join("venvapp.py"),
        "import sys, onlyinvenv\n\
         def application(environ, start_response):\n    \
             start_response('200 OK', [('Content-Type', 'text/plain')])\n    \
             return [('%s %s' % (sys.prefix, onlyinvenv.WHERE)).encode()]\n",
    )
    .unwrap();
    // Without the venv the package is missing.
    let (out, _) = run_app(&app_dir, &["--check-app"], "venvapp");
    assert_clean_failure(&out, 4, "No module named 'onlyinvenv'");
    let mut cmd_env = Server::builder().env("VIRTUAL_ENV", &venv);
    cmd_env = cmd_env.args([
        "--chdir",
        app_dir.to_str().unwrap(),
        "--no-metrics",
        "venvapp",
    ]);
    let server = cmd_env.start();
    let text = server.get("/healthz").text();
    let (prefix, module) = text.split_once(' ').unwrap();
    assert_eq!(Path::new(prefix), venv, "{text}");
    assert!(module.starts_with(site.to_str().unwrap()), "{text}");
}

/// A server for a framework app of tests/wsgi, in the test venv.
fn framework_server(spec: &str, extra: &[&str]) -> Server {
    let venv = test_venv("flask, django");
    let chdir = wsgi_apps();
    let mut args = vec!["--chdir", chdir.to_str().unwrap(), "--no-metrics"];
    args.extend_from_slice(extra);
    args.push(spec);
    Server::builder()
        .env("VIRTUAL_ENV", &venv)
        .args(args)
        .start()
}

#[test]
fn a_flask_app() {
    let server = framework_server("flaskapp:app", &["--threads", "4"]);
    let base = format!("http://{}", server.addr);
    let out = curl(&[&format!("{base}/json?a=1&b=two")]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["hello"], "flask");
    assert_eq!(v["args"], serde_json::json!({"a": "1", "b": "two"}));
    assert_eq!(v["scheme"], "http");
    let out = curl(&["-H", "X-Forwarded-Proto: https", &format!("{base}/json")]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["scheme"], "https");
    let out = curl(&[
        "-d",
        "name=ferro%20corn",
        "-d",
        "x=1",
        &format!("{base}/form"),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v, serde_json::json!({"name": "ferro corn", "n": 2}));
    // A multipart upload (curl), checked by hash.
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let file = dir.path().join("upload.bin");
    fs::write(&file, &data).unwrap();
    let out = curl(&[
        "-F",
        &format!("file=@{}", file.display()),
        &format!("{base}/upload"),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sha = Command::new("sha256sum").arg(&file).output().unwrap();
    let sha = String::from_utf8_lossy(&sha.stdout)
        .split(' ')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(v["size"], 3_000_000);
    assert_eq!(v["sha256"], sha.as_str());
    assert_eq!(v["filename"], "upload.bin");
    // The same upload chunked (werkzeug reads to wsgi.input's end).
    let out = curl(&[
        "-H",
        "Transfer-Encoding: chunked",
        "-F",
        &format!("file=@{}", file.display()),
        &format!("{base}/upload"),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sha256"], sha.as_str());
    let out = curl(&["-i", &format!("{base}/stream")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Transfer-Encoding: chunked"), "{text}");
    assert!(
        text.ends_with("chunk 0\nchunk 1\nchunk 2\nchunk 3\nchunk 4\n"),
        "{text}"
    );
    // A failing view: Flask answers its own 500 and logs through logging.
    let r = request(server.addr, "GET", "/boom", &[], b"").unwrap();
    assert_eq!(r.status, 500);
    server.wait_stderr(Duration::from_secs(5), "Flask's traceback", |e| {
        e.contains("RuntimeError: flask view failed")
    });
}

const DJANGO_CLIENT: &str = r#"
import hashlib, http.client, json, os, re, sys
host, port = sys.argv[1], int(sys.argv[2])
out = {}
def conn():
    return http.client.HTTPConnection(host, port, timeout=20)
c = conn()
c.request("GET", "/json?q=ferrocorn", headers={"X-Forwarded-Proto": "https"})
r = c.getresponse()
out["json"] = json.loads(r.read())
# The form: a CSRF cookie and token, then POST with and without them.
c.request("GET", "/form")
r = c.getresponse()
page = r.read().decode()
cookie = r.getheader("Set-Cookie").split(";")[0]
token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
body = "csrfmiddlewaretoken=%s&name=ferrocorn" % token
headers = {"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie}
c.request("POST", "/form", body=body, headers=headers)
r = c.getresponse()
out["form"] = [r.status, json.loads(r.read())]
c.request("POST", "/form", body="name=x", headers={"Content-Type": "application/x-www-form-urlencoded"})
r = c.getresponse()
r.read()
out["form_without_csrf"] = r.status
# A multipart upload of 5 MB (with a Content-Length: Django reads a body
# only as far as CONTENT_LENGTH says, whatever wsgi.input_terminated says).
data = os.urandom(5 * 1024 * 1024)
boundary = "ferrocornboundary"
pre = ("--%s\r\nContent-Disposition: form-data; name=\"field\"\r\n\r\nvalue\r\n"
       "--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"data.bin\"\r\n"
       "Content-Type: application/octet-stream\r\n\r\n" % (boundary, boundary)).encode()
post = ("\r\n--%s--\r\n" % boundary).encode()
c2 = conn()
c2.request("POST", "/upload", body=pre + data + post,
           headers={"Content-Type": "multipart/form-data; boundary=" + boundary})
r = c2.getresponse()
out["upload"] = json.loads(r.read())
out["upload_sha256"] = hashlib.sha256(data).hexdigest()
c2.close()
c.request("GET", "/stream")
r = c.getresponse()
out["stream_te"] = r.getheader("Transfer-Encoding")
out["stream"] = r.read().decode()
print(json.dumps(out))
"#;

#[test]
fn a_django_project() {
    let server = framework_server("djproject.wsgi:application", &["--threads", "2"]);
    let out = http_client(server.addr, DJANGO_CLIENT);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["json"]["hello"], "django");
    assert_eq!(v["json"]["q"], "ferrocorn");
    assert_eq!(
        v["json"]["secure"], true,
        "SECURE_PROXY_SSL_HEADER from a trusted proxy"
    );
    assert_eq!(v["form"], serde_json::json!([200, {"name": "ferrocorn"}]));
    assert_eq!(v["form_without_csrf"], 403);
    assert_eq!(v["upload"]["sha256"], v["upload_sha256"]);
    assert_eq!(v["upload"]["size"], 5 * 1024 * 1024);
    assert_eq!(v["upload"]["field"], "value");
    assert_eq!(v["stream_te"], "chunked");
    let rows: Vec<&str> = v["stream"].as_str().unwrap().lines().collect();
    assert_eq!(rows.len(), 1000);
    assert_eq!(rows[999], "row 999");
    assert!(
        !server.stderr().contains("Traceback"),
        "{}",
        server.stderr()
    );
}

const FORK_APP: &str = r#"import os
IMPORT_PID = os.getpid()
events = []
os.register_at_fork(
    before=lambda: events.append('before'),
    after_in_parent=lambda: events.append('parent'),
    after_in_child=lambda: events.append('child'),
)
VERSION = 'VERSION_MARK'
def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [('%s %d %d %s' % (VERSION, IMPORT_PID, os.getpid(), ','.join(events))).encode()]
"#;

fn write_fork_app(dir: &Path, version: &str) {
    fs::write(
        dir.join("forkapp.py"),
        FORK_APP.replace("VERSION_MARK", version),
    )
    .unwrap();
}

/// (version, import pid, serving pid, fork events) of one answer.
fn fork_answer(server: &Server) -> (String, u32, u32, String) {
    let text = server.get("/").text();
    let f: Vec<&str> = text.split(' ').collect();
    (
        f[0].to_owned(),
        f[1].parse().unwrap(),
        f[2].parse().unwrap(),
        f.get(3).copied().unwrap_or("").to_owned(),
    )
}

/// Requests in a loop on another thread until `stop`; (answered, failed).
fn hammer(
    addr: SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(u32, u32)> {
    std::thread::spawn(move || {
        let (mut ok, mut failed) = (0, 0);
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            match request(addr, "GET", "/", &[], b"") {
                Ok(r) if r.status == 200 => ok += 1,
                _ => failed += 1,
            }
        }
        (ok, failed)
    })
}

fn new_workers_after_hup(server: &Server, old: &[u32]) {
    server.signal(libc::SIGHUP);
    let ok = wait_for(Duration::from_secs(20), || {
        let now = children(server.pid());
        now.len() == old.len() && now.iter().all(|p| !old.contains(p))
    });
    assert!(
        ok,
        "workers not replaced after HUP; stderr:\n{}",
        server.stderr()
    );
}

#[test]
fn preload_imports_once_in_the_supervisor_with_the_fork_protocol() {
    let dir = tempfile::tempdir().unwrap();
    write_fork_app(dir.path(), "one");
    let server = Server::builder()
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .args([
            "--chdir",
            dir.path().to_str().unwrap(),
            "--no-metrics",
            "-w",
            "2",
            "--preload",
            "forkapp",
        ])
        .start();
    let (version, import_pid, pid, events) = fork_answer(&server);
    assert_eq!(version, "one");
    assert_eq!(import_pid, server.pid(), "imported in the supervisor");
    assert_ne!(pid, import_pid);
    assert!(children(server.pid()).contains(&pid));
    // register_at_fork hooks ran: 'before' in the supervisor, 'child' here.
    assert!(
        events.contains("before") && events.ends_with("child"),
        "{events}"
    );
    // HUP replaces the workers without re-importing (gunicorn's preload):
    // new code is not picked up.
    write_fork_app(dir.path(), "two-changed");
    let old = children(server.pid());
    new_workers_after_hup(&server, &old);
    let (version, import_pid2, pid2, events) = fork_answer(&server);
    assert_eq!((version.as_str(), import_pid2), ("one", import_pid));
    assert!(!old.contains(&pid2));
    assert!(
        events.contains("parent") && events.ends_with("child"),
        "{events}"
    );
}

#[test]
fn without_preload_hup_deploys_new_code_with_no_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    write_fork_app(dir.path(), "one");
    let server = Server::builder()
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .args([
            "--chdir",
            dir.path().to_str().unwrap(),
            "--no-metrics",
            "-w",
            "2",
            "--threads",
            "2",
            "forkapp",
        ])
        .start();
    let (version, import_pid, pid, events) = fork_answer(&server);
    assert_eq!(version, "one");
    // Imported in the worker itself; no fork since, so no fork events.
    assert_eq!(import_pid, pid);
    assert_eq!(events, "");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = hammer(server.addr, stop.clone());
    write_fork_app(dir.path(), "two-changed");
    let old = children(server.pid());
    new_workers_after_hup(&server, &old);
    assert!(wait_for(Duration::from_secs(10), || fork_answer(&server).0
        == "two-changed"));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = client.join().unwrap();
    assert_eq!(failed, 0, "{ok} answered");
    assert!(ok > 0);
    eprintln!("HUP under load: {ok} answered, {failed} failed");
}

#[test]
fn a_segfault_in_the_app_kills_only_its_worker() {
    let state = tempfile::tempdir().unwrap();
    let server = validated_server(state.path(), &["-w", "1"]);
    let before = children(server.pid());
    assert!(request(server.addr, "GET", "/broken/segfault", &[], b"").is_err());
    server.wait_stderr(Duration::from_secs(10), "the crash", |e| {
        e.contains("SIGSEGV")
    });
    assert!(wait_for(Duration::from_secs(10), || {
        let now = children(server.pid());
        now.len() == 1 && now != before
    }));
    assert_eq!(
        request(server.addr, "GET", "/list", &[], b"")
            .unwrap()
            .status,
        200
    );
}

#[test]
fn unix_socket_environ_as_gunicorn() {
    let state = tempfile::tempdir().unwrap();
    let sock = state.path().join("s.sock");
    let tcp = format!("127.0.0.1:{}", ferrocorn_tests::free_port());
    let unix = format!("unix:{}", sock.display());
    let server = validated_server(state.path(), &["-b", &tcp, "-b", &unix]);
    let out = curl(&[
        "--unix-socket",
        sock.to_str().unwrap(),
        "-H",
        "X-Forwarded-Proto: https",
        "http://example.org:8080/environ",
    ]);
    let env: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(env["REMOTE_ADDR"], "");
    assert_eq!(env["REMOTE_PORT"], serde_json::Value::Null);
    assert_eq!(env["SERVER_NAME"], "example.org");
    assert_eq!(env["SERVER_PORT"], "8080");
    // A unix-socket peer is always trusted (gunicorn).
    assert_eq!(env["wsgi.url_scheme"], "https");
    assert_no_violation(&server);
}

#[test]
fn a_thread_waiting_for_a_body_does_not_hold_the_gil() {
    let state = tempfile::tempdir().unwrap();
    let server = validated_server(state.path(), &["--threads", "2"]);
    // 100 KiB of a 200 KiB body: more than the worker holds before calling
    // the app (64 KiB), so the app runs and blocks reading the rest.
    let mut slow = TcpStream::connect(server.addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    slow.write_all(b"POST /echo?readn HTTP/1.1\r\nHost: x\r\nContent-Length: 204800\r\n\r\n")
        .unwrap();
    slow.write_all(&[b'a'; 102_400]).unwrap();
    // The other pool thread answers meanwhile (with the GIL held by the
    // waiting thread it would hang until the timeout).
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    let r = request(server.addr, "GET", "/list", &[], b"").unwrap();
    assert_eq!(r.status, 200);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    // The slow request has not been answered yet; now it completes.
    slow.write_all(&[b'a'; 102_400]).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&raw).contains("204800 ") {
        let n = slow.read(&mut buf).unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&raw));
        raw.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn env_flags_reach_the_app_and_a_hup_rereads_them() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("envapp.py"),
        "import os\n\
def application(environ, start_response):\n\
\x20   start_response('200 OK', [('Content-Type', 'text/plain')])\n\
\x20   return [os.environ.get('GREETING', '-').encode()]\n",
    )
    .unwrap();
    let conf = dir.path().join("conf.toml");
    fs::write(&conf, "raw_env = [\"GREETING=hello\"]\n").unwrap();
    let server = Server::builder()
        .args([
            "-c",
            conf.to_str().unwrap(),
            "--chdir",
            dir.path().to_str().unwrap(),
            "--no-metrics",
            "envapp",
        ])
        .start();
    assert_eq!(server.get("/").text(), "hello");
    fs::write(&conf, "raw_env = [\"GREETING=bonjour\"]\n").unwrap();
    let old = children(server.pid());
    new_workers_after_hup(&server, &old);
    assert!(
        wait_for(Duration::from_secs(10), || server.get("/").text()
            == "bonjour"),
        "{}",
        server.stderr()
    );
    // On the command line too (repeatable -e/--env).
    let server = Server::builder()
        .args([
            "-e",
            "GREETING=hi",
            "--env",
            "OTHER=1",
            "--chdir",
            dir.path().to_str().unwrap(),
            "--no-metrics",
            "envapp",
        ])
        .start();
    assert_eq!(server.get("/").text(), "hi");
}
