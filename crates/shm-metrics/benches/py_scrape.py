"""Times prometheus_client's MultiProcessCollector + generate_latest on DIR.
Usage: py_scrape.py DIR ITERATIONS; prints seconds per scrape, wall clock
and CPU time of the thread."""
import sys
import time

from prometheus_client import CollectorRegistry, generate_latest, multiprocess

registry = CollectorRegistry()
multiprocess.MultiProcessCollector(registry, path=sys.argv[1])
generate_latest(registry)
n = int(sys.argv[2])
start = time.perf_counter()
cpu = time.thread_time()
for _ in range(n):
    generate_latest(registry)
print((time.perf_counter() - start) / n, (time.thread_time() - cpu) / n)
