//! Binding the listeners: TCP, unix sockets, inherited descriptors.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use slog::{Logger, error, info, warn};
use socket2::{Domain, SockAddr, Socket, Type};

use crate::config::{BindAddr, SupervisorConfig};
use crate::error::SupervisorError;
use crate::service::InheritedListener;
use crate::sys;

/// Kind of a listening socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Tcp,
    Unix,
}

/// A bound, listening socket owned by the supervisor.
#[derive(Debug)]
pub(crate) struct Listener {
    /// The configured address (`Fd` for inherited sockets).
    pub(crate) addr: BindAddr,
    /// As gunicorn prints it, with the real port: `http://127.0.0.1:8000`.
    pub(crate) label: String,
    pub(crate) kind: Kind,
    pub(crate) sock: Socket,
    /// A socket file this process created (removed at exit).
    pub(crate) unix_path: Option<PathBuf>,
}

impl Listener {
    pub(crate) fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// Hand the socket to a worker.
    pub(crate) fn into_inherited(self) -> InheritedListener {
        match self.kind {
            Kind::Tcp => InheritedListener::Tcp(self.sock.into()),
            Kind::Unix => InheritedListener::Unix(self.sock.into()),
        }
    }
}

/// Binding options that are not part of the reloadable config.
pub(crate) struct BindOptions {
    pub(crate) attempts: u32,
    pub(crate) delay: Duration,
    pub(crate) unix_mode: u32,
}

/// `net.core.somaxconn`, the kernel's cap on the listen backlog.
pub(crate) fn somaxconn() -> Option<i32> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Bind every address of `cfg`, retrying as gunicorn does.
pub(crate) fn bind_all(
    cfg: &SupervisorConfig,
    opts: &BindOptions,
    log: &Logger,
) -> Result<Vec<Listener>, SupervisorError> {
    if cfg.binds.is_empty() {
        return Err(SupervisorError::Config("no address to bind".to_string()));
    }
    let mut out = Vec::new();
    for addr in &cfg.binds {
        out.push(bind_retrying(addr, cfg, opts, log)?);
    }
    report_backlog(cfg.backlog, log);
    Ok(out)
}

/// Log when the kernel will clamp the configured backlog.
pub(crate) fn report_backlog(backlog: i32, log: &Logger) {
    if let Some(max) = somaxconn()
        && backlog > max
    {
        warn!(
            log,
            "backlog {} is clamped by the kernel to net.core.somaxconn = {}", backlog, max
        );
    }
}

fn bind_retrying(
    addr: &BindAddr,
    cfg: &SupervisorConfig,
    opts: &BindOptions,
    log: &Logger,
) -> Result<Listener, SupervisorError> {
    let mut attempt = 1;
    loop {
        match bind_one(addr, cfg, opts) {
            Ok(l) => return Ok(l),
            Err(e) => {
                let fatal = e.kind() == io::ErrorKind::InvalidInput;
                if e.kind() == io::ErrorKind::AddrInUse {
                    error!(log, "Connection in use: {}", addr);
                } else {
                    error!(log, "Can't bind {}: {}", addr, e);
                }
                if fatal || attempt >= opts.attempts {
                    error!(log, "Can't connect to {}", addr);
                    return Err(SupervisorError::Bind {
                        addr: addr.to_string(),
                        source: e,
                    });
                }
                attempt += 1;
                error!(log, "Retrying in {:?}.", opts.delay);
                std::thread::sleep(opts.delay);
            }
        }
    }
}

fn bind_one(addr: &BindAddr, cfg: &SupervisorConfig, opts: &BindOptions) -> io::Result<Listener> {
    match addr {
        BindAddr::Tcp(hostport) => {
            let sa = resolve(hostport)?;
            let sock = Socket::new(Domain::for_address(sa), Type::STREAM, None)?;
            sock.set_reuse_address(true)?;
            if cfg.reuse_port {
                sock.set_reuse_port(true)?;
            }
            sock.set_tcp_nodelay(true)?;
            sock.bind(&SockAddr::from(sa))?;
            sock.listen(cfg.backlog)?;
            let label = label_of(&sock).unwrap_or_else(|| addr.to_string());
            Ok(Listener {
                addr: addr.clone(),
                label,
                kind: Kind::Tcp,
                sock,
                unix_path: None,
            })
        }
        BindAddr::Unix(path) => {
            remove_stale(path)?;
            let sock = Socket::new(Domain::UNIX, Type::STREAM, None)?;
            sock.bind(&SockAddr::unix(path)?)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(opts.unix_mode))?;
            sock.listen(cfg.backlog)?;
            Ok(Listener {
                addr: addr.clone(),
                label: addr.to_string(),
                kind: Kind::Unix,
                sock,
                unix_path: Some(path.clone()),
            })
        }
        BindAddr::Fd(fd) => adopt(*fd, addr.clone()),
    }
}

fn resolve(hostport: &str) -> io::Result<SocketAddr> {
    if let Ok(sa) = hostport.parse::<SocketAddr>() {
        return Ok(sa);
    }
    hostport.to_socket_addrs()?.next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{hostport}: no address found"),
        )
    })
}

/// A stale socket file is removed; any other file is an error.
fn remove_stale(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} exists and is not a socket", path.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// A listening socket handed to us as `fd`.
pub(crate) fn adopt(fd: RawFd, addr: BindAddr) -> io::Result<Listener> {
    let sock = sys::adopt_socket(fd)?;
    if !sock.is_listener().unwrap_or(false) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("fd {fd} is not a listening socket"),
        ));
    }
    let local = sock.local_addr()?;
    let kind = if local.is_unix() {
        Kind::Unix
    } else {
        Kind::Tcp
    };
    // O_NONBLOCK belongs to the open file description, shared with every
    // process holding this socket (the old supervisor's workers after a
    // USR2): leave it as it is.
    let label = label_of(&sock).unwrap_or_else(|| addr.to_string());
    Ok(Listener {
        addr,
        label,
        kind,
        sock,
        unix_path: None,
    })
}

/// The listener as gunicorn prints it.
pub(crate) fn label_of(sock: &Socket) -> Option<String> {
    let local = sock.local_addr().ok()?;
    if let Some(sa) = local.as_socket() {
        return Some(format!("http://{sa}"));
    }
    let path = local.as_pathname()?;
    Some(format!("unix:{}", path.display()))
}

/// systemd socket activation: the fds passed when `LISTEN_PID` is us.
/// The variables are removed so that workers do not see them.
pub(crate) fn systemd_fds() -> Option<Vec<RawFd>> {
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.trim().parse().ok()?;
    let n: RawFd = std::env::var("LISTEN_FDS").ok()?.trim().parse().ok()?;
    sys::remove_env("LISTEN_PID");
    sys::remove_env("LISTEN_FDS");
    sys::remove_env("LISTEN_FDNAMES");
    if pid != std::process::id() || n <= 0 {
        return None;
    }
    Some((3..3 + n).collect())
}

/// Log the listeners as gunicorn does.
pub(crate) fn log_listening(listeners: &[Listener], log: &Logger) {
    for l in listeners {
        info!(log, "Listening at: {} ({})", l.label, std::process::id());
    }
}
