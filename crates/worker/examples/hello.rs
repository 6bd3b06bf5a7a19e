//! A hello-world worker for load tests:
//!
//! ```sh
//! cargo run --release -p ferrocorn-worker --example hello -- 127.0.0.1:8080 [threads] [inline] [processes] [worker_connections]
//! wrk -t2 -c100 -d10s http://127.0.0.1:8080/
//! ```
//!
//! With `processes` > 1 the listener is bound once and the process forks
//! that many workers sharing it, as the supervisor does.

use std::sync::Arc;

use ferrocorn_worker::{Listener, Request, Response, Worker, WorkerConfig};

fn hello(_req: &mut Request<'_>) -> Response {
    Response::new(200)
        .header("Content-Type", "text/plain")
        .body("Hello, world!\n")
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8080".into());
    let threads: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(2);
    let inline = args.next().is_some_and(|s| s == "inline" || s == "true");
    let processes: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    let connections: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let listener = std::net::TcpListener::bind(&addr)?;
    eprintln!("hello: {addr}, {threads} threads, inline {inline}, {processes} processes");
    let mut children = Vec::new();
    for _ in 1..processes {
        // SAFETY: no other thread exists yet in this process, so the child
        // may run anything; it only serves and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            return serve(listener, threads, inline, connections);
        }
        children.push(pid);
    }
    serve(listener, threads, inline, connections)
}

fn serve(
    listener: std::net::TcpListener,
    threads: usize,
    inline: bool,
    worker_connections: usize,
) -> std::io::Result<()> {
    let config = WorkerConfig {
        threads,
        inline,
        worker_connections,
        ..WorkerConfig::default()
    };
    Worker::new(config, vec![Listener::Tcp(listener)], Arc::new(hello))?
        .handle_signals(true)
        .run()
}
