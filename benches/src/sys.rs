//! The few system calls the benchmark needs: more file descriptors, signals,
//! the CPU time of finished children.

use std::io;

/// Raises the soft `RLIMIT_NOFILE` to `want` (or the hard limit if lower) and
/// returns the new soft limit. Children spawned afterwards inherit it, which is
/// how the servers get room for 10,000 idle connections.
// rlim_t is u64 on 64-bit Linux but not everywhere the crate may compile.
#[allow(clippy::unnecessary_cast)]
pub fn raise_nofile(want: u64) -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own; the resource is valid.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let target = want.min(lim.rlim_max as u64);
    if (lim.rlim_cur as u64) < target {
        lim.rlim_cur = target as libc::rlim_t;
        // SAFETY: setrlimit only reads the struct; soft <= hard holds.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(lim.rlim_cur as u64)
}

/// Sends `signal` to process `pid`.
pub fn kill(pid: u32, signal: i32) -> io::Result<()> {
    // SAFETY: kill has no memory effects; a bad pid or signal is an error return.
    if unsafe { libc::kill(pid as libc::pid_t, signal) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// User plus system CPU seconds of all children this process has waited for
/// (`getrusage(RUSAGE_CHILDREN)`). The difference across one
/// `Command::output()` is that child's CPU time, provided no other child is
/// reaped meanwhile (loadbench runs one load generator at a time).
pub fn waited_children_cpu_seconds() -> io::Result<f64> {
    // SAFETY: rusage is plain old data, so all-zero bytes are a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own; RUSAGE_CHILDREN is valid.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(secs(usage.ru_utime) + secs(usage.ru_stime))
}
