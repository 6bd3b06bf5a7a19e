//! The byte layout of one metric file (prometheus_client >= 0.18), its
//! writer (append-only, grown by adding mappings) and its parser.

use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Mutex;

use crate::hash::FastMap;
use crate::sys::{self, Map, Slot};

/// Size of a new file, as prometheus_client creates it (which leaves it
/// sparse; ours are allocated, see `sys::reserve`).
pub(crate) const INITIAL_SIZE: usize = 1 << 16;
/// `used` is an `i32`: files cannot grow past it.
const MAX_SIZE: usize = i32::MAX as usize;

/// Padding after a key of `len` bytes: 1..=8 spaces so the value is 8-aligned.
#[inline]
pub(crate) fn padding(len: usize) -> usize {
    8 - (len + 4) % 8
}

/// Appends one whole entry (length, key, padding, value, timestamp) to `out`.
pub(crate) fn encode_entry(out: &mut Vec<u8>, key: &[u8], value: f64, timestamp: f64) {
    out.extend_from_slice(&(key.len() as i32).to_ne_bytes());
    out.extend_from_slice(key);
    out.extend(std::iter::repeat_n(b' ', padding(key.len())));
    out.extend_from_slice(&value.to_ne_bytes());
    out.extend_from_slice(&timestamp.to_ne_bytes());
}

/// One entry of a parsed file: where its key is, and its numbers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry {
    key_start: u32,
    key_len: u32,
    pub value: f64,
    pub timestamp: f64,
}

impl Entry {
    /// The key's bytes in the file's `data`.
    #[inline]
    pub(crate) fn key<'a>(&self, data: &'a [u8]) -> &'a [u8] {
        &data[self.key_start as usize..(self.key_start + self.key_len) as usize]
    }

    /// Where the key starts in the file, and its length.
    #[inline]
    pub(crate) fn key_span(&self) -> (u32, u32) {
        (self.key_start, self.key_len)
    }

    /// Offset of the value in the file.
    pub(crate) fn value_offset(&self) -> usize {
        let len = self.key_len as usize;
        self.key_start as usize + len + padding(len)
    }
}

/// How a file's bytes were understood.
#[derive(Debug, PartialEq)]
pub(crate) enum Layout {
    /// The current layout, every byte up to `used` understood.
    Current,
    /// The current layout, but the last entry is cut off: read up to it.
    Truncated,
    /// The layout before prometheus_client 0.18 (no timestamps).
    Legacy,
}

fn read_i32(data: &[u8], pos: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(data.get(pos..pos + 4)?.try_into().ok()?))
}

fn read_f64(data: &[u8], pos: usize) -> Option<f64> {
    Some(f64::from_ne_bytes(data.get(pos..pos + 8)?.try_into().ok()?))
}

/// Walks entries of `data[..used]` with `value_len` bytes after the padding
/// (16 today, 8 before 0.18). Returns whether the walk ended exactly at `used`.
fn walk(data: &[u8], used: usize, value_len: usize, out: &mut Vec<Entry>) -> bool {
    let mut pos = 8;
    while pos < used {
        let Some(len) = read_i32(data, pos) else {
            return false;
        };
        let Ok(len) = usize::try_from(len) else {
            return false;
        };
        let vpos = pos + 4 + len + padding(len);
        if vpos + value_len > used {
            return false;
        }
        let value = read_f64(data, vpos).unwrap_or(0.0);
        let timestamp = if value_len == 16 {
            read_f64(data, vpos + 8).unwrap_or(0.0)
        } else {
            0.0
        };
        out.push(Entry {
            key_start: (pos + 4) as u32,
            key_len: len as u32,
            value,
            timestamp,
        });
        pos = vpos + value_len;
    }
    pos == used
}

/// Walks the current layout's entries of `data[start..avail]` (`start`
/// where an earlier walk of the same file ended), stopping before the first
/// entry that is not whole or whose key is not a JSON list. Returns the
/// offset after the last entry taken: `avail` when all of it was understood.
pub(crate) fn walk_from(data: &[u8], start: usize, avail: usize, out: &mut Vec<Entry>) -> usize {
    out.clear();
    let avail = avail.min(data.len());
    let mut pos = start;
    while pos < avail {
        let Some(len) = read_i32(data, pos).and_then(|l| usize::try_from(l).ok()) else {
            break;
        };
        let vpos = pos + 4 + len + padding(len);
        if len == 0 || vpos + 16 > avail || data.get(pos + 4) != Some(&b'[') {
            break;
        }
        out.push(Entry {
            key_start: (pos + 4) as u32,
            key_len: len as u32,
            value: read_f64(data, vpos).unwrap_or(0.0),
            timestamp: read_f64(data, vpos + 8).unwrap_or(0.0),
        });
        pos = vpos + 16;
    }
    pos
}

/// Parses the entries of a file's bytes (`data` holds at least the first
/// `used` bytes, or fewer when the file was cut short).
pub(crate) fn parse(data: &[u8], out: &mut Vec<Entry>) -> Result<Layout, String> {
    out.clear();
    if data.is_empty() {
        return Ok(Layout::Current);
    }
    let Some(used) = read_i32(data, 0) else {
        return Err(format!("{} bytes: too short for a header", data.len()));
    };
    if used == 0 {
        // A writer created the file but did not write its header yet.
        return Ok(Layout::Current);
    }
    let Ok(used) = usize::try_from(used) else {
        return Err(format!("negative used mark {used}"));
    };
    if used < 8 {
        return Err(format!("used mark {used} is smaller than the header"));
    }
    let avail = used.min(data.len());
    // The common case in one pass: whole current-layout entries up to `avail`.
    if walk_from(data, 8, avail, out) == avail {
        return Ok(if avail == used {
            Layout::Current
        } else {
            Layout::Truncated
        });
    }
    out.clear();
    let looks_like_keys =
        |entries: &[Entry]| entries.iter().all(|e| e.key(data).first() == Some(&b'['));
    if walk(data, avail, 16, out) && looks_like_keys(out) {
        return Ok(if avail == used {
            Layout::Current
        } else {
            Layout::Truncated
        });
    }
    let current_len = out.len();
    let mut legacy = Vec::new();
    if avail == used
        && walk(data, used, 8, &mut legacy)
        && looks_like_keys(&legacy)
        && !legacy.is_empty()
    {
        *out = legacy;
        return Ok(Layout::Legacy);
    }
    // Keep the whole entries the current layout found before the damage.
    out.truncate(current_len);
    let whole = out
        .iter()
        .take_while(|e| e.key(data).first() == Some(&b'['))
        .count();
    out.truncate(whole);
    if out.is_empty() && used > 8 {
        return Err(format!(
            "no valid entry in the first {avail} bytes (used mark {used}): not a metric file"
        ));
    }
    Ok(Layout::Truncated)
}

/// Reads a file once into `buf`: its header, then up to its `used` mark (or,
/// when `whole` is set, for aggregate trailers, past it up to
/// [`MAX_TRAILER`] more bytes). Never past the file's real size: a header
/// claiming more than the file holds costs no memory. Returns how many
/// bytes of `buf` hold the file (`buf` may be longer: it is reused between
/// files without zeroing) and, when `stamp` is set, its [`Stamp`].
pub(crate) fn read_file(
    file: &File,
    buf: &mut Vec<u8>,
    whole: bool,
    stamp: bool,
) -> io::Result<(usize, Option<Stamp>)> {
    if whole {
        // From offset 0 whatever the file position (the file may be kept
        // open and read again). Aggregates are replaced by renaming, never
        // written in place, so their size does not change under us.
        let meta = file.metadata()?;
        let size = usize::try_from(meta.len()).unwrap_or(usize::MAX);
        let mut head = [0u8; 4];
        let n = read_at_most(file, &mut head, 0)?;
        let used = read_i32(&head[..n], 0).map_or(0, |u| usize::try_from(u).unwrap_or(0));
        let end = size.min(used.max(8).saturating_add(MAX_TRAILER));
        buf.clear();
        buf.resize(end, 0);
        let len = read_at_most(file, &mut buf[..end], 0)?;
        buf.truncate(len);
        return Ok((len, Some(Stamp::of(&meta))));
    }
    read_used(file, buf, FIRST_READ, stamp)
}

/// The most bytes read past an aggregate's `used` mark (its trailer).
pub(crate) const MAX_TRAILER: usize = 64 * 1024;

/// Opens the metric file `name` of the directory `dir` for reading, and
/// returns it with its metadata, if it is a regular file: never blocks (a
/// FIFO would block `open` until a writer came), never follows a symbolic
/// link (one to `/dev/zero` would be read forever).
pub(crate) fn open_regular(dir: &File, name: &std::ffi::OsStr) -> io::Result<(File, Metadata)> {
    regular(sys::open_in(dir, name))
}

/// [`open_regular`] by path (the directory's own path joined with the name).
pub(crate) fn open_regular_path(path: &Path) -> io::Result<(File, Metadata)> {
    regular(
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path),
    )
}

/// `file` with its metadata if it is a regular file; an `InvalidData`
/// error saying what it is otherwise.
pub(crate) fn regular(file: io::Result<File>) -> io::Result<(File, Metadata)> {
    let file = file.map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            io::Error::new(io::ErrorKind::InvalidData, "a symbolic link: not followed")
        } else {
            e
        }
    })?;
    let meta = file.metadata()?;
    if meta.is_file() {
        return Ok((file, meta));
    }
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    let what = if t.is_fifo() {
        "a FIFO"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    };
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{what}, not a regular file"),
    ))
}

/// How much of a file of unknown size is read at first: a whole small file
/// (most gauge files), and not much more (the rest of a new file is zeros).
pub(crate) const FIRST_READ: usize = 4096;

/// Reads a file's header and entries up to its `used` mark into `buf`: the
/// first `first` bytes in one read (a caller that knows the file's last
/// `used` mark reads all of it at once), then the rest up to `used` if the
/// file is longer. Copies no byte past `used` except in the first read.
pub(crate) fn read_used(
    file: &File,
    buf: &mut Vec<u8>,
    first: usize,
    stamp: bool,
) -> io::Result<(usize, Option<Stamp>)> {
    let stamp = if stamp {
        Some(Stamp::of(&file.metadata()?))
    } else {
        None
    };
    let first = first.max(8);
    if buf.len() < first {
        buf.resize(first, 0);
    }
    let n = read_at_most(file, &mut buf[..first], 0)?;
    let mut len = n;
    if let Some(used) = read_i32(&buf[..n], 0) {
        let used = usize::try_from(used).unwrap_or(0);
        if used > n && n == first {
            // Never past the real size: a corrupt `used` (2 GiB claimed by
            // an 8 KiB file) must not allocate what the file does not hold.
            let size = usize::try_from(file.metadata()?.len()).unwrap_or(usize::MAX);
            let end = used.min(size);
            if end > n {
                if buf.len() < end {
                    buf.resize(end, 0);
                }
                len = n + read_at_most(file, &mut buf[n..end], n as u64)?;
            }
        }
    }
    Ok((len, stamp))
}

/// Identifies one file's contents: inode number and modification time. A
/// dead process's file no longer changes; a new file that reuses its pid
/// and even its inode number has another modification time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub ino: u64,
    pub mtime: i64,
    pub mtime_nsec: i64,
}

impl Stamp {
    pub(crate) fn of(m: &std::fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        Stamp {
            ino: m.ino(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
        }
    }
}

fn read_at_most(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// A metric file this process writes: appends under a mutex, values updated
/// lock-free through [`Slot`]s.
pub(crate) struct ShmFile {
    file: File,
    /// The device and inode it was opened as.
    id: (u64, u64),
    state: Mutex<State>,
}

struct State {
    used: usize,
    /// Every mapping ever made of the file, smallest first; never unmapped
    /// while the `ShmFile` lives, so slots handed out stay valid.
    maps: Vec<Map>,
    positions: FastMap<Box<[u8]>, usize>,
}

impl State {
    fn map(&self) -> &Map {
        self.maps.last().expect("a file has a mapping")
    }
}

impl ShmFile {
    /// Opens (creating it 0600 if needed) the file at `path`. An existing file
    /// (a reused pid) is continued, as prometheus_client does.
    pub(crate) fn open(path: &Path) -> io::Result<ShmFile> {
        // Not through a symbolic link, nor blocking on a FIFO planted at
        // the name: a regular file or an error.
        let (file, meta) = regular(
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(path),
        )
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let mut size = usize::try_from(meta.len()).unwrap_or(MAX_SIZE);
        let new = size == 0;
        if new {
            size = INITIAL_SIZE;
        }
        if !(8..=MAX_SIZE).contains(&size) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: bad size {size}", path.display()),
            ));
        }
        // The whole file, holes included: a file continued from an earlier
        // process with this pid may have been extended sparse (Python does).
        if let Err(e) = sys::reserve(&file, 0, size as u64) {
            if new {
                // Leave no empty file behind: a reader (Python's too) would
                // take it for a broken one.
                let _ = std::fs::remove_file(path);
            }
            return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display())));
        }
        let map = Map::new(&file, size)?;
        let mut positions = FastMap::default();
        let mut used = map.load_i32(0);
        if used == 0 {
            used = 8;
            map.store_i32(0, used);
        } else {
            let mut buf = Vec::new();
            let (len, _) = read_file(&file, &mut buf, false, false)?;
            buf.truncate(len);
            let mut entries = Vec::new();
            let layout = parse(&buf, &mut entries).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            })?;
            if layout != Layout::Current {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: cannot continue a file in a {layout:?} layout",
                        path.display()
                    ),
                ));
            }
            for e in &entries {
                positions.insert(e.key(&buf).into(), e.value_offset());
            }
        }
        let used = usize::try_from(used).unwrap_or(0);
        use std::os::unix::fs::MetadataExt;
        Ok(ShmFile {
            file,
            id: (meta.dev(), meta.ino()),
            state: Mutex::new(State {
                used,
                maps: vec![map],
                positions,
            }),
        })
    }

    /// Whether `path` names this file (it was not deleted, renamed away or
    /// replaced since it was opened).
    pub(crate) fn is_at(&self, path: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == self.id)
    }

    /// Returns the slot of `key`, appending a zero entry for it first if the
    /// file does not have one.
    pub(crate) fn slot(&self, key: &[u8]) -> io::Result<Slot> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&pos) = st.positions.get(key) {
            return Ok(st.map().slot(pos));
        }
        let mut entry = Vec::with_capacity(key.len() + 32);
        encode_entry(&mut entry, key, 0.0, 0.0);
        let end = st.used + entry.len();
        if end > st.map().len() {
            let mut cap = st.map().len();
            while cap < end {
                cap = cap.saturating_mul(2);
            }
            if cap > MAX_SIZE {
                return Err(io::Error::new(
                    io::ErrorKind::OutOfMemory,
                    "metric file would exceed 2 GiB",
                ));
            }
            sys::reserve(&self.file, st.map().len() as u64, cap as u64)?;
            let map = Map::new(&self.file, cap)?;
            st.maps.push(map);
        }
        let start = st.used;
        st.map().write(start, &entry);
        // Publish: the whole entry is in place before `used` covers it.
        st.map().store_i32(0, end as i32);
        st.used = end;
        let vpos = end - 16;
        st.positions.insert(key.into(), vpos);
        Ok(st.map().slot(vpos))
    }
}

/// Parsed file name of a metric file.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct FileName {
    /// `counter`, `gauge`, `histogram`, `summary`.
    pub kind: Kind,
    /// The file id (normally a pid; `aggregate` for folded files).
    pub id: String,
}

/// The type (and gauge mode) a file name carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Kind {
    Counter,
    Histogram,
    Summary,
    Gauge(crate::GaugeMode),
}

impl Kind {
    pub(crate) fn prefix(self) -> String {
        match self {
            Kind::Counter => "counter".into(),
            Kind::Histogram => "histogram".into(),
            Kind::Summary => "summary".into(),
            Kind::Gauge(m) => format!("gauge_{}", m.as_str()),
        }
    }

    pub(crate) fn file_name(self, id: &str) -> String {
        format!("{}_{id}.db", self.prefix())
    }
}

/// The end of the hidden name a file being folded has (see
/// `aggregate::folding_name`): `.counter_123.folding`.
pub(crate) const FOLDING_SUFFIX: &str = ".folding";

impl FileName {
    /// Parses the hidden name of a file being folded,
    /// `.counter_123.folding`: the file `counter_123.db` was.
    pub(crate) fn parse_folding(name: &str) -> Option<FileName> {
        let stem = name.strip_prefix('.')?.strip_suffix(FOLDING_SUFFIX)?;
        FileName::parse(&format!("{stem}.db"))
    }

    /// Parses `counter_123.db`, `gauge_livesum_123.db`, ...
    pub(crate) fn parse(name: &str) -> Option<FileName> {
        let stem = name.strip_suffix(".db")?;
        let mut parts = stem.split('_');
        let typ = parts.next()?;
        let kind = match typ {
            "counter" => Kind::Counter,
            "histogram" => Kind::Histogram,
            "summary" => Kind::Summary,
            "gauge" => Kind::Gauge(crate::GaugeMode::from_str_opt(parts.next()?)?),
            _ => return None,
        };
        let id = parts.next()?.to_string();
        if parts.next().is_some() {
            return None;
        }
        Some(FileName { kind, id })
    }
}
