//! The parser's limits and decisions at their exact edges, without sockets:
//! a head growing across reads up to the largest one the limits allow, lines
//! and fields exactly at their limits, the header names that change framing
//! or keep-alive beside other names of the same length, the chunked
//! decoder's size, extension and trailer bounds.
//!
//! These are the fast tests `just mutants` runs against `src/parse.rs`
//! (each was seen to fail on a mutant of the guard it pins; see
//! `tests/MUTANTS.md` for the mutants that cannot be told apart).

use ferrocorn_worker::Version;
use ferrocorn_worker::parse::{
    ChunkedDecoder, Decoded, Framing, Head, HeaderSpan, Limits, ParseError, is_field_value,
    is_token, parse_head, parse_request,
};

fn parse(buf: &[u8], limits: &Limits) -> Result<Option<Head>, ParseError> {
    let mut spans = Vec::new();
    parse_head(buf, limits, &mut spans)
}

/// A complete head with the default limits, and its fields as strings.
fn complete(buf: &[u8]) -> (Head, Vec<(String, String)>) {
    let mut spans: Vec<HeaderSpan> = Vec::new();
    let head = match parse_head(buf, &Limits::default(), &mut spans) {
        Ok(Some(h)) => h,
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
    };
    assert_eq!(head.len, buf.len());
    let s = |sp: ferrocorn_worker::parse::Span| String::from_utf8(sp.get(buf).to_vec()).unwrap();
    let fields = spans.iter().map(|h| (s(h.name), s(h.value))).collect();
    (head, fields)
}

/// The status a head is refused with (default limits).
fn refused(buf: &[u8]) -> u16 {
    refused_with(buf, &Limits::default())
}

fn refused_with(buf: &[u8], limits: &Limits) -> u16 {
    match parse(buf, limits) {
        Err(e) => e.status,
        ok => panic!("{:?} was not refused: {ok:?}", String::from_utf8_lossy(buf)),
    }
}

fn partial(buf: &[u8], limits: &Limits) {
    assert_eq!(
        parse(buf, limits),
        Ok(None),
        "{} bytes ending {:?}",
        buf.len(),
        String::from_utf8_lossy(&buf[buf.len().saturating_sub(20)..])
    );
}

/// `name: value` with `len` bytes in all.
fn field(name: &str, len: usize) -> Vec<u8> {
    let mut f = format!("{name}: ").into_bytes();
    assert!(len > f.len());
    f.resize(len, b'v');
    f
}

/// `GET /aaa HTTP/1.1` with `len` bytes in all.
fn request_line(len: usize) -> Vec<u8> {
    let fixed = "GET / HTTP/1.1".len();
    let mut line = b"GET /".to_vec();
    line.resize(len - fixed + 5, b'a');
    line.extend_from_slice(b" HTTP/1.1");
    assert_eq!(line.len(), len);
    line
}

/// The largest head `Limits::default()` allows: a request line of 4094
/// bytes and 100 field lines of 8190 bytes each with their CRLF (the field
/// size counts the line's CRLF, as gunicorn's does).
fn largest_head() -> Vec<u8> {
    let mut buf = request_line(4094);
    buf.extend_from_slice(b"\r\n");
    for i in 0..100 {
        let name = if i == 0 {
            "Host".to_string()
        } else {
            format!("X-F{i}")
        };
        buf.extend_from_slice(&field(&name, 8188));
        buf.extend_from_slice(b"\r\n");
    }
    buf.extend_from_slice(b"\r\n");
    buf
}

#[test]
fn the_largest_head_arrives_across_many_reads() {
    let limits = Limits::default();
    let buf = largest_head();
    // max_head is the largest head the limits allow, with 2 bytes to spare
    // per field (it bounds the buffer; the field size counts its CRLF).
    assert_eq!(buf.len(), 4096 + 100 * 8190 + 2);
    assert_eq!(limits.max_head(), buf.len() + 100 * 2);
    // Every prefix read so far is "read more" (a read of ~16 KiB at a time
    // and the last bytes one at a time), and the whole is a head.
    let mut end = 0;
    while end < buf.len() - 4 {
        partial(&buf[..end], &limits);
        end += 16 * 1024 - 7;
    }
    for end in buf.len() - 4..buf.len() {
        partial(&buf[..end], &limits);
    }
    let (head, fields) = complete(&buf);
    assert_eq!(head.len, buf.len());
    assert_eq!(fields.len(), 100);
}

#[test]
fn max_head_follows_the_limits() {
    let small = Limits {
        request_line: 100,
        fields: 3,
        field_size: 50,
    };
    assert_eq!(small.max_head(), 102 + 3 * 52 + 2);
    // A request line of 0 or above 8190 counts as 8190; a field size above
    // MAX_FIELD_SIZE (65536) counts as 65536.
    let big = Limits {
        request_line: 0,
        fields: 1,
        field_size: 100_000,
    };
    assert_eq!(big.max_head(), 8192 + 65538 + 2);
}

#[test]
fn line_sizes_above_8190_are_clamped_and_field_sizes_honoured_up_to_65536() {
    for v in [0, 8191, 8192, 65536, 65537, 100_000] {
        let l = Limits {
            request_line: v,
            fields: 10,
            field_size: v,
        }
        .normalized();
        let field_size = if v == 0 { 8190 } else { v.min(65536) };
        assert_eq!((l.request_line, l.field_size), (8190, field_size), "{v}");
    }
    for v in [1, 4094, 8189, 8190] {
        let l = Limits {
            request_line: v,
            fields: 40_000,
            field_size: v,
        }
        .normalized();
        assert_eq!((l.request_line, l.fields, l.field_size), (v, 32768, v));
    }
    // Parsing follows: with limits of 20000, a request line of 8191 bytes is
    // refused, a field line of 20000 bytes with its CRLF is accepted and one
    // of 20001 is refused.
    let limits = Limits {
        request_line: 20_000,
        fields: 100,
        field_size: 20_000,
    };
    let mut ok = request_line(8190);
    ok.extend_from_slice(b"\r\n");
    ok.extend_from_slice(&field("Host", 19_998));
    ok.extend_from_slice(b"\r\n\r\n");
    assert!(matches!(parse(&ok, &limits), Ok(Some(_))));
    let mut long_field = b"GET / HTTP/1.1\r\n".to_vec();
    long_field.extend_from_slice(&field("Host", 19_999));
    long_field.extend_from_slice(b"\r\n\r\n");
    assert_eq!(refused_with(&long_field, &limits), 431);
    let mut long_line = request_line(8191);
    long_line.extend_from_slice(b"\r\nHost: x\r\n\r\n");
    assert_eq!(refused_with(&long_line, &limits), 400);
}

#[test]
fn a_request_line_at_the_limit_may_get_the_rest_of_its_head_later() {
    let limits = Limits {
        request_line: 200,
        ..Limits::default()
    };
    let line = request_line(200);
    // Without its CR; with CR but no LF; with CRLF; with part of a field.
    partial(&line, &limits);
    let mut buf = line.clone();
    buf.push(b'\r');
    partial(&buf, &limits);
    buf.push(b'\n');
    partial(&buf, &limits);
    buf.extend_from_slice(b"Host: x\r\n");
    partial(&buf, &limits);
    buf.extend_from_slice(b"\r\n");
    assert!(matches!(parse(&buf, &limits), Ok(Some(_))));

    // One byte more is refused as soon as it is seen.
    let line = request_line(201);
    assert_eq!(parse(&line[..200], &limits), Ok(None));
    // 201 bytes could still be 200 and a CR: 202 cannot.
    let mut long = line.clone();
    long.push(b'x');
    assert_eq!(refused_with(&long, &limits), 400);
    let mut long = line.clone();
    long.extend_from_slice(b"\r\n");
    assert_eq!(refused_with(&long, &limits), 400);
    long.extend_from_slice(b"Host: x\r\n\r\n");
    assert_eq!(refused_with(&long, &limits), 400);
}

#[test]
fn stray_crlfs_before_a_head_do_not_count_against_its_size() {
    // A client may send a CRLF or two after a body (RFC 9112 2.2), which
    // is skipped: with one field allowed the largest head after them is
    // longer than max_head() and is still read to its end, whatever the
    // reads (before, its prefix one byte short was refused with a 431).
    let limits = Limits {
        request_line: 100,
        fields: 1,
        field_size: 50,
    };
    let mut buf = b"\r\n\r\n".to_vec();
    buf.extend_from_slice(&request_line(100));
    buf.extend_from_slice(b"\r\n");
    buf.extend_from_slice(&field("Host", 48));
    buf.extend_from_slice(b"\r\n\r\n");
    assert!(buf.len() > limits.max_head());
    for end in 0..buf.len() {
        partial(&buf[..end], &limits);
    }
    let head = parse(&buf, &limits).unwrap().unwrap();
    assert_eq!(head.len, buf.len());
}

#[test]
fn zero_fields_means_gunicorns_maximum() {
    // gunicorn reads limit_request_fields <= 0 as its maximum, 32768:
    // a config file carried over with 0 must not refuse every header.
    let zero = Limits {
        fields: 0,
        ..Limits::default()
    };
    assert_eq!(zero.normalized().fields, 32768);
    let mut buf = request_line(50);
    buf.extend_from_slice(b"\r\n");
    for i in 0..150 {
        buf.extend_from_slice(format!("X-F{i}: v\r\n").as_bytes());
    }
    buf.extend_from_slice(b"Host: x\r\n\r\n");
    assert_eq!(parse(&buf, &zero).unwrap().unwrap().len, buf.len());
    // Above the maximum: the maximum.
    let big = Limits {
        fields: 1 << 20,
        ..Limits::default()
    };
    assert_eq!(big.normalized().fields, 32768);
}

#[test]
fn exactly_the_field_limit_waits_for_the_final_crlf() {
    let limits = Limits::default();
    let mut buf = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 1..100 {
        buf.extend_from_slice(format!("X-F{i}: {i}\r\n").as_bytes());
    }
    // 100 fields, the empty line not yet here (or half of it).
    partial(&buf, &limits);
    buf.push(b'\r');
    partial(&buf, &limits);
    buf.push(b'\n');
    let (_, fields) = complete(&buf);
    assert_eq!(fields.len(), 100);

    // Empty lines before the request line (skipped, as httparse skips
    // them) are neither the request line nor a field: still waiting.
    let mut led = b"\r\n\r\n".to_vec();
    led.extend_from_slice(&buf[..buf.len() - 2]);
    partial(&led, &limits);
    led.extend_from_slice(b"\r\n");
    assert_eq!(complete(&led).1.len(), 100);

    // A 101st field is refused, whole or in part.
    let mut over = buf[..buf.len() - 2].to_vec();
    over.extend_from_slice(b"X-F100: 100\r\n");
    assert_eq!(refused(&over), 431);
    over.extend_from_slice(b"\r\n");
    assert_eq!(refused(&over), 431);
    // A few fields with a small limit: the same edges.
    let three = Limits {
        fields: 3,
        ..Limits::default()
    };
    let head = b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\n";
    partial(head, &three);
    partial(&head[..head.len() - 3], &three);
    let mut four = head.to_vec();
    four.extend_from_slice(b"C: 3\r\n");
    assert_eq!(refused_with(&four, &three), 431);
}

#[test]
fn field_limits_above_the_stack_slots_hold_too() {
    // More fields than the parser keeps on its stack (128).
    for limit in [128, 129, 300] {
        let limits = Limits {
            fields: limit,
            ..Limits::default()
        };
        let mut buf = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
        for i in 1..limit {
            buf.extend_from_slice(format!("X-F{i}: {i}\r\n").as_bytes());
        }
        partial(&buf, &limits);
        let mut spans = Vec::new();
        let mut whole = buf.clone();
        whole.extend_from_slice(b"\r\n");
        assert!(matches!(
            parse_head(&whole, &limits, &mut spans),
            Ok(Some(_))
        ));
        assert_eq!(spans.len(), limit);
        buf.extend_from_slice(b"X-Over: 1\r\n\r\n");
        assert_eq!(refused_with(&buf, &limits), 431, "{limit}");
    }
}

#[test]
fn a_field_of_exactly_the_field_size_is_accepted() {
    // The field size counts the line with its CRLF (gunicorn's count).
    let limits = Limits {
        field_size: 300,
        ..Limits::default()
    };
    let mut buf = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
    buf.extend_from_slice(&field("X-Big", 298));
    // In part (without CR, with CR), then whole.
    partial(&buf, &limits);
    buf.push(b'\r');
    partial(&buf, &limits);
    buf.extend_from_slice(b"\n\r\n");
    assert!(matches!(parse(&buf, &limits), Ok(Some(_))));

    let mut over = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
    over.extend_from_slice(&field("X-Big", 299));
    // Refused as soon as the line is longer than the limit, and whole.
    assert_eq!(refused_with(&over, &limits), 431);
    partial(&over[..over.len() - 1], &limits);
    over.extend_from_slice(b"\r\n\r\n");
    assert_eq!(refused_with(&over, &limits), 431);
}

#[test]
fn each_field_line_is_measured_to_its_own_end() {
    // A short field before one near the limit: each line is measured from
    // its name to its own LF, not to a later line's.
    let limits = Limits {
        field_size: 50,
        ..Limits::default()
    };
    for (short, long) in [(2, 45), (3, 50), (7, 50), (1, 50)] {
        let mut buf = b"GET / HTTP/1.1\r\n".to_vec();
        buf.extend_from_slice(&field("Host", 6 + short));
        buf.extend_from_slice(b"\r\n");
        buf.extend_from_slice(&field("X-Long", long - 2));
        buf.extend_from_slice(b"\r\n");
        buf.extend_from_slice(&field("X-Short", 12));
        buf.extend_from_slice(b"\r\n\r\n");
        let head = parse(&buf, &limits).unwrap().unwrap();
        assert_eq!(head.len, buf.len(), "{short} {long}");
    }
}

#[test]
fn names_as_long_as_framing_names_are_just_fields() {
    // 4, 6, 10, 12, 14 and 17 bytes, as Host, Expect, Connection,
    // Content-Type, Content-Length and Transfer-Encoding.
    let (head, fields) = complete(
        b"POST / HTTP/1.1\r\nHost: x\r\nDate: close\r\nOrigin: 100-continue\r\n\
          User-Agent: close\r\nX-Request-Id: a\r\nX-Request-Id: b\r\n\
          Accept-Charset: utf-8\r\nX-Forwarded-Proto: https\r\n\r\n",
    );
    assert_eq!(fields.len(), 8);
    assert_eq!(head.framing, Framing::None);
    assert!(head.keep_alive);
    assert!(!head.expect_continue);
    // Another 4-byte name is no Host.
    assert_eq!(refused(b"GET / HTTP/1.1\r\nDate: x\r\n\r\n"), 400);
    let (_, fields) = complete(b"GET / HTTP/1.1\r\nFrom: a\r\nHost: x\r\nDate: b\r\n\r\n");
    assert_eq!(fields.len(), 3);
    // HTTP/1.0 keep-alive comes only from Connection.
    let (head, _) = complete(b"GET / HTTP/1.0\r\nUser-Agent: keep-alive\r\n\r\n");
    assert!(!head.keep_alive);
    // A Content-Type and a 12-byte name beside it.
    complete(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Type: a\r\nX-Request-Id: b\r\n\r\n");
    // A Content-Length and a 14-byte name beside it.
    let (head, _) =
        complete(b"POST / HTTP/1.1\r\nHost: x\r\nAccept-Charset: 7\r\nContent-Length: 3\r\n\r\n");
    assert_eq!(head.framing, Framing::Length(3));
    // A chunked request and a 17-byte name beside it.
    let (head, _) = complete(
        b"POST / HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: http\r\n\
          Transfer-Encoding: chunked\r\n\r\n",
    );
    assert_eq!(head.framing, Framing::Chunked);
}

#[test]
fn framing_names_match_in_any_case() {
    assert_eq!(
        refused(b"GET / HTTP/1.1\r\nhOST: x\r\nHOST: y\r\n\r\n"),
        400,
        "duplicate Host"
    );
    assert_eq!(
        refused(b"GET / HTTP/1.1\r\nHost: x\r\ncontent-type: a\r\nCONTENT-TYPE: b\r\n\r\n"),
        400
    );
    assert_eq!(
        refused(b"GET / HTTP/1.1\r\nHost: x\r\ncontent-length: 1\r\nContent-Length: 1\r\n\r\n"),
        400
    );
    let (head, _) = complete(b"GET / HTTP/1.1\r\nHost: x\r\nCONNECTION: Close\r\n\r\n");
    assert!(!head.keep_alive);
    let (head, _) = complete(b"POST / HTTP/1.1\r\nHost: x\r\ntransfer-encoding: Chunked\r\n\r\n");
    assert_eq!(head.framing, Framing::Chunked);
    let (head, _) = complete(b"POST / HTTP/1.1\r\nHost: x\r\nexpect: 100-Continue\r\n\r\n");
    assert!(head.expect_continue);
}

#[test]
fn keep_alive_and_expect_by_version() {
    let ka = |req: &[u8]| complete(req).0.keep_alive;
    assert!(ka(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert!(ka(
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n"
    ));
    assert!(!ka(
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    ));
    assert!(!ka(
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade, close\r\n\r\n"
    ));
    assert!(!ka(b"GET / HTTP/1.0\r\n\r\n"));
    assert!(ka(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
    assert!(ka(
        b"GET / HTTP/1.0\r\nConnection: foo , Keep-Alive\r\n\r\n"
    ));
    assert!(!ka(
        b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"
    ));
    assert!(!ka(b"GET / HTTP/1.0\r\nConnection: close\r\n\r\n"));

    let expect = |req: &[u8]| complete(req).0.expect_continue;
    assert!(expect(
        b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n"
    ));
    assert!(!expect(
        b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\n\r\n"
    ));
    assert!(!expect(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n"));

    let (head, _) = complete(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(head.version, Version::Http10);
    assert_eq!(head.version.as_str(), "HTTP/1.0");
    let (head, _) = complete(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(head.version, Version::Http11);
    assert_eq!(head.version.as_str(), "HTTP/1.1");
}

fn path_of(req: &[u8]) -> String {
    let (head, _) = complete(req);
    String::from_utf8(head.path.get(req).to_vec()).unwrap()
}

#[test]
fn origin_form_with_a_url_in_its_query() {
    assert_eq!(
        path_of(b"GET /r?u=http://x/y HTTP/1.1\r\nHost: x\r\n\r\n"),
        "/r"
    );
    assert_eq!(path_of(b"GET /a://b HTTP/1.1\r\nHost: x\r\n\r\n"), "/a://b");
    assert_eq!(path_of(b"GET /p?q HTTP/1.1\r\nHost: x\r\n\r\n"), "/p");
    assert_eq!(path_of(b"GET /p HTTP/1.1\r\nHost: x\r\n\r\n"), "/p");
    // absolute-form: the path after the authority, up to the query.
    assert_eq!(
        path_of(b"GET http://host/p/q?u=http://x/ HTTP/1.1\r\nHost: x\r\n\r\n"),
        "/p/q"
    );
    assert_eq!(
        path_of(b"GET https://a.example:8080/ HTTP/1.1\r\nHost: x\r\n\r\n"),
        "/"
    );
    let req = b"GET http://host?q=/x HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(path_of(req), "");
    let (head, _) = complete(req);
    assert!(head.path.is_empty());
    let req = b"GET /abc?d HTTP/1.1\r\nHost: x\r\n\r\n";
    let (head, _) = complete(req);
    assert_eq!(head.method.get(req), b"GET");
    assert_eq!(head.target.get(req), b"/abc?d");
    assert_eq!((head.target.len(), head.path.len()), (6, 4));
    assert!(!head.target.is_empty());
}

#[test]
fn request_targets_and_methods() {
    for ok in [
        &b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"CONNECT host:443 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET h+t-t.p9://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /~a!$&'()*+,;=:@ HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"ABCDEFGHIJKLMNOPQRST / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"M-1._$ / HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        complete(ok);
    }
    for bad in [
        &b"GET * HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"OPTIONS ** HTTP/1.1\r\nHost: x\r\n\r\n",
        b"CONNECT /x:1 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"CONNECT host HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET 1http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET ://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET http:/x HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET ht_tp://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET x HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /\x7f HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GE / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"ABCDEFGHIJKLMNOPQRSTU / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"get / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"123 / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"G:T / HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        assert_eq!(refused(bad), 400, "{}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn head_line_endings_and_leading_empty_lines() {
    complete(b"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");
    complete(b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(
        refused(b"\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        400
    );
    assert_eq!(refused(b"GET / HTTP/1.1\nHost: x\r\n\r\n"), 400);
    assert_eq!(refused(b"GET / HTTP/1.1\r\nHost: x\n\r\n"), 400);
    assert_eq!(refused(b"GET / HTTP/1.1\r\nHost: x\r\n\n"), 400);
    assert_eq!(refused(b"GET / HTTP/1.1\r\n\r\n"), 400, "missing Host");
    assert_eq!(
        refused(b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x01b\r\n\r\n"),
        400
    );
    assert_eq!(refused(b"GET / HTTP/1.2\r\nHost: x\r\n\r\n"), 400);
    assert_eq!(refused(b"GET / HTTP/1.1\r\nHo st: x\r\n\r\n"), 400);
    let e = parse(b"GET / HTTP/1.1\r\n\r\n", &Limits::default()).unwrap_err();
    assert_eq!(e.to_string(), "missing Host header (400)");
}

#[test]
fn content_length_of_up_to_19_digits() {
    let framing = |v: &str| {
        let req = format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {v}\r\n\r\n");
        complete(req.as_bytes()).0.framing
    };
    assert_eq!(
        framing("1234567890123456789"),
        Framing::Length(1234567890123456789)
    );
    assert_eq!(
        framing("9999999999999999999"),
        Framing::Length(9999999999999999999)
    );
    assert_eq!(framing("0000000000000000042"), Framing::Length(42));
    assert_eq!(framing("0"), Framing::None);
    assert_eq!(framing("007"), Framing::Length(7));
    for bad in [
        "12345678901234567890",
        "00000000000000000001",
        "1a",
        "",
        " ",
    ] {
        let req = format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {bad}\r\n\r\n");
        assert_eq!(refused(req.as_bytes()), 400, "{bad:?}");
    }
}

#[test]
fn transfer_encoding_checks() {
    for (req, status) in [
        (&b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"[..], 501),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: x-compress\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: ,chunked\r\n\r\n", 400),
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n", 400),
    ] {
        assert_eq!(refused(req), status, "{}", String::from_utf8_lossy(req));
    }
}

/// Decode `body` whole and byte by byte; both must agree.
fn decode(body: &[u8], limits: &Limits) -> Result<(Vec<u8>, Decoded), ParseError> {
    let mut dec = ChunkedDecoder::new(limits);
    let mut out = Vec::new();
    let whole = dec.decode(body, &mut out).map(|d| (out, d));
    let mut dec = ChunkedDecoder::new(limits);
    let mut out = Vec::new();
    let mut consumed = 0;
    let mut bytes = Ok(Decoded {
        consumed: 0,
        done: false,
    });
    for b in body {
        match dec.decode(std::slice::from_ref(b), &mut out) {
            Ok(d) => {
                consumed += d.consumed;
                bytes = Ok(Decoded {
                    consumed,
                    done: d.done,
                });
                if d.done {
                    break;
                }
            }
            Err(e) => {
                bytes = Err(e);
                break;
            }
        }
    }
    assert_eq!(whole.as_ref().err(), bytes.as_ref().err());
    if let (Ok((out_whole, d)), Ok(b)) = (&whole, &bytes) {
        assert_eq!(out_whole, &out);
        assert_eq!(d.done, b.done);
        assert_eq!(dec.is_done(), d.done);
    }
    whole
}

fn decoded(body: &[u8]) -> Vec<u8> {
    let (out, d) = decode(body, &Limits::default()).expect("decodes");
    assert!(d.done, "not done");
    assert_eq!(d.consumed, body.len(), "consumed");
    out
}

fn chunk_status(body: &[u8], limits: &Limits) -> u16 {
    match decode(body, limits) {
        Err(e) => e.status,
        Ok(r) => panic!("{:?} was not refused: {r:?}", String::from_utf8_lossy(body)),
    }
}

#[test]
fn chunks_decode_and_stop_at_the_end_of_the_body() {
    assert_eq!(decoded(b"5\r\nhello\r\n0\r\n\r\n"), b"hello");
    assert_eq!(
        decoded(b"3\r\nabc\r\nA\r\n0123456789\r\n0\r\n\r\n"),
        b"abc0123456789"
    );
    assert_eq!(
        decoded(b"a;x=y\r\n0123456789\r\n0;z\r\n\r\n"),
        b"0123456789"
    );
    assert_eq!(decoded(b"0\r\n\r\n"), b"");
    // The next request's bytes are left alone.
    let mut dec = ChunkedDecoder::default();
    let mut out = Vec::new();
    let d = dec
        .decode(b"2\r\nhi\r\n0\r\n\r\nGET / HTTP/1.1\r\n", &mut out)
        .unwrap();
    assert_eq!((d.consumed, d.done, out.as_slice()), (12, true, &b"hi"[..]));
    assert!(dec.is_done());
    let again = dec.decode(b"more", &mut out).unwrap();
    assert_eq!((again.consumed, again.done), (0, true));
    // Not done before the final CRLF.
    let (_, d) = decode(b"2\r\nhi\r\n0\r\n", &Limits::default()).unwrap();
    assert_eq!((d.consumed, d.done), (10, false));
    // parse_request: head, body, and the bytes they took.
    let req = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nNEXT";
    let (head, body, used) = parse_request(req, &Limits::default()).unwrap().unwrap();
    assert_eq!(
        (head.framing, body.as_slice(), used),
        (Framing::Chunked, &b"abc"[..], req.len() - 4)
    );
    let req = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcNEXT";
    let (_, body, used) = parse_request(req, &Limits::default()).unwrap().unwrap();
    assert_eq!((body.as_slice(), used), (&b"abc"[..], req.len() - 4));
    assert_eq!(
        parse_request(&req[..req.len() - 5], &Limits::default()),
        Ok(None)
    );
    // The body's last byte is the buffer's last byte.
    let (_, body, used) = parse_request(&req[..req.len() - 4], &Limits::default())
        .unwrap()
        .unwrap();
    assert_eq!((body.as_slice(), used), (&b"abc"[..], req.len() - 4));
}

#[test]
fn a_size_line_without_digits_is_no_last_chunk() {
    let limits = Limits::default();
    for body in [
        &b"\r\n\r\n"[..],
        b";ext\r\n\r\n",
        b";\r\n\r\n",
        b"\r\nhello\r\n0\r\n\r\n",
        b"x\r\n",
        b"5\nhello\r\n0\r\n\r\n",
        b"5\r\nhelloX\r\n0\r\n\r\n",
        b"5\r\nhello\rX0\r\n\r\n",
        b"0\r\n\r\r",
        b"0\r\nX: y\rX",
    ] {
        assert_eq!(
            chunk_status(body, &limits),
            400,
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn chunk_sizes_of_up_to_16_hex_digits() {
    let limits = Limits::default();
    // 16 digits: the largest size is taken (the data is still to come).
    for size in ["FFFFFFFFFFFFFFFF", "ffffffffffffffff", "1000000000000000"] {
        let body = format!("{size}\r\nabc");
        let (out, d) = decode(body.as_bytes(), &limits).unwrap();
        assert_eq!((out.as_slice(), d.done), (&b"abc"[..], false), "{size}");
    }
    // 17 significant digits overflow.
    for size in [
        "10000000000000000",
        "1FFFFFFFFFFFFFFFF",
        "FFFFFFFFFFFFFFFF0",
    ] {
        let body = format!("{size}\r\nabc");
        assert_eq!(chunk_status(body.as_bytes(), &limits), 400, "{size}");
    }
    // Leading zeros: up to 32 digits in all.
    let body = format!("{}5\r\nhello\r\n0\r\n\r\n", "0".repeat(31));
    assert_eq!(decoded(body.as_bytes()), b"hello");
    let body = format!("{}5\r\nhello\r\n0\r\n\r\n", "0".repeat(32));
    assert_eq!(chunk_status(body.as_bytes(), &limits), 400);
    assert_eq!(
        decoded(b"00000B\r\nhello world\r\n0\r\n\r\n"),
        b"hello world"
    );
}

#[test]
fn chunk_extensions_are_bounded_by_the_field_size() {
    let limits = Limits {
        field_size: 100,
        ..Limits::default()
    };
    let ext = |n: usize| format!("3;{}\r\nabc\r\n0\r\n\r\n", "e".repeat(n));
    // 100 bytes after the `;`: the limit; one more is refused.
    let (out, d) = decode(ext(100).as_bytes(), &limits).unwrap();
    assert_eq!((out.as_slice(), d.done), (&b"abc"[..], true));
    assert_eq!(chunk_status(ext(101).as_bytes(), &limits), 400);
    // Each extension has its own budget.
    let two = format!("1;{0}\r\na\r\n1;{0}\r\nb\r\n0\r\n\r\n", "e".repeat(100));
    assert_eq!(decode(two.as_bytes(), &limits).unwrap().0, b"ab");
    assert_eq!(chunk_status(b"1;a\nb\r\na\r\n0\r\n\r\n", &limits), 400);
    assert_eq!(chunk_status(b"1;a\x00\r\na\r\n0\r\n\r\n", &limits), 400);
}

fn trailers(lines: &[String]) -> Vec<u8> {
    let mut body = b"1\r\na\r\n0\r\n".to_vec();
    for l in lines {
        body.extend_from_slice(l.as_bytes());
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"\r\n");
    body
}

/// A trailer line `X...: v...` of `len` bytes.
fn trailer(len: usize) -> String {
    format!("X{}", "-".repeat(len - 4)) + ": v"
}

#[test]
fn trailers_are_bounded_per_line_and_in_total() {
    // 20 bytes per line, 2 lines' worth (40 bytes) in all.
    let limits = Limits {
        request_line: 100,
        fields: 2,
        field_size: 20,
    };
    let ok = |lines: &[String]| {
        let body = trailers(lines);
        let (out, d) = decode(&body, &limits).expect("accepted");
        assert_eq!(
            (out.as_slice(), d.done, d.consumed),
            (&b"a"[..], true, body.len())
        );
    };
    ok(&[trailer(20)]);
    ok(&[trailer(20), trailer(20)]);
    ok(&[trailer(10), trailer(10), trailer(20)]);
    let too_large = |lines: &[String]| assert_eq!(chunk_status(&trailers(lines), &limits), 431);
    too_large(&[trailer(21)]);
    too_large(&[trailer(10), trailer(21)]);
    too_large(&[trailer(20), trailer(20), "X:".to_string()]);
    too_large(&[trailer(20), trailer(19), "Y:".to_string()]);
    ok(&[trailer(19), trailer(19), "Y:".to_string()]);
    // Tabs and spaces in values are allowed, and count toward both limits.
    ok(&["X:\ta b".to_string()]);
    ok(&[format!("X:{}", "\t".repeat(18))]);
    too_large(&[format!("X:{}", "\t".repeat(19))]);
    too_large(&[format!("X:{}", "\t".repeat(100_000))]);
    too_large(&[
        trailer(20),
        format!("Y:{}", "\t".repeat(18)),
        "Z:".to_string(),
    ]);
}

#[test]
fn trailer_names_are_tokens_and_values_have_no_controls() {
    let limits = Limits::default();
    for line in ["@X: y", ":y", "X@: y", "X : y", "(X): y", "X\x01: y"] {
        let body = trailers(&[line.to_string()]);
        assert_eq!(chunk_status(&body, &limits), 400, "{line:?}");
    }
    for line in [" X: y", "\tX: y"] {
        let body = trailers(&["A: b".to_string(), line.to_string()]);
        let e = decode(&body, &limits).unwrap_err();
        assert_eq!(
            (e.status, e.reason),
            (400, "obsolete line folding in trailer"),
            "{line:?}"
        );
    }
    for line in ["X: a\x01b", "X: a\x7fb", "X: a\x1fb", "X: \x00", "X: a\nb"] {
        let body = trailers(&[line.to_string()]);
        assert_eq!(chunk_status(&body, &limits), 400, "{line:?}");
    }
    for line in ["X: a b", "X: ~", "X: \x20", "x-Y_z.1!#$%&'*+^`|~: v", "X:"] {
        let body = trailers(&[line.to_string()]);
        let (_, d) = decode(&body, &limits).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        assert!(d.done, "{line:?}");
    }
}

#[test]
fn tokens_and_field_values() {
    assert!(is_token(b"X-Abc_1.2!#$%&'*+^`|~"));
    for bad in [&b""[..], b"a b", b"a:b", b"a\x7f", b"a\"", b"(", b"a\xff"] {
        assert!(!is_token(bad), "{bad:?}");
    }
    assert!(is_field_value(b"a b\tc~ \x80\xff"));
    assert!(is_field_value(b""));
    for bad in [&b"a\x7f"[..], b"\x1f", b"\r", b"\n", b"\x00", b"\x01"] {
        assert!(!is_field_value(bad), "{bad:?}");
    }
}

#[test]
fn authorities_with_percent_escapes_and_ip_literals() {
    let target = |authority: &str| format!("GET http://{authority}/p HTTP/1.1\r\nHost: h\r\n\r\n");
    for ok in [
        "ex%41mple.com",
        "%41",
        "a%41%42",
        "ab%41z",
        "[::1]:8080",
        "[::1%25eth0]",
        "[v1.a]",
        "[vF.a:b]",
        "[V12.x]",
    ] {
        let req = target(ok);
        assert!(
            matches!(parse(req.as_bytes(), &Limits::default()), Ok(Some(_))),
            "{ok}"
        );
    }
    for bad in [
        // Escapes: short at the end, not hex, first digit not hex while
        // the bytes around it are, and what follows a good escape.
        "a%4",
        "a%",
        "a%zz",
        "a%4g",
        "a%g4",
        "ab%41@",
        // IPvFuture: no hex digit, a non-hex digit, nothing after the dot,
        // no dot; an empty or bad zone.
        "[v.a]",
        "[vG.a]",
        "[v1.]",
        "[v1]",
        "[::1%25]",
        "[::1%25e%zz]",
    ] {
        let req = target(bad);
        assert_eq!(refused(req.as_bytes()), 400, "{bad}");
    }
}
