//! The embedded interpreter: start it (in a virtualenv if asked), keep one
//! Python thread state per Rust thread, and fork with CPython's protocol.

use std::cell::Cell;
use std::ffi::CString;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use pyo3::ffi;

/// The `X.Y` version of the libpython this crate was built against.
pub const PYTHON_VERSION: &str = env!("FERROCORN_WSGI_PYTHON_VERSION");

/// Why the interpreter could not start.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InitError {
    /// The virtualenv directory has no `pyvenv.cfg`.
    NotAVirtualenv(PathBuf),
    /// The virtualenv was made by another Python `X.Y` than the linked one.
    VersionMismatch {
        /// The virtualenv.
        venv: PathBuf,
        /// Its Python version (`pyvenv.cfg`).
        venv_version: String,
        /// The version of the linked libpython.
        linked: &'static str,
    },
    /// CPython refused to start.
    Python(String),
}

impl fmt::Display for InitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InitError::NotAVirtualenv(p) => {
                write!(f, "{} is not a virtualenv (no pyvenv.cfg)", p.display())
            }
            InitError::VersionMismatch {
                venv,
                venv_version,
                linked,
            } => write!(
                f,
                "the virtualenv {} is Python {venv_version} but ferrocorn is built with Python {linked}: make the virtualenv with Python {linked}, or build ferrocorn with PYO3_PYTHON pointing at a Python {venv_version}",
                venv.display()
            ),
            InitError::Python(m) => write!(f, "cannot start Python: {m}"),
        }
    }
}

impl std::error::Error for InitError {}

/// Checks that `venv` is a virtualenv made by the Python this crate links
/// (its `pyvenv.cfg` names the version), without starting Python.
pub fn check_virtualenv(venv: &Path) -> Result<(), InitError> {
    let cfg = std::fs::read_to_string(venv.join("pyvenv.cfg"))
        .map_err(|_| InitError::NotAVirtualenv(venv.to_owned()))?;
    let mut version = None;
    for line in cfg.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        // `version` (venv) or `version_info` (virtualenv).
        if key == "version" || key == "version_info" {
            version = Some(value.trim().to_owned());
        }
    }
    let Some(full) = version else {
        // An old virtualenv without a version: take it on trust.
        return Ok(());
    };
    let xy: Vec<&str> = full.split('.').take(2).collect();
    if xy.join(".") != PYTHON_VERSION {
        return Err(InitError::VersionMismatch {
            venv: venv.to_owned(),
            venv_version: xy.join("."),
            linked: PYTHON_VERSION,
        });
    }
    Ok(())
}

fn status_error(status: &ffi::PyStatus) -> Option<String> {
    // SAFETY: PyStatus_Exception only reads the struct it is given.
    if unsafe { ffi::PyStatus_Exception(*status) } == 0 {
        return None;
    }
    if status.err_msg.is_null() {
        return Some("unknown error".into());
    }
    // SAFETY: a non-null err_msg is a static NUL-terminated C string.
    let msg = unsafe { std::ffi::CStr::from_ptr(status.err_msg) };
    Some(msg.to_string_lossy().into_owned())
}

/// Starts the interpreter in this process, once (later calls do nothing).
///
/// With `venv`, Python runs in that virtualenv as a `python` started from
/// `venv/bin` would (its site-packages, not the build interpreter's): the
/// interpreter's `executable` is set to `venv/bin/python`, which is how
/// CPython finds `pyvenv.cfg`. The version is checked first
/// ([`check_virtualenv`]). Python installs no signal handlers; the
/// calling thread keeps its thread state, released.
pub fn initialize(venv: Option<&Path>) -> Result<(), InitError> {
    if let Some(v) = venv {
        check_virtualenv(v)?;
    }
    // SAFETY: Py_IsInitialized may be called at any time.
    if unsafe { ffi::Py_IsInitialized() } != 0 {
        return Ok(());
    }
    let executable = match venv {
        Some(v) => {
            let path = v.join("bin").join("python");
            Some(
                CString::new(path.as_os_str().as_bytes())
                    .map_err(|_| InitError::Python("the virtualenv path has a NUL byte".into()))?,
            )
        }
        None => None,
    };
    let mut config = std::mem::MaybeUninit::<ffi::PyConfig>::uninit();
    // SAFETY: PyConfig_InitPythonConfig fills the whole struct; the string
    // fields set below are copied by CPython; PyConfig_Clear frees them
    // after Py_InitializeFromConfig, which copies the config it needs; the
    // GIL taken by the initialization is released at the end, keeping this
    // thread's state.
    unsafe {
        ffi::PyConfig_InitPythonConfig(config.as_mut_ptr());
        let config = config.assume_init_mut();
        config.install_signal_handlers = 0;
        if let Some(exe) = &executable {
            let status = ffi::PyConfig_SetBytesString(config, &mut config.executable, exe.as_ptr());
            if let Some(e) = status_error(&status) {
                ffi::PyConfig_Clear(config);
                return Err(InitError::Python(e));
            }
        }
        let status = ffi::Py_InitializeFromConfig(config);
        ffi::PyConfig_Clear(config);
        if let Some(e) = status_error(&status) {
            return Err(InitError::Python(e));
        }
        ffi::PyEval_SaveThread();
    }
    // PyO3's own once-flag: the interpreter is up.
    pyo3::Python::initialize();
    THREAD_STATE.with(|s| s.set(true));
    Ok(())
}

thread_local! {
    /// This thread has a Python thread state that outlives each attach.
    static THREAD_STATE: Cell<bool> = const { Cell::new(false) };
}

/// Gives the calling thread a Python thread state that lives as long as the
/// thread, so that `threading.local` data (a per-thread database
/// connection) survives from one request to the next. Without it every
/// attach creates a fresh thread state and drops it at the end.
pub(crate) fn keep_thread_state() {
    if THREAD_STATE.with(|s| s.get()) {
        return;
    }
    // SAFETY: the interpreter is initialized (a WsgiApp exists) and this
    // thread is not attached (it had no thread state kept, and callers are
    // outside any attach): PyGILState_Ensure creates and attaches a thread
    // state, PyEval_SaveThread detaches it again while its gilstate count
    // stays 1, so later PyGILState_Ensure/Release pairs (PyO3's attach)
    // reuse it instead of deleting it.
    unsafe {
        ffi::PyGILState_Ensure();
        ffi::PyEval_SaveThread();
    }
    THREAD_STATE.with(|s| s.set(true));
}

/// CPython's fork protocol around a `fork()` made by Rust code: call
/// [`fork::before_fork`] right before, then [`fork::after_fork_parent`] in the parent
/// or [`fork::after_fork_child`] in the child, as `os.fork()` does, so that
/// `os.register_at_fork` hooks run and the import lock and the interpreter's
/// locks are in a sane state in the child. Between the two the calling
/// thread holds the GIL.
///
/// Only threads of the forking thread survive a fork: Python threads the
/// app started are gone in the child (as with gunicorn's `--preload`).
pub mod fork {
    use std::sync::atomic::{AtomicI32, Ordering};

    use pyo3::ffi;

    /// PyGILState_STATE of the pending fork, or -1.
    static PENDING: AtomicI32 = AtomicI32::new(-1);

    fn initialized() -> bool {
        // SAFETY: Py_IsInitialized may be called at any time.
        unsafe { ffi::Py_IsInitialized() != 0 }
    }

    /// Takes the GIL and runs the `before` fork hooks (nothing if Python is
    /// not running in this process).
    pub fn before_fork() {
        if !initialized() || PENDING.load(Ordering::Relaxed) >= 0 {
            return;
        }
        // SAFETY: the interpreter runs and this thread is detached (the
        // supervisor's loop never holds the GIL); PyOS_BeforeFork needs the
        // GIL, which PyGILState_Ensure takes and the after_fork functions
        // give back.
        let state = unsafe {
            let state = ffi::PyGILState_Ensure();
            ffi::PyOS_BeforeFork();
            state
        };
        PENDING.store(state as i32, Ordering::Relaxed);
    }

    fn release() {
        let state = PENDING.swap(-1, Ordering::Relaxed);
        let state = if state == 0 {
            ffi::PyGILState_STATE::PyGILState_LOCKED
        } else {
            ffi::PyGILState_STATE::PyGILState_UNLOCKED
        };
        // SAFETY: pairs the PyGILState_Ensure of before_fork, on the same
        // thread (the parent's, or its copy in the child).
        unsafe { ffi::PyGILState_Release(state) };
    }

    /// In the parent after `fork()`: the `after_in_parent` hooks, then the
    /// GIL is released.
    pub fn after_fork_parent() {
        if PENDING.load(Ordering::Relaxed) < 0 {
            return;
        }
        // SAFETY: before_fork took the GIL on this thread.
        unsafe { ffi::PyOS_AfterFork_Parent() };
        release();
    }

    /// In the child after `fork()`: CPython resets its locks and forgets the
    /// other threads, the `after_in_child` hooks run, then the GIL is
    /// released.
    pub fn after_fork_child() {
        if PENDING.load(Ordering::Relaxed) < 0 {
            return;
        }
        // SAFETY: the forking thread (this one) held the GIL at the fork.
        unsafe { ffi::PyOS_AfterFork_Child() };
        release();
    }
}
