//! The `Date` header value, formatted at most once a second per thread.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

thread_local! {
    static CACHE: Cell<(u64, [u8; 29])> = const { Cell::new((0, [0; 29])) };
}

/// Append the current HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub(crate) fn append_date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    CACHE.with(|c| {
        let (at, mut bytes) = c.get();
        if at != secs {
            let s = httpdate::fmt_http_date(now);
            if s.len() == 29 {
                bytes.copy_from_slice(s.as_bytes());
                c.set((secs, bytes));
            } else {
                out.extend_from_slice(s.as_bytes());
                return;
            }
        }
        out.extend_from_slice(&bytes);
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn date_is_an_http_date() {
        let mut v = Vec::new();
        super::append_date(&mut v);
        let s = String::from_utf8(v).unwrap();
        assert!(httpdate::parse_http_date(&s).is_ok(), "{s}");
        assert!(s.ends_with(" GMT"));
    }
}
