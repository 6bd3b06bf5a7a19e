//! Folds against scrapes across processes, and folds killed at every point:
//! a scrape never counts a sample twice or misses one. The folding and the
//! scraping processes are this test binary re-executed.

#[allow(unused)]
mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use ferrocorn_shm_metrics::{MultiProcessCollector, mark_process_dead};

/// The bytes of a metric file holding one counter sample `race_total`
/// with `value`, laid out as prometheus_client writes it (4096 bytes).
/// Returns the bytes and the value's offset.
fn counter_file(value: f64) -> (Vec<u8>, usize) {
    let key = br#"["race", "race_total", {}, "Raced."]"#;
    let mut out = vec![0u8; 8];
    out.extend_from_slice(&(key.len() as i32).to_ne_bytes());
    out.extend_from_slice(key);
    out.extend(std::iter::repeat_n(b' ', 8 - (key.len() + 4) % 8));
    let at = out.len();
    out.extend_from_slice(&value.to_ne_bytes());
    out.extend_from_slice(&0f64.to_ne_bytes());
    let used = out.len() as i32;
    out[..4].copy_from_slice(&used.to_ne_bytes());
    out.resize(4096, 0);
    (out, at)
}

fn write_counter(dir: &Path, id: u32, value: f64) {
    std::fs::write(dir.join(format!("counter_{id}.db")), counter_file(value).0).unwrap();
}

/// `race_total` as scraped by `collector`.
fn total(collector: &MultiProcessCollector) -> Option<f64> {
    let mut out = Vec::new();
    collector.encode_text_to(&mut out);
    common::value_of(std::str::from_utf8(&out).unwrap(), "race_total")
}

fn child(name: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        name,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    cmd
}

/// Folds ids `FC_FOLD_FROM..FC_FOLD_TO` of `FC_FOLD_DIR`, one by one. With
/// `FC_FOLD_CREATE`, first creates each one's file (worth 1), counting the
/// files (`FC_FOLD_BASE` more) in `started` before and in `created` after.
#[test]
#[ignore]
fn child_fold() {
    let Some(dir) = std::env::var_os("FC_FOLD_DIR") else {
        return;
    };
    let dir = Path::new(&dir);
    let create = std::env::var_os("FC_FOLD_CREATE").is_some();
    let var = |n: &str| -> u32 { std::env::var(n).unwrap().parse().unwrap() };
    let from = var("FC_FOLD_FROM");
    for id in from..var("FC_FOLD_TO") {
        if create {
            let count = (id - from + 1 + var("FC_FOLD_BASE")).to_string();
            let publish = |name: &str, bytes: &[u8]| {
                // Appears whole: written under another name, then renamed.
                std::fs::write(dir.join("new.tmp"), bytes).unwrap();
                std::fs::rename(dir.join("new.tmp"), dir.join(name)).unwrap();
            };
            publish("started", count.as_bytes());
            publish(&format!("counter_{id}.db"), &counter_file(1.0).0);
            publish("created", count.as_bytes());
        }
        mark_process_dead(dir, id).unwrap();
    }
}

/// Scrapes `FC_SCRAPE_DIR` until `FC_SCRAPE_DIR/stop` exists: each
/// scrape's `race_total` must lie between the files created before it
/// started and those started when it ended; prints the counts.
#[test]
#[ignore]
fn child_scrape_loop() {
    let Some(dir) = std::env::var_os("FC_SCRAPE_DIR") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let count = |name: &str| -> f64 {
        std::fs::read_to_string(dir.join(name)).map_or(0.0, |s| s.trim().parse().unwrap())
    };
    // A long-lived collector (as the supervisor keeps), and now and then a
    // fresh one (as `ferrocorn metrics DIR`).
    let kept = MultiProcessCollector::new(&dir);
    let (mut scrapes, mut wrong) = (0u64, Vec::new());
    loop {
        // The test also stops it by removing the directory (a failed
        // assertion drops it): a scraper must not outlive its test.
        let stop = dir.join("stop").exists() || !dir.is_dir();
        let before = count("created");
        let got = if scrapes % 16 == 15 {
            total(&MultiProcessCollector::new(&dir))
        } else {
            total(&kept)
        }
        .unwrap_or(0.0);
        let after = count("started");
        scrapes += 1;
        if got < before || got > after {
            wrong.push((before, got, after));
        }
        if scrapes == 1 {
            std::fs::write(dir.join("scraping"), b"").unwrap();
        }
        if stop {
            break;
        }
    }
    println!(
        "SCRAPES={scrapes} WRONG={} FIRST_WRONG(before,got,after)={:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
}

/// A folding process folding files present and then creating and folding
/// files one at a time, and a scraping process on the same directory: no
/// scrape may count a file twice or miss one.
fn race(root: &Path) {
    // Files created and folded one at a time, files present at the start
    // and folded, and files never folded (a long listing for each scrape).
    let (n, present, live) = (800u32, 400u32, 1000u32);
    const FIRST: u32 = 5_000_000; // above any pid_max
    let dir = tempfile::tempdir_in(root).unwrap();
    let d = dir.path();
    // Files of live processes (never folded: a long listing for every
    // scrape) and of processes already gone, to fold while scrapes run.
    for id in FIRST - live - present..FIRST {
        write_counter(d, id, 1.0);
    }
    std::fs::write(d.join("created"), (live + present).to_string()).unwrap();
    std::fs::write(d.join("started"), (live + present).to_string()).unwrap();
    let scraper = child("child_scrape_loop")
        .env("FC_SCRAPE_DIR", d)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    common::wait_until(Duration::from_secs(60), "the first scrape", || {
        d.join("scraping").exists()
    });
    let folded = child("child_fold")
        .env("FC_FOLD_DIR", d)
        .env("FC_FOLD_FROM", (FIRST - present).to_string())
        .env("FC_FOLD_TO", FIRST.to_string())
        .output()
        .unwrap();
    assert!(
        folded.status.success(),
        "the fold failed: {}",
        String::from_utf8_lossy(&folded.stderr)
    );
    let folded = child("child_fold")
        .env("FC_FOLD_DIR", d)
        .env("FC_FOLD_CREATE", "1")
        .env("FC_FOLD_BASE", (live + present).to_string())
        .env("FC_FOLD_FROM", FIRST.to_string())
        .env("FC_FOLD_TO", (FIRST + n).to_string())
        .output()
        .unwrap();
    std::fs::write(d.join("stop"), b"").unwrap();
    let out = scraper.wait_with_output().unwrap();
    assert!(
        folded.status.success(),
        "the fold failed: {}",
        String::from_utf8_lossy(&folded.stderr)
    );
    assert!(out.status.success());
    let out = String::from_utf8(out.stdout).unwrap();
    let line = out
        .lines()
        .find_map(|l| l.split_once("SCRAPES=").map(|(_, r)| r.to_string()))
        .unwrap_or_else(|| panic!("no counts in {out}"));
    let scrapes: u64 = line.split(' ').next().unwrap().parse().unwrap();
    eprintln!("{}: SCRAPES={line}", root.display());
    assert!(line.contains(" WRONG=0 "), "{line}");
    // Enough scrapes overlapped the folds for the race to be a race.
    assert!(scrapes >= 100, "{line}");
    assert_eq!(common::db_files(d).len(), live as usize + 1);
    assert_eq!(
        total(&MultiProcessCollector::new(d)),
        Some(f64::from(live + present + n))
    );
}

#[test]
fn fold_and_scrape_race_on_tmpfs() {
    race(Path::new("/dev/shm"));
}

#[test]
fn fold_and_scrape_race_on_disk() {
    race(Path::new(env!("CARGO_TARGET_TMPDIR")));
}

/// Whether strace can trace and inject signals here.
fn strace_works() -> bool {
    Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "true"])
        .status()
        .is_ok_and(|s| s.success())
}

const DEAD: u32 = 4_000_001;

/// A directory with an aggregate of 100 (a real fold) and the dead
/// process's file of 13, last written an hour ago.
fn crash_fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_counter(dir.path(), 4_000_000, 100.0);
    mark_process_dead(dir.path(), 4_000_000).unwrap();
    write_counter(dir.path(), DEAD, 13.0);
    let f = std::fs::File::options()
        .write(true)
        .open(dir.path().join(format!("counter_{DEAD}.db")))
        .unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    dir
}

/// Folds `DEAD` in a child process under strace; `inject` kills it at
/// the entry of the n-th call of a system call.
fn fold_under_strace(dir: &Path, strace_args: &[&str]) -> std::process::Output {
    let exe = std::env::current_exe().unwrap();
    Command::new("strace")
        .args(["-f", "-qq"])
        .args(strace_args)
        .arg(exe)
        .args([
            "--exact",
            "child_fold",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("FC_FOLD_DIR", dir)
        .env("FC_FOLD_FROM", DEAD.to_string())
        .env("FC_FOLD_TO", (DEAD + 1).to_string())
        .output()
        .unwrap()
}

/// A new process that got the dead one's pid adds 1: it continues the
/// file of that name if there is one (as prometheus_client and our writer
/// do), or starts a new one.
fn pid_reused_adds_one(dir: &Path) {
    let path = dir.join(format!("counter_{DEAD}.db"));
    match std::fs::File::options().read(true).write(true).open(&path) {
        Ok(f) => {
            let at = counter_file(0.0).1 as u64;
            let mut v = [0u8; 8];
            f.read_exact_at(&mut v, at).unwrap();
            let v = f64::from_ne_bytes(v) + 1.0;
            f.write_all_at(&v.to_ne_bytes(), at).unwrap();
        }
        Err(_) => write_counter(dir, DEAD, 1.0),
    }
}

const SYSCALLS: &str = "rename,renameat,renameat2,unlink,unlinkat,openat,write";

#[test]
fn a_fold_killed_at_any_point_then_a_reused_pid_count_every_sample_once() {
    if !strace_works() {
        eprintln!("SKIPPED: strace cannot trace here");
        return;
    }
    // The fold's system calls that change the directory, in order.
    let probe = crash_fixture();
    let trace = probe.path().join("trace.txt");
    let out = fold_under_strace(
        probe.path(),
        &[
            "-e",
            &format!("trace={SYSCALLS}"),
            "-o",
            trace.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let trace = std::fs::read_to_string(&trace).unwrap();
    // Each call after the fold opened its lock file (the test harness's
    // own come before) is a crash point: strace counts the calls of each
    // system call in each thread from its start.
    let names: Vec<&str> = SYSCALLS.split(',').collect();
    let mut counts = std::collections::BTreeMap::<(String, String), usize>::new();
    let mut in_fold = false;
    let mut crash_points = Vec::new();
    for l in trace.lines().filter(|l| !l.contains("resumed>")) {
        let Some(call) = l
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.split('(').next())
        else {
            continue;
        };
        if !names.contains(&call) {
            continue;
        }
        let tid = l.split_whitespace().next().unwrap_or("").to_string();
        let n = counts.entry((tid, call.to_string())).or_default();
        *n += 1;
        in_fold |= l.contains(".ferrocorn-aggregate.lock");
        if in_fold {
            crash_points.push((call.to_string(), *n));
        }
    }
    assert!(
        crash_points.iter().any(|(c, _)| c.starts_with("rename")),
        "{trace}"
    );
    assert!(crash_points.len() >= 4, "{crash_points:?}");
    eprintln!("crash points: {crash_points:?}");
    for (call, n) in crash_points {
        let dir = crash_fixture();
        let d = dir.path();
        let out = fold_under_strace(
            d,
            &[
                "-o",
                "/dev/null",
                "-e",
                &format!("trace={call}"),
                "-e",
                &format!("inject={call}:signal=KILL:when={n}"),
            ],
        );
        assert!(!out.status.success(), "not killed at {call} #{n}");
        let at = format!("killed before {call} #{n}");
        // Right after the crash, then after a new process reused the pid,
        // then after that one was folded too and after another fold.
        assert_eq!(total(&MultiProcessCollector::new(d)), Some(113.0), "{at}");
        pid_reused_adds_one(d);
        assert_eq!(total(&MultiProcessCollector::new(d)), Some(114.0), "{at}");
        mark_process_dead(d, DEAD).unwrap();
        assert_eq!(total(&MultiProcessCollector::new(d)), Some(114.0), "{at}");
        mark_process_dead(d, DEAD + 1).unwrap();
        assert_eq!(total(&MultiProcessCollector::new(d)), Some(114.0), "{at}");
        assert_eq!(
            common::db_files(d),
            vec!["counter_aggregate.db".to_string()],
            "{at}"
        );
        let hidden: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".folding") || n.ends_with(".tmp"))
            .collect();
        assert!(hidden.is_empty(), "{at}: {hidden:?}");
    }
}
