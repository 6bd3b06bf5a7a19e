//! Running [wrk](https://github.com/wg/wrk) and reading its numbers.
//!
//! wrk's human output rounds latencies to two decimals of a unit it picks;
//! a Lua `done` hook ([`DONE_SCRIPT`]) prints exact microseconds on one line
//! that [`parse`] reads.

use std::io;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The Lua script whose `done` hook prints one `LOADBENCH ...` line.
pub const DONE_SCRIPT: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "LOADBENCH requests=%d duration_us=%d p50_us=%d p99_us=%d max_us=%d connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
"#;

/// What one wrk run measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WrkResult {
    /// Requests completed.
    pub requests: u64,
    /// Wall time of the run in microseconds.
    pub duration_us: u64,
    /// Median latency in microseconds.
    pub p50_us: f64,
    /// 99th percentile latency in microseconds.
    pub p99_us: f64,
    /// Maximum latency in microseconds.
    pub max_us: f64,
    /// Socket errors (connect + read + write + timeout) plus non-2xx/3xx answers.
    pub errors: u64,
    /// CPU seconds (user + system) wrk itself used; 0 when only parsed.
    pub client_cpu_s: f64,
}

impl WrkResult {
    /// Throughput.
    pub fn requests_per_sec(&self) -> f64 {
        self.requests as f64 / (self.duration_us as f64 / 1e6)
    }
}

/// Parses the `LOADBENCH` line of [`DONE_SCRIPT`] out of wrk's stdout.
pub fn parse(output: &str) -> Option<WrkResult> {
    let line = output.lines().find(|l| l.starts_with("LOADBENCH "))?;
    let field = |name: &str| -> Option<f64> {
        line.split_ascii_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))?
            .parse()
            .ok()
    };
    let errors = ["connect", "read", "write", "status", "timeout"]
        .iter()
        .map(|n| field(n).map(|v| v as u64))
        .sum::<Option<u64>>()?;
    Some(WrkResult {
        requests: field("requests")? as u64,
        duration_us: field("duration_us")? as u64,
        p50_us: field("p50_us")?,
        p99_us: field("p99_us")?,
        max_us: field("max_us")?,
        errors,
        client_cpu_s: 0.0,
    })
}

/// Runs `wrk -t threads -c connections -d duration -s script url` (keep-alive,
/// wrk's default) and parses its result, with the CPU time wrk used (the
/// caller must not reap another child meanwhile).
pub fn run(
    url: &str,
    threads: usize,
    connections: usize,
    duration: Duration,
    script: &Path,
) -> io::Result<WrkResult> {
    run_with(url, threads, connections, duration, script, &[])
}

/// As [`run`], with more wrk arguments (`-H "Connection: close"` for a new
/// connection per request).
pub fn run_with(
    url: &str,
    threads: usize,
    connections: usize,
    duration: Duration,
    script: &Path,
    extra: &[&str],
) -> io::Result<WrkResult> {
    let cpu0 = crate::sys::waited_children_cpu_seconds()?;
    let out = Command::new("wrk")
        .args(extra)
        .arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .arg("--timeout")
        .arg("5s")
        .arg("-s")
        .arg(script)
        .arg(url)
        .output()?;
    let client_cpu_s = crate::sys::waited_children_cpu_seconds()? - cpu0;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "wrk failed ({}): {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let mut r = parse(&stdout)
        .ok_or_else(|| io::Error::other(format!("no LOADBENCH line in wrk output: {stdout}")))?;
    r.client_cpu_s = client_cpu_s;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_done_line() {
        let out = "Running 5s test @ http://x\n  2 threads\nLOADBENCH requests=50000 duration_us=5000000 \
                   p50_us=310 p99_us=2200 max_us=9000 connect=0 read=2 write=0 status=1 timeout=0\n";
        let r = parse(out).unwrap();
        assert_eq!(r.requests, 50_000);
        assert_eq!(r.requests_per_sec(), 10_000.0);
        assert_eq!(r.p99_us, 2200.0);
        assert_eq!(r.errors, 3);
        assert!(parse("nothing here").is_none());
    }
}
