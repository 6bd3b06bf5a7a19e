//! `start_response` and the `write` callable it returns (PEP 3333).

use std::sync::{Arc, Mutex, MutexGuard};

use pyo3::exceptions::{PyAssertionError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyString, PyTuple};

/// What the app said about its response so far.
#[derive(Default)]
pub(crate) struct ResponseState {
    /// Status code and reason phrase, once `start_response` was called.
    pub(crate) status: Option<(u16, String)>,
    /// Header fields (hop-by-hop ones already dropped).
    pub(crate) headers: Vec<(String, Vec<u8>)>,
    /// The app asked for `Connection: close`.
    pub(crate) close: bool,
    /// The head went to the worker: too late for a new status.
    pub(crate) sent: bool,
    /// Bytes given to `write()` not yet handed to the worker.
    pub(crate) pending: Vec<Vec<u8>>,
}

pub(crate) type Shared = Arc<Mutex<ResponseState>>;

pub(crate) fn lock(s: &Shared) -> MutexGuard<'_, ResponseState> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// Headers the server owns, dropped from the app's list as gunicorn does.
const DROPPED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "server",
    "date",
];

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A header value as bytes: latin-1 characters, no control characters but
/// horizontal tab (no response splitting).
fn field_value(v: &str) -> Option<Vec<u8>> {
    v.chars()
        .map(|c| {
            let c = u32::from(c);
            (c == 0x09 || (0x20..=0xff).contains(&c) && c != 0x7f).then_some(c as u8)
        })
        .collect()
}

/// Parses `"200 OK"` into the code and the reason phrase.
fn parse_status(s: &str) -> Option<(u16, String)> {
    let (code, reason) = match s.split_once(' ') {
        Some((c, r)) => (c, r),
        None => (s, ""),
    };
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let code: u16 = code.parse().ok()?;
    if !(100..=999).contains(&code) {
        return None;
    }
    if reason
        .chars()
        .any(|c| c.is_control() || u32::from(c) > 0xff)
    {
        return None;
    }
    Some((code, reason.to_owned()))
}

/// The `start_response` callable handed to the app.
#[pyclass(module = "ferrocorn", name = "StartResponse")]
pub(crate) struct StartResponse {
    pub(crate) state: Shared,
}

#[pymethods]
impl StartResponse {
    #[pyo3(signature = (status, headers, exc_info=None))]
    fn __call__(
        &self,
        status: &Bound<'_, PyAny>,
        headers: &Bound<'_, PyAny>,
        exc_info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Write> {
        let exc_info = exc_info.filter(|e| !e.is_none());
        {
            let st = lock(&self.state);
            match exc_info {
                Some(info) if st.sent => {
                    // Too late to change the head: re-raise, as PEP 3333 says.
                    drop(st);
                    let value = info.cast::<PyTuple>()?.get_item(1)?;
                    return Err(PyErr::from_value(value));
                }
                None if st.status.is_some() => {
                    return Err(PyAssertionError::new_err(
                        "start_response called a second time without exc_info",
                    ));
                }
                _ => {}
            }
        }
        let status: &Bound<'_, PyString> = status
            .cast()
            .map_err(|_| PyTypeError::new_err("status must be a str"))?;
        let status_text = status.to_str()?;
        let parsed = parse_status(status_text).ok_or_else(|| {
            PyValueError::new_err(format!(
                "invalid status {status_text:?}: three digits, a space and a reason phrase expected"
            ))
        })?;
        let mut list = Vec::new();
        let mut close = false;
        for item in headers.try_iter()? {
            let item = item?;
            let pair: &Bound<'_, PyTuple> = item
                .cast()
                .map_err(|_| PyTypeError::new_err("each header must be a (name, value) tuple"))?;
            if pair.len() != 2 {
                return Err(PyTypeError::new_err(
                    "each header must be a (name, value) tuple",
                ));
            }
            let name = pair.get_item(0)?;
            let value = pair.get_item(1)?;
            let (Ok(name), Ok(value)) = (name.cast::<PyString>(), value.cast::<PyString>()) else {
                return Err(PyTypeError::new_err(format!(
                    "header name and value must be str, got {}",
                    pair.repr()?
                )));
            };
            let name = name.to_str()?.trim();
            if !is_token(name) {
                return Err(PyValueError::new_err(format!(
                    "invalid header name {name:?}"
                )));
            }
            let value = value.to_str()?;
            let bytes = field_value(value.trim()).ok_or_else(|| {
                PyValueError::new_err(format!(
                    "invalid value for header {name:?}: {value:?} (control characters or non-latin-1)"
                ))
            })?;
            let lower = name.to_ascii_lowercase();
            if lower == "connection" {
                close |= bytes
                    .split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
            }
            if DROPPED.contains(&lower.as_str()) {
                continue;
            }
            list.push((name.to_owned(), bytes));
        }
        let mut st = lock(&self.state);
        st.status = Some(parsed);
        st.headers = list;
        st.close = close;
        Ok(Write {
            state: self.state.clone(),
        })
    }
}

/// The `write(data)` callable (PEP 3333's imperative API): the bytes go out
/// before the iterable's.
#[pyclass(module = "ferrocorn", name = "Write")]
pub(crate) struct Write {
    state: Shared,
}

#[pymethods]
impl Write {
    fn __call__(&self, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let bytes = if let Ok(b) = data.cast::<PyBytes>() {
            b.as_bytes().to_vec()
        } else if let Ok(b) = data.cast::<PyByteArray>() {
            b.to_vec()
        } else {
            return Err(PyTypeError::new_err(format!(
                "write() argument must be bytes, not {}",
                data.get_type().name()?
            )));
        };
        let mut st = lock(&self.state);
        if st.status.is_none() {
            return Err(PyAssertionError::new_err(
                "write() called before start_response",
            ));
        }
        if !bytes.is_empty() {
            st.pending.push(bytes);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(parse_status("200 OK"), Some((200, "OK".into())));
        assert_eq!(
            parse_status("299 My Own Reason"),
            Some((299, "My Own Reason".into()))
        );
        assert_eq!(parse_status("204"), Some((204, String::new())));
        assert_eq!(parse_status("20 OK"), None);
        assert_eq!(parse_status("OK 200"), None);
        assert_eq!(parse_status("200 OK\r\nX: y"), None);
    }

    #[test]
    fn values() {
        assert_eq!(field_value("a\tb é"), Some(b"a\tb \xe9".to_vec()));
        assert_eq!(field_value("a\r\nb"), None);
        assert_eq!(field_value("a\0"), None);
        assert_eq!(field_value("€"), None);
        assert!(is_token("X-Custom_1"));
        assert!(!is_token("X Custom"));
        assert!(!is_token(""));
    }
}
