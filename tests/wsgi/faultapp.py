"""The WSGI app of tests/tests/wsgi_faults.rs: faults under load with Python.

GET /            "VERSION pid" (the test rewrites VERSION between HUPs)
GET /sleep/MS    sleeps MS ms, noting its start in $FERROCORN_TEST_STATE/started
GET /raise       raises RuntimeError before start_response (the server's 500)
GET /stuck       blocks forever (noted in $FERROCORN_TEST_STATE/stuck)
GET /leak/KB     keeps KB KiB more for as long as the process lives
"""
import os
import threading
import time

VERSION = "v0"

LEAKED = []
NEVER = threading.Event()
STATE = os.environ.get("FERROCORN_TEST_STATE", "")


def note(name, line):
    if STATE:
        with open(os.path.join(STATE, name), "a") as f:
            f.write(line + "\n")


def answer(start_response, text):
    body = text.encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path.startswith("/sleep/"):
        note("started", str(os.getpid()))
        time.sleep(int(path[len("/sleep/"):]) / 1000)
        return answer(start_response, "slept")
    if path == "/raise":
        raise RuntimeError("an app exception on purpose")
    if path == "/stuck":
        note("stuck", "%d %d" % (os.getpid(), threading.get_ident()))
        NEVER.wait()
    if path.startswith("/leak/"):
        # Written, so that every page is resident (a calloc'd block is not).
        LEAKED.append(b"x" * (int(path[len("/leak/"):]) * 1024))
        return answer(start_response, "%d leaked" % len(LEAKED))
    return answer(start_response, "%s %d" % (VERSION, os.getpid()))
