//! `mark_process_dead` at its edges, without Python or sockets: a fold
//! interrupted after the aggregate was replaced and before the dead file was
//! deleted (counted once, finished by the next call, a reused pid left
//! alone), gauges folded by mode, I/O errors returned, not swallowed, links
//! and FIFOs at the hidden names removed, a `live*` gauge under a hidden
//! name not read, a directory the process may not
//! write (a forked child, not root) scraped under a read-only lock file, and
//! a full filesystem (a tmpfs with no inode left, in a forked child's own
//! mount namespace) reported as such.
//!
//! These are the fast tests `just mutants` runs against `src/aggregate.rs`.

mod common;

use std::path::Path;

use common::{db_files, ours, value_of};
use ferrocorn_shm_metrics::{
    GaugeMode, MultiProcessCollector, Registry, encode_text, mark_process_dead,
};

/// Files as process `pid` would leave them: written by this process in a
/// scratch directory, then renamed to `pid`'s names in `dir`.
fn write_as(dir: &Path, pid: u32, write: impl FnOnce(&Registry)) {
    let scratch = tempfile::tempdir_in(dir).unwrap();
    write(&Registry::new(scratch.path()));
    let me = std::process::id().to_string();
    for entry in std::fs::read_dir(scratch.path()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if let Some(stem) = name.strip_suffix(&format!("_{me}.db")) {
            std::fs::rename(
                scratch.path().join(&name),
                dir.join(format!("{stem}_{pid}.db")),
            )
            .unwrap();
        }
    }
}

fn counter(dir: &Path, pid: u32, v: f64) {
    write_as(dir, pid, |r| {
        r.counter("jobs", "Jobs.", &[])
            .with_label_values(&[])
            .unwrap()
            .inc_by(v)
    });
}

/// A counter file of a new process reusing `pid` after a fold claimed the
/// old one's file: another file, whose mtime differs from the claimed one.
fn new_process_counter(dir: &Path, pid: u32, v: f64) {
    counter(dir, pid, v);
    std::fs::File::options()
        .write(true)
        .open(dir.join(format!("counter_{pid}.db")))
        .unwrap()
        .set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        .unwrap();
}

fn jobs(dir: &Path) -> Option<f64> {
    value_of(&ours(dir), "jobs_total")
}

#[test]
fn an_interrupted_fold_counts_once_and_the_next_call_finishes_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    counter(d, 777, 5.0);
    let dead = d.join("counter_777.db");
    // Keep the dead file's inode aside, fold, and put it back: the state a
    // fold interrupted after its rename and before its unlink leaves.
    std::fs::hard_link(&dead, d.join("aside")).unwrap();
    mark_process_dead(d, 777).unwrap();
    assert!(!dead.exists());
    std::fs::hard_link(d.join("aside"), &dead).unwrap();
    std::fs::remove_file(d.join("aside")).unwrap();
    assert_eq!(db_files(d), ["counter_777.db", "counter_aggregate.db"]);
    // A scrape skips the file the aggregate claims.
    assert_eq!(jobs(d), Some(5.0));
    // The next call (for any process) deletes it; nothing is counted twice.
    mark_process_dead(d, 778).unwrap();
    assert_eq!(db_files(d), ["counter_aggregate.db"]);
    assert_eq!(jobs(d), Some(5.0));
    // The aggregate keeps adding up.
    counter(d, 779, 2.0);
    assert_eq!(jobs(d), Some(7.0));
    mark_process_dead(d, 779).unwrap();
    assert_eq!(db_files(d), ["counter_aggregate.db"]);
    assert_eq!(jobs(d), Some(7.0));

    // The same crash as this version of the fold leaves it: the dead file
    // under its hidden name, claimed by the aggregate.
    counter(d, 780, 1.0);
    std::fs::hard_link(d.join("counter_780.db"), d.join("aside")).unwrap();
    mark_process_dead(d, 780).unwrap();
    let hidden = d.join(".counter_780.folding");
    assert!(!hidden.exists());
    std::fs::rename(d.join("aside"), &hidden).unwrap();
    assert_eq!(jobs(d), Some(8.0));
    // The next call deletes it without folding it again.
    mark_process_dead(d, 781).unwrap();
    assert!(!hidden.exists());
    assert_eq!(db_files(d), ["counter_aggregate.db"]);
    assert_eq!(jobs(d), Some(8.0));
}

#[test]
fn a_reused_pid_folded_right_after_the_old_one_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    counter(d, 777, 5.0);
    mark_process_dead(d, 777).unwrap();
    // The aggregate now claims file 777 (its inode and mtime). A new
    // process 777 writes a new file (another inode or mtime) and dies
    // before any other fold: its file is not the claimed one.
    new_process_counter(d, 777, 3.0);
    mark_process_dead(d, 777).unwrap();
    assert_eq!(db_files(d), ["counter_aggregate.db"]);
    assert_eq!(jobs(d), Some(8.0));
}

#[test]
fn a_name_at_a_hidden_folding_name_that_is_not_a_file_is_removed() {
    // A link or a FIFO at `.KIND_PID.folding` (nothing a fold made) is
    // removed, a link's target neither read nor changed, and the fold of
    // another process goes on.
    let outside = tempfile::tempdir().unwrap();
    counter(outside.path(), 805, 4.0);
    let target = outside.path().join("counter_805.db");
    let before = std::fs::read(&target).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::os::unix::fs::symlink(&target, d.join(".counter_805.folding")).unwrap();
    common::mkfifo(&d.join(".histogram_805.folding"));
    counter(d, 806, 1.0);
    mark_process_dead(d, 806).unwrap();
    assert!(!d.join(".counter_805.folding").is_symlink());
    assert!(!d.join(".histogram_805.folding").exists());
    assert_eq!(db_files(d), ["counter_aggregate.db"]);
    assert_eq!(jobs(d), Some(1.0));
    assert_eq!(std::fs::read(&target).unwrap(), before);
}

#[test]
fn a_new_file_under_a_folded_name_is_not_taken_for_the_folded_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    counter(d, 777, 5.0);
    mark_process_dead(d, 777).unwrap();
    // A new process 777 (the same pid, another file).
    new_process_counter(d, 777, 3.0);
    assert_eq!(jobs(d), Some(8.0));
    // Another process's fold leaves it alone.
    counter(d, 778, 1.0);
    mark_process_dead(d, 778).unwrap();
    assert_eq!(db_files(d), ["counter_777.db", "counter_aggregate.db"]);
    assert_eq!(jobs(d), Some(9.0));
    mark_process_dead(d, 777).unwrap();
    assert_eq!(db_files(d), ["counter_aggregate.db"]);
    assert_eq!(jobs(d), Some(9.0));
}

fn gauge(dir: &Path, pid: u32, mode: GaugeMode, v: f64) {
    write_as(dir, pid, |r| {
        r.gauge("level", "Level.", &[], mode)
            .with_label_values(&[])
            .unwrap()
            .set(v)
    });
}

/// Each value folded in turn, after the previous ones: the gauge as
/// exposed after each fold.
fn fold_in_turn(mode: GaugeMode, values: &[f64]) -> Vec<f64> {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut seen = Vec::new();
    for (i, &v) in values.iter().enumerate() {
        let pid = 900 + i as u32;
        gauge(d, pid, mode, v);
        mark_process_dead(d, pid).unwrap();
        assert_eq!(
            db_files(d),
            [format!("gauge_{}_aggregate.db", mode.as_str())]
        );
        seen.push(value_of(&ours(d), "level").expect("level"));
    }
    seen
}

#[test]
fn gauges_fold_by_their_mode() {
    assert_eq!(
        fold_in_turn(GaugeMode::Min, &[5.0, 3.0, 4.0, -1.0]),
        [5.0, 3.0, 3.0, -1.0]
    );
    assert_eq!(
        fold_in_turn(GaugeMode::Max, &[5.0, 3.0, 7.0, 6.0]),
        [5.0, 5.0, 7.0, 7.0]
    );
    assert_eq!(
        fold_in_turn(GaugeMode::Sum, &[5.0, 3.0, -1.0]),
        [5.0, 8.0, 7.0]
    );
    // Set in this order: the last one set wins, whatever the fold order.
    assert_eq!(
        fold_in_turn(GaugeMode::MostRecent, &[5.0, 3.0, 4.0]),
        [5.0, 3.0, 4.0]
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    gauge(d, 901, GaugeMode::MostRecent, 1.0);
    gauge(d, 902, GaugeMode::MostRecent, 2.0);
    mark_process_dead(d, 902).unwrap();
    mark_process_dead(d, 901).unwrap();
    assert_eq!(value_of(&ours(d), "level"), Some(2.0));
}

#[test]
fn live_and_all_gauges_vanish_and_the_others_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for mode in GaugeMode::ALL {
        write_as(d, 950, |r| {
            r.gauge(&format!("g_{}", mode.as_str()), "G.", &[], mode)
                .with_label_values(&[])
                .unwrap()
                .set(2.0)
        });
    }
    assert_eq!(db_files(d).len(), 10);
    mark_process_dead(d, 950).unwrap();
    assert_eq!(
        db_files(d),
        [
            "gauge_max_aggregate.db",
            "gauge_min_aggregate.db",
            "gauge_mostrecent_aggregate.db",
            "gauge_sum_aggregate.db",
        ]
    );
    let text = ours(d);
    for kept in ["min", "max", "sum", "mostrecent"] {
        assert_eq!(value_of(&text, &format!("g_{kept}")), Some(2.0), "{text}");
    }
}

/// The dead process's counter file is still there to be folded: under its
/// name, or set aside as `.counter_PID.folding` by a fold that failed after
/// claiming it (the next fold or scrape counts it once).
fn dead_file_kept(d: &std::path::Path, pid: u32) -> bool {
    d.join(format!("counter_{pid}.db")).is_file()
        || d.join(format!(".counter_{pid}.folding")).is_file()
}

#[test]
fn io_errors_on_the_dead_files_are_returned() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The dead process's counter file cannot be read.
    std::fs::create_dir(d.join("counter_801.db")).unwrap();
    let e = mark_process_dead(d, 801).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EISDIR), "{e}");
    std::fs::remove_dir(d.join("counter_801.db")).unwrap();

    // Its live gauge file cannot be removed.
    std::fs::create_dir_all(d.join("gauge_livesum_802.db/x")).unwrap();
    let e = mark_process_dead(d, 802).unwrap_err();
    assert!(
        matches!(e.raw_os_error(), Some(libc::EISDIR | libc::EPERM)),
        "{e}"
    );
    std::fs::remove_dir_all(d.join("gauge_livesum_802.db")).unwrap();

    // The aggregate cannot be read: nothing is overwritten.
    counter(d, 803, 4.0);
    // (Only regular files are read: a directory is refused by fstat.)
    std::fs::create_dir(d.join("counter_aggregate.db")).unwrap();
    let e = mark_process_dead(d, 803).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
    assert!(e.to_string().contains("a directory"), "{e}");
    assert!(dead_file_kept(d, 803));
    std::fs::remove_dir(d.join("counter_aggregate.db")).unwrap();

    // The aggregate cannot be opened (a symbolic link to itself): an
    // error, and nothing written over it.
    std::os::unix::fs::symlink("counter_aggregate.db", d.join("counter_aggregate.db")).unwrap();
    let e = mark_process_dead(d, 803).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
    assert!(e.to_string().contains("symbolic link"), "{e}");
    assert!(d.join("counter_aggregate.db").is_symlink());
    assert!(dead_file_kept(d, 803));
    std::fs::remove_file(d.join("counter_aggregate.db")).unwrap();

    // An aggregate that is not a metric file is kept, with an error.
    std::fs::write(
        d.join("counter_aggregate.db"),
        b"\x10\0\0\0\0\0\0\0garbage!",
    )
    .unwrap();
    let e = mark_process_dead(d, 803).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
    assert_eq!(
        std::fs::read(d.join("counter_aggregate.db")).unwrap(),
        b"\x10\0\0\0\0\0\0\0garbage!"
    );
    std::fs::remove_file(d.join("counter_aggregate.db")).unwrap();

    // Nothing of a process: fine. Then the folds work again.
    mark_process_dead(d, 804).unwrap();
    mark_process_dead(d, 803).unwrap();
    assert_eq!(db_files(d), ["counter_aggregate.db"]);
    assert_eq!(jobs(d), Some(4.0));
}

#[test]
fn a_dead_file_with_nothing_readable_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    counter(d, 810, 1.0);
    mark_process_dead(d, 810).unwrap();
    std::fs::write(d.join("counter_811.db"), b"abc").unwrap();
    mark_process_dead(d, 811).unwrap();
    assert_eq!(db_files(d), ["counter_aggregate.db"]);
    assert_eq!(jobs(d), Some(1.0));
}

#[test]
fn a_lock_file_name_taken_by_a_link_or_a_directory_stops_the_fold() {
    // The fold's lock file is opened without following a link: a symbolic
    // link planted at its name is an error, and its target is not created.
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("created-through-the-link");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    counter(d, 901, 3.0);
    std::os::unix::fs::symlink(&target, d.join(".ferrocorn-aggregate.lock")).unwrap();
    let e = mark_process_dead(d, 901).unwrap_err();
    assert!(e.to_string().contains("symbolic link"), "{e}");
    assert!(!target.exists(), "the lock was opened through the link");
    assert!(d.join("counter_901.db").is_file());
    std::fs::remove_file(d.join(".ferrocorn-aggregate.lock")).unwrap();

    // A directory at its name is refused, not locked in its place.
    std::fs::create_dir(d.join(".ferrocorn-aggregate.lock")).unwrap();
    assert!(mark_process_dead(d, 901).is_err());
    assert!(d.join("counter_901.db").is_file());
    std::fs::remove_dir(d.join(".ferrocorn-aggregate.lock")).unwrap();

    // With the name free again the fold runs.
    mark_process_dead(d, 901).unwrap();
    assert_eq!(jobs(d), Some(3.0));
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Runs `f` in a forked child process that may write only where the
/// files' modes let it: as root (whose writes ignore the modes) it first
/// becomes uid and gid 65534. What `f` returns comes back through a pipe.
fn unprivileged(f: impl FnOnce() -> String) -> String {
    in_child(
        || {
            // SAFETY: set*id have no memory-safety preconditions.
            let failed = unsafe {
                libc::geteuid() == 0
                    && (libc::setgroups(0, std::ptr::null()) != 0
                        || libc::setgid(65534) != 0
                        || libc::setuid(65534) != 0)
            };
            if failed {
                return Some(format!(
                    "cannot leave root: {}",
                    std::io::Error::last_os_error()
                ));
            }
            None
        },
        f,
    )
}

/// Runs `f` in a forked child process after `prepare` (which may say why
/// `f` cannot run instead). What they return comes back through a pipe.
fn in_child(prepare: impl FnOnce() -> Option<String>, f: impl FnOnce() -> String) -> String {
    use std::io::{Read, Write};
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: the child only runs `prepare` and `f` (system calls, file
    // I/O and allocation, which glibc keeps usable after a fork), writes
    // to the pipe and leaves with _exit, running no destructor of the
    // parent's.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: close has no memory-safety preconditions; fds[1] is the
        // pipe's write end, owned by this File alone.
        unsafe {
            libc::close(fds[0]);
            let out = prepare().unwrap_or_else(f);
            let mut w = std::fs::File::from_raw_fd(fds[1]);
            let ok = w.write_all(out.as_bytes()).is_ok();
            libc::_exit(if ok { 0 } else { 1 });
        }
    }
    // SAFETY: fds[1] is the write end, not used again here; fds[0] the
    // read end, owned by this File alone.
    let mut r = unsafe {
        libc::close(fds[1]);
        std::fs::File::from_raw_fd(fds[0])
    };
    let mut out = String::new();
    r.read_to_string(&mut out).unwrap();
    let mut status = 0;
    // SAFETY: `pid` is our child; `status` is an int for waitpid to fill.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child: status {status:#x}, {out}"
    );
    out
}

/// Mounts a tmpfs of `nr_inodes` inodes over `dir` in a mount namespace of
/// this (forked, single-threaded) process's own: as root, or as anyone in
/// a user namespace of its own where the kernel allows that. `Err` says why
/// it could not.
fn own_tmpfs(dir: &Path, nr_inodes: u32) -> Result<(), String> {
    use std::ffi::CString;
    let os = |what: &str| format!("{what}: {}", std::io::Error::last_os_error());
    // SAFETY: plain system calls on this process, with valid C strings.
    unsafe {
        let (uid, gid) = (libc::geteuid(), libc::getegid());
        if uid == 0 {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(os("unshare(CLONE_NEWNS)"));
            }
        } else {
            if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) != 0 {
                return Err(os("unshare(CLONE_NEWUSER | CLONE_NEWNS)"));
            }
            for (file, text) in [
                ("/proc/self/setgroups", "deny".to_string()),
                ("/proc/self/uid_map", format!("{uid} {uid} 1")),
                ("/proc/self/gid_map", format!("{gid} {gid} 1")),
            ] {
                std::fs::write(file, text).map_err(|e| format!("{file}: {e}"))?;
            }
        }
        // Nothing mounted here may reach the parent's namespace.
        let root = CString::new("/").unwrap();
        let rec_private = libc::MS_REC | libc::MS_PRIVATE;
        if libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            rec_private,
            std::ptr::null(),
        ) != 0
        {
            return Err(os("mount --make-rprivate /"));
        }
        let target = CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
        let fstype = CString::new("tmpfs").unwrap();
        let opts = CString::new(format!("size=1m,nr_inodes={nr_inodes},mode=0755")).unwrap();
        if libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            opts.as_ptr().cast(),
        ) != 0
        {
            return Err(os("mount -t tmpfs"));
        }
    }
    Ok(())
}

#[test]
fn a_full_filesystem_is_reported_not_taken_for_a_read_only_directory() {
    // A dead process's file on a filesystem with no inode left: the lock
    // file cannot be created, and not because the directory may not be
    // written. The fold says the disk is full (not "no lock file"), and a
    // scrape warns that it reads without the lock.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let r = in_child(
        || own_tmpfs(d, 16).err().map(|e| format!("SKIP {e}")),
        || {
            counter(d, 777, 5.0);
            let mut i = 0;
            let full = loop {
                match std::fs::File::create(d.join(format!("fill{i}"))) {
                    Ok(_) => i += 1,
                    Err(e) => break e,
                }
                assert!(i < 100, "a tmpfs of 16 inodes took 100 files");
            };
            assert_eq!(full.raw_os_error(), Some(libc::ENOSPC), "{full}");
            format!("{}\n{}", fold_report(d, 777), scrape_report(d))
        },
    );
    if let Some(why) = r.strip_prefix("SKIP ") {
        eprintln!("skipped: no mount namespace of our own here ({why})");
        return;
    }
    assert_eq!(
        r.lines().collect::<Vec<_>>(),
        [
            "StorageFull: No space left on device (os error 28)",
            "Some(5.0)",
            "cannot lock: No space left on device (os error 28); read without it"
        ],
        "{r}"
    );
}

/// A scrape of `dir`: `jobs_total` on the first line, then the reason of
/// each warning, one a line.
fn scrape_report(dir: &Path) -> String {
    let (families, warnings) = MultiProcessCollector::new(dir).collect_with_warnings();
    let mut text = Vec::new();
    encode_text(&families, &mut text);
    let mut out = format!(
        "{:?}",
        value_of(&String::from_utf8_lossy(&text), "jobs_total")
    );
    for w in warnings {
        out.push('\n');
        out.push_str(&w.reason);
    }
    out
}

/// `mark_process_dead(dir, pid)`'s result, as text.
fn fold_report(dir: &Path, pid: u32) -> String {
    match mark_process_dead(dir, pid) {
        Ok(()) => "Ok".into(),
        Err(e) => format!("{:?}: {e}", e.kind()),
    }
}

#[test]
fn a_directory_that_may_not_be_written_is_scraped_under_its_lock_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    counter(d, 960, 5.0);
    set_mode(&d.join("counter_960.db"), 0o444);
    set_mode(d, 0o555);

    // No lock file, and none can be made (so no fold can run here either):
    // the scrape reads without one, and does not warn.
    assert_eq!(unprivileged(|| scrape_report(d)), "Some(5.0)");
    let r = unprivileged(|| fold_report(d, 960));
    assert!(
        r.starts_with("NotFound:") && r.contains("cannot create"),
        "{r}"
    );

    // A lock file (left by an earlier fold) that may not be written is
    // opened read-only and locked: the scrape waits for a fold holding it.
    set_mode(d, 0o755);
    mark_process_dead(d, 1).unwrap();
    let lock = d.join(".ferrocorn-aggregate.lock");
    for name in [".ferrocorn-aggregate.lock", ".ferrocorn-aggregate.turn"] {
        set_mode(&d.join(name), 0o444);
    }
    set_mode(d, 0o555);
    let held = std::fs::File::open(&lock).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&held);
    // SAFETY: flock on a descriptor `held` owns.
    let rc = unsafe { libc::flock(fd, libc::LOCK_EX) };
    assert_eq!(rc, 0);
    let r = unprivileged(|| scrape_report(d));
    assert_eq!(
        r.lines().collect::<Vec<_>>(),
        ["Some(5.0)", "held by others for 500ms; read without it"],
        "{r}"
    );
    drop(held);
    assert_eq!(unprivileged(|| scrape_report(d)), "Some(5.0)");

    // A fold cannot set the dead file aside: the error is returned, the
    // file left as it was.
    let r = unprivileged(|| fold_report(d, 960));
    assert!(r.starts_with("PermissionDenied:"), "{r}");
    assert!(d.join("counter_960.db").is_file());

    // A lock file that cannot be opened at all: read without it, saying so.
    set_mode(&lock, 0o000);
    let r = unprivileged(|| scrape_report(d));
    assert_eq!(
        r.lines().collect::<Vec<_>>(),
        [
            "Some(5.0)",
            "cannot lock: Permission denied (os error 13); read without it"
        ],
        "{r}"
    );
    set_mode(&lock, 0o444);

    // A dead file the fold may set aside but not read: an error, and the
    // file kept (set aside, the next fold folds it), not deleted.
    set_mode(d, 0o777);
    counter(d, 961, 2.0);
    set_mode(&d.join("counter_961.db"), 0o000);
    let r = unprivileged(|| fold_report(d, 961));
    assert!(r.starts_with("PermissionDenied:"), "{r}");
    assert!(dead_file_kept(d, 961));
    let hidden = d.join(".counter_961.folding");
    if hidden.exists() {
        set_mode(&hidden, 0o644);
    } else {
        set_mode(&d.join("counter_961.db"), 0o644);
    }
    mark_process_dead(d, 961).unwrap();
    assert_eq!(db_files(d), ["counter_960.db", "counter_aggregate.db"]);
    assert_eq!(jobs(d), Some(7.0));
    set_mode(d, 0o755);
}

/// Takes `dir`'s fold lock as a scrape does (shared), until dropped.
fn hold_shared(dir: &Path) -> std::fs::File {
    let f = std::fs::File::open(dir.join(".ferrocorn-aggregate.lock")).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
    // SAFETY: flock on a descriptor `f` owns.
    let rc = unsafe { libc::flock(fd, libc::LOCK_SH) };
    assert_eq!(rc, 0);
    f
}

#[test]
fn a_fold_waits_for_a_scrape_holding_the_lock_then_gives_up_after_2s() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    mark_process_dead(d, 1).unwrap(); // makes the lock file
    counter(d, 970, 1.0);
    counter(d, 971, 2.0);

    // A scrape holding the lock for a moment: the fold waits for it.
    let held = hold_shared(d);
    let start = std::time::Instant::now();
    let release = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(200));
        drop(held);
    });
    mark_process_dead(d, 970).unwrap();
    assert!(start.elapsed() >= std::time::Duration::from_millis(200));
    release.join().unwrap();
    assert_eq!(db_files(d), ["counter_971.db", "counter_aggregate.db"]);

    // Held for longer than the fold waits: it gives up, changing nothing.
    let held = hold_shared(d);
    let start = std::time::Instant::now();
    let e = mark_process_dead(d, 971).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
    assert!(e.to_string().contains("held by others for 2s"), "{e}");
    assert!(start.elapsed() >= std::time::Duration::from_secs(2));
    assert_eq!(db_files(d), ["counter_971.db", "counter_aggregate.db"]);
    drop(held);
    mark_process_dead(d, 971).unwrap();
    assert_eq!(db_files(d), ["counter_aggregate.db"]);
    assert_eq!(jobs(d), Some(3.0));
}

#[test]
fn a_live_gauge_under_a_hidden_folding_name_is_not_read() {
    // A fold sets aside only the files it folds: a `live*` or `all` gauge
    // file under a hidden `.folding` name is nothing a fold left, and a
    // scrape does not count it (a folded kind's is counted, see
    // `an_interrupted_fold_counts_once_and_the_next_call_finishes_it`).
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    gauge(d, 990, GaugeMode::LiveSum, 3.0);
    std::fs::rename(
        d.join("gauge_livesum_990.db"),
        d.join(".gauge_livesum_990.folding"),
    )
    .unwrap();
    gauge(d, 991, GaugeMode::LiveSum, 1.0);
    assert_eq!(value_of(&ours(d), "level"), Some(1.0));
    mark_process_dead(d, 992).unwrap();
    assert!(d.join(".gauge_livesum_990.folding").is_file());
    assert_eq!(value_of(&ours(d), "level"), Some(1.0));
}
