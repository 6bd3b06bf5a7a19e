//! JSON lines through slog-json, with structlog's keys in the seed's order:
//! `event`, `level`, `logger`, `pid`, `tid`, `timestamp`, then the logger's
//! and the call site's key-values with their types kept.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::sync::Arc;

use std::fmt::{self, Write as _};

use slog::{
    BorrowedKV, Drain as _, KV, Key, OwnedKVList, PushFnValue, Record, RecordStatic, SerdeValue, o,
};

use crate::config::Level;
use crate::sink::Sink;
use crate::sys;
use crate::time::{self, Now};

/// The line being written, shared by this thread's slog-json drains. An
/// `Rc<RefCell<..>>` inside the thread's own state: serde_json writes a line
/// in dozens of small pieces, each only a borrow flag away from the buffer.
#[derive(Clone, Default)]
struct SharedLine(Rc<RefCell<Vec<u8>>>);

impl io::Write for SharedLine {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.borrow_mut().extend_from_slice(buf);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub(crate) struct JsonFormat {
    name: Arc<str>,
    /// Put the key-values back in written order (off for the access log,
    /// whose fixed keys are listed pre-reversed).
    reorder: bool,
}

/// This thread's slog-json drains, one per logger name, and their line.
struct ThreadDrains {
    line: SharedLine,
    drains: Vec<(Arc<str>, slog_json::Json<SharedLine>)>,
    /// The logger's and the call site's key-values, captured to be put back
    /// in the order they were written.
    captured: Vec<(Key, Captured)>,
    text: String,
    /// Handed to slog-json in place of the logger's values, which travel in
    /// the reordered record instead.
    no_values: OwnedKVList,
}

impl Default for ThreadDrains {
    fn default() -> Self {
        ThreadDrains {
            line: SharedLine::default(),
            drains: Vec::new(),
            captured: Vec::new(),
            text: String::new(),
            no_values: OwnedKVList::from(o!()),
        }
    }
}

thread_local! {
    // One slog-json drain per logger name per thread: slog_json::Json keeps
    // its writer in a RefCell (not Sync), and a shared one behind a mutex
    // would serialize the formatting of every thread, not only the write.
    // Keyed by name, not by drain, so that loggers made on the fly do not
    // pile up.
    static DRAINS: RefCell<ThreadDrains> = RefCell::new(ThreadDrains::default());
}

fn build(name: &str, line: SharedLine) -> slog_json::Json<SharedLine> {
    let name = name.to_string();
    slog_json::Json::new(line)
        .set_newlines(true)
        .set_flush(false)
        // slog serializes an `o!` list last entry first: listed in reverse
        // so that lines read event, level, logger, pid, tid, timestamp as
        // structlog's event dict does.
        .add_key_value(o!(
            "timestamp" => PushFnValue(|_: &Record<'_>, s| s.emit(time::iso_utc(Now::get()).as_str())),
            "tid" => PushFnValue(|_: &Record<'_>, s| s.emit(sys::thread_ident())),
            "pid" => PushFnValue(|_: &Record<'_>, s| s.emit(sys::pid())),
            "logger" => name,
            "level" => PushFnValue(|r: &Record<'_>, s| s.emit(Level::from_slog(r.level()).as_str())),
            "event" => PushFnValue(|r: &Record<'_>, s| s.emit(r.msg())),
        ))
        .build()
}

impl JsonFormat {
    pub(crate) fn new(logger_name: &str, reorder: bool) -> JsonFormat {
        JsonFormat {
            name: logger_name.into(),
            reorder,
        }
    }

    pub(crate) fn log(
        &self,
        sink: &Arc<Sink>,
        holdable: bool,
        record: &Record<'_>,
        values: &OwnedKVList,
    ) {
        // A record logged while this thread renders one (a value that logs)
        // would find the thread's drains borrowed: drop it instead.
        let _ = DRAINS.try_with(|state| {
            let Ok(mut state) = state.try_borrow_mut() else {
                return;
            };
            let state = &mut *state;
            let i = match state.drains.iter().position(|(n, _)| *n == self.name) {
                Some(i) => i,
                None => {
                    let json = build(&self.name, state.line.clone());
                    state.drains.push((Arc::clone(&self.name), json));
                    state.drains.len() - 1
                }
            };
            state.line.0.borrow_mut().clear();
            let json = &state.drains[i].1;
            let ok = if self.reorder {
                log_in_written_order(
                    json,
                    record,
                    values,
                    &mut state.captured,
                    &mut state.text,
                    &state.no_values,
                )
            } else {
                json.log(record, values).is_ok()
            };
            let mut line = state.line.0.borrow_mut();
            if ok {
                sink.write(&line, holdable);
            }
            line.clear();
            if line.capacity() > 64 * 1024 {
                *line = Vec::new();
            }
        });
    }
}

/// slog hands out key-values last-written first (each `o!` list and a
/// record's list); slog-json writes them in that order. Capture them, then
/// hand slog-json a record whose key-values are in written order: the
/// logger's context (root first), then the call site's. A key written twice
/// keeps its first place and its last value, as in a Python dict.
fn log_in_written_order(
    json: &slog_json::Json<SharedLine>,
    record: &Record<'_>,
    values: &OwnedKVList,
    captured: &mut Vec<(Key, Captured)>,
    text: &mut String,
    no_values: &OwnedKVList,
) -> bool {
    captured.clear();
    text.clear();
    let mut capture = Capture { captured, text };
    let _ = values.serialize(record, &mut capture);
    capture.captured.reverse();
    let context = capture.captured.len();
    let _ = record.kv().serialize(record, &mut capture);
    capture.captured[context..].reverse();
    let ordered = Ordered {
        captured: capture.captured,
        text: capture.text,
    };
    let rs = RecordStatic {
        location: record.location(),
        tag: record.tag(),
        level: record.level(),
    };
    let reordered = Record::new(&rs, record.msg(), BorrowedKV(&ordered));
    let ok = json.log(&reordered, no_values).is_ok();
    // Serde values were boxed: do not keep them past the line.
    captured.clear();
    if text.capacity() > 64 * 1024 {
        *text = String::new();
    }
    ok
}

/// One key-value as slog emitted it, types kept.
enum Captured {
    U64(u64),
    I64(i64),
    U128(u128),
    I128(i128),
    F64(f64),
    Bool(bool),
    Char(char),
    /// A range of the capture's text.
    Str(usize, usize),
    None,
    Unit,
    Serde(Box<dyn SerdeValue + Send + 'static>),
}

struct Capture<'a> {
    captured: &'a mut Vec<(Key, Captured)>,
    text: &'a mut String,
}

impl Capture<'_> {
    fn push(&mut self, key: Key, v: Captured) -> slog::Result {
        self.captured.push((key, v));
        Ok(())
    }
}

macro_rules! capture_as {
    ($($f:ident: $t:ty => $v:ident as $to:ty),* $(,)?) => {
        $(fn $f(&mut self, key: Key, val: $t) -> slog::Result {
            self.push(key, Captured::$v(<$to>::from(val)))
        })*
    };
}

impl slog::Serializer for Capture<'_> {
    fn emit_arguments(&mut self, key: Key, val: &fmt::Arguments<'_>) -> slog::Result {
        let start = self.text.len();
        let _ = self.text.write_fmt(*val);
        let end = self.text.len();
        self.push(key, Captured::Str(start, end))
    }

    fn emit_str(&mut self, key: Key, val: &str) -> slog::Result {
        let start = self.text.len();
        self.text.push_str(val);
        let end = self.text.len();
        self.push(key, Captured::Str(start, end))
    }

    fn emit_none(&mut self, key: Key) -> slog::Result {
        self.push(key, Captured::None)
    }

    fn emit_unit(&mut self, key: Key) -> slog::Result {
        self.push(key, Captured::Unit)
    }

    fn emit_bool(&mut self, key: Key, val: bool) -> slog::Result {
        self.push(key, Captured::Bool(val))
    }

    fn emit_char(&mut self, key: Key, val: char) -> slog::Result {
        self.push(key, Captured::Char(val))
    }

    fn emit_usize(&mut self, key: Key, val: usize) -> slog::Result {
        self.push(key, Captured::U64(val as u64))
    }

    fn emit_isize(&mut self, key: Key, val: isize) -> slog::Result {
        self.push(key, Captured::I64(val as i64))
    }

    fn emit_serde(&mut self, key: Key, value: &dyn SerdeValue) -> slog::Result {
        self.push(key, Captured::Serde(value.to_sendable()))
    }

    capture_as!(
        emit_u8: u8 => U64 as u64, emit_u16: u16 => U64 as u64, emit_u32: u32 => U64 as u64,
        emit_u64: u64 => U64 as u64, emit_i8: i8 => I64 as i64, emit_i16: i16 => I64 as i64,
        emit_i32: i32 => I64 as i64, emit_i64: i64 => I64 as i64, emit_f32: f32 => F64 as f64,
        emit_f64: f64 => F64 as f64, emit_u128: u128 => U128 as u128, emit_i128: i128 => I128 as i128,
    );
}

/// `Key` is `&'static str` unless slog's `dynamic-keys` feature is on.
#[allow(clippy::useless_asref)]
fn key_str(key: &Key) -> &str {
    key.as_ref()
}

/// The captured key-values, emitted in written order.
struct Ordered<'a> {
    captured: &'a [(Key, Captured)],
    text: &'a str,
}

impl KV for Ordered<'_> {
    fn serialize(&self, _record: &Record<'_>, s: &mut dyn slog::Serializer) -> slog::Result {
        for (i, (key, _)) in self.captured.iter().enumerate() {
            // A key written twice keeps its first place and its last value,
            // as a Python dict update does.
            if self.captured[..i]
                .iter()
                .any(|(earlier, _)| key_str(earlier) == key_str(key))
            {
                continue;
            }
            let value = self.captured[i..]
                .iter()
                .rev()
                .find(|(later, _)| key_str(later) == key_str(key))
                .map_or(&self.captured[i].1, |(_, v)| v);
            let key = Key::clone(key);
            match value {
                Captured::U64(v) => s.emit_u64(key, *v)?,
                Captured::I64(v) => s.emit_i64(key, *v)?,
                Captured::U128(v) => s.emit_u128(key, *v)?,
                Captured::I128(v) => s.emit_i128(key, *v)?,
                Captured::F64(v) => s.emit_f64(key, *v)?,
                Captured::Bool(v) => s.emit_bool(key, *v)?,
                Captured::Char(v) => s.emit_char(key, *v)?,
                Captured::Str(a, b) => s.emit_str(key, &self.text[*a..*b])?,
                Captured::None => s.emit_none(key)?,
                Captured::Unit => s.emit_unit(key)?,
                Captured::Serde(v) => s.emit_serde(key, &**v)?,
            }
        }
        Ok(())
    }
}
