//! Timestamps: structlog's ISO-8601 UTC with microseconds, and gunicorn's
//! local-time formats (`[%d/%b/%Y:%H:%M:%S %z]`, `[%Y-%m-%d %H:%M:%S %z]`).

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::sys::{self, LocalTime};

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Seconds and microseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Now {
    pub secs: i64,
    pub micros: u32,
}

impl Now {
    pub(crate) fn get() -> Now {
        Now::from(SystemTime::now())
    }
}

impl From<SystemTime> for Now {
    fn from(t: SystemTime) -> Now {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Now {
                secs: d.as_secs() as i64,
                micros: d.subsec_micros(),
            },
            Err(e) => {
                // Before 1970: floor to the previous second.
                let d = e.duration();
                let mut secs = -(d.as_secs() as i64);
                let mut micros = d.subsec_micros();
                if micros > 0 {
                    secs -= 1;
                    micros = 1_000_000 - micros;
                }
                Now { secs, micros }
            }
        }
    }
}

/// Civil date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn push2(out: &mut Vec<u8>, v: u32) {
    out.push(b'0' + (v / 10 % 10) as u8);
    out.push(b'0' + (v % 10) as u8);
}

fn push_year(out: &mut Vec<u8>, y: i64) {
    if (0..10_000).contains(&y) {
        let y = y as u32;
        push2(out, y / 100);
        push2(out, y % 100);
    } else {
        out.extend_from_slice(y.to_string().as_bytes());
    }
}

/// `2026-11-25T09:27:47.056397Z`, as structlog's `TimeStamper(fmt="iso")` (utc).
pub(crate) fn push_iso_utc(out: &mut Vec<u8>, now: Now) {
    // The part up to the second changes once a second: format it then.
    let (secs, prefix) = ISO_PREFIX.with(Cell::get);
    let prefix = if secs == now.secs && prefix[0] != 0 {
        prefix
    } else {
        let mut v = Vec::with_capacity(20);
        push_iso_prefix(&mut v, now.secs);
        let mut p = [0u8; 20];
        if v.len() == 20 {
            p.copy_from_slice(&v);
            ISO_PREFIX.with(|c| c.set((now.secs, p)));
        } else {
            // A year beyond 9999: no cache, no fixed width.
            out.extend_from_slice(&v);
            push_micros(out, now.micros);
            return;
        }
        p
    };
    out.extend_from_slice(&prefix);
    push_micros(out, now.micros);
}

fn push_micros(out: &mut Vec<u8>, us: u32) {
    push2(out, us / 10_000);
    push2(out, us / 100 % 100);
    push2(out, us % 100);
    out.push(b'Z');
}

/// `2026-11-25T09:27:47.`
fn push_iso_prefix(out: &mut Vec<u8>, secs: i64) {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    let (y, m, d) = civil_from_days(days);
    push_year(out, y);
    out.push(b'-');
    push2(out, m);
    out.push(b'-');
    push2(out, d);
    out.push(b'T');
    push2(out, sod / 3600);
    out.push(b':');
    push2(out, sod / 60 % 60);
    out.push(b':');
    push2(out, sod % 60);
    out.push(b'.');
}

/// The same as a `String` (for slog values).
#[cfg_attr(not(feature = "structured"), allow(dead_code))]
pub(crate) fn iso_utc(now: Now) -> IsoUtc {
    let mut out = IsoUtc {
        bytes: [0u8; 32],
        len: 0,
    };
    // Through a reused buffer: no allocation per line.
    let done = ISO_BUF.try_with(|buf| {
        let Ok(mut buf) = buf.try_borrow_mut() else {
            return false;
        };
        buf.clear();
        push_iso_utc(&mut buf, now);
        out.len = buf.len().min(32);
        out.bytes[..out.len].copy_from_slice(&buf[..out.len]);
        true
    });
    if done != Ok(true) {
        let mut buf = Vec::with_capacity(32);
        push_iso_utc(&mut buf, now);
        out.len = buf.len().min(32);
        out.bytes[..out.len].copy_from_slice(&buf[..out.len]);
    }
    out
}

/// A formatted ISO timestamp on the stack.
#[cfg_attr(not(feature = "structured"), allow(dead_code))]
pub(crate) struct IsoUtc {
    bytes: [u8; 32],
    len: usize,
}

#[cfg_attr(not(feature = "structured"), allow(dead_code))]
impl IsoUtc {
    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}

fn utc_fallback(secs: i64) -> LocalTime {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    let (year, month, day) = civil_from_days(days);
    LocalTime {
        year,
        month,
        day,
        hour: sod / 3600,
        minute: sod / 60 % 60,
        second: sod % 60,
        offset_secs: 0,
    }
}

thread_local! {
    // localtime_r once per second per thread, not once per line.
    static LOCAL: Cell<Option<(i64, LocalTime)>> = const { Cell::new(None) };
    // The formatted second of the last ISO timestamp and of the last `t` atom.
    static ISO_PREFIX: Cell<(i64, [u8; 20])> = const { Cell::new((0, [0; 20])) };
    static CLF: Cell<(i64, [u8; 28])> = const { Cell::new((0, [0; 28])) };
    #[cfg_attr(not(feature = "structured"), allow(dead_code))]
    static ISO_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn local(secs: i64) -> LocalTime {
    LOCAL.with(|c| {
        if let Some((s, lt)) = c.get()
            && s == secs
        {
            return lt;
        }
        let lt = sys::local_time(secs).unwrap_or_else(|| utc_fallback(secs));
        c.set(Some((secs, lt)));
        lt
    })
}

fn push_offset(out: &mut Vec<u8>, offset_secs: i64) {
    out.push(if offset_secs < 0 { b'-' } else { b'+' });
    let m = (offset_secs.unsigned_abs() / 60) as u32;
    push2(out, m / 60);
    push2(out, m % 60);
}

/// `[25/Nov/2026:09:27:47 +0000]`: gunicorn's `t` atom
/// (`time.strftime('[%d/%b/%Y:%H:%M:%S %z]')`, local time).
pub(crate) fn push_clf(out: &mut Vec<u8>, secs: i64) {
    let (cached, line) = CLF.with(Cell::get);
    if cached == secs && line[0] == b'[' {
        out.extend_from_slice(&line);
        return;
    }
    let start = out.len();
    format_clf(out, secs);
    if out.len() - start == 28 {
        let mut line = [0u8; 28];
        line.copy_from_slice(&out[start..]);
        CLF.with(|c| c.set((secs, line)));
    }
}

fn format_clf(out: &mut Vec<u8>, secs: i64) {
    let t = local(secs);
    out.push(b'[');
    push2(out, t.day);
    out.push(b'/');
    out.extend_from_slice(MONTHS[(t.month as usize).clamp(1, 12) - 1].as_bytes());
    out.push(b'/');
    push_year(out, t.year);
    out.push(b':');
    push2(out, t.hour);
    out.push(b':');
    push2(out, t.minute);
    out.push(b':');
    push2(out, t.second);
    out.push(b' ');
    push_offset(out, t.offset_secs);
    out.push(b']');
}

/// `[2026-11-25 09:27:47 +0000]`: gunicorn's error-log date format, local time.
pub(crate) fn push_plain(out: &mut Vec<u8>, secs: i64) {
    let t = local(secs);
    out.push(b'[');
    push_year(out, t.year);
    out.push(b'-');
    push2(out, t.month);
    out.push(b'-');
    push2(out, t.day);
    out.push(b' ');
    push2(out, t.hour);
    out.push(b':');
    push2(out, t.minute);
    out.push(b':');
    push2(out, t.second);
    out.push(b' ');
    push_offset(out, t.offset_secs);
    out.push(b']');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iso(secs: i64, micros: u32) -> String {
        let mut v = Vec::new();
        push_iso_utc(&mut v, Now { secs, micros });
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn iso_matches_known_instants() {
        assert_eq!(iso(0, 0), "1970-01-01T00:00:00.000000Z");
        // date -u -d @1795598867
        assert_eq!(iso(1_795_598_867, 56_397), "2026-11-25T09:27:47.056397Z");
        assert_eq!(iso(951_782_400, 999_999), "2000-02-29T00:00:00.999999Z");
        assert_eq!(iso(-1, 0), "1969-12-31T23:59:59.000000Z");
    }

    #[test]
    fn before_epoch_floors() {
        let t = UNIX_EPOCH - std::time::Duration::from_micros(1);
        assert_eq!(
            Now::from(t),
            Now {
                secs: -1,
                micros: 999_999
            }
        );
    }
}
