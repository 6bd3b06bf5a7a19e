//! File destinations: appending, sharing, and reopening after a rename
//! (logrotate's `create` mode followed by SIGUSR1) without losing a line.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ferrocorn_log::{Destination, Format, Level, LogConfig, Logs};

fn file_logs(format: Format, error: &Path, access: Option<&Path>) -> Logs {
    let config = LogConfig {
        format,
        level: Level::Info,
        error_log: Destination::File(error.to_path_buf()),
        access_log: access.map(|p| Destination::File(p.to_path_buf())),
        ..LogConfig::default()
    };
    Logs::new(&config).unwrap()
}

fn read_lines(path: &Path) -> Vec<String> {
    match std::fs::read_to_string(path) {
        Ok(s) => s.lines().map(str::to_owned).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("{}: {e}", path.display()),
    }
}

#[test]
fn files_are_appended_not_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("error.log");
    std::fs::write(&path, "earlier line\n").unwrap();
    let logs = file_logs(Format::Plain, &path, None);
    slog::info!(logs.error(), "new line");
    let lines = read_lines(&path);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0], "earlier line");
    assert!(lines[1].ends_with("[INFO] new line"));
}

#[test]
fn error_and_access_can_share_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("all.log");
    let logs = file_logs(Format::Plain, &path, Some(&path));
    slog::info!(logs.error(), "error line");
    logs.access().unwrap().log(&common::record());
    let lines = read_lines(&path);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].ends_with("error line"));
    assert!(lines[1].starts_with("127.0.0.1 - user ["));
}

/// For a forked child that opens its own logs (issue 19): the parent's
/// files are closed, later lines dropped and counted, reopen keeps them
/// closed.
#[test]
fn close_files_gives_up_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("error.log");
    let logs = file_logs(Format::Plain, &path, None);
    slog::info!(logs.error(), "before");
    let fds = || {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t == path))
            .count()
    };
    assert_eq!(fds(), 1);
    logs.close_files();
    assert_eq!(fds(), 0, "the descriptor is closed");
    slog::info!(logs.error(), "after");
    logs.reopen().unwrap();
    slog::info!(logs.error(), "after reopen");
    assert_eq!(fds(), 0);
    assert_eq!(read_lines(&path).len(), 1);
    assert_eq!(logs.dropped_lines(), 2);
}

#[test]
fn missing_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no/such/dir/error.log");
    let config = LogConfig {
        error_log: Destination::File(path),
        ..LogConfig::default()
    };
    let err = Logs::new(&config).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    assert!(err.to_string().contains("no/such/dir/error.log"), "{err}");
}

#[test]
fn reopen_moves_to_the_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let rotated = dir.path().join("access.log.1");
    let logs = file_logs(Format::Plain, &dir.path().join("error.log"), Some(&path));
    let access = logs.access().unwrap();
    access.log(&common::record());
    std::fs::rename(&path, &rotated).unwrap();
    access.log(&common::record()); // still the old (renamed) file
    logs.reopen().unwrap();
    access.log(&common::record());
    assert_eq!(read_lines(&rotated).len(), 2);
    assert_eq!(read_lines(&path).len(), 1);
}

#[test]
fn reopen_writes_held_lines_to_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let rotated = dir.path().join("access.log.1");
    let logs = file_logs(Format::Plain, &dir.path().join("error.log"), Some(&path));
    let access = logs.access().unwrap();
    let held = ferrocorn_log::HeldLines::new();
    access.log(&common::record());
    access.log(&common::record());
    assert!(!held.is_empty());
    std::fs::rename(&path, &rotated).unwrap();
    logs.reopen().unwrap();
    assert!(held.is_empty());
    access.log(&common::record());
    drop(held);
    assert_eq!(read_lines(&rotated).len(), 2);
    assert_eq!(read_lines(&path).len(), 1);
}

#[test]
fn reopen_under_load_loses_no_line() {
    const THREADS: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("error.log");
    let logs = file_logs(Format::Plain, &path, None);
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..THREADS)
        .map(|t| {
            let logs = logs.clone();
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    slog::info!(logs.error(), "line"; "thread" => t, "n" => n);
                    n += 1;
                }
                n
            })
        })
        .collect();
    // Rotate a few times while the writers run, each time after the current
    // file has received some lines.
    let mut rotated = Vec::new();
    for i in 0..5 {
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) < 4096 {
            assert!(Instant::now() < deadline, "writers made no progress");
            std::thread::sleep(Duration::from_millis(1));
        }
        let to = dir.path().join(format!("error.log.{i}"));
        std::fs::rename(&path, &to).unwrap();
        rotated.push(to);
        logs.reopen().unwrap();
    }
    // The last file gets a line too before the writers stop (stopping at
    // once sometimes left it empty).
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "writers made no progress");
        std::thread::sleep(Duration::from_millis(1));
    }
    stop.store(true, Ordering::Relaxed);
    let written: Vec<u64> = writers.into_iter().map(|w| w.join().unwrap()).collect();

    let mut seen = vec![Vec::new(); THREADS];
    for file in rotated.iter().chain([&path]) {
        let lines = read_lines(file);
        assert!(!lines.is_empty(), "{} got no line", file.display());
        for line in lines {
            // Every line whole: "[date] [pid] [INFO] line thread=T n=N".
            let (_, kv) = line
                .split_once("[INFO] line thread=")
                .unwrap_or_else(|| panic!("torn line {line:?}"));
            let (t, n) = kv.split_once(" n=").unwrap();
            seen[t.parse::<usize>().unwrap()].push(n.parse::<u64>().unwrap());
        }
    }
    for (t, mut ns) in seen.into_iter().enumerate() {
        ns.sort_unstable();
        let want: Vec<u64> = (0..written[t]).collect();
        assert_eq!(ns.len(), want.len(), "thread {t}: lines lost or doubled");
        assert_eq!(ns, want, "thread {t}");
    }
    assert_eq!(logs.dropped_lines(), 0);
}

#[test]
fn reopen_failure_keeps_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let path = sub.join("error.log");
    let logs = file_logs(Format::Plain, &path, None);
    slog::info!(logs.error(), "one");
    let moved = dir.path().join("moved");
    std::fs::rename(&sub, &moved).unwrap(); // the path's directory is gone
    assert!(logs.reopen().is_err());
    slog::info!(logs.error(), "two");
    assert_eq!(read_lines(&moved.join("error.log")).len(), 2);
}
