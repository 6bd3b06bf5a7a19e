//! A smoke test of the built binary. Its other job: a package's binary is
//! built for `cargo test` only when the package has an integration test, and
//! the end-to-end tests of `ferrocorn-tests` run `target/<profile>/ferrocorn`.

use std::process::Command;

#[test]
fn check_config_of_the_defaults() {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrocorn"))
        .arg("--check-config")
        .env_remove("PORT")
        .env_remove("WEB_CONCURRENCY")
        .env_remove("PROMETHEUS_METRICS_EXPORT_PORT")
        .env_remove("LOGGING_FORMATTER_NAME")
        .output()
        .expect("run ferrocorn");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("config OK"), "{text}");
    assert!(text.contains("127.0.0.1:8000"), "{text}");
}
