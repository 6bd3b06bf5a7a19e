//! `mark_process_dead` at its edges, without Python or sockets: a fold
//! interrupted after the aggregate was replaced and before the dead file was
//! deleted (counted once, finished by the next call, a reused pid left
//! alone), gauges folded by mode, and I/O errors returned, not swallowed.
//!
//! These are the fast tests `just mutants` runs against `src/aggregate.rs`.

mod common;

use std::path::Path;

use common::{db_files, ours, value_of};
use ferrocorn_shm_metrics::{GaugeMode, Registry, mark_process_dead};

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
}

#[test]
fn a_new_file_under_a_folded_name_is_not_taken_for_the_folded_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    counter(d, 777, 5.0);
    mark_process_dead(d, 777).unwrap();
    // A new process 777 (the same pid, another file).
    counter(d, 777, 3.0);
    let f = std::fs::File::options()
        .write(true)
        .open(d.join("counter_777.db"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        .unwrap();
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
