//! Running the app for one request on a pool thread (or inline on the
//! loop): calling it, turning its answer into bytes ([`crate::encode`]),
//! pulling the pieces of a streamed response, and finishing the request
//! (access log, request metrics).
//!
//! The access line of a request is written on the thread that produced
//! its response: a pool thread (one write per line), or the event loop for
//! `App::nonblocking` requests (lines held and written together at most
//! 10 ms after the first, see `Server::run`).

use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::time::Instant;

use crate::busy;
use crate::encode;
use crate::msg::{Chunk, Done, Job, LogCtx, Msg, Pull, StreamResp, Task};
use crate::pool::Shared;
use crate::request::{OwnedHead, Request};
use crate::response::{Response, header_lines, reason};
use crate::write_buf::WriteBuf;
use ferrocorn_log::AccessRecord;

/// What a pool thread does with a task.
pub(crate) fn run_task(shared: &Shared, task: Task) -> Msg {
    match task {
        Task::Call(job) => run_call(shared, job),
        Task::Pull(pull) => run_pull(shared, pull),
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = p.downcast_ref::<&str>() {
        s
    } else if let Some(s) = p.downcast_ref::<String>() {
        s
    } else {
        "panic"
    }
}

/// Run the app for one request on the calling (event-loop) thread, counted
/// as an active thread while it runs, as a pool thread would be.
pub(crate) fn run_inline(shared: &Shared, job: Job) -> Msg {
    let n = shared.stats.active_threads.fetch_add(1, Relaxed) + 1;
    shared.metrics.active_threads(n);
    let msg = run_call(shared, job);
    let n = shared.stats.active_threads.fetch_sub(1, Relaxed) - 1;
    shared.metrics.active_threads(n);
    msg
}

/// Run the app for one request and serialize its response.
pub(crate) fn run_call(shared: &Shared, mut job: Job) -> Msg {
    let result = catch_unwind(AssertUnwindSafe(|| {
        let mut req = Request {
            head: &job.head,
            body: &mut job.body,
            peer: job.peer,
            local: job.local,
        };
        shared.app.call(&mut req)
    }));
    let mut resp = match result {
        Ok(r) => r,
        Err(payload) => {
            slog::error!(shared.logger, "Error handling request {}", job.head.target();
                "method" => job.head.method(), "panic" => panic_message(&*payload));
            // Dropping a payload may itself panic.
            let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
            Response::text(500, "Internal Server Error\n")
        }
    };
    let (body_done, body_err) = job.body.finish();
    if let Some(status) = body_err.and_then(|e| e.status()) {
        resp = Response::text(status, &format!("{}\n", reason(status)));
    }
    if let Some(why) = resp.invalid.take() {
        slog::error!(
            shared.logger,
            "Error handling request {}: {}",
            job.head.target(),
            why
        );
        resp = Response::text(500, "Internal Server Error\n");
    }
    let keep_alive =
        job.keep_alive && body_done && body_err.is_none() && !shared.draining.load(Relaxed);
    let head_req = job.head.method() == "HEAD";
    let version = job.head.head.version;
    let status = resp.status();
    let mut out = std::mem::take(&mut job.out);
    let s = encode::serialize(resp, head_req, version, keep_alive, &mut out);
    let mut wbuf = WriteBuf::new(out);
    wbuf.body = s.body;
    let (stream, recycle) = match s.stream {
        Some((iter, chunked, remaining)) => {
            let ctx = Box::new(LogCtx {
                head: job.head,
                peer: job.peer,
                resp_headers: s.app_headers,
                start: job.start,
            });
            let stream = Box::new(StreamResp {
                iter,
                chunked,
                remaining,
                sent: 0,
                status,
                ctx,
                window: Default::default(),
            });
            (Some(stream), None)
        }
        None => {
            finish_request(
                shared,
                &job.head,
                job.peer,
                status,
                s.body_len,
                &s.app_headers,
                job.start,
            );
            (None, Some((job.head.buf, job.head.headers)))
        }
    };
    Msg::Done(Done {
        token: job.token,
        generation: job.generation,
        out: wbuf,
        close: s.close,
        stream,
        recycle,
    })
}

/// A pull goes on producing pieces while less than this is produced and
/// not yet written to the client (in pieces on their way to the loop and in
/// the connection's write buffer), and for at most this much per task: a
/// fast stream costs a round trip between the loop and the pool per
/// quarter MiB, not per piece, while a slow client still stops the pulling
/// (the stream goes back to the loop, pulled again when its write buffer
/// runs low) and other requests still get their turn between tasks.
pub(crate) const PULL_AHEAD: usize = 256 * 1024;

/// Produce the next pieces of a streamed response: each is sent to the
/// loop as soon as it is made (a slow generator's piece reaches the client
/// before the next one is asked for); the last one, which ends the stream
/// or hands it back to the loop, is returned.
pub(crate) fn run_pull(shared: &Shared, mut pull: Pull) -> Msg {
    let mut produced = 0;
    loop {
        let (data, ended) = next_piece(shared, &mut pull.stream);
        if let Some(close) = ended {
            end_stream(shared, &pull.stream);
            return Msg::Chunk(Chunk {
                token: pull.token,
                generation: pull.generation,
                data,
                stream: None,
                close,
                more: false,
            });
        }
        produced += data.len();
        let w = &pull.stream.window;
        let ahead = w.in_flight.load(SeqCst) + w.unsent.load(SeqCst) + data.len();
        if produced >= PULL_AHEAD || ahead >= PULL_AHEAD || w.gone.load(SeqCst) {
            return Msg::Chunk(Chunk {
                token: pull.token,
                generation: pull.generation,
                data,
                stream: Some(pull.stream),
                close: false,
                more: false,
            });
        }
        w.in_flight.fetch_add(data.len(), SeqCst);
        shared.send(Msg::Chunk(Chunk {
            token: pull.token,
            generation: pull.generation,
            data,
            stream: None,
            close: false,
            more: true,
        }));
        // Each piece is a new start for the heartbeat's stuck check, as
        // when each piece was a task of its own.
        busy::restart();
    }
}

/// The next piece of a stream, framed, and `Some(close)` when the stream
/// ended with it (close the connection after it if `close`).
fn next_piece(shared: &Shared, stream: &mut StreamResp) -> (Vec<u8>, Option<bool>) {
    let mut data = Vec::new();
    // Skip empty items (an empty chunk would end a chunked body).
    let item = loop {
        match catch_unwind(AssertUnwindSafe(|| stream.iter.next())) {
            Ok(Some(Ok(v))) if v.is_empty() => continue,
            Ok(item) => break Ok(item),
            Err(payload) => {
                let msg = panic_message(&*payload).to_owned();
                let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
                break Err(msg);
            }
        }
    };
    let ended = match item {
        Ok(Some(Ok(mut v))) => {
            let mut close = false;
            if let Some(rem) = stream.remaining.as_mut() {
                if v.len() as u64 > *rem {
                    slog::error!(
                        shared.logger,
                        "response body longer than its Content-Length"
                    );
                    v.truncate(*rem as usize);
                    close = true;
                }
                *rem -= v.len() as u64;
            }
            stream.sent += v.len() as u64;
            if stream.chunked {
                data = shared.take_spare();
                encode::chunk(&v, &mut data);
            } else {
                data = v;
            }
            close.then_some(true)
        }
        Ok(None) => {
            let mut close = false;
            if stream.chunked {
                data.extend_from_slice(encode::LAST_CHUNK);
            }
            if stream.remaining.is_some_and(|r| r > 0) {
                slog::error!(
                    shared.logger,
                    "response body shorter than its Content-Length"
                );
                close = true;
            }
            Some(close)
        }
        Ok(Some(Err(e))) => {
            slog::error!(shared.logger, "Error streaming response: {}", e);
            Some(true)
        }
        Err(msg) => {
            slog::error!(shared.logger, "Error streaming response"; "panic" => msg);
            Some(true)
        }
    };
    (data, ended)
}

fn end_stream(shared: &Shared, stream: &StreamResp) {
    let ctx = &stream.ctx;
    finish_request(
        shared,
        &ctx.head,
        ctx.peer,
        stream.status,
        Some(stream.sent),
        &ctx.resp_headers,
        ctx.start,
    );
}

/// Access log and request metrics for one answered request.
fn finish_request(
    shared: &Shared,
    head: &OwnedHead,
    peer: Option<SocketAddr>,
    status: u16,
    bytes: Option<u64>,
    resp_headers: &[u8],
    start: Instant,
) {
    let took = start.elapsed();
    shared.metrics.request(head.method(), status, took);
    if let Some(access) = &shared.access {
        // Headers only when the format shows them, on the stack when few.
        let format = access.format();
        let (mut req_stack, mut req_heap, mut resp_stack, mut resp_heap);
        let req_headers = if format.uses_request_headers() {
            (req_stack, req_heap) = ([("", &b""[..]); 32], Vec::new());
            collect_small(head.headers(), &mut req_stack, &mut req_heap)
        } else {
            &[]
        };
        let resp_headers = if format.uses_response_headers() {
            (resp_stack, resp_heap) = ([("", &b""[..]); 16], Vec::new());
            collect_small(header_lines(resp_headers), &mut resp_stack, &mut resp_heap)
        } else {
            &[]
        };
        access.log(&AccessRecord {
            remote: peer,
            method: head.method(),
            target: head.target(),
            path: head.path(),
            query: head.query(),
            version: head.head.version.as_str(),
            status,
            response_bytes: bytes,
            request_time: took,
            request_headers: req_headers,
            response_headers: resp_headers,
            pid: shared.pid,
        });
    }
}

/// The items of `it`, in `stack` when they fit, else in `heap`.
fn collect_small<'a, T: Copy>(
    mut it: impl Iterator<Item = T>,
    stack: &'a mut [T],
    heap: &'a mut Vec<T>,
) -> &'a [T] {
    let mut n = 0;
    while let Some(x) = it.next() {
        if n == stack.len() {
            heap.extend_from_slice(stack);
            heap.push(x);
            heap.extend(it);
            return heap;
        }
        stack[n] = x;
        n += 1;
    }
    &stack[..n]
}

#[cfg(test)]
mod tests {
    use super::collect_small;

    #[test]
    fn collect_small_keeps_order_on_the_stack_and_beyond() {
        for n in [0usize, 1, 3, 4, 5, 40] {
            let mut stack = [0usize; 4];
            let mut heap = Vec::new();
            let got = collect_small(0..n, &mut stack, &mut heap).to_vec();
            assert_eq!(got, (0..n).collect::<Vec<_>>(), "{n} items");
            assert_eq!(
                heap.is_empty(),
                n <= 4,
                "{n} items: heap used only past the stack"
            );
        }
    }
}
