//! Reading and merging a directory of metric files with the semantics of
//! prometheus_client's `MultiProcessCollector`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};

use crate::GaugeMode;
use crate::aggregate::{Absorbed, parse_trailer};
use crate::file::{self, Entry, FileName, Kind, Layout};
use crate::hash::FastMap;

/// Why (part of) a file was not used in a scrape. Scrapes never fail on a bad
/// file; they skip it, or read it up to its last whole entry, and say why.
#[derive(Clone, Debug, PartialEq)]
pub struct Warning {
    /// The file concerned (or the directory).
    pub path: PathBuf,
    /// What was wrong and what was done about it.
    pub reason: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

type WarningSink = Box<dyn Fn(&Warning) + Send + Sync>;

/// Merges every metric file of a directory, as prometheus_client's
/// `MultiProcessCollector` does, into [`MetricFamily`]s.
///
/// Families come sorted by name, series by labels. Render them with
/// [`encode_text`](crate::encode_text), which prints numbers exactly as
/// Python does; the `prometheus` crate's own encoder prints bucket bounds
/// differently (`le="1"` where Python prints `le="1.0"`).
pub struct MultiProcessCollector {
    dir: PathBuf,
    desc: Desc,
    on_warning: Option<WarningSink>,
    merger: std::sync::Mutex<Merger>,
    files: std::sync::Mutex<FileCache>,
}

/// Metric files kept open between scrapes, by name, with the inode number
/// they had when opened. A name listed again with the same inode is the
/// same file (an inode cannot be reused while we hold it open), so the next
/// scrape reads it without opening it again; a file renamed over or deleted
/// gets a new inode or disappears from the listing and is closed. With each
/// file goes what was parsed of it ([`Parsed`]).
#[derive(Default)]
struct FileCache {
    files: FastMap<std::ffi::OsString, OpenFile>,
    /// An empty map with room for as many files, for the next scrape.
    spare: FastMap<std::ffi::OsString, OpenFile>,
    /// The read buffer and parse scratch, reused by every scrape.
    buf: Vec<u8>,
    entries: Vec<Entry>,
}

/// A file kept open: its inode number when opened, and what was parsed of it.
struct OpenFile {
    ino: u64,
    file: std::fs::File,
    parsed: Option<Parsed>,
}

impl FileCache {
    /// At most this many descriptors are kept: a sixteenth of the soft
    /// `RLIMIT_NOFILE`, at most 4096, so the caller keeps its descriptors.
    /// (They are read-only and close-on-exec, but a process forked by the
    /// collector's owner inherits them until it closes them.)
    fn capacity() -> usize {
        static CAP: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        *CAP.get_or_init(|| (crate::sys::nofile_limit() / 16).min(4096) as usize)
    }
}

impl fmt::Debug for MultiProcessCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MultiProcessCollector")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

static COLLECTORS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl MultiProcessCollector {
    /// A collector of the files in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> MultiProcessCollector {
        // A non-empty, unique descriptor, so several collectors can be
        // registered with one `prometheus::Registry`.
        let n = COLLECTORS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let desc = Desc::new(
            format!("ferrocorn_multiprocess_collector_{n}"),
            "Metrics merged from multiprocess files.".into(),
            vec![],
            HashMap::new(),
        )
        .expect("a valid descriptor");
        MultiProcessCollector {
            dir: dir.into(),
            desc,
            on_warning: None,
            merger: Default::default(),
            files: Default::default(),
        }
    }

    /// Calls `f` with every [`Warning`] of [`collect_families`](Self::collect_families).
    pub fn on_warning(
        mut self,
        f: impl Fn(&Warning) + Send + Sync + 'static,
    ) -> MultiProcessCollector {
        self.on_warning = Some(Box::new(f));
        self
    }

    /// The directory read.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads and merges the directory (warnings go to the `on_warning` callback).
    pub fn collect_families(&self) -> Vec<MetricFamily> {
        let (families, warnings) = self.collect_with_warnings();
        if let Some(f) = &self.on_warning {
            warnings.iter().for_each(f);
        }
        families
    }

    /// Reads and merges the directory, returning the warnings too.
    pub fn collect_with_warnings(&self) -> (Vec<MetricFamily>, Vec<Warning>) {
        let mut warnings = Vec::new();
        let families = self
            .merged(&mut warnings, Merger::families)
            .unwrap_or_default();
        (families, warnings)
    }

    /// Reads and merges the directory and appends its exposition text to
    /// `out`: the bytes [`encode_text`](crate::encode_text) prints for
    /// [`collect_families`](Self::collect_families), without building the
    /// families first (a third less work for a large scrape). Warnings go
    /// to the `on_warning` callback.
    pub fn encode_text_to(&self, out: &mut Vec<u8>) {
        let mut warnings = Vec::new();
        self.merged(&mut warnings, |merger| {
            let mut text = TextOut {
                w: crate::text::TextWriter::new(out),
                pending: None,
                name: String::new(),
            };
            merger.emit(&mut text);
        });
        if let Some(f) = &self.on_warning {
            warnings.iter().for_each(f);
        }
    }

    /// Reads and merges the directory, then hands the merger to `f`; `None`
    /// when the directory cannot be listed (a warning says so).
    fn merged<T>(
        &self,
        warnings: &mut Vec<Warning>,
        f: impl FnOnce(&mut Merger) -> T,
    ) -> Option<T> {
        // A file listed but gone when opened was most likely folded into an
        // aggregate meanwhile: start over so nothing is lost or counted twice.
        const ATTEMPTS: usize = 10;
        // Folds (`mark_process_dead`, in any process) take the directory's
        // lock exclusively: with it held shared, the listing and every file
        // read are one consistent state, never the middle of a fold.
        let lock = self.shared_lock();
        for attempt in 0..ATTEMPTS {
            warnings.clear();
            if let Err(w) = &lock {
                warnings.push(w.clone());
            }
            let mut merger = self.merger.lock().unwrap_or_else(|p| p.into_inner());
            let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
            match merge_dir(
                &self.dir,
                warnings,
                attempt == ATTEMPTS - 1,
                &mut merger,
                &mut files,
            ) {
                Ok(true) => return Some(f(&mut merger)),
                Ok(false) => continue,
                Err(e) => {
                    warnings.push(Warning {
                        path: self.dir.clone(),
                        reason: format!("cannot list directory: {e}"),
                    });
                    return None;
                }
            }
        }
        unreachable!("the last attempt always returns")
    }
}

impl MultiProcessCollector {
    /// The directory's fold lock, taken shared (released when dropped);
    /// `Ok(None)` when the directory has no lock file and none can be made
    /// (then no fold can run there either). Waits at most half a second
    /// for a fold to finish; past that the scrape goes on without the lock
    /// (its files are still read so that a fold seen half-way is retried),
    /// with a warning.
    fn shared_lock(&self) -> Result<Option<std::fs::File>, Warning> {
        use crate::aggregate::{LOCK_FILE, Locked, lock_dir};
        const WAIT: std::time::Duration = std::time::Duration::from_millis(500);
        let warning = |reason: String| Warning {
            path: self.dir.join(LOCK_FILE),
            reason,
        };
        match lock_dir(&self.dir, false, WAIT) {
            Ok(Locked::Held(lock)) => Ok(Some(lock)),
            Ok(Locked::NoLockFile) => Ok(None),
            Ok(Locked::TimedOut) => Err(warning(format!(
                "held by others for {WAIT:?}; read without it"
            ))),
            Err(e) => Err(warning(format!("cannot lock: {e}; read without it"))),
        }
    }
}

impl Collector for MultiProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.collect_families()
    }
}

/// The merged exposition text of a multiprocess directory (Python's files
/// included): what `ferrocorn metrics DIR` prints. Bad files are skipped.
pub fn render_dir(dir: &Path) -> io::Result<Vec<u8>> {
    if !dir.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} is not a directory", dir.display()),
        ));
    }
    let mut out = Vec::new();
    MultiProcessCollector::new(dir).encode_text_to(&mut out);
    Ok(out)
}

/// A parsed key: which metric, which sample, which labels.
struct KeyInfo {
    metric: u32,
    /// The sample name relative to the metric name.
    suffix: Suffix,
    /// The interned label set: pairs sorted by name, without `le`.
    set: u32,
    /// The interned label set of `labels` without `pid`.
    set_nopid: u32,
    /// The `le` label parsed as Python's `float()` does.
    le: Option<f64>,
}

/// A sample name as the metric name plus one of the suffixes the merge
/// looks at, so grouping compares small integers instead of strings.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Suffix {
    Bare,
    Total,
    Count,
    Sum,
    Bucket,
    Other,
}

impl Suffix {
    fn of(metric: &str, sample: &str) -> Suffix {
        match sample.strip_prefix(metric) {
            Some("") => Suffix::Bare,
            Some("_total") => Suffix::Total,
            Some("_count") => Suffix::Count,
            Some("_sum") => Suffix::Sum,
            Some("_bucket") => Suffix::Bucket,
            _ => Suffix::Other,
        }
    }
}

struct MetricInfo {
    name: String,
    help: String,
    /// The type of the first file of this scrape that has the metric.
    kind: Option<Kind>,
    /// The gauge mode of the last gauge file of this scrape that has it.
    mode: Option<GaugeMode>,
}

/// Accumulated values of one key over all files.
#[derive(Clone)]
struct KeyTotals {
    seen: bool,
    sum: f64,
    min: f64,
    max: f64,
    recent: f64,
    recent_ts: f64,
    has_recent: bool,
    /// `all`-mode values: (file id index, value).
    per_pid: Vec<(u32, f64)>,
}

impl KeyTotals {
    const EMPTY: KeyTotals = KeyTotals {
        seen: false,
        sum: 0.0,
        min: 0.0,
        max: 0.0,
        recent: 0.0,
        recent_ts: 0.0,
        has_recent: false,
        per_pid: Vec::new(),
    };

    #[inline]
    fn add(&mut self, value: f64, timestamp: f64) {
        if !self.seen {
            self.seen = true;
            self.min = value;
            self.max = value;
        } else {
            if value < self.min {
                self.min = value;
            }
            if value > self.max {
                self.max = value;
            }
        }
        self.sum += value;
        if self.recent_ts < timestamp {
            self.recent_ts = timestamp;
            self.recent = value;
            self.has_recent = true;
        }
    }

    fn merge(&mut self, o: &KeyTotals) {
        if !o.seen {
            return;
        }
        if !self.seen {
            *self = o.clone();
            return;
        }
        self.min = if o.min < self.min { o.min } else { self.min };
        self.max = if o.max > self.max { o.max } else { self.max };
        self.sum += o.sum;
        if self.recent_ts < o.recent_ts {
            self.recent_ts = o.recent_ts;
            self.recent = o.recent;
            self.has_recent = true;
        }
        self.per_pid.extend_from_slice(&o.per_pid);
    }
}

/// One entry of a file as an earlier scrape found it: where its key is, and
/// the key's id in the [`Merger`].
#[derive(Clone, Copy)]
struct Known {
    key_start: u32,
    key_len: u32,
    /// Where the key's length and bytes are in the [`Merger`]'s arena.
    arena: u32,
}

impl Known {
    /// Offset of the value (the timestamp follows it).
    #[inline]
    fn value_offset(&self) -> usize {
        let len = self.key_len as usize;
        self.key_start as usize + len + file::padding(len)
    }
}

/// What the scrapes so far learnt about a file kept open. Metric files are
/// append-only (prometheus_client and this crate write a new entry past
/// `used`, then advance `used`; an entry never moves), so a later scrape
/// checks that the keys found up to `end` are still in place, reads their
/// values where they were, and parses only the entries appended past `end`.
struct Parsed {
    /// The [`Merger`]'s generation the key ids belong to.
    generation: u64,
    /// The file's `used` mark when last read: the next read asks for this
    /// many bytes at once.
    used: usize,
    /// Offset after the last whole entry found.
    end: usize,
    /// Every whole entry found, in file order.
    entries: Vec<Known>,
    /// `(value offset, key id)` of the entries with a readable key.
    samples: Vec<(u32, u32)>,
    /// The metrics these keys belong to (each once, or a few times).
    metrics: Vec<u32>,
    /// Entries with an unreadable key.
    bad: usize,
    /// The layout before prometheus_client 0.18 (8-byte values, no
    /// timestamps); never kept for a later scrape.
    legacy: bool,
}

impl Parsed {
    fn new(generation: u64, legacy: bool) -> Parsed {
        Parsed {
            generation,
            used: 0,
            end: 0,
            entries: Vec::new(),
            samples: Vec::new(),
            metrics: Vec::new(),
            bad: 0,
            legacy,
        }
    }
}

/// How one file's bytes were understood.
struct Added {
    layout: Layout,
    /// Whole entries read.
    entries: usize,
    /// Entries with an unreadable key.
    bad: usize,
}

/// Merge state kept between scrapes: raw key bytes are hashed, each distinct
/// key parsed once (and not again in later scrapes); values are reset per scrape.
#[derive(Default)]
struct Merger {
    /// Bumped whenever the key ids below are forgotten, so ids kept in a
    /// [`Parsed`] are never taken for ids of another generation.
    generation: u64,
    key_ids: FastMap<Box<[u8]>, u32>,
    /// Raw bytes of each key id, each after its length as in a file (in one
    /// contiguous arena, in first-seen order, so that checking a file's keys
    /// against the hints below, or against what was parsed of the file
    /// before, reads memory sequentially).
    arena: Vec<u8>,
    spans: Vec<(u32, u32)>,
    /// Per file kind, the key ids of the last file of that kind in order:
    /// processes of one program write the same keys in the same order, so
    /// most lookups are one comparison, no hashing.
    hints: FastMap<Kind, Vec<u32>>,
    hint_scratch: Vec<u32>,
    keys: Vec<Option<KeyInfo>>,
    accs: Vec<KeyTotals>,
    metric_ids: HashMap<String, u32>,
    metrics: Vec<MetricInfo>,
    file_ids: Vec<String>,
    /// Interned label sets (sorted pairs, `le` excluded).
    set_ids: FastMap<Vec<(String, String)>, u32>,
    sets: Vec<Vec<(String, String)>>,
    /// Position of each label set in the sorted order of all label sets
    /// (valid for the first `ranked` sets; recomputed when sets are added).
    rank: Vec<u32>,
}

impl Merger {
    /// Forgets the values of the previous scrape (and, when most cached keys
    /// were not seen in it, the cache itself, so it stays bounded).
    fn begin(&mut self) {
        let seen = self.accs.iter().filter(|a| a.seen).count();
        if self.keys.len() > 2 * seen + 4096 {
            *self = Merger {
                generation: self.generation + 1,
                ..Merger::default()
            };
        }
        for a in &mut self.accs {
            // Keeps the `per_pid` allocation for the next scrape.
            let mut per_pid = std::mem::take(&mut a.per_pid);
            per_pid.clear();
            *a = KeyTotals {
                per_pid,
                ..KeyTotals::EMPTY
            };
        }
        for m in &mut self.metrics {
            m.kind = None;
            m.mode = None;
        }
        self.file_ids.clear();
    }

    fn intern(&mut self, labels: Vec<(String, String)>) -> u32 {
        if let Some(&id) = self.set_ids.get(&labels) {
            return id;
        }
        let id = self.sets.len() as u32;
        self.sets.push(labels.clone());
        self.set_ids.insert(labels, id);
        id
    }

    /// Makes `rank` cover every label set: the order of label sets as a
    /// `BTreeMap` keyed by the pairs would iterate them.
    fn rank_sets(&mut self) {
        if self.rank.len() == self.sets.len() {
            return;
        }
        let mut order: Vec<u32> = (0..self.sets.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| self.sets[a as usize].cmp(&self.sets[b as usize]));
        self.rank = vec![0; self.sets.len()];
        for (r, &set) in order.iter().enumerate() {
            self.rank[set as usize] = r as u32;
        }
    }

    #[inline]
    fn raw_key(&self, id: u32) -> &[u8] {
        let (start, len) = self.spans[id as usize];
        &self.arena[start as usize..(start + len) as usize]
    }

    fn key_id(&mut self, key: &[u8]) -> u32 {
        if let Some(&id) = self.key_ids.get(key) {
            return id;
        }
        let info = self.parse_key(key);
        let id = self.keys.len() as u32;
        self.keys.push(info);
        self.accs.push(KeyTotals::EMPTY);
        self.key_ids.insert(key.into(), id);
        // As in a file: the key's length, then the key.
        self.arena
            .extend_from_slice(&(key.len() as i32).to_ne_bytes());
        self.spans.push((self.arena.len() as u32, key.len() as u32));
        self.arena.extend_from_slice(key);
        id
    }

    fn parse_key(&mut self, key: &[u8]) -> Option<KeyInfo> {
        let owned;
        let (metric, sample, labels, help) = match plain_key(key) {
            Some(parts) => parts,
            None => {
                owned =
                    serde_json::from_slice::<(String, String, BTreeMap<String, String>, String)>(
                        key,
                    )
                    .ok()?;
                let labels = owned.2.iter().map(|(k, v)| (k.as_str(), v.as_str()));
                (
                    owned.0.as_str(),
                    owned.1.as_str(),
                    labels.collect(),
                    owned.3.as_str(),
                )
            }
        };
        let metric_id = match self.metric_ids.get(metric) {
            Some(&id) => id,
            None => {
                let id = self.metrics.len() as u32;
                self.metrics.push(MetricInfo {
                    name: metric.to_owned(),
                    help: help.to_owned(),
                    kind: None,
                    mode: None,
                });
                self.metric_ids.insert(metric.to_owned(), id);
                id
            }
        };
        let mut le = None;
        let mut pairs = Vec::with_capacity(labels.len());
        let mut has_pid = false;
        for (k, v) in labels {
            if k == "le" {
                // A NaN bound (prometheus_client accepts `buckets=[nan]`)
                // orders against nothing and no value falls into it: the
                // key is skipped as unreadable, with a warning.
                le = Some(parse_python_float(v).filter(|b| !b.is_nan())?);
            } else {
                has_pid |= k == "pid";
                pairs.push((k.to_owned(), v.to_owned()));
            }
        }
        let suffix = Suffix::of(&self.metrics[metric_id as usize].name, sample);
        let set_nopid = if has_pid {
            let nopid: Vec<(String, String)> =
                pairs.iter().filter(|(n, _)| n != "pid").cloned().collect();
            self.intern(nopid)
        } else {
            u32::MAX
        };
        let set = self.intern(pairs);
        Some(KeyInfo {
            metric: metric_id,
            suffix,
            set,
            set_nopid: if has_pid { set_nopid } else { set },
            le,
        })
    }

    /// Adds the values of one file's bytes `data`. `parsed` is what an
    /// earlier scrape learnt about the file (kept only for a file kept open,
    /// and updated here): when every key it found is still in place, only
    /// the entries appended since are parsed. `scratch` is reused between
    /// files. Returns how the bytes were understood, how many entries were
    /// read and how many of them had an unreadable key.
    fn add_file(
        &mut self,
        name: &FileName,
        data: &[u8],
        parsed: &mut Option<Parsed>,
        scratch: &mut Vec<Entry>,
    ) -> Result<Added, String> {
        let used = data
            .get(..4)
            .and_then(|b| usize::try_from(i32::from_ne_bytes(b.try_into().expect("4 bytes"))).ok());
        // A file kept from the last scrape whose known keys are all still in
        // place: only values changed below `end`, new entries may follow it.
        let kept = parsed.take().filter(|p| {
            p.generation == self.generation
                && used.is_some_and(|used| used >= p.end)
                && data.len() >= p.end
                && self.still_in_place(data, &p.entries)
        });
        let (layout, p, keep) = match (kept, used) {
            (Some(mut p), Some(used)) => {
                let end = file::walk_from(data, p.end, used, scratch);
                self.resolve(name.kind, data, scratch, &mut p);
                p.end = end;
                // What the next scrape reads at once: never more than the
                // file held (a corrupt `used` may claim 2 GiB).
                p.used = used.min(data.len());
                let layout = if end == used {
                    Layout::Current
                } else {
                    Layout::Truncated
                };
                (layout, p, true)
            }
            _ => {
                let layout = file::parse(data, scratch)?;
                let mut p = Parsed::new(self.generation, layout == Layout::Legacy);
                self.resolve(name.kind, data, scratch, &mut p);
                // Kept for the next scrape when there are entries to check.
                let end = p.entries.last().map(|last| last.value_offset() + 16);
                let keep = match (p.legacy, end, used) {
                    (false, Some(end), Some(used)) => {
                        p.end = end;
                        p.used = used.min(data.len());
                        true
                    }
                    _ => false,
                };
                (layout, p, keep)
            }
        };
        self.add_values(name, data, &p);
        let added = Added {
            layout,
            entries: p.entries.len(),
            bad: p.bad,
        };
        if keep {
            *parsed = Some(p);
        }
        Ok(added)
    }

    /// Whether every key of `entries` is still where an earlier scrape
    /// found it in this file (compared byte for byte, length included): a
    /// file truncated and rewritten in place under the same inode is parsed
    /// again from its start.
    fn still_in_place(&self, data: &[u8], entries: &[Known]) -> bool {
        entries.iter().all(|k| {
            // The length and the key, in the file and in the arena.
            let start = (k.key_start as usize).wrapping_sub(4);
            let len = k.key_len as usize + 4;
            let arena = k.arena as usize;
            data.get(start..start + len) == self.arena.get(arena..arena + len)
        })
    }

    /// Adds the parsed `entries` of a file of type `kind` to `p`: their key
    /// ids, their metrics, the count of unreadable keys. Processes of one
    /// program write the same keys in the same order, so the ids of the last
    /// file of the same type are tried first (one comparison, no hashing).
    fn resolve(&mut self, kind: Kind, data: &[u8], entries: &[Entry], p: &mut Parsed) {
        if entries.is_empty() {
            return;
        }
        let offset = p.entries.len();
        let prev = self.hints.remove(&kind).unwrap_or_default();
        // The hint for the next file of this type: this file's ids in order
        // (a whole file's; entries appended to a known file leave it as is).
        let mut ids = std::mem::take(&mut self.hint_scratch);
        ids.clear();
        p.entries.reserve(entries.len());
        p.samples.reserve(entries.len());
        let mut last_metric = u32::MAX;
        for (i, e) in entries.iter().enumerate() {
            let key = e.key(data);
            let id = match prev.get(offset + i) {
                Some(&id) if self.raw_key(id) == key => id,
                _ => self.key_id(key),
            };
            ids.push(id);
            let (key_start, key_len) = e.key_span();
            let k = Known {
                key_start,
                key_len,
                arena: self.spans[id as usize].0 - 4,
            };
            p.entries.push(k);
            match &self.keys[id as usize] {
                Some(info) => {
                    p.samples.push((k.value_offset() as u32, id));
                    if info.metric != last_metric {
                        last_metric = info.metric;
                        p.metrics.push(info.metric);
                    }
                }
                None => p.bad += 1,
            }
        }
        if offset > 0 {
            p.metrics.sort_unstable();
            p.metrics.dedup();
            self.hints.insert(kind, prev);
            self.hint_scratch = ids;
        } else {
            self.hints.insert(kind, ids);
            self.hint_scratch = prev;
        }
    }

    /// Adds the values of a parsed file.
    fn add_values(&mut self, name: &FileName, data: &[u8], p: &Parsed) {
        let gauge_mode = match name.kind {
            Kind::Gauge(m) => Some(m),
            _ => None,
        };
        for &metric in &p.metrics {
            let m = &mut self.metrics[metric as usize];
            if m.kind.is_none() {
                m.kind = Some(name.kind);
            }
            if gauge_mode.is_some() {
                m.mode = gauge_mode;
            }
        }
        let len = if p.legacy { 8 } else { 16 };
        // Every sample's value lies in `data` (entries are whole).
        let sample = |vpos: u32| {
            let vpos = vpos as usize;
            match data.get(vpos..vpos + len) {
                Some(b) if len == 16 => (
                    f64::from_ne_bytes(b[..8].try_into().expect("8 bytes")),
                    f64::from_ne_bytes(b[8..16].try_into().expect("8 bytes")),
                ),
                Some(b) => (f64::from_ne_bytes(b[..8].try_into().expect("8 bytes")), 0.0),
                None => (0.0, 0.0),
            }
        };
        if matches!(gauge_mode, Some(GaugeMode::All | GaugeMode::LiveAll)) {
            let file_idx = self.file_ids.len() as u32;
            self.file_ids.push(name.id.clone());
            for &(vpos, id) in &p.samples {
                let (value, timestamp) = sample(vpos);
                let acc = &mut self.accs[id as usize];
                acc.add(value, timestamp);
                acc.per_pid.push((file_idx, value));
            }
        } else {
            for &(vpos, id) in &p.samples {
                let (value, timestamp) = sample(vpos);
                self.accs[id as usize].add(value, timestamp);
            }
        }
    }

    fn families(&mut self) -> Vec<MetricFamily> {
        let mut out = ProtoOut::default();
        self.emit(&mut out);
        out.families
    }

    /// Writes the merged families to `out`, in the order of their names
    /// (families without a sample are left out).
    fn emit(&mut self, out: &mut impl Emit) {
        self.rank_sets();
        // Group keys by metric, then by (sample name, labels): keys differing
        // only in help text or JSON spelling are the same series. Label sets
        // are interned when a key is parsed and ranked in sorted order, so
        // grouping sorts small integers instead of comparing strings.
        let mut by_metric: Vec<Vec<usize>> = vec![Vec::new(); self.metrics.len()];
        for (id, k) in self.keys.iter().enumerate() {
            if let Some(k) = k
                && self.accs[id].seen
            {
                by_metric[k.metric as usize].push(id);
            }
        }
        // A counter's family is `<name>_total`; equal names keep their order.
        let total_names: Vec<Option<String>> = self
            .metrics
            .iter()
            .map(|m| (m.kind == Some(Kind::Counter)).then(|| format!("{}_total", m.name)))
            .collect();
        let family_name = |i: usize| -> &str {
            total_names[i]
                .as_deref()
                .unwrap_or(self.metrics[i].name.as_str())
        };
        let mut order: Vec<usize> = (0..self.metrics.len())
            .filter(|&i| !by_metric[i].is_empty() && self.metrics[i].kind.is_some())
            .collect();
        order.sort_by(|&a, &b| family_name(a).cmp(family_name(b)));
        let mut scratch = Vec::new();
        for i in order {
            let (m, ids) = (&self.metrics[i], &by_metric[i]);
            let name = family_name(i);
            match m.kind {
                None => {}
                Some(Kind::Counter) => self.counter_family(name, m, ids, &mut scratch, out),
                Some(Kind::Summary) => self.summary_family(m, ids, &mut scratch, out),
                Some(Kind::Histogram) => self.histogram_family(m, ids, &mut scratch, out),
                Some(Kind::Gauge(_)) => self.gauge_family(m, ids, &mut scratch, out),
            }
            out.end_family();
        }
    }

    /// The keys of `ids` with sample `suffix` (and no `le`), merged per label
    /// set, in label order: `(label set, label set without pid, merged)`.
    /// Within a label set, values merge in key order.
    fn grouped(
        &self,
        ids: &[usize],
        suffix: Suffix,
        scratch: &mut Vec<(u32, u32)>,
    ) -> Vec<(u32, u32, KeyTotals)> {
        scratch.clear();
        for &id in ids {
            let k = self.keys[id].as_ref().expect("grouped keys are valid");
            if k.suffix == suffix && k.le.is_none() {
                scratch.push((self.rank[k.set as usize], id as u32));
            }
        }
        scratch.sort_unstable();
        let mut groups: Vec<(u32, u32, KeyTotals)> = Vec::new();
        let mut last_rank = u32::MAX;
        for &(rank, id) in scratch.iter() {
            let acc = &self.accs[id as usize];
            if rank == last_rank
                && let Some(g) = groups.last_mut()
            {
                g.2.merge(acc);
                continue;
            }
            last_rank = rank;
            let k = self.keys[id as usize].as_ref().expect("valid");
            let mut merged = KeyTotals::EMPTY;
            merged.merge(acc);
            groups.push((k.set, k.set_nopid, merged));
        }
        groups
    }

    fn counter_family(
        &self,
        name: &str,
        m: &MetricInfo,
        ids: &[usize],
        scratch: &mut Vec<(u32, u32)>,
        out: &mut impl Emit,
    ) {
        out.family(name, &m.help, MetricType::COUNTER);
        for (set, _, acc) in self.grouped(ids, Suffix::Total, scratch) {
            out.value(Labels::of(&self.sets[set as usize]), acc.sum);
        }
    }

    fn gauge_family(
        &self,
        m: &MetricInfo,
        ids: &[usize],
        scratch: &mut Vec<(u32, u32)>,
        out: &mut impl Emit,
    ) {
        let mode = m.mode.unwrap_or(GaugeMode::All);
        out.family(&m.name, &m.help, MetricType::GAUGE);
        if matches!(mode, GaugeMode::All | GaugeMode::LiveAll) {
            // One series per (labels, pid); the file's id replaces a `pid`
            // label. They are ordered by their label pairs with `pid` in its
            // place by name, compared without building them (the other
            // pairs are an interned set; pids of one set compare by rank).
            struct Series {
                set: u32,
                /// Where `pid` goes among the set's pairs.
                pos: u32,
                file: u32,
                /// The order read in.
                seq: u32,
                /// The sort key of the common shapes below.
                key: u64,
                v: f64,
            }
            let mut by_pid: Vec<u32> = (0..self.file_ids.len() as u32).collect();
            by_pid.sort_unstable_by(|&a, &b| {
                self.file_ids[a as usize].cmp(&self.file_ids[b as usize])
            });
            let mut pid_rank = vec![0u32; self.file_ids.len()];
            let mut rank = 0;
            for (i, &f) in by_pid.iter().enumerate() {
                if i > 0 && self.file_ids[f as usize] != self.file_ids[by_pid[i - 1] as usize] {
                    rank += 1;
                }
                pid_rank[f as usize] = rank;
            }
            let valid = |id: &usize| {
                let k = self.keys[*id].as_ref().expect("valid");
                (k.suffix == Suffix::Bare && k.le.is_none()).then_some((*id, k))
            };
            let total = ids
                .iter()
                .filter_map(valid)
                .map(|(id, _)| self.accs[id].per_pid.len())
                .sum();
            let mut series: Vec<Series> = Vec::with_capacity(total);
            for (id, k) in ids.iter().filter_map(valid) {
                let nopid = &self.sets[k.set_nopid as usize];
                let pos = nopid.partition_point(|(n, _)| n.as_str() < "pid") as u32;
                for &(file, v) in &self.accs[id].per_pid {
                    series.push(Series {
                        set: k.set_nopid,
                        pos,
                        file,
                        seq: series.len() as u32,
                        key: 0,
                        v,
                    });
                }
            }
            let labels = |s: &Series| Labels {
                set: &self.sets[s.set as usize],
                pid: Some((s.pos as usize, &self.file_ids[s.file as usize])),
            };
            let cmp = |a: &Series, b: &Series| -> std::cmp::Ordering {
                if a.set == b.set {
                    // The same pairs but `pid`: by the pids' rank.
                    return pid_rank[a.file as usize].cmp(&pid_rank[b.file as usize]);
                }
                labels(a).pairs().cmp(labels(b).pairs())
            };
            // In label order; of equal label sets the last one read wins
            // (a stable sort, or the order read as the last key). Two common
            // shapes sort by two ranks: every label name after `pid` (`pid`
            // first, then the set's order), or the same names, all before
            // `pid` (the set, then `pid`).
            let names = |s: &Series| self.sets[s.set as usize].iter().map(|(n, _)| n);
            let ranks = |hi: u32, lo: u32| (u64::from(hi) << 32) | u64::from(lo);
            if series.iter().all(|s| s.pos == 0) {
                for s in &mut series {
                    s.key = ranks(pid_rank[s.file as usize], self.rank[s.set as usize]);
                }
                series.sort_unstable_by_key(|s| (s.key, s.seq));
            } else if series.first().is_some_and(|f| {
                series.iter().all(|s| {
                    s.pos as usize == self.sets[s.set as usize].len() && names(s).eq(names(f))
                })
            }) {
                for s in &mut series {
                    s.key = ranks(self.rank[s.set as usize], pid_rank[s.file as usize]);
                }
                series.sort_unstable_by_key(|s| (s.key, s.seq));
            } else {
                series.sort_by(cmp);
            }
            for (i, s) in series.iter().enumerate() {
                if series.get(i + 1).is_some_and(|next| cmp(s, next).is_eq()) {
                    continue;
                }
                out.value(labels(s), s.v);
            }
        } else {
            // `pid` labels are dropped and values merged: first per label
            // set, then (in label order) per label set without `pid`.
            let mut groups = self.grouped(ids, Suffix::Bare, scratch);
            groups.sort_by_key(|g| self.rank[g.1 as usize]);
            let mut merged: Vec<(u32, KeyTotals)> = Vec::with_capacity(groups.len());
            for (_, nopid, acc) in groups {
                match merged.last_mut() {
                    Some(g) if g.0 == nopid => g.1.merge(&acc),
                    _ => {
                        let mut a = KeyTotals::EMPTY;
                        a.merge(&acc);
                        merged.push((nopid, a));
                    }
                }
            }
            for (set, acc) in merged {
                let v = match mode {
                    GaugeMode::Min | GaugeMode::LiveMin => acc.min,
                    GaugeMode::Max | GaugeMode::LiveMax => acc.max,
                    GaugeMode::Sum | GaugeMode::LiveSum => acc.sum,
                    _ if acc.has_recent => acc.recent,
                    // Never set: no sample, as in prometheus_client.
                    _ => continue,
                };
                out.value(Labels::of(&self.sets[set as usize]), v);
            }
        }
    }

    fn summary_family(
        &self,
        m: &MetricInfo,
        ids: &[usize],
        scratch: &mut Vec<(u32, u32)>,
        out: &mut impl Emit,
    ) {
        // Keyed by label rank: (label set, count, sum).
        let mut all: BTreeMap<u32, (u32, f64, f64)> = BTreeMap::new();
        for (set, _, a) in self.grouped(ids, Suffix::Count, scratch) {
            all.entry(self.rank[set as usize])
                .or_insert((set, 0.0, 0.0))
                .1 += a.sum;
        }
        for (set, _, a) in self.grouped(ids, Suffix::Sum, scratch) {
            all.entry(self.rank[set as usize])
                .or_insert((set, 0.0, 0.0))
                .2 += a.sum;
        }
        out.family(&m.name, &m.help, MetricType::SUMMARY);
        for (set, count, sum) in all.into_values() {
            out.summary(Labels::of(&self.sets[set as usize]), count as u64, sum);
        }
    }

    fn histogram_family(
        &self,
        m: &MetricInfo,
        ids: &[usize],
        scratch: &mut Vec<(u32, u32)>,
        out: &mut impl Emit,
    ) {
        // Keyed by label rank: (label set, buckets and sum).
        let mut groups: BTreeMap<u32, (u32, Buckets)> = BTreeMap::new();
        for (set, _, a) in self.grouped(ids, Suffix::Sum, scratch) {
            groups
                .entry(self.rank[set as usize])
                .or_insert((set, Buckets::default()))
                .1
                .1 += a.sum;
        }
        for &id in ids {
            let k = self.keys[id].as_ref().expect("valid");
            if let Some(le) = k.le
                && k.suffix == Suffix::Bucket
            {
                groups
                    .entry(self.rank[k.set as usize])
                    .or_insert((k.set, Buckets::default()))
                    .1
                    .0
                    .push((le, self.accs[id].sum));
            }
        }
        out.family(&m.name, &m.help, MetricType::HISTOGRAM);
        let mut cumulative: Vec<(f64, u64)> = Vec::new();
        for (set, (mut buckets, sum)) in groups.into_values() {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut acc = 0.0;
            cumulative.clear();
            let mut i = 0;
            while i < buckets.len() {
                // Equal bounds spelled differently (`1` and `1.0`) are one
                // bucket. A NaN bound (prometheus_client takes
                // `buckets=[nan]`) equals nothing, not even itself: it is a
                // bucket of its own, counted in `_count` but not printed
                // (no value can fall into it), and the loop still advances.
                let bound = buckets[i].0;
                acc += buckets[i].1;
                i += 1;
                while i < buckets.len() && buckets[i].0 == bound {
                    acc += buckets[i].1;
                    i += 1;
                }
                if bound.is_finite() || bound < 0.0 {
                    cumulative.push((bound, acc as u64));
                }
            }
            out.histogram(
                Labels::of(&self.sets[set as usize]),
                &cumulative,
                acc as u64,
                sum,
            );
        }
    }
}

/// Per label set of a histogram: (bucket bound, count) pairs and the `_sum`.
type Buckets = (Vec<(f64, f64)>, f64);

/// A key's metric name, sample name, label pairs and help.
type KeyParts<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, &'a str);

/// The parts of a key (metric, sample, labels, help) when it has the plain
/// form prometheus_client writes for most series,
/// `["metric", "sample", {"name": "value", ...}, "help"]`: `json.dumps`'s
/// separators, strings without escapes or control characters, label names
/// sorted and distinct. Then the parts are exactly what `serde_json` would
/// make of it, without allocating; anything else is left to `serde_json`.
fn plain_key(key: &[u8]) -> Option<KeyParts<'_>> {
    fn lit(r: &mut &[u8], s: &[u8]) -> Option<()> {
        *r = r.strip_prefix(s)?;
        Some(())
    }
    fn string<'a>(r: &mut &'a [u8]) -> Option<&'a str> {
        let rest = r.strip_prefix(b"\"")?;
        let end = rest
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        if rest[end] != b'"' {
            return None;
        }
        let s = std::str::from_utf8(&rest[..end]).ok()?;
        *r = &rest[end + 1..];
        Some(s)
    }
    let mut r = key;
    lit(&mut r, b"[")?;
    let metric = string(&mut r)?;
    lit(&mut r, b", ")?;
    let sample = string(&mut r)?;
    lit(&mut r, b", {")?;
    let mut labels: Vec<(&str, &str)> = Vec::new();
    if r.first() != Some(&b'}') {
        loop {
            let name = string(&mut r)?;
            lit(&mut r, b": ")?;
            let value = string(&mut r)?;
            if labels.last().is_some_and(|&(last, _)| last >= name) {
                return None;
            }
            labels.push((name, value));
            if lit(&mut r, b", ").is_none() {
                break;
            }
        }
    }
    lit(&mut r, b"}, ")?;
    let help = string(&mut r)?;
    lit(&mut r, b"]")?;
    r.is_empty().then_some((metric, sample, labels, help))
}

/// Python's `float()` of a label value (`1.0`, `1e+06`, `+Inf`, `NaN`).
fn parse_python_float(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok()
}

/// The label pairs of one series: an interned set, sorted by name, and
/// maybe a `pid` pair that goes at `pid.0` among them.
#[derive(Clone, Copy)]
struct Labels<'a> {
    set: &'a [(String, String)],
    pid: Option<(usize, &'a str)>,
}

impl<'a> Labels<'a> {
    fn of(set: &'a [(String, String)]) -> Labels<'a> {
        Labels { set, pid: None }
    }

    fn pairs(self) -> impl Iterator<Item = (&'a str, &'a str)> {
        let (at, pid) = match self.pid {
            Some((at, pid)) => (at, Some(("pid", pid))),
            None => (usize::MAX, None),
        };
        let before = self.set[..at.min(self.set.len())].iter();
        let after = self.set[at.min(self.set.len())..].iter();
        let pair = |(n, v): &'a (String, String)| (n.as_str(), v.as_str());
        before.map(pair).chain(pid).chain(after.map(pair))
    }
}

/// Where the merged families go: `MetricFamily` protos or exposition text.
trait Emit {
    /// A family starts (it is left out if no series follows).
    fn family(&mut self, name: &str, help: &str, t: MetricType);
    /// A counter or gauge series of the current family.
    fn value(&mut self, labels: Labels<'_>, v: f64);
    /// A summary series.
    fn summary(&mut self, labels: Labels<'_>, count: u64, sum: f64);
    /// A histogram series: finite bounds with cumulative counts, in order.
    fn histogram(&mut self, labels: Labels<'_>, buckets: &[(f64, u64)], count: u64, sum: f64);
    /// The current family ends.
    fn end_family(&mut self);
}

/// Families as `prometheus` crate protos.
#[derive(Default)]
struct ProtoOut {
    families: Vec<MetricFamily>,
    current: Option<MetricFamily>,
    metrics: Vec<proto::Metric>,
}

impl ProtoOut {
    fn metric(labels: Labels<'_>) -> proto::Metric {
        proto::Metric::from_label(
            labels
                .pairs()
                .map(|(k, v)| {
                    let mut p = proto::LabelPair::default();
                    p.set_name(k.to_owned());
                    p.set_value(v.to_owned());
                    p
                })
                .collect(),
        )
    }
}

impl Emit for ProtoOut {
    fn family(&mut self, name: &str, help: &str, t: MetricType) {
        let mut f = MetricFamily::default();
        f.set_name(name.into());
        f.set_help(help.into());
        f.set_field_type(t);
        self.current = Some(f);
    }

    fn value(&mut self, labels: Labels<'_>, v: f64) {
        let mut m = ProtoOut::metric(labels);
        match self.current.as_ref().map(|f| f.get_field_type()) {
            Some(MetricType::COUNTER) => {
                let mut c = proto::Counter::default();
                c.set_value(v);
                m.set_counter(c);
            }
            _ => {
                let mut g = proto::Gauge::default();
                g.set_value(v);
                m.set_gauge(g);
            }
        }
        self.metrics.push(m);
    }

    fn summary(&mut self, labels: Labels<'_>, count: u64, sum: f64) {
        let mut m = ProtoOut::metric(labels);
        let mut s = proto::Summary::default();
        s.set_sample_count(count);
        s.set_sample_sum(sum);
        m.set_summary(s);
        self.metrics.push(m);
    }

    fn histogram(&mut self, labels: Labels<'_>, buckets: &[(f64, u64)], count: u64, sum: f64) {
        let mut m = ProtoOut::metric(labels);
        let mut h = proto::Histogram::default();
        h.set_bucket(
            buckets
                .iter()
                .map(|&(bound, cumulative)| {
                    let mut b = proto::Bucket::default();
                    b.set_upper_bound(bound);
                    b.set_cumulative_count(cumulative);
                    b
                })
                .collect(),
        );
        h.set_sample_count(count);
        h.set_sample_sum(sum);
        m.set_histogram(h);
        self.metrics.push(m);
    }

    fn end_family(&mut self) {
        if let Some(mut f) = self.current.take()
            && !self.metrics.is_empty()
        {
            f.set_metric(std::mem::take(&mut self.metrics));
            self.families.push(f);
        }
        self.metrics.clear();
    }
}

/// Families as exposition text, written as they are merged: what
/// [`encode_text`](crate::encode_text) would print for [`ProtoOut`]'s
/// families (the same writer), without building them.
struct TextOut<'o> {
    w: crate::text::TextWriter<'o>,
    /// The current family, until its first series is written.
    pending: Option<(String, String, MetricType)>,
    /// The family being written.
    name: String,
}

impl TextOut<'_> {
    fn start(&mut self) {
        if let Some((name, help, t)) = self.pending.take() {
            self.w.header(&name, &help, t);
            self.name = name;
        }
    }
}

impl Emit for TextOut<'_> {
    fn family(&mut self, name: &str, help: &str, t: MetricType) {
        self.pending = Some((name.to_owned(), help.to_owned(), t));
    }

    fn value(&mut self, labels: Labels<'_>, v: f64) {
        self.start();
        self.w.value(&self.name, labels.pairs(), v, 0);
    }

    fn summary(&mut self, labels: Labels<'_>, count: u64, sum: f64) {
        self.start();
        let none = std::iter::empty();
        self.w
            .summary(&self.name, || labels.pairs(), none, count, sum, 0);
    }

    fn histogram(&mut self, labels: Labels<'_>, buckets: &[(f64, u64)], count: u64, sum: f64) {
        self.start();
        let b = buckets.iter().copied();
        self.w
            .histogram(&self.name, || labels.pairs(), b, count, sum, 0);
    }

    fn end_family(&mut self) {
        self.pending = None;
    }
}

/// One pass over the directory into `merger`. `Ok(false)`: a listed file
/// vanished; retry.
fn merge_dir(
    dir: &Path,
    warnings: &mut Vec<Warning>,
    last_attempt: bool,
    merger: &mut Merger,
    cache: &mut FileCache,
) -> io::Result<bool> {
    use std::os::unix::fs::DirEntryExt;
    // (parsed name, name in the directory, inode number); paths are made
    // only for warnings.
    let mut names: Vec<(FileName, std::ffi::OsString, u64)> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let os_name = entry.file_name();
        let Some(fname) = os_name.to_str() else {
            continue;
        };
        // The hidden name of a file a fold renamed and a crash left behind
        // (see `aggregate::fold`): counted unless an aggregate claims it.
        if let Some(n) = FileName::parse_folding(fname) {
            if crate::aggregate::is_folded(n.kind) {
                names.push((n, os_name, entry.ino()));
            }
            continue;
        }
        if !fname.ends_with(".db") {
            continue;
        }
        match FileName::parse(fname) {
            Some(n) => names.push((n, os_name, entry.ino())),
            None => warnings.push(Warning {
                path: entry.path(),
                reason: "not a metric file name ({type}_{id}.db or gauge_{mode}_{id}.db): skipped"
                    .into(),
            }),
        }
    }
    // Values are added in directory order, as Python's glob sees the files,
    // so float sums come out bit for bit the same. Aggregates are read
    // first, though: their trailers say which files they already contain.
    // Files are opened relative to the directory, not by full path.
    let dir_file = std::fs::File::open(dir)?;
    // Only regular files, opened without blocking or following links.
    let open = |name: &std::ffi::OsStr| file::open_regular(&dir_file, name);
    let mut absorbed: Vec<(Kind, Absorbed)> = Vec::new();
    // Files kept open by the last scrape; those not listed now are closed.
    // (Two maps swapped each scrape, so neither is grown again.)
    let spare = std::mem::take(&mut cache.spare);
    let mut was_open = std::mem::replace(&mut cache.files, spare);
    // A kept file of this name, if it is still the same file, or else the
    // file opened now. A kept file is known by the inode it was opened as
    // (fstat), never by the listing's: the name may have been replaced
    // between listing and opening, and a filesystem reuses the inode
    // numbers of deleted files (ext4 does) but not of one we hold open.
    let mut take =
        |fname: &std::ffi::OsString, ino: u64| match was_open.remove_entry(fname.as_os_str()) {
            Some((key, kept)) if kept.ino == ino => Ok((key, kept)),
            _ => open(fname).map(|(file, meta)| {
                use std::os::unix::fs::MetadataExt;
                (
                    fname.clone(),
                    OpenFile {
                        ino: meta.ino(),
                        file,
                        parsed: None,
                    },
                )
            }),
        };
    // Aggregates are replaced by renaming a new file over them (a new inode),
    // and read whole: their trailer lies past `used`.
    let mut aggregates: Vec<Option<(std::ffi::OsString, OpenFile, Vec<u8>)>> =
        (0..names.len()).map(|_| None).collect();
    for (i, (name, fname, ino)) in names.iter().enumerate() {
        if name.id != "aggregate" {
            continue;
        }
        let mut data = Vec::new();
        match take(fname, *ino).and_then(|(key, kept)| {
            file::read_file(&kept.file, &mut data, true, false)?;
            Ok((key, kept))
        }) {
            // Replaced since the listing (by a fold the lock did not keep
            // out): the other files listed may be older than it; start over.
            Ok((_, kept)) if kept.ino != *ino && !last_attempt => return Ok(false),
            Ok((key, kept)) => {
                if let Some(a) = parse_trailer(&data) {
                    absorbed.extend(a.into_iter().map(|a| (name.kind, a)));
                }
                aggregates[i] = Some((key, kept, data));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && !last_attempt => return Ok(false),
            Err(e) => warnings.push(Warning {
                path: dir.join(fname),
                reason: format!("cannot read: {e}; skipped"),
            }),
        }
    }

    merger.begin();
    // Buffers kept between scrapes: no allocation (nor zeroing) per scrape.
    let mut buf = std::mem::take(&mut cache.buf);
    let mut entries = std::mem::take(&mut cache.entries);
    let capacity = FileCache::capacity();
    for (i, (name, fname, ino)) in names.iter().enumerate() {
        let path = || dir.join(fname);
        let is_aggregate = name.id == "aggregate";
        let added = if is_aggregate {
            let Some((key, mut kept, data)) = aggregates[i].take() else {
                continue;
            };
            let added = merger.add_file(name, &data, &mut kept.parsed, &mut entries);
            if cache.files.len() < capacity {
                cache.files.insert(key, kept);
            }
            added
        } else {
            // The inode and mtime matter only if an aggregate claims this pid.
            let claimed = absorbed
                .iter()
                .any(|(k, a)| *k == name.kind && a.id == name.id);
            let kept = take(fname, *ino);
            let read = kept.and_then(|(key, kept)| {
                // A file read before is read up to its last `used` mark at once.
                let first = kept.parsed.as_ref().map_or(file::FIRST_READ, |p| p.used);
                let r = file::read_used(&kept.file, &mut buf, first, claimed)?;
                Ok((r, key, kept))
            });
            let ((len, stamp), key, mut kept) = match read {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // A deleted gauge file is simply gone; a folded file may
                    // be in an aggregate read before the fold: start over.
                    if last_attempt || !crate::aggregate::is_folded(name.kind) {
                        continue;
                    }
                    return Ok(false);
                }
                Err(e) => {
                    warnings.push(Warning {
                        path: path(),
                        reason: format!("cannot read: {e}; skipped"),
                    });
                    continue;
                }
            };
            let added = if let Some(stamp) = stamp
                && absorbed
                    .iter()
                    .any(|(k, a)| *k == name.kind && a.id == name.id && a.stamp == stamp)
            {
                None // already counted in the aggregate
            } else {
                Some(merger.add_file(name, &buf[..len], &mut kept.parsed, &mut entries))
            };
            if cache.files.len() < capacity {
                cache.files.insert(key, kept);
            }
            match added {
                Some(added) => added,
                None => continue,
            }
        };
        let added = match added {
            Ok(a) => a,
            Err(reason) => {
                warnings.push(Warning {
                    path: path(),
                    reason: format!("{reason}; skipped"),
                });
                continue;
            }
        };
        match added.layout {
            Layout::Current => {}
            Layout::Truncated => warnings.push(Warning {
                path: path(),
                reason: format!(
                    "cut short or damaged: read its first {} whole entries",
                    added.entries
                ),
            }),
            Layout::Legacy => warnings.push(Warning {
                path: path(),
                reason: "written by prometheus_client < 0.18 (no timestamps): read as such".into(),
            }),
        }
        if added.bad > 0 {
            warnings.push(Warning {
                path: path(),
                reason: format!(
                    "{} entries with an unreadable key (not JSON, or a NaN bucket bound): skipped",
                    added.bad
                ),
            });
        }
    }
    was_open.clear(); // closes the files no longer listed
    cache.spare = was_open;
    cache.buf = buf;
    cache.entries = entries;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Parts = (String, String, Vec<(String, String)>, String);

    fn by_serde(key: &[u8]) -> Option<Parts> {
        let (m, s, l, h): (String, String, BTreeMap<String, String>, String) =
            serde_json::from_slice(key).ok()?;
        Some((m, s, l.into_iter().collect(), h))
    }

    fn by_plain(key: &[u8]) -> Option<Parts> {
        let (m, s, l, h) = plain_key(key)?;
        let l = l.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        Some((m.into(), s.into(), l, h.into()))
    }

    #[test]
    fn plain_keys_parse_as_serde_json_parses_them() {
        let labels: &[&[(&str, &str)]] = &[
            &[],
            &[("a", "x")],
            &[("le", "0.5"), ("method", "GET"), ("pid", "77")],
            &[("a", ""), ("b", "\u{fc}n\u{ef}")],
            &[("a", "q\"uote")],
            &[("a", "back\\slash"), ("b", "new\nline")],
            &[("a", "\u{1F600}"), ("b", "\u{7f}")],
        ];
        let mut plain = 0;
        for l in labels {
            for help in ["", "Help.", "with \"quotes\""] {
                let key = crate::pyfmt::mmap_key("m", "m_total", l, help);
                let serde = by_serde(key.as_bytes());
                assert!(serde.is_some(), "{key}");
                match by_plain(key.as_bytes()) {
                    Some(p) => {
                        plain += 1;
                        assert_eq!(Some(p), serde, "{key}");
                    }
                    // Escapes are left to serde_json.
                    None => assert!(key.contains('\\'), "{key}"),
                }
            }
        }
        assert!(plain >= 6, "the plain form was taken {plain} times");
        // Not plain: left to serde_json, whatever it makes of them.
        for key in [
            r#"["m", "m", {"b": "1", "a": "2"}, "h"]"#,
            r#"["m", "m", {"a": "1", "a": "2"}, "h"]"#,
            r#"["m","m",{},"h"]"#,
            r#" ["m", "m", {}, "h"]"#,
            r#"["m", "m", {}, "h"] "#,
            r#"["m", "m", {}, "h"]x"#,
            r#"["m", "m", {"a": 1}, "h"]"#,
            r#"["m", "m", {"a": "1",}, "h"]"#,
            r#"["m", "m", {}, "h", "extra"]"#,
            "[\"m\", \"m\u{1}\", {}, \"h\"]",
        ] {
            assert_eq!(by_plain(key.as_bytes()), None, "{key}");
        }
        // Plain, and the same as serde_json's reading.
        for key in [r#"["m", "m", {}, "h"]"#, r#"["", "", {"": ""}, ""]"#] {
            assert_eq!(by_plain(key.as_bytes()), by_serde(key.as_bytes()), "{key}");
            assert!(by_plain(key.as_bytes()).is_some(), "{key}");
        }
        assert_eq!(by_plain(b"[\"m\", \"\xff\", {}, \"h\"]"), None);
    }
}
