//! Prometheus metrics in memory-mapped files, byte-compatible with Python
//! prometheus_client's multiprocess mode: write them from many processes,
//! merge them in one, clean up after dead processes, serve them.
//!
//! # Brief overview
//! - [`Registry`] creates metric families in a directory
//!   (`PROMETHEUS_MULTIPROC_DIR`): [`CounterVec`], [`GaugeVec`] (all ten
//!   [`GaugeMode`]s), [`HistogramVec`], [`SummaryVec`]. Their children
//!   ([`Counter`], [`Gauge`], [`Histogram`], [`Summary`]) update an 8-byte
//!   value in a shared mapping with one atomic operation: no lock, no
//!   allocation, no system call. Files are named and laid out exactly as
//!   prometheus_client 0.26 writes them (`counter_{pid}.db`,
//!   `gauge_livesum_{pid}.db`, ...), so Python reads ours and we read Python's.
//! - [`MultiProcessCollector`] merges a directory with prometheus_client's
//!   rules into `prometheus` [`MetricFamily`](prometheus::proto::MetricFamily)s
//!   (it is a [`prometheus::core::Collector`]); [`encode_text`] renders them
//!   with numbers spelled as Python spells them, so a series keeps its
//!   identity whichever side wrote it. Bad files never fail a scrape: they
//!   are skipped or read up to their last whole entry, with a [`Warning`].
//! - [`mark_process_dead`] drops a dead process's live and `all` gauges and
//!   folds its other files into one aggregate per type, so the number of
//!   files stays bounded and counters never go backwards.
//! - [`Exporter`] serves `GET /metrics` from a single-threaded mio loop (or
//!   its own thread); [`render_dir`] is the whole pipeline for one directory.
//!
//! # Design notes
//! **Mappings.** A file is mapped once at its size; when an append does not
//! fit, the file is extended (doubling, from 64 KiB, as prometheus_client
//! does) and a second, larger `MAP_SHARED` mapping is *added*. Old mappings
//! are never unmapped while a handle can point into them (handles keep their
//! file object alive); shared mappings of one file share its pages, so a
//! value written through an old mapping is the value every reader sees. The
//! cost is at most twice the file size in address space, and no update ever
//! waits for a remap. Appending a new series takes the file's mutex; updating
//! one never does.
//!
//! **Fork.** A process writes files named after its pid. After `fork()`,
//! every registry and handle of the child writes the child's own files (a
//! `pthread_atfork` child hook bumps a generation that each update compares,
//! one relaxed load), starting from zero there as prometheus_client does; the
//! parent's file is never written by the child. Do not fork while another
//! thread is *creating* a series (the child could inherit a held lock);
//! pre-fork servers fork before they start threads. A process that forks
//! with a raw `clone` system call (not through libc) is not detected.
//!
//! **Dead processes.** [`mark_process_dead`] deletes the process's `live*`
//! and `all` gauge files and folds its other files into `{type}_aggregate.db`
//! files: the process's file is first renamed to a hidden name (not ending
//! in `.db`), the new aggregate is written under a temporary name and
//! renamed over the old one with a trailer (after the `used` mark,
//! invisible to Python) naming the hidden file by pid, inode and mtime, and
//! only then is the hidden file deleted. After a crash at any point the
//! hidden file is either unclaimed (read, and folded by the next fold) or
//! claimed (skipped, and deleted by the next fold), and a process reusing
//! the pid writes a new file. Folds hold the directory's lock file
//! exclusively and this crate's readers hold it shared (both through a
//! turnstile, so neither starves, and neither waits unboundedly), so a
//! scrape in any process never counts a process twice or misses it.
//! `min`/`max`/`sum`/`mostrecent` gauges are folded too (prometheus_client
//! keeps a dead process's value in those modes forever; folding keeps the
//! exact same result with one file).
//!
//! **Reading.** Only regular files are read (opened with `O_NONBLOCK` and
//! `O_NOFOLLOW`, then checked with `fstat`: a FIFO never blocks a scrape, a
//! link to `/dev/zero` is not followed), with `pread` (never mapped: a file
//! truncated by another program would kill the reader with SIGBUS), once
//! each, up to `used` but never past the file's size, in directory order (so float sums come out bit for bit as
//! Python's); raw keys are hashed and each distinct key parsed once. A
//! long-lived [`MultiProcessCollector`] keeps parsed keys and open files
//! between scrapes, and for each file where its entries are: files are
//! append-only, so the next scrape reads the file up to its last `used`
//! mark in one call, checks that every known key is still in place (byte
//! for byte), takes the values at their known offsets and parses only the
//! entries appended since. A file renamed over, truncated or rewritten in
//! place is parsed again from its start.
//!
//! # Example
//! ```
//! use ferrocorn_shm_metrics::{GaugeMode, MultiProcessCollector, Registry, encode_text};
//!
//! let dir = tempfile::tempdir()?;
//! let registry = Registry::new(dir.path());
//! let requests = registry.counter("requests", "Requests served.", &["method"]);
//! requests.with_label_values(&["GET"])?.inc();
//! let busy = registry.gauge("busy_threads", "Threads in a request.", &[], GaugeMode::LiveSum);
//! busy.with_label_values(&[])?.set(3.0);
//! let latency = registry.histogram("latency_seconds", "Request latency.", &[], &[0.1, 1.0]);
//! latency.with_label_values(&[])?.observe(0.25);
//!
//! // In the supervisor: merge every process's files and render them.
//! let families = MultiProcessCollector::new(dir.path()).collect_families();
//! let mut text = Vec::new();
//! encode_text(&families, &mut text);
//! let text = String::from_utf8(text).unwrap();
//! assert!(text.contains("requests_total{method=\"GET\"} 1.0\n"));
//! assert!(text.contains("busy_threads 3.0\n"));
//! assert!(text.contains("latency_seconds_bucket{le=\"1.0\"} 1.0\n"));
//! # Ok::<(), std::io::Error>(())
//! ```
#![deny(missing_docs)]

mod aggregate;
mod exporter;
mod file;
mod hash;
mod own;
mod pyfmt;
mod reader;
mod sys;
mod text;
mod writer;

pub use aggregate::mark_process_dead;
pub use exporter::{Exporter, Source, TextSource};
pub use own::{ListenQueueGauges, MetricsDir};
pub use pyfmt::float_to_go_string;
pub use reader::{MultiProcessCollector, Warning, render_dir};
pub use text::{TEXT_CONTENT_TYPE, encode_text};
pub use writer::{
    Counter, CounterVec, DEFAULT_BUCKETS, Gauge, GaugeMode, GaugeVec, Histogram, HistogramVec,
    Registry, Summary, SummaryVec,
};
