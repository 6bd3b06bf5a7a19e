//! Held access-log lines (`HeldLines`): written together, in order, when
//! flushed, at 64 KiB, when the guard goes and when the thread ends; never
//! error-log lines; and never torn when many processes share one pipe.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};

use ferrocorn_log::{
    AccessRecord, DEFAULT_ACCESS_LOG_FORMAT, Destination, Format, HeldLines, Level, LogConfig, Logs,
};

fn log_path(logs: &Logs, path: &str) {
    let rec = AccessRecord {
        target: path,
        path,
        query: "",
        ..common::record()
    };
    logs.access().expect("access log").log(&rec);
}

fn formats() -> Vec<Format> {
    let mut f = vec![Format::Plain];
    if cfg!(feature = "structured") {
        f.extend([Format::Console, Format::Json]);
    }
    f
}

#[test]
fn held_lines_wait_for_flush_and_keep_their_order() {
    for format in formats() {
        let (logs, error, access) = common::memory_logs(format, Level::Info);
        let held = HeldLines::new();
        for i in 0..10 {
            log_path(&logs, &format!("/held/{i}"));
        }
        slog::info!(logs.error(), "error lines are not held");
        assert_eq!(
            access.lines().len(),
            0,
            "{format}: written before the flush"
        );
        assert_eq!(error.lines().len(), 1, "{format}: the error line was held");
        held.flush();
        let lines = access.lines();
        assert_eq!(lines.len(), 10, "{format}: {lines:?}");
        for (i, line) in lines.iter().enumerate() {
            assert!(
                line.contains(&format!("/held/{i} ")),
                "{format}: line {i}: {line}"
            );
        }
        drop(held);
        // Without a guard, each line is written at once.
        log_path(&logs, "/after");
        assert_eq!(access.lines().len(), 11, "{format}");
    }
}

#[test]
fn dropping_the_guard_writes_what_is_held() {
    let (logs, _error, access) = common::memory_logs(Format::Plain, Level::Info);
    let held = HeldLines::new();
    log_path(&logs, "/a");
    log_path(&logs, "/b");
    assert!(access.lines().is_empty());
    drop(held);
    assert_eq!(access.lines().len(), 2);
}

#[test]
fn logs_flush_writes_this_threads_held_lines() {
    let (logs, _error, access) = common::memory_logs(Format::Plain, Level::Info);
    let _held = HeldLines::new();
    log_path(&logs, "/a");
    assert!(access.lines().is_empty());
    logs.flush();
    assert_eq!(access.lines().len(), 1);
}

#[test]
fn held_lines_are_written_at_64_kib() {
    let (logs, _error, access) = common::memory_logs(Format::Plain, Level::Info);
    let held = HeldLines::new();
    let long = format!("/{}", "x".repeat(1000));
    let mut n = 0;
    while access.lines().is_empty() {
        log_path(&logs, &long);
        n += 1;
        assert!(n <= 70, "more than 64 KiB held");
    }
    let written = access.contents().len();
    assert!(written >= 64 * 1024, "written at {written} bytes");
    assert_eq!(
        access.lines().len(),
        n,
        "the line that passed 64 KiB is written too"
    );
    drop(held);
}

#[test]
fn a_thread_that_ends_writes_its_held_lines() {
    let (logs, _error, access) = common::memory_logs(Format::Plain, Level::Info);
    let logs2 = logs.clone();
    std::thread::spawn(move || {
        // Even when the guard is never dropped: the thread's own state is.
        std::mem::forget(HeldLines::new());
        log_path(&logs2, "/from-thread");
    })
    .join()
    .unwrap();
    assert_eq!(access.lines().len(), 1);
}

#[test]
fn guards_nest() {
    let (logs, _error, access) = common::memory_logs(Format::Plain, Level::Info);
    let outer = HeldLines::new();
    {
        let _inner = HeldLines::new();
        log_path(&logs, "/a");
    }
    // The inner guard wrote what was held; the outer one still holds.
    assert_eq!(access.lines().len(), 1);
    log_path(&logs, "/b");
    assert_eq!(access.lines().len(), 1);
    drop(outer);
    assert_eq!(access.lines().len(), 2);
}

const PIPE_HELPER_ENV: &str = "FERROCORN_LOG_PIPE_HELPER";
const PIPE_LINES: usize = 3000;

/// In a helper process: many access lines to stdout, held and flushed in
/// batches of about 40 KiB.
#[test]
fn pipe_helper() {
    let Ok(id) = std::env::var(PIPE_HELPER_ENV) else {
        return;
    };
    let logs = Logs::new(&LogConfig {
        format: Format::Json,
        level: Level::Info,
        error_log: "-".parse().unwrap(),
        access_log: Some("-".parse().unwrap()),
        ..LogConfig::default()
    })
    .unwrap();
    let pad = "p".repeat(150);
    let held = HeldLines::new();
    for i in 0..PIPE_LINES {
        log_path(&logs, &format!("/{id}/{i}/{pad}"));
        if i % 128 == 127 {
            held.flush();
        }
    }
    drop(held);
}

/// Two processes write held batches (far larger than `PIPE_BUF`) to one
/// pipe at the same time, as workers do to a container's stdout: every line
/// arrives whole, and each process's lines in order.
#[test]
fn processes_sharing_a_pipe_never_tear_a_line() {
    if !cfg!(feature = "structured") {
        return;
    }
    let (mut reader, writer) = std::io::pipe().unwrap();
    let mut children = Vec::new();
    for id in ["a", "b"] {
        children.push(
            Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "pipe_helper", "--test-threads=1", "--quiet"])
                .env(PIPE_HELPER_ENV, id)
                .stdout(writer.try_clone().unwrap())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    drop(writer);
    let mut out = String::new();
    reader.read_to_string(&mut out).unwrap();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let mut next = [0usize; 2];
    let mut count = 0;
    // The test harness of each helper writes to the same pipe (`.` without a
    // newline, `test result: ...`): what precedes a line's `{` is its output.
    for line in out.lines().filter_map(|l| l.find('{').map(|i| &l[i..])) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("a torn line ({e}): {line:?}"));
        let path = v["path"].as_str().expect("path");
        let mut parts = path.split('/').skip(1);
        let who = match parts.next() {
            Some("a") => 0,
            Some("b") => 1,
            other => panic!("unknown writer {other:?} in {line:?}"),
        };
        let i: usize = parts.next().unwrap().parse().unwrap();
        assert_eq!(i, next[who], "lines of one process out of order");
        next[who] += 1;
        count += 1;
    }
    assert_eq!(count, 2 * PIPE_LINES, "lines lost");
}

/// Issue 19: a line longer than `PIPE_BUF` written to a pipe is not placed
/// atomically (another worker's line may land inside it), so it is cut to
/// `PIPE_BUF` bytes ending in `[...N bytes cut]`; an access line in JSON
/// stays valid JSON with every key. A regular file gets the whole line, and
/// an error line is never cut.
#[test]
fn long_lines_to_a_pipe_are_cut_to_pipe_buf() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let status = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    let agent = "a".repeat(8000);
    let path = format!("/{}", "p\"".repeat(2500));
    let target = format!("{path}?q=1");
    let headers: &[(&str, &[u8])] = &[("User-Agent", agent.as_bytes())];
    let rec = AccessRecord {
        path: &path,
        target: &target,
        request_headers: headers,
        ..common::record()
    };
    let formats: &[Format] = if cfg!(feature = "structured") {
        &[Format::Plain, Format::Json, Format::Console]
    } else {
        &[Format::Plain]
    };
    for &format in formats {
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read_to_string(fifo).unwrap())
        };
        let logs = Logs::new(&LogConfig {
            format,
            level: Level::Info,
            error_log: Destination::File(fifo.clone()),
            access_log: Some(Destination::File(fifo.clone())),
            access_log_format: DEFAULT_ACCESS_LOG_FORMAT.to_string(),
            ..LogConfig::default()
        })
        .unwrap();
        logs.access().unwrap().log(&rec);
        slog::info!(logs.error(), "{}", "e".repeat(6000));
        {
            let held = HeldLines::new();
            logs.access().unwrap().log(&rec);
            logs.access().unwrap().log(&common::record());
            held.flush();
        }
        drop(logs);
        let out = reader.join().unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{format:?}: {out:.500}");
        for (i, line) in lines.iter().enumerate() {
            if i == 1 {
                // An error line stays whole (a traceback's end matters).
                assert!(
                    line.len() > 6000 && !line.contains("bytes cut]"),
                    "{line:.300}"
                );
                continue;
            }
            assert!(line.len() < 4096, "{format:?}: {} bytes", line.len());
            if i == 3 {
                assert!(line.contains("GET /search"), "{line}");
                continue;
            }
            assert!(line.contains(" bytes cut]"), "{format:?}: {line:.300}");
            if format == Format::Json {
                let v: serde_json::Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {line:.300}"));
                assert_eq!(v["status"], 200);
                assert_eq!(v["level"], "info");
                assert!(v["event"].as_str().unwrap().ends_with(" bytes cut]"));
                assert!(v["path"].as_str().unwrap().ends_with(" bytes cut]"));
            }
        }
    }

    // A regular file: every byte.
    let file = dir.path().join("access.log");
    let logs = Logs::new(&LogConfig {
        format: Format::Plain,
        access_log: Some(Destination::File(file.clone())),
        ..LogConfig::default()
    })
    .unwrap();
    logs.access().unwrap().log(&rec);
    drop(logs);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        !text.contains("bytes cut]") && text.contains(&agent),
        "{text:.300}"
    );
}
