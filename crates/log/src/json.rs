//! JSON lines through slog-json, with structlog's keys in the seed's order:
//! `event`, `level`, `logger`, `pid`, `tid`, `timestamp`, then the logger's
//! and the call site's key-values with their types kept.

use std::cell::{Cell, RefCell};
use std::io;
use std::sync::Arc;

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
    name: Arc<str>,
}

thread_local! {
    // One slog-json drain per logger name per thread: slog_json::Json keeps
    // its writer in a RefCell (not Sync), and a shared one behind a mutex
    // would serialize the formatting of every thread, not only the write.
    // Keyed by name, not by drain, so that loggers made on the fly do not
    // pile up.
    static DRAINS: RefCell<Vec<(Arc<str>, slog_json::Json<ThreadLine>)>> =
        const { RefCell::new(Vec::new()) };
}

fn build(name: &str) -> slog_json::Json<ThreadLine> {
    let name = name.to_string();
    slog_json::Json::new(ThreadLine)
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
    pub(crate) fn new(logger_name: &str) -> JsonFormat {
        JsonFormat {
            name: logger_name.into(),
        }
    }

    pub(crate) fn log(&self, sink: &Sink, record: &Record<'_>, values: &OwnedKVList) {
        // A record logged while this thread renders one (a value that logs)
        // would find the thread's drains borrowed: drop it instead.
        let Some(_busy) = Busy::enter() else { return };
        let ok = DRAINS.try_with(|drains| {
            let mut drains = drains.borrow_mut();
            let i = match drains.iter().position(|(n, _)| *n == self.name) {
                Some(i) => i,
                None => {
                    drains.push((Arc::clone(&self.name), build(&self.name)));
                    drains.len() - 1
                }
            };
            LINE.with(|l| l.borrow_mut().clear());
            drains[i].1.log(record, values).is_ok()
        });
        LINE.with(|l| {
            let mut l = l.borrow_mut();
            if ok == Ok(true) {
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
