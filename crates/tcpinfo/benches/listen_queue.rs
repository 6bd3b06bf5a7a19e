//! Cost of reading the listen queue, as every metrics scrape does, against
//! peers measured in the same run: the full `TcpInfo::of`, and the floor of
//! any such read, one plain `getsockopt(SO_RCVBUF)` on the same socket.

use std::hint::black_box;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use ferrocorn_tcpinfo::{TcpInfo, listen_queue};
use socket2::{Domain, Protocol, SockRef, Socket, Type};

fn listener() -> TcpListener {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    socket.bind(&addr.into()).unwrap();
    socket.listen(1024).unwrap();
    socket.into()
}

/// Mean nanoseconds per call of `f` over `n` calls.
fn ns_per_call(n: u32, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed().as_nanos() as f64 / f64::from(n)
}

fn bench(c: &mut Criterion) {
    let l = listener();
    // A few connections waiting, as under load.
    let _clients: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(l.local_addr().unwrap()).unwrap())
        .collect();
    let sock = SockRef::from(&l);

    let mut group = c.benchmark_group("tcp_info");
    group.bench_function("listen_queue", |b| {
        b.iter(|| listen_queue(black_box(&l)).unwrap())
    });
    group.bench_function("TcpInfo::of (peer)", |b| {
        b.iter(|| TcpInfo::of(black_box(&l)).unwrap())
    });
    group.bench_function("getsockopt SO_RCVBUF (syscall floor)", |b| {
        b.iter(|| black_box(&sock).recv_buffer_size().unwrap())
    });
    group.finish();

    // Ratios from interleaved rounds, so load on the machine hits all alike.
    let (mut lq, mut full, mut floor) = (0.0, 0.0, 0.0);
    for _ in 0..5 {
        lq += ns_per_call(50_000, || {
            black_box(listen_queue(black_box(&l)).unwrap());
        });
        full += ns_per_call(50_000, || {
            black_box(TcpInfo::of(black_box(&l)).unwrap());
        });
        floor += ns_per_call(50_000, || {
            black_box(black_box(&sock).recv_buffer_size().unwrap());
        });
    }
    println!(
        "listen_queue {:.0} ns/call = {:.2}x TcpInfo::of ({:.0} ns), {:.2}x one getsockopt(SO_RCVBUF) ({:.0} ns)",
        lq / 5.0,
        lq / full,
        full / 5.0,
        lq / floor,
        floor / 5.0,
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
