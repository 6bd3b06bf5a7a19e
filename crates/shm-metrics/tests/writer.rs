//! The writer on its own: file layout, growth, threads, fork, bad files.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::*;
use ferrocorn_shm_metrics::{GaugeMode, MultiProcessCollector, Registry};

#[test]
#[ignore = "helper: run in a child process by other tests"]
fn child_writer() {
    child_writer_body();
}

#[test]
fn files_are_laid_out_as_prometheus_client_writes_them() {
    let dir = tempfile::tempdir().unwrap();
    let r = Registry::new(dir.path());
    r.counter("c", "h", &["a"])
        .with_label_values(&["x"])
        .unwrap()
        .inc_by(2.5);
    let path = dir
        .path()
        .join(format!("counter_{}.db", std::process::id()));
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.len(), 65536);
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let bytes = std::fs::read(&path).unwrap();
    let key = br#"["c", "c_total", {"a": "x"}, "h"]"#;
    let used = 8 + 4 + key.len() + (8 - (key.len() + 4) % 8) + 16;
    assert_eq!(
        i32::from_ne_bytes(bytes[0..4].try_into().unwrap()) as usize,
        used
    );
    assert_eq!(
        i32::from_ne_bytes(bytes[8..12].try_into().unwrap()) as usize,
        key.len()
    );
    assert_eq!(&bytes[12..12 + key.len()], key);
    assert_eq!(
        f64::from_ne_bytes(bytes[used - 16..used - 8].try_into().unwrap()),
        2.5
    );
    assert_eq!(
        f64::from_ne_bytes(bytes[used - 8..used].try_into().unwrap()),
        0.0
    );
}

#[test]
fn files_grow_and_old_handles_stay_valid() {
    let dir = tempfile::tempdir().unwrap();
    let r = Registry::new(dir.path());
    let c = r.counter("grow", "Growth.", &["n"]);
    let first = c.with_label_values(&["0"]).unwrap();
    let handles: Vec<_> = (0..3000)
        .map(|i| c.with_label_values(&[&i.to_string()]).unwrap())
        .collect();
    for h in &handles {
        h.inc();
    }
    first.inc_by(41.0); // written through the first, smallest mapping
    let path = dir
        .path()
        .join(format!("counter_{}.db", std::process::id()));
    let len = std::fs::metadata(&path).unwrap().len();
    assert!(len >= 4 * 65536 && len.is_power_of_two(), "{len}");
    let text = ours(dir.path());
    assert_eq!(value_of(&text, "grow_total{n=\"0\"}"), Some(42.0));
    assert_eq!(value_of(&text, "grow_total{n=\"2999\"}"), Some(1.0));
    assert_eq!(text.matches("grow_total{").count(), 3000);
}

#[test]
fn threads_lose_no_update() {
    let dir = tempfile::tempdir().unwrap();
    let r = Registry::new(dir.path());
    let c = r
        .counter("hits", "Hits.", &[])
        .with_label_values(&[])
        .unwrap();
    let g = r
        .gauge("level", "Level.", &[], GaugeMode::LiveSum)
        .with_label_values(&[])
        .unwrap();
    let h = r
        .histogram("lat", "Lat.", &[], &[1.0, 2.0])
        .with_label_values(&[])
        .unwrap();
    let fam = r.counter("fresh", "Created while others update.", &["t", "i"]);
    let threads = 8;
    let n = 50_000;
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (c, g, h, fam) = (c.clone(), g.clone(), h.clone(), fam.clone());
            std::thread::spawn(move || {
                for i in 0..n {
                    c.inc();
                    g.add(0.5);
                    h.observe(if i % 2 == 0 { 0.5 } else { 1.5 });
                    if i % 100 == 0 {
                        // New series force appends (and remaps) meanwhile.
                        fam.with_label_values(&[&t.to_string(), &i.to_string()])
                            .unwrap()
                            .inc();
                    }
                }
            })
        })
        .collect();
    workers.into_iter().for_each(|w| w.join().unwrap());
    let total = f64::from(threads * n);
    assert_eq!(c.get(), total);
    assert_eq!(g.get(), total / 2.0);
    let text = ours(dir.path());
    assert_eq!(value_of(&text, "hits_total"), Some(total));
    assert_eq!(value_of(&text, "lat_bucket{le=\"1.0\"}"), Some(total / 2.0));
    assert_eq!(value_of(&text, "lat_count"), Some(total));
    assert_eq!(
        text.matches("fresh_total{").count(),
        (threads * n / 100) as usize
    );
}

#[test]
fn label_values_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let c = Registry::new(dir.path()).counter("c", "h", &["a", "b"]);
    assert_eq!(
        c.with_label_values(&["x"]).err().unwrap().kind(),
        std::io::ErrorKind::InvalidInput
    );
}

#[test]
#[should_panic(expected = "reserved")]
fn histograms_reject_an_le_label() {
    let dir = tempfile::tempdir().unwrap();
    Registry::new(dir.path()).histogram("h", "h", &["le"], &[]);
}

/// Runs in a re-executed test process: a handle made before fork, used in
/// the child, must write the child's file.
#[test]
#[ignore = "helper: run in a child process by a_forked_child_writes_its_own_files"]
fn child_fork() {
    let Some(dir) = std::env::var_os("FC_FORK_DIR") else {
        return;
    };
    let r = Registry::new(Path::new(&dir));
    let c = r
        .counter("forked", "Fork.", &[])
        .with_label_values(&[])
        .unwrap();
    let g = r
        .gauge("forked_gauge", "Fork.", &[], GaugeMode::All)
        .with_label_values(&[])
        .unwrap();
    c.inc();
    g.set(1.0);
    // SAFETY: the child only updates atomics through existing handles, opens
    // its own files, and leaves with _exit; the harness runs this test alone.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        c.inc_by(10.0);
        g.set(2.0);
        r.counter("child_only", "Made in the child.", &[])
            .with_label_values(&[])
            .unwrap()
            .inc();
        // SAFETY: leaving the child without running the harness's teardown.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waiting for the child we just forked.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    c.inc();
    println!("\nPIDS={} {}", std::process::id(), pid);
}

#[test]
fn a_forked_child_writes_its_own_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_fork",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("FC_FORK_DIR", dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let pids = stdout
        .lines()
        .find_map(|l| l.split("PIDS=").nth(1))
        .expect("pids printed");
    let (parent, child) = pids.trim().split_once(' ').unwrap();
    let files = db_files(dir.path());
    assert!(files.contains(&format!("counter_{child}.db")), "{files:?}");
    let per_process = |pid: &str| {
        let d = tempfile::tempdir().unwrap();
        for f in db_files(dir.path())
            .iter()
            .filter(|f| f.ends_with(&format!("_{pid}.db")))
        {
            std::fs::copy(dir.path().join(f), d.path().join(f)).unwrap();
        }
        ours(d.path())
    };
    let parent_text = per_process(parent);
    let child_text = per_process(child);
    assert_eq!(
        value_of(&parent_text, "forked_total"),
        Some(2.0),
        "{parent_text}"
    );
    assert_eq!(
        value_of(&child_text, "forked_total"),
        Some(10.0),
        "{child_text}"
    );
    assert!(!parent_text.contains("child_only"));
    assert_eq!(value_of(&child_text, "child_only_total"), Some(1.0));
    let all = ours(dir.path());
    assert_eq!(
        value_of(&all, &format!("forked_gauge{{pid=\"{parent}\"}}")),
        Some(1.0)
    );
    assert_eq!(
        value_of(&all, &format!("forked_gauge{{pid=\"{child}\"}}")),
        Some(2.0)
    );
}

fn legacy_file(entries: &[(&str, f64)]) -> Vec<u8> {
    let mut out = vec![0u8; 8];
    for (k, v) in entries {
        out.extend_from_slice(&(k.len() as i32).to_ne_bytes());
        out.extend_from_slice(k.as_bytes());
        out.extend(std::iter::repeat_n(b' ', 8 - (k.len() + 4) % 8));
        out.extend_from_slice(&v.to_ne_bytes());
    }
    let used = out.len() as i32;
    out[..4].copy_from_slice(&used.to_ne_bytes());
    out
}

#[test]
fn bad_files_never_break_a_scrape() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let r = Registry::new(d);
    let c = r.counter("good", "Good.", &["n"]);
    for i in 0..10 {
        c.with_label_values(&[&i.to_string()])
            .unwrap()
            .inc_by(f64::from(i));
    }
    let good = d.join(format!("counter_{}.db", std::process::id()));
    let bytes = std::fs::read(&good).unwrap();
    let used = i32::from_ne_bytes(bytes[..4].try_into().unwrap()) as usize;
    // Cut in the middle of the last entry: a file being grown, or truncated.
    std::fs::write(d.join("counter_11.db"), &bytes[..used - 10]).unwrap();
    std::fs::write(d.join("counter_12.db"), b"").unwrap();
    std::fs::write(d.join("counter_13.db"), b"abc").unwrap();
    std::fs::write(
        d.join("histogram_14.db"),
        (0..5000u32)
            .map(|i| (i * 7919 % 251) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    std::fs::write(d.join("cache.db"), b"SQLite format 3\0 and then some pages").unwrap();
    std::fs::write(
        d.join("gauge_all_15.db"),
        legacy_file(&[(r#"["old", "old", {}, "Old."]"#, 3.0)]),
    )
    .unwrap();
    let mut negative = bytes.clone();
    negative[..4].copy_from_slice(&(-5i32).to_ne_bytes());
    std::fs::write(d.join("summary_16.db"), negative).unwrap();
    let mut bad_key = legacy_file(&[]);
    bad_key.truncate(8);
    let key = b"[not json";
    bad_key.extend_from_slice(&(key.len() as i32).to_ne_bytes());
    bad_key.extend_from_slice(key);
    bad_key.extend(std::iter::repeat_n(b' ', 8 - (key.len() + 4) % 8));
    bad_key.extend_from_slice(&[0u8; 16]);
    let u = bad_key.len() as i32;
    bad_key[..4].copy_from_slice(&u.to_ne_bytes());
    std::fs::write(d.join("counter_17.db"), bad_key).unwrap();

    let (families, warnings) = MultiProcessCollector::new(d).collect_with_warnings();
    let mut text = Vec::new();
    ferrocorn_shm_metrics::encode_text(&families, &mut text);
    let text = String::from_utf8(text).unwrap();
    // Ours (0..=9) plus the cut copy's nine whole entries (0..=8).
    assert_eq!(value_of(&text, "good_total{n=\"8\"}"), Some(16.0), "{text}");
    assert_eq!(value_of(&text, "good_total{n=\"9\"}"), Some(9.0), "{text}");
    assert_eq!(value_of(&text, "old{pid=\"15\"}"), Some(3.0), "{text}");
    let reason = |f: &str| {
        warnings
            .iter()
            .find(|w| w.path.ends_with(f))
            .map(|w| w.reason.clone())
            .unwrap_or_else(|| panic!("no warning for {f}: {warnings:#?}"))
    };
    assert!(reason("counter_11.db").contains("cut short"));
    assert!(reason("counter_13.db").contains("too short"));
    assert!(reason("histogram_14.db").contains("skipped"));
    assert!(reason("cache.db").contains("not a metric file name"));
    assert!(reason("gauge_all_15.db").contains("0.18"));
    assert!(reason("summary_16.db").contains("negative"));
    assert!(reason("counter_17.db").contains("unreadable key"));
    assert!(
        warnings.iter().all(|w| !w.path.ends_with("counter_12.db")),
        "an empty file is fine"
    );
}

#[test]
fn registries_share_files_and_series() {
    let dir = tempfile::tempdir().unwrap();
    let a = Registry::new(dir.path())
        .counter("shared", "S.", &[])
        .with_label_values(&[])
        .unwrap();
    let b = Registry::new(dir.path())
        .counter("shared_total", "S.", &[])
        .with_label_values(&[])
        .unwrap();
    a.inc();
    b.inc();
    assert_eq!(a.get(), 2.0);
    let text = ours(dir.path());
    assert_eq!(value_of(&text, "shared_total"), Some(2.0), "{text}");
}

#[test]
fn a_pid_reused_after_a_fold_is_counted_again() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    Registry::new(scratch.path())
        .counter("reused", "R.", &[])
        .with_label_values(&[])
        .unwrap()
        .inc_by(5.0);
    let ours_file = scratch
        .path()
        .join(format!("counter_{}.db", std::process::id()));
    let target = dir.path().join("counter_777.db");
    std::fs::copy(&ours_file, &target).unwrap();
    ferrocorn_shm_metrics::mark_process_dead(dir.path(), 777).unwrap();
    assert_eq!(db_files(dir.path()), ["counter_aggregate.db"]);
    assert_eq!(value_of(&ours(dir.path()), "reused_total"), Some(5.0));
    // A new process gets pid 777 (and maybe the same inode number).
    std::fs::copy(&ours_file, &target).unwrap();
    let f = std::fs::File::options().write(true).open(&target).unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(1))
        .unwrap();
    assert_eq!(value_of(&ours(dir.path()), "reused_total"), Some(10.0));
    ferrocorn_shm_metrics::mark_process_dead(dir.path(), 777).unwrap();
    assert_eq!(value_of(&ours(dir.path()), "reused_total"), Some(10.0));
}

#[test]
fn collectors_register_with_a_prometheus_registry() {
    let dir = tempfile::tempdir().unwrap();
    let r = Registry::new(dir.path());
    r.histogram("lat", "Latency.", &[], &[0.5])
        .with_label_values(&[])
        .unwrap()
        .observe(0.1);
    let reg = prometheus::Registry::new();
    reg.register(Box::new(MultiProcessCollector::new(dir.path())))
        .unwrap();
    // A second collector (another directory) has its own descriptor.
    let other = tempfile::tempdir().unwrap();
    reg.register(Box::new(MultiProcessCollector::new(other.path())))
        .unwrap();
    let families = reg.gather();
    assert_eq!(families.len(), 1);
    let mut text = String::new();
    prometheus::TextEncoder::new()
        .encode_utf8(&families, &mut text)
        .unwrap();
    // The prometheus crate's encoder adds the +Inf bucket itself: once.
    assert_eq!(text.matches("le=\"+Inf\"").count(), 1, "{text}");
    assert!(text.contains("lat_count 1\n"), "{text}");
}

#[test]
fn a_long_lived_collector_follows_changes() {
    let dir = tempfile::tempdir().unwrap();
    let collector = MultiProcessCollector::new(dir.path());
    let render = |c: &MultiProcessCollector| {
        let mut out = Vec::new();
        ferrocorn_shm_metrics::encode_text(&c.collect_families(), &mut out);
        String::from_utf8(out).unwrap()
    };
    let r = Registry::new(dir.path());
    let c = r.counter("lived", "L.", &["k"]);
    c.with_label_values(&["a"]).unwrap().inc();
    assert_eq!(render(&collector), ours(dir.path()));
    c.with_label_values(&["b"]).unwrap().inc_by(2.0);
    r.gauge("lived_gauge", "G.", &[], GaugeMode::LiveMax)
        .with_label_values(&[])
        .unwrap()
        .set(4.0);
    std::fs::copy(
        dir.path()
            .join(format!("counter_{}.db", std::process::id())),
        dir.path().join("counter_4242.db"),
    )
    .unwrap();
    let second = render(&collector);
    assert_eq!(second, ours(dir.path()));
    assert_eq!(value_of(&second, "lived_total{k=\"b\"}"), Some(4.0));
    ferrocorn_shm_metrics::mark_process_dead(dir.path(), 4242).unwrap();
    assert_eq!(render(&collector), ours(dir.path()));
    assert_eq!(
        value_of(&render(&collector), "lived_total{k=\"b\"}"),
        Some(4.0)
    );
}

/// A long-lived collector keeps files open between scrapes: a file renamed
/// over (a new inode under the same name) or deleted must not be read from
/// the descriptor it kept.
#[test]
fn a_replaced_or_deleted_file_is_not_read_from_a_kept_descriptor() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("live");
    std::fs::create_dir(&dir).unwrap();
    let pid = std::process::id();
    let write = |scratch: &str, v: f64| {
        let scratch = root.path().join(scratch);
        let r = Registry::new(&scratch);
        r.counter("kept", "Kept.", &[])
            .with_label_values(&[])
            .unwrap()
            .inc_by(v);
        std::fs::rename(
            scratch.join(format!("counter_{pid}.db")),
            dir.join("counter_7.db"),
        )
        .unwrap();
    };
    let collector = MultiProcessCollector::new(&dir);
    let scrape = || {
        let mut out = Vec::new();
        ferrocorn_shm_metrics::encode_text(&collector.collect_families(), &mut out);
        value_of(&String::from_utf8(out).unwrap(), "kept_total")
    };
    write("a", 1.0);
    assert_eq!(scrape(), Some(1.0));
    assert_eq!(scrape(), Some(1.0));
    write("b", 5.0);
    assert_eq!(scrape(), Some(5.0));
    std::fs::remove_file(dir.join("counter_7.db")).unwrap();
    assert_eq!(scrape(), None);
}
