//! The few raw system calls the supervisor needs: fork, waitpid, kill, a
//! signal self-pipe and fd flags. Every `unsafe` block of the crate outside
//! `heartbeat.rs` is here.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

use crate::service::ExitReason;

/// The signals the supervisor handles.
pub(crate) const HANDLED: [i32; 10] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGTTIN,
    libc::SIGTTOU,
    libc::SIGWINCH,
    libc::SIGCHLD,
];

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// `fork()`: `Ok(None)` in the child, `Ok(Some(pid))` in the parent.
pub(crate) fn fork() -> io::Result<Option<i32>> {
    // SAFETY: the supervisor is single-threaded (its documented contract), so
    // the child inherits no lock held by another thread.
    let pid = cvt(unsafe { libc::fork() })?;
    Ok(if pid == 0 { None } else { Some(pid) })
}

/// Reap one exited child without blocking.
pub(crate) fn try_wait_any() -> Option<(i32, ExitReason)> {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: `status` is a valid out pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid > 0 {
            let reason = if libc::WIFEXITED(status) {
                ExitReason::Code(libc::WEXITSTATUS(status))
            } else if libc::WIFSIGNALED(status) {
                ExitReason::Signal(libc::WTERMSIG(status))
            } else {
                continue;
            };
            return Some((pid, reason));
        }
        if pid == -1 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        return None;
    }
}

/// Send `sig` to `pid`.
pub(crate) fn kill(pid: i32, sig: i32) -> io::Result<()> {
    if pid <= 0 {
        // Never signal a process group (0) or everyone (-1) by mistake.
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad pid"));
    }
    // SAFETY: a plain syscall with integer arguments.
    cvt(unsafe { libc::kill(pid, sig) }).map(drop)
}

/// The parent's pid.
pub(crate) fn getppid() -> u32 {
    // SAFETY: getppid cannot fail.
    unsafe { libc::getppid() as u32 }
}

/// Leave the process now, without unwinding, atexit handlers or flushing
/// std's buffers (which belong to the parent's copy of the program).
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and never returns.
    unsafe { libc::_exit(code) }
}

/// Set or clear FD_CLOEXEC.
pub(crate) fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: F_GETFD/F_SETFD on an fd we own; errors are checked.
    unsafe {
        let flags = cvt(libc::fcntl(fd, libc::F_GETFD))?;
        let new = if on {
            flags | libc::FD_CLOEXEC
        } else {
            flags & !libc::FD_CLOEXEC
        };
        cvt(libc::fcntl(fd, libc::F_SETFD, new)).map(drop)
    }
}

/// Close a raw fd (in the child, for the parent's private fds).
pub(crate) fn close(fd: RawFd) {
    // SAFETY: used only in a freshly forked child on fds of the parent's
    // private objects, which the child never touches again.
    unsafe {
        libc::close(fd);
    }
}

/// Does the listening socket `fd` have a connection waiting for accept()?
/// (A listening socket polls readable exactly when its accept queue is not
/// empty; works for TCP and unix sockets alike.)
pub(crate) fn has_pending(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n == 1 && p.revents & libc::POLLIN != 0
}

/// The inode number of `fd`.
pub(crate) fn inode(fd: RawFd) -> Option<u64> {
    // SAFETY: fstat into a zeroed stat buffer; a bad fd just fails.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        (libc::fstat(fd, &mut st) == 0).then_some(st.st_ino)
    }
}

/// Is `fd` an open socket? (for `fd://N` and LISTEN_FDS checks)
pub(crate) fn is_socket(fd: RawFd) -> bool {
    // SAFETY: fstat into a zeroed stat buffer; a bad fd just fails.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(fd, &mut st) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFSOCK
    }
}

/// Take ownership of an inherited fd (LISTEN_FDS, fd://N, FERROCORN_FDS).
pub(crate) fn adopt_socket(fd: RawFd) -> io::Result<socket2::Socket> {
    use std::os::fd::FromRawFd;
    if !is_socket(fd) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("fd {fd} is not an open socket"),
        ));
    }
    // SAFETY: the fd is open and a socket (checked above), handed to this
    // process to own; each inherited fd is adopted exactly once.
    let sock = unsafe { socket2::Socket::from_raw_fd(fd) };
    sock.set_cloexec(true)?;
    Ok(sock)
}

/// In a forked child: close every TCP socket bound to `port` on the local
/// side (the metrics exporter's listener and its client connections, which
/// must close when the supervisor closes them).
#[cfg(feature = "metrics")]
pub(crate) fn close_sockets_with_local_port(port: u16, keep: &[RawFd]) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<RawFd> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in fds {
        if fd <= 2 || keep.contains(&fd) || !is_socket(fd) {
            continue;
        }
        // SAFETY: `fd` was listed as open just now and we only borrow it for
        // the getsockname below; nothing else runs in this child meanwhile.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let local = socket2::SockRef::from(&borrowed).local_addr();
        if let Ok(addr) = local
            && addr.as_socket().map(|a| a.port()) == Some(port)
        {
            close(fd);
        }
    }
}

/// In a forked child: close every descriptor (but `keep`) open on a file
/// under `dir`. The supervisor's metrics collector keeps the workers' metric
/// files open between scrapes; a worker must not inherit them (it would keep
/// deleted files alive on disk for its whole life).
#[cfg(feature = "metrics")]
pub(crate) fn close_files_under(dir: &std::path::Path, keep: &[RawFd]) {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<RawFd> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in fds {
        if fd <= 2 || keep.contains(&fd) {
            continue;
        }
        if std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .is_ok_and(|target| target.starts_with(dir))
        {
            close(fd);
        }
    }
}

// ---------------------------------------------------------------------------
// The signal self-pipe.

static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    // Only async-signal-safe work: errno save/restore and one write().
    // SAFETY: __errno_location returns this thread's errno slot.
    let errno = unsafe { *libc::__errno_location() };
    let fd = PIPE_WRITE.load(Ordering::Relaxed);
    if fd >= 0 {
        let b = sig as u8;
        // SAFETY: writing one byte from a local to a non-blocking pipe; a
        // full pipe just drops the byte (SIGCHLD is idempotent, the rest are
        // rare).
        unsafe {
            libc::write(fd, (&b as *const u8).cast(), 1);
        }
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// Signals delivered to the supervisor arrive as bytes on this pipe.
pub(crate) struct SignalPipe {
    read: std::os::fd::OwnedFd,
    write: std::os::fd::OwnedFd,
}

impl SignalPipe {
    /// Create the pipe and install handlers for [`HANDLED`].
    pub(crate) fn install() -> io::Result<SignalPipe> {
        use std::os::fd::FromRawFd;
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` has room for the two descriptors.
        cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) })?;
        // SAFETY: pipe2 just returned these two fresh descriptors.
        let (read, write) = unsafe {
            (
                std::os::fd::OwnedFd::from_raw_fd(fds[0]),
                std::os::fd::OwnedFd::from_raw_fd(fds[1]),
            )
        };
        PIPE_WRITE.store(write.as_raw_fd(), Ordering::SeqCst);
        for sig in HANDLED {
            // SAFETY: a zeroed sigaction with our handler, an emptied mask
            // and SA_RESTART; the handler is async-signal-safe.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_signal as *const () as usize;
                sa.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut sa.sa_mask);
                cvt(libc::sigaction(sig, &sa, std::ptr::null_mut()))?;
            }
        }
        Ok(SignalPipe { read, write })
    }

    pub(crate) fn read_fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// Drain the pipe into `out`.
    pub(crate) fn drain(&self, out: &mut Vec<i32>) {
        let mut buf = [0u8; 64];
        loop {
            // SAFETY: reading into a local buffer of the given length.
            let n =
                unsafe { libc::read(self.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 {
                out.extend(buf[..n as usize].iter().map(|&b| b as i32));
                continue;
            }
            if n == -1 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
    }

    /// In the forked child: default dispositions, close the pipe.
    pub(crate) fn reset_in_child(&self) {
        reset_handlers();
        PIPE_WRITE.store(-1, Ordering::SeqCst);
        close(self.read.as_raw_fd());
        close(self.write.as_raw_fd());
    }

    /// Restore default dispositions (before `run` returns).
    pub(crate) fn uninstall(self) {
        reset_handlers();
        PIPE_WRITE.store(-1, Ordering::SeqCst);
    }
}

fn reset_handlers() {
    for sig in HANDLED {
        // SAFETY: setting the default disposition is always valid.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
}

/// Block every signal (before fork); returns the previous mask.
pub(crate) fn block_all() -> libc::sigset_t {
    // SAFETY: sigset_t values are initialised by sigfillset/pthread_sigmask.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        old
    }
}

/// Restore a signal mask returned by [`block_all`].
pub(crate) fn restore_mask(old: &libc::sigset_t) {
    // SAFETY: `old` came from pthread_sigmask.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, old, std::ptr::null_mut());
    }
}

/// Unblock every signal (in the child, after resetting the handlers).
pub(crate) fn unblock_all() {
    // SAFETY: an emptied set is a valid mask.
    unsafe {
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
}

/// Remove an environment variable (the supervisor is single-threaded).
pub(crate) fn remove_env(key: &str) {
    // SAFETY: called from `Supervisor::run`, whose contract is a process
    // with a single thread, so no other thread reads the environment.
    unsafe { std::env::remove_var(key) }
}
