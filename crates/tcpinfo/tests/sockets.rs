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

/// A connection held in the accept queue for `hold` before `accept`, the
/// client sending `send` after `send_after` (if any): the accept queue wait
/// read at accept, and the true time since the connect.
fn queued_for(hold: Duration, send: Option<(Duration, &[u8])>) -> (Duration, Duration) {
    let l = listener(8);
    let addr = l.local_addr().unwrap();
    let start = Instant::now();
    let mut client = TcpStream::connect(addr).unwrap();
    if let Some((after, bytes)) = send {
        // The measured interval itself, not a wait for a condition.
        thread::sleep(after);
        client.write_all(bytes).unwrap();
    }
    thread::sleep(hold.saturating_sub(start.elapsed()));
    let (conn, _) = l.accept().unwrap();
    let waited = ferrocorn_tcpinfo::accept_queue_wait(&conn).unwrap();
    let truth = start.elapsed();
    let full = TcpInfo::of(&conn).unwrap().accept_queue_wait().unwrap();
    assert!(
        full >= waited,
        "a later read is not shorter: {full:?} < {waited:?}"
    );
    (waited, truth)
}

/// The kernel's stamps have a resolution of a jiffy (at most 10 ms), so a
/// reading may round up by that much.
const JIFFY: Duration = Duration::from_millis(10);

#[test]
fn accept_queue_wait_measures_a_silent_client_from_its_handshake() {
    let (waited, truth) = queued_for(Duration::from_millis(300), None);
    assert!(
        waited + JIFFY >= Duration::from_millis(300) && waited <= truth + JIFFY,
        "held 300 ms ({truth:?} in all), read {waited:?}"
    );
}

#[test]
fn accept_queue_wait_is_a_lower_bound_when_the_client_sent_data() {
    // Sent 200 ms into a 300 ms wait: at least the last 100 ms are seen,
    // never more than the whole wait.
    let (waited, truth) = queued_for(
        Duration::from_millis(300),
        Some((Duration::from_millis(200), b"GET / HTTP/1.1\r\n\r\n")),
    );
    assert!(
        waited + JIFFY >= Duration::from_millis(100) && waited <= truth + JIFFY,
        "read {waited:?} of {truth:?}"
    );
}

#[test]
fn accept_queue_wait_of_a_connection_accepted_at_once_is_small() {
    let (waited, truth) = queued_for(Duration::ZERO, None);
    assert!(waited <= truth + JIFFY, "read {waited:?} of {truth:?}");
    assert!(waited < Duration::from_millis(100), "{waited:?}");
}

#[test]
fn accept_queue_wait_of_a_unix_socket_is_an_error_not_a_panic() {
    let (a, _b) = UnixStream::pair().unwrap();
    let err = ferrocorn_tcpinfo::accept_queue_wait(&a).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EOPNOTSUPP), "{err}");
}
