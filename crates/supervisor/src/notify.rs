//! sd_notify and the pidfile.

use std::io;
use std::path::{Path, PathBuf};

/// Send `state` (`READY=1`, `STOPPING=1`) to `$NOTIFY_SOCKET` if set.
/// A leading `@` names a socket in the abstract namespace.
pub(crate) fn sd_notify(state: &str) -> io::Result<()> {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let sock = std::os::unix::net::UnixDatagram::unbound()?;
    let bytes = target.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
            return Ok(());
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = name;
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "abstract sockets need Linux",
            ));
        }
    }
    sock.send_to(state.as_bytes(), PathBuf::from(target))?;
    Ok(())
}

/// The supervisor's pidfile.
#[derive(Debug)]
pub(crate) struct Pidfile {
    path: PathBuf,
}

impl Pidfile {
    /// Write our pid to `path`; refuse when it names another live process.
    pub(crate) fn create(path: &Path) -> io::Result<Pidfile> {
        if let Ok(old) = std::fs::read_to_string(path)
            && let Ok(pid) = old.trim().parse::<i32>()
        {
            let ours = std::process::id() as i32;
            if pid != ours && pid > 0 && crate::sys::kill(pid, 0).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "already running on PID {pid} (or pid file {} is stale)",
                        path.display()
                    ),
                ));
            }
        }
        std::fs::write(path, format!("{}\n", std::process::id())).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot write pidfile {}: {e}", path.display()),
            )
        })?;
        Ok(Pidfile {
            path: path.to_path_buf(),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Move the pidfile (the `.2` promotion after a binary upgrade).
    pub(crate) fn rename(&mut self, to: &Path) -> io::Result<()> {
        std::fs::rename(&self.path, to)?;
        self.path = to.to_path_buf();
        Ok(())
    }

    /// Remove it if it still holds our pid.
    pub(crate) fn unlink(self) {
        if let Ok(s) = std::fs::read_to_string(&self.path)
            && s.trim() == std::process::id().to_string()
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pidfile_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.pid");
        let f = Pidfile::create(&p).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap().trim(),
            std::process::id().to_string()
        );
        f.unlink();
        assert!(!p.exists());
        // pid 1 is alive (and not us): refused.
        std::fs::write(&p, "1\n").unwrap();
        let e = Pidfile::create(&p).unwrap_err();
        assert!(e.to_string().contains("already running"), "{e}");
        // A write error names the pidfile and its path (issue 19).
        let missing = dir.path().join("no/such/dir/x.pid");
        let e = Pidfile::create(&missing).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("cannot write pidfile {}: ", missing.display())),
            "{e}"
        );
    }
}
