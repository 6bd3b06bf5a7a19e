# The Python side of ferrocorn-wsgi: loading an app as gunicorn's APP_MODULE
# rules say, formatting tracebacks, and wsgi.file_wrapper.
import ast
import importlib
import os
import sys
import traceback


class AppLoadError(Exception):
    """The app spec cannot be resolved (the message is the whole story)."""


def _parse(expr):
    try:
        node = ast.parse(expr.strip(), mode="eval").body
    except SyntaxError:
        raise AppLoadError(
            "Failed to parse %r as an attribute name or function call." % expr
        ) from None
    if isinstance(node, ast.Name):
        return node.id, None
    if not isinstance(node, ast.Call):
        raise AppLoadError(
            "Failed to parse %r as an attribute name or function call." % expr
        )
    if not isinstance(node.func, ast.Name):
        raise AppLoadError("Function reference must be a simple name: %r" % expr)
    try:
        args = [ast.literal_eval(a) for a in node.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
    except ValueError:
        raise AppLoadError(
            "Failed to parse arguments as literal values: %r" % expr
        ) from None
    return node.func.id, (args, kwargs)


def load(spec):
    """`module:name`, `module:factory(args)` or `module` (= `:application`)."""
    module, sep, expr = spec.partition(":")
    if not sep or not expr:
        expr = "application"
    name, call = _parse(expr)
    mod = importlib.import_module(module)
    try:
        obj = getattr(mod, name)
    except AttributeError:
        raise AppLoadError("Failed to find attribute %r in %r." % (name, module)) from None
    if call is not None:
        args, kwargs = call
        try:
            obj = obj(*args, **kwargs)
        except TypeError as e:
            # Wrong arguments for the factory (raised by the call itself,
            # not inside it): the message says it all.
            if e.__traceback__.tb_next is None:
                raise AppLoadError(str(e)) from None
            raise
    if obj is None:
        raise AppLoadError("Failed to find application object: %r" % expr)
    if not callable(obj):
        raise AppLoadError("Application object must be callable.")
    return obj


def setup_paths(chdir, pythonpath):
    """gunicorn's order: chdir first on sys.path, then each --pythonpath
    entry inserted at the front."""
    if chdir:
        os.chdir(chdir)
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    for p in pythonpath:
        p = os.path.abspath(p)
        if p not in sys.path:
            sys.path.insert(0, p)


def format_exception(e, tb=None):
    return "".join(traceback.format_exception(type(e), e, tb or e.__traceback__)).rstrip("\n")


class FileWrapper:
    """wsgi.file_wrapper: iterates a file-like object in blocks; a real
    file is sent by the server without the GIL."""

    def __init__(self, filelike, blksize=8192):
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self):
        return self

    def __next__(self):
        data = self.filelike.read(self.blksize)
        if data:
            return data
        raise StopIteration


# prometheus_client in ferrocorn's metrics directory (see the crate docs,
# "The app's prometheus_client metrics"). Its files are named by
# `process_identifier()`: `{pid}.py`, never the pid alone, which names the
# files of ferrocorn's own (Rust) writer in the same process.

def _py_process_identifier():
    return "%d.py" % os.getpid()


def _deferred_value_class(values):
    """The value class of an app imported before the fork (--preload):
    values live in memory and open no file in the supervisor (whose open
    files under the metrics directory the workers close, and whose files
    no worker death would ever clean up); a worker makes each of them a
    file-backed value when it starts, from zero, as prometheus_client
    itself resets values after a fork."""
    pending = []

    class DeferredValue:
        _multiprocess = True

        def __init__(self, *args, **kwargs):
            self._args = args
            self._kwargs = kwargs
            self._real = None
            self._mem = values.MutexValue(*args, **kwargs)
            pending.append(self)

        def _v(self):
            return self._real if self._real is not None else self._mem

        def inc(self, amount):
            self._v().inc(amount)

        def set(self, value, timestamp=None):
            self._v().set(value, timestamp)

        def set_exemplar(self, exemplar):
            self._v().set_exemplar(exemplar)

        def get(self):
            return self._v().get()

        def get_exemplar(self):
            return self._v().get_exemplar()

    def materialize(real):
        for v in pending:
            v._real = real(*v._args, **v._kwargs)
            v._mem = None
        pending.clear()

    DeferredValue._ferrocorn_materialize = staticmethod(materialize)
    return DeferredValue


def setup_prometheus(directory, deferred):
    """Points prometheus_client's multiprocess mode at `directory` (None:
    the environment variable only, for a supervisor whose directory is
    made later). `deferred`: in the supervisor, before a --preload import.
    Returns whether prometheus_client is installed."""
    if directory is not None:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    os.environ.pop("prometheus_multiproc_dir", None)
    import importlib.util
    try:
        if importlib.util.find_spec("prometheus_client") is None:
            return False
        from prometheus_client import values
    except Exception:
        return False
    if deferred:
        values.ValueClass = _deferred_value_class(values)
        return True
    old = values.ValueClass
    real = values.MultiProcessValue(process_identifier=_py_process_identifier)
    values.ValueClass = real
    materialize = getattr(old, "_ferrocorn_materialize", None)
    if materialize is not None:
        materialize(real)
    return True


def format_stacks(idents):
    """The Python stack of each thread ident (None: no Python frame)."""
    frames = sys._current_frames()
    out = []
    for ident in idents:
        f = frames.get(ident)
        if f is None:
            out.append(None)
        else:
            out.append("".join(traceback.format_stack(f)).rstrip("\n"))
    return out


# Python logging through ferrocorn's error log (see pylog.rs).

_LOG_RECORD_KEYS = frozenset(vars(__import__("logging").LogRecord(
    "x", 0, "x", 0, "x", None, None)).keys()) | {"message", "asctime", "taskName"}
_emit = None


def _extra_value(v):
    if v is None or isinstance(v, (bool, int, float, str)):
        if isinstance(v, int) and not isinstance(v, bool) and not -2**63 <= v < 2**63:
            return str(v)
        return "None" if v is None else v
    try:
        return str(v)
    except Exception:
        return repr(v)


def _format_exc(exc_info):
    return "".join(traceback.format_exception(*exc_info)).rstrip("\n")


def _make_handler_class():
    import logging

    class FerrocornHandler(logging.Handler):
        """Hands each record to ferrocorn's error log: the seed's keys
        (event, level, logger, pid, tid, timestamp), the traceback as one
        `exception` field, `extra` fields as keys."""

        def emit(self, record):
            try:
                message = record.getMessage()
                exception = None
                if record.exc_info and record.exc_info[0] is not None:
                    exception = _format_exc(record.exc_info)
                elif record.exc_text:
                    exception = record.exc_text
                extra = [(k, _extra_value(v)) for k, v in record.__dict__.items()
                         if k not in _LOG_RECORD_KEYS and not k.startswith("_")]
                _emit(record.levelno, record.name, message, exception,
                      record.stack_info, extra)
            except RecursionError:
                raise
            except Exception:
                self.handleError(record)

    return FerrocornHandler


class LineStream:
    """A text stream whose complete lines become error-log records of
    `logger` at `levelno` (wsgi.errors; sys.stdout and sys.stderr with
    capture_output). A partial line waits for its end, or flush()."""

    def __init__(self, logger, levelno):
        import threading
        self._logger = logger
        self._levelno = levelno
        self._local = threading.local()
        self.encoding = "utf-8"
        self.errors = "backslashreplace"

    def _pending(self):
        p = getattr(self._local, "pending", None)
        if p is None:
            p = self._local.pending = []
        return p

    def write(self, s):
        if isinstance(s, (bytes, bytearray)):
            s = bytes(s).decode("utf-8", "backslashreplace")
        if not isinstance(s, str):
            raise TypeError("write() argument must be str, not %s" % type(s).__name__)
        pending = self._pending()
        if "\n" not in s:
            pending.append(s)
            return len(s)
        lines = s.split("\n")
        lines[0] = "".join(pending) + lines[0]
        pending.clear()
        if lines[-1]:
            pending.append(lines[-1])
        for line in lines[:-1]:
            self._emit(line)
        return len(s)

    def writelines(self, seq):
        for s in seq:
            self.write(s)

    def flush(self):
        pending = self._pending()
        if pending:
            line = "".join(pending)
            pending.clear()
            self._emit(line)

    def _emit(self, line):
        line = line.rstrip("\r")
        if _emit is not None:
            _emit(self._levelno, self._logger, line)
        else:
            sys.__stderr__.write(line + "\n")

    def isatty(self):
        return False

    def writable(self):
        return True

    def readable(self):
        return False

    def fileno(self):
        raise OSError("this stream has no file descriptor (ferrocorn's error log)")


WSGI_ERRORS = LineStream("wsgi", 40)


def setup_logging(emit, level, capture_output):
    """Adds ferrocorn's handler to the root logger (once), sets the root
    logger's level, and with capture_output sends sys.stdout and
    sys.stderr to the error log."""
    global _emit
    import logging
    _emit = emit
    root = logging.getLogger()
    if not any(getattr(h, "_ferrocorn", False) for h in root.handlers):
        handler = _make_handler_class()()
        handler._ferrocorn = True
        root.addHandler(handler)
    root.setLevel(level)
    if capture_output:
        if not isinstance(sys.stdout, LineStream):
            sys.stdout = LineStream("stdout", 20)
        if not isinstance(sys.stderr, LineStream):
            sys.stderr = LineStream("stderr", 40)
