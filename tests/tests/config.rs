//! The command line, the config file and the environment, through the built
//! binary: `--check-config`, `--print-config`, precedence, and the errors a
//! bad setting gets (one line naming the setting, exit 2, no panic).

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use ferrocorn_tests::{assert_clean_failure, ferrocorn, run_to_end, write_file};

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
