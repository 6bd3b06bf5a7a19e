//! The accept queue of a listening unix socket, from the kernel's
//! `sock_diag` netlink interface (what `ss -lx` shows as Recv-Q/Send-Q).
//!
//! TCP_INFO does not exist for unix sockets and `SIOCINQ` refuses listening
//! ones, so the supervisor asks `NETLINK_SOCK_DIAG` for the one socket with
//! our socket's inode: `UNIX_DIAG_RQLEN` carries the queue length and the
//! backlog limit of a listener.
#![cfg_attr(not(feature = "metrics"), allow(dead_code))]

use std::os::fd::AsFd;

/// `(queued, capacity)` of a listening unix socket; `None` when the kernel
/// has no unix `sock_diag` (CONFIG_UNIX_DIAG) or on other systems.
#[cfg(target_os = "linux")]
pub(crate) fn listen_queue(sock: &impl AsFd) -> Option<(u32, u32)> {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    const NETLINK_SOCK_DIAG: i32 = 4;
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLMSG_ERROR: u16 = 2;
    const NLM_F_REQUEST: u16 = 1;
    const TCP_LISTEN: u32 = 10;
    const UDIAG_SHOW_RQLEN: u32 = 0x10;
    const UNIX_DIAG_RQLEN: u16 = 4;

    let ino = crate::sys::inode(sock.as_fd().as_raw_fd())?;
    let ino = u32::try_from(ino).ok()?;
    let nl = socket2::Socket::new(
        socket2::Domain::from(libc::AF_NETLINK),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::from(NETLINK_SOCK_DIAG)),
    )
    .ok()?;
    nl.set_read_timeout(Some(Duration::from_millis(200))).ok()?;

    // struct nlmsghdr + struct unix_diag_req, native endian.
    let mut req = Vec::with_capacity(40);
    req.extend_from_slice(&40u32.to_ne_bytes()); // nlmsg_len
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // seq
    req.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
    req.push(libc::AF_UNIX as u8); // sdiag_family
    req.push(0); // sdiag_protocol
    req.extend_from_slice(&0u16.to_ne_bytes()); // pad
    req.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes()); // udiag_states
    req.extend_from_slice(&ino.to_ne_bytes()); // udiag_ino
    req.extend_from_slice(&UDIAG_SHOW_RQLEN.to_ne_bytes()); // udiag_show
    req.extend_from_slice(&u32::MAX.to_ne_bytes()); // cookie: INET_DIAG_NOCOOKIE
    req.extend_from_slice(&u32::MAX.to_ne_bytes());
    nl.send(&req).ok()?;

    let mut buf = [0u8; 1024];
    let n = (&nl).read(&mut buf).ok()?;
    let msg = &buf[..n];
    let u16_at = |b: &[u8], i: usize| Some(u16::from_ne_bytes(b.get(i..i + 2)?.try_into().ok()?));
    let u32_at = |b: &[u8], i: usize| Some(u32::from_ne_bytes(b.get(i..i + 4)?.try_into().ok()?));
    let len = (u32_at(msg, 0)? as usize).min(msg.len());
    if u16_at(msg, 4)? == NLMSG_ERROR || u16_at(msg, 4)? != SOCK_DIAG_BY_FAMILY {
        return None;
    }
    // struct unix_diag_msg is 16 bytes; then rtattrs, 4-byte aligned.
    if u32_at(msg, 16 + 4)? != ino {
        return None;
    }
    let mut at = 16 + 16;
    while at + 4 <= len {
        let rta_len = u16_at(msg, at)? as usize;
        let rta_type = u16_at(msg, at + 2)?;
        if rta_len < 4 {
            return None;
        }
        if rta_type == UNIX_DIAG_RQLEN && rta_len >= 12 {
            return Some((u32_at(msg, at + 4)?, u32_at(msg, at + 8)?));
        }
        at += (rta_len + 3) & !3;
    }
    None
}

/// Unix `sock_diag` needs Linux.
#[cfg(not(target_os = "linux"))]
pub(crate) fn listen_queue(_sock: &impl AsFd) -> Option<(u32, u32)> {
    None
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn counts_queued_unix_connections() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let Some((0, cap)) = super::listen_queue(&l) else {
            // No unix sock_diag in this kernel: nothing to check.
            eprintln!("unix sock_diag not available");
            return;
        };
        assert!(cap > 0);
        let c: Vec<_> = (0..3)
            .map(|_| std::os::unix::net::UnixStream::connect(&path).unwrap())
            .collect();
        assert_eq!(super::listen_queue(&l), Some((3, cap)));
        drop(c);
        let _ = l.accept().unwrap();
        assert_eq!(super::listen_queue(&l).map(|q| q.0), Some(2));
    }
}
