//! JSON lines through slog-json, with structlog's keys in the seed's order:
//! `event`, `level`, `logger`, `pid`, `tid`, `timestamp`, then the logger's
//! and the call site's key-values with their types kept.

use std::cell::{Cell, RefCell};
use std::io;
use std::sync::{Mutex, PoisonError};

use slog::{Drain as _, OwnedKVList, PushFnValue, Record, o};

use crate::config::Level;
use crate::sink::Sink;
use crate::sys;
use crate::time::{self, Now};

thread_local! {
    // The line slog-json writes, per thread, so a failed record leaves nothing
    // behind for the next one.
    static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// slog-json writes into the calling thread's `LINE`.
struct ThreadLine;

impl io::Write for ThreadLine {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        LINE.with(|l| l.borrow_mut().extend_from_slice(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub(crate) struct JsonFormat {
    // slog_json::Json keeps its writer in a RefCell: the mutex makes it Sync.
    json: Mutex<slog_json::Json<ThreadLine>>,
}

impl JsonFormat {
    pub(crate) fn new(logger_name: &str) -> JsonFormat {
        let name = logger_name.to_string();
        let json = slog_json::Json::new(ThreadLine)
            .set_newlines(true)
            .set_flush(false)
            // slog serializes an `o!` list last entry first: listed in
            // reverse so that lines read event, level, logger, pid, tid,
            // timestamp as structlog's event dict does.
            .add_key_value(o!(
                "timestamp" => PushFnValue(|_: &Record<'_>, s| s.emit(time::iso_utc(Now::get()).as_str())),
                "tid" => PushFnValue(|_: &Record<'_>, s| s.emit(sys::thread_ident())),
                "pid" => PushFnValue(|_: &Record<'_>, s| s.emit(sys::pid())),
                "logger" => name,
                "level" => PushFnValue(|r: &Record<'_>, s| s.emit(Level::from_slog(r.level()).as_str())),
                "event" => PushFnValue(|r: &Record<'_>, s| s.emit(r.msg())),
            ))
            .build();
        JsonFormat {
            json: Mutex::new(json),
        }
    }

    pub(crate) fn log(&self, sink: &Sink, record: &Record<'_>, values: &OwnedKVList) {
        // A record logged while this thread renders one (a value that logs)
        // would wait for the mutex it holds: drop it instead.
        let Some(_busy) = Busy::enter() else { return };
        LINE.with(|l| l.borrow_mut().clear());
        let ok = {
            let json = self.json.lock().unwrap_or_else(PoisonError::into_inner);
            json.log(record, values).is_ok()
        };
        LINE.with(|l| {
            let mut l = l.borrow_mut();
            if ok {
                sink.write_line(&l);
            }
            l.clear();
            if l.capacity() > 64 * 1024 {
                *l = Vec::new();
            }
        });
    }
}

thread_local! {
    static BUSY: Cell<bool> = const { Cell::new(false) };
}

/// Marks this thread as rendering a JSON line until dropped (also on panic).
struct Busy;

impl Busy {
    fn enter() -> Option<Busy> {
        match BUSY.try_with(|b| b.replace(true)) {
            Ok(false) => Some(Busy),
            _ => None,
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let _ = BUSY.try_with(|b| b.set(false));
    }
}
