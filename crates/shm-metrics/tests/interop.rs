//! Compatibility with Python's prometheus_client, both ways, and promtool.

mod common;

use std::process::{Command, Stdio};

use common::*;
use ferrocorn_shm_metrics::mark_process_dead;

#[test]
#[ignore = "helper: run in a child process by other tests"]
fn child_writer() {
    child_writer_body();
}

#[test]
fn python_writes_we_read_the_same_exposition() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..3 {
        python_write(dir.path(), i);
    }
    let ours = ours(dir.path());
    let python = python_expose(dir.path());
    assert_same_exposition(&ours, &python);
    // Spot checks of spelling, in case both sides agree on something wrong.
    assert!(
        ours.contains("fc_latency_seconds_bucket{le=\"1e+06\",route=\"/a\\\"b\"} "),
        "{ours}"
    );
    assert!(ours.contains("le=\"1.0\""));
    assert!(ours.contains("le=\"+Inf\""));
    assert!(ours.contains("label=\"new\\nline\""));
    assert!(ours.contains("label=\"\u{fc}n\u{ef}\u{1F600}\""));
    assert!(
        ours.contains("# HELP fc_requests_total Requests \"served\" \\\\ with\\nnewline \u{fc}\n")
    );
    assert!(ours.contains("fc_plain_total 6.0\n"));
}

/// `encode_text_to` (text straight from the merge, what the exporter and
/// `render_dir` serve) prints exactly what `encode_text` prints for
/// `collect_families`: every type and gauge mode, written by Python and by
/// us, by a new collector and by one kept across scrapes.
#[test]
fn text_straight_from_the_merge_equals_the_families_encoded() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..2 {
        python_write(dir.path(), i);
    }
    for i in 2..4 {
        rust_write(dir.path(), i);
    }
    let kept = ferrocorn_shm_metrics::MultiProcessCollector::new(dir.path());
    for round in 0..3 {
        if round == 2 {
            // New series and values between two scrapes of the kept one.
            python_write(dir.path(), 4);
        }
        let fresh = ferrocorn_shm_metrics::MultiProcessCollector::new(dir.path());
        for (what, c) in [("new", &fresh), ("kept", &kept)] {
            let mut via_families = Vec::new();
            ferrocorn_shm_metrics::encode_text(&c.collect_families(), &mut via_families);
            let mut direct = Vec::new();
            c.encode_text_to(&mut direct);
            let text = String::from_utf8_lossy(&via_families);
            for t in ["counter", "gauge", "histogram", "summary"] {
                assert!(
                    text.contains(&format!(" {t}\n")),
                    "{what}: no {t} in\n{text}"
                );
            }
            assert_eq!(
                String::from_utf8(direct).unwrap(),
                String::from_utf8(via_families).unwrap(),
                "{what} collector, round {round}"
            );
        }
    }
}

#[test]
fn we_write_python_reads_the_same_exposition() {
    let dir = tempfile::tempdir().unwrap();
    let mut pids = Vec::new();
    for i in 0..3 {
        pids.push(rust_write(dir.path(), i));
    }
    let files = db_files(dir.path());
    assert!(
        files.contains(&format!("counter_{}.db", pids[0])),
        "{files:?}"
    );
    assert!(
        files.contains(&format!("gauge_livemostrecent_{}.db", pids[2])),
        "{files:?}"
    );
    let ours_only = ours(dir.path());
    assert_same_exposition(&ours_only, &python_expose(dir.path()));

    // Python and Rust writing the same series: one series, summed.
    python_write(dir.path(), 3);
    let mixed = ours(dir.path());
    assert_same_exposition(&mixed, &python_expose(dir.path()));
    assert_eq!(mixed.matches("\nfc_plain_total ").count(), 1, "{mixed}");
    assert!(mixed.contains("\nfc_plain_total 10.0\n"), "{mixed}");
}

#[test]
fn promtool_accepts_our_output() {
    let Ok(out) = Command::new("promtool").arg("--version").output() else {
        panic!("promtool is missing: apt-get install -y prometheus (scripts/test installs it)");
    };
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    python_write(dir.path(), 0);
    rust_write(dir.path(), 1);
    let text = ours(dir.path());
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    // promtool exits 0 on valid input; lint remarks (e.g. on help text) go to
    // stdout with exit code 3, errors with exit code 1.
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() || out.status.code() == Some(3),
        "promtool: {report}"
    );
    assert!(!report.contains("error"), "promtool: {report}\n{text}");
}

/// Lines of series that should vanish when every writer is dead: `all` and
/// `live*` gauges. Their HELP/TYPE lines vanish with them.
fn without_dead_gauges(text: &str) -> String {
    let dead = |l: &str| {
        ["fc_gauge_all", "fc_gauge_live", "fc_worker_conns"]
            .iter()
            .any(|p| {
                l.starts_with(p)
                    || l.starts_with(&format!("# HELP {p}"))
                    || l.starts_with(&format!("# TYPE {p}"))
            })
    };
    text.lines()
        .filter(|l| !dead(l))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn mark_process_dead_folds_into_aggregates_python_can_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut pids = vec![rust_write(dir.path(), 0), rust_write(dir.path(), 1)];
    // Python writers: their pid is the file id.
    python_write(dir.path(), 2);
    python_write(dir.path(), 3);
    for f in db_files(dir.path()) {
        if let Some(id) = f
            .strip_prefix("counter_")
            .and_then(|s| s.strip_suffix(".db"))
        {
            let pid: u32 = id.parse().unwrap();
            if !pids.contains(&pid) {
                pids.push(pid);
            }
        }
    }
    assert_eq!(pids.len(), 4);
    let before = ours(dir.path());
    assert!(before.contains("fc_gauge_liveall{"), "{before}");
    for &pid in &pids {
        mark_process_dead(dir.path(), pid).unwrap();
    }
    let after = ours(dir.path());
    assert_equivalent_exposition(&after, &without_dead_gauges(&before));
    assert_same_exposition(&after, &python_expose(dir.path()));
    let files = db_files(dir.path());
    assert!(files.iter().all(|f| f.contains("_aggregate.")), "{files:?}");
    assert!(files.len() <= 7, "{files:?}");

    // Workers keep coming and going: files stay bounded, counters add up.
    for i in 0..10 {
        let pid = rust_write(dir.path(), 10 + i);
        mark_process_dead(dir.path(), pid).unwrap();
        assert!(db_files(dir.path()).len() <= 7);
    }
    let churned = ours(dir.path());
    // fc_plain_total: (1 + 2) rust + (3 + 4) python + sum of 11..=20.
    let want = 1 + 2 + 3 + 4 + (11..=20).sum::<u32>();
    assert!(
        churned.contains(&format!("\nfc_plain_total {want}.0\n")),
        "{churned}"
    );
    assert_same_exposition(&churned, &python_expose(dir.path()));
}

/// A second writer in a process names its files `{pid}.{tag}` (as
/// ferrocorn-wsgi has prometheus_client do, `{pid}.py`): both readers
/// understand them, and `mark_process_dead(pid)` handles them as the pid's
/// own, but not those of another pid with the same digits in front.
#[test]
fn mark_process_dead_handles_the_tagged_ids_of_the_pid() {
    let dir = tempfile::tempdir().unwrap();
    let pid = rust_write(dir.path(), 0);
    let tagged = |id: String, index: u32| {
        let mut cmd = Command::new(python());
        cmd.arg(script("write.py"))
            .arg(index.to_string())
            .env("PROMETHEUS_MULTIPROC_DIR", dir.path())
            .env("FC_PY_ID", &id);
        assert!(cmd.status().unwrap().success());
    };
    tagged(format!("{pid}.py"), 1);
    tagged(format!("{pid}0.py"), 2);
    let before = ours(dir.path());
    assert_same_exposition(&before, &python_expose(dir.path()));
    assert!(before.contains(&format!("pid=\"{pid}.py\"")), "{before}");
    mark_process_dead(dir.path(), pid).unwrap();
    let files = db_files(dir.path());
    assert!(
        !files
            .iter()
            .any(|f| f.ends_with(&format!("_{pid}.db")) || f.ends_with(&format!("_{pid}.py.db"))),
        "{files:?}"
    );
    assert!(
        files.contains(&format!("gauge_liveall_{pid}0.py.db")),
        "{files:?}"
    );
    let after = ours(dir.path());
    // The dead process's `all`/`liveall` series went, the other's stayed.
    assert!(!after.contains(&format!("pid=\"{pid}\"")), "{after}");
    assert!(!after.contains(&format!("pid=\"{pid}.py\"")), "{after}");
    assert!(after.contains(&format!("pid=\"{pid}0.py\"")), "{after}");
    assert_same_exposition(&after, &python_expose(dir.path()));
    // fc_plain_total: 1 (rust, index 0) + 2 + 3 (python, index 1 and 2).
    assert!(after.contains("\nfc_plain_total 6.0\n"), "{after}");
}

#[test]
fn concurrent_scrapes_during_folds_never_double_count_or_lose() {
    let dir = tempfile::tempdir().unwrap();
    let pids: Vec<u32> = (0..12).map(|i| rust_write(dir.path(), i)).collect();
    let want = format!("\nfc_plain_total {}.0\n", (1..=12).sum::<u32>());
    assert!(ours(dir.path()).contains(&want));
    let path = dir.path().to_path_buf();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scraper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || n < 5 {
                let text = ours(&path);
                assert!(
                    text.contains(&want),
                    "scrape {n} saw a wrong total:\n{text}"
                );
                n += 1;
            }
            n
        })
    };
    for pid in pids {
        mark_process_dead(dir.path(), pid).unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let scrapes = scraper.join().expect("no scrape saw a wrong total");
    assert!(scrapes >= 5);
}
