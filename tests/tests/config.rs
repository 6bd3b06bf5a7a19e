//! The command line, the config file and the environment, through the built
//! binary: `--check-config`, `--print-config`, precedence, and the errors a
//! bad setting gets (one line naming the setting, exit 2, no panic).

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use ferrocorn_tests::{
    Server, assert_clean_failure, ferrocorn, ferrocorn_bin, run_to_end, samples, write_file,
};

const QUICK: Duration = Duration::from_secs(10);

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = ferrocorn();
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_to_end(cmd, QUICK)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The effective config printed by `--print-config`, parsed.
fn effective(args: &[&str], env: &[(&str, &str)]) -> toml_like::Table {
    let mut full = args.to_vec();
    full.push("--print-config");
    let out = run(&full, env);
    assert!(
        out.status.success(),
        "--print-config failed: {}",
        stderr(&out)
    );
    toml_like::parse(&stdout(&out))
}

/// Just enough TOML reading for `--print-config`'s flat `key = value` lines.
mod toml_like {
    use std::collections::BTreeMap;

    pub type Table = BTreeMap<String, String>;

    pub fn parse(text: &str) -> Table {
        text.lines()
            .filter_map(|l| l.split_once(" = "))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
            .collect()
    }
}

fn seed_toml() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/seed.toml")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn version_and_help() {
    let out = run(&["--version"], &[]);
    assert!(out.status.success());
    assert!(stdout(&out).starts_with("ferrocorn "), "{}", stdout(&out));
    let out = run(&["-v"], &[]);
    assert!(out.status.success(), "gunicorn's -v: {}", stderr(&out));
    let out = run(&["--help"], &[]);
    assert!(out.status.success());
    let help = stdout(&out);
    for needle in [
        "--bind",
        "--workers",
        "--threads",
        "--worker-connections",
        "--backlog",
        "--timeout",
        "--graceful-timeout",
        "--keep-alive",
        "--max-requests",
        "--max-requests-jitter",
        "--limit-request-line",
        "--limit-request-fields",
        "--limit-request-field-size",
        "--log-level",
        "--access-logfile",
        "--error-logfile",
        "--access-logformat",
        "--pid",
        "--reuse-port",
        "--config",
        "--check-config",
        "--print-config",
        "PROMETHEUS_METRICS_EXPORT_PORT",
        "GUNICORN_METRICS_UPDATE_SECONDS",
        "LOGGING_FORMATTER_NAME",
        "PROMETHEUS_MULTIPROC_DIR",
        "WEB_CONCURRENCY",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
}

#[test]
fn check_config_says_ok_and_exits_0() {
    let out = run(&["-c", &seed_toml(), "--check-config"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.starts_with("config OK"), "{text}");
    assert!(text.contains("seed.toml"), "{text}");
}

#[test]
fn seed_toml_has_the_seeds_settings() {
    let c = effective(&["-c", &seed_toml()], &[]);
    assert_eq!(c["loglevel"], "error");
    assert_eq!(c["keepalive"], "120");
    assert_eq!(c["timeout"], "15");
    assert_eq!(c["graceful_timeout"], "120");
}

#[test]
fn the_seeds_typo_fails_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(
        dir.path(),
        "gunicorn.toml",
        "loglevel = \"error\"\nkeepalive = 120\ntimeout = 15\ngrateful_timeout = 120\n",
    );
    for extra in [&["--check-config"][..], &[][..]] {
        let mut args = vec!["-c", file.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = run(&args, &[]);
        assert_clean_failure(&out, 2, "unknown setting `grateful_timeout`");
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains("did you mean `graceful_timeout`?"), "{err}");
        assert!(err.contains("gunicorn.toml"), "names the file: {err}");
    }
}

#[test]
fn bad_values_name_the_setting_and_source() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "bad.toml", "threads = \"many\"\n");
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            vec!["-c", file.to_str().unwrap()],
            vec![],
            "`threads` in config file",
        ),
        (
            vec!["--threads", "0"],
            vec![],
            "`threads` in command line --threads",
        ),
        (vec!["--log-level", "loud"], vec![], "`loglevel`"),
        (vec!["-b", "127.0.0.1:http"], vec![], "`bind`"),
        (vec!["--app", "nope"], vec![], "`app`"),
        (
            vec!["--access-logformat", "%(h"],
            vec![],
            "`access_log_format`",
        ),
        (vec![], vec![("WEB_CONCURRENCY", "lots")], "WEB_CONCURRENCY"),
        (vec![], vec![("PORT", "eighty")], "PORT"),
        (
            vec![],
            vec![("LOGGING_FORMATTER_NAME", "xml")],
            "LOGGING_FORMATTER_NAME",
        ),
        (
            vec![],
            vec![("PROMETHEUS_METRICS_EXPORT_PORT", "x")],
            "PROMETHEUS_METRICS_EXPORT_PORT",
        ),
        (
            vec![],
            vec![("GUNICORN_METRICS_UPDATE_SECONDS", "0")],
            "GUNICORN_METRICS_UPDATE_SECONDS",
        ),
        (
            vec!["-c", "/nonexistent/ferrocorn.toml"],
            vec![],
            "/nonexistent/ferrocorn.toml",
        ),
    ];
    for (args, env, needle) in cases {
        let mut full = args.clone();
        full.push("--check-config");
        let out = run(&full, &env);
        assert_clean_failure(&out, 2, needle);
        assert_eq!(
            stderr(&out).lines().count(),
            1,
            "{args:?} {env:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let out = run(&["--grateful-timeout", "120"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("--graceful-timeout"),
        "clap suggests the flag: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn precedence_file_then_env_then_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(
        dir.path(),
        "ferrocorn.toml",
        "metrics_port = 9101\nthreads = 2\nlog_format = \"plain\"\nbind = [\"127.0.0.1:9000\", \"unix:/tmp/x.sock\"]\nworkers = 3\n",
    );
    let f = file.to_str().unwrap();

    // The file alone.
    let c = effective(&["-c", f], &[]);
    assert_eq!(c["metrics_port"], "9101");
    assert_eq!(c["threads"], "2");
    assert_eq!(c["workers"], "3");

    // The seed's environment variables beat the file ...
    let env = [
        ("PROMETHEUS_METRICS_EXPORT_PORT", "9102"),
        ("LOGGING_FORMATTER_NAME", "json"),
    ];
    let c = effective(&["-c", f], &env);
    assert_eq!(c["metrics_port"], "9102");
    assert_eq!(c["log_format"], "json");

    // ... and the command line beats both.
    let c = effective(
        &[
            "-c",
            f,
            "--metrics-port",
            "9103",
            "--threads",
            "4",
            "--log-format",
            "plain",
        ],
        &env,
    );
    assert_eq!(c["metrics_port"], "9103");
    assert_eq!(c["threads"], "4");
    assert_eq!(c["log_format"], "plain");

    // PORT and WEB_CONCURRENCY are defaults, as in gunicorn: the file wins.
    let env = [("PORT", "7000"), ("WEB_CONCURRENCY", "5")];
    let c = effective(&["-c", f], &env);
    assert_eq!(c["workers"], "3");
    assert!(!stdout(&run(&["-c", f, "--print-config"], &env)).contains("7000"));
    // Without a file they apply.
    let out = run(&["--print-config"], &env);
    let text = stdout(&out);
    assert!(text.contains("\"0.0.0.0:7000\""), "{text}");
    assert_eq!(toml_like::parse(&text)["workers"], "5");
}

#[test]
fn defaults_are_gunicorns_with_keepalive_120() {
    let c = effective(&[], &[]);
    let expect = [
        ("workers", "1"),
        ("threads", "1"),
        ("worker_connections", "1000"),
        ("backlog", "2048"),
        ("timeout", "30"),
        ("graceful_timeout", "30"),
        ("keepalive", "120"),
        ("max_requests", "0"),
        ("limit_request_line", "4094"),
        ("limit_request_fields", "100"),
        ("limit_request_field_size", "8190"),
        ("loglevel", "info"),
        ("prefix", "gunicorn"),
        ("metrics_port", "8001"),
        ("metrics_update_seconds", "5"),
    ];
    for (k, v) in expect {
        assert_eq!(c.get(k).map(String::as_str), Some(v), "{k}: {c:?}");
    }
    let out = run(&["--print-config"], &[]);
    assert!(
        stdout(&out).contains("bind = [\"127.0.0.1:8000\"]"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn print_config_output_is_a_valid_config_file() {
    let out = run(
        &[
            "--print-config",
            "--threads",
            "3",
            "-b",
            "127.0.0.1:9001",
            "--timeout",
            "0.5",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "printed.toml", &stdout(&out));
    let again = run(&["-c", file.to_str().unwrap(), "--print-config"], &[]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(stdout(&again), stdout(&out));
}

#[test]
fn metrics_subcommand_renders_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["metrics", dir.path().to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(&["metrics", "/nonexistent/metrics-dir"], &[]);
    assert_clean_failure(&out, 1, "/nonexistent/metrics-dir");
}

/// Issue 19: a jitter of u64::MAX passed --check-config, then every worker
/// panicked dividing by `jitter + 1` = 0. Now: out of range, one line, exit 2.
#[test]
fn max_requests_jitter_out_of_range_is_a_config_error() {
    for check in [true, false] {
        let mut args = vec![
            "--max-requests",
            "5",
            "--max-requests-jitter",
            "18446744073709551615",
            "--no-metrics",
            "-b",
            "127.0.0.1:0",
        ];
        if check {
            args.push("--check-config");
        }
        let out = run(&args, &[]);
        assert_clean_failure(&out, 2, "`max_requests_jitter`");
        assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    }
}

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo");
    assert!(status.success(), "mkfifo {}", path.display());
}

/// Issue 19: a FIFO hung the start, a pipe (`-c <(...)`, `-c /dev/stdin`)
/// was read once and empty on reload, /dev/zero filled the memory. Only
/// regular files are config files.
#[test]
fn config_file_must_be_a_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("ferrocorn.toml");
    mkfifo(&fifo);
    let out = run(&["-c", fifo.to_str().unwrap(), "--check-config"], &[]);
    assert_clean_failure(&out, 2, "a pipe or FIFO, not a regular file");
    assert!(stderr(&out).contains(fifo.to_str().unwrap()));

    let mut sh = std::process::Command::new("sh");
    sh.args([
        "-c",
        "printf 'workers = 1\\n' | exec \"$0\" -c /dev/stdin --check-config",
    ])
    .arg(ferrocorn_bin());
    let out = run_to_end(sh, QUICK);
    assert_clean_failure(&out, 2, "/dev/stdin: it is a pipe or FIFO");

    let out = run(&["-c", "/dev/zero", "--check-config"], &[]);
    assert_clean_failure(&out, 2, "/dev/zero: it is a device");
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
}

/// Issue 19: on SIGHUP an empty file (being rewritten) reset every setting
/// to its default, and a FIFO blocked the supervisor in open(2) so that it
/// ignored SIGTERM. Both keep the running config with an error line.
#[test]
fn reload_keeps_the_config_when_the_file_is_empty_or_not_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "f.toml", "threads = 3\n");
    let mut s = Server::builder()
        .args(["-c", file.to_str().unwrap(), "--graceful-timeout", "2"])
        .start();
    let threads = |s: &Server| -> Vec<String> {
        samples(&s.scrape(), "gunicorn_max_worker_threads")
            .into_iter()
            .map(str::to_owned)
            .collect()
    };
    let before = threads(&s);
    assert!(
        before.len() == 1 && before[0].ends_with(" 3.0"),
        "{before:?}"
    );

    write_file(dir.path(), "f.toml", "");
    s.signal(libc::SIGHUP);
    s.wait_stderr(QUICK, "the empty-file reload error", |e| {
        e.contains("is empty and was not at the last load")
    });
    assert!(
        s.stderr()
            .contains("reload failed, keeping the running workers"),
        "{}",
        s.stderr()
    );
    assert_eq!(s.get("/healthz").status, 200);
    assert_eq!(threads(&s), before);

    std::fs::remove_file(&file).unwrap();
    mkfifo(&file);
    s.signal(libc::SIGHUP);
    s.wait_stderr(QUICK, "the FIFO reload error", |e| {
        e.contains("a pipe or FIFO, not a regular file")
    });
    assert_eq!(s.get("/healthz").status, 200);
    assert_eq!(threads(&s), before);

    // The supervisor is not stuck: TERM stops it.
    s.signal(libc::SIGTERM);
    let status = s.wait_exit(QUICK);
    assert!(
        status.is_some_and(|st| st.success()),
        "{status:?}; stderr:\n{}",
        s.stderr()
    );
}

/// Issue 19: --check-config said OK for binds that then failed at start: a
/// unix path longer than a socket address holds, overlapping binds.
#[test]
fn check_config_refuses_binds_that_cannot_be_bound() {
    let long = format!("unix:/tmp/{}.sock", "x".repeat(100));
    let out = run(&["-b", &long, "--no-metrics", "--check-config"], &[]);
    assert_clean_failure(&out, 2, "more than the 107 a socket address holds");
    let out = run(
        &[
            "-b",
            "0.0.0.0:18123",
            "-b",
            "127.0.0.1:18123",
            "--no-metrics",
            "--check-config",
        ],
        &[],
    );
    assert_clean_failure(&out, 2, "0.0.0.0:18123 and 127.0.0.1:18123 overlap");
    let out = run(&["--help"], &[]);
    let help = stdout(&out)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        help.contains("whether a port is free is only found out when serving starts"),
        "{help}"
    );
}

/// Issue 19: `--timeout 1e-10` became 0 (disabled), and a printed
/// `metrics_update_seconds` of 1e-12 read "0" and did not load back; u64
/// values past i64::MAX printed clamped.
#[test]
fn durations_and_integers_print_as_used_and_load_back() {
    for args in [
        &["--timeout", "1e-10"][..],
        &["--metrics-update-seconds", "1e-12"][..],
    ] {
        let mut full = args.to_vec();
        full.push("--print-config");
        let out = run(&full, &[]);
        assert_clean_failure(&out, 2, "less than the smallest duration, 0.001 seconds");
    }
    let out = run(
        &[
            "--limit-request-body",
            "18446744073709551615",
            "--print-config",
        ],
        &[],
    );
    assert_clean_failure(&out, 2, "`limit_request_body`");

    let out = run(
        &[
            "--print-config",
            "--timeout",
            "0.001",
            "--metrics-update-seconds",
            "0.001",
            "--max-requests",
            "9223372036854775807",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = toml_like::parse(&stdout(&out));
    assert_eq!(printed["timeout"], "0.001");
    assert_eq!(printed["metrics_update_seconds"], "0.001");
    assert_eq!(printed["max_requests"], "9223372036854775807");
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "printed.toml", &stdout(&out));
    let again = run(&["-c", file.to_str().unwrap(), "--print-config"], &[]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(stdout(&again), stdout(&out));
}
