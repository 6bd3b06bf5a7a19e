//! Metric directories written by someone else: FIFOs, symbolic links,
//! corrupt headers, NaN bucket bounds, and folds racing scrapes or crashing.
//! The reader must never hang, balloon or die, and never count a sample
//! twice or miss one. Scrapes run in a child process (this test binary
//! re-executed), so that a hang is a timeout and memory is its own peak RSS.

#[allow(unused)]
mod common;

use std::io::Read;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferrocorn_shm_metrics::{MultiProcessCollector, mark_process_dead};

/// The bytes of a metric file holding one counter sample `name_total` with
/// `value`, laid out as prometheus_client writes it (4096 bytes).
fn counter_file(name: &str, value: f64) -> Vec<u8> {
    let key = format!("[\"{name}\", \"{name}_total\", {{}}, \"h\"]");
    let mut out = vec![0u8; 8];
    out.extend_from_slice(&(key.len() as i32).to_ne_bytes());
    out.extend_from_slice(key.as_bytes());
    let pad = 8 - (key.len() + 4) % 8;
    out.extend(std::iter::repeat_n(b' ', pad));
    out.extend_from_slice(&value.to_ne_bytes());
    out.extend_from_slice(&0f64.to_ne_bytes());
    let used = out.len() as i32;
    out[..4].copy_from_slice(&used.to_ne_bytes());
    out.resize(4096, 0);
    out
}

/// What a scrape in a child process gave.
struct Scraped {
    text: String,
    warnings: String,
    /// The child's peak resident set, in KiB.
    max_rss_kib: i64,
    took: Duration,
}

/// Scrapes `dir` in a child process (after `mark_process_dead(dir, dead)`
/// when given), failing if it does not finish within 10 s.
fn scrape_in_child(dir: &Path, dead: Option<u32>) -> Scraped {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "child_scrape",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("FC_SCRAPE_DIR", dir)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    if let Some(pid) = dead {
        cmd.env("FC_MARK_DEAD", pid.to_string());
    }
    let start = Instant::now();
    // Reaped below with wait4, which also gives its peak RSS.
    #[allow(clippy::zombie_processes)]
    let mut child = cmd.spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).unwrap();
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).unwrap();
        s
    });
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waits for our own child, writing into locals we own.
        let rc = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        assert!(rc >= 0, "wait4: {}", std::io::Error::last_os_error());
        if rc == pid {
            break;
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the scrape of {} hung (killed after 10 s)", dir.display());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = start.elapsed();
    let text = out.join().unwrap();
    let text = text
        .split_once(BEGIN)
        .and_then(|(_, t)| Some(t.split_once(END)?.0.to_string()))
        .unwrap_or_else(|| panic!("no exposition in {text:?}"));
    let warnings = err.join().unwrap();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the scrape failed ({status}): {warnings}"
    );
    Scraped {
        text,
        warnings,
        max_rss_kib: usage.ru_maxrss,
        took,
    }
}

const BEGIN: &str = "=====BEGIN=====\n";
const END: &str = "=====END=====\n";

/// The scraping child: prints the exposition (of its second scrape) to
/// stdout, warnings to stderr.
#[test]
#[ignore]
fn child_scrape() {
    let Some(dir) = std::env::var_os("FC_SCRAPE_DIR") else {
        return;
    };
    let dir = PathBuf::from(dir);
    if let Some(pid) = std::env::var_os("FC_MARK_DEAD") {
        let pid: u32 = pid.to_str().unwrap().parse().unwrap();
        if let Err(e) = mark_process_dead(&dir, pid) {
            eprintln!("WARNING mark_process_dead: {e}");
        }
    }
    let collector = MultiProcessCollector::new(&dir).on_warning(|w| eprintln!("WARNING {w}"));
    // Twice, as a long-lived collector (the supervisor's) does: the second
    // scrape reads the files it kept open from the first.
    let mut out = Vec::new();
    collector.encode_text_to(&mut out);
    out.clear();
    collector.encode_text_to(&mut out);
    print!("\n{BEGIN}{}{END}", String::from_utf8(out).unwrap());
}

/// The scrape finished quickly in little memory, and the good files of the
/// directory are in it.
fn assert_healthy(s: &Scraped) {
    assert!(s.took < Duration::from_secs(5), "took {:?}", s.took);
    assert!(
        s.max_rss_kib < 64 * 1024,
        "the scraping process grew to {} KiB",
        s.max_rss_kib
    );
    assert!(
        s.text.contains("good_total 5.0\n"),
        "{}\n{}",
        s.text,
        s.warnings
    );
}

fn dir_with_a_good_file() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("counter_1.db"), counter_file("good", 5.0)).unwrap();
    dir
}

#[test]
fn a_nan_bucket_written_by_prometheus_client_is_skipped_with_a_warning() {
    let dir = dir_with_a_good_file();
    common::run_python(
        Some(dir.path()),
        &[
            "-c",
            "from prometheus_client import Histogram\n\
             h = Histogram('nan_hist', 'NaN bound.', buckets=[0.5, float('nan')])\n\
             h.observe(0.25); h.observe(3)",
        ],
    );
    let s = scrape_in_child(dir.path(), None);
    assert_healthy(&s);
    assert!(
        s.text.contains("nan_hist_bucket{le=\"0.5\"} 1.0\n"),
        "{}",
        s.text
    );
    assert!(
        s.text.contains("nan_hist_bucket{le=\"+Inf\"} 2.0\n"),
        "{}",
        s.text
    );
    assert!(s.text.contains("nan_hist_count 2.0\n"), "{}", s.text);
    assert!(!s.text.contains("le=\"NaN\""), "{}", s.text);
    assert!(s.warnings.contains("NaN bucket bound"), "{}", s.warnings);
}

#[test]
fn a_fifo_is_skipped_without_blocking() {
    let dir = dir_with_a_good_file();
    for name in ["counter_2.db", "counter_aggregate.db"] {
        common::mkfifo(&dir.path().join(name));
    }
    let s = scrape_in_child(dir.path(), None);
    assert_healthy(&s);
    assert!(
        s.warnings.contains("counter_2.db: cannot read: a FIFO"),
        "{}",
        s.warnings
    );
    // Marking the FIFO's "pid" dead does not block either.
    let s = scrape_in_child(dir.path(), Some(2));
    assert_healthy(&s);
}

#[test]
fn a_symlink_to_dev_zero_is_not_followed() {
    let dir = dir_with_a_good_file();
    symlink("/dev/zero", dir.path().join("counter_aggregate.db")).unwrap();
    symlink("/dev/zero", dir.path().join("counter_3.db")).unwrap();
    let s = scrape_in_child(dir.path(), None);
    assert_healthy(&s);
    assert!(
        s.warnings
            .contains("counter_aggregate.db: cannot read: a symbolic link"),
        "{}",
        s.warnings
    );
    let s = scrape_in_child(dir.path(), Some(3));
    assert_healthy(&s);
}

#[test]
fn a_corrupt_used_header_costs_no_memory() {
    let dir = dir_with_a_good_file();
    let mut bad = counter_file("bad", 1.0);
    bad.resize(8192, 0);
    bad[..4].copy_from_slice(&0x7fff_ffffi32.to_ne_bytes());
    std::fs::write(dir.path().join("counter_4.db"), &bad).unwrap();
    std::fs::write(dir.path().join("counter_aggregate.db"), &bad).unwrap();
    let s = scrape_in_child(dir.path(), None);
    assert_healthy(&s);
    assert!(
        s.warnings.contains("counter_4.db: cut short"),
        "{}",
        s.warnings
    );
    assert!(s.text.contains("bad_total 2.0\n"), "{}", s.text);
    // The fold reads both bounded too, and keeps their whole entries.
    let s = scrape_in_child(dir.path(), Some(4));
    assert_healthy(&s);
    assert!(s.text.contains("bad_total 2.0\n"), "{}", s.text);
    assert!(!dir.path().join("counter_4.db").exists());
}

#[test]
fn two_spellings_of_one_directory_share_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("r1");
    std::fs::create_dir(&real).unwrap();
    let link = dir.path().join("link");
    symlink(&real, &link).unwrap();
    // The same directory by its path, through a link, and with a `..`.
    let spellings = [real.clone(), link, real.join("..").join("r1")];
    let registries: Vec<_> = spellings
        .iter()
        .map(ferrocorn_shm_metrics::Registry::new)
        .collect();
    // Each opens the file with a series, then appends another to it.
    let names = [["a", "bb", "cccc"], ["d", "ee", "ffff"]];
    for round in names {
        for (i, (r, name)) in registries.iter().zip(round).enumerate() {
            r.counter(name, "One of six.", &[])
                .with_label_values(&[])
                .unwrap()
                .inc_by(i as f64 + 1.0);
        }
    }
    let mut text = Vec::new();
    MultiProcessCollector::new(&real).encode_text_to(&mut text);
    let text = String::from_utf8(text).unwrap();
    let expected = names.iter().flat_map(|r| r.iter().zip([1.0, 2.0, 3.0]));
    for (name, v) in expected {
        assert_eq!(
            common::value_of(&text, &format!("{name}_total")),
            Some(v),
            "{text}"
        );
    }
}

#[test]
fn a_symlink_at_the_folds_temporary_name_is_not_followed() {
    let dir = dir_with_a_good_file();
    let victim = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(victim.path(), b"precious").unwrap();
    symlink(victim.path(), dir.path().join(".counter_aggregate.tmp")).unwrap();
    mark_process_dead(dir.path(), 1).unwrap();
    assert_eq!(std::fs::read(victim.path()).unwrap(), b"precious");
    let s = scrape_in_child(dir.path(), None);
    assert_healthy(&s);
    assert_eq!(
        common::db_files(dir.path()),
        vec!["counter_aggregate.db".to_string()]
    );
}
