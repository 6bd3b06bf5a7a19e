//! `all`-mode gauges: one series per (labels, pid), in the order of their
//! label pairs with `pid` in its place by name, even when the processes of
//! one family wrote different label names and pids that sort differently as
//! strings and as numbers.

use std::path::Path;

use ferrocorn_shm_metrics::{GaugeMode, MultiProcessCollector, encode_text};

type Rows<'a> = &'a [(&'a [&'a str], f64)];

/// Writes one process's gauges `(family, label names, rows)`, as process `id`.
fn write_as(dir: &Path, id: u32, gauges: &[(&str, &[&str], Rows<'_>)]) {
    let scratch = tempfile::tempdir().unwrap();
    let r = ferrocorn_shm_metrics::Registry::new(scratch.path());
    for (family, names, rows) in gauges {
        let g = r.gauge(family, "A gauge.", names, GaugeMode::All);
        for (values, v) in rows.iter() {
            g.with_label_values(values).unwrap().set(*v);
        }
    }
    drop(r);
    let pid = std::process::id().to_string();
    for e in std::fs::read_dir(scratch.path()).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        let prefix = name.strip_suffix(&format!("_{pid}.db")).unwrap();
        std::fs::rename(
            scratch.path().join(&name),
            dir.join(format!("{prefix}_{id}.db")),
        )
        .unwrap();
    }
}

fn label_pairs(line: &str) -> Vec<(String, String)> {
    let inner = &line[line.find('{').unwrap() + 1..line.rfind('}').unwrap()];
    inner
        .split("\",")
        .map(|p| {
            let (k, v) = p.split_once("=\"").unwrap();
            (k.to_owned(), v.trim_end_matches('"').to_owned())
        })
        .collect()
}

/// The series of `family` in `text`, checked to be in strictly increasing
/// order of their label pairs; how many.
fn check_order(text: &str, family: &str) -> usize {
    let prefix = format!("{family}{{");
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with(&prefix)).collect();
    let sets: Vec<Vec<(String, String)>> = lines.iter().map(|l| label_pairs(l)).collect();
    for w in sets.windows(2) {
        assert!(
            w[0] < w[1],
            "{family}: {:?} before {:?}\n{text}",
            w[0],
            w[1]
        );
    }
    lines.len()
}

#[test]
fn all_mode_series_are_in_label_order() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // pids 9 < 10 < 100 as numbers only; values that are prefixes of others.
    // `mixed`: label names after `pid`, before it, both, none.
    // `after`: every name after `pid`. `before`: the same names, before it.
    for id in [9, 10, 100] {
        let q2 = f64::from(id);
        write_as(
            d,
            id,
            &[
                (
                    "mixed",
                    &["zone"],
                    &[(&["q1"], 1.0), (&["q10"], 2.0), (&["q2"], q2)],
                ),
                (
                    "after",
                    &["zone", "zz"],
                    &[(&["a", "b"], 1.0), (&["a", "a"], 2.0)],
                ),
                (
                    "before",
                    &["app", "host"],
                    &[
                        (&["b", "h1"], 1.0),
                        (&["a", "h10"], 2.0),
                        (&["a", "h1"], 3.0),
                    ],
                ),
            ],
        );
    }
    for id in [12, 7] {
        write_as(
            d,
            id,
            &[("mixed", &["app"], &[(&["b"], 3.0), (&["a"], 4.0)])],
        );
    }
    write_as(d, 8, &[("mixed", &["app", "zone"], &[(&["a", "q1"], 5.0)])]);
    write_as(d, 11, &[("mixed", &[], &[(&[], 6.0)])]);
    let collector = MultiProcessCollector::new(d);
    for round in 0..2 {
        // Twice: a long-lived collector's second scrape orders alike.
        let mut out = Vec::new();
        encode_text(&collector.collect_families(), &mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            check_order(&text, "mixed"),
            9 + 4 + 1 + 1,
            "round {round}:\n{text}"
        );
        assert_eq!(check_order(&text, "after"), 6, "round {round}:\n{text}");
        assert_eq!(check_order(&text, "before"), 9, "round {round}:\n{text}");
        assert!(
            text.contains("mixed{pid=\"100\",zone=\"q2\"} 100.0"),
            "round {round}:\n{text}"
        );
    }
}
