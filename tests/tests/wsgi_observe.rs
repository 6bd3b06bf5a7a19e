//! A Python app's own metrics, logs and stuck threads in ferrocorn's
//! pipeline (issue 24), with a real WSGI app (tests/wsgi/observed.py)
//! served by the binary in the test venv (`FERROCORN_TEST_PYTHON`, which
//! has prometheus_client), checked against prometheus_client's own
//! MultiProcessCollector and promtool.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ferrocorn_tests::{
    Server, children, promtool_parses, test_python, test_venv, wait_for, wsgi_apps,
};

/// A server for tests/wsgi/observed.py in the test venv.
fn observed_server(extra: &[&str]) -> Server {
    let venv = test_venv("prometheus_client");
    let chdir = wsgi_apps();
    let mut args = vec!["--chdir", chdir.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.push("observed:application");
    Server::builder()
        .env("VIRTUAL_ENV", &venv)
        .args(args)
        .start()
}

/// prometheus_client's MultiProcessCollector over `dir`, as text.
fn python_exposition(dir: &Path) -> String {
    let out = Command::new(test_python())
        .args([
            "-c",
            "import sys\n\
             from prometheus_client import CollectorRegistry, generate_latest, multiprocess\n\
             r = CollectorRegistry()\n\
             multiprocess.MultiProcessCollector(r, path=sys.argv[1])\n\
             sys.stdout.write(generate_latest(r).decode())\n",
        ])
        .arg(dir)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "MultiProcessCollector failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The families of an exposition, by name: HELP and TYPE lines and
/// samples, sorted.
fn families(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = String::new();
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("# HELP ") {
            current = rest.split(' ').next().unwrap_or("").to_string();
        }
        out.entry(current.clone()).or_default().push(l.to_string());
    }
    for v in out.values_mut() {
        v.sort();
    }
    out
}

/// Waits until ferrocorn's scrape and prometheus_client's collector over
/// the directory agree on every family the collector finds there (the
/// app's, and the workers' own; the scrape adds the supervisor's), sample
/// for sample (they read at different instants: a fold or a request may
/// come between), then returns them.
fn agreeing(server: &Server, dir: &Path) -> BTreeMap<String, Vec<String>> {
    let mut last = (BTreeMap::new(), BTreeMap::new());
    let agreed = wait_for(Duration::from_secs(20), || {
        let theirs = families(&python_exposition(dir));
        let mut ours = families(&server.scrape());
        ours.retain(|k, _| theirs.contains_key(k));
        let same = ours == theirs && !ours.is_empty();
        last = (ours, theirs);
        same
    });
    if !agreed {
        let (ours, theirs) = &last;
        let mut diff = Vec::new();
        for (k, v) in ours {
            if theirs.get(k) != Some(v) {
                diff.push(format!("{k}:\n ours {v:#?}\n python {:#?}", theirs.get(k)));
            }
        }
        for k in theirs.keys().filter(|k| !ours.contains_key(*k)) {
            diff.push(format!("{k}: only in python's"));
        }
        panic!(
            "the scrape and MultiProcessCollector disagree:\n{}",
            diff.join("\n")
        );
    }
    last.0
}

fn value(families: &BTreeMap<String, Vec<String>>, family: &str, series: &str) -> Option<f64> {
    families
        .get(family)?
        .iter()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The `.db` files in `dir`.
fn db_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".db"))
        .collect();
    v.sort();
    v
}

fn hit(server: &Server, n: u32) -> u32 {
    let r = server.get(&format!("/hit/{n}"));
    assert_eq!(r.status, 200, "{}", server.stderr());
    r.text().parse().unwrap()
}

/// The app's Counter, Histogram, Summary and Gauges in all ten modes, as
/// ferrocorn scrapes them and as prometheus_client's own collector reads
/// the same directory: the same samples while the workers serve, and
/// after max_requests replaced them (live gauges of dead workers gone,
/// counters and histograms folded, files bounded); ferrocorn's own
/// request counter is in the same scrape; promtool accepts it. Run
/// with and without --preload (the app imported before the fork).
#[test]
fn the_apps_prometheus_client_metrics_in_the_scrape_agreeing_with_test_python() {
    for preload in [false, true] {
        let state = tempfile::tempdir().unwrap();
        let dir = state.path().join("metrics");
        let mut args = vec![
            "-w",
            "2",
            "--threads",
            "2",
            "--max-requests",
            "6",
            "--metrics-dir",
            dir.to_str().unwrap(),
        ];
        if preload {
            args.push("--preload");
        }
        let server = observed_server(&args);
        // Fewer than max_requests for each worker: nobody replaced yet
        // (the health check of the start counts as a request).
        let mut pids = Vec::new();
        for n in 1..=4 {
            pids.push(hit(&server, n));
        }
        let families = agreeing(&server, &dir);
        assert!(
            families.contains_key("gunicorn_requests_total"),
            "{families:#?}"
        );
        assert_eq!(
            value(&families, "app_hits_total", "app_hits_total{path=\"/hit\"}"),
            Some(4.0),
            "{families:#?}"
        );
        assert_eq!(
            value(&families, "app_idle_total", "app_idle_total"),
            Some(0.0)
        );
        assert_eq!(
            value(&families, "app_size", "app_size_count{path=\"/hit\"}"),
            Some(4.0)
        );
        assert_eq!(
            value(&families, "app_time_seconds", "app_time_seconds_count"),
            Some(4.0)
        );
        let pid = pids[0];
        assert!(
            value(
                &families,
                "app_gauge_liveall",
                &format!("app_gauge_liveall{{kind=\"one\",pid=\"{pid}.py\"}}")
            )
            .is_some(),
            "{families:#?}"
        );
        let text = server.scrape();
        assert!(
            text.contains("app_hits_total{path=\"/hit\"} 4.0\n"),
            "{text}"
        );
        promtool_parses(&text);
        // No file of the app is a file of ferrocorn's writer.
        let files = db_files(&dir);
        assert!(
            files.iter().any(|f| f == &format!("counter_{pid}.py.db")),
            "{files:?}"
        );
        assert!(
            files.iter().any(|f| f == &format!("counter_{pid}.db")),
            "{files:?}"
        );

        // Past max_requests: workers replaced, several times over.
        let total = 40;
        let mut seen = pids.clone();
        for n in 5..=total {
            seen.push(hit(&server, n % 7));
        }
        seen.sort_unstable();
        seen.dedup();
        assert!(seen.len() > 2, "workers were replaced: {seen:?}");
        // Wait until the dead ones are gone from the directory.
        let alive = |p: &u32| children(server.pid()).contains(p);
        assert!(
            wait_for(Duration::from_secs(20), || {
                let files = db_files(&dir);
                seen.iter().filter(|p| !alive(p)).all(|p| {
                    !files.iter().any(|f| {
                        f.contains(&format!("_{p}.py.db")) || f.contains(&format!("_{p}.db"))
                    })
                })
            }),
            "dead workers' files stay: {:?}",
            db_files(&dir)
        );
        let families = agreeing(&server, &dir);
        assert_eq!(
            value(&families, "app_hits_total", "app_hits_total{path=\"/hit\"}"),
            Some(f64::from(total)),
            "{families:#?}"
        );
        assert_eq!(
            value(&families, "app_size", "app_size_count{path=\"/hit\"}"),
            Some(f64::from(total))
        );
        // Live gauges only of the living workers.
        for l in &families["app_gauge_liveall"] {
            if let Some(p) = l.split("pid=\"").nth(1) {
                let p: u32 = p.split('.').next().unwrap().parse().unwrap();
                assert!(alive(&p), "a dead worker's live gauge: {l}");
            }
        }
        // Bounded: each living worker's files, the aggregates, nothing else.
        let files = db_files(&dir);
        assert!(
            files.iter().all(|f| f.contains("_aggregate.")
                || children(server.pid())
                    .iter()
                    .any(|p| f.contains(&format!("_{p}.")))),
            "{files:?}"
        );
        let text = server.scrape();
        promtool_parses(&text);
        assert!(
            text.contains("gunicorn_requests_total{method=\"GET\",status=\"200\"}"),
            "ferrocorn's own series beside the app's: {text}"
        );
    }
}

/// The error log's lines that are JSON objects.
fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// GET `path` from a thread of its own (the answer never comes: the
/// worker is killed).
fn get_in_background(addr: std::net::SocketAddr, path: &str) {
    let path = path.to_string();
    std::thread::spawn(move || {
        let _ = ferrocorn_tests::request(addr, "GET", &path, &[], b"");
    });
}

/// At a WORKER TIMEOUT the error log gets, before the kill, the Python
/// stack of the thread running a request, with its method, path and age,
/// as one JSON line: for `time.sleep`, a socket read and a pure-Python
/// busy loop, and in the app's response generator (each stack names the
/// app's function); for a thread holding
/// the GIL in C code, a record saying the stack could not be taken, and
/// the worker is killed all the same. Each time a new worker serves.
#[test]
fn a_stuck_worker_leaves_the_stack_of_its_requests_in_the_error_log() {
    let server = observed_server(&[
        "-w",
        "1",
        "--threads",
        "1",
        "--timeout",
        "2",
        "--no-metrics",
        "--log-format",
        "json",
    ]);
    let cases = [
        ("/stuck/sleep", Some("sleepy_function")),
        ("/stuck/busy", Some("busy_python_loop")),
        ("/stuck/socket", Some("waits_for_a_socket")),
        ("/stuck/generator", Some("slow_generator")),
        ("/stuck/cgil", None),
    ];
    for (path, function) in cases {
        let pid: u32 = server.get("/pid").text().parse().unwrap();
        get_in_background(server.addr, path);
        let find = |text: &str| {
            json_lines(text).into_iter().find(|v| {
                v["path"] == path
                    && v["event"]
                        .as_str()
                        .is_some_and(|e| e.starts_with("WORKER TIMEOUT: "))
            })
        };
        server.wait_stderr(
            Duration::from_secs(30),
            &format!("the stack of {path}"),
            |t| find(t).is_some(),
        );
        let record = find(&server.stderr()).unwrap();
        assert_eq!(record["method"], "GET");
        assert_eq!(record["level"], "critical");
        assert!(record["age"].as_f64().is_some_and(|a| a >= 2.0), "{record}");
        assert!(record["pid"] == pid, "{record}");
        match function {
            Some(f) => {
                let stack = record["stack"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{record}"));
                assert!(stack.contains(&format!("in {f}")), "{stack}");
                assert!(stack.contains("observed.py"), "{stack}");
            }
            None => {
                let event = record["event"].as_str().unwrap();
                assert!(event.contains("could not be taken"), "{record}");
            }
        }
        // The worker died, a new one serves.
        let new = wait_for(Duration::from_secs(30), || {
            ferrocorn_tests::request(server.addr, "GET", "/pid", &[], b"")
                .is_ok_and(|r| r.status == 200 && r.text().parse::<u32>().is_ok_and(|p| p != pid))
        });
        assert!(new, "no new worker after {path}: {}", server.stderr());
        // (The old worker may still be exiting, or a zombie not yet reaped,
        // when its replacement answers.)
        assert!(
            wait_for(Duration::from_secs(10), || !children(server.pid())
                .contains(&pid)),
            "worker {pid} still a child after {path}"
        );
        // It died of its SIGABRT, inside the supervisor's grace: not of
        // the SIGKILL that follows it (the kill is on time).
        let died = format!("Worker (pid:{pid}) was sent SIGABRT");
        server.wait_stderr(Duration::from_secs(10), &died, |t| t.contains(&died));
    }
    // One JSON line per record: every line of the error log parses.
    let err = server.stderr();
    for l in err.lines() {
        assert!(
            serde_json::from_str::<serde_json::Value>(l).is_ok(),
            "not JSON: {l}"
        );
    }
}

/// The error log's JSON record whose `event` is `event`.
fn record(server: &Server, event: &str) -> serde_json::Value {
    let mut found = None;
    wait_for(Duration::from_secs(10), || {
        found = json_lines(&server.stderr())
            .into_iter()
            .find(|v| v["event"] == event);
        found.is_some()
    });
    found.unwrap_or_else(|| panic!("no record {event:?} in:\n{}", server.stderr()))
}

/// The app's Python logging in ferrocorn's error log, json mode: the
/// seed's keys (event, level, logger, pid, tid = the Python thread's
/// ident, timestamp), `extra` fields as keys, a traceback as one
/// `exception` field, each record one JSON line; the level follows
/// --log-level; the app's own handler keeps working; wsgi.errors line by
/// line as logger `wsgi`; print() stays on stdout without capture_output.
#[test]
fn the_apps_logging_comes_out_as_ferrocorns_json_with_the_seeds_keys() {
    let state = tempfile::tempdir().unwrap();
    let own = state.path().join("own.log");
    let venv = test_venv("prometheus_client");
    let chdir = wsgi_apps();
    let server = Server::builder()
        .env("VIRTUAL_ENV", &venv)
        .env("OBSERVED_LOG_FILE", &own)
        .args([
            "--chdir",
            chdir.to_str().unwrap(),
            "--no-metrics",
            "--threads",
            "2",
            "--log-format",
            "json",
            "observed:application",
        ])
        .start();
    let worker_pid: u64 = server.get("/pid").text().parse().unwrap();

    let tid: u64 = server.get("/log/warning").text().parse().unwrap();
    let r = record(&server, "hello world");
    assert_eq!(r["level"], "warning", "{r}");
    assert_eq!(r["logger"], "observed.views", "{r}");
    assert_eq!(r["pid"], worker_pid, "{r}");
    assert_eq!(r["tid"], tid, "{r}");
    assert!(
        r["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{r}"
    );
    assert_eq!(r["user_id"], 42, "{r}");
    assert_eq!(r["ratio"], 0.5, "{r}");
    assert_eq!(r["flag"], true, "{r}");
    assert_eq!(r["who"], "a \"quoted\" name", "{r}");
    assert_eq!(r["obj"], "[1, 2]", "{r}");
    // The seed's keys first, in its order, then the extra fields.
    let err = server.stderr();
    let line = err.lines().find(|l| l.contains("\"hello world\"")).unwrap();
    let at = |k: &str| line.find(&format!("\"{k}\":")).unwrap_or(usize::MAX);
    let order = [
        "event",
        "level",
        "logger",
        "pid",
        "tid",
        "timestamp",
        "user_id",
    ];
    assert!(order.windows(2).all(|w| at(w[0]) < at(w[1])), "{line}");

    server.get("/log/exception");
    let r = record(&server, "it failed");
    assert_eq!(r["level"], "error", "{r}");
    let exc = r["exception"].as_str().unwrap_or_else(|| panic!("{r}"));
    assert!(
        exc.starts_with("Traceback (most recent call last):"),
        "{exc}"
    );
    assert!(exc.contains("in divide_by_zero"), "{exc}");
    assert!(
        exc.ends_with("ZeroDivisionError: division by zero"),
        "{exc}"
    );

    // The level follows --log-level (info): debug records are dropped.
    server.get("/log/debug");
    record(&server, "an info record");
    assert!(!server.stderr().contains("a debug record"));

    // The app's own handler keeps working, and the root gets it too.
    server.get("/log/own");
    let r = record(&server, "to my own file too");
    assert_eq!(r["logger"], "observed.own");
    assert!(
        wait_for(Duration::from_secs(5), || std::fs::read_to_string(&own)
            .is_ok_and(
                |t| t.contains("MINE INFO observed.own to my own file too")
            )),
        "{:?}",
        std::fs::read_to_string(&own)
    );

    // wsgi.errors: line by line, logger `wsgi`.
    server.get("/errors");
    for line in ["first line", "second line", "third line"] {
        let r = record(&server, line);
        assert_eq!(r["logger"], "wsgi", "{r}");
        assert_eq!(r["level"], "error", "{r}");
    }

    // Every line of the error log is one JSON object.
    for l in server.stderr().lines() {
        assert!(
            serde_json::from_str::<serde_json::Value>(l).is_ok(),
            "not JSON: {l}"
        );
    }

    // Without capture_output, print() goes to the process's stdout (and
    // sys.stderr to its stderr, raw).
    server.get("/print");
    assert!(wait_for(Duration::from_secs(5), || server
        .stdout()
        .contains("printed out")));
    assert!(!server.stderr().contains("\"printed out\""));
}

/// `--log-level debug` lets the app's debug records through; with
/// `--capture-output` print() and sys.stderr writes go to the error log
/// (loggers `stdout` and `stderr`), in the plain format too.
#[test]
fn capture_output_and_the_level_in_the_plain_format() {
    let venv = test_venv("prometheus_client");
    let chdir = wsgi_apps();
    let server = Server::builder()
        .env("VIRTUAL_ENV", &venv)
        .args([
            "--chdir",
            chdir.to_str().unwrap(),
            "--no-metrics",
            "--log-level",
            "debug",
            "--capture-output",
            "--log-format",
            "plain",
            "observed:application",
        ])
        .start();
    server.get("/log/debug");
    server.wait_stderr(Duration::from_secs(10), "the debug record", |t| {
        t.contains("[DEBUG] a debug record")
    });
    server.get("/print");
    server.wait_stderr(Duration::from_secs(10), "print() in the error log", |t| {
        t.contains("[INFO] printed out") && t.contains("[ERROR] printed to stderr")
    });
    assert!(!server.stdout().contains("printed out"));
}

/// Python requests in ferrocorn's own pipeline exactly as Rust ones: the
/// request counter by method and status, the duration histogram, the
/// worker gauges and the access log; and `gunicorn_python_gil_wait_seconds`
/// has one observation per request.
#[test]
fn python_requests_are_counted_timed_and_logged_and_their_gil_wait_observed() {
    let server = observed_server(&["-w", "1", "--threads", "2", "--access-logfile", "-"]);
    let pid: u32 = server.get("/pid").text().parse().unwrap();
    let count = |text: &str, series: &str| ferrocorn_tests::sample(text, series).unwrap_or(0.0);
    let ok = "gunicorn_requests_total{method=\"GET\",status=\"200\"}";
    let missing = "gunicorn_requests_total{method=\"GET\",status=\"404\"}";
    let durations = "gunicorn_request_duration_seconds_count{method=\"GET\"}";
    let gil = "gunicorn_python_gil_wait_seconds_count ";
    // Settled: the requests of the start are all counted.
    let mut before = server.scrape();
    wait_for(Duration::from_secs(10), || {
        let now = server.scrape();
        let settled = count(&now, durations) == count(&now, ok) + count(&now, missing)
            && count(&now, gil) == count(&now, durations);
        before = now;
        settled
    });
    for n in 0..10 {
        hit(&server, n);
    }
    for _ in 0..3 {
        assert_eq!(server.get("/nothing/here").status, 404);
    }
    let mut after = String::new();
    let counted = wait_for(Duration::from_secs(10), || {
        after = server.scrape();
        count(&after, durations) - count(&before, durations) == 13.0
    });
    assert!(counted, "before:\n{before}\nafter:\n{after}");
    assert_eq!(count(&after, ok) - count(&before, ok), 10.0, "{after}");
    assert_eq!(
        count(&after, missing) - count(&before, missing),
        3.0,
        "{after}"
    );
    assert_eq!(count(&after, gil) - count(&before, gil), 13.0, "{after}");
    assert!(
        after.contains("# TYPE gunicorn_python_gil_wait_seconds histogram"),
        "{after}"
    );
    // The worker's gauges, for this worker.
    assert_eq!(
        ferrocorn_tests::sample(
            &after,
            &format!("gunicorn_max_worker_threads{{pid=\"{pid}\"}}")
        ),
        Some(2.0),
        "{after}"
    );
    // The access log: one line per request, with its status.
    let logged = wait_for(Duration::from_secs(10), || {
        let out = server.stdout();
        out.lines().filter(|l| l.contains("\"GET /hit/")).count() == 10
            && out
                .lines()
                .filter(|l| l.contains("\"GET /nothing/here") && l.contains(" 404 "))
                .count()
                == 3
    });
    assert!(logged, "access log:\n{}", server.stdout());
}
