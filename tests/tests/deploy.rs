//! The deployment kit (`deploy/`) against the real programs: promtool checks
//! and unit-tests the alerting rules, a real Prometheus scrapes a running
//! ferrocorn with the kit's scrape jobs and evaluates the dashboard's
//! queries, the prometheus-adapter query and the rules, kubernetes-validate
//! checks the manifests, grafana-foundation-sdk the dashboard, and
//! systemd-socket-activate runs ferrocorn as the units do.
//!
//! The checks themselves are `deploy/check.py` (YAML, JSON and HTTP are
//! Python's strengths); each test here runs one of its commands with the
//! test Python (`FERROCORN_TEST_PYTHON`, which scripts/test sets up from
//! scripts/requirements-test.txt) and fails with its output.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use ferrocorn_tests::{ferrocorn_bin, run_to_end};

fn python() -> String {
    let py = std::env::var("FERROCORN_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&py)
        .args([
            "-c",
            "import yaml, kubernetes_validate, grafana_foundation_sdk",
        ])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{py} cannot import yaml, kubernetes_validate and grafana_foundation_sdk: run \
         ./scripts/test, or set FERROCORN_TEST_PYTHON to a python with \
         scripts/requirements-test.txt installed"
    );
    py
}

fn check_py() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/check.py")
}

/// Runs `deploy/check.py COMMAND` and asserts it succeeded.
fn kit(command: &str, with_binary: bool) {
    let mut cmd = Command::new(python());
    cmd.arg(check_py()).arg(command);
    if with_binary {
        cmd.arg("--ferrocorn").arg(ferrocorn_bin());
    }
    let out = run_to_end(cmd, Duration::from_secs(120));
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{report}");
    assert!(out.status.success(), "deploy/check.py {command}:\n{report}");
    assert!(report.contains("OK"), "{report}");
}

#[test]
fn promtool_checks_and_unit_tests_the_rules_and_the_scrape_config() {
    kit("static", false);
}

#[test]
fn kubernetes_manifests_validate_and_agree() {
    kit("kubernetes", false);
}

#[test]
fn grafana_dashboard_is_the_sdk_build() {
    kit("dashboard", false);
}

#[test]
fn prometheus_scrapes_ferrocorn_and_evaluates_the_kit() {
    kit("live", true);
}

#[test]
fn systemd_units_verify_and_socket_activation_serves() {
    kit("systemd", true);
}
