//! A streamed response body: the app's iterable, pulled one item at a time
//! on a pool thread, and its `close()` called exactly once.

use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Mutex, OnceLock};

use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyIterator};

use crate::start::{Shared, lock};

thread_local! {
    /// This thread runs the app (a pool thread): it may take the GIL to
    /// close an iterable. Other threads (the worker's event loop) must not
    /// wait for the GIL.
    static APP_THREAD: Cell<bool> = const { Cell::new(false) };
}

pub(crate) fn mark_app_thread() {
    APP_THREAD.with(|t| t.set(true));
}

/// Calls `close()` of `iterable` if it has one, logging an exception.
pub(crate) fn close_iterable(py: Python<'_>, iterable: &Bound<'_, PyAny>, log: &slog::Logger) {
    match iterable.getattr_opt("close") {
        Ok(Some(close)) => {
            if let Err(e) = close.call0() {
                slog::error!(
                    log,
                    "Error closing the response iterable\n{}",
                    crate::format_exception(py, &e)
                );
            }
        }
        Ok(None) => {}
        Err(e) => slog::error!(
            log,
            "Error closing the response iterable\n{}",
            crate::format_exception(py, &e)
        ),
    }
}

/// A thread that closes iterables dropped outside the app's threads (the
/// worker's loop drops a stream when its client goes away).
fn closer(log: &slog::Logger) -> Option<Sender<Py<PyAny>>> {
    static CLOSER: OnceLock<Mutex<Option<Sender<Py<PyAny>>>>> = OnceLock::new();
    let cell = CLOSER.get_or_init(|| {
        let (tx, rx) = channel::<Py<PyAny>>();
        let log = log.clone();
        let spawned = std::thread::Builder::new()
            .name("wsgi-close".into())
            .spawn(move || {
                crate::interp::keep_thread_state();
                for obj in rx {
                    Python::attach(|py| close_iterable(py, obj.bind(py), &log));
                }
            });
        Mutex::new(spawned.ok().map(|_| tx))
    });
    cell.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Where the items come from.
pub(crate) enum Source {
    /// A Python iterator over the iterable.
    Iter(Py<PyIterator>),
    /// A `wsgi.file_wrapper` on a regular file: read from the descriptor
    /// (a duplicate), with `pread` from `offset`, without the GIL.
    File {
        fd: OwnedFd,
        offset: u64,
        remaining: u64,
        block: usize,
    },
}

/// The response body handed to the worker.
pub(crate) struct PyStream {
    pub(crate) first: Option<Vec<u8>>,
    pub(crate) source: Source,
    /// The iterable whose `close()` is owed (`None` once called).
    pub(crate) iterable: Option<Py<PyAny>>,
    pub(crate) state: Shared,
    pub(crate) log: slog::Logger,
    /// For error lines: "<METHOD> <target>".
    pub(crate) what: String,
}

pub(crate) fn item_bytes(item: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(b) = item.cast::<PyBytes>() {
        Ok(b.as_bytes().to_vec())
    } else if let Ok(b) = item.cast::<PyByteArray>() {
        Ok(b.to_vec())
    } else {
        Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "response items must be bytes, not {}",
            item.get_type().name()?
        )))
    }
}

impl PyStream {
    fn close(&mut self) {
        let Some(iterable) = self.iterable.take() else {
            return;
        };
        if APP_THREAD.with(|t| t.get()) {
            Python::attach(|py| close_iterable(py, iterable.bind(py), &self.log));
        } else if let Some(tx) = closer(&self.log)
            && let Err(e) = tx.send(iterable)
        {
            // No closer thread: drop the reference without closing.
            drop(e);
            slog::error!(
                self.log,
                "cannot close the response iterable of {}",
                self.what
            );
        }
    }
}

fn next_python(
    iter: &Py<PyIterator>,
    state: &Shared,
    log: &slog::Logger,
    what: &str,
) -> Option<io::Result<Vec<u8>>> {
    // The app's generator runs: a stuck one shows at a worker timeout.
    let (method, target) = what.split_once(' ').unwrap_or(("", what));
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let _running = crate::stuck::InRequest::enter(method, path);
    Python::attach(|py| {
        let mut it = iter.bind(py).clone();
        loop {
            let pending = std::mem::take(&mut lock(state).pending);
            if !pending.is_empty() {
                return Some(Ok(pending.concat()));
            }
            let failed = |e: &PyErr| {
                slog::error!(
                    log,
                    "Error handling request {}\n{}",
                    what,
                    crate::format_exception(py, e)
                );
                io::Error::other("the WSGI app raised an exception while streaming its response")
            };
            match it.next() {
                None => {
                    // write() during the last item.
                    let pending = std::mem::take(&mut lock(state).pending);
                    return (!pending.is_empty()).then(|| Ok(pending.concat()));
                }
                Some(Ok(item)) => match item_bytes(&item) {
                    Ok(b) if b.is_empty() => continue,
                    Ok(b) => return Some(Ok(b)),
                    Err(e) => return Some(Err(failed(&e))),
                },
                Some(Err(e)) => return Some(Err(failed(&e))),
            }
        }
    })
}

#[cfg(target_os = "linux")]
fn pread(fd: &OwnedFd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    loop {
        // SAFETY: buf is a valid writable slice of buf.len() bytes and fd an
        // open descriptor owned by the stream.
        let n = unsafe {
            libc::pread(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                offset as libc::off_t,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn pread(fd: &OwnedFd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::from(fd.try_clone()?);
    file.read_at(buf, offset)
}

impl Iterator for PyStream {
    type Item = io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(first) = self.first.take() {
            return Some(Ok(first));
        }
        // A pool thread (the worker pulls streams there), maybe not the one
        // that called the app.
        crate::interp::keep_thread_state();
        mark_app_thread();
        let item = match &mut self.source {
            Source::Iter(iter) => next_python(iter, &self.state, &self.log, &self.what),
            Source::File {
                fd,
                offset,
                remaining,
                block,
            } => {
                if *remaining == 0 {
                    None
                } else {
                    let mut buf = vec![0; (*block as u64).min(*remaining) as usize];
                    match pread(fd, &mut buf, *offset) {
                        Ok(0) => None,
                        Ok(n) => {
                            buf.truncate(n);
                            *offset += n as u64;
                            *remaining -= n as u64;
                            Some(Ok(buf))
                        }
                        Err(e) => Some(Err(e)),
                    }
                }
            }
        };
        if !matches!(item, Some(Ok(_))) {
            self.close();
        }
        item
    }
}

impl Drop for PyStream {
    fn drop(&mut self) {
        self.close();
    }
}
