//! Escaping that keeps one record on one line.

/// Appends `bytes` escaped for an access-log line: `"` as `\"` (gunicorn),
/// `\` as `\\`, control bytes (C0, DEL) and bytes that are not UTF-8 as
/// `\xNN`. Valid non-ASCII UTF-8 is kept.
pub(crate) fn push_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    // Fast path: nothing to escape (the common case for real requests).
    if is_clean(bytes) {
        out.extend_from_slice(bytes);
        return;
    }
    for chunk in bytes.utf8_chunks() {
        for &b in chunk.valid().as_bytes() {
            match b {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                0..=0x1f | 0x7f => push_hex(out, b),
                _ => out.push(b),
            }
        }
        for &b in chunk.invalid() {
            push_hex(out, b);
        }
    }
}

/// Whether `bytes` is printable ASCII without `"` and `\`. Checked in
/// blocks without an early exit inside a block, so the compiler vectorizes it.
fn is_clean(bytes: &[u8]) -> bool {
    for block in bytes.chunks(32) {
        let mut bad = false;
        for &b in block {
            // b - 0x20 >= 0x5f  <=>  b outside 0x20..0x7f (printable ASCII).
            bad |= (b.wrapping_sub(0x20) >= 0x5f) | (b == b'"') | (b == b'\\');
        }
        if bad {
            return false;
        }
    }
    true
}

/// Whether `bytes` holds a control byte other than tab (block-wise, like
/// [`is_clean`]).
fn has_control(bytes: &[u8]) -> bool {
    for block in bytes.chunks(32) {
        let mut bad = false;
        for &b in block {
            bad |= ((b < 0x20) & (b != b'\t')) | (b == 0x7f);
        }
        if bad {
            return true;
        }
    }
    false
}

/// Appends a message for the console and plain formats: control characters
/// other than tab become `\n`, `\r`, `\xNN`, so that neither a newline nor a
/// terminal escape sequence from data can forge a line. Everything else is
/// kept as written (structlog never escapes the event).
pub(crate) fn push_message(out: &mut Vec<u8>, s: &str) {
    if !has_control(s.as_bytes()) {
        out.extend_from_slice(s.as_bytes());
        return;
    }
    for &b in s.as_bytes() {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.push(b),
            0..=0x1f | 0x7f => push_hex(out, b),
            _ => out.push(b),
        }
    }
}

/// Whether structlog's `ConsoleRenderer` would `repr()` this string value
/// (it does when the string holds a space, tab, `=`, CR, LF or a quote); we
/// also do for any other control character.
pub(crate) fn needs_repr(s: &str) -> bool {
    s.bytes().any(|b| {
        matches!(b, b' ' | b'\t' | b'=' | b'\r' | b'\n' | b'"' | b'\'') || b < 0x20 || b == 0x7f
    })
}

/// Python's `repr()` of a `str`: single quotes unless the string holds `'`
/// and no `"`; `\\`, the quote, `\t`, `\n`, `\r` escaped, other control
/// characters as `\xNN`.
pub(crate) fn push_py_repr(out: &mut Vec<u8>, s: &str) {
    let quote = if s.contains('\'') && !s.contains('"') {
        b'"'
    } else {
        b'\''
    };
    out.push(quote);
    for &b in s.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            0..=0x1f | 0x7f => push_hex(out, b),
            _ if b == quote => {
                out.push(b'\\');
                out.push(b);
            }
            _ => out.push(b),
        }
    }
    out.push(quote);
}

fn push_hex(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(&[
        b'\\',
        b'x',
        HEX[usize::from(b >> 4)],
        HEX[usize::from(b & 15)],
    ]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(b: &[u8]) -> String {
        let mut v = Vec::new();
        push_escaped(&mut v, b);
        String::from_utf8(v).unwrap()
    }

    fn repr(s: &str) -> String {
        let mut v = Vec::new();
        push_py_repr(&mut v, s);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn access_escaping() {
        assert_eq!(esc(b"plain/path?x=1"), "plain/path?x=1");
        assert_eq!(esc(b"a\"b"), "a\\\"b");
        assert_eq!(esc(b"a\\b"), "a\\\\b");
        assert_eq!(esc(b"a\nb\r\x1b[31m\x7f"), "a\\x0ab\\x0d\\x1b[31m\\x7f");
        assert_eq!(esc(b"caf\xc3\xa9 \xff\xfe"), "café \\xff\\xfe");
    }

    #[test]
    fn python_repr() {
        // Checked against CPython 3.11: repr('a b'), repr("it's"), ...
        assert_eq!(repr("a b"), "'a b'");
        assert_eq!(repr("it's"), "\"it's\"");
        assert_eq!(repr("x\"y"), "'x\"y'");
        assert_eq!(repr("'\""), "'\\'\"'");
        assert_eq!(repr("a\nb\\"), "'a\\nb\\\\'");
        assert_eq!(repr("\x1b"), "'\\x1b'");
    }

    #[test]
    fn messages_stay_on_one_line() {
        let mut v = Vec::new();
        push_message(&mut v, "one\ntwo\r\x1b[2J\tend");
        assert_eq!(String::from_utf8(v).unwrap(), "one\\ntwo\\r\\x1b[2J\tend");
    }
}
