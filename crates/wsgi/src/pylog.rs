//! The app's Python logging through ferrocorn's error log: a handler on
//! the root logger hands each record to [`emit`], which logs it with a
//! logger named as the record's logger, its `extra` fields as keys and
//! its traceback as one `exception` field.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};

use pyo3::prelude::*;

use crate::LoadError;

/// How the app's Python logging reaches ferrocorn's error log (see
/// [`setup_logging`]).
#[derive(Clone)]
pub struct PythonLogging {
    /// The error log's logger named exactly as its argument (the record's
    /// logger name: `django.request`, `wsgi`, `stdout`).
    pub named: Arc<dyn Fn(&str) -> slog::Logger + Send + Sync>,
    /// The root logger's level, a Python level name (`DEBUG`, `INFO`,
    /// `WARNING`, `ERROR`, `CRITICAL`): ferrocorn's `loglevel`.
    pub level: String,
    /// gunicorn's `capture_output`: `sys.stdout` and `sys.stderr` (so
    /// `print()`) go to the error log, line by line.
    pub capture_output: bool,
}

impl fmt::Debug for PythonLogging {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PythonLogging")
            .field("level", &self.level)
            .field("capture_output", &self.capture_output)
            .finish_non_exhaustive()
    }
}

struct Installed {
    named: Arc<dyn Fn(&str) -> slog::Logger + Send + Sync>,
    loggers: Mutex<HashMap<String, slog::Logger>>,
}

/// Held only to clone or replace the `Arc` (never while writing a line),
/// so a fork cannot leave it held in the child but for that instant.
static INSTALLED: Mutex<Option<Arc<Installed>>> = Mutex::new(None);

/// Routes the app's Python logging to ferrocorn's error log: a handler on
/// the root logger (added once; its level set to `logging.level`),
/// `wsgi.errors`, and with `capture_output` `sys.stdout`/`sys.stderr`.
/// Call after [`initialize`](crate::initialize) and before the app is
/// imported; call again in a worker forked from a process that called it
/// (`--preload`), with the worker's own logs.
pub fn setup_logging(logging: PythonLogging) -> Result<(), LoadError> {
    *INSTALLED.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(Installed {
        named: logging.named,
        loggers: Mutex::new(HashMap::new()),
    }));
    crate::interp::keep_thread_state();
    Python::attach(|py| {
        let emit = emit_function(py).map_err(|e| crate::load_error(py, &e))?;
        crate::helper(py)
            .and_then(|h| {
                h.getattr("setup_logging")?.call1((
                    emit,
                    logging.level.as_str(),
                    logging.capture_output,
                ))
            })
            .map(drop)
            .map_err(|e| crate::load_error(py, &e))
    })
}

/// The Rust function the Python side calls for each record.
pub(crate) fn emit_function(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    Ok(pyo3::wrap_pyfunction!(emit, py)?.into_any())
}

/// A value of an `extra` field.
#[derive(FromPyObject)]
enum Value {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

/// Interned key names (slog's keys are `&'static str`): at most
/// [`MAX_KEYS`] distinct names are kept; the others go under `extra_*`.
static KEYS: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);
const MAX_KEYS: usize = 1024;

fn key(name: &str) -> &'static str {
    let mut keys = KEYS.lock().unwrap_or_else(|e| e.into_inner());
    let keys = keys.get_or_insert_with(HashSet::new);
    if let Some(k) = keys.get(name) {
        return k;
    }
    if keys.len() >= MAX_KEYS {
        return "extra_key";
    }
    let k: &'static str = Box::leak(name.to_owned().into_boxed_str());
    keys.insert(k);
    k
}

struct Fields<'a> {
    exception: Option<&'a str>,
    stack: Option<&'a str>,
    extra: &'a [(&'static str, Value)],
}

impl slog::KV for Fields<'_> {
    fn serialize(&self, _: &slog::Record<'_>, s: &mut dyn slog::Serializer) -> slog::Result {
        // slog serializes a record's list last entry first: backwards, so
        // the fields read in the order given.
        for (k, v) in self.extra.iter().rev() {
            match v {
                Value::Bool(b) => s.emit_bool(k, *b)?,
                Value::Int(i) => s.emit_i64(k, *i)?,
                Value::Float(f) => s.emit_f64(k, *f)?,
                Value::Str(t) => s.emit_str(k, t)?,
            }
        }
        if let Some(st) = self.stack {
            s.emit_str("stack", st)?;
        }
        if let Some(e) = self.exception {
            s.emit_str("exception", e)?;
        }
        Ok(())
    }
}

fn slog_level(levelno: i64) -> slog::Level {
    match levelno {
        n if n >= 50 => slog::Level::Critical,
        n if n >= 40 => slog::Level::Error,
        n if n >= 30 => slog::Level::Warning,
        n if n >= 20 => slog::Level::Info,
        _ => slog::Level::Debug,
    }
}

/// Logs one record: `levelno` (Python's), the logger's name, the message,
/// the formatted traceback and stack (if any), and `extra` fields.
#[pyfunction]
#[pyo3(signature = (levelno, name, message, exception=None, stack=None, extra=Vec::new()))]
fn emit(
    py: Python<'_>,
    levelno: i64,
    name: &str,
    message: &str,
    exception: Option<&str>,
    stack: Option<&str>,
    extra: Vec<(String, Value)>,
) {
    let extra: Vec<(&'static str, Value)> = extra.into_iter().map(|(k, v)| (key(&k), v)).collect();
    // Writing may block (a full pipe): not with the GIL.
    py.detach(|| {
        let installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(inst) = installed else {
            eprintln!("{name}: {message}");
            return;
        };
        let logger = {
            let mut loggers = inst.loggers.lock().unwrap_or_else(|e| e.into_inner());
            match loggers.get(name) {
                Some(l) => l.clone(),
                None => {
                    let l = (inst.named)(name);
                    if loggers.len() < MAX_KEYS {
                        loggers.insert(name.to_owned(), l.clone());
                    }
                    l
                }
            }
        };
        let fields = Fields {
            exception,
            stack,
            extra: &extra,
        };
        let level = slog_level(levelno);
        let args = format_args!("{}", message);
        static LOC: slog::RecordLocation = slog::RecordLocation {
            file: file!(),
            line: line!(),
            column: 0,
            function: "",
            module: module_path!(),
        };
        let rs = slog::RecordStatic {
            location: &LOC,
            level,
            tag: "",
        };
        logger.log(&slog::Record::new(&rs, &args, slog::BorrowedKV(&fields)));
    });
}
