//! Console and JSON lines against structlog's output (the seed's
//! `ProcessorFormatter` setup, structlog 26.1.0), and level filtering.

mod common;

use ferrocorn_log::{Format, Level};

#[cfg(feature = "structured")]
mod structured {
    use super::common::{self, mask_after, mask_timestamps};
    use ferrocorn_log::{ColorChoice, Destination, Format, Level, LogConfig, Logs, MemoryLog};
    use serde_json::Value;

    fn console(color: ColorChoice) -> (Logs, MemoryLog) {
        let out = MemoryLog::new();
        let config = LogConfig {
            format: Format::Console,
            color,
            level: Level::Debug,
            error_log: Destination::Memory(out.clone()),
            ..LogConfig::default()
        };
        (Logs::new(&config).unwrap(), out)
    }

    fn log_reference_lines(logs: &Logs) {
        let log = logs.error();
        slog::info!(log, "Starting gunicorn {}", "23.0.0");
        slog::warn!(log, "short");
        slog::error!(
            log,
            "a much longer message than thirty characters wide here"
        );
        slog::crit!(log, "WORKER TIMEOUT (pid:{})", 12);
        slog::debug!(log, "dbg");
        slog::info!(log, "with values";
            "worker" => 3, "ratio" => 0.5, "ok" => true, "none" => None::<u32>,
            "path" => "/a b", "quote" => "it's", "plain" => "abc");
    }

    fn masked(s: &str) -> String {
        let s = mask_timestamps(s);
        let s = mask_after(&s, "pid=", "PID");
        let s = mask_after(&s, "tid=", "TID");
        let s = mask_after(&s, "pid\x1b[0m=\x1b[35m", "PID");
        mask_after(&s, "tid\x1b[0m=\x1b[35m", "TID")
    }

    /// structlog's ConsoleRenderer(colors=False) output for the same records.
    const STRUCTLOG_PLAIN: &str = "\
TS [info     ] Starting gunicorn 23.0.0       [gunicorn.error] pid=PID tid=TID
TS [warning  ] short                          [gunicorn.error] pid=PID tid=TID
TS [error    ] a much longer message than thirty characters wide here [gunicorn.error] pid=PID tid=TID
TS [critical ] WORKER TIMEOUT (pid:12)        [gunicorn.error] pid=PID tid=TID
TS [debug    ] dbg                            [gunicorn.error] pid=PID tid=TID
TS [info     ] with values                    [gunicorn.error] none=None ok=True path='/a b' pid=PID plain=abc quote=\"it's\" ratio=0.5 tid=TID worker=3
";

    /// structlog's ConsoleRenderer(colors=True) output for the same records.
    const STRUCTLOG_COLORS: &str = "\
\x1b[2mTS\x1b[0m [\x1b[32m\x1b[1minfo     \x1b[0m] \x1b[1mStarting gunicorn 23.0.0      \x1b[0m [\x1b[0m\x1b[1m\x1b[34mgunicorn.error\x1b[0m]\x1b[0m \x1b[36mpid\x1b[0m=\x1b[35mPID\x1b[0m \x1b[36mtid\x1b[0m=\x1b[35mTID\x1b[0m
\x1b[2mTS\x1b[0m [\x1b[33m\x1b[1mwarning  \x1b[0m] \x1b[1mshort                         \x1b[0m [\x1b[0m\x1b[1m\x1b[34mgunicorn.error\x1b[0m]\x1b[0m \x1b[36mpid\x1b[0m=\x1b[35mPID\x1b[0m \x1b[36mtid\x1b[0m=\x1b[35mTID\x1b[0m
\x1b[2mTS\x1b[0m [\x1b[31m\x1b[1merror    \x1b[0m] \x1b[1ma much longer message than thirty characters wide here\x1b[0m [\x1b[0m\x1b[1m\x1b[34mgunicorn.error\x1b[0m]\x1b[0m \x1b[36mpid\x1b[0m=\x1b[35mPID\x1b[0m \x1b[36mtid\x1b[0m=\x1b[35mTID\x1b[0m
\x1b[2mTS\x1b[0m [\x1b[31m\x1b[1mcritical \x1b[0m] \x1b[1mWORKER TIMEOUT (pid:12)       \x1b[0m [\x1b[0m\x1b[1m\x1b[34mgunicorn.error\x1b[0m]\x1b[0m \x1b[36mpid\x1b[0m=\x1b[35mPID\x1b[0m \x1b[36mtid\x1b[0m=\x1b[35mTID\x1b[0m
\x1b[2mTS\x1b[0m [\x1b[32m\x1b[1mdebug    \x1b[0m] \x1b[1mdbg                           \x1b[0m [\x1b[0m\x1b[1m\x1b[34mgunicorn.error\x1b[0m]\x1b[0m \x1b[36mpid\x1b[0m=\x1b[35mPID\x1b[0m \x1b[36mtid\x1b[0m=\x1b[35mTID\x1b[0m
\x1b[2mTS\x1b[0m [\x1b[32m\x1b[1minfo     \x1b[0m] \x1b[1mwith values                   \x1b[0m [\x1b[0m\x1b[1m\x1b[34mgunicorn.error\x1b[0m]\x1b[0m \x1b[36mnone\x1b[0m=\x1b[35mNone\x1b[0m \x1b[36mok\x1b[0m=\x1b[35mTrue\x1b[0m \x1b[36mpath\x1b[0m=\x1b[35m'/a b'\x1b[0m \x1b[36mpid\x1b[0m=\x1b[35mPID\x1b[0m \x1b[36mplain\x1b[0m=\x1b[35mabc\x1b[0m \x1b[36mquote\x1b[0m=\x1b[35m\"it's\"\x1b[0m \x1b[36mratio\x1b[0m=\x1b[35m0.5\x1b[0m \x1b[36mtid\x1b[0m=\x1b[35mTID\x1b[0m \x1b[36mworker\x1b[0m=\x1b[35m3\x1b[0m
";

    #[test]
    fn console_matches_structlog_byte_for_byte() {
        let (logs, out) = console(ColorChoice::Never);
        log_reference_lines(&logs);
        assert_eq!(masked(&out.contents()), STRUCTLOG_PLAIN);
    }

    #[test]
    fn console_colors_match_structlog_byte_for_byte() {
        let (logs, out) = console(ColorChoice::Always);
        log_reference_lines(&logs);
        assert_eq!(masked(&out.contents()), STRUCTLOG_COLORS);
    }

    #[test]
    fn auto_colors_are_off_for_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("error.log");
        let config = LogConfig {
            format: Format::Console,
            color: ColorChoice::Auto,
            error_log: Destination::File(path.clone()),
            ..LogConfig::default()
        };
        let logs = Logs::new(&config).unwrap();
        slog::info!(logs.error(), "hello");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("hello"), "{text}");
        assert!(!text.contains('\x1b'), "{text:?}");
    }

    #[test]
    fn console_holds_the_json_facts() {
        let (logs, out) = console(ColorChoice::Never);
        slog::warn!(logs.error(), "disk {}", "full"; "free" => 0u64);
        let line = out.lines().pop().unwrap();
        let pid = std::process::id();
        assert!(line.contains("[warning  ] disk full "), "{line}");
        assert!(line.contains(" [gunicorn.error] "), "{line}");
        assert!(line.contains(&format!(" pid={pid} ")), "{line}");
        assert!(line.contains(" free=0 "), "{line}");
        let tid = line.rsplit_once("tid=").unwrap().1;
        assert!(tid.parse::<u64>().unwrap() > 0, "{line}");
        assert_eq!(mask_timestamps(&line[..27]), "TS");
    }

    #[test]
    fn console_messages_stay_on_one_line() {
        let (logs, out) = console(ColorChoice::Never);
        slog::error!(logs.error(), "bad request line {:?}", "x"; "raw" => "GET /\r\nX-Forged: 1");
        slog::error!(logs.error(), "{}", "line one\nline two\x1b[2J");
        let text = out.contents();
        assert_eq!(text.lines().count(), 2, "{text:?}");
        assert!(text.contains("raw='GET /\\r\\nX-Forged: 1'"), "{text}");
        assert!(text.contains("line one\\nline two\\x1b[2J"), "{text}");
    }

    #[test]
    fn console_renders_serde_values_as_json_text() {
        let (logs, out) = console(ColorChoice::Never);
        slog::info!(logs.error(), "m"; "list" => slog::Serde(vec![1, 2]), "after" => 1);
        let line = out.lines().pop().unwrap();
        assert!(
            line.contains(" list=[1,2] ") && line.contains(" after=1 "),
            "{line}"
        );
    }

    fn json_lines(out: &MemoryLog) -> Vec<(String, serde_json::Map<String, Value>)> {
        out.lines()
            .into_iter()
            .map(|l| {
                let v: Value = serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l}"));
                let Value::Object(map) = v else {
                    panic!("not an object: {l}")
                };
                (l, map)
            })
            .collect()
    }

    /// Seconds since the epoch of `2026-11-25T09:27:47.056397Z`.
    fn unix_secs(ts: &str) -> u64 {
        let n = |r: std::ops::Range<usize>| ts[r].parse::<i64>().unwrap();
        let (y, m, d) = (n(0..4), n(5..7), n(8..10));
        // Days from civil (Howard Hinnant).
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        (days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19)) as u64
    }

    #[test]
    fn unix_secs_agrees_with_date() {
        let ts = "2026-11-25T09:27:47.056397Z";
        let out = std::process::Command::new("date")
            .args(["-u", "-d", ts, "+%s"])
            .output()
            .unwrap();
        let want: u64 = String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(unix_secs(ts), want);
        assert_eq!(unix_secs("2000-03-01T00:00:00.000000Z"), 951_868_800);
    }

    fn assert_seed_keys(line: &str, map: &serde_json::Map<String, Value>, logger: &str) {
        // Types as the seed's structlog emits them.
        assert!(map["event"].is_string(), "{line}");
        assert!(
            ["debug", "info", "warning", "error", "critical"]
                .contains(&map["level"].as_str().unwrap()),
            "{line}"
        );
        assert_eq!(map["logger"], logger, "{line}");
        assert_eq!(
            map["pid"].as_u64(),
            Some(u64::from(std::process::id())),
            "{line}"
        );
        assert!(map["tid"].as_u64().is_some_and(|t| t > 0), "{line}");
        let ts = map["timestamp"].as_str().unwrap();
        assert_eq!(mask_timestamps(ts), "TS", "{line}");
        // Within a minute of now (UTC).
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let secs = unix_secs(ts);
        assert!(now.abs_diff(secs) < 60, "{ts} vs now {now}");
        // Key order of the seed's event dict.
        let order = [
            "\"event\":",
            "\"level\":",
            "\"logger\":",
            "\"pid\":",
            "\"tid\":",
            "\"timestamp\":",
        ];
        let pos: Vec<usize> = order.iter().map(|k| line.find(k).unwrap()).collect();
        assert!(pos.windows(2).all(|w| w[0] < w[1]), "{line}");
        assert!(line.starts_with("{\"event\":"), "{line}");
    }

    #[test]
    fn json_lines_have_the_seed_keys_and_types() {
        let (logs, error, _access) = common::memory_logs(Format::Json, Level::Debug);
        let log = logs.error();
        slog::debug!(log, "dbg");
        slog::info!(log, "Booting worker with pid: {}", 8);
        slog::warn!(log, "w"; "count" => 3u64, "neg" => -2i32, "ratio" => 0.25, "ok" => false,
            "none" => None::<u8>, "name" => "a \"b\"\n");
        slog::error!(log, "e");
        slog::crit!(log, "c");
        let child = log.new(slog::o!("worker" => 2));
        slog::info!(child, "from child");
        let lines = json_lines(&error);
        assert_eq!(lines.len(), 6);
        for (line, map) in &lines {
            assert_seed_keys(line, map, "gunicorn.error");
        }
        let levels: Vec<&str> = lines
            .iter()
            .map(|(_, m)| m["level"].as_str().unwrap())
            .collect();
        assert_eq!(
            levels,
            ["debug", "info", "warning", "error", "critical", "info"]
        );
        assert_eq!(lines[1].1["event"], "Booting worker with pid: 8");
        let w = &lines[2].1;
        assert_eq!(w["count"], 3);
        assert_eq!(w["neg"], -2);
        assert_eq!(w["ratio"], 0.25);
        assert_eq!(w["ok"], false);
        assert!(w["none"].is_null());
        assert_eq!(w["name"], "a \"b\"\n");
        assert_eq!(lines[5].1["worker"], 2);
    }

    #[test]
    fn json_access_lines_carry_typed_request_keys() {
        let (logs, _error, access) = common::memory_logs(Format::Json, Level::Error);
        let access_log = logs.access().unwrap();
        access_log.log(&common::record());
        access_log.log(&ferrocorn_log::AccessRecord {
            response_bytes: None,
            target: "/x\"\n\u{1b}",
            ..common::record()
        });
        let lines = json_lines(&access);
        assert_eq!(lines.len(), 2, "access lines ignore the error log's level");
        for (line, map) in &lines {
            assert_seed_keys(line, map, "gunicorn.access");
            assert_eq!(map["level"], "info");
        }
        let m = &lines[0].1;
        let mut want = Vec::new();
        access_log.format().render(&common::record(), &mut want);
        let want = String::from_utf8(want).unwrap();
        let event = m["event"].as_str().unwrap();
        // Same line but for the second of `t`, which may have ticked.
        assert_eq!(event.len(), want.len());
        assert!(event.starts_with("127.0.0.1 - user ["), "{event}");
        assert!(
            event.ends_with(
                r#"] "GET /search?q=\"1\" HTTP/1.1" 200 1234 "http://ref/" "curl/8.5.0""#
            ),
            "{event}"
        );
        assert_eq!(m["method"], "GET");
        assert_eq!(m["path"], "/search");
        assert_eq!(m["status"], 200);
        assert_eq!(m["bytes"], 1234);
        assert_eq!(m["duration_s"].as_f64(), Some(2.345678));
        assert!(lines[1].1["bytes"].is_null());
        assert!(
            lines[1].1["event"]
                .as_str()
                .unwrap()
                .contains(r#"/x\"\x0a\x1b HTTP/1.1"#)
        );
    }

    #[test]
    fn json_from_many_threads_stays_whole_with_each_thread_id() {
        let (logs, error, _access) = common::memory_logs(Format::Json, Level::Info);
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let log = logs.error().clone();
                std::thread::spawn(move || {
                    for n in 0..300u64 {
                        slog::info!(log, "line {}", n; "thread" => t, "n" => n);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let lines = json_lines(&error);
        assert_eq!(lines.len(), 1200);
        let mut tid_of = std::collections::HashMap::new();
        for (line, map) in &lines {
            assert_seed_keys(line, map, "gunicorn.error");
            let t = map["thread"].as_u64().unwrap();
            let tid = map["tid"].as_u64().unwrap();
            assert_eq!(*tid_of.entry(t).or_insert(tid), tid, "one tid per thread");
        }
        let mut tids: Vec<u64> = tid_of.into_values().collect();
        tids.sort_unstable();
        tids.dedup();
        assert_eq!(tids.len(), 4, "threads have distinct tids");
    }

    /// A value that logs while it is being logged.
    struct Noisy(slog::Logger);

    impl slog::Value for Noisy {
        fn serialize(
            &self,
            _record: &slog::Record<'_>,
            key: slog::Key,
            serializer: &mut dyn slog::Serializer,
        ) -> slog::Result {
            slog::info!(self.0, "inner");
            serializer.emit_str(key, "v")
        }
    }

    #[test]
    fn a_value_that_logs_neither_deadlocks_nor_panics() {
        for format in [Format::Json, Format::Console, Format::Plain] {
            let (logs, error, _access) = common::memory_logs(format, Level::Info);
            let (tx, rx) = std::sync::mpsc::channel();
            let log = logs.error().clone();
            std::thread::spawn(move || {
                slog::info!(log, "outer"; "noisy" => Noisy(log.clone()));
                tx.send(()).unwrap();
            });
            rx.recv_timeout(std::time::Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("{format}: logging from a value hung or panicked"));
            let text = error.contents();
            assert!(
                text.lines().any(|l| l.contains("outer")),
                "{format}: {text}"
            );
            if format == Format::Json {
                json_lines(&error); // every line parses
            }
        }
    }

    #[test]
    fn json_key_values_keep_written_order_and_types() {
        let (logs, error, _access) = common::memory_logs(Format::Json, Level::Info);
        let root = logs.error().new(slog::o!("a" => 1, "b" => 2));
        let child = root.new(slog::o!("c" => 3));
        slog::info!(child, "m"; "d" => 4u8, "e" => "five", "a" => 10, "list" => slog::Serde(vec![1, 2, 3]));
        let (line, map) = json_lines(&error).pop().unwrap();
        assert!(
            line.ends_with(r#""a":10,"b":2,"c":3,"d":4,"e":"five","list":[1,2,3]}"#),
            "{line}"
        );
        assert_eq!(map["list"], serde_json::json!([1, 2, 3]));
        // The access log's typed keys, in their documented order.
        let (logs, _error, access) = common::memory_logs(Format::Json, Level::Info);
        logs.access().unwrap().log(&common::record());
        let line = access.lines().pop().unwrap();
        assert!(
            line.ends_with(r#""method":"GET","path":"/search","status":200,"bytes":1234,"duration_s":2.345678}"#),
            "{line}"
        );
    }

    #[test]
    fn logger_prefix_names_both_logs() {
        let error = MemoryLog::new();
        let access = MemoryLog::new();
        let config = LogConfig {
            format: Format::Json,
            logger_prefix: "myapp".into(),
            error_log: Destination::Memory(error.clone()),
            access_log: Some(Destination::Memory(access.clone())),
            ..LogConfig::default()
        };
        let logs = Logs::new(&config).unwrap();
        slog::info!(logs.error(), "x");
        slog::info!(logs.logger("app"), "y");
        logs.access().unwrap().log(&common::record());
        let lines = json_lines(&error);
        assert_eq!(lines[0].1["logger"], "myapp.error");
        assert_eq!(lines[1].1["logger"], "myapp.app");
        assert_eq!(json_lines(&access)[0].1["logger"], "myapp.access");
    }
}

#[test]
fn level_filter_drops_less_severe_records() {
    let cases = [
        (Level::Debug, 5),
        (Level::Info, 4),
        (Level::Warning, 3),
        (Level::Error, 2),
        (Level::Critical, 1),
    ];
    for (level, n) in cases {
        let (logs, error, _) = common::memory_logs(Format::Plain, level);
        let log = logs.error();
        slog::debug!(log, "d");
        slog::info!(log, "i");
        slog::warn!(log, "w");
        slog::error!(log, "e");
        slog::crit!(log, "c");
        let lines = error.lines();
        assert_eq!(lines.len(), n, "{level}: {lines:?}");
        let names = [
            "[DEBUG] d",
            "[INFO] i",
            "[WARNING] w",
            "[ERROR] e",
            "[CRITICAL] c",
        ];
        for (line, name) in lines.iter().zip(&names[5 - n..]) {
            assert!(line.ends_with(name), "{line}");
        }
    }
}

#[test]
fn plain_error_lines_are_gunicorns_format() {
    let (logs, error, _) = common::memory_logs(Format::Plain, Level::Info);
    slog::info!(logs.error(), "Booting worker with pid: {}", 8; "worker" => 1, "state" => "up now");
    let line = error.lines().pop().unwrap();
    // [2026-11-25 09:27:47 +0000] [1234] [INFO] Booting worker with pid: 8
    let b = line.as_bytes();
    assert_eq!(b[0], b'[');
    for (i, c) in "dddd-dd-dd dd:dd:dd +dddd]".bytes().enumerate() {
        let got = b[i + 1];
        match c {
            b'd' => assert!(got.is_ascii_digit(), "{line}"),
            b'+' => assert!(got == b'+' || got == b'-', "{line}"),
            _ => assert_eq!(got, c, "{line}"),
        }
    }
    let rest = &line[27..];
    assert_eq!(
        rest,
        format!(
            " [{}] [INFO] Booting worker with pid: 8 worker=1 state='up now'",
            std::process::id()
        )
    );
}

#[test]
fn format_names() {
    assert_eq!("plain".parse::<Format>(), Ok(Format::Plain));
    assert!("yaml".parse::<Format>().is_err());
    if cfg!(feature = "structured") {
        assert_eq!("default".parse::<Format>(), Ok(Format::Console));
        assert_eq!("JSON".parse::<Format>(), Ok(Format::Json));
    } else {
        for name in ["default", "json"] {
            let err = name.parse::<Format>().unwrap_err();
            assert_eq!(err.to_string(), ferrocorn_log::STRUCTURED_NOT_BUILT);
        }
    }
}

#[test]
fn structured_formats_fail_clearly_when_not_built() {
    let config = ferrocorn_log::LogConfig {
        format: Format::Json,
        ..ferrocorn_log::LogConfig::default()
    };
    let built = ferrocorn_log::Logs::new(&config);
    assert_eq!(built.is_ok(), cfg!(feature = "structured"));
    if let Err(e) = built {
        assert_eq!(e.kind(), std::io::ErrorKind::Unsupported);
        assert_eq!(e.to_string(), ferrocorn_log::STRUCTURED_NOT_BUILT);
    }
    // The default config always builds.
    ferrocorn_log::Logs::new(&ferrocorn_log::LogConfig::default()).unwrap();
}

#[test]
fn level_and_destination_names() {
    use ferrocorn_log::{ColorChoice, Destination};
    assert_eq!("warn".parse::<Level>(), Ok(Level::Warning));
    assert_eq!("WARNING".parse::<Level>(), Ok(Level::Warning));
    assert_eq!("critical".parse::<Level>(), Ok(Level::Critical));
    assert!("verbose".parse::<Level>().is_err());
    assert_eq!("-".parse::<Destination>(), Ok(Destination::Stdout));
    assert_eq!(Destination::parse_error_log("-"), Ok(Destination::Stderr));
    assert_eq!(
        "/dev/stderr".parse::<Destination>(),
        Ok(Destination::Stderr)
    );
    assert_eq!(
        "/var/log/x.log".parse::<Destination>(),
        Ok(Destination::File("/var/log/x.log".into()))
    );
    assert!("".parse::<Destination>().is_err());
    assert_eq!("never".parse::<ColorChoice>(), Ok(ColorChoice::Never));
    assert_eq!("always".parse::<ColorChoice>(), Ok(ColorChoice::Always));
}

#[test]
fn handles_are_shareable_across_threads() {
    fn shareable<T: Send + Sync + Clone + 'static>() {}
    shareable::<ferrocorn_log::Logs>();
    shareable::<ferrocorn_log::AccessLog>();
    shareable::<ferrocorn_log::MemoryLog>();
    shareable::<slog::Logger>();
}
