//! Where finished lines go: one `write(2)` per line, under a mutex that also
//! guards the swap of a reopened file; or, for access-log lines on a thread
//! that asked for it ([`HeldLines`]), many lines in one `write(2)`.

use std::cell::RefCell;
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
    /// A file this process gave up ([`Sink::close`]): lines are dropped.
    Closed,
}

impl Output {
    /// Whether a `write(2)` lands whole whatever its size (asked at each
    /// write of held lines: fd 1 may be `dup2`'d onto something else).
    fn is_regular_file(&self) -> bool {
        match self {
            Output::Fd(fd) => crate::sys::is_regular_file(*fd),
            Output::File(f) => f.metadata().is_ok_and(|m| m.file_type().is_file()),
            Output::Memory(_) => true,
            Output::Closed => false,
        }
    }
}

/// Bytes a pipe takes in one piece (POSIX's minimum, Linux's value).
pub(crate) const PIPE_BUF: usize = 4096;

/// The end of a line cut to fit in `PIPE_BUF`: `[...N bytes cut]`.
pub(crate) fn cut_marker(n: usize) -> String {
    format!("[...{n} bytes cut]")
}

/// The longest prefix of `s` no longer than `max` bytes that ends neither
/// inside a UTF-8 character nor inside one of this crate's escapes
/// (`\"`, `\\`, `\xNN`, and JSON's `\uNNNN`).
pub(crate) fn safe_cut(s: &[u8], max: usize) -> usize {
    if s.len() <= max {
        return s.len();
    }
    let mut k = max;
    while k > 0 && (s[k] & 0xc0) == 0x80 {
        k -= 1;
    }
    // An escape starting at most 5 bytes back and ending after `k`: cut
    // before it. A backslash counts as one only if an even run precedes it.
    let starts_escape = |i: usize| {
        let run = s[..i].iter().rev().take_while(|&&b| b == b'\\').count();
        s[i] == b'\\' && run % 2 == 0
    };
    for back in 1..=k.min(5) {
        let i = k - back;
        if starts_escape(i) {
            let len = match s.get(i + 1) {
                Some(b'x') => 4,
                Some(b'u') => 6,
                _ => 2,
            };
            if i + len > k {
                k = i;
            }
            break;
        }
    }
    k
}

/// `line` (ending in `\n`) cut to at most `PIPE_BUF` bytes, ending in
/// [`cut_marker`] and `\n`: a `write(2)` of it to a pipe is atomic.
fn cut_line(line: &[u8]) -> Vec<u8> {
    let body = line.strip_suffix(b"\n").unwrap_or(line);
    // The marker for the whole body is at least as long as the real one.
    let room = PIPE_BUF - cut_marker(body.len()).len() - 1;
    let keep = safe_cut(body, room);
    let mut out = Vec::with_capacity(PIPE_BUF);
    out.extend_from_slice(&body[..keep]);
    out.extend_from_slice(cut_marker(body.len() - keep).as_bytes());
    out.push(b'\n');
    out
}

/// The length of the next piece of `buf` (whole lines) to write to a pipe:
/// the lines that fit in `PIPE_BUF`, or one line longer than that.
fn piece_len(buf: &[u8]) -> usize {
    if buf.len() <= PIPE_BUF {
        return buf.len();
    }
    match buf[..PIPE_BUF].iter().rposition(|&b| b == b'\n') {
        Some(i) => i + 1,
        None => buf
            .iter()
            .position(|&b| b == b'\n')
            .map_or(buf.len(), |i| i + 1),
    }
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

    /// Whether a line longer than `PIPE_BUF` is cut here: the destination
    /// is not a regular file (a pipe shared by every worker, a terminal),
    /// where a longer `write(2)` may interleave with other processes'.
    pub(crate) fn cuts_long_lines(&self) -> bool {
        !lock(&self.out).is_regular_file()
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

    /// Writes one complete line (ending in `\n`), or, when `holdable` and
    /// this thread holds lines ([`HeldLines`]), appends it to the thread's
    /// held lines.
    pub(crate) fn write(self: &Arc<Sink>, line: &[u8], holdable: bool) {
        if holdable && hold(self, line) {
            return;
        }
        self.write_lines(line, 1, holdable);
    }

    /// Writes `lines` complete lines. A failed write is counted here; the
    /// caller may report the count (ferrocorn's workers do, for the access
    /// log, in the error log).
    ///
    /// Many processes may write to one destination (every worker's stdout is
    /// the same pipe under a container runtime). A `write(2)` to a regular
    /// file is placed whole; to a pipe only up to `PIPE_BUF` bytes are, so
    /// lines going anywhere but a regular file are written in pieces of at
    /// most `PIPE_BUF` bytes that end at line ends, and a line longer than
    /// that is cut to `PIPE_BUF` bytes ending in `[...N bytes cut]` when
    /// `cut` (access lines): no access line is torn by another process's
    /// write (issue 19). An error-log line is written whole in one
    /// `write(2)`, however long (a traceback's end matters more).
    fn write_lines(&self, buf: &[u8], lines: u64, cut: bool) {
        let mut out = lock(&self.out);
        let whole = buf.len() <= PIPE_BUF || (!cut && lines <= 1) || out.is_regular_file();
        let mut rest = buf;
        let mut res = Ok(());
        while !rest.is_empty() {
            let take = if whole { rest.len() } else { piece_len(rest) };
            let cut;
            let piece = if take > PIPE_BUF && !whole {
                cut = cut_line(&rest[..take]);
                &cut[..]
            } else {
                &rest[..take]
            };
            res = match &mut *out {
                Output::Fd(fd) => crate::sys::write_all_fd(*fd, piece),
                Output::File(f) => f.write_all(piece),
                Output::Memory(m) => {
                    m.append(piece);
                    Ok(())
                }
                Output::Closed => Err(io::ErrorKind::NotConnected.into()),
            };
            if res.is_err() {
                break;
            }
            rest = &rest[take..];
        }
        drop(out);
        if res.is_err() {
            let unwritten = if whole {
                lines
            } else {
                rest.iter().filter(|&&b| b == b'\n').count() as u64
            };
            self.dropped.fetch_add(unwritten.max(1), Ordering::Relaxed);
        }
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Opens the file again by its path and swaps it in under the lock, so a
    /// line is written whole either to the old file or to the new one.
    pub(crate) fn reopen(&self) -> io::Result<()> {
        if let Destination::File(path) = &self.dest {
            if matches!(*lock(&self.out), Output::Closed) {
                return Ok(());
            }
            let new = open_append(path)?;
            let mut out = lock(&self.out);
            *out = Output::File(new);
        }
        Ok(())
    }

    /// Closes the file (a forked child that does not write to it); the
    /// standard streams and memory logs stay.
    pub(crate) fn close(&self) {
        let mut out = lock(&self.out);
        if let Output::File(_) = &*out {
            *out = Output::Closed;
        }
    }

    pub(crate) fn flush(&self) {
        let mut out = lock(&self.out);
        if let Output::File(f) = &mut *out {
            let _ = f.flush();
        }
    }
}

/// Held lines are written once they reach this size.
const HOLD_MAX: usize = 64 * 1024;

/// One thread's held access-log lines: all for one sink, in order.
#[derive(Default)]
struct Held {
    /// Live [`HeldLines`] guards on this thread.
    guards: u32,
    sink: Option<Arc<Sink>>,
    buf: Vec<u8>,
    lines: u64,
}

impl Held {
    fn flush(&mut self) {
        if let Some(sink) = self.sink.take() {
            // Only access lines are held.
            sink.write_lines(&self.buf, self.lines, true);
        }
        self.buf.clear();
        self.lines = 0;
        if self.buf.capacity() > 4 * HOLD_MAX {
            self.buf = Vec::new();
        }
    }
}

impl Drop for Held {
    // A thread that ends (or unwinds) with held lines still writes them.
    fn drop(&mut self) {
        self.flush();
    }
}

thread_local! {
    static HELD: RefCell<Held> = RefCell::new(Held::default());
}

/// Appends `line` to this thread's held lines when it holds lines; false
/// when it does not (or cannot: its state is borrowed or destroyed).
fn hold(sink: &Arc<Sink>, line: &[u8]) -> bool {
    HELD.try_with(|h| {
        let Ok(mut h) = h.try_borrow_mut() else {
            return false;
        };
        if h.guards == 0 {
            return false;
        }
        if h.sink.as_ref().is_some_and(|s| !Arc::ptr_eq(s, sink)) {
            // Another destination: keep each one's lines in order.
            h.flush();
        }
        if h.sink.is_none() {
            h.sink = Some(Arc::clone(sink));
        }
        h.buf.extend_from_slice(line);
        h.lines += 1;
        if h.buf.len() >= HOLD_MAX {
            h.flush();
        }
        true
    })
    .unwrap_or(false)
}

/// Writes this thread's held lines, if any.
pub(crate) fn flush_held() {
    let _ = HELD.try_with(|h| {
        if let Ok(mut h) = h.try_borrow_mut()
            && h.lines > 0
        {
            h.flush();
        }
    });
}

/// Access-log lines written on this thread while a `HeldLines` lives are
/// held in a per-thread buffer and written together, in order, in one
/// `write(2)`: when [`HeldLines::flush`] is called, when 64 KiB are held,
/// when the guard is dropped (also while unwinding) and when the thread
/// ends. Error-log lines are never held.
///
/// For a loop that serves many requests per turn: one system call for many
/// lines instead of one per line (on ext4 a `write(2)` of one line costs
/// more than formatting it). The loop decides when to flush (ferrocorn's
/// worker: at most 10 ms after the first held line, see
/// [`is_empty`](Self::is_empty)). A process killed with `SIGKILL` loses the
/// lines held at that moment.
///
/// ```
/// let held = ferrocorn_log::HeldLines::new();
/// // ... serve a batch of requests, each logging an access line ...
/// held.flush(); // before waiting for more
/// ```
#[must_use = "lines are held only while the guard lives"]
pub struct HeldLines {
    /// Whether this guard was counted (the thread's state was reachable).
    counted: bool,
    // Per-thread state: the guard must stay on its thread.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl HeldLines {
    /// Starts holding this thread's access-log lines (guards nest).
    pub fn new() -> HeldLines {
        let counted = HELD
            .try_with(|h| match h.try_borrow_mut() {
                Ok(mut h) => {
                    h.guards += 1;
                    true
                }
                Err(_) => false,
            })
            .unwrap_or(false);
        HeldLines {
            counted,
            _not_send: std::marker::PhantomData,
        }
    }

    /// Writes the lines held so far.
    pub fn flush(&self) {
        flush_held();
    }

    /// Whether this thread holds no line now.
    pub fn is_empty(&self) -> bool {
        HELD.try_with(|h| h.try_borrow().map_or(true, |h| h.lines == 0))
            .unwrap_or(true)
    }
}

impl Default for HeldLines {
    fn default() -> HeldLines {
        HeldLines::new()
    }
}

impl Drop for HeldLines {
    fn drop(&mut self) {
        let _ = HELD.try_with(|h| {
            if let Ok(mut h) = h.try_borrow_mut() {
                h.flush();
                if self.counted {
                    h.guards -= 1;
                }
            }
        });
    }
}

impl std::fmt::Debug for HeldLines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldLines").finish_non_exhaustive()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_never_split_a_character_or_an_escape() {
        assert_eq!(safe_cut(b"abcdef", 10), 6);
        assert_eq!(safe_cut(b"abcdef", 3), 3);
        // é is two bytes: never cut between them.
        assert_eq!(safe_cut("ab\u{e9}cd".as_bytes(), 3), 2);
        // \xNN, \", \\ and \uNNNN stay whole.
        assert_eq!(safe_cut(br"ab\x41cd", 4), 2);
        assert_eq!(safe_cut(br"ab\x41cd", 6), 6);
        assert_eq!(safe_cut(br#"ab\"cd"#, 3), 2);
        assert_eq!(safe_cut(br"ab\\cd", 3), 2);
        assert_eq!(
            safe_cut(br"ab\\\x41", 6),
            4,
            "an escaped backslash, then \\x"
        );
        assert_eq!(safe_cut(br"ab\\x41", 5), 5, "\\\\ then a plain x");
        assert_eq!(safe_cut(br"ab\u00e9cd", 6), 2);
        let line = [b"x".repeat(9000), b"\n".to_vec()].concat();
        let cut = cut_line(&line);
        assert!(cut.len() <= PIPE_BUF && cut.ends_with(b" bytes cut]\n"));
        let kept = cut.iter().take_while(|&&b| b == b'x').count();
        let marker = cut_marker(9000 - kept);
        assert_eq!(&cut[kept..cut.len() - 1], marker.as_bytes());
    }
}
