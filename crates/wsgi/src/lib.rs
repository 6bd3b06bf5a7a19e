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
mod start;
mod stream;

use std::ffi::CString;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use ferrocorn_worker::{App, Body, Request, Response};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

pub use environ::{ForwardedAllow, default_secure_scheme_headers};
pub use interp::{InitError, PYTHON_VERSION, check_virtualenv, fork, initialize};

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
        base.set_item("wsgi.errors", py.import("sys")?.getattr("stderr")?)?;
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
            for (k, v) in &parts.vars {
                environ.set_item(k, latin1(py, v))?;
            }
            environ.set_item(
                "wsgi.url_scheme",
                if parts.https { "https" } else { "http" },
            )?;
            let input = Py::new(py, Input::new(body))?;
            environ.set_item("wsgi.input", &input)?;
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
        let (outcome, input) = Python::attach(|py| {
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
}

impl WsgiApp {
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
