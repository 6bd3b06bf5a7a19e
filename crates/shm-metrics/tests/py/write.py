"""Writes every metric type and gauge mode in multiprocess mode, the same
series as tests/common/mod.rs's `write_everything`. Usage: write.py INDEX
(PROMETHEUS_MULTIPROC_DIR must be set). With FC_PY_ID set, files are named
by that id (prometheus_client's `process_identifier`) instead of the pid."""
import os
import sys

from prometheus_client import Counter, Gauge, Histogram, Summary, values

if os.environ.get('FC_PY_ID'):
    values.ValueClass = values.MultiProcessValue(lambda: os.environ['FC_PY_ID'])

i = int(sys.argv[1])
MODES = ['all', 'liveall', 'min', 'livemin', 'max', 'livemax', 'sum', 'livesum', 'mostrecent', 'livemostrecent']
VALUES = ['plain', 'q"uote', 'back\\slash', 'new\nline', '\u00fcn\u00ef\U0001F600', '']

c = Counter('fc_requests', 'Requests "served" \\ with\nnewline \u00fc', ['method', 'label'])
for j, v in enumerate(VALUES):
    c.labels('GET', v).inc(j + i + 0.5)
Counter('fc_plain_total', 'No labels.').inc(i + 1)
for mode in MODES:
    g = Gauge('fc_gauge_' + mode, 'Gauge ' + mode + '.', ['kind'], multiprocess_mode=mode)
    g.labels('a"b').set(i * 10 - 3.5)
    g.labels('x\ny').set(1e6 * (i + 1))
Gauge('fc_worker_conns', 'Seed style.', ['pid'], multiprocess_mode='liveall').labels(str(os.getpid())).set(i + 7)
h = Histogram('fc_latency_seconds', 'Latency.', ['route'], buckets=[0.001, 0.5, 1, 2.5, 1e6, float('inf')])
for v in [0.0005, 0.3, 1, 2, 3, 5e5, 2e6]:
    h.labels('/a"b').observe(v * (i + 1))
Histogram('fc_default_hist', 'Default buckets.').observe(0.2 * i)
Summary('fc_size_bytes', 'Sizes.', ['k']).labels('z').observe(100 * i + 0.25)
