//! The slog drain: renders a record into a thread-local buffer and hands the
//! finished line to its sink in one write.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::sync::Arc;

use slog::{KV, Key, OwnedKVList, Record};

use crate::config::Level;
use crate::escape::{needs_repr, push_message, push_py_repr};
use crate::sink::Sink;
use crate::sys;
use crate::time::{self, Now};

/// How a drain lays out its lines.
pub(crate) enum Style {
    /// gunicorn's error-log format.
    Plain,
    /// The message alone (gunicorn's access log format `%(message)s`).
    Message,
    /// structlog's `ConsoleRenderer`.
    #[cfg(feature = "structured")]
    Console { colors: bool },
    /// structlog's `JSONRenderer`, through slog-json.
    #[cfg(feature = "structured")]
    Json(crate::json::JsonFormat),
}

/// A synchronous drain: no thread, nothing buffered between lines (but the
/// access-log lines of a thread that holds them), so it survives `fork`.
#[cfg_attr(not(feature = "structured"), allow(dead_code))]
pub(crate) struct LineDrain {
    pub(crate) name: Arc<str>,
    pub(crate) min: slog::Level,
    pub(crate) style: Style,
    pub(crate) sink: Arc<Sink>,
    /// Access-log lines: held on threads that hold lines ([`crate::HeldLines`]).
    pub(crate) holdable: bool,
}

/// Buffers reused by every line a thread writes.
#[derive(Default)]
pub(crate) struct Scratch {
    /// The line being built.
    pub(crate) line: Vec<u8>,
    /// Rendered keys and values of the key-value pairs.
    kv: Vec<u8>,
    /// (key start, key end, value end) into `kv`.
    entries: Vec<(usize, usize, usize)>,
    /// A formatted message or value.
    tmp: String,
}

impl Scratch {
    fn clear(&mut self) {
        self.line.clear();
        self.kv.clear();
        self.entries.clear();
        self.tmp.clear();
    }

    /// Do not keep a huge buffer because of one huge line.
    fn trim(&mut self) {
        const KEEP: usize = 64 * 1024;
        if self.line.capacity() > KEEP {
            self.line = Vec::new();
        }
        if self.kv.capacity() > KEEP {
            self.kv = Vec::new();
        }
        if self.tmp.capacity() > KEEP {
            self.tmp = String::new();
        }
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `f` with this thread's scratch buffers, or fresh ones when they are
/// in use (a value that logs while being logged) or already destroyed.
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    let mut f = Some(f);
    let r = SCRATCH.try_with(|s| match s.try_borrow_mut() {
        Ok(mut s) => {
            s.clear();
            let f = f.take().expect("called once");
            let r = f(&mut s);
            s.trim();
            Some(r)
        }
        Err(_) => None,
    });
    match r {
        Ok(Some(r)) => r,
        _ => {
            let f = f.take().expect("called once");
            f(&mut Scratch::default())
        }
    }
}

impl slog::Drain for LineDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), slog::Never> {
        if !record.level().is_at_least(self.min) {
            return Ok(());
        }
        match &self.style {
            #[cfg(feature = "structured")]
            Style::Json(json) => json.log(&self.sink, self.holdable, record, values),
            _ => with_scratch(|s| {
                self.render(s, record, values);
                s.line.push(b'\n');
                self.sink.write(&s.line, self.holdable);
            }),
        }
        Ok(())
    }

    fn is_enabled(&self, level: slog::Level) -> bool {
        level.is_at_least(self.min)
    }
}

impl LineDrain {
    fn render(&self, s: &mut Scratch, record: &Record<'_>, values: &OwnedKVList) {
        let level = Level::from_slog(record.level());
        match &self.style {
            Style::Message => push_msg(s, record.msg()),
            Style::Plain => {
                // [2026-11-25 09:27:47 +0000] [1234] [INFO] message key=value
                time::push_plain(&mut s.line, Now::get().secs);
                s.line.extend_from_slice(b" [");
                let _ = write!(VecFmt(&mut s.line), "{}", sys::pid());
                s.line.extend_from_slice(b"] [");
                s.line.extend_from_slice(level.as_upper_str().as_bytes());
                s.line.extend_from_slice(b"] ");
                push_msg(s, record.msg());
                collect(s, record, values, false);
                for i in 0..s.entries.len() {
                    let (k0, k1, v1) = s.entries[i];
                    s.line.push(b' ');
                    s.line.extend_from_slice(&s.kv[k0..k1]);
                    s.line.push(b'=');
                    s.line.extend_from_slice(&s.kv[k1..v1]);
                }
            }
            #[cfg(feature = "structured")]
            Style::Console { colors } => self.console(s, *colors, level, record, values),
            #[cfg(feature = "structured")]
            Style::Json(_) => {}
        }
    }

    /// structlog's `ConsoleRenderer` (26.x), byte for byte:
    /// `{timestamp} [{level:<9}] {event:<30} [{logger}] k=v ...`, keys sorted,
    /// `pid` and `tid` among them; with colors, its ANSI styles.
    #[cfg(feature = "structured")]
    fn console(
        &self,
        s: &mut Scratch,
        colors: bool,
        level: Level,
        record: &Record<'_>,
        values: &OwnedKVList,
    ) {
        const RESET: &[u8] = b"\x1b[0m";
        const BRIGHT: &[u8] = b"\x1b[1m";
        const DIM: &[u8] = b"\x1b[2m";
        const BLUE: &[u8] = b"\x1b[34m";
        const CYAN: &[u8] = b"\x1b[36m";
        const MAGENTA: &[u8] = b"\x1b[35m";
        let style = |s: &mut Scratch, code: &[u8]| {
            if colors {
                s.line.extend_from_slice(code);
            }
        };

        style(s, DIM);
        time::push_iso_utc(&mut s.line, Now::get());
        style(s, RESET);
        s.line.extend_from_slice(b" [");
        style(
            s,
            match level {
                Level::Critical | Level::Error => b"\x1b[31m",
                Level::Warning => b"\x1b[33m",
                Level::Info | Level::Debug => b"\x1b[32m",
            },
        );
        style(s, BRIGHT);
        let name = level.as_str();
        s.line.extend_from_slice(name.as_bytes());
        pad(&mut s.line, name.len(), 9);
        style(s, RESET);
        s.line.extend_from_slice(b"] ");
        style(s, BRIGHT);
        let start = s.line.len();
        push_msg(s, record.msg());
        let width = s.line[start..]
            .iter()
            .filter(|&&b| b & 0xc0 != 0x80)
            .count();
        pad(&mut s.line, width, 30);
        style(s, RESET);
        s.line.extend_from_slice(b" [");
        style(s, RESET);
        style(s, BRIGHT);
        style(s, BLUE);
        s.line.extend_from_slice(self.name.as_bytes());
        style(s, RESET);
        s.line.push(b']');
        style(s, RESET);

        collect(s, record, values, true);
        // Sorted by key (structlog's sort_keys=True); of equal keys the last
        // one wins, as a later update of the event dict would.
        let kv = std::mem::take(&mut s.kv);
        s.entries.sort_by(|a, b| kv[a.0..a.1].cmp(&kv[b.0..b.1]));
        let n = s.entries.len();
        for i in 0..n {
            let (k0, k1, v1) = s.entries[i];
            if i + 1 < n {
                let (n0, n1, _) = s.entries[i + 1];
                if kv[k0..k1] == kv[n0..n1] {
                    continue;
                }
            }
            s.line.push(b' ');
            style(s, CYAN);
            s.line.extend_from_slice(&kv[k0..k1]);
            style(s, RESET);
            s.line.push(b'=');
            style(s, MAGENTA);
            s.line.extend_from_slice(&kv[k1..v1]);
            style(s, RESET);
        }
        s.kv = kv;
    }
}

#[cfg_attr(not(feature = "structured"), allow(dead_code))]
fn pad(out: &mut Vec<u8>, len: usize, width: usize) {
    if len < width {
        out.resize(out.len() + (width - len), b' ');
    }
}

/// The record's message, one line (see `push_message`).
fn push_msg(s: &mut Scratch, msg: &fmt::Arguments<'_>) {
    match msg.as_str() {
        Some(m) => push_message(&mut s.line, m),
        None => {
            s.tmp.clear();
            let _ = s.tmp.write_fmt(*msg);
            push_message(&mut s.line, &s.tmp);
        }
    }
}

/// Collects `pid` and `tid` (when `ids`), the logger's and the record's key-values, each
/// rendered as structlog's console renders a value.
fn collect(s: &mut Scratch, record: &Record<'_>, values: &OwnedKVList, ids: bool) {
    let mut c = Collector {
        kv: &mut s.kv,
        entries: &mut s.entries,
        tmp: &mut s.tmp,
    };
    use slog::Serializer as _;
    if ids {
        let _ = c.emit_u32("pid", sys::pid());
        let _ = c.emit_u64("tid", sys::thread_ident());
    }
    // slog hands out each list last-declared first; put them back in the
    // order they were written (the logger's context, then the call site's).
    let start = c.entries.len();
    let _ = values.serialize(record, &mut c);
    c.entries[start..].reverse();
    let start = c.entries.len();
    let _ = record.kv().serialize(record, &mut c);
    c.entries[start..].reverse();
}

struct Collector<'a> {
    kv: &'a mut Vec<u8>,
    entries: &'a mut Vec<(usize, usize, usize)>,
    tmp: &'a mut String,
}

impl Collector<'_> {
    fn entry(&mut self, key: Key, value: impl FnOnce(&mut Vec<u8>)) -> slog::Result {
        let k0 = self.kv.len();
        // `Key` is `&'static str` unless slog's `dynamic-keys` feature is on.
        #[allow(clippy::useless_asref)]
        let key: &str = key.as_ref();
        push_message(self.kv, key);
        let k1 = self.kv.len();
        value(self.kv);
        self.entries.push((k0, k1, self.kv.len()));
        Ok(())
    }

    fn str_value(&mut self, key: Key, v: &str) -> slog::Result {
        self.entry(key, |out| {
            if needs_repr(v) {
                push_py_repr(out, v);
            } else {
                out.extend_from_slice(v.as_bytes());
            }
        })
    }

    fn display(&mut self, key: Key, v: impl fmt::Display) -> slog::Result {
        self.entry(key, |out| {
            let _ = write!(VecFmt(out), "{v}");
        })
    }
}

macro_rules! emit_display {
    ($($f:ident: $t:ty),*) => {
        $(fn $f(&mut self, key: Key, val: $t) -> slog::Result {
            self.display(key, val)
        })*
    };
}

impl slog::Serializer for Collector<'_> {
    fn emit_arguments(&mut self, key: Key, val: &fmt::Arguments<'_>) -> slog::Result {
        let mut tmp = std::mem::take(self.tmp);
        tmp.clear();
        let _ = tmp.write_fmt(*val);
        let r = self.str_value(key, &tmp);
        *self.tmp = tmp;
        r
    }

    fn emit_str(&mut self, key: Key, val: &str) -> slog::Result {
        self.str_value(key, val)
    }

    fn emit_bool(&mut self, key: Key, val: bool) -> slog::Result {
        self.entry(key, |o| {
            o.extend_from_slice(if val { b"True" } else { b"False" })
        })
    }

    fn emit_none(&mut self, key: Key) -> slog::Result {
        self.entry(key, |o| o.extend_from_slice(b"None"))
    }

    fn emit_unit(&mut self, key: Key) -> slog::Result {
        self.entry(key, |o| o.extend_from_slice(b"None"))
    }

    fn emit_char(&mut self, key: Key, val: char) -> slog::Result {
        let mut b = [0u8; 4];
        self.str_value(key, val.encode_utf8(&mut b))
    }

    fn emit_f32(&mut self, key: Key, val: f32) -> slog::Result {
        self.emit_f64(key, f64::from(val))
    }

    fn emit_f64(&mut self, key: Key, val: f64) -> slog::Result {
        // Python's float repr: `0.5`, `1.0`, `inf`, `nan`.
        self.entry(key, |o| {
            if val.is_nan() {
                o.extend_from_slice(b"nan");
            } else if val.is_infinite() {
                o.extend_from_slice(if val > 0.0 { b"inf" } else { b"-inf" });
            } else {
                let _ = write!(VecFmt(o), "{val:?}");
            }
        })
    }

    /// `slog::Serde` values: JSON text (treated as a string value).
    #[cfg(feature = "structured")]
    fn emit_serde(&mut self, key: Key, value: &dyn slog::SerdeValue) -> slog::Result {
        let text = serde_json::to_string(value.as_serde())
            .unwrap_or_else(|e| format!("<unserializable: {e}>"));
        self.str_value(key, &text)
    }

    #[cfg(not(feature = "structured"))]
    fn emit_serde(&mut self, key: Key, _value: &dyn slog::SerdeValue) -> slog::Result {
        self.str_value(key, "<serde value>")
    }

    emit_display!(
        emit_u8: u8, emit_i8: i8, emit_u16: u16, emit_i16: i16, emit_u32: u32, emit_i32: i32,
        emit_u64: u64, emit_i64: i64, emit_usize: usize, emit_isize: isize,
        emit_u128: u128, emit_i128: i128
    );
}

pub(crate) struct VecFmt<'a>(pub(crate) &'a mut Vec<u8>);

impl fmt::Write for VecFmt<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}
