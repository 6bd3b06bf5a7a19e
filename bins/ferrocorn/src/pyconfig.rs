//! The settings of a Python WSGI app, gunicorn's names: `wsgi_app`,
//! `chdir`, `pythonpath`, `raw_env` (`--env`), `virtualenv`, `preload_app`,
//! `worker_class`, `forwarded_allow_ips`, `secure_scheme_headers`,
//! `capture_output`.

use std::path::PathBuf;

use super::{ConfigError, HeaderPairs, Resolver, Sourced, bad, err};

/// The layer's Python fields, handed over by [`super::Layer::resolve`].
pub(super) struct PythonLayer {
    pub wsgi_app: Option<Sourced<String>>,
    pub chdir: Option<Sourced<PathBuf>>,
    pub pythonpath: Option<Sourced<String>>,
    pub raw_env: Option<Sourced<Vec<String>>>,
    pub virtualenv: Option<Sourced<PathBuf>>,
    pub preload_app: Option<Sourced<bool>>,
    pub capture_output: Option<Sourced<bool>>,
    pub worker_class: Option<Sourced<String>>,
    pub forwarded_allow_ips: Option<Sourced<String>>,
    pub secure_scheme_headers: Option<Sourced<HeaderPairs>>,
}

/// gunicorn's worker classes that ferrocorn's worker stands in for.
pub const WORKER_CLASSES: &[&str] = &["sync", "gthread"];

/// The Python app's settings, validated (without importing anything).
#[derive(Debug, Clone, PartialEq)]
pub struct PythonSettings {
    /// The app (gunicorn's APP_MODULE), if one is served.
    pub wsgi_app: Option<String>,
    /// Directory to change to first.
    pub chdir: Option<PathBuf>,
    /// Directories put first on sys.path.
    pub pythonpath: Vec<PathBuf>,
    /// Environment variables set for the app.
    pub raw_env: Vec<(String, String)>,
    /// The virtualenv the app runs in.
    pub virtualenv: Option<PathBuf>,
    /// Import the app in the supervisor before forking.
    pub preload: bool,
    /// The app's `sys.stdout`/`sys.stderr` to the error log.
    pub capture_output: bool,
    /// The worker class given (sync or gthread), if any.
    pub worker_class: Option<String>,
    /// Peers trusted to set the scheme (gunicorn's syntax).
    pub forwarded_allow_ips: String,
    /// Headers and values that mean https from a trusted peer.
    pub secure_scheme_headers: Vec<(String, String)>,
}

fn default_secure_scheme_headers() -> Vec<(String, String)> {
    vec![
        ("X-FORWARDED-PROTOCOL".into(), "ssl".into()),
        ("X-FORWARDED-PROTO".into(), "https".into()),
        ("X-FORWARDED-SSL".into(), "on".into()),
    ]
}

/// Checks gunicorn's `forwarded_allow_ips` syntax: `*`, or addresses and
/// CIDR networks separated by commas.
fn check_allow_ips(s: &str) -> Result<(), String> {
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

impl PythonSettings {
    pub(super) fn resolve(r: &mut Resolver, l: PythonLayer) -> Result<PythonSettings, ConfigError> {
        let wsgi_app = match l.wsgi_app {
            Some(v) => {
                r.explicit.push(("wsgi_app", v.source.clone()));
                let spec = v.value.trim().to_owned();
                if spec.is_empty() || spec.starts_with(':') {
                    return bad("wsgi_app", &v.source, "expected MODULE[:CALLABLE]");
                }
                if !cfg!(feature = "wsgi") {
                    return err(format!(
                        "WSGI apps are not built into this binary (feature `wsgi`), but {spec:?} is given in {}",
                        v.source
                    ));
                }
                Some(spec)
            }
            None => None,
        };
        let chdir = l.chdir.map(|v| {
            r.explicit.push(("chdir", v.source.clone()));
            v.value
        });
        let pythonpath = match l.pythonpath {
            Some(v) => {
                r.explicit.push(("pythonpath", v.source.clone()));
                v.value
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from)
                    .collect()
            }
            None => Vec::new(),
        };
        let mut raw_env = Vec::new();
        if let Some(v) = l.raw_env {
            r.explicit.push(("raw_env", v.source.clone()));
            for kv in &v.value {
                match kv.split_once('=') {
                    Some((k, val))
                        if !k.trim().is_empty() && !k.contains('\0') && !val.contains('\0') =>
                    {
                        raw_env.push((k.trim().to_owned(), val.to_owned()))
                    }
                    _ => {
                        return bad(
                            "raw_env",
                            &v.source,
                            format_args!("{kv:?} is not KEY=VALUE"),
                        );
                    }
                }
            }
        }
        let virtualenv = match l.virtualenv {
            // An empty VIRTUAL_ENV means none (env_value drops empty values).
            Some(v) => {
                r.explicit.push(("virtualenv", v.source.clone()));
                Some(v.value)
            }
            None => None,
        };
        let preload = r.take("preload_app", l.preload_app, false).value;
        let capture_output = r.take("capture_output", l.capture_output, false).value;
        let worker_class = match l.worker_class {
            Some(v) => {
                r.explicit.push(("worker_class", v.source.clone()));
                let class = v.value.trim();
                // gunicorn also accepts the dotted class names of its own.
                let short = match class {
                    "gunicorn.workers.sync.SyncWorker" => "sync",
                    "gunicorn.workers.gthread.ThreadWorker" => "gthread",
                    c => c,
                };
                if !WORKER_CLASSES.contains(&short) {
                    return bad(
                        "worker_class",
                        &v.source,
                        format_args!(
                            "{class:?} is not supported: ferrocorn runs gthread's model (worker processes with a pool of --threads threads each), so use sync or gthread"
                        ),
                    );
                }
                Some(short.to_owned())
            }
            None => None,
        };
        let v = r.take(
            "forwarded_allow_ips",
            l.forwarded_allow_ips,
            "127.0.0.1,::1".to_owned(),
        );
        check_allow_ips(&v.value).or_else(|e| bad("forwarded_allow_ips", &v.source, e))?;
        let forwarded_allow_ips = v.value;
        let secure_scheme_headers = r
            .take(
                "secure_scheme_headers",
                l.secure_scheme_headers,
                HeaderPairs(default_secure_scheme_headers()),
            )
            .value
            .0;
        Ok(PythonSettings {
            wsgi_app,
            chdir,
            pythonpath,
            raw_env,
            virtualenv,
            preload,
            capture_output,
            worker_class,
            forwarded_allow_ips,
            secure_scheme_headers,
        })
    }

    /// Adds the settings to `--print-config`'s table.
    pub(super) fn to_toml(&self, t: &mut toml::Table) {
        use toml::Value as V;
        let path = |p: &PathBuf| V::String(p.display().to_string());
        if let Some(a) = &self.wsgi_app {
            t.insert("wsgi_app".into(), V::String(a.clone()));
        }
        if let Some(d) = &self.chdir {
            t.insert("chdir".into(), path(d));
        }
        if !self.pythonpath.is_empty() {
            let joined: Vec<String> = self
                .pythonpath
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            t.insert("pythonpath".into(), V::String(joined.join(",")));
        }
        if !self.raw_env.is_empty() {
            t.insert(
                "raw_env".into(),
                V::Array(
                    self.raw_env
                        .iter()
                        .map(|(k, v)| V::String(format!("{k}={v}")))
                        .collect(),
                ),
            );
        }
        if let Some(v) = &self.virtualenv {
            t.insert("virtualenv".into(), path(v));
        }
        t.insert("preload_app".into(), V::Boolean(self.preload));
        t.insert("capture_output".into(), V::Boolean(self.capture_output));
        if let Some(w) = &self.worker_class {
            t.insert("worker_class".into(), V::String(w.clone()));
        }
        t.insert(
            "forwarded_allow_ips".into(),
            V::String(self.forwarded_allow_ips.clone()),
        );
        let mut headers = toml::Table::new();
        for (k, v) in &self.secure_scheme_headers {
            headers.insert(k.clone(), V::String(v.clone()));
        }
        t.insert("secure_scheme_headers".into(), V::Table(headers));
    }
}
