//! Request-targets and header lines found by a peer's parser corpus
//! (issue 22); kept apart from the main tests module.

use super::*;

fn status(req: &[u8], limits: &Limits) -> Result<(), u16> {
    parse_head(req, limits, &mut Vec::new())
        .map(|h| assert!(h.is_some(), "incomplete: {req:?}"))
        .map_err(|e| e.status)
}

#[test]
fn a_fragment_in_any_target_form_is_refused() {
    let l = Limits::default();
    for t in ["/echo?page=1#x", "/#", "/a#b", "http://h/p#f", "http://h#f"] {
        let req = format!("GET {t} HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(status(req.as_bytes(), &l), Err(400), "{t}");
    }
}

#[test]
fn absolute_form_authorities_are_validated() {
    let l = Limits::default();
    let ok = [
        "http://h/p",
        "http://h",
        "http://h?q",
        "http://h:80/p",
        "http://h:/p",
        "http://127.0.0.1:8000/p",
        "http://[::1]:8000/p",
        "http://[fe80::1%25eth0]/p",
        "http://[v1.a:b]/p",
        "http://a-b.c_d~e%41!$&'()*+,;=/p",
    ];
    for t in ok {
        let req = format!("GET {t} HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(status(req.as_bytes(), &l), Ok(()), "{t}");
    }
    let bad = [
        "s://]ufd/echo",
        "http:///p",
        "http://:80/p",
        "http://u@h/p",
        "http://h:8x/p",
        "http://[::1/p",
        "http://[::g]/p",
        "http://[]/p",
        "http://h]/p",
        "http://h%4/p",
        "http://h:1:2/p",
        "http://h\"/p",
    ];
    for t in bad {
        let req = format!("GET {t} HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(status(req.as_bytes(), &l), Err(400), "{t}");
    }
    for (t, want) in [
        ("h:443", Ok(())),
        ("[::1]:443", Ok(())),
        ("h", Err(400)),
        ("h:", Err(400)),
        ("]h:443", Err(400)),
        ("u@h:443", Err(400)),
    ] {
        let req = format!("CONNECT {t} HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(status(req.as_bytes(), &l), want, "CONNECT {t}");
    }
}

/// gunicorn: `len(line) + len("\r\n") > limit_request_field_size`.
#[test]
fn field_size_counts_the_line_with_its_crlf() {
    let line = |n: usize| {
        // "X: " + value = n bytes
        format!(
            "GET / HTTP/1.1\r\nHost: h\r\nX: {}\r\n\r\n",
            "v".repeat(n - 3)
        )
    };
    let l = Limits::default();
    assert_eq!(status(line(8188).as_bytes(), &l), Ok(()));
    assert_eq!(status(line(8189).as_bytes(), &l), Err(431));
    assert_eq!(status(line(8190).as_bytes(), &l), Err(431));
    // Whitespace after the value counts too: it is part of the line
    // (8189 bytes with three trailing spaces).
    let padded = format!(
        "GET / HTTP/1.1\r\nHost: h\r\nX: {}   \r\n\r\n",
        "v".repeat(8186 - 3)
    );
    assert_eq!(status(padded.as_bytes(), &l), Err(431));
    // Incomplete, already too long with the CRLF it will get.
    let partial = format!("GET / HTTP/1.1\r\nHost: h\r\nX: {}", "v".repeat(8189 - 3));
    assert_eq!(status_partial(partial.as_bytes(), &l), Err(431));
    let partial = format!("GET / HTTP/1.1\r\nHost: h\r\nX: {}", "v".repeat(8188 - 3));
    assert_eq!(status_partial(partial.as_bytes(), &l), Ok(()));
}

fn status_partial(req: &[u8], limits: &Limits) -> Result<(), u16> {
    parse_head(req, limits, &mut Vec::new())
        .map(|h| assert!(h.is_none()))
        .map_err(|e| e.status)
}

#[test]
fn field_sizes_above_8190_are_honoured_up_to_the_maximum() {
    let l = Limits {
        field_size: 20000,
        ..Limits::default()
    };
    let req = format!(
        "GET / HTTP/1.1\r\nHost: h\r\nX: {}\r\n\r\n",
        "v".repeat(10_000)
    );
    assert_eq!(status(req.as_bytes(), &l), Ok(()));
    let req = format!(
        "GET / HTTP/1.1\r\nHost: h\r\nX: {}\r\n\r\n",
        "v".repeat(19_996)
    );
    assert_eq!(status(req.as_bytes(), &l), Err(431));
    let huge = Limits {
        field_size: usize::MAX,
        ..Limits::default()
    };
    assert_eq!(huge.normalized().field_size, MAX_FIELD_SIZE);
    assert_eq!(
        Limits {
            field_size: 0,
            ..Limits::default()
        }
        .normalized()
        .field_size,
        8190
    );
}
