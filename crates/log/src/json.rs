//! JSON lines through slog-json, with structlog's keys in the seed's order:
//! `event`, `level`, `logger`, `pid`, `tid`, `timestamp`, then the logger's
//! and the call site's key-values with their types kept.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::sync::Arc;

use slog::{Drain as _, OwnedKVList, PushFnValue, Record, o};

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
}

/// This thread's slog-json drains, one per logger name, and their line.
#[derive(Default)]
struct ThreadDrains {
    line: SharedLine,
    drains: Vec<(Arc<str>, slog_json::Json<SharedLine>)>,
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
    pub(crate) fn new(logger_name: &str) -> JsonFormat {
        JsonFormat {
            name: logger_name.into(),
        }
    }

    pub(crate) fn log(&self, sink: &Sink, record: &Record<'_>, values: &OwnedKVList) {
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
            let ok = state.drains[i].1.log(record, values).is_ok();
            let mut line = state.line.0.borrow_mut();
            if ok {
                sink.write_line(&line);
            }
            line.clear();
            if line.capacity() > 64 * 1024 {
                *line = Vec::new();
            }
        });
    }
}
