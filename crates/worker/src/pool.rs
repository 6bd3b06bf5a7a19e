//! The thread pool running the app and the two queues between it and the
//! event loop (the messages are in [`crate::msg`]; what a pool thread does
//! with a task is in [`crate::dispatch`], handed to [`spawn`]). Requests go to the pool through a mutex-protected queue; results come back
//! through a vector the loop swaps out after a [`mio::Waker`] wake (one wake
//! per batch: only a push onto an empty vector wakes the loop).

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use crate::App;
use crate::busy::{BUSY_CLOCK, BusyClock, WAITING_FOR_CLIENT};
use crate::metrics::Metrics;
use crate::msg::{Msg, Task};
use crate::stats::WorkerStats;
use ferrocorn_log::AccessLog;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// At most this many spare piece buffers are kept per worker.
pub(crate) const SPARE_MAX: usize = 16;
/// A spare piece buffer holds at most this much.
pub(crate) const SPARE_CAP: usize = 256 * 1024;

/// State shared by the loop and the pool threads.
pub(crate) struct Shared {
    pub(crate) app: Arc<dyn App>,
    /// [`App::serial`], asked once.
    serial: bool,
    pub(crate) stats: Arc<WorkerStats>,
    pub(crate) logger: slog::Logger,
    pub(crate) access: Option<AccessLog>,
    pub(crate) metrics: Metrics,
    msgs: Mutex<Vec<Msg>>,
    /// Written buffers of streamed pieces, back from the loop for the
    /// pool's next pieces (see [`Shared::take_spare`]).
    spare: Mutex<Vec<Vec<u8>>>,
    waker: Arc<mio::Waker>,
    tasks: Mutex<Tasks>,
    task_cond: Condvar,
    pub(crate) queued: AtomicUsize,
    /// Pool threads asleep on the condition variable, changed only with
    /// `tasks` locked (read without it for the loop's quick look in
    /// [`Shared::nudge`]): the loop wakes one only when some thread sleeps
    /// (a futex call saved per request when the pool is busy), and for a
    /// serial app only when no thread serves the queue.
    idle: AtomicUsize,
    /// Nanoseconds since `epoch` when a pool thread last took a task: the
    /// pool's progress, see [`Shared::stalled`].
    last_take: AtomicU64,
    /// Set during a graceful stop: every response gets `Connection: close`.
    pub(crate) draining: AtomicBool,
    /// Per pool thread: 1 + the loop-epoch millisecond its current task
    /// started (or last got its thread back from a wait for the client),
    /// 0 when idle, [`WAITING_FOR_CLIENT`] while it waits for body bytes.
    pub(crate) busy_since: Arc<[AtomicU64]>,
    pub(crate) epoch: Instant,
    pub(crate) pid: u32,
}

#[derive(Default)]
struct Tasks {
    q: VecDeque<Task>,
    stop: bool,
}

/// The pool counts as stalled when no thread took a task for this long
/// while tasks wait: a sleeping thread is then woken for them (see
/// [`Shared::nudge`]).
pub(crate) const STALL_NS: u64 = 1_000_000;

impl Shared {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        app: Arc<dyn App>,
        stats: Arc<WorkerStats>,
        logger: slog::Logger,
        access: Option<AccessLog>,
        metrics: Metrics,
        waker: Arc<mio::Waker>,
        threads: usize,
        epoch: Instant,
    ) -> Shared {
        Shared {
            serial: app.serial(),
            app,
            stats,
            logger,
            access,
            metrics,
            msgs: Mutex::new(Vec::new()),
            spare: Mutex::new(Vec::new()),
            waker,
            tasks: Mutex::new(Tasks::default()),
            task_cond: Condvar::new(),
            queued: AtomicUsize::new(0),
            idle: AtomicUsize::new(0),
            last_take: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            busy_since: (0..threads).map(|_| AtomicU64::new(0)).collect(),
            epoch,
            pid: std::process::id(),
        }
    }

    /// Hand a message to the loop.
    pub(crate) fn send(&self, msg: Msg) {
        let mut q = lock(&self.msgs);
        let was_empty = q.is_empty();
        q.push(msg);
        drop(q);
        if was_empty {
            let _ = self.waker.wake();
        }
    }

    /// Take every message sent so far (swapping with `into`).
    pub(crate) fn take_msgs(&self, into: &mut Vec<Msg>) {
        let mut q = lock(&self.msgs);
        std::mem::swap(&mut *q, into);
    }

    /// A buffer for a streamed piece: one the loop wrote and gave back, or
    /// a new one. Pieces are made on pool threads and freed on the loop's:
    /// without reuse, the allocator's per-thread arenas grew by a few pieces
    /// and gave the memory back to the kernel over and over (`madvise`,
    /// then a page fault per 4 KiB touched again: 120 faults per 1 MiB
    /// response).
    pub(crate) fn take_spare(&self) -> Vec<u8> {
        lock(&self.spare).pop().unwrap_or_default()
    }

    /// Give written piece buffers back for reuse (at most [`SPARE_MAX`]
    /// kept, of at most [`SPARE_CAP`] bytes each).
    pub(crate) fn put_spare(&self, bufs: impl IntoIterator<Item = Vec<u8>>) {
        let mut spare = lock(&self.spare);
        for mut b in bufs {
            if spare.len() < SPARE_MAX && (4096..=SPARE_CAP).contains(&b.capacity()) {
                b.clear();
                spare.push(b);
            }
        }
    }

    /// Queue a task for the pool; the loop wakes a thread for it at the
    /// end of its turn ([`Shared::nudge`]), once for all the tasks of the
    /// turn: a pool thread that ran out of tasks while the loop read the
    /// next request was woken for each request, two futex calls and two
    /// thread switches per request.
    pub(crate) fn submit(&self, task: Task) {
        let mut t = lock(&self.tasks);
        t.q.push_back(task);
        self.queued.store(t.q.len(), Relaxed);
    }

    /// No pool thread took a task for [`STALL_NS`].
    fn stalled(&self) -> bool {
        self.now_ns().saturating_sub(self.last_take.load(Relaxed)) >= STALL_NS
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Wake sleeping pool threads for the queued tasks: one per task, or,
    /// for an [`App::serial`] app, one when no thread serves the queue:
    /// every thread sleeps, or none took a task for
    /// [`STALL_NS`] (the ones awake are held by their apps: blocked,
    /// sleeping, waiting for a client, or one long request). While one
    /// thread keeps taking tasks, it serves the queue alone: with the GIL,
    /// more threads of a Python app that does not block only take turns
    /// holding it, a thread wake-up and a GIL hand-over (futex calls on
    /// both sides) per request. Called by the loop before each poll; true
    /// while tasks wait with a thread asleep: the loop then looks again
    /// within a millisecond, so that tasks behind a thread that blocks wait
    /// about [`STALL_NS`] and a loop turn at most for another one.
    pub(crate) fn nudge(&self) -> bool {
        if self.queued.load(Relaxed) == 0 || self.idle.load(Relaxed) == 0 {
            return false;
        }
        let t = lock(&self.tasks);
        let idle = self.idle.load(Relaxed);
        let wake = if !self.serial {
            t.q.len().min(idle)
        } else if !t.q.is_empty() && idle > 0 && (idle == self.busy_since.len() || self.stalled()) {
            1
        } else {
            0
        };
        drop(t);
        for _ in 0..wake {
            self.task_cond.notify_one();
        }
        true
    }

    /// Wake a sleeping pool thread if tasks wait: the calling pool thread
    /// stops serving the queue for a while (it waits for a client's body).
    pub(crate) fn wake_if_queued(&self) {
        let t = lock(&self.tasks);
        let wake = self.idle.load(Relaxed) > 0 && !t.q.is_empty();
        drop(t);
        if wake {
            self.task_cond.notify_one();
        }
    }

    pub(crate) fn stop_pool(&self) {
        let mut t = lock(&self.tasks);
        t.stop = true;
        t.q.clear();
        drop(t);
        self.task_cond.notify_all();
    }

    fn next_task(&self) -> Option<Task> {
        let mut t = lock(&self.tasks);
        loop {
            if t.stop {
                return None;
            }
            if let Some(task) = t.q.pop_front() {
                self.queued.store(t.q.len(), Relaxed);
                self.last_take.store(self.now_ns(), Relaxed);
                return Some(task);
            }
            self.idle.fetch_add(1, Relaxed);
            t = self.task_cond.wait(t).unwrap_or_else(|e| e.into_inner());
            self.idle.fetch_sub(1, Relaxed);
        }
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Whether the pool made progress since `since_ms` (the previous
    /// heartbeat's turn): some thread is idle, waits for a client, or
    /// started its task at or after `since_ms` and within `timeout` of
    /// `now_ms` (always, for a zero `timeout`). When every thread holds a
    /// request it started before the previous turn, the heartbeat stops,
    /// and the supervisor kills the worker `timeout` after the last of them
    /// started (at most a loop turn later): every thread was then held for
    /// `timeout`. Before, the beat went on until the newest request was
    /// `timeout` old, and the kill came a second `timeout` later.
    pub(crate) fn pool_healthy(&self, now_ms: u64, since_ms: u64, timeout_ms: u64) -> bool {
        timeout_ms == 0
            || self.busy_since.iter().any(|b| {
                let v = b.load(Relaxed);
                v == 0 || v == WAITING_FOR_CLIENT || (v > since_ms && v - 1 + timeout_ms > now_ms)
            })
    }
}

/// What a pool thread does with a task ([`crate::dispatch::run_task`]).
pub(crate) type RunTask = fn(&Shared, Task) -> Msg;

/// Start `threads` pool threads running tasks with `run`.
pub(crate) fn spawn(shared: &Arc<Shared>, threads: usize, run: RunTask) -> io::Result<()> {
    for i in 0..threads {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name(format!("ferrocorn-pool-{i}"))
            .spawn(move || pool_thread(&shared, i, run))?;
    }
    Ok(())
}

fn pool_thread(shared: &Arc<Shared>, i: usize, run: RunTask) {
    BUSY_CLOCK.with(|c| {
        *c.borrow_mut() = Some(BusyClock {
            slots: shared.busy_since.clone(),
            index: i,
            epoch: shared.epoch,
            pool: shared.clone(),
        });
    });
    while let Some(task) = shared.next_task() {
        shared.busy_since[i].store(shared.now_ms() + 1, Relaxed);
        let n = shared.stats.active_threads.fetch_add(1, Relaxed) + 1;
        shared.metrics.active_threads(n);
        let msg = run(shared, task);
        let n = shared.stats.active_threads.fetch_sub(1, Relaxed) - 1;
        shared.metrics.active_threads(n);
        shared.busy_since[i].store(0, Relaxed);
        shared.send(msg);
    }
}
