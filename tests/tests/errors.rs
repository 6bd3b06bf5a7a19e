//! Failures at startup: a bad bind, a log file that cannot be opened, a
//! missing permission. Each is one clear line on stderr, a non-zero exit,
//! no panic and no backtrace.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::time::Duration;

use ferrocorn_tests::{assert_clean_failure, ferrocorn, free_port, run_to_end};

#[test]
fn address_in_use() {
    // gunicorn retries a bind 5 times, 1 s apart; so does ferrocorn.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let mut cmd = ferrocorn();
    cmd.args([
        "-b",
        &addr.to_string(),
        "--log-format",
        "plain",
        "--no-metrics",
    ]);
    let out = run_to_end(cmd, Duration::from_secs(15));
    assert_clean_failure(&out, 1, &addr.to_string());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Connection in use"), "{err}");
}

#[test]
fn unix_path_that_is_not_a_socket() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, "data").unwrap();
    let mut cmd = ferrocorn();
    cmd.args([
        "-b",
        &format!("unix:{}", file.display()),
        "--log-format",
        "plain",
        "--no-metrics",
    ]);
    let out = run_to_end(cmd, Duration::from_secs(15));
    assert_clean_failure(&out, 1, &file.display().to_string());
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "data",
        "the file is left alone"
    );
}

#[test]
fn error_log_in_a_missing_directory() {
    let mut cmd = ferrocorn();
    cmd.args([
        "-b",
        &format!("127.0.0.1:{}", free_port()),
        "--error-logfile",
        "/nonexistent/dir/error.log",
        "--no-metrics",
    ]);
    let out = run_to_end(cmd, Duration::from_secs(10));
    assert_clean_failure(&out, 1, "/nonexistent/dir/error.log");
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}

/// Issue 19: the pidfile's write error said only "No such file or
/// directory (os error 2)"; it names the setting and the path.
#[test]
fn pidfile_in_a_missing_directory() {
    let mut cmd = ferrocorn();
    cmd.args([
        "-b",
        &format!("127.0.0.1:{}", free_port()),
        "--pid",
        "/nonexistent/dir/ferrocorn.pid",
        "--log-format",
        "plain",
        "--no-metrics",
    ]);
    let out = run_to_end(cmd, Duration::from_secs(10));
    assert_clean_failure(
        &out,
        1,
        "cannot write pidfile /nonexistent/dir/ferrocorn.pid: No such file or directory",
    );
}

/// A log file the user may not write: as root, run as `nobody` (65534).
#[test]
fn missing_permission() {
    let dir = tempfile::tempdir().unwrap();
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o500)).unwrap();
    let log = locked.join("error.log");
    let mut cmd = ferrocorn();
    cmd.args([
        "-b",
        &format!("127.0.0.1:{}", free_port()),
        "--error-logfile",
        log.to_str().unwrap(),
        "--no-metrics",
    ]);
    // SAFETY: geteuid() only reads the process's credentials.
    if unsafe { libc::geteuid() } == 0 {
        // root writes anywhere: test as nobody, who may run the binary
        // (target directories are world-readable) but not write there.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        cmd.uid(65534).gid(65534);
    }
    let out = run_to_end(cmd, Duration::from_secs(10));
    assert_clean_failure(&out, 1, "Permission denied");
    assert!(String::from_utf8_lossy(&out.stderr).contains(log.to_str().unwrap()));
}

#[test]
fn bind_to_an_address_not_on_this_host() {
    let mut cmd = ferrocorn();
    // TEST-NET-1 (RFC 5737): never a local address.
    cmd.args([
        "-b",
        "192.0.2.1:8080",
        "--log-format",
        "plain",
        "--no-metrics",
    ]);
    let out = run_to_end(cmd, Duration::from_secs(15));
    assert_clean_failure(&out, 1, "192.0.2.1:8080");
}
