//! `wsgi.input`: the request body as a Python file-like object, read from
//! the connection with the GIL released.

use std::io::Read;

use ferrocorn_worker::Body;
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// Bytes asked of the connection per read: a bound on what one read holds.
const READ_BLOCK: usize = 64 * 1024;

/// `wsgi.input` (read, readline, readlines, iteration).
#[pyclass(module = "ferrocorn", name = "Input")]
pub(crate) struct Input {
    /// The body; taken back by the server when the response starts.
    pub(crate) body: Option<Body>,
    buf: Vec<u8>,
    pos: usize,
    eof: bool,
}

impl Input {
    pub(crate) fn new(body: Body) -> Input {
        Input {
            body: Some(body),
            buf: Vec::new(),
            pos: 0,
            eof: false,
        }
    }

    fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Reads one more block from the connection, the GIL released while it
    /// waits. False at the end of the body.
    fn fill(&mut self, py: Python<'_>, want: usize) -> PyResult<bool> {
        if self.eof {
            return Ok(false);
        }
        let Some(body) = self.body.as_mut() else {
            return Err(PyOSError::new_err(
                "wsgi.input cannot be read once the response has started",
            ));
        };
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > READ_BLOCK {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        // Ask for a whole block whatever the caller wants: a read returns
        // as soon as some bytes are there, and small reads (read(1) in a
        // loop) then cost no wait each; a huge read(n) fills 1 MiB at a time.
        let want = want.clamp(READ_BLOCK, 16 * READ_BLOCK);
        let start = self.buf.len();
        self.buf.resize(start + want, 0);
        let target = &mut self.buf[start..];
        let result = py.detach(|| {
            loop {
                match body.read(target) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    r => break r,
                }
            }
        });
        match result {
            Ok(n) => {
                self.buf.truncate(start + n);
                if n == 0 {
                    self.eof = true;
                }
                Ok(n > 0)
            }
            Err(e) => {
                self.buf.truncate(start);
                Err(PyOSError::new_err(format!("reading the request body: {e}")))
            }
        }
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.buffered());
        let out = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        out
    }

    fn read_bytes(&mut self, py: Python<'_>, size: Option<usize>) -> PyResult<Vec<u8>> {
        match size {
            None => {
                while self.fill(py, READ_BLOCK)? {}
                Ok(self.take(usize::MAX))
            }
            Some(n) => {
                while self.buffered() < n && self.fill(py, n - self.buffered())? {}
                Ok(self.take(n))
            }
        }
    }

    fn line(&mut self, py: Python<'_>, limit: Option<usize>) -> PyResult<Vec<u8>> {
        let mut scanned = 0;
        loop {
            let avail = &self.buf[self.pos..];
            if let Some(i) = avail[scanned..].iter().position(|&b| b == b'\n') {
                let end = scanned + i + 1;
                return Ok(self.take(limit.map_or(end, |l| l.min(end))));
            }
            scanned = avail.len();
            if let Some(l) = limit
                && scanned >= l
            {
                return Ok(self.take(l));
            }
            if !self.fill(py, READ_BLOCK)? {
                return Ok(self.take(usize::MAX));
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
        let data = self.read_bytes(py, size_arg(size))?;
        Ok(PyBytes::new(py, &data))
    }

    #[pyo3(signature = (size=None))]
    fn readline<'py>(
        &mut self,
        py: Python<'py>,
        size: Option<isize>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let data = self.line(py, size_arg(size))?;
        Ok(PyBytes::new(py, &data))
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
            if line.is_empty() {
                return Ok(lines);
            }
            lines.push(PyBytes::new(py, &line));
        }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.line(py, None)?;
        Ok((!line.is_empty()).then(|| PyBytes::new(py, &line)))
    }
}
