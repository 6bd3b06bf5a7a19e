//! Writing metrics: the registry, metric families (`*Vec`) and lock-free handles.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::file::{Kind, ShmFile};
use crate::pyfmt;
use crate::sys::{self, Slot, SwapCell};

/// How the values of one gauge from several processes are merged, and
/// whether a dead process's value disappears (`Live*`), as prometheus_client's
/// `multiprocess_mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GaugeMode {
    /// One series per process (label `pid`). ferrocorn drops a process's
    /// series when it is marked dead (prometheus_client keeps them forever).
    All,
    /// One series per process (label `pid`), removed when it is marked dead.
    LiveAll,
    /// The smallest value of any process, dead ones included.
    Min,
    /// The smallest value of the live processes.
    LiveMin,
    /// The largest value of any process, dead ones included.
    Max,
    /// The largest value of the live processes.
    LiveMax,
    /// The sum over all processes, dead ones included.
    Sum,
    /// The sum over the live processes.
    LiveSum,
    /// The most recently set value of any process, dead ones included.
    MostRecent,
    /// The most recently set value of the live processes.
    LiveMostRecent,
}

impl GaugeMode {
    /// All ten modes.
    pub const ALL: [GaugeMode; 10] = [
        GaugeMode::All,
        GaugeMode::LiveAll,
        GaugeMode::Min,
        GaugeMode::LiveMin,
        GaugeMode::Max,
        GaugeMode::LiveMax,
        GaugeMode::Sum,
        GaugeMode::LiveSum,
        GaugeMode::MostRecent,
        GaugeMode::LiveMostRecent,
    ];

    /// The name prometheus_client uses (`all`, `livesum`, `mostrecent`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            GaugeMode::All => "all",
            GaugeMode::LiveAll => "liveall",
            GaugeMode::Min => "min",
            GaugeMode::LiveMin => "livemin",
            GaugeMode::Max => "max",
            GaugeMode::LiveMax => "livemax",
            GaugeMode::Sum => "sum",
            GaugeMode::LiveSum => "livesum",
            GaugeMode::MostRecent => "mostrecent",
            GaugeMode::LiveMostRecent => "livemostrecent",
        }
    }

    /// Whether a dead process's values vanish at once (`live*` modes).
    pub fn is_live(self) -> bool {
        matches!(
            self,
            GaugeMode::LiveAll
                | GaugeMode::LiveMin
                | GaugeMode::LiveMax
                | GaugeMode::LiveSum
                | GaugeMode::LiveMostRecent
        )
    }

    /// Whether values carry a timestamp (`mostrecent`, `livemostrecent`).
    pub fn is_most_recent(self) -> bool {
        matches!(self, GaugeMode::MostRecent | GaugeMode::LiveMostRecent)
    }

    pub(crate) fn from_str_opt(s: &str) -> Option<GaugeMode> {
        GaugeMode::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

impl fmt::Display for GaugeMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for GaugeMode {
    type Err = String;
    fn from_str(s: &str) -> Result<GaugeMode, String> {
        GaugeMode::from_str_opt(s).ok_or_else(|| {
            let names: Vec<_> = GaugeMode::ALL.iter().map(|m| m.as_str()).collect();
            format!(
                "unknown gauge mode {s:?} (expected one of {})",
                names.join(", ")
            )
        })
    }
}

/// prometheus_client's default histogram buckets.
pub const DEFAULT_BUCKETS: [f64; 15] = [
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    f64::INFINITY,
];

/// The files this process writes, shared by every [`Registry`] so two
/// registries on one directory append to one file object. Rebuilt in a child
/// after fork: the parent's files are never written by the child.
struct Table {
    generation: u64,
    /// By the directory's device and inode and the file's name: one
    /// directory spelled two ways (relative and absolute, through a
    /// symbolic link) is one set of files, appended to through one mapping.
    files: HashMap<(u64, u64, String), Arc<ShmFile>>,
}

static TABLE: Mutex<Option<Table>> = Mutex::new(None);

fn shared_file(dir: &Path, kind: Kind, generation: u64) -> io::Result<Arc<ShmFile>> {
    let mut guard = TABLE.lock().unwrap_or_else(|p| p.into_inner());
    let table = guard.get_or_insert_with(|| Table {
        generation,
        files: HashMap::new(),
    });
    if table.generation != generation {
        table.files.clear();
        table.generation = generation;
    }
    let name = kind.file_name(&sys::pid().to_string());
    let path = dir.join(&name);
    let dir_id = || {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(dir).map(|m| (m.dev(), m.ino()))
    };
    let (dev, ino) = match dir_id() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)?;
            dir_id()?
        }
        r => r?,
    };
    let key = (dev, ino, name);
    // Still the file at that name: a directory deleted and made again can
    // have the inode number of the old one, and a file may be renamed away.
    if let Some(f) = table.files.get(&key).filter(|f| f.is_at(&path)) {
        return Ok(f.clone());
    }
    let file = Arc::new(ShmFile::open(&path)?);
    table.files.insert(key, file.clone());
    Ok(file)
}

/// The slots of one series in the files of one process generation.
struct Binding {
    generation: u64,
    slots: Box<[Slot]>,
    // Keeps the mappings the slots point into alive.
    _file: Option<Arc<ShmFile>>,
}

/// One labelled child: its keys (one per stored sample) and where they live.
struct Series {
    dir: Arc<Path>,
    kind: Kind,
    keys: Box<[Box<[u8]>]>,
    binding: SwapCell<Binding>,
}

impl Series {
    fn new(dir: Arc<Path>, kind: Kind, keys: Vec<Box<[u8]>>) -> io::Result<Series> {
        let generation = sys::fork_generation();
        let binding = Series::bind(&dir, kind, &keys, generation)?;
        Ok(Series {
            dir,
            kind,
            keys: keys.into(),
            binding: SwapCell::new(binding),
        })
    }

    fn bind(dir: &Path, kind: Kind, keys: &[Box<[u8]>], generation: u64) -> io::Result<Binding> {
        let file = shared_file(dir, kind, generation)?;
        let slots = keys
            .iter()
            .map(|k| file.slot(k))
            .collect::<io::Result<Box<[Slot]>>>()?;
        Ok(Binding {
            generation,
            slots,
            _file: Some(file),
        })
    }

    /// The slots to update: this process's, rebinding after a fork.
    #[inline]
    fn slots(&self) -> &[Slot] {
        let b = self.binding.get();
        if b.generation == sys::fork_generation() {
            &b.slots
        } else {
            self.rebind()
        }
    }

    #[cold]
    fn rebind(&self) -> &[Slot] {
        let generation = sys::fork_generation();
        let binding =
            Series::bind(&self.dir, self.kind, &self.keys, generation).unwrap_or_else(|_| {
                // The child's file cannot be created (disk full, directory gone):
                // updates go to private memory rather than into the parent's file.
                Binding {
                    generation,
                    slots: self.keys.iter().map(|_| Slot::scratch()).collect(),
                    _file: None,
                }
            });
        &self.binding.replace(binding).slots
    }
}

#[inline]
fn atomic_add(a: &AtomicU64, v: f64) {
    let mut cur = a.load(Ordering::Relaxed);
    loop {
        let new = (f64::from_bits(cur) + v).to_bits();
        match a.compare_exchange_weak(cur, new, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return,
            Err(x) => cur = x,
        }
    }
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Where metrics are written: a `PROMETHEUS_MULTIPROC_DIR`-style directory.
///
/// Files are named after the process id at the time of the first write
/// (`counter_1234.db`, `gauge_livesum_1234.db`, ...). **After `fork()`** a
/// registry, and every handle made from it, writes to the child's own files
/// (detected with a `pthread_atfork` child hook, one atomic load per update);
/// values start from zero there, as with prometheus_client. Do not fork while
/// another thread is *creating* a series (`with_label_values`): the child
/// could inherit a held lock. Updates of existing series take no lock.
#[derive(Clone, Debug)]
pub struct Registry {
    dir: Arc<Path>,
}

impl Registry {
    /// A registry writing into `dir` (created on first write if missing).
    pub fn new(dir: impl Into<PathBuf>) -> Registry {
        sys::install_fork_hook();
        Registry {
            dir: Arc::from(dir.into()),
        }
    }

    /// A registry writing into `PROMETHEUS_MULTIPROC_DIR`.
    pub fn from_env() -> io::Result<Registry> {
        match std::env::var_os("PROMETHEUS_MULTIPROC_DIR") {
            Some(d) if !d.is_empty() => Ok(Registry::new(PathBuf::from(d))),
            _ => Err(io::Error::new(
                io::ErrorKind::NotFound,
                "PROMETHEUS_MULTIPROC_DIR is not set",
            )),
        }
    }

    /// The directory this registry writes into.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A counter family. A `_total` suffix of `name` is dropped (the sample is
    /// always `name_total`), as prometheus_client does.
    ///
    /// # Panics
    /// On an invalid metric or label name, or a duplicated label name.
    pub fn counter(&self, name: &str, help: &str, label_names: &[&str]) -> CounterVec {
        let name = name.strip_suffix("_total").unwrap_or(name);
        CounterVec {
            family: Family::new(&self.dir, Kind::Counter, name, help, label_names, &[]),
        }
    }

    /// A gauge family merged across processes by `mode`.
    ///
    /// # Panics
    /// On an invalid metric or label name, or a duplicated label name.
    pub fn gauge(&self, name: &str, help: &str, label_names: &[&str], mode: GaugeMode) -> GaugeVec {
        GaugeVec {
            family: Family::new(&self.dir, Kind::Gauge(mode), name, help, label_names, &[]),
            mode,
        }
    }

    /// A histogram family with upper bounds `buckets` (increasing; `+Inf` is
    /// added if missing; empty means [`DEFAULT_BUCKETS`]).
    ///
    /// # Panics
    /// On an invalid metric or label name, a label named `le`, or buckets not
    /// strictly increasing.
    pub fn histogram(
        &self,
        name: &str,
        help: &str,
        label_names: &[&str],
        buckets: &[f64],
    ) -> HistogramVec {
        let mut bounds: Vec<f64> = if buckets.is_empty() {
            DEFAULT_BUCKETS.to_vec()
        } else {
            buckets.to_vec()
        };
        if bounds.last() != Some(&f64::INFINITY) {
            bounds.push(f64::INFINITY);
        }
        assert!(
            bounds.windows(2).all(|w| w[0] < w[1]),
            "histogram {name}: buckets must be strictly increasing"
        );
        HistogramVec {
            family: Family::new(&self.dir, Kind::Histogram, name, help, label_names, &["le"]),
            bounds: bounds.into(),
        }
    }

    /// A summary family (`_count` and `_sum`; no quantiles, as in
    /// prometheus_client's multiprocess mode).
    ///
    /// # Panics
    /// On an invalid metric or label name, or a label named `quantile`.
    pub fn summary(&self, name: &str, help: &str, label_names: &[&str]) -> SummaryVec {
        SummaryVec {
            family: Family::new(
                &self.dir,
                Kind::Summary,
                name,
                help,
                label_names,
                &["quantile"],
            ),
        }
    }
}

fn valid_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with("__")
}

/// What every `*Vec` shares: names, help and a cache of children.
struct Family<H> {
    dir: Arc<Path>,
    kind: Kind,
    name: String,
    help: String,
    label_names: Vec<String>,
    children: Mutex<HashMap<Vec<String>, H>>,
}

impl<H: Clone> Family<H> {
    fn new(
        dir: &Arc<Path>,
        kind: Kind,
        name: &str,
        help: &str,
        labels: &[&str],
        reserved: &[&str],
    ) -> Arc<Family<H>> {
        assert!(valid_metric_name(name), "invalid metric name {name:?}");
        for (i, l) in labels.iter().enumerate() {
            assert!(
                valid_label_name(l),
                "metric {name}: invalid label name {l:?}"
            );
            assert!(
                !reserved.contains(l),
                "metric {name}: label name {l:?} is reserved"
            );
            assert!(
                !labels[..i].contains(l),
                "metric {name}: duplicated label name {l:?}"
            );
        }
        Arc::new(Family {
            dir: dir.clone(),
            kind,
            name: name.to_string(),
            help: help.to_string(),
            label_names: labels.iter().map(|s| s.to_string()).collect(),
            children: Mutex::new(HashMap::new()),
        })
    }

    /// The label pairs of a child, sorted by name, checked against the family.
    fn labels<'a>(&'a self, values: &[&'a str]) -> io::Result<Vec<(&'a str, &'a str)>> {
        if values.len() != self.label_names.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "metric {}: {} label values given, {} expected",
                    self.name,
                    values.len(),
                    self.label_names.len()
                ),
            ));
        }
        let mut pairs: Vec<(&str, &str)> = self
            .label_names
            .iter()
            .map(|s| s.as_str())
            .zip(values.iter().copied())
            .collect();
        pairs.sort_unstable();
        Ok(pairs)
    }

    fn key(&self, sample: &str, labels: &[(&str, &str)]) -> Box<[u8]> {
        pyfmt::mmap_key(&self.name, sample, labels, &self.help)
            .into_bytes()
            .into_boxed_slice()
    }

    fn child(&self, values: &[&str], make: impl FnOnce(&Self) -> io::Result<H>) -> io::Result<H> {
        let owned: Vec<String> = values.iter().map(|s| s.to_string()).collect();
        if let Some(h) = self
            .children
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&owned)
        {
            return Ok(h.clone());
        }
        let h = make(self)?;
        self.children
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(owned)
            .or_insert(h.clone());
        Ok(h)
    }

    fn series(&self, keys: Vec<Box<[u8]>>) -> io::Result<Arc<Series>> {
        Ok(Arc::new(Series::new(self.dir.clone(), self.kind, keys)?))
    }
}

/// A counter family; children by label values.
#[derive(Clone)]
pub struct CounterVec {
    family: Arc<Family<Counter>>,
}

impl CounterVec {
    /// The child with these label values (in the order of the label names),
    /// creating its entry in this process's file (value 0) if needed.
    pub fn with_label_values(&self, values: &[&str]) -> io::Result<Counter> {
        self.family.child(values, |f| {
            let labels = f.labels(values)?;
            let key = f.key(&format!("{}_total", f.name), &labels);
            Ok(Counter {
                series: f.series(vec![key])?,
            })
        })
    }
}

/// A monotonically increasing value (sample `name_total`).
#[derive(Clone)]
pub struct Counter {
    series: Arc<Series>,
}

impl Counter {
    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.inc_by(1.0)
    }

    /// Adds `v`; negative or NaN amounts are ignored (a counter never goes down).
    #[inline]
    pub fn inc_by(&self, v: f64) {
        if v >= 0.0 {
            atomic_add(self.series.slots()[0].value(), v);
        }
    }

    /// This process's value.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.series.slots()[0].value().load(Ordering::Relaxed))
    }
}

/// A gauge family; children by label values.
#[derive(Clone)]
pub struct GaugeVec {
    family: Arc<Family<Gauge>>,
    mode: GaugeMode,
}

impl GaugeVec {
    /// The child with these label values, creating its entry if needed.
    pub fn with_label_values(&self, values: &[&str]) -> io::Result<Gauge> {
        let most_recent = self.mode.is_most_recent();
        self.family.child(values, |f| {
            let labels = f.labels(values)?;
            let key = f.key(&f.name, &labels);
            Ok(Gauge {
                series: f.series(vec![key])?,
                most_recent,
            })
        })
    }

    /// The merge mode of this family.
    pub fn mode(&self) -> GaugeMode {
        self.mode
    }
}

/// A value that goes up and down.
///
/// In the `mostrecent` modes every change also stores the current time, which
/// decides the winner across processes (prometheus_client allows only `set`
/// there; ferrocorn also allows `inc`/`dec`/`add`, each stamped with the time).
#[derive(Clone)]
pub struct Gauge {
    series: Arc<Series>,
    most_recent: bool,
}

impl Gauge {
    /// Sets the value.
    #[inline]
    pub fn set(&self, v: f64) {
        let slot = self.series.slots()[0];
        slot.value().store(v.to_bits(), Ordering::Relaxed);
        if self.most_recent {
            slot.timestamp().store(now().to_bits(), Ordering::Relaxed);
        }
    }

    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1.0)
    }

    /// Subtracts one.
    #[inline]
    pub fn dec(&self) {
        self.add(-1.0)
    }

    /// Adds `v` (may be negative).
    #[inline]
    pub fn add(&self, v: f64) {
        let slot = self.series.slots()[0];
        atomic_add(slot.value(), v);
        if self.most_recent {
            slot.timestamp().store(now().to_bits(), Ordering::Relaxed);
        }
    }

    /// This process's value.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.series.slots()[0].value().load(Ordering::Relaxed))
    }
}

/// A histogram family; children by label values.
#[derive(Clone)]
pub struct HistogramVec {
    family: Arc<Family<Histogram>>,
    bounds: Arc<[f64]>,
}

impl HistogramVec {
    /// The child with these label values, creating its bucket and `_sum`
    /// entries if needed.
    pub fn with_label_values(&self, values: &[&str]) -> io::Result<Histogram> {
        self.family.child(values, |f| {
            let labels = f.labels(values)?;
            let bucket = format!("{}_bucket", f.name);
            let mut keys = Vec::with_capacity(self.bounds.len() + 1);
            for &b in self.bounds.iter() {
                let mut le = String::new();
                pyfmt::float_to_go_string(&mut le, b);
                let mut with_le = labels.clone();
                with_le.push(("le", &le));
                with_le.sort_unstable();
                keys.push(f.key(&bucket, &with_le));
            }
            keys.push(f.key(&format!("{}_sum", f.name), &labels));
            Ok(Histogram {
                series: f.series(keys)?,
                bounds: self.bounds.clone(),
            })
        })
    }
}

/// Observations counted in buckets (stored non-cumulative, as
/// prometheus_client does) plus their sum.
#[derive(Clone)]
pub struct Histogram {
    series: Arc<Series>,
    bounds: Arc<[f64]>,
}

impl Histogram {
    /// Records `v`: one more in the first bucket whose bound is >= `v`, and
    /// `v` added to the sum.
    #[inline]
    pub fn observe(&self, v: f64) {
        let slots = self.series.slots();
        let n = self.bounds.len();
        atomic_add(slots[n].value(), v);
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            atomic_add(slots[i].value(), 1.0);
        }
    }
}

/// A summary family; children by label values.
#[derive(Clone)]
pub struct SummaryVec {
    family: Arc<Family<Summary>>,
}

impl SummaryVec {
    /// The child with these label values, creating its `_count` and `_sum`
    /// entries if needed.
    pub fn with_label_values(&self, values: &[&str]) -> io::Result<Summary> {
        self.family.child(values, |f| {
            let labels = f.labels(values)?;
            let keys = vec![
                f.key(&format!("{}_count", f.name), &labels),
                f.key(&format!("{}_sum", f.name), &labels),
            ];
            Ok(Summary {
                series: f.series(keys)?,
            })
        })
    }
}

/// Observations counted and summed (`_count`, `_sum`).
#[derive(Clone)]
pub struct Summary {
    series: Arc<Series>,
}

impl Summary {
    /// Records `v`.
    #[inline]
    pub fn observe(&self, v: f64) {
        let slots = self.series.slots();
        atomic_add(slots[0].value(), 1.0);
        atomic_add(slots[1].value(), v);
    }
}
