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
