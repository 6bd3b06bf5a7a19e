//! Cost of reading the accept queue wait of each accepted connection, as a
//! worker does at accept, against `accept` itself measured in the same run:
//! `accept` alone, `accept` plus `accept_queue_wait` (one 60-byte
//! `getsockopt(TCP_INFO)`), and the extra as a share of `accept`.
//!
//! Clients are connected (and queued) outside the timed part and close
//! with a reset (SO_LINGER 0), so that no TIME_WAIT piles up on loopback.

use std::hint::black_box;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use socket2::{Domain, Protocol, SockRef, Socket, Type};

fn listener() -> TcpListener {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    socket.bind(&addr.into()).unwrap();
    socket.listen(4096).unwrap();
    socket.into()
}

/// A client connected to `addr`, closing with a reset when dropped.
fn client(addr: SocketAddr) -> TcpStream {
    let c = TcpStream::connect(addr).unwrap();
    SockRef::from(&c).set_linger(Some(Duration::ZERO)).unwrap();
    c
}

/// Nanoseconds per `accept` (plus the read when `read_wait`) over `n`
/// connections queued beforehand.
fn ns_per_accept(l: &TcpListener, n: usize, read_wait: bool) -> f64 {
    let addr = l.local_addr().unwrap();
    let clients: Vec<TcpStream> = (0..n).map(|_| client(addr)).collect();
    let mut conns = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        let (conn, _) = l.accept().unwrap();
        if read_wait {
            black_box(ferrocorn_tcpinfo::accept_queue_wait(&conn).unwrap());
        }
        conns.push(conn);
    }
    let ns = start.elapsed().as_nanos() as f64 / n as f64;
    drop(clients);
    drop(conns);
    ns
}

fn bench(c: &mut Criterion) {
    let l = listener();
    let addr = l.local_addr().unwrap();

    let mut group = c.benchmark_group("accept");
    group.bench_function("accept", |b| {
        b.iter_batched(
            || client(addr),
            |client| (client, l.accept().unwrap()),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("accept + accept_queue_wait", |b| {
        b.iter_batched(
            || client(addr),
            |client| {
                let (conn, peer) = l.accept().unwrap();
                let waited = ferrocorn_tcpinfo::accept_queue_wait(&conn).unwrap();
                (client, conn, peer, black_box(waited))
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("accept_queue_wait alone", |b| {
        let _client = client(addr);
        let (conn, _) = l.accept().unwrap();
        b.iter(|| ferrocorn_tcpinfo::accept_queue_wait(black_box(&conn)).unwrap())
    });
    group.finish();

    // Interleaved rounds, so load on the machine hits both alike.
    let (mut plain, mut with_wait) = (0.0, 0.0);
    const ROUNDS: usize = 6;
    for round in 0..ROUNDS {
        // Each goes first in turn (the previous batch's resets are still
        // being processed by the kernel at the start of a batch).
        if round % 2 == 0 {
            plain += ns_per_accept(&l, 1000, false);
            with_wait += ns_per_accept(&l, 1000, true);
        } else {
            with_wait += ns_per_accept(&l, 1000, true);
            plain += ns_per_accept(&l, 1000, false);
        }
    }
    let (plain, with_wait) = (plain / ROUNDS as f64, with_wait / ROUNDS as f64);
    println!(
        "accept {plain:.0} ns, accept + accept_queue_wait {with_wait:.0} ns: the read adds {:.0} ns = {:.1}% of an accept",
        with_wait - plain,
        (with_wait - plain) / plain * 100.0,
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
