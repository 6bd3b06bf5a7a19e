//! A long-lived collector keeps files open and remembers where their
//! entries are, so a later scrape reads only values at known offsets plus
//! the entries appended since. These tests change files between two scrapes
//! of one collector in every way a file can change, and check that the
//! collector sees what a new collector (which parses everything) sees.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::*;
use ferrocorn_shm_metrics::{GaugeMode, MultiProcessCollector, Registry, Warning};

fn scrape(c: &MultiProcessCollector) -> (String, Vec<Warning>) {
    let (families, warnings) = c.collect_with_warnings();
    let mut out = Vec::new();
    ferrocorn_shm_metrics::encode_text(&families, &mut out);
    (String::from_utf8(out).unwrap(), warnings)
}

/// A scrape by `c` that must match a new collector's, warnings included.
fn checked(c: &MultiProcessCollector, dir: &Path) -> (String, Vec<Warning>) {
    let warm = scrape(c);
    let cold = scrape(&MultiProcessCollector::new(dir));
    assert_eq!(warm.0, cold.0, "a kept collector and a new one disagree");
    assert_eq!(warm.1, cold.1, "a kept collector and a new one disagree");
    warm
}

/// A metric file in the current layout (value, then a zero timestamp).
fn file_bytes(entries: &[(&str, f64)]) -> Vec<u8> {
    let mut out = vec![0u8; 8];
    for (k, v) in entries {
        out.extend_from_slice(&(k.len() as i32).to_ne_bytes());
        out.extend_from_slice(k.as_bytes());
        out.extend(std::iter::repeat_n(b' ', 8 - (k.len() + 4) % 8));
        out.extend_from_slice(&v.to_ne_bytes());
        out.extend_from_slice(&0f64.to_ne_bytes());
    }
    let used = out.len() as i32;
    out[..4].copy_from_slice(&used.to_ne_bytes());
    out
}

fn key(label: &str) -> String {
    format!(r#"["cached", "cached_total", {{"k": "{label}"}}, "Cached."]"#)
}

#[test]
fn values_and_series_appended_to_a_kept_file_are_seen() {
    let dir = tempfile::tempdir().unwrap();
    let collector = MultiProcessCollector::new(dir.path());
    let r = Registry::new(dir.path());
    let c = r.counter("grown", "Grown.", &["k"]);
    let a = c.with_label_values(&["a"]).unwrap();
    a.inc();
    r.gauge("grown_gauge", "G.", &[], GaugeMode::LiveAll)
        .with_label_values(&[])
        .unwrap()
        .set(2.0);
    let (text, _) = checked(&collector, dir.path());
    assert_eq!(value_of(&text, "grown_total{k=\"a\"}"), Some(1.0), "{text}");
    let ino = |dir: &Path| {
        std::fs::metadata(dir.join(format!("counter_{}.db", std::process::id())))
            .unwrap()
            .ino()
    };
    let before = ino(dir.path());

    // A value changes, nothing else.
    a.inc_by(2.0);
    let (text, _) = checked(&collector, dir.path());
    assert_eq!(value_of(&text, "grown_total{k=\"a\"}"), Some(3.0), "{text}");

    // New series are appended, past the file's first 64 KiB (the file grows).
    for i in 0..1000 {
        c.with_label_values(&[&format!("b{i}")]).unwrap().inc();
    }
    a.inc();
    let (text, _) = checked(&collector, dir.path());
    assert_eq!(ino(dir.path()), before, "the same file, grown");
    assert_eq!(value_of(&text, "grown_total{k=\"a\"}"), Some(4.0), "{text}");
    assert_eq!(
        value_of(&text, "grown_total{k=\"b0\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value_of(&text, "grown_total{k=\"b999\"}"),
        Some(1.0),
        "{text}"
    );
    // And once more without any change.
    assert_eq!(checked(&collector, dir.path()).0, text);
}

#[test]
fn a_file_rewritten_in_place_is_parsed_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("counter_7.db");
    let collector = MultiProcessCollector::new(dir.path());
    std::fs::write(&path, file_bytes(&[(&key("a"), 1.0), (&key("b"), 2.0)])).unwrap();
    let ino = std::fs::metadata(&path).unwrap().ino();
    let (text, _) = checked(&collector, dir.path());
    assert_eq!(
        value_of(&text, "cached_total{k=\"b\"}"),
        Some(2.0),
        "{text}"
    );

    // Truncated and written again (same inode): other keys of the same
    // lengths at the same offsets, and one more entry.
    std::fs::write(
        &path,
        file_bytes(&[(&key("c"), 3.0), (&key("d"), 4.0), (&key("e"), 5.0)]),
    )
    .unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().ino(), ino);
    let (text, _) = checked(&collector, dir.path());
    assert_eq!(value_of(&text, "cached_total{k=\"a\"}"), None, "{text}");
    assert_eq!(value_of(&text, "cached_total{k=\"b\"}"), None, "{text}");
    assert_eq!(
        value_of(&text, "cached_total{k=\"c\"}"),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        value_of(&text, "cached_total{k=\"e\"}"),
        Some(5.0),
        "{text}"
    );

    // Written again with fewer entries: the `used` mark went down.
    std::fs::write(&path, file_bytes(&[(&key("f"), 6.0)])).unwrap();
    let (text, _) = checked(&collector, dir.path());
    assert_eq!(value_of(&text, "cached_total{k=\"c\"}"), None, "{text}");
    assert_eq!(
        value_of(&text, "cached_total{k=\"f\"}"),
        Some(6.0),
        "{text}"
    );
}

#[test]
fn a_file_replaced_by_another_inode_is_parsed_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("counter_7.db");
    let collector = MultiProcessCollector::new(dir.path());
    std::fs::write(&path, file_bytes(&[(&key("a"), 1.0)])).unwrap();
    assert_eq!(
        value_of(&checked(&collector, dir.path()).0, "cached_total{k=\"a\"}"),
        Some(1.0)
    );
    let tmp = dir.path().join("tmp");
    std::fs::write(&tmp, file_bytes(&[(&key("b"), 2.0), (&key("c"), 3.0)])).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let (text, _) = checked(&collector, dir.path());
    assert_eq!(value_of(&text, "cached_total{k=\"a\"}"), None, "{text}");
    assert_eq!(
        value_of(&text, "cached_total{k=\"b\"}"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value_of(&text, "cached_total{k=\"c\"}"),
        Some(3.0),
        "{text}"
    );
}

#[test]
fn a_kept_file_cut_short_is_read_to_its_last_whole_entry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("counter_7.db");
    let collector = MultiProcessCollector::new(dir.path());
    let whole = file_bytes(&[(&key("a"), 1.0), (&key("b"), 2.0), (&key("c"), 3.0)]);
    std::fs::write(&path, &whole).unwrap();
    let (full, warnings) = checked(&collector, dir.path());
    assert!(warnings.is_empty(), "{warnings:?}");

    // Cut in the middle of the last entry (its `used` mark still covers it).
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(whole.len() as u64 - 10).unwrap();
    let (text, warnings) = checked(&collector, dir.path());
    assert_eq!(
        value_of(&text, "cached_total{k=\"b\"}"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(value_of(&text, "cached_total{k=\"c\"}"), None, "{text}");
    assert!(
        warnings.len() == 1 && warnings[0].reason.contains("first 2 whole entries"),
        "{warnings:?}"
    );

    // Cut before the first entry's value.
    f.set_len(20).unwrap();
    let (text, warnings) = checked(&collector, dir.path());
    assert_eq!(value_of(&text, "cached_total{k=\"a\"}"), None, "{text}");
    assert_eq!(warnings.len(), 1, "{warnings:?}");

    // Whole again.
    std::fs::write(&path, &whole).unwrap();
    let (text, warnings) = checked(&collector, dir.path());
    assert_eq!(text, full);
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn a_damaged_entry_appended_to_a_kept_file_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("counter_7.db");
    let collector = MultiProcessCollector::new(dir.path());
    std::fs::write(&path, file_bytes(&[(&key("a"), 1.0)])).unwrap();
    checked(&collector, dir.path());
    // An entry whose key is not JSON, then a good one: read up to the bad one.
    let mut bytes = file_bytes(&[(&key("a"), 1.0), ("garbage!", 9.0), (&key("b"), 2.0)]);
    std::fs::write(&path, &bytes).unwrap();
    let (text, warnings) = checked(&collector, dir.path());
    assert_eq!(
        value_of(&text, "cached_total{k=\"a\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(value_of(&text, "cached_total{k=\"b\"}"), None, "{text}");
    assert!(
        warnings.len() == 1 && warnings[0].reason.contains("first 1 whole entries"),
        "{warnings:?}"
    );
    // A key that is JSON but not a metric key: counted as unreadable.
    bytes = file_bytes(&[(&key("a"), 1.0), ("[1, 2]", 9.0), (&key("b"), 2.0)]);
    std::fs::write(&path, &bytes).unwrap();
    let (text, warnings) = checked(&collector, dir.path());
    assert_eq!(
        value_of(&text, "cached_total{k=\"b\"}"),
        Some(2.0),
        "{text}"
    );
    assert!(
        warnings.len() == 1
            && warnings[0]
                .reason
                .contains("1 entries with an unreadable key"),
        "{warnings:?}"
    );
}

#[test]
fn a_collector_that_forgets_its_keys_parses_kept_files_again() {
    let dir = tempfile::tempdir().unwrap();
    let collector = MultiProcessCollector::new(dir.path());
    std::fs::write(
        dir.path().join("counter_7.db"),
        file_bytes(&[(&key("kept"), 1.0)]),
    )
    .unwrap();
    // Many keys, seen once: the collector forgets them once they are gone,
    // and with them every key id it remembered for kept files.
    let many: Vec<String> = (0..5000).map(|i| key(&format!("gone{i}"))).collect();
    let entries: Vec<(&str, f64)> = many.iter().map(|k| (k.as_str(), 1.0)).collect();
    let big = dir.path().join("counter_8.db");
    std::fs::write(&big, file_bytes(&entries)).unwrap();
    checked(&collector, dir.path());
    std::fs::remove_file(&big).unwrap();
    for _ in 0..3 {
        let (text, _) = checked(&collector, dir.path());
        assert_eq!(
            value_of(&text, "cached_total{k=\"kept\"}"),
            Some(1.0),
            "{text}"
        );
        assert_eq!(text.lines().count(), 3, "{text}");
    }
}

/// A Python process that continues the files of process id 4242 (as a
/// process with a reused pid does) and writes `n` counter series and one
/// gauge.
fn python_continue(dir: &Path, n: u32) {
    let script = "import sys\n\
from prometheus_client import values\n\
values.ValueClass = values.MultiProcessValue(lambda: 4242)\n\
from prometheus_client import Counter, Gauge\n\
n = int(sys.argv[1])\n\
c = Counter('fc_cached', 'Cached.', ['k'])\n\
for j in range(n):\n    c.labels('series number %d' % j).inc(j + 0.5)\n\
Gauge('fc_cached_peak', 'Peak.', ['n'], multiprocess_mode='max').labels(str(n)).set(n)\n";
    run_python(Some(dir), &["-c", script, &n.to_string()]);
}

#[test]
fn python_files_continued_between_scrapes_match_python() {
    let dir = tempfile::tempdir().unwrap();
    let collector = MultiProcessCollector::new(dir.path());
    let mut last = None;
    // 3 series, then 300 (same file), then 3000 (the file grows past 64 KiB).
    for (run, n) in [3, 300, 3000].into_iter().enumerate() {
        python_continue(dir.path(), n);
        let counter = dir.path().join("counter_4242.db");
        let ino = std::fs::metadata(&counter).unwrap().ino();
        assert!(last.is_none_or(|l| l == ino), "Python continued the file");
        last = Some(ino);
        let (text, warnings) = checked(&collector, dir.path());
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_same_exposition(&text, &python_expose(dir.path()));
        // Each run adds 0.5 to the first series, in the same entry.
        assert_eq!(
            value_of(&text, "fc_cached_total{k=\"series number 0\"}"),
            Some(0.5 * (run + 1) as f64),
            "{text}"
        );
    }
    let text = checked(&collector, dir.path()).0;
    assert_eq!(
        value_of(&text, "fc_cached_total{k=\"series number 0\"}"),
        Some(1.5),
        "{text}"
    );
    assert_eq!(
        value_of(&text, "fc_cached_total{k=\"series number 2999\"}"),
        Some(2999.5),
        "{text}"
    );
    rust_write(dir.path(), 1);
    let text = checked(&collector, dir.path()).0;
    assert_same_exposition(&text, &python_expose(dir.path()));
}

#[test]
#[ignore = "helper: run in a child process by other tests"]
fn child_writer() {
    child_writer_body();
}

#[test]
fn aggregates_kept_open_are_read_again_from_their_start() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("live");
    std::fs::create_dir(&dir).unwrap();
    let pid = std::process::id();
    // Process `id` wrote `v` to one counter and exited.
    let dead = |id: u32, v: f64| {
        let scratch = root.path().join(format!("scratch{id}"));
        Registry::new(&scratch)
            .counter("folded", "Folded.", &[])
            .with_label_values(&[])
            .unwrap()
            .inc_by(v);
        std::fs::copy(
            scratch.join(format!("counter_{pid}.db")),
            dir.join(format!("counter_{id}.db")),
        )
        .unwrap();
        ferrocorn_shm_metrics::mark_process_dead(&dir, id).unwrap();
    };
    let collector = MultiProcessCollector::new(&dir);
    dead(7, 1.0);
    for _ in 0..3 {
        let (text, _) = checked(&collector, &dir);
        assert_eq!(value_of(&text, "folded_total"), Some(1.0), "{text}");
    }
    dead(8, 2.0);
    for _ in 0..3 {
        let (text, _) = checked(&collector, &dir);
        assert_eq!(value_of(&text, "folded_total"), Some(3.0), "{text}");
    }
}
