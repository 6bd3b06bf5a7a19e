//! Repeats scrapes of a directory for profilers (callgrind, perf) and prints
//! the mean thread CPU time per scrape.
//!
//! `cargo run --release -p ferrocorn-shm-metrics --example scrape_profile -- DIR [N] [warm|cold]`
//!
//! When DIR does not exist it is filled with the benchmark's 64 processes x
//! ~1,000 series first, by a child process (`scrape_profile DIR 0 write`). `warm` (the default) scrapes N times with one
//! long-lived collector, as the supervisor does, after one scrape that is not
//! counted; `cold` makes a new collector for each scrape, as
//! `ferrocorn metrics DIR` does.

use std::path::PathBuf;

use ferrocorn_shm_metrics::MultiProcessCollector;

#[path = "../benches/fixture/mod.rs"]
mod fixture;
use fixture::thread_cpu_time;

fn render(collector: &MultiProcessCollector) -> usize {
    let mut out = Vec::with_capacity(1 << 20);
    collector.encode_text_to(&mut out);
    std::hint::black_box(&out);
    out.len()
}

fn main() {
    let mut args = std::env::args_os().skip(1);
    let Some(dir) = args.next().map(PathBuf::from) else {
        eprintln!("usage: scrape_profile DIR [N] [warm|cold]");
        std::process::exit(2);
    };
    let n: u32 = args
        .next()
        .and_then(|s| s.to_str()?.parse().ok())
        .unwrap_or(100);
    let cold = args.next().is_some_and(|m| m == "cold");
    if std::env::args_os().nth(3).is_some_and(|m| m == "write") {
        std::fs::create_dir_all(&dir).expect("create DIR");
        // Next to DIR: the files are renamed into it, within one file system.
        let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
        let scratch = tempfile::tempdir_in(parent.unwrap_or(std::path::Path::new(".")))
            .expect("scratch directory");
        for id in 0..64 {
            fixture::write_process(&scratch.path().join(format!("p{id}")), &dir, 100_000 + id);
        }
        return;
    }
    if !dir.exists() {
        // Written by a child process, as workers write the files a
        // supervisor reads: this process must not hold them mapped.
        let status = std::process::Command::new(std::env::current_exe().expect("own path"))
            .arg(&dir)
            .arg("0")
            .arg("write")
            .status()
            .expect("run a writer");
        assert!(status.success(), "the writer failed");
    }

    let collector = MultiProcessCollector::new(&dir);
    let bytes = render(&collector);
    let start = thread_cpu_time();
    for _ in 0..n {
        if cold {
            render(&MultiProcessCollector::new(&dir));
        } else {
            render(&collector);
        }
    }
    let per = (thread_cpu_time() - start) / n.max(1);
    println!(
        "{} scrape: {:.3} ms CPU ({bytes} bytes of text)",
        if cold { "cold" } else { "warm" },
        per.as_secs_f64() * 1e3
    );
}
