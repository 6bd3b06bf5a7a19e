//! Cost of reading the listen queue, as a metrics scrape does, against the
//! full `TcpInfo::of` measured in the same run.

use std::hint::black_box;
use std::net::{SocketAddr, TcpListener, TcpStream};

use criterion::{Criterion, criterion_group, criterion_main};
use ferrocorn_tcpinfo::{TcpInfo, listen_queue};
use socket2::{Domain, Protocol, Socket, Type};

fn listener() -> TcpListener {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    socket.bind(&addr.into()).unwrap();
    socket.listen(1024).unwrap();
    socket.into()
}

fn bench(c: &mut Criterion) {
    let l = listener();
    // A few connections waiting, as under load.
    let _clients: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(l.local_addr().unwrap()).unwrap())
        .collect();

    let mut group = c.benchmark_group("tcp_info");
    group.bench_function("listen_queue", |b| {
        b.iter(|| listen_queue(black_box(&l)).unwrap())
    });
    group.bench_function("TcpInfo::of (peer)", |b| {
        b.iter(|| TcpInfo::of(black_box(&l)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
