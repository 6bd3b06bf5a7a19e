//! Settings: one validated [`Config`] from a TOML file, the environment and
//! the command line.
//!
//! Precedence, as gunicorn: built-in defaults < `PORT` / `WEB_CONCURRENCY`
//! (gunicorn reads them as the *defaults* of `bind` and `workers`) < config
//! file < the seed's environment variables < command line.
//!
//! Every setting is declared once, in `settings.rs`. Each source becomes a
//! [`Layer`] of optional values that remembers where every value came from;
//! the layers are stacked and [`Layer::resolve`] applies the defaults,
//! checks every value and then what involves several settings, into a
//! [`Config`], naming the setting and its source in every error.
//! [`Config::load`] does all of it from the command line's [`ServeArgs`] and
//! an environment lookup, so a reload (SIGHUP) re-reads the file and the
//! environment with the same command-line arguments.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::setting::{ConfigError, Source};
use crate::setting::{EnvStage, bad, err};
#[cfg(test)]
use crate::settings::DEFAULT_ACCESS_LOG_FORMAT;
pub use crate::settings::{AppName, Bind, Layer, PythonSettings, ServeArgs, Settings};
use crate::settings::{MetricsValues, SETTINGS, Taken};

/// gunicorn settings that ferrocorn does not have (yet): named as such
/// instead of "unknown", so a gunicorn user knows why.
const GUNICORN_ONLY: &[&str] = &[
    "reload",
    "reload_engine",
    "reload_extra_files",
    "spew",
    "daemon",
    "worker_tmp_dir",
    "user",
    "group",
    "umask",
    "initgroups",
    "tmp_upload_dir",
    "proxy_protocol",
    "proxy_allow_ips",
    "certfile",
    "keyfile",
    "ca_certs",
    "ssl_version",
    "cert_reqs",
    "suppress_ragged_eofs",
    "do_handshake_on_connect",
    "ciphers",
    "logger_class",
    "logconfig",
    "logconfig_dict",
    "logconfig_json",
    "syslog",
    "syslog_addr",
    "syslog_prefix",
    "syslog_facility",
    "enable_stdio_inheritance",
    "statsd_host",
    "statsd_prefix",
    "dogstatsd_tags",
    "proc_name",
    "default_proc_name",
    "paste",
    "disable_redirect_access_to_syslog",
    "sendfile",
    "strip_header_spaces",
    "print_config",
    "check_config",
    "config",
    "on_starting",
    "on_reload",
    "when_ready",
    "pre_fork",
    "post_fork",
    "post_worker_init",
    "worker_int",
    "worker_abort",
    "pre_exec",
    "pre_request",
    "post_request",
    "child_exit",
    "worker_exit",
    "nworkers_changed",
    "on_exit",
    "ssl_context",
    "header_map",
];

/// The message for an unknown key: the nearest known name, if one is close.
fn unknown_setting(key: &str, source: &Source) -> String {
    if GUNICORN_ONLY.contains(&key) {
        return format!(
            "setting `{key}` in {source} is a gunicorn setting ferrocorn does not support"
        );
    }
    match nearest_setting(key) {
        Some(near) => format!("unknown setting `{key}` in {source} (did you mean `{near}`?)"),
        None => format!(
            "unknown setting `{key}` in {source} (`ferrocorn --print-config` lists every setting)"
        ),
    }
}

/// The known setting nearest to `key`, if it is close enough to be a typo.
pub fn nearest_setting(key: &str) -> Option<&'static str> {
    let normalized = key.to_ascii_lowercase().replace('-', "_");
    SETTINGS
        .iter()
        .map(|name| (strsim::damerau_levenshtein(&normalized, name), *name))
        .filter(|(d, name)| *d <= 3.max(name.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, name)| name)
}

impl Layer {
    /// Parses TOML text (the config file's content).
    pub fn from_toml_str(text: &str, source: Source) -> Result<Layer, ConfigError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let msg = e.message().trim().replace('\n', " ");
            match line {
                Some(line) => {
                    ConfigError(format!("{source} is not valid TOML: line {line}: {msg}"))
                }
                None => ConfigError(format!("{source} is not valid TOML: {msg}")),
            }
        })?;
        let mut layer = Layer::default();
        for (key, value) in &table {
            if !layer.set_toml(key, value, &source)? {
                return err(unknown_setting(key, &source));
            }
        }
        Ok(layer)
    }
}

/// The largest config file read: a settings file is a few KiB.
const MAX_CONFIG_FILE: u64 = 1 << 20;

/// The text of a config file: a regular file of at most
/// [`MAX_CONFIG_FILE`] bytes. A FIFO, a device or a pipe (`-c <(...)`) is
/// refused without blocking: opened non-blocking, checked with fstat, so
/// `/dev/zero` cannot fill the memory, a FIFO cannot hang the start or a
/// reload, and a pipe already drained cannot read as an empty config on
/// SIGHUP (issue 19).
pub fn read_config_file(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let fail = |what: &dyn fmt::Display| {
        ConfigError(format!(
            "cannot read config file {}: {what}",
            path.display()
        ))
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| fail(&e))?;
    let meta = file.metadata().map_err(|e| fail(&e))?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let what = if kind.is_fifo() {
            "a pipe or FIFO"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else if kind.is_dir() {
            "a directory"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a file"
        };
        return Err(fail(&format_args!(
            "it is {what}, not a regular file (give the path of a file)"
        )));
    }
    if meta.len() > MAX_CONFIG_FILE {
        return Err(fail(&format_args!(
            "{} bytes is more than the limit of {MAX_CONFIG_FILE}",
            meta.len()
        )));
    }
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(&e))?;
    if bytes.len() as u64 > MAX_CONFIG_FILE {
        return Err(fail(&format_args!(
            "more than the limit of {MAX_CONFIG_FILE} bytes"
        )));
    }
    String::from_utf8(bytes).map_err(|_| fail(&"it is not UTF-8 text"))
}

/// The metrics exporter's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSettings {
    /// Address the exporter binds (`metrics_bind`:`metrics_port`).
    pub bind: SocketAddr,
    /// Directory of the shm files; `None` = a private temporary directory.
    pub dir: Option<PathBuf>,
    /// Seconds between samples of sampled gauges.
    pub update_interval: Duration,
    /// Workers observe each accepted TCP connection's listen-queue wait
    /// (`gunicorn_accept_queue_wait_seconds`, one `getsockopt` per accept).
    pub accept_queue_wait: bool,
}

/// Every setting, validated, with its defaults applied: the `core` part's
/// [`Settings`] (read through `Deref`: `config.workers`), the metrics
/// exporter's and the Python app's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The settings of the `core` part.
    pub settings: Settings,
    /// The metrics exporter, `None` when turned off.
    pub metrics: Option<MetricsSettings>,
    /// The Python (WSGI) app and its settings.
    pub python: PythonSettings,
    /// The config file read, if any.
    pub config_file: Option<PathBuf>,
    /// Whether that file was empty (or blank): a reload refuses a file
    /// found empty where it was not, a file being rewritten.
    pub config_file_empty: bool,
    /// Every setting's source, for `--print-config` and for the parts of
    /// the binary that must say when a setting asks for a part not built.
    pub explicit: Vec<(&'static str, Source)>,
    /// The effective settings as `--print-config` prints them.
    printed: toml::Table,
}

impl std::ops::Deref for Config {
    type Target = Settings;
    fn deref(&self) -> &Settings {
        &self.settings
    }
}

impl Config {
    /// Reads the config file named by `args` (if any), the environment and
    /// the command line, and validates the result. Called again on SIGHUP.
    pub fn load(
        args: &ServeArgs,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let (file, file_empty) = match &args.config {
            Some(path) => {
                let text = read_config_file(path)?;
                let layer = Layer::from_toml_str(&text, Source::File(path.to_owned()))?;
                (layer, text.trim().is_empty())
            }
            None => (Layer::default(), false),
        };
        let layer = Layer::from_cli(args)
            .over(Layer::from_env(env, EnvStage::Override)?)
            .over(file)
            .over(Layer::from_env(env, EnvStage::Default)?);
        let mut config = layer.resolve()?;
        config.config_file = args.config.clone();
        config.config_file_empty = file_empty;
        Ok(config)
    }

    /// Loads the config with the process environment.
    pub fn load_from_process(args: &ServeArgs) -> Result<Config, ConfigError> {
        Config::load(args, &|name| std::env::var(name).ok())
    }

    /// The source of a setting set explicitly (not a default), if any.
    #[cfg(test)]
    pub fn source_of(&self, name: &str) -> Option<&Source> {
        self.explicit
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| s)
    }

    /// The effective configuration as a TOML document that `-c` accepts.
    pub fn to_toml(&self) -> String {
        toml::to_string(&self.printed).unwrap_or_default()
    }
}

/// Two TCP binds of IP addresses on one port where one covers the other
/// (`0.0.0.0:80` and `127.0.0.1:80`; `[::]:80` and any address of port 80
/// while `net.ipv6.bindv6only` is 0, Linux's default), in `binds`' order.
/// Host names are not resolved here; port 0 never overlaps.
fn overlapping_binds(binds: &[Bind]) -> Option<(&Bind, &Bind)> {
    let v6_covers_v4 =
        std::fs::read_to_string("/proc/sys/net/ipv6/bindv6only").map_or(true, |s| s.trim() == "0");
    let ip_port = |b: &Bind| match b {
        Bind::Tcp { host, port } if *port != 0 => host.parse::<IpAddr>().ok().map(|ip| (ip, *port)),
        _ => None,
    };
    let covers = |wide: IpAddr, other: IpAddr| match (wide, other) {
        (IpAddr::V4(w), IpAddr::V4(_)) => w.is_unspecified(),
        (IpAddr::V6(w), IpAddr::V6(_)) => w.is_unspecified(),
        (IpAddr::V6(w), IpAddr::V4(_)) => w.is_unspecified() && v6_covers_v4,
        (IpAddr::V4(_), IpAddr::V6(_)) => false,
    };
    for (i, a) in binds.iter().enumerate() {
        for b in &binds[i + 1..] {
            if let (Some((ia, pa)), Some((ib, pb))) = (ip_port(a), ip_port(b))
                && pa == pb
                && (ia == ib || covers(ia, ib) || covers(ib, ia))
            {
                return Some((a, b));
            }
        }
    }
    None
}

/// Whether the metrics part is checked and used: when it is built and on.
/// Built out, a metrics setting asked for is an error, never ignored
/// (`metrics = false` given explicitly silences the others).
fn metrics_part_on(taken: &Taken) -> Result<bool, ConfigError> {
    if cfg!(feature = "metrics") {
        return Ok(taken.metrics_on.value);
    }
    if taken.metrics_on.source != Source::Default {
        // Explicitly off: `metrics = true` failed its own check.
        return Ok(false);
    }
    match MetricsValues::sources(taken)
        .into_iter()
        .find_map(|(name, s)| s.filter(|s| **s != Source::Default).map(|s| (name, s)))
    {
        Some((name, source)) => err(format!(
            "metrics are not built into this binary (feature `metrics`), but `{name}` is set in {source}"
        )),
        None => Ok(false),
    }
}

impl Layer {
    /// Applies defaults, checks every value, then what involves several
    /// settings.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let taken = self.take();
        let settings = taken.core()?;
        let metrics = if metrics_part_on(&taken)? {
            Some(taken.metrics()?)
        } else {
            None
        };
        let python = taken.python()?;

        // Without SO_REUSEPORT the second of two overlapping binds fails at
        // start: say so now, for --check-config too (issue 19).
        if !settings.reuse_port
            && let Some((a, b)) = overlapping_binds(&settings.binds)
        {
            return bad(
                "bind",
                &taken.binds.source,
                format_args!("{a} and {b} overlap (the second cannot be bound)"),
            );
        }
        let metrics_settings = match &metrics {
            Some(m) => {
                let port = m.metrics_port;
                if settings
                    .binds
                    .iter()
                    .any(|b| matches!(b, Bind::Tcp { port: p, .. } if *p == port))
                {
                    return bad(
                        "metrics_port",
                        &taken.metrics_port.source,
                        format_args!("{port} is also a port of `bind`"),
                    );
                }
                Some(MetricsSettings {
                    bind: SocketAddr::new(m.metrics_bind, port),
                    dir: m.metrics_dir.clone(),
                    update_interval: m.metrics_update_seconds,
                    accept_queue_wait: m.accept_queue_wait,
                })
            }
            None => None,
        };
        if let Some(spec) = &python.wsgi_app
            && taken.app.source != Source::Default
        {
            return err(format!(
                "both a built-in app (`app` in {}) and a WSGI app ({spec:?}) are given: choose one",
                taken.app.source
            ));
        }
        if !cfg!(feature = "supervisor") && settings.workers > 1 {
            return err(format!(
                "the supervisor is not built into this binary (feature `supervisor`): it serves from one process, but `workers` = {} in {}",
                settings.workers, taken.workers.source
            ));
        }

        let mut printed = toml::Table::new();
        settings.print(&mut printed);
        if let Some(m) = &metrics {
            m.print(&mut printed);
        }
        python.print(&mut printed);
        if python.wsgi_app.is_some() {
            // The built-in app is not served.
            printed.remove("app");
        }

        Ok(Config {
            settings,
            metrics: metrics_settings,
            python,
            config_file: None,
            config_file_empty: false,
            explicit: taken.explicit,
            printed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::collections::HashMap;

    fn args(argv: &[&str]) -> ServeArgs {
        let mut full = vec!["ferrocorn"];
        full.extend_from_slice(argv);
        crate::cli::Cli::try_parse_from(full).unwrap().serve
    }

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
        f
    }

    fn load(argv: &[&str], vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::load(&args(argv), &env(vars))
    }

    #[test]
    fn defaults_are_gunicorns_except_keepalive() {
        let c = load(&[], &[]).unwrap();
        assert_eq!(c.binds, vec![Bind::parse("127.0.0.1:8000").unwrap()]);
        assert_eq!(c.workers, 1);
        assert_eq!(c.threads, 1);
        assert_eq!(c.worker_connections, 1000);
        assert_eq!(c.backlog, 2048);
        assert_eq!(c.timeout, Duration::from_secs(30));
        assert_eq!(c.stall_timeout, Duration::from_secs(30));
        assert_eq!(c.graceful_timeout, Duration::from_secs(30));
        assert_eq!(c.keepalive, Duration::from_secs(120));
        assert_eq!(c.limit_request_line, 4094);
        assert_eq!(c.limit_request_fields, 100);
        assert_eq!(c.limit_request_field_size, 8190);
        assert_eq!(c.loglevel, "info");
        assert_eq!(c.errorlog, "-");
        assert_eq!(c.accesslog, None);
        assert_eq!(c.access_log_format, DEFAULT_ACCESS_LOG_FORMAT);
        assert_eq!(c.prefix, "gunicorn");
        assert_eq!(c.app, AppName::Demo);
        assert!(c.explicit.is_empty());
        if cfg!(feature = "metrics") {
            let m = c.metrics.unwrap();
            assert_eq!(m.bind, "0.0.0.0:8001".parse().unwrap());
            assert_eq!(m.update_interval, Duration::from_secs(5));
            assert_eq!(m.dir, None);
        } else {
            assert_eq!(c.metrics, None);
        }
    }

    #[test]
    fn health_path_is_off_by_default_and_validated() {
        assert_eq!(load(&[], &[]).unwrap().health_path, None);
        let f = file("health_path = \"/healthz\"\n");
        let path = f.path().to_str().unwrap();
        let c = load(&["-c", path], &[]).unwrap();
        assert_eq!(c.health_path.as_deref(), Some("/healthz"));
        // Printed so that `-c` reads it back, and turned off by "".
        let printed = file(&c.to_toml());
        let again = load(&["-c", printed.path().to_str().unwrap()], &[]).unwrap();
        assert_eq!(again.health_path.as_deref(), Some("/healthz"));
        let c = load(&["-c", path, "--health-path", ""], &[]).unwrap();
        assert_eq!(c.health_path, None);
        assert!(!c.to_toml().contains("health_path"));
        for (bad, why) in [
            ("healthz", "does not start with `/`"),
            ("/healthz?x=1", "'?'"),
            ("/a b", "' '"),
            ("/é", "'é'"),
        ] {
            let e = load(&["--health-path", bad], &[]).unwrap_err();
            assert!(
                e.0.contains("`health_path`") && e.0.contains("--health-path") && e.0.contains(why),
                "{bad:?}: {e}"
            );
        }
    }

    #[test]
    fn file_then_env_then_cli() {
        let f = file("timeout = 15\nthreads = 2\nworkers = 1\nlog_format = \"plain\"\n");
        let path = f.path().to_str().unwrap();
        let c = load(&["-c", path], &[]).unwrap();
        assert_eq!(c.timeout, Duration::from_secs(15));
        assert_eq!(c.threads, 2);
        assert_eq!(c.source_of("timeout"), Some(&Source::File(f.path().into())));

        // The seed's env var beats the file ...
        let c = load(&["-c", path], &[("LOGGING_FORMATTER_NAME", "plain")]).unwrap();
        assert_eq!(
            c.source_of("log_format"),
            Some(&Source::Env("LOGGING_FORMATTER_NAME"))
        );
        // ... and the command line beats both.
        let c = load(
            &[
                "-c",
                path,
                "--timeout",
                "7",
                "--threads",
                "3",
                "--log-format",
                "plain",
            ],
            &[("LOGGING_FORMATTER_NAME", "json")],
        )
        .unwrap();
        assert_eq!(c.timeout, Duration::from_secs(7));
        assert_eq!(c.threads, 3);
        assert_eq!(
            c.source_of("log_format"),
            Some(&Source::Cli("--log-format"))
        );
    }

    #[test]
    fn port_and_web_concurrency_are_defaults_as_in_gunicorn() {
        let vars = [("PORT", "9000"), ("WEB_CONCURRENCY", "3")];
        if cfg!(feature = "supervisor") {
            let c = load(&[], &vars).unwrap();
            assert_eq!(c.binds, vec![Bind::parse("0.0.0.0:9000").unwrap()]);
            assert_eq!(c.workers, 3);
        } else {
            // One process only: asking for 3 workers says so.
            let e = load(&[], &vars).unwrap_err();
            assert!(
                e.0.contains("supervisor is not built") && e.0.contains("WEB_CONCURRENCY"),
                "{e}"
            );
        }
        // A config file overrides them.
        let f = file("bind = \"127.0.0.1:7000\"\nworkers = 1\n");
        let c = load(&["-c", f.path().to_str().unwrap()], &vars).unwrap();
        assert_eq!(c.binds, vec![Bind::parse("127.0.0.1:7000").unwrap()]);
        assert_eq!(c.workers, 1);
        // So does the command line.
        let c = load(
            &["-b", "unix:/tmp/x.sock", "-b", "[::1]:81", "-w", "1"],
            &vars,
        )
        .unwrap();
        assert_eq!(
            c.binds,
            vec![
                Bind::Unix("/tmp/x.sock".into()),
                Bind::Tcp {
                    host: "::1".into(),
                    port: 81
                }
            ]
        );
        let e = load(&[], &[("PORT", "http")]).unwrap_err();
        assert!(e.0.contains("PORT"), "{e}");
    }

    #[test]
    fn unknown_key_suggests_nearest() {
        let f = file("grateful_timeout = 120\n");
        let e = load(&["-c", f.path().to_str().unwrap()], &[]).unwrap_err();
        assert!(e.0.contains("unknown setting `grateful_timeout`"), "{e}");
        assert!(e.0.contains("did you mean `graceful_timeout`?"), "{e}");
        assert_eq!(nearest_setting("keep-alive"), Some("keepalive"));
        assert_eq!(nearest_setting("worker"), Some("workers"));
        assert_eq!(nearest_setting("wsgi_application_module_path"), None);
        let e = Layer::from_toml_str("daemon = true", Source::Default).unwrap_err();
        assert!(
            e.0.contains("gunicorn setting ferrocorn does not support"),
            "{e}"
        );
    }

    #[test]
    fn python_settings_as_gunicorn() {
        let f = file(
            "wsgi_app = \"proj.wsgi:application\"\nraw_env = [\"A=1\", \"B=x=y\"]\npythonpath = \"a, b\"\npreload_app = true\nworker_class = \"gthread\"\n[secure_scheme_headers]\nX-PROTO = \"https\"\n",
        );
        let c = load(
            &["-c", f.path().to_str().unwrap()],
            &[("VIRTUAL_ENV", "/v")],
        )
        .unwrap();
        let p = &c.python;
        assert_eq!(p.wsgi_app.as_deref(), Some("proj.wsgi:application"));
        assert_eq!(
            p.raw_env,
            vec![("A".into(), "1".into()), ("B".into(), "x=y".into())]
        );
        assert_eq!(p.pythonpath, vec![PathBuf::from("a"), PathBuf::from("b")]);
        assert!(p.preload);
        assert_eq!(p.virtualenv, Some(PathBuf::from("/v")));
        assert_eq!(p.forwarded_allow_ips, "127.0.0.1,::1");
        assert_eq!(
            p.secure_scheme_headers,
            vec![("X-PROTO".into(), "https".into())]
        );
        // --print-config's output reads back the same.
        let again = file(&c.to_toml());
        let c2 = load(&["-c", again.path().to_str().unwrap()], &[]).unwrap();
        assert_eq!(c2.python, c.python);
        // The positional APP_MODULE beats the file; FORWARDED_ALLOW_IPS is read.
        let c = load(
            &["-c", f.path().to_str().unwrap(), "other:app"],
            &[("FORWARDED_ALLOW_IPS", "*")],
        )
        .unwrap();
        assert_eq!(c.python.wsgi_app.as_deref(), Some("other:app"));
        assert_eq!(c.python.forwarded_allow_ips, "*");
    }

    #[test]
    fn python_settings_refused_with_one_line() {
        let e = load(&["-k", "uvicorn.workers.UvicornWorker", "m:app"], &[]).unwrap_err();
        assert!(
            e.0.contains("\"uvicorn.workers.UvicornWorker\" is not supported"),
            "{e}"
        );
        assert!(e.0.contains("use sync or gthread"), "{e}");
        assert!(!e.0.contains('\n'), "{e}");
        let e = load(&["-k", "gevent"], &[]).unwrap_err();
        assert!(e.0.contains("gevent"), "{e}");
        let e = load(&["--app", "demo", "m:app"], &[]).unwrap_err();
        assert!(e.0.contains("choose one"), "{e}");
        let e = load(&["--env", "NOEQUALS", "m:app"], &[]).unwrap_err();
        assert!(e.0.contains("is not KEY=VALUE"), "{e}");
        let e = load(&["--forwarded-allow-ips", "10.0.0.0/99"], &[]).unwrap_err();
        assert!(e.0.contains("forwarded_allow_ips"), "{e}");
        for class in ["sync", "gthread"] {
            assert!(load(&["-k", class, "m:app"], &[]).is_ok());
        }
    }

    #[test]
    fn values_are_validated_naming_the_setting() {
        type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case<'_>] = &[
            (
                &["--threads", "0"],
                &[],
                "`threads` in command line --threads",
            ),
            (&["--timeout=-1"], &[], "`timeout`"),
            (&["--log-level", "loud"], &[], "`loglevel`"),
            (&["-b", "localhost:http"], &[], "`bind`"),
            (&["-b", "::1:80"], &[], "`bind`"),
            (
                &["--limit-request-line", "9000"],
                &[],
                "`limit_request_line`",
            ),
            (&["--prefix", "my-app"], &[], "`prefix`"),
            (&["--app", "nope"], &[], "`app`"),
            (&["--log-format", "xml"], &[], "`log_format`"),
            (&[], &[("WEB_CONCURRENCY", "many")], "WEB_CONCURRENCY"),
            (
                &[],
                &[("GUNICORN_METRICS_UPDATE_SECONDS", "soon")],
                "GUNICORN_METRICS_UPDATE_SECONDS",
            ),
            (
                &[],
                &[("PROMETHEUS_METRICS_EXPORT_PORT", "x")],
                "PROMETHEUS_METRICS_EXPORT_PORT",
            ),
        ];
        for (argv, vars, needle) in cases {
            let e = load(argv, vars).expect_err(needle);
            assert!(e.0.contains(needle), "{argv:?} {vars:?}: {e}");
            assert!(!e.0.contains('\n'), "one line: {e}");
        }
        let f = file("timeout = \"soon\"\n");
        let e = load(&["-c", f.path().to_str().unwrap()], &[]).unwrap_err();
        assert!(
            e.0.contains("`timeout`") && e.0.contains("string \"soon\""),
            "{e}"
        );
        let f = file("timeout = \n");
        let e = load(&["-c", f.path().to_str().unwrap()], &[]).unwrap_err();
        assert!(e.0.contains("not valid TOML: line 1"), "{e}");
        let e = load(&["-c", "/nonexistent/ferrocorn.toml"], &[]).unwrap_err();
        assert!(
            e.0.contains("cannot read config file /nonexistent/ferrocorn.toml"),
            "{e}"
        );
    }

    #[test]
    fn metrics_settings() {
        let r = load(
            &["--metrics-port", "9101", "--metrics-bind", "127.0.0.1"],
            &[
                ("PROMETHEUS_MULTIPROC_DIR", "/tmp/m"),
                ("GUNICORN_METRICS_UPDATE_SECONDS", "2"),
            ],
        );
        if cfg!(feature = "metrics") {
            let m = r.unwrap().metrics.unwrap();
            assert_eq!(m.bind, "127.0.0.1:9101".parse().unwrap());
            assert_eq!(m.dir, Some("/tmp/m".into()));
            assert_eq!(m.update_interval, Duration::from_secs(2));
            let c = load(&["--no-metrics"], &[]).unwrap();
            assert_eq!(c.metrics, None);
            let e = load(&["-b", "127.0.0.1:8001"], &[]).unwrap_err();
            assert!(e.0.contains("`metrics_port`"), "{e}");
        } else {
            let e = r.unwrap_err();
            assert!(
                e.0.contains("metrics are not built into this binary"),
                "{e}"
            );
            let e = load(&[], &[("PROMETHEUS_METRICS_EXPORT_PORT", "9000")]).unwrap_err();
            assert!(e.0.contains("PROMETHEUS_METRICS_EXPORT_PORT"), "{e}");
            assert!(load(&["--no-metrics"], &[]).is_ok());
        }
    }

    #[test]
    fn print_config_round_trips() {
        let c = load(
            &[
                "-b",
                "127.0.0.1:9000",
                "--threads",
                "4",
                "--timeout",
                "0.5",
                "--access-logfile",
                "-",
            ],
            &[],
        )
        .unwrap();
        let text = c.to_toml();
        let f = file(&text);
        let again = load(&["-c", f.path().to_str().unwrap()], &[]).unwrap();
        assert_eq!(again.threads, 4);
        assert_eq!(again.timeout, Duration::from_millis(500));
        assert_eq!(again.binds, c.binds);
        assert_eq!(again.accesslog.as_deref(), Some("-"));
        assert_eq!(again.to_toml(), text);
    }

    #[test]
    fn integers_fit_a_toml_file_and_never_wrap() {
        // Issue 19: `x % (jitter + 1)` wrapped to a division by zero in
        // every worker; values past i64::MAX printed clamped.
        for flag in [
            "--max-requests-jitter",
            "--max-requests",
            "--limit-request-body",
        ] {
            for big in ["18446744073709551615", "9223372036854775808"] {
                let e = load(&[flag, big], &[]).unwrap_err();
                let name = flag.trim_start_matches("--").replace('-', "_");
                assert!(
                    e.0.contains(&format!("`{name}`")) && e.0.contains("out of range"),
                    "{flag} {big}: {e}"
                );
            }
        }
        let c = load(&["--max-requests-jitter", "9223372036854775807"], &[]).unwrap();
        assert_eq!(c.max_requests_jitter, i64::MAX as u64);
        assert!(
            c.to_toml()
                .contains("max_requests_jitter = 9223372036854775807")
        );
    }

    #[test]
    fn tiny_durations_are_refused_not_rounded_to_zero() {
        for (flag, v) in [
            ("--timeout", "1e-10"),
            ("--keep-alive", "0.0009"),
            ("--metrics-update-seconds", "1e-12"),
        ] {
            let arg = format!("{flag}={v}");
            let r = load(&[&arg], &[]);
            if flag == "--metrics-update-seconds" && !cfg!(feature = "metrics") {
                continue;
            }
            let e = r.unwrap_err();
            assert!(e.0.contains("smallest duration, 0.001"), "{flag}: {e}");
        }
        // The smallest duration loads back from --print-config.
        let c = load(&["--timeout", "0.001", "--keep-alive", "0"], &[]).unwrap();
        assert_eq!(c.timeout, Duration::from_millis(1));
        assert_eq!(c.keepalive, Duration::ZERO);
        let f = file(&c.to_toml());
        let again = load(&["-c", f.path().to_str().unwrap()], &[]).unwrap();
        assert_eq!(again.timeout, Duration::from_millis(1));
        assert_eq!(again.to_toml(), c.to_toml());
    }

    #[test]
    fn config_files_that_are_not_regular_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.toml");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        // Neither reads /dev/zero for ever nor waits for a FIFO's writer.
        for (path, what) in [
            (Path::new("/dev/zero"), "a device"),
            (fifo.as_path(), "a pipe or FIFO"),
            (dir.path(), "a directory"),
        ] {
            let e = load(&["-c", path.to_str().unwrap()], &[]).unwrap_err();
            assert!(
                e.0.contains(&format!("cannot read config file {}", path.display()))
                    && e.0.contains(what),
                "{e}"
            );
        }
        let big = file(&format!("# {}\nworkers = 1\n", "x".repeat(1 << 20)));
        let e = load(&["-c", big.path().to_str().unwrap()], &[]).unwrap_err();
        assert!(e.0.contains("more than the limit"), "{e}");
        let empty = file(" \n");
        let c = load(&["-c", empty.path().to_str().unwrap()], &[]).unwrap();
        assert!(c.config_file_empty);
        let f = file("workers = 1\n");
        let c = load(&["-c", f.path().to_str().unwrap()], &[]).unwrap();
        assert!(!c.config_file_empty);
    }

    #[test]
    fn binds_that_cannot_all_be_bound_are_refused() {
        let long = format!("unix:/tmp/{}", "s".repeat(103));
        let e = load(&["-b", &long], &[]).unwrap_err();
        assert!(e.0.contains("more than the 107"), "{e}");
        let fits = format!("unix:/{}", "s".repeat(106));
        assert!(load(&["-b", &fits], &[]).is_ok());
        for (a, b) in [
            ("0.0.0.0:9000", "127.0.0.1:9000"),
            ("127.0.0.2:9000", "0.0.0.0:9000"),
            ("[::]:9000", "[::1]:9000"),
            ("[::1]:9000", "[0:0::1]:9000"),
        ] {
            let e = load(&["-b", a, "-b", b], &[]).unwrap_err();
            assert!(e.0.contains("overlap"), "{a} {b}: {e}");
        }
        for (a, b) in [
            ("0.0.0.0:9000", "127.0.0.1:9001"),
            ("127.0.0.1:9000", "127.0.0.2:9000"),
            ("127.0.0.1:0", "0.0.0.0:0"),
            ("localhost:9000", "0.0.0.0:9000"),
        ] {
            assert!(load(&["-b", a, "-b", b], &[]).is_ok(), "{a} {b}");
        }
        // SO_REUSEPORT binds both.
        assert!(
            load(
                &["-b", "0.0.0.0:9000", "-b", "127.0.0.1:9000", "--reuse-port"],
                &[]
            )
            .is_ok()
        );
    }

    #[test]
    fn seed_example_has_the_seeds_values() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/seed.toml");
        let c = load(&["-c", path.to_str().unwrap()], &[]).unwrap();
        assert_eq!(c.loglevel, "error");
        assert_eq!(c.keepalive, Duration::from_secs(120));
        assert_eq!(c.timeout, Duration::from_secs(15));
        assert_eq!(c.graceful_timeout, Duration::from_secs(120));
    }

    #[test]
    fn bind_forms() {
        assert_eq!(
            Bind::parse("127.0.0.1").unwrap(),
            Bind::Tcp {
                host: "127.0.0.1".into(),
                port: 8000
            }
        );
        assert_eq!(Bind::parse("[::]").unwrap().to_string(), "[::]:8000");
        assert_eq!(Bind::parse("fd://3").unwrap(), Bind::Fd(3));
        assert_eq!(
            Bind::parse("unix:/run/a.sock").unwrap().to_string(),
            "unix:/run/a.sock"
        );
        assert!(Bind::parse("unix:").is_err());
        assert!(Bind::parse("fd://x").is_err());
        assert_eq!(Bind::parse(":80").unwrap().to_string(), "0.0.0.0:80");
        assert_eq!(
            Bind::parse("tcp://127.0.0.1:81").unwrap().to_string(),
            "127.0.0.1:81"
        );
        assert!(Bind::parse("[::1]80").is_err());
    }
}
