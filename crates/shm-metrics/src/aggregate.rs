//! `mark_process_dead`: removing a dead process's gauges and folding its
//! other files into one aggregate file per type, so the number of files stays
//! bounded however many processes come and go.
//!
//! # Folding, and why scrapes stay exact
//! Under the directory's lock (`.ferrocorn-aggregate.lock`, exclusive), for
//! each foldable kind (counter, histogram, summary and the non-live `min`,
//! `max`, `sum`, `mostrecent` gauges) of the dead process `P`:
//!
//! 1. rename `{kind}_P.db` to `.{kind}_P.folding` (no `.db`: Python's
//!    reader does not list it, and a new process reusing the pid creates a
//!    new file rather than continuing this one);
//! 2. read `{kind}_aggregate.db` (if any) and the hidden file, write the
//!    combined values under a temporary name (created `O_EXCL|O_NOFOLLOW`)
//!    with a *trailer* after the `used` mark saying "this aggregate
//!    contains file `P` with inode `I` and modification time `T`" (Python
//!    reads only up to `used` and never sees it), and rename it over
//!    `{kind}_aggregate.db` (atomic);
//! 3. delete the hidden file.
//!
//! Our reader holds the lock shared while it lists and reads, so it sees
//! the directory before or after a fold, never during one. It reads hidden
//! files too, skipping those an aggregate's trailer claims: after a crash
//! between 1 and 2 the hidden file is counted (and the next fold folds
//! it), after a crash between 2 and 3 it is skipped (and the next fold
//! deletes it). Lock waits are bounded (a scrape reads without the lock
//! after half a second, then starts over if a listed file vanished or an
//! aggregate changed since the listing; a fold gives up after 2 s), and a
//! turnstile file makes waiting readers and folds take turns. Python's
//! reader, which knows no lock or trailers, misses `P` for the
//! microseconds between steps 1 and 2.
//!
//! Combining: counters, histogram buckets and `_sum`s, summaries and `sum`
//! gauges add; `min`/`max` gauges keep the smaller/larger value; `mostrecent`
//! gauges keep the value with the newer timestamp. That is exactly what
//! prometheus_client reports for those modes with the dead process's file
//! kept forever, so the exposition does not change when a process is folded.
//! The `live*` gauges of `P` are deleted, and so are its `all`-mode gauges
//! (prometheus_client keeps reporting those forever, issue #495).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;

use std::path::Path;

use crate::GaugeMode;
use crate::file::{self, Kind, Stamp};
use crate::hash::FastMap;
use crate::sys;

const MAGIC: &[u8; 8] = b"FCABSORB";
const AGGREGATE: &str = "aggregate";

/// A file an aggregate already contains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Absorbed {
    pub id: String,
    pub stamp: Stamp,
}

/// The trailer of an aggregate file, if it has one.
pub(crate) fn parse_trailer(data: &[u8]) -> Option<Vec<Absorbed>> {
    let used = usize::try_from(i32::from_ne_bytes(data.get(..4)?.try_into().ok()?)).ok()?;
    let t = data.get(used..)?;
    let mut rest = t.strip_prefix(MAGIC.as_slice())?;
    let mut take = |n: usize| -> Option<&[u8]> {
        let (a, b) = rest.split_at_checked(n)?;
        rest = b;
        Some(a)
    };
    let count = u32::from_ne_bytes(take(4)?.try_into().ok()?);
    let mut out = Vec::new();
    for _ in 0..count {
        let len = u32::from_ne_bytes(take(4)?.try_into().ok()?) as usize;
        let id = String::from_utf8(take(len)?.to_vec()).ok()?;
        let ino = u64::from_ne_bytes(take(8)?.try_into().ok()?);
        let mtime = i64::from_ne_bytes(take(8)?.try_into().ok()?);
        let mtime_nsec = i64::from_ne_bytes(take(8)?.try_into().ok()?);
        out.push(Absorbed {
            id,
            stamp: Stamp {
                ino,
                mtime,
                mtime_nsec,
            },
        });
    }
    Some(out)
}

const FOLDED: [Kind; 7] = [
    Kind::Counter,
    Kind::Histogram,
    Kind::Summary,
    Kind::Gauge(GaugeMode::Min),
    Kind::Gauge(GaugeMode::Max),
    Kind::Gauge(GaugeMode::Sum),
    Kind::Gauge(GaugeMode::MostRecent),
];

/// Whether files of `kind` are folded into aggregates (not simply deleted).
pub(crate) fn is_folded(kind: Kind) -> bool {
    FOLDED.contains(&kind)
}

/// Does the bookkeeping for a process that exited: its `live*` and `all`
/// gauges vanish, its counters, histograms, summaries and `min`/`max`/`sum`/
/// `mostrecent` gauges are folded into `{type}_aggregate.db` files (readable
/// by prometheus_client) and its files deleted. See the module docs of the
/// crate for the order of operations that keeps concurrent scrapes exact.
///
/// Call it after the process was reaped and before its pid can be handed to
/// a new worker. Calls for one directory are serialized with a lock file
/// (`.ferrocorn-aggregate.lock`), which this crate's scrapes hold shared;
/// after waiting 2 s for it the call fails with `TimedOut` rather than
/// hang its caller. Unreadable files of the pid, and names of it that are
/// not regular files, are deleted (nothing in them can be recovered).
///
/// The files of a process are those whose id is its pid (`counter_1234.db`)
/// or its pid, a dot and a tag (`counter_1234.py.db`): a second writer in
/// the same process (prometheus_client in a Python worker, whose
/// `process_identifier` ferrocorn-wsgi sets to `{pid}.py`) must not share
/// the pid's files, and its files are handled exactly like the pid's.
pub fn mark_process_dead(dir: &Path, pid: u32) -> io::Result<()> {
    mark_ids_dead(dir, &pid.to_string(), true)
}

/// The lock file serializing folds (taken exclusively) against each other
/// and against this crate's readers (taken shared).
pub(crate) const LOCK_FILE: &str = ".ferrocorn-aggregate.lock";

/// How long a fold waits for the lock before giving up with `TimedOut`:
/// folds and scrapes hold it for milliseconds; anything longer is a process
/// holding it on purpose, and the caller (a supervisor's loop) must go on.
const FOLD_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The turnstile in front of [`LOCK_FILE`]: whoever waits for the lock
/// (a reader or a fold) holds it exclusively meanwhile and lets it go once
/// it has the lock, so that waiting readers and folds take turns. `flock`
/// has no queue: without it a reader scraping back to back would starve
/// folds, and folds coming back to back (many processes exiting at once)
/// would starve readers.
pub(crate) const TURN_FILE: &str = ".ferrocorn-aggregate.turn";

/// What [`lock_dir`] got.
pub(crate) enum Locked {
    /// The lock, held until the file is dropped.
    Held(fs::File),
    /// The directory has no lock file and none can be made (so no fold
    /// can run there either).
    NoLockFile,
    /// Others held it for longer than the wait allowed.
    TimedOut,
}

/// Takes the directory's fold lock, exclusively (a fold) or shared (a
/// reader), through the turnstile, waiting at most `wait` in all.
pub(crate) fn lock_dir(
    dir: &Path,
    exclusive: bool,
    wait: std::time::Duration,
) -> io::Result<Locked> {
    let deadline = std::time::Instant::now() + wait;
    let Some(lock) = open_lock(dir, LOCK_FILE, true)? else {
        return Ok(Locked::NoLockFile);
    };
    // Without a turnstile (a read-only directory, say) the lock alone.
    let turn = open_lock(dir, TURN_FILE, true).ok().flatten();
    if let Some(t) = &turn
        && !sys::lock(t, true, wait)?
    {
        return Ok(Locked::TimedOut);
    }
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    if !sys::lock(&lock, exclusive, left)? {
        return Ok(Locked::TimedOut);
    }
    drop(turn);
    Ok(Locked::Held(lock))
}

/// Opens the directory's lock file `name` ([`LOCK_FILE`] or
/// [`TURN_FILE`]): created when `create` allows and the directory is
/// writable, read-only otherwise (a `flock` needs no write access); `None`
/// when there is none and it cannot be created. Never blocks on a FIFO
/// nor follows a link planted at its name.
pub(crate) fn open_lock(dir: &Path, name: &str, create: bool) -> io::Result<Option<fs::File>> {
    let path = dir.join(name);
    let flags = libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let rw = OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .mode(0o600)
        .custom_flags(flags)
        .open(&path);
    let file = match rw {
        Ok(f) => f,
        Err(e) if falls_back_to_read_only(&e) => {
            match OpenOptions::new()
                .read(true)
                .custom_flags(flags)
                .open(&path)
            {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    };
    file::regular(Ok(file))
        .map(|(f, _)| Some(f))
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// Whether [`open_lock`], failing to open a lock file read-write, tries
/// read-only: when the directory or the file may not be written (a
/// read-only mount, another owner, an immutable file) or when there is no
/// file and `create` was not allowed. Any other error (no room to create
/// it, a directory at its name, a link) is the caller's to see.
fn falls_back_to_read_only(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EACCES | libc::EROFS | libc::EPERM | libc::ENOENT)
    )
}

/// Whether the file id `id` is `pid.{tag}` (a tag: not empty, no `_`).
fn is_tagged_id_of(id: &str, pid: &str) -> bool {
    id.strip_prefix(pid)
        .and_then(|rest| rest.strip_prefix('.'))
        .is_some_and(|tag| !tag.is_empty())
}

/// Marks `id` dead, and with `tagged` every `{id}.{tag}` found in `dir`
/// too, under one hold of the lock.
fn mark_ids_dead(dir: &Path, id: &str, tagged: bool) -> io::Result<()> {
    let _lock = match lock_dir(dir, true, FOLD_LOCK_WAIT)? {
        Locked::Held(lock) => lock,
        Locked::NoLockFile => {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{LOCK_FILE}: cannot create"),
            ));
        }
        Locked::TimedOut => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{}: held by others for {FOLD_LOCK_WAIT:?}; {id} not marked dead",
                    dir.join(LOCK_FILE).display()
                ),
            ));
        }
    };
    // Folds a crash interrupted first: their files are under hidden names.
    // And the tagged ids of the process (`1234.py`).
    let mut hidden: Vec<(Kind, String)> = Vec::new();
    let mut ids: Vec<String> = vec![id.to_string()];
    for entry in fs::read_dir(dir)? {
        let Some(name) = entry?.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if let Some(n) = file::FileName::parse_folding(&name) {
            if is_folded(n.kind) {
                hidden.push((n.kind, n.id));
            }
        } else if tagged
            && let Some(n) = file::FileName::parse(&name)
            && is_tagged_id_of(&n.id, id)
            && !ids.contains(&n.id)
        {
            ids.push(n.id);
        }
    }
    for id in &ids {
        for mode in GaugeMode::ALL
            .into_iter()
            .filter(|m| m.is_live() || *m == GaugeMode::All)
        {
            remove_if_present(&dir.join(Kind::Gauge(mode).file_name(id)))?;
        }
    }
    for kind in FOLDED {
        for (_, hid) in hidden.iter().filter(|(k, _)| *k == kind) {
            fold_hidden(dir, kind, hid)?;
        }
        for id in &ids {
            fold(dir, kind, id)?;
        }
    }
    Ok(())
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The aggregate's values by raw key, in file order.
#[derive(Default)]
struct Values {
    order: Vec<Box<[u8]>>,
    map: FastMap<Box<[u8]>, (f64, f64)>,
}

impl Values {
    fn combine(&mut self, kind: Kind, key: &[u8], value: f64, ts: f64) {
        match self.map.get_mut(key) {
            None => {
                self.order.push(key.into());
                self.map.insert(key.into(), (value, ts));
            }
            Some(cur) => match kind {
                Kind::Gauge(GaugeMode::Min) => {
                    if value < cur.0 {
                        cur.0 = value;
                    }
                }
                Kind::Gauge(GaugeMode::Max) => {
                    if value > cur.0 {
                        cur.0 = value;
                    }
                }
                Kind::Gauge(GaugeMode::MostRecent) => {
                    if cur.1 < ts {
                        *cur = (value, ts);
                    }
                }
                _ => cur.0 += value,
            },
        }
    }

    fn encode(&self, absorbed: Option<&Absorbed>) -> Vec<u8> {
        let mut out = vec![0u8; 8];
        for k in &self.order {
            let (v, ts) = self.map[k];
            file::encode_entry(&mut out, k, v, ts);
        }
        let used = out.len() as i32;
        out[..4].copy_from_slice(&used.to_ne_bytes());
        if let Some(a) = absorbed {
            out.extend_from_slice(MAGIC);
            out.extend_from_slice(&1u32.to_ne_bytes());
            out.extend_from_slice(&(a.id.len() as u32).to_ne_bytes());
            out.extend_from_slice(a.id.as_bytes());
            out.extend_from_slice(&a.stamp.ino.to_ne_bytes());
            out.extend_from_slice(&a.stamp.mtime.to_ne_bytes());
            out.extend_from_slice(&a.stamp.mtime_nsec.to_ne_bytes());
        }
        out
    }
}

/// Writes `bytes` under a temporary name and renames it over `kind`'s
/// aggregate. The temporary file is created anew (`O_EXCL`, after removing
/// whatever a crash left there) and never through a symbolic link: a link
/// planted at its name is removed, its target left alone.
fn replace(dir: &Path, kind: Kind, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!(".{}_{AGGREGATE}.tmp", kind.prefix()));
    remove_if_present(&tmp)?;
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)?;
    f.write_all(bytes)?;
    drop(f);
    fs::rename(&tmp, dir.join(kind.file_name(AGGREGATE)))
}

/// The hidden name a file being folded is renamed to first: it does not
/// end in `.db`, so a reader that lists the directory and knows nothing of
/// it (prometheus_client) does not count it, and a new process reusing the
/// pid writes a fresh file instead of continuing a folded one.
pub(crate) fn folding_name(kind: Kind, id: &str) -> String {
    format!(".{}_{id}{}", kind.prefix(), file::FOLDING_SUFFIX)
}

/// Folds the file of `id` into `kind`'s aggregate, crash-safely:
/// 1. rename `{kind}_{id}.db` to its hidden [`folding_name`];
/// 2. write the aggregate plus the hidden file's values under a temporary
///    name, with a trailer claiming the hidden file by id, inode and mtime,
///    and rename it over the aggregate;
/// 3. delete the hidden file.
///
/// After a crash at any point, every sample is counted once: before 1
/// nothing changed; between 1 and 2 the hidden file is unclaimed, so
/// readers count it and the next fold folds it; between 2 and 3 it is
/// claimed, so readers skip it and the next fold deletes it. A process
/// reusing the pid meanwhile creates a new `{kind}_{id}.db` (another
/// inode: the hidden file still holds the old one), counted on its own.
fn fold(dir: &Path, kind: Kind, id: &str) -> io::Result<()> {
    let src_path = dir.join(kind.file_name(id));
    // A file an older version of this function claimed but did not delete
    // (it renamed the aggregate first): finish that.
    let mut buf = Vec::new();
    if let Ok((f, _)) = file::open_regular_path(&dir.join(kind.file_name(AGGREGATE)))
        && file::read_file(&f, &mut buf, true, false).is_ok()
        && let Some(absorbed) = parse_trailer(&buf)
    {
        for a in absorbed {
            let p = dir.join(kind.file_name(&a.id));
            if fs::symlink_metadata(&p).is_ok_and(|m| Stamp::of(&m) == a.stamp) {
                remove_if_present(&p)?;
            }
        }
    }
    #[cfg(test)]
    tests::at_step("lstat", &src_path);
    match fs::symlink_metadata(&src_path) {
        Ok(m) if !m.is_file() => {
            // Nothing we wrote: a link or a FIFO left at the name.
            return remove_if_present(&src_path);
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    #[cfg(test)]
    tests::at_step("rename", &src_path);
    match fs::rename(&src_path, dir.join(folding_name(kind, id))) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    fold_hidden(dir, kind, id)
}

/// Steps 2 and 3 of [`fold`] for the hidden file of `id` (or only step 3
/// when the aggregate already claims it).
fn fold_hidden(dir: &Path, kind: Kind, id: &str) -> io::Result<()> {
    let agg_path = dir.join(kind.file_name(AGGREGATE));
    let hidden_path = dir.join(folding_name(kind, id));
    #[cfg(test)]
    tests::at_step("open hidden", &hidden_path);
    let (src, meta) = match file::open_regular_path(&hidden_path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        // Not a regular file: nothing this crate wrote; remove the name.
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            return remove_if_present(&hidden_path);
        }
        Err(e) => return Err(e),
    };
    let stamp = Stamp::of(&meta);
    let mut values = Values::default();
    let mut buf = Vec::new();
    match file::open_regular_path(&agg_path)
        .and_then(|(f, _)| file::read_file(&f, &mut buf, true, false))
    {
        Ok(_) => {
            if parse_trailer(&buf)
                .is_some_and(|claimed| claimed.iter().any(|a| a.id == id && a.stamp == stamp))
            {
                // Crashed after the rename over the aggregate: only the
                // deletion is left to do.
                return remove_if_present(&hidden_path);
            }
            // An unreadable aggregate would be lost by overwriting it: stop.
            let mut entries = Vec::new();
            file::parse(&buf, &mut entries).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", agg_path.display()),
                )
            })?;
            for e in &entries {
                values.combine(kind, e.key(&buf), e.value, e.timestamp);
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let (len, _) = file::read_file(&src, &mut buf, false, false)?;
    buf.truncate(len);
    let mut entries = Vec::new();
    if file::parse(&buf, &mut entries).is_ok() {
        for e in &entries {
            values.combine(kind, e.key(&buf), e.value, e.timestamp);
        }
    }
    let absorbed = Absorbed {
        id: id.to_string(),
        stamp,
    };
    replace(dir, kind, &values.encode(Some(&absorbed)))?;
    remove_if_present(&hidden_path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    type Hook = (&'static str, Box<dyn FnOnce(&Path)>);

    thread_local! {
        /// What a test does at one step of a fold on this thread: what a
        /// process that ignores the fold lock (an operator's `rm`, a
        /// script) could do at that moment, which no test can time from
        /// outside (as fail points do in other projects).
        static AT_STEP: RefCell<Option<Hook>> = const { RefCell::new(None) };
    }

    /// Runs the hook set for `step` (once), with the path the step is about
    /// to use.
    pub(super) fn at_step(step: &str, path: &Path) {
        let hook = AT_STEP.with(|h| {
            let mut h = h.borrow_mut();
            if h.as_ref().is_some_and(|(s, _)| *s == step) {
                h.take()
            } else {
                None
            }
        });
        if let Some((_, f)) = hook {
            f(path);
        }
    }

    /// Sets `f` to run at the fold's `step`.
    fn at(step: &'static str, f: impl FnOnce(&Path) + 'static) {
        AT_STEP.with(|h| *h.borrow_mut() = Some((step, Box::new(f))));
    }

    /// Whether the hook ran (a test that never reached its step proves
    /// nothing).
    fn hook_ran() -> bool {
        AT_STEP.with(|h| h.borrow().is_none())
    }

    /// `dir/counter_777.db` holding 5 jobs, as process 777 leaves it.
    fn dead_counter(dir: &Path) {
        let scratch = tempfile::tempdir_in(dir).unwrap();
        crate::Registry::new(scratch.path())
            .counter("jobs", "Jobs.", &[])
            .with_label_values(&[])
            .unwrap()
            .inc_by(5.0);
        let me = std::process::id();
        fs::rename(
            scratch.path().join(format!("counter_{me}.db")),
            dir.join("counter_777.db"),
        )
        .unwrap();
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !n.starts_with(".ferrocorn"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_dead_file_deleted_before_the_folds_rename_is_taken_as_gone() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        dead_counter(d);
        // Deleted between the fold's lstat and its rename.
        at("rename", |p| fs::remove_file(p).unwrap());
        mark_process_dead(d, 777).unwrap();
        assert!(hook_ran());
        assert_eq!(names(d), Vec::<String>::new());
    }

    #[test]
    fn a_hidden_file_deleted_before_the_fold_opens_it_is_taken_as_gone() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        dead_counter(d);
        // Deleted between the rename to the hidden name and the open.
        at("open hidden", |p| fs::remove_file(p).unwrap());
        mark_process_dead(d, 777).unwrap();
        assert!(hook_ran());
        assert_eq!(names(d), Vec::<String>::new());
    }

    #[test]
    fn an_lstat_error_other_than_not_found_is_returned() {
        let top = tempfile::tempdir().unwrap();
        let d = top.path().join("metrics");
        fs::create_dir(&d).unwrap();
        dead_counter(&d);
        // The directory is swapped for a regular file under the fold's
        // feet: its lstat of `metrics/counter_777.db` fails with ENOTDIR.
        let moved = top.path().join("moved");
        let (from, to) = (d.clone(), moved.clone());
        at("lstat", move |_: &Path| {
            fs::rename(&from, &to).unwrap();
            fs::write(&from, b"").unwrap();
        });
        let err = mark_process_dead(&d, 777).unwrap_err();
        assert!(hook_ran());
        assert_eq!(err.raw_os_error(), Some(libc::ENOTDIR), "{err}");
        // Nothing was folded or deleted.
        assert_eq!(names(&moved), ["counter_777.db"]);
    }

    #[test]
    fn only_lack_of_write_access_or_of_the_file_falls_back_to_read_only() {
        for errno in [libc::EACCES, libc::EROFS, libc::EPERM, libc::ENOENT] {
            let e = io::Error::from_raw_os_error(errno);
            assert!(falls_back_to_read_only(&e), "{e}");
        }
        // No room for a new lock file is not a read-only directory: the
        // error is reported, not taken for "no lock file here".
        for errno in [
            libc::ENOSPC,
            libc::EDQUOT,
            libc::EISDIR,
            libc::ELOOP,
            libc::EMFILE,
            libc::EIO,
        ] {
            let e = io::Error::from_raw_os_error(errno);
            assert!(!falls_back_to_read_only(&e), "{e}");
        }
        assert!(!falls_back_to_read_only(&io::Error::other("no errno")));
    }
}
