//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ferrocorn_shm_metrics::{GaugeMode, Registry};

/// The Python with prometheus_client: `FERROCORN_TEST_PYTHON`, else `python3`.
pub fn python() -> PathBuf {
    let py = std::env::var_os("FERROCORN_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| "python3".into());
    let ok = Command::new(&py)
        .args(["-c", "import prometheus_client"])
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e}; set FERROCORN_TEST_PYTHON",
                py.display()
            )
        });
    assert!(
        ok.success(),
        "{} has no prometheus_client: `python3 -m venv .venv && .venv/bin/pip install prometheus_client==0.26.0` \
         and set FERROCORN_TEST_PYTHON=.venv/bin/python",
        py.display()
    );
    py
}

pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(name)
}

/// Runs the Python with prometheus_client on `args` with
/// PROMETHEUS_MULTIPROC_DIR=dir (when given); its stdout. Panics with its
/// stderr when it fails.
pub fn run_python<S: AsRef<std::ffi::OsStr>>(dir: Option<&Path>, args: &[S]) -> String {
    let mut cmd = Command::new(python());
    cmd.args(args);
    if let Some(dir) = dir {
        cmd.env("PROMETHEUS_MULTIPROC_DIR", dir);
    }
    let out = cmd.output().expect("run python");
    assert!(
        out.status.success(),
        "python {:?} failed: {}",
        args.first().map(|a| a.as_ref().to_owned()),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Runs tests/py/write.py INDEX with PROMETHEUS_MULTIPROC_DIR=dir.
pub fn python_write(dir: &Path, index: u32) {
    run_python(
        Some(dir),
        &[
            script("write.py").into_os_string(),
            index.to_string().into(),
        ],
    );
}

/// Python's MultiProcessCollector exposition of `dir`.
pub fn python_expose(dir: &Path) -> String {
    run_python(None, &[script("expose.py").as_os_str(), dir.as_os_str()])
}

/// The value of the sample line `series` (name and labels as printed).
pub fn value_of(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

pub fn ours(dir: &Path) -> String {
    String::from_utf8(ferrocorn_shm_metrics::render_dir(dir).expect("render")).expect("utf-8")
}

/// Lines sorted: equal when both sides print the same HELP, TYPE and sample
/// lines (values spelled the same), in any order.
pub fn sorted_lines(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text.lines().map(str::to_string).collect();
    v.sort();
    v
}

/// Asserts two expositions have the same lines, with a readable diff.
pub fn assert_same_exposition(ours: &str, python: &str) {
    let a = sorted_lines(ours);
    let b = sorted_lines(python);
    if a != b {
        let mut count = std::collections::BTreeMap::<&str, i64>::new();
        a.iter().for_each(|l| *count.entry(l).or_default() += 1);
        b.iter().for_each(|l| *count.entry(l).or_default() -= 1);
        let diff: Vec<_> = count.into_iter().filter(|(_, n)| *n != 0).collect();
        panic!(
            "expositions differ (line, ours minus python's count): {diff:#?}\nours:\n{ours}\npython:\n{python}"
        );
    }
}

/// Parses an exposition into HELP/TYPE lines and samples (series -> value).
pub fn parse_exposition(text: &str) -> (Vec<String>, std::collections::BTreeMap<String, f64>) {
    let mut meta = Vec::new();
    let mut samples = std::collections::BTreeMap::new();
    for l in text.lines() {
        if l.starts_with('#') {
            meta.push(l.to_string());
        } else if let Some((series, value)) = l.rsplit_once(' ') {
            let v = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value in {l:?}")),
            };
            assert!(
                samples.insert(series.to_string(), v).is_none(),
                "duplicate series {series}"
            );
        }
    }
    meta.sort();
    (meta, samples)
}

/// Same families and series, values equal up to float rounding (sums added
/// in another order, e.g. after folding into an aggregate).
pub fn assert_equivalent_exposition(a: &str, b: &str) {
    let (ma, sa) = parse_exposition(a);
    let (mb, sb) = parse_exposition(b);
    assert_eq!(ma, mb, "HELP/TYPE lines differ");
    let ka: Vec<_> = sa.keys().collect();
    let kb: Vec<_> = sb.keys().collect();
    assert_eq!(ka, kb, "series differ");
    for (k, va) in &sa {
        let vb = sb[k];
        assert!(
            (va - vb).abs() <= 1e-9 * va.abs().max(vb.abs()) || va == &vb,
            "{k}: {va} vs {vb}"
        );
    }
}

/// The series of tests/py/write.py, written by this process.
pub fn write_everything(dir: &Path, i: u32) {
    let r = Registry::new(dir);
    let fi = f64::from(i);
    let values = [
        "plain",
        "q\"uote",
        "back\\slash",
        "new\nline",
        "\u{fc}n\u{ef}\u{1F600}",
        "",
    ];
    let c = r.counter(
        "fc_requests",
        "Requests \"served\" \\ with\nnewline \u{fc}",
        &["method", "label"],
    );
    for (j, v) in values.iter().enumerate() {
        c.with_label_values(&["GET", v])
            .unwrap()
            .inc_by(j as f64 + fi + 0.5);
    }
    r.counter("fc_plain_total", "No labels.", &[])
        .with_label_values(&[])
        .unwrap()
        .inc_by(fi + 1.0);
    for mode in GaugeMode::ALL {
        let g = r.gauge(
            &format!("fc_gauge_{mode}"),
            &format!("Gauge {mode}."),
            &["kind"],
            mode,
        );
        g.with_label_values(&["a\"b"]).unwrap().set(fi * 10.0 - 3.5);
        g.with_label_values(&["x\ny"])
            .unwrap()
            .set(1e6 * (fi + 1.0));
    }
    r.gauge(
        "fc_worker_conns",
        "Seed style.",
        &["pid"],
        GaugeMode::LiveAll,
    )
    .with_label_values(&[&std::process::id().to_string()])
    .unwrap()
    .set(fi + 7.0);
    let h = r.histogram(
        "fc_latency_seconds",
        "Latency.",
        &["route"],
        &[0.001, 0.5, 1.0, 2.5, 1e6, f64::INFINITY],
    );
    let h = h.with_label_values(&["/a\"b"]).unwrap();
    for v in [0.0005, 0.3, 1.0, 2.0, 3.0, 5e5, 2e6] {
        h.observe(v * (fi + 1.0));
    }
    r.histogram("fc_default_hist", "Default buckets.", &[], &[])
        .with_label_values(&[])
        .unwrap()
        .observe(0.2 * fi);
    r.summary("fc_size_bytes", "Sizes.", &["k"])
        .with_label_values(&["z"])
        .unwrap()
        .observe(100.0 * fi + 0.25);
}

/// Runs `write_everything(dir, index)` in a new process (this test binary
/// re-executed with `--exact child_writer`). Returns its pid.
pub fn rust_write(dir: &Path, index: u32) -> u32 {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_writer",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("FC_CHILD_DIR", dir)
        .env("FC_CHILD_INDEX", index.to_string())
        .output()
        .expect("run child");
    assert!(
        out.status.success(),
        "child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let pid = stdout
        .lines()
        .find_map(|l| l.split("CHILD_PID=").nth(1))
        .expect("child printed its pid");
    pid.trim().parse().unwrap()
}

/// The body of the `child_writer` test in each test binary.
pub fn child_writer_body() {
    let (Some(dir), Some(i)) = (
        std::env::var_os("FC_CHILD_DIR"),
        std::env::var_os("FC_CHILD_INDEX"),
    ) else {
        return;
    };
    write_everything(Path::new(&dir), i.to_str().unwrap().parse().unwrap());
    println!("CHILD_PID={}", std::process::id());
}

/// Polls `cond` every 10 ms until it holds, failing after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn db_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".db"))
        .collect();
    v.sort();
    v
}

/// Makes a FIFO at `path` (a file a scrape or a fold must not block on).
pub fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is a NUL-terminated path we own.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "{}", path.display());
}
