//! The shm metrics written by a worker (feature `metrics`), read back with
//! the shm-metrics collector as the supervisor reads them.
#![cfg(feature = "metrics")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Client, TestApp, TestServer, wait_for};
use ferrocorn_shm_metrics::{MultiProcessCollector, Registry, encode_text};
use ferrocorn_worker::WorkerConfig;

fn scrape(dir: &std::path::Path) -> String {
    let families = MultiProcessCollector::new(dir).collect_families();
    let mut out = Vec::new();
    encode_text(&families, &mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn worker_gauges_and_request_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::new(dir.path());
    let s = TestServer::start_with(
        WorkerConfig {
            threads: 4,
            worker_connections: 50,
            ..WorkerConfig::default()
        },
        Arc::new(TestApp),
        move |w| w.metrics(registry),
    );
    let pid = std::process::id();
    let mut c = Client::new(s.connect());
    c.send(b"GET /sleep?300 HTTP/1.1\r\nHost: x\r\n\r\n");
    wait_for(Duration::from_secs(2), "busy thread", || {
        s.stats.active_threads() == 1
    });
    let text = scrape(dir.path());
    for line in [
        format!("gunicorn_max_worker_connections{{pid=\"{pid}\"}} 50.0"),
        format!("gunicorn_max_worker_threads{{pid=\"{pid}\"}} 4.0"),
        format!("gunicorn_active_worker_connections{{pid=\"{pid}\"}} 1.0"),
        format!("gunicorn_active_worker_threads{{pid=\"{pid}\"}} 1.0"),
        format!("gunicorn_pending_requests{{pid=\"{pid}\"}} 1.0"),
    ] {
        assert!(text.contains(&line), "missing {line} in\n{text}");
    }
    assert_eq!(c.response().status, 200);
    c.send(b"POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(c.response().status, 404);
    c.send(b"BREW / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.response().status, 200);
    wait_for(Duration::from_secs(2), "idle", || {
        s.stats.pending_requests() == 0
    });
    let text = scrape(dir.path());
    for line in [
        format!("gunicorn_active_worker_threads{{pid=\"{pid}\"}} 0.0"),
        format!("gunicorn_pending_requests{{pid=\"{pid}\"}} 0.0"),
        "gunicorn_requests_total{method=\"GET\",status=\"200\"} 1.0".to_owned(),
        "gunicorn_requests_total{method=\"POST\",status=\"404\"} 1.0".to_owned(),
        "gunicorn_requests_total{method=\"other\",status=\"200\"} 1.0".to_owned(),
        "gunicorn_request_duration_seconds_count{method=\"GET\"} 1.0".to_owned(),
        "gunicorn_request_duration_seconds_bucket{le=\"0.25\",method=\"GET\"} 0.0".to_owned(),
        "gunicorn_request_duration_seconds_bucket{le=\"0.5\",method=\"GET\"} 1.0".to_owned(),
    ] {
        assert!(text.contains(&line), "missing {line} in\n{text}");
    }
}
