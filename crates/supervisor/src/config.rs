//! Settings: where to listen, how many workers, timeouts, metrics.

use std::fmt;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// One `-b/--bind` value.
///
/// Parsed from gunicorn's forms: `HOST:PORT`, `[V6]:PORT`, `unix:PATH`,
/// `fd://N`. A bare `HOST` means port 8000, as in gunicorn.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BindAddr {
    /// A TCP address, `host:port` as given (a name is resolved at bind time).
    Tcp(String),
    /// A unix stream socket path.
    Unix(PathBuf),
    /// An already open listening socket inherited as this file descriptor.
    Fd(RawFd),
}

impl FromStr for BindAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty bind address".to_string());
        }
        if let Some(path) = s.strip_prefix("unix:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(format!("{s:?}: empty unix socket path"));
            }
            return Ok(BindAddr::Unix(PathBuf::from(path)));
        }
        if let Some(n) = s.strip_prefix("fd://") {
            return match n.parse::<RawFd>() {
                Ok(fd) if fd >= 0 => Ok(BindAddr::Fd(fd)),
                _ => Err(format!("{s:?}: fd:// needs a file descriptor number")),
            };
        }
        let s = s
            .strip_prefix("tcp://")
            .or_else(|| s.strip_prefix("http://"))
            .unwrap_or(s);
        if let Some(rest) = s.strip_prefix('[') {
            // [V6]:PORT or [V6]
            let Some((host, after)) = rest.split_once(']') else {
                return Err(format!("{s:?}: missing ']' in an IPv6 address"));
            };
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!("{s:?}: {host:?} is not an IPv6 address"));
            }
            let port = match after {
                "" => 8000,
                p => p
                    .strip_prefix(':')
                    .and_then(|p| p.parse::<u16>().ok())
                    .ok_or_else(|| format!("{s:?}: bad port"))?,
            };
            return Ok(BindAddr::Tcp(format!("[{host}]:{port}")));
        }
        match s.rsplit_once(':') {
            Some((host, port)) => {
                if host.contains(':') {
                    return Err(format!("{s:?}: write an IPv6 address as [ADDR]:PORT"));
                }
                let port: u16 = port
                    .parse()
                    .map_err(|_| format!("{s:?}: {port:?} is not a port number"))?;
                let host = if host.is_empty() { "0.0.0.0" } else { host };
                Ok(BindAddr::Tcp(format!("{host}:{port}")))
            }
            None => Ok(BindAddr::Tcp(format!("{s}:8000"))),
        }
    }
}

impl fmt::Display for BindAddr {
    /// As gunicorn prints listeners: `http://127.0.0.1:8000`, `unix:/path`,
    /// `fd://3`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindAddr::Tcp(a) => write!(f, "http://{a}"),
            BindAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            BindAddr::Fd(fd) => write!(f, "fd://{fd}"),
        }
    }
}

/// What the supervisor does: listeners, worker count and timeouts.
///
/// `Default` is gunicorn's: `127.0.0.1:8000`, backlog 2048, one worker,
/// timeout and graceful timeout 30 s, no pidfile, no metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct SupervisorConfig {
    /// Addresses to listen on (`-b`, repeatable).
    pub binds: Vec<BindAddr>,
    /// `listen()` backlog; the kernel clamps it to `net.core.somaxconn`.
    pub backlog: i32,
    /// Set SO_REUSEPORT on TCP listeners (on the one socket all workers
    /// share; gunicorn instead binds one socket per worker).
    pub reuse_port: bool,
    /// Number of worker processes (at least 1 at start).
    pub workers: usize,
    /// A worker whose heartbeat is older than this is killed; zero disables.
    pub timeout: Duration,
    /// Bound of every graceful wait; then SIGKILL.
    pub graceful_timeout: Duration,
    /// Write the supervisor's pid here.
    pub pidfile: Option<PathBuf>,
    /// Serve the merged metrics (feature `metrics`).
    pub metrics: Option<MetricsConfig>,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            binds: vec![BindAddr::Tcp("127.0.0.1:8000".to_string())],
            backlog: 2048,
            reuse_port: false,
            workers: 1,
            timeout: Duration::from_secs(30),
            graceful_timeout: Duration::from_secs(30),
            pidfile: None,
            metrics: None,
        }
    }
}

/// Where and how the merged metrics are served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// The exporter's address (the seed: `0.0.0.0:8001`,
    /// port from `PROMETHEUS_METRICS_EXPORT_PORT`).
    pub bind: SocketAddr,
    /// The shared metric directory (`PROMETHEUS_MULTIPROC_DIR`); `None`: a
    /// private temporary directory removed at exit.
    pub dir: Option<PathBuf>,
    /// How often the listen queue is sampled for the peak gauge
    /// (`GUNICORN_METRICS_UPDATE_SECONDS`, 5 s).
    pub update_interval: Duration,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            bind: SocketAddr::from(([0, 0, 0, 0], 8001)),
            dir: None,
            update_interval: Duration::from_secs(5),
        }
    }
}

impl MetricsConfig {
    /// The seed's settings from the environment: `PROMETHEUS_METRICS_EXPORT_PORT`
    /// (8001), `PROMETHEUS_MULTIPROC_DIR` (unset: a private directory),
    /// `GUNICORN_METRICS_UPDATE_SECONDS` (5).
    pub fn from_env() -> Result<MetricsConfig, String> {
        let mut c = MetricsConfig::default();
        if let Ok(p) = std::env::var("PROMETHEUS_METRICS_EXPORT_PORT") {
            let port: u16 = p
                .trim()
                .parse()
                .map_err(|_| format!("PROMETHEUS_METRICS_EXPORT_PORT={p:?} is not a port"))?;
            c.bind.set_port(port);
        }
        if let Some(d) = std::env::var_os("PROMETHEUS_MULTIPROC_DIR")
            && !d.is_empty()
        {
            c.dir = Some(PathBuf::from(d));
        }
        if let Ok(s) = std::env::var("GUNICORN_METRICS_UPDATE_SECONDS") {
            let secs: f64 = s
                .trim()
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite() && *v > 0.0)
                .ok_or_else(|| {
                    format!("GUNICORN_METRICS_UPDATE_SECONDS={s:?} is not a positive number")
                })?;
            c.update_interval = Duration::from_secs_f64(secs);
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gunicorn_forms() {
        let p = |s: &str| s.parse::<BindAddr>();
        assert_eq!(
            p("127.0.0.1:8000"),
            Ok(BindAddr::Tcp("127.0.0.1:8000".into()))
        );
        assert_eq!(p("[::1]:9000"), Ok(BindAddr::Tcp("[::1]:9000".into())));
        assert_eq!(p("[::1]"), Ok(BindAddr::Tcp("[::1]:8000".into())));
        assert_eq!(p("localhost"), Ok(BindAddr::Tcp("localhost:8000".into())));
        assert_eq!(p(":8080"), Ok(BindAddr::Tcp("0.0.0.0:8080".into())));
        assert_eq!(
            p("unix:/tmp/x.sock"),
            Ok(BindAddr::Unix("/tmp/x.sock".into()))
        );
        assert_eq!(p("fd://3"), Ok(BindAddr::Fd(3)));
        assert!(p("fd://x").is_err());
        assert!(p("::1:80").is_err());
        assert!(p("127.0.0.1:99999").is_err());
        assert!(p("unix:").is_err());
    }

    #[test]
    fn displays_as_gunicorn() {
        let p = |s: &str| s.parse::<BindAddr>().unwrap().to_string();
        assert_eq!(p("127.0.0.1:8000"), "http://127.0.0.1:8000");
        assert_eq!(p("[::1]:9000"), "http://[::1]:9000");
        assert_eq!(p("unix:/tmp/x.sock"), "unix:/tmp/x.sock");
        assert_eq!(p("fd://4"), "fd://4");
    }
}
