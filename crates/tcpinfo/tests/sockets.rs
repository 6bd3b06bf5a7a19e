//! Real sockets on 127.0.0.1: the listen queue and a connected socket's info.
#![cfg(target_os = "linux")]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::{Duration, Instant};

use ferrocorn_tcpinfo::{ListenQueue, TcpInfo, TcpState, listen_queue};
use socket2::{Domain, Protocol, Socket, Type};

const DEADLINE: Duration = Duration::from_secs(5);

/// A listener on 127.0.0.1 with the given backlog.
fn listener(backlog: i32) -> TcpListener {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    socket.bind(&addr.into()).unwrap();
    socket.listen(backlog).unwrap();
    socket.into()
}

/// Polls `listen_queue` until `want(queue)` holds; panics with the last
/// value after the deadline.
fn wait_for(l: &TcpListener, what: &str, want: impl Fn(ListenQueue) -> bool) -> ListenQueue {
    let start = Instant::now();
    loop {
        let queue = listen_queue(l).unwrap();
        if want(queue) {
            return queue;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "waited {DEADLINE:?} for {what}; last {queue:?}"
        );
        thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn listen_queue_counts_connections_waiting_for_accept() {
    const BACKLOG: u32 = 7;
    const K: u32 = 4;
    const J: u32 = 3;
    let l = listener(BACKLOG as i32);
    let addr = l.local_addr().unwrap();

    let empty = listen_queue(&l).unwrap();
    assert_eq!(
        empty,
        ListenQueue {
            queued: 0,
            capacity: BACKLOG
        }
    );

    let clients: Vec<TcpStream> = (0..K).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let queue = wait_for(&l, "k queued", |q| q.queued == K);
    assert_eq!(
        queue,
        ListenQueue {
            queued: K,
            capacity: BACKLOG
        }
    );

    let accepted: Vec<TcpStream> = (0..J).map(|_| l.accept().unwrap().0).collect();
    let queue = wait_for(&l, "k - j queued", |q| q.queued == K - J);
    assert_eq!(
        queue,
        ListenQueue {
            queued: K - J,
            capacity: BACKLOG
        }
    );

    // The full TcpInfo of a listener says the same.
    let info = TcpInfo::of(&l).unwrap();
    assert_eq!(info.state, Some(TcpState::Listen));
    assert_eq!(
        info.listen_queue(),
        Some(ListenQueue {
            queued: K - J,
            capacity: BACKLOG
        })
    );
    drop((clients, accepted));
}

#[test]
fn capacity_is_the_backlog_as_the_kernel_clamped_it() {
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .expect("read somaxconn")
        .trim()
        .parse()
        .expect("somaxconn is a number");
    assert_eq!(listen_queue(&listener(1)).unwrap().capacity, 1);
    let huge = listener(i32::MAX);
    assert_eq!(listen_queue(&huge).unwrap().capacity, somaxconn);
}

#[test]
fn connected_socket_reports_established_and_a_round_trip_time() {
    let l = listener(16);
    let mut client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (mut server, _) = l.accept().unwrap();

    // One request and answer, so both ends have data RTT samples.
    client.write_all(&[1; 100]).unwrap();
    let mut buf = [0; 100];
    server.read_exact(&mut buf).unwrap();
    server.write_all(&[2; 300]).unwrap();
    let mut buf = [0; 300];
    client.read_exact(&mut buf).unwrap();

    let info = TcpInfo::of(&client).unwrap();
    assert_eq!(info.state, Some(TcpState::Established));
    assert!(info.len >= 104, "kernel returned {} bytes", info.len);
    let rtt = info.rtt.expect("rtt filled");
    assert!(
        rtt > Duration::ZERO && rtt < Duration::from_secs(1),
        "rtt {rtt:?}"
    );
    assert!(info.snd_mss.unwrap() > 0);
    if info.len >= 144 {
        assert_eq!(info.bytes_received, Some(300));
        assert!(info.segs_out.unwrap() >= 2);
    }
    if info.len >= 216 {
        assert_eq!(info.bytes_sent, Some(100));
    }
    // Fields the kernel filled are Some, the ones it did not are None.
    if info.len < TcpInfo::KNOWN_LEN {
        assert_eq!(info.options2, None);
    } else {
        assert!(info.options2.is_some());
    }
    assert_eq!(
        TcpInfo::of(&server).unwrap().state,
        Some(TcpState::Established)
    );
}

#[test]
fn listen_queue_on_a_connected_socket_is_a_clear_error() {
    let l = listener(16);
    let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let err = listen_queue(&client).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(
        err.to_string(),
        "socket is not listening (state ESTABLISHED)"
    );

    // A socket that is bound but neither listening nor connected.
    let unbound = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    let err = listen_queue(&unbound).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(err.to_string(), "socket is not listening (state CLOSE)");
}

#[test]
fn not_a_tcp_socket_is_the_kernels_error() {
    let (a, _b) = UnixStream::pair().unwrap();
    let err = TcpInfo::of(&a).unwrap_err();
    assert!(err.raw_os_error().is_some(), "{err}");
    assert!(listen_queue(&a).unwrap_err().raw_os_error().is_some());
}
