//! The checks of a Python WSGI app's settings, gunicorn's names:
//! `wsgi_app`, `chdir`, `pythonpath`, `raw_env` (`--env`), `virtualenv`,
//! `preload_app`, `worker_class`, `forwarded_allow_ips`,
//! `secure_scheme_headers`, `capture_output` (declared in `settings.rs`).

use std::path::PathBuf;

use crate::setting::{ConfigError, Sourced, bad, err};

/// gunicorn's worker classes that ferrocorn's worker stands in for.
pub const WORKER_CLASSES: &[&str] = &["sync", "gthread"];

/// gunicorn's default `secure_scheme_headers`.
pub fn default_secure_scheme_headers() -> Vec<(String, String)> {
    vec![
        ("X-FORWARDED-PROTOCOL".into(), "ssl".into()),
        ("X-FORWARDED-PROTO".into(), "https".into()),
        ("X-FORWARDED-SSL".into(), "on".into()),
    ]
}

/// Checks gunicorn's `forwarded_allow_ips` syntax: `*`, or addresses and
/// CIDR networks separated by commas.
pub fn check_allow_ips(name: &'static str, v: &Sourced<String>) -> Result<String, ConfigError> {
    allow_ips(&v.value).or_else(|e| bad(name, &v.source, e))?;
    Ok(v.value.clone())
}

fn allow_ips(s: &str) -> Result<(), String> {
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if part == "*" {
            continue;
        }
        let (addr, prefix) = match part.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (part, None),
        };
        let ip: std::net::IpAddr = addr
            .parse()
            .map_err(|_| format!("{part:?} is not an IP address or network"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        if let Some(p) = prefix
            && !p.parse::<u8>().is_ok_and(|n| n <= max)
        {
            return Err(format!("{part:?} has a bad network prefix"));
        }
    }
    Ok(())
}

/// `wsgi_app`: `MODULE[:CALLABLE]`, in a binary built with `wsgi`.
pub fn check_wsgi_app(
    name: &'static str,
    v: &Sourced<String>,
) -> Result<Option<String>, ConfigError> {
    let spec = v.value.trim().to_owned();
    if spec.is_empty() || spec.starts_with(':') {
        return bad(name, &v.source, "expected MODULE[:CALLABLE]");
    }
    if !cfg!(feature = "wsgi") {
        return err(format!(
            "WSGI apps are not built into this binary (feature `wsgi`), but {spec:?} is given in {}",
            v.source
        ));
    }
    Ok(Some(spec))
}

/// `pythonpath`: comma-separated directories.
pub fn split_pythonpath(_: &'static str, v: &Sourced<String>) -> Result<Vec<PathBuf>, ConfigError> {
    Ok(v.value
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect())
}

/// `pythonpath` as `--print-config` writes it (left out when empty).
pub fn print_pythonpath(p: &[PathBuf]) -> Option<toml::Value> {
    if p.is_empty() {
        return None;
    }
    let joined: Vec<String> = p.iter().map(|p| p.display().to_string()).collect();
    Some(toml::Value::String(joined.join(",")))
}

/// `raw_env`: `KEY=VALUE` each.
pub fn check_raw_env(
    name: &'static str,
    v: &Sourced<Vec<String>>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut raw_env = Vec::new();
    for kv in &v.value {
        match kv.split_once('=') {
            Some((k, val)) if !k.trim().is_empty() && !k.contains('\0') && !val.contains('\0') => {
                raw_env.push((k.trim().to_owned(), val.to_owned()))
            }
            _ => {
                return bad(name, &v.source, format_args!("{kv:?} is not KEY=VALUE"));
            }
        }
    }
    Ok(raw_env)
}

/// `raw_env` as `--print-config` writes it (left out when empty).
pub fn print_raw_env(env: &[(String, String)]) -> Option<toml::Value> {
    if env.is_empty() {
        return None;
    }
    Some(toml::Value::Array(
        env.iter()
            .map(|(k, v)| toml::Value::String(format!("{k}={v}")))
            .collect(),
    ))
}

/// `worker_class`: sync or gthread (or gunicorn's dotted names of them).
pub fn check_worker_class(
    name: &'static str,
    v: &Sourced<String>,
) -> Result<Option<String>, ConfigError> {
    let class = v.value.trim();
    // gunicorn also accepts the dotted class names of its own.
    let short = match class {
        "gunicorn.workers.sync.SyncWorker" => "sync",
        "gunicorn.workers.gthread.ThreadWorker" => "gthread",
        c => c,
    };
    if !WORKER_CLASSES.contains(&short) {
        return bad(
            name,
            &v.source,
            format_args!(
                "{class:?} is not supported: ferrocorn runs gthread's model (worker processes with a pool of --threads threads each), so use sync or gthread"
            ),
        );
    }
    Ok(Some(short.to_owned()))
}

/// `secure_scheme_headers` as `--print-config` writes it: a table.
pub fn print_secure_scheme_headers(headers: &[(String, String)]) -> Option<toml::Value> {
    let mut t = toml::Table::new();
    for (k, v) in headers {
        t.insert(k.clone(), toml::Value::String(v.clone()));
    }
    Some(toml::Value::Table(t))
}
