//! The single-process build (`--no-default-features --features
//! metrics,tcpinfo`: no supervisor) exports the listen-queue gauges as the
//! supervisor does, named with `--prefix`, and keeps its private metrics
//! directory as the supervisor does: 0700, a name of its own, removed at
//! exit.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ferrocorn_tests::{Server, samples};

/// The single-process binary, built here in a target directory of its own
/// (the workspace's `target/` keeps the default features' build).
fn single_process_bin() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root");
    let target = root.join("target").join("single-process");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(root)
        .args([
            "build",
            "-q",
            "-p",
            "ferrocorn",
            "--no-default-features",
            "--features",
            "metrics,tcpinfo",
            "--target-dir",
        ])
        .arg(&target)
        .status()
        .expect("run cargo build");
    assert!(
        status.success(),
        "building the single-process binary failed"
    );
    target.join("debug").join("ferrocorn")
}

fn metrics_dirs(tmp: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(tmp)
        .expect("read TMPDIR")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("ferrocorn-metrics-"))
        })
        .collect()
}

#[test]
fn single_process_exports_prefixed_queue_gauges_from_a_private_dir() {
    let bin = single_process_bin();
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut s = Server::builder_wrapped(Command::new(&bin))
        .env("TMPDIR", tmp.path())
        .args(["--prefix", "myapp", "--threads", "2"])
        .start();
    let text = s.scrape();
    let pending = samples(&text, "myapp_pending_connections");
    assert_eq!(pending.len(), 1, "{text}");
    assert!(
        pending[0].contains(&format!("listener=\"http://{}\"", s.addr)),
        "{text}"
    );
    assert_eq!(samples(&text, "myapp_listen_backlog").len(), 1, "{text}");
    assert_eq!(
        samples(&text, "myapp_pending_connections_peak").len(),
        1,
        "{text}"
    );
    assert_eq!(
        samples(&text, "myapp_max_worker_threads").len(),
        1,
        "{text}"
    );
    assert!(!text.contains("gunicorn_"), "no gunicorn_ series:\n{text}");

    // The private directory: one, 0700, with a name not made of the pid alone.
    let dirs = metrics_dirs(tmp.path());
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let name = dirs[0].file_name().unwrap().to_string_lossy().into_owned();
    assert_ne!(
        name,
        format!("ferrocorn-metrics-{}", s.pid()),
        "a guessable name"
    );
    let mode = std::fs::metadata(&dirs[0])
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "{} is {:o}", dirs[0].display(), mode);

    // Removed at exit.
    s.signal(libc::SIGTERM);
    let status = s.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some_and(|st| st.success()),
        "{status:?}\n{}",
        s.stderr()
    );
    assert!(
        metrics_dirs(tmp.path()).is_empty(),
        "left behind: {:?}",
        metrics_dirs(tmp.path())
    );
}
