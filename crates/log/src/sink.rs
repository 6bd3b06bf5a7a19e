//! Where finished lines go: one `write(2)` per line, under a mutex that also
//! guards the swap of a reopened file.

use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::config::Destination;

/// An in-memory log destination: every line written is kept. Clones share
/// the same buffer. Meant for tests of code that logs.
#[derive(Clone, Default)]
pub struct MemoryLog {
    buf: Arc<Mutex<Vec<u8>>>,
}

impl MemoryLog {
    /// An empty buffer.
    pub fn new() -> MemoryLog {
        MemoryLog::default()
    }

    /// Everything written so far (invalid UTF-8 replaced, which this crate never writes).
    pub fn contents(&self) -> String {
        String::from_utf8_lossy(&lock(&self.buf)).into_owned()
    }

    /// The lines written so far, without their newlines.
    pub fn lines(&self) -> Vec<String> {
        self.contents().lines().map(str::to_owned).collect()
    }

    /// Forgets everything written so far.
    pub fn clear(&self) {
        lock(&self.buf).clear();
    }

    fn append(&self, line: &[u8]) {
        lock(&self.buf).extend_from_slice(line);
    }
}

impl std::fmt::Debug for MemoryLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryLog")
            .field("len", &lock(&self.buf).len())
            .finish()
    }
}

impl PartialEq for MemoryLog {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.buf, &other.buf)
    }
}

impl Eq for MemoryLog {}

/// A poisoned lock only means another thread panicked while holding it; a
/// log must keep working, so take the data anyway.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

enum Output {
    Fd(std::os::fd::RawFd),
    File(File),
    Memory(MemoryLog),
}

/// One destination, shared by every logger writing to it.
pub(crate) struct Sink {
    dest: Destination,
    out: Mutex<Output>,
    dropped: AtomicU64,
}

impl Sink {
    pub(crate) fn open(dest: &Destination) -> io::Result<Sink> {
        let out = match dest {
            Destination::Stdout => Output::Fd(libc::STDOUT_FILENO),
            Destination::Stderr => Output::Fd(libc::STDERR_FILENO),
            Destination::File(path) => Output::File(open_append(path)?),
            Destination::Memory(m) => Output::Memory(m.clone()),
        };
        Ok(Sink {
            dest: dest.clone(),
            out: Mutex::new(out),
            dropped: AtomicU64::new(0),
        })
    }

    pub(crate) fn destination(&self) -> &Destination {
        &self.dest
    }

    /// Whether the destination is a terminal (for `ColorChoice::Auto`).
    #[cfg_attr(not(feature = "structured"), allow(dead_code))]
    pub(crate) fn is_terminal(&self) -> bool {
        match self.dest {
            Destination::Stdout => io::stdout().is_terminal(),
            Destination::Stderr => io::stderr().is_terminal(),
            Destination::File(_) | Destination::Memory(_) => false,
        }
    }

    /// Writes one complete line (ending in `\n`). A failed write is counted,
    /// not reported: there is nowhere left to report it.
    pub(crate) fn write_line(&self, line: &[u8]) {
        let mut out = lock(&self.out);
        let res = match &mut *out {
            Output::Fd(fd) => crate::sys::write_all_fd(*fd, line),
            Output::File(f) => f.write_all(line),
            Output::Memory(m) => {
                m.append(line);
                Ok(())
            }
        };
        drop(out);
        if res.is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Opens the file again by its path and swaps it in under the lock, so a
    /// line is written whole either to the old file or to the new one.
    pub(crate) fn reopen(&self) -> io::Result<()> {
        if let Destination::File(path) = &self.dest {
            let new = open_append(path)?;
            let mut out = lock(&self.out);
            *out = Output::File(new);
        }
        Ok(())
    }

    pub(crate) fn flush(&self) {
        let mut out = lock(&self.out);
        if let Output::File(f) = &mut *out {
            let _ = f.flush();
        }
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open log file {}: {e}", path.display()),
            )
        })
}

/// The sinks of one `Logs`: destinations named twice share one sink.
#[derive(Default)]
pub(crate) struct Sinks {
    sinks: Vec<Arc<Sink>>,
}

impl Sinks {
    pub(crate) fn get(&mut self, dest: &Destination) -> io::Result<Arc<Sink>> {
        if let Some(s) = self.sinks.iter().find(|s| same(s.destination(), dest)) {
            return Ok(Arc::clone(s));
        }
        let sink = Arc::new(Sink::open(dest)?);
        self.sinks.push(Arc::clone(&sink));
        Ok(sink)
    }

    pub(crate) fn into_vec(self) -> Vec<Arc<Sink>> {
        self.sinks
    }
}

fn same(a: &Destination, b: &Destination) -> bool {
    match (a, b) {
        (Destination::File(x), Destination::File(y)) => {
            x == y || canonical(x).is_some_and(|cx| canonical(y).is_some_and(|cy| cx == cy))
        }
        _ => a == b,
    }
}

fn canonical(p: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(p).ok()
}
