//! Benchmarks: one update; a scrape of 64 processes x ~1,000 series, with
//! the ratio against Python's MultiProcessCollector on the same files; and a
//! scrape after 10,000 processes came and went (`FC_BENCH_CHURN` to change).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use ferrocorn_shm_metrics::{GaugeMode, MultiProcessCollector, Registry, mark_process_dead};

mod fixture;
use fixture::{thread_cpu_time, write_process};

fn updates(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let r = Registry::new(dir.path());
    let counter = r
        .counter("bench", "Bench.", &["a"])
        .with_label_values(&["x"])
        .unwrap();
    let gauge = r
        .gauge("bench_gauge", "Bench.", &[], GaugeMode::LiveSum)
        .with_label_values(&[])
        .unwrap();
    let hist = r
        .histogram("bench_hist", "Bench.", &[], &[])
        .with_label_values(&[])
        .unwrap();
    // Per-update CPU time, steadier than criterion's wall clock on a busy machine.
    let n = 20_000_000;
    let (_, cpu) = mean_time(1, || (0..n).for_each(|_| black_box(&counter).inc()));
    eprintln!(
        "counter inc: {:.2} ns CPU per update",
        cpu.as_secs_f64() * 1e9 / f64::from(n)
    );
    let mut g = c.benchmark_group("update");
    g.bench_function("counter_inc", |b| b.iter(|| black_box(&counter).inc()));
    g.bench_function("gauge_set", |b| {
        b.iter(|| black_box(&gauge).set(black_box(3.0)))
    });
    g.bench_function("histogram_observe", |b| {
        b.iter(|| black_box(&hist).observe(black_box(0.3)))
    });
    g.finish();
}

/// A scrape as the supervisor does it: one long-lived collector (it keeps
/// parsed keys between scrapes), merged straight into text.
fn render(collector: &MultiProcessCollector) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 << 20);
    collector.encode_text_to(&mut out);
    out
}

/// Mean (wall clock, thread CPU time) of `f` over `iterations` runs.
fn mean_time(iterations: u32, mut f: impl FnMut()) -> (Duration, Duration) {
    f();
    let start = Instant::now();
    let cpu = thread_cpu_time();
    for _ in 0..iterations {
        f();
    }
    (
        start.elapsed() / iterations,
        (thread_cpu_time() - cpu) / iterations,
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn python_scrape(dir: &Path) -> Option<(Duration, Duration)> {
    let py = std::env::var_os("FERROCORN_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| "python3".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/py_scrape.py");
    let out = Command::new(&py)
        .arg(script)
        .arg(dir)
        .arg("5")
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "python scrape failed (prometheus_client missing?): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut secs = stdout
        .split_whitespace()
        .filter_map(|s| s.parse::<f64>().ok());
    Some((
        Duration::from_secs_f64(secs.next()?),
        Duration::from_secs_f64(secs.next()?),
    ))
}

fn scrapes(c: &mut Criterion) {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("live");
    std::fs::create_dir(&dir).unwrap();
    for id in 0..64 {
        let scratch = root.path().join(format!("scratch{id}"));
        write_process(&scratch, &dir, 100_000 + id);
    }
    let files = std::fs::read_dir(&dir).unwrap().count();
    let collector = MultiProcessCollector::new(&dir);
    let lines = String::from_utf8(render(&collector))
        .unwrap()
        .lines()
        .count();

    // The machine's speed drifts (a shared VM), so ours and Python's are
    // measured in alternation, three rounds, each ratio from one round.
    let load = || {
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split(' ')
            .next()
            .unwrap_or("?")
            .to_string()
    };
    let mut rounds = Vec::new();
    for round in 1..=3 {
        // As the supervisor scrapes: one long-lived collector.
        let (ours, ours_cpu) = mean_time(50, || drop(black_box(render(&collector))));
        // A one-shot scrape (`ferrocorn metrics DIR`): a new collector parses every key.
        let (cold, cold_cpu) = mean_time(20, || {
            drop(black_box(render(&MultiProcessCollector::new(&dir))))
        });
        eprintln!(
            "round {round}, load average {}; scrape 64 processes ({files} files, {lines} lines): \
             ours {:.2} ms wall / {:.2} ms CPU (with a new collector each time {:.2} / {:.2})",
            load(),
            ms(ours),
            ms(ours_cpu),
            ms(cold),
            ms(cold_cpu)
        );
        match python_scrape(&dir) {
            Some((py, py_cpu)) => eprintln!(
                "round {round}: Python MultiProcessCollector + generate_latest on the same files: \
                 {:.1} ms wall / {:.1} ms CPU; ratio {:.0}x wall, {:.0}x CPU \
                 (new collector each time: {:.0}x CPU)",
                ms(py),
                ms(py_cpu),
                py.as_secs_f64() / ours.as_secs_f64(),
                py_cpu.as_secs_f64() / ours_cpu.as_secs_f64(),
                py_cpu.as_secs_f64() / cold_cpu.as_secs_f64()
            ),
            None => eprintln!(
                "Python not measured (set FERROCORN_TEST_PYTHON to a Python with prometheus_client)"
            ),
        }
        rounds.push((ours, ours_cpu));
    }
    rounds.sort_by_key(|r| r.1);
    let (ours, ours_cpu) = rounds[rounds.len() / 2];

    let mut g = c.benchmark_group("scrape");
    g.sample_size(30);
    g.bench_function("64_processes_x_1000_series", |b| {
        b.iter(|| black_box(render(&collector)))
    });

    // 10,000 processes come and go: their files are folded away.
    let churn: u32 = std::env::var("FC_BENCH_CHURN")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let template = root.path().join("template");
    std::fs::create_dir(&template).unwrap();
    write_process(&root.path().join("scratch_t"), &template, 1);
    let template_files: Vec<_> = std::fs::read_dir(&template)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let start = Instant::now();
    let mut fold_time = Duration::ZERO;
    for n in 0..churn {
        let id = 1_000_000 + n;
        for f in &template_files {
            let f = f.to_str().unwrap();
            let to = f.replace("_1.db", &format!("_{id}.db"));
            std::fs::copy(template.join(f), dir.join(to)).unwrap();
        }
        let t = Instant::now();
        mark_process_dead(&dir, id).unwrap();
        fold_time += t.elapsed();
    }
    let files_after = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".db")
        })
        .count();
    let (after, after_cpu) = mean_time(50, || drop(black_box(render(&collector))));
    eprintln!(
        "after {churn} processes came and went ({:.1} s, mark_process_dead {:.2} ms each): {files_after} files \
         (was {files}), scrape {:.2} ms wall / {:.2} ms CPU (was {:.2} / {:.2})",
        start.elapsed().as_secs_f64(),
        ms(fold_time) / f64::from(churn.max(1)),
        ms(after),
        ms(after_cpu),
        ms(ours),
        ms(ours_cpu),
    );
    g.bench_function("64_processes_after_churn", |b| {
        b.iter(|| black_box(render(&collector)))
    });
    g.finish();
}

criterion_group!(benches, updates, scrapes);
criterion_main!(benches);
