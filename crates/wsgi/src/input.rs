//! `wsgi.input`: the request body as a Python file-like object, read from
//! the connection with the GIL released.

use ferrocorn_worker::Body;
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// Bytes taken from the connection at most per read.
const MAX_FILL: usize = 1024 * 1024;

/// `wsgi.input` (read, readline, readlines, iteration).
#[pyclass(module = "ferrocorn", name = "Input")]
pub(crate) struct Input {
    /// The body; taken back by the server when the response starts.
    pub(crate) body: Option<Body>,
    /// `buf[pos..]`, then `next`, are read and not yet taken. Bytes come
    /// from the connection as whole vectors (no copy, see
    /// [`Body::read_append`]) into `buf` when it is used up, else into
    /// `next`; a read spanning both copies each byte once, into its bytes
    /// object.
    buf: Vec<u8>,
    pos: usize,
    next: Vec<u8>,
    eof: bool,
}

impl Input {
    pub(crate) fn new(body: Body) -> Input {
        Input {
            body: Some(body),
            buf: Vec::new(),
            pos: 0,
            next: Vec::new(),
            eof: false,
        }
    }

    fn buffered(&self) -> usize {
        self.buf.len() - self.pos + self.next.len()
    }

    /// Everything unread in `buf` alone (a copy of `next` into it).
    fn join(&mut self) {
        if !self.next.is_empty() {
            self.buf.drain(..self.pos);
            self.pos = 0;
            self.buf.append(&mut self.next);
        }
    }

    /// Reads more from the connection, the GIL released while it waits:
    /// what is there, up to 1 MiB, however little the caller asked for (a
    /// read returns as soon as some bytes are there, and small reads, say
    /// read(1) in a loop, then cost no wait each). False at the end of the
    /// body.
    fn fill(&mut self, py: Python<'_>) -> PyResult<bool> {
        if self.eof {
            return Ok(false);
        }
        self.join();
        let Some(body) = self.body.as_mut() else {
            return Err(PyOSError::new_err(
                "wsgi.input cannot be read once the response has started",
            ));
        };
        let into = if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
            &mut self.buf
        } else {
            &mut self.next
        };
        let result = py.detach(|| {
            loop {
                match body.read_append(into, MAX_FILL) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    r => break r,
                }
            }
        });
        match result {
            Ok(n) => {
                if n == 0 {
                    self.eof = true;
                }
                Ok(n > 0)
            }
            Err(e) => Err(PyOSError::new_err(format!("reading the request body: {e}"))),
        }
    }

    /// The next `n` unread bytes (fewer at the end) as a Python bytes
    /// object, each byte copied once.
    fn take<'py>(&mut self, py: Python<'py>, n: usize) -> PyResult<Bound<'py, PyBytes>> {
        let n = n.min(self.buffered());
        let front = self.buf.len() - self.pos;
        if n <= front {
            let out = PyBytes::new(py, &self.buf[self.pos..self.pos + n]);
            self.pos += n;
            return Ok(out);
        }
        let from_next = n - front;
        let out = PyBytes::new_with(py, n, |out| {
            out[..front].copy_from_slice(&self.buf[self.pos..]);
            out[front..].copy_from_slice(&self.next[..from_next]);
            Ok(())
        })?;
        std::mem::swap(&mut self.buf, &mut self.next);
        self.next.clear();
        self.pos = from_next;
        Ok(out)
    }

    fn read_bytes<'py>(
        &mut self,
        py: Python<'py>,
        size: Option<usize>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        match size {
            None => {
                while self.fill(py)? {}
                self.take(py, usize::MAX)
            }
            Some(n) => {
                while self.buffered() < n && self.fill(py)? {}
                self.take(py, n)
            }
        }
    }

    fn line<'py>(
        &mut self,
        py: Python<'py>,
        limit: Option<usize>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let mut scanned = 0;
        loop {
            self.join();
            let avail = &self.buf[self.pos..];
            if let Some(i) = avail[scanned..].iter().position(|&b| b == b'\n') {
                let end = scanned + i + 1;
                return self.take(py, limit.map_or(end, |l| l.min(end)));
            }
            scanned = avail.len();
            if let Some(l) = limit
                && scanned >= l
            {
                return self.take(py, l);
            }
            if !self.fill(py)? {
                return self.take(py, usize::MAX);
            }
        }
    }
}

/// A size argument: None or negative means "all".
fn size_arg(size: Option<isize>) -> Option<usize> {
    size.and_then(|s| usize::try_from(s).ok())
}

#[pymethods]
impl Input {
    #[pyo3(signature = (size=None))]
    fn read<'py>(&mut self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        self.read_bytes(py, size_arg(size))
    }

    #[pyo3(signature = (size=None))]
    fn readline<'py>(
        &mut self,
        py: Python<'py>,
        size: Option<isize>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        self.line(py, size_arg(size))
    }

    /// The hint is ignored, as gunicorn does.
    #[pyo3(signature = (hint=None))]
    fn readlines<'py>(
        &mut self,
        py: Python<'py>,
        hint: Option<isize>,
    ) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let _ = hint;
        let mut lines = Vec::new();
        loop {
            let line = self.line(py, None)?;
            if line.as_bytes().is_empty() {
                return Ok(lines);
            }
            lines.push(line);
        }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.line(py, None)?;
        Ok((!line.as_bytes().is_empty()).then_some(line))
    }
}
