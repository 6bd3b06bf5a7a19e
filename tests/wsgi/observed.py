"""The app of tests/tests/wsgi_observe.rs: its own prometheus_client
metrics (multiprocess mode, set up by ferrocorn), logging, and requests
that get stuck."""
import ctypes
import logging
import logging.config
import os
import socket
import sys
import threading
import time

from prometheus_client import Counter, Gauge, Histogram, Summary

MODES = ['all', 'liveall', 'min', 'livemin', 'max', 'livemax', 'sum', 'livesum',
         'mostrecent', 'livemostrecent']

HITS = Counter('app_hits', 'Hits of the app.', ['path'])
SIZES = Histogram('app_size', 'Sizes.', ['path'], buckets=[1, 10, 100])
TIMES = Summary('app_time_seconds', 'Times.')
GAUGES = {m: Gauge('app_gauge_' + m, 'Gauge in mode ' + m + '.', ['kind'], multiprocess_mode=m)
          for m in MODES}
# Created at import and never touched: still a series (0) in each worker.
IDLE = Counter('app_idle', 'Never incremented.')


# The app's own handler (as Django's LOGGING installs): kept, and the
# records still propagate to the root logger (ferrocorn's error log).
if os.environ.get('OBSERVED_LOG_FILE'):
    logging.config.dictConfig({
        'version': 1,
        'disable_existing_loggers': False,
        'formatters': {'mine': {'format': 'MINE %(levelname)s %(name)s %(message)s'}},
        'handlers': {'file': {'class': 'logging.FileHandler', 'formatter': 'mine',
                              'filename': os.environ['OBSERVED_LOG_FILE']}},
        'loggers': {'observed.own': {'handlers': ['file'], 'level': 'INFO'}},
    })

log = logging.getLogger('observed.views')


def _text(start_response, body, status='200 OK'):
    body = body.encode()
    start_response(status, [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
    return [body]


def divide_by_zero():
    return 1 / 0


def sleepy_function():
    time.sleep(60)


def busy_python_loop():
    deadline = time.monotonic() + 60
    n = 0
    while time.monotonic() < deadline:
        n += 1
    return n


def waits_for_a_socket():
    a, b = socket.socketpair()
    try:
        return a.recv(1)
    finally:
        a.close()
        b.close()


def holds_the_gil_in_c():
    # ctypes.PyDLL keeps the GIL during the foreign call.
    ctypes.PyDLL(None).sleep(30)


def slow_generator():
    yield b'first '
    time.sleep(60)
    yield b'never'


STUCK = {
    '/stuck/sleep': sleepy_function,
    '/stuck/busy': busy_python_loop,
    '/stuck/socket': waits_for_a_socket,
    '/stuck/cgil': holds_the_gil_in_c,
}


def application(environ, start_response):
    path = environ['PATH_INFO']
    if path == '/healthz':
        return _text(start_response, 'ok')
    if path == '/pid':
        return _text(start_response, str(os.getpid()))
    if path == '/stuck/generator':
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return slow_generator()
    if path == '/log/warning':
        log.warning('hello %s', 'world', extra={'user_id': 42, 'ratio': 0.5, 'flag': True,
                                                'who': 'a "quoted" name', 'obj': [1, 2]})
        return _text(start_response, str(threading.get_ident()))
    if path == '/log/exception':
        try:
            divide_by_zero()
        except ZeroDivisionError:
            log.exception('it failed')
        return _text(start_response, str(threading.get_ident()))
    if path == '/log/debug':
        log.debug('a debug record')
        log.info('an info record')
        return _text(start_response, 'ok')
    if path == '/log/own':
        logging.getLogger('observed.own').info('to my own file too')
        return _text(start_response, 'ok')
    if path == '/errors':
        errors = environ['wsgi.errors']
        errors.write('first line\nsecond ')
        errors.write('line\n')
        errors.writelines(['third', ' line\n'])
        errors.flush()
        return _text(start_response, 'ok')
    if path == '/print':
        print('printed out')
        print('printed to stderr', file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        return _text(start_response, 'ok')
    if path in STUCK:
        STUCK[path]()
        return _text(start_response, 'unstuck')
    if path.startswith('/hit/'):
        n = int(path[len('/hit/'):])
        HITS.labels(path='/hit').inc()
        SIZES.labels(path='/hit').observe(n)
        TIMES.observe(n / 1000)
        for m, g in GAUGES.items():
            g.labels(kind='n').set(n)
            if 'mostrecent' in m:
                g.labels(kind='one').set(1)
            else:
                g.labels(kind='one').inc()
        return _text(start_response, str(os.getpid()))
    return _text(start_response, 'not found', '404 Not Found')
