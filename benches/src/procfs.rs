//! Facts about processes and sockets read from `/proc` (Linux only; elsewhere
//! every function fails with `Unsupported` or finds nothing).

use std::collections::HashSet;
use std::fs;
use std::io;
use std::net::SocketAddr;

/// The pids whose parent is `pid` (scanning `/proc/*/stat`, which works without
/// `CONFIG_PROC_CHILDREN`).
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| stat(child).is_some_and(|(ppid, state)| ppid == pid && state != 'Z'))
        .collect();
    out.sort_unstable();
    out
}

/// The parent pid and state letter of `pid`, from `/proc/PID/stat`.
pub fn stat(pid: u32) -> Option<(u32, char)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself contain spaces.
    let rest = &text[text.rfind(')')? + 2..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((ppid, state))
}

/// CPU time `pid` has used (all its threads, user + system), in seconds,
/// from fields 14 and 15 of `/proc/PID/stat`; 0 for a vanished process.
pub fn cpu_seconds(pid: u32) -> f64 {
    let (user, system) = cpu_user_system(pid);
    user + system
}

/// User and system CPU time of `pid` (all its threads), in seconds; zeros
/// for a vanished process.
pub fn cpu_user_system(pid: u32) -> (f64, f64) {
    let Ok(text) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return (0.0, 0.0);
    };
    let Some(close) = text.rfind(')') else {
        return (0.0, 0.0);
    };
    let f: Vec<&str> = text[close + 2..].split_ascii_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) as f64 / hz, ticks(12) as f64 / hz)
}

/// The sum of [`cpu_seconds`] over `pids`.
pub fn cpu_seconds_sum(pids: &[u32]) -> f64 {
    pids.iter().map(|&p| cpu_seconds(p)).sum()
}

/// The sums of [`cpu_user_system`] over `pids`.
pub fn cpu_user_system_sum(pids: &[u32]) -> (f64, f64) {
    pids.iter()
        .map(|&p| cpu_user_system(p))
        .fold((0.0, 0.0), |(u, s), (pu, ps)| (u + pu, s + ps))
}

/// True while `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    stat(pid).is_some_and(|(_, state)| state != 'Z')
}

/// Resident memory of `pid` in bytes (`VmRSS` of `/proc/PID/status`).
pub fn rss_bytes(pid: u32) -> io::Result<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmRSS"))
}

/// Resident and proportional set size of `pid` in bytes (`Rss` and `Pss` of
/// `/proc/PID/smaps_rollup`, Linux 4.14+). PSS divides every shared page by
/// the number of processes mapping it, so the PSS of a supervisor and its
/// workers adds up to the memory they take together, where RSS counts a
/// page shared copy-on-write after a fork once per process.
pub fn rss_pss_bytes(pid: u32) -> io::Result<(u64, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("no {name}")))
    };
    Ok((field("Rss:")?, field("Pss:")?))
}

/// The sum of [`rss_bytes`] over `pids` (processes that vanished count 0).
pub fn rss_sum(pids: &[u32]) -> u64 {
    pids.iter().map(|&p| rss_bytes(p).unwrap_or(0)).sum()
}

/// The socket inode of the IPv4 TCP connection whose local address is
/// `local` and remote address is `remote` (from `/proc/net/tcp`).
pub fn tcp_inode(local: SocketAddr, remote: SocketAddr) -> Option<u64> {
    let text = fs::read_to_string("/proc/net/tcp").ok()?;
    let want_local = hex_addr(local)?;
    let want_remote = hex_addr(remote)?;
    text.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        (f.len() > 9 && f[1] == want_local && f[2] == want_remote)
            .then(|| f[9].parse().ok())
            .flatten()
    })
}

/// The process among `pids` holding socket `inode` open.
pub fn socket_owner(pids: &[u32], inode: u64) -> Option<u32> {
    let needle = format!("socket:[{inode}]");
    pids.iter().copied().find(|pid| {
        fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|dir| {
            dir.filter_map(Result::ok)
                .any(|e| fs::read_link(e.path()).is_ok_and(|l| l.as_os_str() == needle.as_str()))
        })
    })
}

/// The socket inodes process `pid` holds open.
pub fn socket_inodes(pid: u32) -> HashSet<u64> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| {
            let link = fs::read_link(e.path()).ok()?;
            let s = link.to_str()?;
            s.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

/// `/proc/net/tcp`'s spelling of an IPv4 address: little-endian hex address,
/// big-endian hex port.
fn hex_addr(addr: SocketAddr) -> Option<String> {
    match addr {
        SocketAddr::V4(v4) => Some(format!(
            "{:08X}:{:04X}",
            u32::from_ne_bytes(v4.ip().octets()),
            v4.port()
        )),
        SocketAddr::V6(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn own_cpu_time_grows() {
        let me = std::process::id();
        let before = cpu_seconds(me);
        // Spin until the CPU time read from /proc grows (it counts in clock
        // ticks, and a loaded machine may give this thread less than a tick
        // in any fixed wall time), within a generous deadline.
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while cpu_seconds(me) <= before {
            assert!(
                t.elapsed() < std::time::Duration::from_secs(30),
                "CPU time stayed at {before} s"
            );
            for _ in 0..1_000_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        assert!(cpu_seconds(me) > before);
    }

    #[test]
    fn own_rss_and_parent() {
        let me = std::process::id();
        assert!(rss_bytes(me).unwrap() > 0);
        let (ppid, state) = stat(me).unwrap();
        assert!(ppid > 0);
        assert_ne!(state, 'Z');
    }

    #[test]
    fn finds_the_owner_of_a_socket() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server, _) = listener.accept().unwrap();
        let inode = tcp_inode(client.peer_addr().unwrap(), client.local_addr().unwrap()).unwrap();
        let me = std::process::id();
        assert_eq!(socket_owner(&[me], inode), Some(me));
        assert!(socket_inodes(me).contains(&inode));
    }
}
