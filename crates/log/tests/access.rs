//! Access-log atoms, compared with what gunicorn 27.0.1 renders for the same
//! request (`Logger.atoms` + `SafeAtoms` on the request in `common::record`),
//! and escaping of hostile request data.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferrocorn_log::{AccessLogFormat, AccessRecord, Format, Level};

fn render(format: &str, rec: &AccessRecord<'_>) -> String {
    let f = AccessLogFormat::parse(format).expect("format parses");
    let mut out = Vec::new();
    f.render(rec, &mut out);
    String::from_utf8(out).expect("rendered lines are UTF-8")
}

#[test]
fn every_atom_renders_as_gunicorn_renders_it() {
    // (atom, gunicorn's output), recorded from gunicorn 27.0.1.
    let expected = [
        ("h", "127.0.0.1"),
        ("l", "-"),
        ("u", "user"),
        ("r", r#"GET /search?q=\"1\" HTTP/1.1"#),
        ("s", "200"),
        ("m", "GET"),
        ("U", "/search"),
        ("q", r#"q=\"1\""#),
        ("H", "HTTP/1.1"),
        ("b", "1234"),
        ("B", "1234"),
        ("f", "http://ref/"),
        ("a", "curl/8.5.0"),
        ("T", "2"),
        ("M", "2345"),
        ("D", "2345678"),
        ("L", "2.345678"),
        ("p", "<28441>"),
        ("{x-request-id}i", "abc"),
        ("{X-Request-Id}i", "abc"),
        ("{content-type}o", "text/plain"),
        ("{x-resp}o", r#"r\"1"#),
        ("{missing}i", "-"),
        ("{remote_port}e", "50000"),
        ("{http_host}e", "example.com"),
        ("{REQUEST_METHOD}e", "GET"),
        ("nope", "-"),
    ];
    let rec = common::record();
    for (atom, want) in expected {
        assert_eq!(render(&format!("%({atom})s"), &rec), want, "atom {atom}");
    }
}

#[test]
fn default_format_matches_gunicorn() {
    let rec = common::record();
    let line = render(ferrocorn_log::DEFAULT_ACCESS_LOG_FORMAT, &rec);
    let (before, after) = line.split_once(" [").unwrap();
    let (_, after) = after.split_once("] ").unwrap();
    // gunicorn: 127.0.0.1 - user [25/Nov/2026:10:07:43 +0000] "GET /search?q=\"1\" HTTP/1.1" 200 1234 "http://ref/" "curl/8.5.0"
    assert_eq!(before, "127.0.0.1 - user");
    assert_eq!(
        after,
        r#""GET /search?q=\"1\" HTTP/1.1" 200 1234 "http://ref/" "curl/8.5.0""#
    );
}

#[test]
fn time_atom_is_strftime_of_local_time() {
    // gunicorn: time.strftime('[%d/%b/%Y:%H:%M:%S %z]'); date(1) runs the
    // same strftime in the same time zone.
    let secs = 1_795_598_867u64; // 2026-11-25T09:27:47Z
    let f = AccessLogFormat::parse("%(t)s").unwrap();
    let mut out = Vec::new();
    f.render_at(
        &common::record(),
        UNIX_EPOCH + Duration::from_secs(secs),
        &mut out,
    );
    let date = std::process::Command::new("date")
        .env("LC_ALL", "C")
        .arg("-d")
        .arg(format!("@{secs}"))
        .arg("+[%d/%b/%Y:%H:%M:%S %z]")
        .output()
        .expect("date(1) runs");
    assert!(date.status.success());
    assert_eq!(
        String::from_utf8(out).unwrap(),
        String::from_utf8(date.stdout).unwrap().trim_end()
    );
}

#[test]
fn unknown_values_render_dash() {
    let rec = AccessRecord {
        remote: None,
        response_bytes: None,
        request_headers: &[],
        response_headers: &[],
        ..common::record()
    };
    assert_eq!(
        render(
            "%(h)s %(u)s %(b)s %(B)s %(f)s %(a)s %({x}i)s %({x}o)s",
            &rec
        ),
        "- - - - - - - -"
    );
}

#[test]
fn basic_auth_user_like_gunicorn() {
    let user = |value: &'static [u8]| {
        let headers = [("authorization", value)];
        let rec = AccessRecord {
            request_headers: &headers,
            ..common::record()
        };
        render("%(u)s", &rec)
    };
    assert_eq!(user(b"Basic dXNlcjpwYXNz"), "user");
    assert_eq!(
        user(b"basic   dXNlcjpwYXNz  "),
        "user",
        "scheme case, spaces"
    );
    assert_eq!(user(b"Basic bm9jb2xvbg=="), "nocolon");
    assert_eq!(user(b"Basic !!!"), "-", "nothing decodable");
    assert_eq!(user(b"Basic YQ"), "-", "bad padding");
    assert_eq!(user(b"Bearer dXNlcjpwYXNz"), "-");
    assert_eq!(user(b"Basic"), "-");
    // base64("\"q\":x") -> a user holding a quote, escaped like any value.
    assert_eq!(user(b"Basic InEiOng="), r#"\"q\""#);
    assert_eq!(user(b"Basic /w=="), "-", "user not UTF-8");
}

#[test]
fn duplicate_headers_like_gunicorn() {
    let headers: &[(&str, &[u8])] = &[
        ("User-Agent", b"one"),
        ("user-agent", b"two"),
        ("X-A", b"1"),
        ("x-a", b"2"),
    ];
    let rec = AccessRecord {
        request_headers: headers,
        ..common::record()
    };
    // environ HTTP_USER_AGENT joins duplicates; the `{}i` dict keeps the last.
    assert_eq!(
        render("%(a)s|%({x-a}i)s|%({http_x_a}e)s", &rec),
        "one,two|2|1,2"
    );
}

#[test]
fn request_time_atoms() {
    let rec = AccessRecord {
        request_time: Duration::from_nanos(1_000_999),
        ..common::record()
    };
    assert_eq!(render("%(T)s %(M)s %(D)s %(L)s", &rec), "0 1 1000 0.001000");
    let rec = AccessRecord {
        request_time: Duration::from_secs(3725),
        ..common::record()
    };
    assert_eq!(
        render("%(T)s %(M)s %(D)s %(L)s", &rec),
        "3725 3725000 3725000000 3725.000000"
    );
}

#[test]
fn literal_text_and_percent() {
    let rec = common::record();
    assert_eq!(render("100%% %(s)d %(m)i-", &rec), "100% 200 GET-");
    assert_eq!(render("no atoms", &rec), "no atoms");
    assert_eq!(render("", &rec), "");
}

#[test]
fn bad_formats_are_rejected_once_at_parse() {
    for bad in ["%(h)", "%(h", "50% off", "%(h)x", "%s"] {
        let err = AccessLogFormat::parse(bad).expect_err(bad);
        assert!(err.to_string().contains("access log format"), "{err}");
    }
}

#[test]
fn request_data_never_breaks_a_line() {
    let headers: &[(&str, &[u8])] = &[
        ("User-Agent", b"evil\"agent\nINJECTED 200\r\x1b[31m\x00"),
        ("Referer", b"\xff\xfe caf\xc3\xa9 \\x41"),
    ];
    let rec = AccessRecord {
        method: "GET",
        target: "/a\"b\\c",
        path: "/a\"b\\c",
        request_headers: headers,
        ..common::record()
    };
    let line = render(ferrocorn_log::DEFAULT_ACCESS_LOG_FORMAT, &rec);
    assert!(!line.contains('\n') && !line.contains('\r') && !line.contains('\x1b'));
    assert!(line.contains(r#""GET /a\"b\\c HTTP/1.1""#), "{line}");
    assert!(
        line.ends_with(r#""\xff\xfe café \\x41" "evil\"agent\x0aINJECTED 200\x0d\x1b[31m\x00""#),
        "{line}"
    );
    // Exactly the format's own quotes are unescaped: 6 of them.
    let bare_quotes = line
        .char_indices()
        .filter(|&(i, c)| c == '"' && !line[..i].ends_with('\\'))
        .count();
    assert_eq!(bare_quotes, 6, "{line}");
}

#[test]
fn plain_access_log_is_the_line_alone() {
    let (logs, _error, access) = common::memory_logs(Format::Plain, Level::Info);
    let rec = common::record();
    logs.access().unwrap().log(&rec);
    logs.access().unwrap().log(&rec);
    let lines = access.lines();
    assert_eq!(lines.len(), 2);
    let mut want = Vec::new();
    logs.access()
        .unwrap()
        .format()
        .render_at(&rec, SystemTime::now(), &mut want);
    // Same but for the second of `t`, which may have ticked.
    let want = String::from_utf8(want).unwrap();
    assert_eq!(lines[0].len(), want.len());
    assert!(lines[0].starts_with("127.0.0.1 - user ["));
    assert!(lines[0].ends_with(r#"200 1234 "http://ref/" "curl/8.5.0""#));
}

/// A caller may leave out the headers a format does not show: the line is
/// the same, and formats that show headers say so.
#[test]
fn formats_say_which_headers_they_show() {
    let rec = common::record();
    let at = UNIX_EPOCH + Duration::from_secs(1_764_000_000);
    let cases: &[(&str, bool, bool)] = &[
        (ferrocorn_log::DEFAULT_ACCESS_LOG_FORMAT, true, false),
        (
            "%(h)s %(l)s %(t)s \"%(r)s\" %(s)s %(b)s %(L)s %(p)s",
            false,
            false,
        ),
        (
            "%(m)s %(U)s %(q)s %(H)s %(B)s %(T)s %(M)s %(D)s",
            false,
            false,
        ),
        ("%(u)s", true, false),
        ("%(f)s", true, false),
        ("%(a)s", true, false),
        ("%({x-request-id}i)s", true, false),
        ("%({HTTP_X_REQUEST_ID}e)s %({REMOTE_ADDR}e)s", true, false),
        ("%({REMOTE_ADDR}e)s %({QUERY_STRING}e)s", false, false),
        ("%({x-resp}o)s", false, true),
        ("%({x-resp}o)s %(a)s", true, true),
    ];
    for &(format, req, resp) in cases {
        let f = AccessLogFormat::parse(format).unwrap();
        assert_eq!(f.uses_request_headers(), req, "{format}: request headers");
        assert_eq!(
            f.uses_response_headers(),
            resp,
            "{format}: response headers"
        );
        let mut full = Vec::new();
        f.render_at(&rec, at, &mut full);
        let stripped_rec = AccessRecord {
            request_headers: if req { rec.request_headers } else { &[] },
            response_headers: if resp { rec.response_headers } else { &[] },
            ..rec
        };
        let mut stripped = Vec::new();
        f.render_at(&stripped_rec, at, &mut stripped);
        assert_eq!(
            String::from_utf8_lossy(&full),
            String::from_utf8_lossy(&stripped),
            "{format}"
        );
    }
}

#[test]
fn a_request_refused_before_its_line_was_split_renders_what_arrived_or_a_dash() {
    let base = common::record();
    let refused = |target| AccessRecord {
        method: "",
        target,
        path: "",
        query: "",
        version: "",
        ..base
    };
    assert_eq!(render("%(r)s", &refused("")), "-");
    assert_eq!(
        render("%(r)s", &refused("GET /a\"b HTTP/1.1 x")),
        r#"GET /a\"b HTTP/1.1 x"#
    );
    assert_eq!(
        render(ferrocorn_log::DEFAULT_ACCESS_LOG_FORMAT, &refused(""))
            .split('"')
            .nth(1),
        Some("-")
    );
    // A split line renders as before, even with an empty part.
    let partial = AccessRecord {
        version: "",
        ..base
    };
    assert_eq!(render("%(r)s", &partial), r#"GET /search?q=\"1\" "#);
}
