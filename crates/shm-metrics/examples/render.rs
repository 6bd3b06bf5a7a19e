//! Prints the merged exposition of a multiprocess directory, warnings on stderr.
//!
//! `cargo run -p ferrocorn-shm-metrics --example render -- DIR`

use std::io::Write;

fn main() {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: render DIR");
        std::process::exit(2);
    };
    let collector = ferrocorn_shm_metrics::MultiProcessCollector::new(dir);
    let (families, warnings) = collector.collect_with_warnings();
    for w in warnings {
        eprintln!("warning: {w}");
    }
    let mut out = Vec::new();
    ferrocorn_shm_metrics::encode_text(&families, &mut out);
    std::io::stdout().write_all(&out).expect("write stdout");
}
