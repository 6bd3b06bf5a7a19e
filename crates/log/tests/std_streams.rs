//! The standard-stream destinations, in a real process: the error log on
//! stderr and the access log on stdout (the seed's layout), written with
//! `write(2)` on fds 2 and 1, without colors when they are pipes.

mod common;

use std::process::Command;

use ferrocorn_log::{Destination, Format, Level, LogConfig, Logs};

const HELPER_ENV: &str = "FERROCORN_LOG_STREAMS_HELPER";

#[test]
fn streams_helper() {
    let Ok(format) = std::env::var(HELPER_ENV) else {
        return;
    };
    let logs = Logs::new(&LogConfig {
        format: format.parse().unwrap(),
        level: Level::Info,
        error_log: Destination::parse_error_log("-").unwrap(),
        access_log: Some("-".parse().unwrap()),
        ..LogConfig::default()
    })
    .unwrap();
    slog::info!(logs.error(), "to stderr");
    logs.access().unwrap().log(&common::record());
    logs.flush();
}

fn run(format: Format) -> (Vec<String>, Vec<String>) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "streams_helper", "--test-threads=1", "--quiet"])
        .env(HELPER_ENV, format.as_str())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = |b: &[u8]| -> Vec<String> {
        String::from_utf8(b.to_vec())
            .unwrap()
            .lines()
            .filter(|l| l.contains("to stderr") || l.contains("127.0.0.1"))
            .map(str::to_owned)
            .collect()
    };
    (lines(&out.stdout), lines(&out.stderr))
}

#[test]
fn error_log_to_stderr_access_log_to_stdout() {
    let mut formats = vec![Format::Plain];
    if cfg!(feature = "structured") {
        formats.extend([Format::Console, Format::Json]);
    }
    for format in formats {
        let (stdout, stderr) = run(format);
        assert_eq!(stdout.len(), 1, "{format}: stdout {stdout:?}");
        assert_eq!(stderr.len(), 1, "{format}: stderr {stderr:?}");
        assert!(
            stdout[0].contains(r#""GET /search?q=\"1\" HTTP/1.1" 200 1234"#)
                || stdout[0].contains(r#"\"GET /search?q=\\\"1\\\" HTTP/1.1\" 200 1234"#),
            "{format}: {}",
            stdout[0]
        );
        assert!(stderr[0].contains("to stderr"), "{format}: {}", stderr[0]);
        for line in stdout.iter().chain(&stderr) {
            assert!(
                !line.contains('\x1b'),
                "{format}: colors on a pipe: {line:?}"
            );
        }
    }
}
