//! The hyper peer of `just bench`: hyper 1.x on a tokio runtime of 2 worker
//! threads, answering every request with the same bytes as ferrocorn's `/`.
//!
//! Usage: `hyper-hello ADDR [THREADS]`. The body and its content type come from
//! the environment (`BENCH_BODY`, `BENCH_CONTENT_TYPE`) so that loadbench can
//! hand it exactly what ferrocorn answered. It prints `listening on ADDR` once
//! bound and serves until killed.

use std::convert::Infallible;
use std::net::SocketAddr;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

fn main() {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:8080".to_owned())
        .parse()
        .expect("ADDR must be ip:port");
    let threads: usize = args
        .next()
        .map(|t| t.parse().expect("THREADS must be a number"))
        .unwrap_or(2);
    let body =
        Bytes::from(std::env::var("BENCH_BODY").unwrap_or_else(|_| "Hello, World!\n".into()));
    let content_type: &'static str = std::env::var("BENCH_CONTENT_TYPE")
        .unwrap_or_else(|_| "text/plain".into())
        .leak();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_io()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        println!(
            "listening on {}",
            listener.local_addr().expect("local_addr")
        );
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                // EMFILE and friends: keep serving the connections we have.
                Err(_) => continue,
            };
            let _ = stream.set_nodelay(true);
            let body = body.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req: Request<Incoming>| {
                    let body = body.clone();
                    async move {
                        Ok::<_, Infallible>(
                            Response::builder()
                                .header("content-type", content_type)
                                .body(Full::new(body))
                                .expect("static response"),
                        )
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}
