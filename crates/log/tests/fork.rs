//! Logs built before a `fork` still stamp each process's own pid: the pid is
//! cached (getpid is a system call) and a fork child handler clears the cache.
//!
//! The forking runs in a fresh process (this test binary re-run on the
//! helper test alone), never in the multi-threaded test harness itself.

use std::path::Path;
use std::process::Command;

use ferrocorn_log::{Destination, Format, Level, LogConfig, Logs};

const HELPER_ENV: &str = "FERROCORN_LOG_FORK_HELPER";

fn format() -> Format {
    if cfg!(feature = "structured") {
        Format::Json
    } else {
        Format::Plain
    }
}

/// In the helper process: log, fork, log in the child, log in the parent.
fn fork_and_log(path: &Path) {
    let logs = Logs::new(&LogConfig {
        format: format(),
        level: Level::Info,
        error_log: Destination::File(path.to_path_buf()),
        ..LogConfig::default()
    })
    .unwrap();
    slog::info!(logs.error(), "parent before fork");
    // SAFETY: the helper process runs only this test; in the child we log
    // (no lock is held by another thread at the fork) and leave with _exit.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork failed");
    if child == 0 {
        slog::info!(logs.error(), "child");
        // SAFETY: _exit ends the child without running the parent's atexit
        // handlers or the test harness.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waits for the child we just forked; `status` is a valid pointer.
    let r = unsafe { libc::waitpid(child, &mut status, 0) };
    assert_eq!(r, child);
    slog::info!(logs.error(), "parent after fork");
}

#[test]
fn fork_helper() {
    if let Some(path) = std::env::var_os(HELPER_ENV) {
        fork_and_log(Path::new(&path));
    }
}

fn pid_of(line: &str) -> u32 {
    if let Some(rest) = line.split_once("\"pid\":") {
        rest.1
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    } else {
        // [date] [pid] [INFO] ...
        let rest = line.split_once("] [").unwrap().1;
        rest.split_once(']').unwrap().0.parse().unwrap()
    }
}

#[test]
fn child_lines_carry_the_child_pid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("error.log");
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "fork_helper", "--test-threads=1"])
        .env(HELPER_ENV, &path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    let (before, child, after) = (lines[0], lines[1], lines[2]);
    assert!(
        before.contains("parent before fork") && child.contains("child"),
        "{text}"
    );
    assert!(after.contains("parent after fork"), "{text}");
    assert_eq!(pid_of(before), pid_of(after));
    assert_ne!(pid_of(before), pid_of(child), "{text}");
    assert_ne!(pid_of(child), std::process::id());
}
