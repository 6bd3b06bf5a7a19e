//! Python-compatible text: `json.dumps(..., sort_keys=True)` for file keys and
//! `repr(float)` / `floatToGoString` for numbers in the exposition.

use std::fmt::Write as _;

/// Appends `s` as a JSON string the way Python's `json.dumps` does with
/// `ensure_ascii=True`: `"`, `\` and control characters escaped, everything
/// outside printable ASCII as `\uXXXX` (surrogate pairs above U+FFFF).
pub(crate) fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{:04x}", u);
                }
            }
        }
    }
    out.push('"');
}

/// The file key of one sample:
/// `json.dumps([metric_name, sample_name, labels, help], sort_keys=True)`.
/// `labels` must be sorted by name already.
pub(crate) fn mmap_key(
    metric_name: &str,
    sample_name: &str,
    labels: &[(&str, &str)],
    help: &str,
) -> String {
    let mut out = String::with_capacity(64);
    out.push('[');
    json_string(&mut out, metric_name);
    out.push_str(", ");
    json_string(&mut out, sample_name);
    out.push_str(", {");
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        json_string(&mut out, k);
        out.push_str(": ");
        json_string(&mut out, v);
    }
    out.push_str("}, ");
    json_string(&mut out, help);
    out.push(']');
    out
}

/// A small buffer on the stack for formatting one float without allocating.
struct StackBuf {
    buf: [u8; 64],
    len: usize,
}

impl std::fmt::Write for StackBuf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(std::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Appends Python's `repr(x)` of a float: shortest round-trip digits, fixed
/// notation with a trailing `.0` when the decimal exponent is in -4..16,
/// scientific (`1e+16`, `1.5e-05`) otherwise.
pub(crate) fn python_repr(out: &mut String, x: f64) {
    if x.is_nan() {
        out.push_str("nan");
        return;
    }
    if x.is_infinite() {
        out.push_str(if x > 0.0 { "inf" } else { "-inf" });
        return;
    }
    // Rust's `{:e}` prints the same shortest round-trip digits as Python.
    let mut sci = StackBuf {
        buf: [0; 64],
        len: 0,
    };
    let _ = write!(sci, "{:e}", x.abs());
    let sci = std::str::from_utf8(&sci.buf[..sci.len]).unwrap_or("0e0");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let mut digit_buf = [0u8; 40];
    let mut n = 0;
    for b in mantissa.bytes().filter(|b| *b != b'.') {
        digit_buf[n] = b;
        n += 1;
    }
    let digits = std::str::from_utf8(&digit_buf[..n]).unwrap_or("0");
    let decpt = exp + 1;
    if x.is_sign_negative() {
        out.push('-');
    }
    if -4 < decpt && decpt <= 16 {
        let n = n as i32;
        if decpt <= 0 {
            out.push_str("0.");
            for _ in 0..-decpt {
                out.push('0');
            }
            out.push_str(digits);
        } else if decpt >= n {
            out.push_str(digits);
            for _ in 0..decpt - n {
                out.push('0');
            }
            out.push_str(".0");
        } else {
            out.push_str(&digits[..decpt as usize]);
            out.push('.');
            out.push_str(&digits[decpt as usize..]);
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
}

/// Appends prometheus_client's `floatToGoString(x)`: `+Inf`, `-Inf`, `NaN`,
/// Python's repr otherwise, switched to an exponent for positive values of a
/// million and more (`1e+06`, `1.5e+07`), as Go prints them.
pub fn float_to_go_string(out: &mut String, x: f64) {
    // Most samples are counts: integers below a million print as their
    // digits and `.0`, without the general shortest-digits formatting.
    if x.fract() == 0.0 && x > -1e15 && x < 1e6 && x != 0.0 {
        // Exact: a whole number of this size is an i64.
        out.push_str(itoa::Buffer::new().format(x as i64));
        out.push_str(".0");
        return;
    }
    float_to_go_string_general(out, x);
}

fn float_to_go_string_general(out: &mut String, x: f64) {
    if x == f64::INFINITY {
        out.push_str("+Inf");
    } else if x == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else if x.is_nan() {
        out.push_str("NaN");
    } else {
        let start = out.len();
        python_repr(out, x);
        let dot = out[start..].find('.');
        if let Some(dot) = dot.filter(|d| x > 0.0 && *d > 6) {
            let mut m = StackBuf {
                buf: [0; 64],
                len: 0,
            };
            let s = &out[start..];
            let _ = write!(m, "{}.{}{}", &s[..1], &s[1..dot], &s[dot + 1..]);
            let mantissa = std::str::from_utf8(&m.buf[..m.len])
                .unwrap_or("0")
                .trim_end_matches(['0', '.']);
            let mut e = StackBuf {
                buf: [0; 64],
                len: 0,
            };
            let _ = write!(e, "{mantissa}e+{:02}", dot - 1);
            out.truncate(start);
            out.push_str(std::str::from_utf8(&e.buf[..e.len]).unwrap_or(""));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn go(x: f64) -> String {
        let mut s = String::new();
        float_to_go_string(&mut s, x);
        s
    }

    #[test]
    fn floats_print_like_python() {
        let cases = [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (0.1, "0.1"),
            (0.005, "0.005"),
            (2.5, "2.5"),
            (10.0, "10.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (123456.0, "123456.0"),
            (1e6, "1e+06"),
            (1234567.5, "1.2345675e+06"),
            (123456789012.0, "1.23456789012e+11"),
            (1e16, "1e+16"),
            (1e22, "1e+22"),
            (-1e6, "-1000000.0"),
            (-1e16, "-1e+16"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
            (1.0 / 3.0, "0.3333333333333333"),
            (5e-324, "5e-324"),
        ];
        for (x, want) in cases {
            assert_eq!(go(x), want, "{x:?}");
        }
    }

    #[test]
    fn integers_take_a_shortcut_to_the_same_text() {
        let mut xs: Vec<f64> = vec![
            1.0,
            -1.0,
            9.0,
            10.0,
            99.0,
            100.0,
            999_999.0,
            1e6,
            -1e6,
            1e15,
            -1e15,
            1e15 - 1.0,
            -(1e15 - 1.0),
            0.0,
            -0.0,
            0.5,
            -0.5,
            123_456.5,
        ];
        // A spread of magnitudes, integral and not.
        let mut v = 1.0f64;
        for _ in 0..400 {
            v *= -1.37;
            xs.extend([v, v.round(), v.trunc() + 0.25]);
        }
        xs.extend((0..20_000).map(f64::from));
        for x in xs {
            let mut fast = String::new();
            float_to_go_string(&mut fast, x);
            let mut general = String::new();
            float_to_go_string_general(&mut general, x);
            assert_eq!(fast, general, "{x:?}");
        }
    }

    #[test]
    fn keys_match_python_json_dumps() {
        let k = mmap_key(
            "m",
            "m_total",
            &[("a", "x\"y\\z\n"), ("b", "é😀\u{7f}")],
            "h",
        );
        assert_eq!(
            k,
            r#"["m", "m_total", {"a": "x\"y\\z\n", "b": "\u00e9\ud83d\ude00\u007f"}, "h"]"#
        );
        assert_eq!(mmap_key("g", "g", &[], ""), r#"["g", "g", {}, ""]"#);
    }
}
