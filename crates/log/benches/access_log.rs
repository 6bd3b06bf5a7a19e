//! Cost of one access-log line: format gunicorn's default `access_log_format`
//! for a typical request and write it (one `write(2)`) to `/dev/null`, in
//! each format. Peer, measured in the same run: slog-term's `FullFormat`
//! (the stock slog text drain) writing a pre-formatted line of the same
//! length with `pid` and `tid`, behind its own mutex, to `/dev/null`.
//!
//! `cargo bench -p ferrocorn-log --bench access_log`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use ferrocorn_log::{
    AccessLogFormat, AccessRecord, ColorChoice, Destination, Format, HeldLines, LogConfig, Logs,
};

const REQUEST_HEADERS: &[(&str, &[u8])] = &[
    ("Host", b"api.example.com"),
    ("User-Agent", b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"),
    ("Accept", b"application/json"),
    ("Referer", b"https://example.com/dashboard"),
    ("Accept-Encoding", b"gzip, deflate, br"),
];

const RESPONSE_HEADERS: &[(&str, &[u8])] = &[
    ("Content-Type", b"application/json"),
    ("Content-Length", b"1532"),
];

fn record() -> AccessRecord<'static> {
    AccessRecord {
        remote: Some("10.1.2.3:53412".parse().unwrap()),
        method: "GET",
        target: "/api/v1/items?page=2&per_page=50",
        path: "/api/v1/items",
        query: "page=2&per_page=50",
        version: "HTTP/1.1",
        status: 200,
        response_bytes: Some(1532),
        request_time: Duration::from_micros(2345),
        request_headers: REQUEST_HEADERS,
        response_headers: RESPONSE_HEADERS,
        pid: std::process::id(),
    }
}

fn logs(format: Format) -> Logs {
    Logs::new(&LogConfig {
        format,
        color: ColorChoice::Never,
        error_log: Destination::File("/dev/null".into()),
        access_log: Some(Destination::File("/dev/null".into())),
        ..LogConfig::default()
    })
    .expect("logs to /dev/null")
}

/// The peer: slog-term's FullFormat on a PlainSyncDecorator over /dev/null.
fn slog_term_logger() -> slog::Logger {
    let file = std::fs::OpenOptions::new()
        .append(true)
        .open("/dev/null")
        .unwrap();
    let decorator = slog_term::PlainSyncDecorator::new(file);
    let drain = slog_term::FullFormat::new(decorator)
        .use_utc_timestamp()
        .build();
    slog::Logger::root(slog::Drain::fuse(drain), slog::o!())
}

fn peer_line() -> String {
    let mut v = Vec::new();
    AccessLogFormat::default().render(&record(), &mut v);
    String::from_utf8(v).unwrap()
}

type Case = (&'static str, Box<dyn FnMut()>);

/// The held case logs this many lines per call (one loop turn's worth).
const HELD_BATCH: u32 = 32;
const HELD_CASE: &str = "json, held (32 per write)";

fn cases() -> Vec<Case> {
    let rec = record();
    let mut out: Vec<Case> = Vec::new();
    for (name, format) in [
        ("plain", Format::Plain),
        ("console", Format::Console),
        ("json", Format::Json),
    ] {
        if !format.is_available() {
            continue; // built without the `structured` feature
        }
        let logs = logs(format);
        out.push((
            name,
            Box::new(move || logs.access().unwrap().log(black_box(&rec))),
        ));
    }
    if Format::Json.is_available() {
        // As the worker's loop writes them: held, one write per turn of
        // HELD_BATCH lines (a call is one turn; the summary divides).
        let logs = logs(Format::Json);
        out.push((
            HELD_CASE,
            Box::new(move || {
                let held = HeldLines::new();
                for _ in 0..HELD_BATCH {
                    logs.access().unwrap().log(black_box(&rec));
                }
                drop(held);
            }),
        ));
    }
    let format = AccessLogFormat::default();
    let mut buf = Vec::with_capacity(512);
    out.push((
        "render only (no write)",
        Box::new(move || {
            buf.clear();
            format.render(black_box(&rec), &mut buf);
            black_box(&buf);
        }),
    ));
    // Baselines: what the machine charges for the parts we cannot avoid.
    let mut devnull = std::fs::OpenOptions::new()
        .append(true)
        .open("/dev/null")
        .unwrap();
    let mut line = peer_line().into_bytes();
    line.push(b'\n');
    out.push((
        "baseline: write(2) the line",
        Box::new(move || {
            use std::io::Write;
            devnull.write_all(black_box(&line)).unwrap();
        }),
    ));
    out.push((
        "baseline: SystemTime::now()",
        Box::new(|| {
            black_box(std::time::SystemTime::now());
        }),
    ));
    let peer = slog_term_logger();
    let line = peer_line();
    let pid = std::process::id();
    out.push((
        "peer: slog-term FullFormat",
        Box::new(move || {
            slog::info!(peer, "{}", black_box(&line); "pid" => pid, "tid" => 1u64);
        }),
    ));
    out
}

/// ns per call, from a plain timed loop (for the ratio summary).
fn ns_per_call(f: &mut dyn FnMut(), iters: u32) -> f64 {
    for _ in 0..iters / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    start.elapsed().as_nanos() as f64 / f64::from(iters)
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    {
        let mut group = c.benchmark_group("access_line_to_dev_null");
        for (name, mut f) in cases() {
            group.bench_function(name, |b| b.iter(&mut f));
        }
        group.finish();
    }
    c.final_summary();

    // One line per case with the ratio to the peer. The cases take turns
    // (20 rounds of 10k lines each) and each keeps its fastest round, so
    // that load from elsewhere on the machine skews them alike.
    let mut cases = cases();
    let mut best = vec![f64::INFINITY; cases.len()];
    for _ in 0..20 {
        for (i, (name, f)) in cases.iter_mut().enumerate() {
            let ns = if *name == HELD_CASE {
                ns_per_call(f.as_mut(), 10_000 / HELD_BATCH) / f64::from(HELD_BATCH)
            } else {
                ns_per_call(f.as_mut(), 10_000)
            };
            best[i] = best[i].min(ns);
        }
    }
    let peer = best.last().copied().unwrap_or(f64::NAN);
    println!(
        "\nns per access line (fastest of 20 interleaved rounds of 10k lines, 1 thread, /dev/null):"
    );
    for ((name, _), ns) in cases.iter().zip(&best) {
        println!("  {name:<28} {ns:>8.0} ns   {:>5.2}x slog-term", ns / peer);
    }
}
