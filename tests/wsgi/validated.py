"""A WSGI app for ferrocorn's end-to-end tests, wrapped in
wsgiref.validate.validator (a violation of PEP 3333 by the server raises
AssertionError, which the test finds in the error log), plus /broken/
endpoints that break the rules on purpose (not validated)."""
import hashlib
import json
import os
import threading
import time
from wsgiref.validate import validator

STATE = os.environ.get("FERROCORN_TEST_STATE", "/tmp")
local = threading.local()

ENVIRON_KEYS = [
    "REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "RAW_URI",
    "CONTENT_TYPE", "CONTENT_LENGTH", "SERVER_NAME", "SERVER_PORT",
    "SERVER_PROTOCOL", "REMOTE_ADDR", "REMOTE_PORT", "SERVER_SOFTWARE",
    "wsgi.url_scheme", "wsgi.multithread", "wsgi.multiprocess",
    "wsgi.run_once", "wsgi.input_terminated", "wsgi.version",
]


def note(name, text):
    with open(os.path.join(STATE, name), "a") as f:
        f.write(text + "\n")


class Closing:
    """An iterable that records its close() calls."""

    def __init__(self, name, items, wait_for=None, fail_after=None):
        self.name = name
        self.items = items
        self.wait_for = wait_for
        self.fail_after = fail_after

    def __iter__(self):
        for i, item in enumerate(self.items):
            if self.fail_after is not None and i == self.fail_after:
                raise RuntimeError("failed while streaming")
            if i == 1 and self.wait_for:
                # The first chunk must reach the client before this one is
                # made: the test creates the file once it has read it.
                deadline = time.monotonic() + 10
                while not os.path.exists(self.wait_for) and time.monotonic() < deadline:
                    time.sleep(0.01)
                item = b"second:" + (b"seen" if os.path.exists(self.wait_for) else b"timeout")
            yield item

    def close(self):
        note(self.name, "closed")


class ListBacked:
    """Iterates a list, as Django's HttpResponse does; records close()."""

    def __init__(self, name, items):
        self.name = name
        self.items = items

    def __iter__(self):
        return iter(self.items)

    def close(self):
        note(self.name, "closed")


def read_in(inp, size):
    out = b""
    while True:
        b = inp.read(size)
        if not b:
            return out
        out += b


def read_body(environ, how):
    inp = environ["wsgi.input"]
    raw = getattr(inp, "input", inp)  # the validator's wrapper allows read(n) only
    if how == "read":
        return raw.read()
    if how == "readn":
        return read_in(inp, 1000)
    if how == "readbig":
        # Reads larger than what one wait brings: pieces joined.
        return read_in(inp, 100_000)
    if how == "readline":
        out = b""
        while True:
            line = inp.readline()
            if not line:
                return out
            out += line
    if how == "readlinen":
        out = b""
        while True:
            line = inp.readline(7)
            if not line:
                return out
            assert len(line) <= 7
            out += line
    if how == "readlines":
        return b"".join(inp.readlines())
    if how == "iter":
        return b"".join(iter(inp))
    raise ValueError(how)


def app(environ, start_response):
    path = environ["PATH_INFO"]
    text = [("Content-Type", "text/plain")]
    if path == "/healthz":
        start_response("200 OK", text)
        return [b"ok"]
    if path.startswith("/environ"):
        out = {k: environ.get(k) for k in ENVIRON_KEYS}
        out["headers"] = {k: v for k, v in environ.items() if k.startswith("HTTP_")}
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(out).encode()]
    if path == "/echo":
        how = environ["QUERY_STRING"] or "readn"
        body = read_body(environ, how)
        after = environ["wsgi.input"].read(10)
        start_response("200 OK", text)
        return [b"%d %s %d" % (len(body), hashlib.sha256(body).hexdigest().encode(), len(after))]
    if path == "/local":
        local.n = getattr(local, "n", 0) + 1
        start_response("200 OK", text)
        return [b"%d %d" % (local.n, threading.get_ident())]
    if path == "/stream":
        start_response("200 OK", text)
        return Closing("stream", [b"first", b"", b"x"], wait_for=environ["QUERY_STRING"])
    if path == "/closing":
        start_response("200 OK", text)
        return Closing("closing", [b"a" * 1000] * 3)
    if path == "/big":
        start_response("200 OK", text)
        return Closing("big", [b"z" * 65536] * 200)
    if path == "/list":
        start_response("200 OK", text)
        return [b"one ", b"two ", b"three"]
    if path == "/listbacked":
        start_response("200 OK", text)
        return ListBacked("listbacked", [b"one ", b"", b"two"])
    if path == "/write":
        write = start_response("200 OK", text)
        write(b"written ")
        return Closing("write", [b"then iterated"])
    if path == "/reason":
        start_response("299 My Own Reason", text)
        return [b""]
    if path == "/hop":
        start_response("200 OK", text + [
            ("Connection", "keep-alive"), ("Keep-Alive", "timeout=5"),
            ("Transfer-Encoding", "chunked"), ("Server", "app"),
            ("Upgrade", "h2c"), ("X-Kept", "yes"),
        ])
        return [b"hop"]
    if path == "/exc_info":
        start_response("200 OK", text)
        try:
            raise KeyError("changed my mind")
        except KeyError:
            import sys
            start_response("503 Changed Mind", text, sys.exc_info())
        return [b"sorry"]
    if path == "/file":
        f = open(os.path.join(STATE, "file.bin"), "rb")
        f.seek(int(environ["QUERY_STRING"] or 0))
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](f, 32768)
    if path == "/head":
        start_response("200 OK", text)
        return Closing("head", [b"body of a HEAD"])
    start_response("404 Not Found", text)
    return [b"not found"]


validated = validator(app)


def broken(environ, start_response):
    path = environ["PATH_INFO"]
    text = [("Content-Type", "text/plain")]
    if path == "/broken/before":
        raise ValueError("raised before the first byte")
    if path == "/broken/after":
        start_response("200 OK", text)
        return Closing("after", [b"partial", b"never"], fail_after=1)
    if path == "/broken/header":
        start_response("200 OK", [("X-Bad", "a\r\nInjected: 1")])
        return [b"no"]
    if path == "/broken/name":
        start_response("200 OK", [("Bad Name", "v")])
        return [b"no"]
    if path == "/broken/notbytes":
        start_response("200 OK", text)
        return Closing("notbytes", ["a str"])
    if path == "/broken/twice":
        start_response("200 OK", text)
        start_response("200 OK", text)
        return [b"no"]
    if path == "/broken/nostart":
        return [b"no start_response"]
    if path == "/broken/readpast":
        inp = environ["wsgi.input"]
        inp.read()
        start_response("200 OK", text)
        return [inp.read() + inp.read(5) + inp.readline()]
    if path == "/broken/disconnect":
        try:
            environ["wsgi.input"].read()
            note("disconnect", "read all")
        except OSError as e:
            note("disconnect", "OSError " + str(e))
        start_response("200 OK", text)
        return [b"late"]
    if path == "/broken/segfault":
        import ctypes
        ctypes.string_at(0)
    start_response("404 Not Found", text)
    return [b"not found"]


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path.startswith("/broken/"):
        return broken(environ, start_response)
    if path.startswith("/raw/"):
        # The same app unwrapped: the validator hides what the app returned
        # (a list, a wsgi.file_wrapper) behind its own iterator.
        environ["PATH_INFO"] = path[len("/raw"):]
        return app(environ, start_response)
    return validated(environ, start_response)
