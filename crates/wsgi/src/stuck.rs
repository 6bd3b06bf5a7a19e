//! Where a stuck worker was stuck: the requests each pool thread is
//! running, and at the supervisor's SIGABRT (its WORKER TIMEOUT) the Python
//! stack of each of those threads in the error log before the worker dies.
//!
//! A thread of its own waits for SIGABRT (through signal-hook: the handler
//! only writes to a pipe). It then asks another new thread to take the GIL
//! and format the stacks (`sys._current_frames()`), and waits for that at
//! most [`STACK_WAIT`]: a thread blocked in `time.sleep` or a socket read
//! has released the GIL, and a pure-Python loop hands it over at the next
//! switch interval (5 ms), but a thread holding it inside C code never
//! does; then the log says the stacks could not be taken. Either way the
//! worker then dies of SIGABRT, well within the supervisor's grace before
//! its SIGKILL.

use std::collections::HashMap;
use std::io;
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pyo3::prelude::*;

/// How long the stacks may take (the supervisor kills 1 s after SIGABRT).
pub const STACK_WAIT: Duration = Duration::from_millis(500);

struct Running {
    method: String,
    path: String,
    since: Instant,
}

/// The requests running now, by the thread's ident (`pthread_self()`,
/// Python's `threading.get_ident()`).
static RUNNING: Mutex<Option<HashMap<u64, Running>>> = Mutex::new(None);

fn running() -> std::sync::MutexGuard<'static, Option<HashMap<u64, Running>>> {
    RUNNING.lock().unwrap_or_else(|e| e.into_inner())
}

fn thread_ident() -> u64 {
    // SAFETY: pthread_self has no preconditions.
    unsafe { libc::pthread_self() as u64 }
}

/// While alive, the calling thread is running the request `method path`.
pub(crate) struct InRequest(u64);

impl InRequest {
    pub(crate) fn enter(method: &str, path: &str) -> InRequest {
        let tid = thread_ident();
        running().get_or_insert_with(HashMap::new).insert(
            tid,
            Running {
                method: method.to_owned(),
                path: path.to_owned(),
                since: Instant::now(),
            },
        );
        InRequest(tid)
    }
}

impl Drop for InRequest {
    fn drop(&mut self) {
        if let Some(m) = running().as_mut() {
            m.remove(&self.0);
        }
    }
}

/// Starts the thread that, at SIGABRT, writes the Python stack of every
/// thread running a request to `logger` (one record per thread, at
/// critical level: `method`, `path`, `age` in seconds, `thread` (the
/// Python thread's ident) and `stack`), then lets SIGABRT kill the process.
/// Call once in a worker process, after the fork.
pub fn dump_stacks_on_abort(logger: slog::Logger) -> io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([libc::SIGABRT])?;
    std::thread::Builder::new()
        .name("ferrocorn-abort".into())
        .spawn(move || {
            if signals.forever().next().is_some() {
                report(&logger, STACK_WAIT);
                // Die of SIGABRT, as without the handler.
                let _ = signal_hook::low_level::emulate_default_handler(libc::SIGABRT);
                std::process::abort();
            }
        })?;
    Ok(())
}

/// Logs the stacks of the threads running requests (waiting at most
/// `wait` for the GIL).
pub(crate) fn report(logger: &slog::Logger, wait: Duration) {
    let now = Instant::now();
    let mut threads: Vec<(u64, String, String, f64)> = running()
        .as_ref()
        .map(|m| {
            m.iter()
                .map(|(&t, r)| {
                    let age = now.duration_since(r.since).as_secs_f64();
                    (t, r.method.clone(), r.path.clone(), age)
                })
                .collect()
        })
        .unwrap_or_default();
    threads.sort_by(|a, b| b.3.total_cmp(&a.3));
    if threads.is_empty() {
        slog::crit!(logger, "WORKER TIMEOUT: no thread was running a request");
        return;
    }
    let idents: Vec<u64> = threads.iter().map(|t| t.0).collect();
    let (tx, rx) = mpsc::channel();
    // Waits for the GIL, maybe for ever (the process dies anyway).
    let taker = std::thread::Builder::new()
        .name("ferrocorn-stacks".into())
        .spawn(move || {
            let stacks = Python::attach(|py| -> PyResult<Vec<Option<String>>> {
                crate::helper(py)?
                    .getattr("format_stacks")?
                    .call1((idents,))?
                    .extract()
            });
            let _ = tx.send(stacks);
        });
    let stacks = match taker {
        Ok(_) => rx.recv_timeout(wait).ok(),
        Err(_) => None,
    };
    for (i, (tid, method, path, age)) in threads.iter().enumerate() {
        let age = (age * 1000.0).round() / 1000.0;
        match &stacks {
            Some(Ok(s)) => match s.get(i).cloned().flatten() {
                Some(stack) => slog::crit!(
                    logger,
                    "WORKER TIMEOUT: the stack of a thread in {} {} for {:.3} s",
                    method, path, age;
                    "method" => method.as_str(), "path" => path.as_str(), "age" => age,
                    "thread" => *tid, "stack" => stack.as_str()
                ),
                None => slog::crit!(
                    logger,
                    "WORKER TIMEOUT: a thread in {} {} for {:.3} s had no Python frame",
                    method, path, age;
                    "method" => method.as_str(), "path" => path.as_str(), "age" => age,
                    "thread" => *tid
                ),
            },
            Some(Err(e)) => slog::crit!(
                logger,
                "WORKER TIMEOUT: a thread in {} {} for {:.3} s; its stack could not be taken: {}",
                method, path, age, e;
                "method" => method.as_str(), "path" => path.as_str(), "age" => age,
                "thread" => *tid
            ),
            None => slog::crit!(
                logger,
                "WORKER TIMEOUT: a thread in {} {} for {:.3} s; its stack could not be taken (a thread held the GIL for {:?}: inside C code)",
                method, path, age, wait;
                "method" => method.as_str(), "path" => path.as_str(), "age" => age,
                "thread" => *tid
            ),
        }
    }
}
