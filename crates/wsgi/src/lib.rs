//! A Python WSGI application ([PEP 3333]) as a [`ferrocorn_worker::App`],
//! with CPython embedded through PyO3.
//!
//! # Overview
//!
//! - [`initialize`] starts the interpreter in this process (optionally in a
//!   virtualenv, as a `python` started from it would run: its
//!   site-packages, not the build interpreter's); [`check_virtualenv`]
//!   checks a virtualenv's Python version first.
//! - [`WsgiApp::load`] imports an app as gunicorn's `APP_MODULE` says
//!   (`module:callable`, `module:factory(args)`, `module` alone meaning
//!   `module:application`), after `--chdir` and `--pythonpath`
//!   ([`setup_paths`]); a [`LoadError`] carries the traceback.
//! - [`WsgiApp`] implements [`App`]: each request gets an environ built as
//!   gunicorn builds it, `wsgi.input` streamed from the connection (the GIL
//!   released while it waits), `start_response` with `exc_info` and
//!   `write()`, and its response iterable streamed chunk by chunk (a list or
//!   tuple gets a `Content-Length`), `close()` called exactly once. An
//!   exception before the first byte is a `500` and a traceback in the error
//!   log; after it, the connection is cut.
//! - [`fork`] wraps a `fork()` in CPython's fork protocol (for an app
//!   imported before the fork, gunicorn's `--preload`).
//!
//! Each pool thread keeps one Python thread state for its whole life, so
//! `threading.local` data survives from one request to the next.
//!
//! # The app's prometheus_client metrics
//!
//! [`setup_prometheus`] puts the app's prometheus_client in multiprocess
//! mode in ferrocorn's metrics directory before the app is imported. The
//! worker's own (Rust) writer already writes `{type}_{pid}.db` there, and
//! prometheus_client would name its files the same: two writers of one
//! file, each caching the `used` mark in memory, overwrite each other's
//! appends. Two designs avoid it:
//!
//! - **Route the app's values through the Rust writer** (a prometheus_client
//!   value class backed by it): one writer per file, lock-free updates. But
//!   prometheus_client's value protocol (`inc`/`set`/`get`, the reset after
//!   a fork, the file per gauge mode, the key it builds from the metric's
//!   name, labels and help) would be re-implemented against each
//!   prometheus_client version, and every update would cross from Python
//!   into Rust.
//! - **Distinct file identities** (chosen): prometheus_client's own
//!   `MultiProcessValue` with `process_identifier` returning `"{pid}.py"`,
//!   so its files are `counter_1234.py.db`, `gauge_liveall_1234.py.db`,
//!   ... Everything prometheus_client does stays its own (exemplars aside,
//!   the same code every gunicorn deployment runs), and the three parties
//!   understand the names: prometheus_client's `MultiProcessCollector`
//!   splits names at `_` and takes the id as the `pid` label (`1234.py`);
//!   ferrocorn's reader takes any id without `_`; and
//!   `ferrocorn_shm_metrics::mark_process_dead(pid)`, which the supervisor
//!   calls for each reaped worker, treats the ids `{pid}.{tag}` as the
//!   pid's own: `live*` and `all` gauges deleted, counters, histograms,
//!   summaries and `min`/`max`/`sum`/`mostrecent` gauges folded into the
//!   aggregates with the same crash-safe, lock-serialized fold as the
//!   worker's own files. The cost: a `1234.py` pid label on the app's
//!   `all`/`liveall` gauges, and prometheus_client's lock and `mmap`
//!   writes (as under gunicorn).
//!
//! With `--preload`, the app creates its metrics in the supervisor. There
//! the value class keeps values in memory and opens no file (the supervisor
//! never dies as a worker does, so its files would never be cleaned up, and
//! the workers close every file under the metrics directory they inherit);
//! each worker then makes every value a file-backed one, from zero, as
//! prometheus_client itself does after a fork.
//!
//! # The app's Python logging
//!
//! [`setup_logging`] adds a handler to the root logger (once) and sets the
//! root's level: each record is handed to Rust with its level, its
//! logger's name, the formatted message, the traceback formatted as
//! `traceback.format_exception` does (structlog's `format_exc_info`), the
//! `stack_info`, and the `extra` fields (the record's attributes that a
//! `LogRecord` does not have). Rust logs it, without the GIL, with a logger
//! of the error log named as the record's logger, so the renderer writes
//! the seed's keys (`event`, `level`, `logger`, `pid`, `tid` = the calling
//! thread's `pthread_self()`, which is Python's `threading.get_ident()`,
//! `timestamp`), then the fields. `wsgi.errors` and, with
//! `capture_output`, `sys.stdout`/`sys.stderr` are line streams (a partial
//! line per thread waits for its end or `flush()`) feeding the same path.
//!
//! # The GIL wait
//!
//! With [`WsgiConfig::gil_wait`] set, each request reads the clock before
//! it asks for the GIL and once it has it, and hands the difference to the
//! callback (ferrocorn observes `{prefix}_python_gil_wait_seconds`): it
//! separates "the app is slow" (long durations, short waits) from "the
//! worker has too many threads for one GIL" (long waits). The cost, two
//! `Instant::now()` (vDSO `clock_gettime`, no system call) and one
//! histogram observe (5.6 ns, see ferrocorn-shm-metrics), measured at
//! 47–68 ns per request for the two clock reads on a loaded 2-core build
//! machine, next to a request's tens of microseconds in Python.
//!
//! # Where a stuck worker was stuck
//!
//! Each thread running the app (the call, and each pull from its response
//! iterable) is recorded with its request's method and path.
//! [`dump_stacks_on_abort`] starts a thread that waits for SIGABRT, which
//! the supervisor sends at a WORKER TIMEOUT; it then takes the GIL on a
//! new thread and logs, for each thread in the app, one critical record:
//! `method`, `path`, `age` (seconds in the app), `thread` (its Python
//! ident) and `stack` (`traceback.format_stack` of its current frame), one
//! JSON line each in JSON mode. A thread blocked in `time.sleep` or a
//! socket read has released the GIL and a pure-Python loop gives it up at
//! the next switch interval; a thread holding it inside C code never does,
//! so after [`STACK_WAIT`] the records say the stacks could not be taken.
//! Then the worker dies of SIGABRT, within the supervisor's 1 s grace
//! before its SIGKILL.
//!
//! [PEP 3333]: https://peps.python.org/pep-3333/
//!
//! # Example
//!
//! Serve a WSGI app defined inline with a [`Worker`](ferrocorn_worker::Worker),
//! answer one request, stop.
//!
//! ```
//! use std::io::{Read, Write};
//! use std::sync::Arc;
//! use ferrocorn_worker::{Listener, Worker, WorkerConfig};
//! use ferrocorn_wsgi::{WsgiApp, WsgiConfig};
//!
//! ferrocorn_wsgi::initialize(None).unwrap();
//! let app = WsgiApp::from_source(
//!     "def application(environ, start_response):\n\
//!     \x20   start_response('200 OK', [('Content-Type', 'text/plain')])\n\
//!     \x20   return [b'Hello from ', environ['PATH_INFO'].encode('latin-1')]\n",
//!     "application",
//!     WsgiConfig::default(),
//! )
//! .unwrap();
//!
//! let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
//! let addr = listener.local_addr().unwrap();
//! let worker = Worker::new(WorkerConfig::default(), vec![Listener::Tcp(listener)], Arc::new(app)).unwrap();
//! let stop = worker.shutdown_handle();
//! let thread = std::thread::spawn(move || worker.run());
//!
//! let mut conn = std::net::TcpStream::connect(addr).unwrap();
//! conn.write_all(b"GET /wsgi HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
//! let mut answer = String::new();
//! conn.read_to_string(&mut answer).unwrap();
//! assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"));
//! assert!(answer.contains("Content-Length: 16\r\n"));
//! assert!(answer.ends_with("\r\n\r\nHello from /wsgi"));
//!
//! stop.graceful();
//! thread.join().unwrap().unwrap();
//! ```
#![deny(missing_docs)]

mod environ;
mod input;
mod interp;
mod pylog;
mod start;
mod stream;
mod stuck;

use std::ffi::CString;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use ferrocorn_worker::{App, Body, Request, Response};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyIterator, PyList, PyString, PyTuple, PyType};

pub use environ::{ForwardedAllow, default_secure_scheme_headers};
pub use interp::{InitError, PYTHON_VERSION, check_virtualenv, fork, initialize};
pub use pylog::{PythonLogging, setup_logging};
pub use stuck::{STACK_WAIT, dump_stacks_on_abort};

use crate::input::Input;
use crate::start::{ResponseState, StartResponse, lock};
use crate::stream::{PyStream, Source, close_iterable, item_bytes};

/// The value of `SERVER_SOFTWARE`.
pub const SERVER_SOFTWARE: &str = concat!("ferrocorn/", env!("CARGO_PKG_VERSION"));

/// The settings of a [`WsgiApp`] (gunicorn's names).
#[derive(Clone, Debug)]
pub struct WsgiConfig {
    /// `wsgi.multithread` (the worker runs more than one thread).
    pub multithread: bool,
    /// `wsgi.multiprocess` (more than one worker process).
    pub multiprocess: bool,
    /// `SCRIPT_NAME` (gunicorn takes it from the `SCRIPT_NAME` environment
    /// variable); stripped from the front of `PATH_INFO`.
    pub script_name: String,
    /// Peers whose `secure_scheme_headers` are believed.
    pub forwarded_allow_ips: ForwardedAllow,
    /// Header and value pairs that mean https from a trusted peer.
    pub secure_scheme_headers: Vec<(String, String)>,
    /// The error log (tracebacks, dropped headers at debug level).
    pub logger: slog::Logger,
    /// Called with how long a pool thread waited for the GIL before it
    /// called the app, once per request (`{prefix}_python_gil_wait_seconds`).
    pub gil_wait: Option<GilWait>,
}

/// A callback given each request's wait for the GIL.
#[derive(Clone)]
pub struct GilWait(pub Arc<dyn Fn(std::time::Duration) + Send + Sync>);

impl fmt::Debug for GilWait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GilWait")
    }
}

impl Default for WsgiConfig {
    fn default() -> Self {
        WsgiConfig {
            multithread: false,
            multiprocess: false,
            script_name: std::env::var("SCRIPT_NAME").unwrap_or_default(),
            forwarded_allow_ips: ForwardedAllow::default(),
            secure_scheme_headers: default_secure_scheme_headers(),
            logger: slog::Logger::root(slog::Discard, slog::o!()),
            gil_wait: None,
        }
    }
}

/// An app that cannot be loaded: gunicorn's message, or the Python
/// traceback of the import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError(pub String);

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LoadError {}

const HELPER_SOURCE: &str = include_str!("helper.py");

static HELPER: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

fn helper(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    HELPER
        .get_or_try_init(py, || {
            let code = CString::new(HELPER_SOURCE).expect("no NUL in helper.py");
            PyModule::from_code(py, &code, c"ferrocorn_wsgi/helper.py", c"_ferrocorn_wsgi")
                .map(Bound::unbind)
        })
        .map(|m| m.bind(py))
}

static IN_MEMORY_ITERS: PyOnceLock<[Py<PyType>; 2]> = PyOnceLock::new();

/// `iter` is a list's or a tuple's iterator: its items exist already.
fn in_memory_iter(py: Python<'_>, iter: &Bound<'_, PyIterator>) -> bool {
    let types = IN_MEMORY_ITERS.get_or_try_init(py, || -> PyResult<[Py<PyType>; 2]> {
        Ok([
            PyList::empty(py).try_iter()?.get_type().unbind(),
            PyTuple::empty(py).try_iter()?.get_type().unbind(),
        ])
    });
    let t = iter.get_type();
    types.is_ok_and(|ts| ts.iter().any(|x| t.is(x.bind(py))))
}

static KNOWN_KEYS: PyOnceLock<Vec<Py<PyString>>> = PyOnceLock::new();

/// [`environ::KNOWN_KEYS`] as interned Python strings, made once: a new
/// string per key per request was an allocation and a hash each.
fn known_keys(py: Python<'_>) -> &[Py<PyString>] {
    KNOWN_KEYS.get_or_init(py, || {
        environ::KNOWN_KEYS
            .iter()
            .map(|k| PyString::intern(py, k).unbind())
            .collect()
    })
}

/// The traceback of an exception as the `traceback` module prints it.
fn format_exception(py: Python<'_>, e: &PyErr) -> String {
    helper(py)
        .and_then(|h| {
            h.getattr("format_exception")?
                .call1((e.value(py), e.traceback(py)))
        })
        .and_then(|s| s.extract::<String>())
        .unwrap_or_else(|_| e.to_string())
}

fn load_error(py: Python<'_>, e: &PyErr) -> LoadError {
    let is_spec_error = helper(py)
        .and_then(|h| h.getattr("AppLoadError"))
        .is_ok_and(|cls| e.value(py).is_instance(&cls).unwrap_or(false));
    if is_spec_error {
        LoadError(e.value(py).to_string())
    } else {
        LoadError(format_exception(py, e))
    }
}

/// gunicorn's `--chdir` and `--pythonpath`: change directory, put it first
/// on `sys.path`, then put each `pythonpath` entry (made absolute) before
/// it. Call after [`initialize`] and before [`WsgiApp::load`].
pub fn setup_paths(
    chdir: Option<&std::path::Path>,
    pythonpath: &[PathBuf],
) -> Result<(), LoadError> {
    Python::attach(|py| {
        let chdir = chdir.map(|p| p.to_string_lossy().into_owned());
        let paths: Vec<String> = pythonpath
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        helper(py)
            .and_then(|h| h.getattr("setup_paths")?.call1((chdir, paths)))
            .map(drop)
            .map_err(|e| load_error(py, &e))
    })
}

/// Puts the app's prometheus_client (if installed) in multiprocess mode in
/// ferrocorn's metrics directory `dir`, with its files named
/// `{type}_{pid}.py.db` (see [the crate docs](crate#the-apps-prometheus_client-metrics)).
/// Call after [`initialize`] and before the app is imported: in a worker
/// with `before_fork` false (it also turns the values of an app imported
/// before the fork into file-backed ones), or in the supervisor before a
/// `--preload` import with `before_fork` true (values stay in memory
/// there; `dir` may be `None` when the directory is made later).
/// Returns whether prometheus_client is installed.
pub fn setup_prometheus(
    dir: Option<&std::path::Path>,
    before_fork: bool,
) -> Result<bool, LoadError> {
    interp::keep_thread_state();
    Python::attach(|py| {
        let dir = dir.map(|d| d.to_string_lossy().into_owned());
        helper(py)
            .and_then(|h| h.getattr("setup_prometheus")?.call1((dir, before_fork)))
            .and_then(|r| r.extract::<bool>())
            .map_err(|e| load_error(py, &e))
    })
}

/// Runs the `atexit` functions of the app (gunicorn's workers end with
/// `sys.exit`, so they run there); call when the worker is done serving.
pub fn run_atexit() {
    // SAFETY: Py_IsInitialized may be called at any time.
    if unsafe { pyo3::ffi::Py_IsInitialized() } == 0 {
        return;
    }
    interp::keep_thread_state();
    Python::attach(|py| {
        let _ = py
            .import("atexit")
            .and_then(|m| m.getattr("_run_exitfuncs")?.call0());
    });
}

/// A WSGI callable served as an [`App`].
pub struct WsgiApp {
    app: Py<PyAny>,
    /// The environ's constant part, copied for each request.
    base: Py<PyDict>,
    file_wrapper: Py<PyAny>,
    config: WsgiConfig,
}

impl fmt::Debug for WsgiApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsgiApp")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl WsgiApp {
    /// Imports the app named by `spec` (gunicorn's `APP_MODULE`):
    /// `module:name`, `module:factory(literal args)`, or `module` for
    /// `module:application`. The interpreter must be running ([`initialize`]).
    pub fn load(spec: &str, config: WsgiConfig) -> Result<WsgiApp, LoadError> {
        interp::keep_thread_state();
        Python::attach(|py| {
            let app = helper(py)
                .and_then(|h| h.getattr("load")?.call1((spec,)))
                .map_err(|e| load_error(py, &e))?;
            WsgiApp::new(py, app.unbind(), config).map_err(|e| load_error(py, &e))
        })
    }

    /// The callable `name` defined by Python source code (for tests and
    /// examples). The interpreter must be running ([`initialize`]).
    pub fn from_source(source: &str, name: &str, config: WsgiConfig) -> Result<WsgiApp, LoadError> {
        interp::keep_thread_state();
        Python::attach(|py| {
            let load = || -> PyResult<WsgiApp> {
                let code = CString::new(source)
                    .map_err(|_| pyo3::exceptions::PyValueError::new_err("NUL in source"))?;
                let module = PyModule::from_code(py, &code, c"<wsgi app>", c"__wsgi_app__")?;
                let app = module.getattr(name)?;
                WsgiApp::new(py, app.unbind(), config)
            };
            load().map_err(|e| load_error(py, &e))
        })
    }

    fn new(py: Python<'_>, app: Py<PyAny>, config: WsgiConfig) -> PyResult<WsgiApp> {
        let helper = helper(py)?;
        let file_wrapper = helper.getattr("FileWrapper")?.unbind();
        let base = PyDict::new(py);
        base.set_item("wsgi.version", (1, 0))?;
        base.set_item("wsgi.multithread", config.multithread)?;
        base.set_item("wsgi.multiprocess", config.multiprocess)?;
        base.set_item("wsgi.run_once", false)?;
        base.set_item("wsgi.input_terminated", true)?;
        base.set_item("wsgi.file_wrapper", &file_wrapper)?;
        base.set_item("wsgi.errors", helper.getattr("WSGI_ERRORS")?)?;
        base.set_item("SERVER_SOFTWARE", SERVER_SOFTWARE)?;
        Ok(WsgiApp {
            app,
            base: base.unbind(),
            file_wrapper,
            config,
        })
    }

    /// The settings.
    pub fn config(&self) -> &WsgiConfig {
        &self.config
    }
}

/// A latin-1 native string (PEP 3333) from bytes.
fn latin1<'py>(py: Python<'py>, b: &[u8]) -> Bound<'py, PyString> {
    if b.is_ascii() {
        // Fast path: ASCII is valid UTF-8 and the same in latin-1.
        PyString::new(py, std::str::from_utf8(b).unwrap_or_default())
    } else {
        let s: String = b.iter().map(|&c| c as char).collect();
        PyString::new(py, &s)
    }
}

fn error_500() -> Response {
    Response::text(500, "Internal Server Error\n").header("Connection", "close")
}

/// What the app's call produced, before the worker sees it.
enum Outcome {
    Done(Response),
    Failed(String),
}

impl WsgiApp {
    fn log_failure(&self, what: &str, trace: &str) {
        slog::error!(
            self.config.logger,
            "Error handling request {}\n{}",
            what,
            trace
        );
    }

    fn respond(
        &self,
        py: Python<'_>,
        parts: &environ::Parts,
        body: Body,
        what: &str,
    ) -> (Outcome, Option<Py<Input>>) {
        for name in &parts.dropped {
            slog::debug!(self.config.logger, "dropped header {:?} (a name with '_')", name; "request" => what);
        }
        let result = (|| -> PyResult<(Outcome, Py<Input>)> {
            let environ = self.base.bind(py).copy()?;
            let known = known_keys(py);
            for (k, v) in &parts.vars {
                match k {
                    environ::Key::Known(i) => {
                        environ.set_item(known[*i].bind(py), latin1(py, v))?
                    }
                    environ::Key::Other(k) => environ.set_item(k, latin1(py, v))?,
                }
            }
            environ.set_item(
                pyo3::intern!(py, "wsgi.url_scheme"),
                if parts.https {
                    pyo3::intern!(py, "https")
                } else {
                    pyo3::intern!(py, "http")
                },
            )?;
            let input = Py::new(py, Input::new(body))?;
            environ.set_item(pyo3::intern!(py, "wsgi.input"), &input)?;
            let state = Arc::new(Mutex::new(ResponseState::default()));
            let start = Py::new(
                py,
                StartResponse {
                    state: state.clone(),
                },
            )?;
            let outcome = match self.app.bind(py).call1((environ, start)) {
                Ok(iterable) => self.build(py, iterable, &state, what),
                Err(e) => Outcome::Failed(format_exception(py, &e)),
            };
            Ok((outcome, input))
        })();
        match result {
            Ok((o, input)) => (o, Some(input)),
            Err(e) => (Outcome::Failed(format_exception(py, &e)), None),
        }
    }

    /// Turns the app's iterable into a response: the head is decided once
    /// the first non-empty item exists (or the iterable ended).
    fn build(
        &self,
        py: Python<'_>,
        iterable: Bound<'_, PyAny>,
        state: &start::Shared,
        what: &str,
    ) -> Outcome {
        let log = &self.config.logger;
        let fail = |e: &PyErr, iterable: &Bound<'_, PyAny>| {
            let trace = format_exception(py, e);
            close_iterable(py, iterable, log);
            Outcome::Failed(trace)
        };
        // A list or tuple: all of it now, with a Content-Length.
        if iterable.is_exact_instance_of::<PyList>() || iterable.is_exact_instance_of::<PyTuple>() {
            let mut data = std::mem::take(&mut lock(state).pending).concat();
            for item in match iterable.try_iter() {
                Ok(i) => i,
                Err(e) => return fail(&e, &iterable),
            } {
                match item.and_then(|i| item_bytes(&i)) {
                    Ok(b) => data.extend_from_slice(&b),
                    Err(e) => return fail(&e, &iterable),
                }
            }
            data.extend(std::mem::take(&mut lock(state).pending).concat());
            return match self.head(state, what) {
                Ok(resp) => Outcome::Done(resp.body(data)),
                Err(m) => Outcome::Failed(m),
            };
        }
        // wsgi.file_wrapper on a regular file: read by Rust without the GIL.
        if iterable
            .is_instance(self.file_wrapper.bind(py))
            .unwrap_or(false)
            && let Some(source) = file_source(&iterable)
        {
            let resp = match self.head(state, what) {
                Ok(r) => r,
                Err(m) => {
                    close_iterable(py, &iterable, log);
                    return Outcome::Failed(m);
                }
            };
            let Source::File { remaining, .. } = &source else {
                unreachable!("file_source returns a file")
            };
            let has_length = lock(state)
                .headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("content-length"));
            let resp = if has_length {
                resp
            } else {
                resp.header("Content-Length", remaining.to_string())
            };
            let first = std::mem::take(&mut lock(state).pending).concat();
            let stream = PyStream {
                first: (!first.is_empty()).then_some(first),
                source,
                iterable: Some(iterable.unbind()),
                state: state.clone(),
                log: log.clone(),
                what: what.to_owned(),
            };
            return Outcome::Done(resp.stream(Box::new(stream)));
        }
        // Any other iterable: pull up to the first non-empty item.
        let mut iter = match iterable.try_iter() {
            Ok(i) => i,
            Err(e) => return fail(&e, &iterable),
        };
        let mut first = std::mem::take(&mut lock(state).pending).concat();
        let mut ended = false;
        while first.is_empty() {
            match iter.next() {
                None => {
                    ended = true;
                    break;
                }
                Some(Ok(item)) => match item_bytes(&item) {
                    Ok(b) => first = b,
                    Err(e) => return fail(&e, &iterable),
                },
                Some(Err(e)) => return fail(&e, &iterable),
            }
            first.extend(std::mem::take(&mut lock(state).pending).concat());
        }
        // An iterator over a list or tuple (Django's HttpResponse iterates
        // its list of content pieces) is all in memory: the rest is taken
        // now, and the response goes to the loop whole, with a
        // Content-Length when the app set none, in one hand-off instead of
        // a head and then a pull of its pieces from the pool.
        if !ended && in_memory_iter(py, &iter) {
            for item in iter.by_ref() {
                match item.and_then(|i| item_bytes(&i)) {
                    Ok(b) => first.extend_from_slice(&b),
                    Err(e) => return fail(&e, &iterable),
                }
            }
            ended = true;
        }
        let resp = match self.head(state, what) {
            Ok(r) => r,
            Err(m) => {
                close_iterable(py, &iterable, log);
                return Outcome::Failed(m);
            }
        };
        if ended {
            close_iterable(py, &iterable, log);
            return Outcome::Done(resp.body(first));
        }
        let stream = PyStream {
            first: Some(first),
            source: Source::Iter(iter.unbind()),
            iterable: Some(iterable.unbind()),
            state: state.clone(),
            log: log.clone(),
            what: what.to_owned(),
        };
        Outcome::Done(resp.stream(Box::new(stream)))
    }

    /// The response head from `start_response`; marks it sent.
    fn head(&self, state: &start::Shared, what: &str) -> Result<Response, String> {
        let mut st = lock(state);
        let Some((code, reason)) = st.status.clone() else {
            return Err(format!(
                "the app for {what} returned without calling start_response"
            ));
        };
        st.sent = true;
        let mut resp = Response::new(code).reason_phrase(&reason);
        for (name, value) in &st.headers {
            resp = resp.header(name, value);
        }
        if st.close {
            resp = resp.header("Connection", "close");
        }
        Ok(resp)
    }
}

/// A `FileWrapper` whose file is a regular file with a descriptor: read it
/// from its current offset to its end.
fn file_source(wrapper: &Bound<'_, PyAny>) -> Option<Source> {
    use std::os::fd::BorrowedFd;
    let filelike = wrapper.getattr("filelike").ok()?;
    let block: usize = wrapper.getattr("blksize").ok()?.extract().ok()?;
    let fd: i32 = filelike.call_method0("fileno").ok()?.extract().ok()?;
    // Python's buffered file may hold read-ahead: the position it reports.
    let offset: u64 = filelike.call_method0("tell").ok()?.extract().ok()?;
    if fd < 0 {
        return None;
    }
    // SAFETY: the descriptor belongs to the open Python file object, alive
    // for this call; it is only borrowed to duplicate it.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let owned = borrowed.try_clone_to_owned().ok()?;
    let file = std::fs::File::from(owned);
    let meta = file.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    let remaining = meta.len().saturating_sub(offset);
    Some(Source::File {
        fd: file.into(),
        offset,
        remaining,
        block: block.clamp(8192, 1 << 20),
    })
}

impl App for WsgiApp {
    fn call(&self, req: &mut Request<'_>) -> Response {
        interp::keep_thread_state();
        stream::mark_app_thread();
        let what = format!("{} {}", req.method(), req.target());
        let parts = match environ::parts(
            req,
            &self.config.script_name,
            &self.config.forwarded_allow_ips,
            &self.config.secure_scheme_headers,
        ) {
            Ok(p) => p,
            Err(r) => {
                slog::debug!(self.config.logger, "refused {}: {}", what, r.why);
                return Response::text(r.status, &format!("{}\n", r.why));
            }
        };
        let body = std::mem::replace(req.body(), Body::empty());
        let _running = stuck::InRequest::enter(req.method(), req.path());
        // Two clock reads: the GIL wait (see the crate docs for the cost).
        let asked = self
            .config
            .gil_wait
            .as_ref()
            .map(|_| std::time::Instant::now());
        let (outcome, input) = Python::attach(|py| {
            if let (Some(asked), Some(GilWait(f))) = (asked, &self.config.gil_wait) {
                f(asked.elapsed());
            }
            let (outcome, input) = self.respond(py, &parts, body, &what);
            // The body goes back to the worker (it knows whether it was read
            // to its end); later reads of wsgi.input raise OSError.
            let body = input.and_then(|i| i.bind(py).try_borrow_mut().ok()?.body.take());
            (outcome, body)
        });
        if let Some(b) = input {
            *req.body() = b;
        }
        match outcome {
            Outcome::Done(resp) => resp,
            Outcome::Failed(trace) => {
                self.log_failure(&what, &trace);
                error_500()
            }
        }
    }

    /// A Python call holds the GIL: more threads than the one keeping up
    /// with the queue only take turns holding it.
    fn serial(&self) -> bool {
        true
    }
}

impl WsgiApp {
    /// The same app reporting each request's GIL wait to `gil_wait`.
    pub fn with_gil_wait(mut self, gil_wait: Option<GilWait>) -> WsgiApp {
        self.config.gil_wait = gil_wait;
        self
    }

    /// The same app logging to `logger` (a worker's own error log for an
    /// app imported before the fork).
    pub fn with_logger(&self, logger: slog::Logger) -> WsgiApp {
        interp::keep_thread_state();
        Python::attach(|py| WsgiApp {
            app: self.app.clone_ref(py),
            base: self.base.clone_ref(py),
            file_wrapper: self.file_wrapper.clone_ref(py),
            config: WsgiConfig {
                logger,
                ..self.config.clone()
            },
        })
    }
}
