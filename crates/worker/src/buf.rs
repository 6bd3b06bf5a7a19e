//! Read buffers and a small per-worker pool of them, so that an idle
//! connection holds none.

/// Size of a pooled read buffer.
pub(crate) const BUF_SIZE: usize = 16 * 1024;
/// Buffers kept in the pool at most.
const POOL_MAX: usize = 128;

/// A read buffer: `data[start..end]` holds unconsumed bytes. `data` is
/// always fully initialized (its length is its capacity in use).
#[derive(Debug)]
pub(crate) struct Buf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl Buf {
    pub(crate) fn filled(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }
    pub(crate) fn len(&self) -> usize {
        self.end - self.start
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.end == self.start
    }
    pub(crate) fn consume(&mut self, n: usize) {
        self.start += n;
        debug_assert!(self.start <= self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }
    /// Free space to read into, at least `min` bytes if the buffer may grow
    /// to `max` in total.
    pub(crate) fn spare(&mut self, max: usize) -> &mut [u8] {
        if self.end == self.data.len() && self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.data.len() && self.data.len() < max {
            let new = (self.data.len() * 2).min(max).max(self.data.len() + 1);
            self.data.resize(new, 0);
        }
        &mut self.data[self.end..]
    }
    /// Let the buffer hold `len` bytes in all (a body read in larger
    /// pieces); [`BufPool::put`] shrinks it back.
    pub(crate) fn grow_to(&mut self, len: usize) {
        if self.data.len() < len {
            self.data.resize(len, 0);
        }
    }
    pub(crate) fn advance(&mut self, n: usize) {
        self.end += n;
        debug_assert!(self.end <= self.data.len());
    }
}

/// Buffers waiting for a connection that needs one.
#[derive(Debug, Default)]
pub(crate) struct BufPool {
    free: Vec<Vec<u8>>,
    heads: Vec<Vec<u8>>,
}

impl BufPool {
    pub(crate) fn get(&mut self) -> Buf {
        let data = self.free.pop().unwrap_or_else(|| vec![0; BUF_SIZE]);
        Buf {
            data,
            start: 0,
            end: 0,
        }
    }
    pub(crate) fn put(&mut self, buf: Buf) {
        let mut data = buf.data;
        if self.free.len() < POOL_MAX {
            if data.len() > BUF_SIZE {
                data.truncate(BUF_SIZE);
                data.shrink_to_fit();
            }
            self.free.push(data);
        }
    }
    /// A vector for a request head or a response head.
    pub(crate) fn head_vec(&mut self) -> Vec<u8> {
        self.heads.pop().unwrap_or_else(|| Vec::with_capacity(1024))
    }
    pub(crate) fn put_head_vec(&mut self, mut v: Vec<u8>) {
        // An empty one (a `100 Continue` queued as a static body) is not
        // worth keeping.
        if self.heads.len() < POOL_MAX && (1..=64 * 1024).contains(&v.capacity()) {
            v.clear();
            self.heads.push(v);
        }
    }
}
