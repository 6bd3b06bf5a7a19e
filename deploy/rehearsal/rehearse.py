"""An autoscaling rehearsal on loopback: the HPA of deploy/kubernetes/hpa.yaml
acting on the backlog that a real Prometheus reads from real ferrocorn
replicas, with the load stepped up.

    python deploy/rehearsal/rehearse.py --ferrocorn target/release/ferrocorn

- Starts one replica (a ferrocorn on its own port, metrics on another) and a
  Prometheus (1 s scrape) that finds the replicas through a file_sd file,
  each labelled as Kubernetes would label a pod (namespace, pod).
- Offers open-loop load (requests started at a fixed rate whatever the
  answers do) in steps, spread round-robin over the replicas that answer.
  Each request is `GET /delay/MS` of the built-in app: a replica of W
  workers x T threads serves at most W x T / (MS/1000) requests/s.
- Every `--sync` seconds (the HPA's sync period, 15 s by default in
  Kubernetes, shortened here) reads the adapter's query of
  deploy/kubernetes/prometheus-adapter.yaml for every replica, and applies
  the HPA's formula: desired = ceil(replicas x average / target), ignored
  within the 10% tolerance, at most doubling (the scaleUp policy), between
  minReplicas 1 and --max-replicas. It never scales down: the HPA's
  scale-down stabilization (300 s) is longer than the rehearsal.
- Records each second: offered load, replicas, the backlog Prometheus sees,
  and the p99 latency of the requests started in that second (measured from
  the moment each was due, so a late start counts). Writes a Markdown table
  and a PNG plot (matplotlib: deploy/rehearsal/requirements.txt).

Bounded: --steps x --step-seconds plus a few seconds of start and stop.
"""

import argparse
import json
import math
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import check  # noqa: E402  (deploy/check.py: the kit's files, Prometheus client)

HERE = Path(__file__).resolve().parent


class Replica:
    def __init__(self, args, index, tmp):
        self.name = f"ferrocorn-{index}"
        self.port, self.mport = check.free_port(), check.free_port()
        env = check.ferrocorn_env(tmp / self.name)
        self.proc = subprocess.Popen(
            [args.ferrocorn, "-w", str(args.workers), "--threads", str(args.threads),
             "--worker-connections", str(args.threads), "-b", f"127.0.0.1:{self.port}",
             "--metrics-bind", "127.0.0.1", "--metrics-port", str(self.mport),
             "--metrics-update-seconds", "1", "--log-level", "warning"],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(tmp / f"{self.name}.log", "w"),
        )
        self.ready = False


def request(port, path, timeout):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        return int(data.split(b" ", 2)[1])
    finally:
        s.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ferrocorn", required=True)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--delay-ms", type=int, default=100)
    ap.add_argument("--rates", default="20,60,100,140", help="requests/s of each step")
    ap.add_argument("--step-seconds", type=int, default=25)
    ap.add_argument("--sync", type=float, default=5.0)
    ap.add_argument("--max-replicas", type=int, default=8)
    ap.add_argument("--out", default=str(HERE))
    args = ap.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    _name, target = check.hpa_metric_name()
    target = float(target["averageValue"])
    rule = check.adapter_rule()
    per_replica = args.workers * args.threads * 1000 / args.delay_ms

    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        sd = tmp / "targets.json"
        sd.write_text("[]")
        pport = check.free_port()
        cfg = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "ferrocorn", "file_sd_configs": [{"files": [str(sd)]}]}],
        }
        check.write_yaml(tmp / "prometheus.yml", cfg)
        prom = subprocess.Popen(
            ["prometheus", f"--config.file={tmp / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{pport}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(tmp / "prometheus.log", "w"),
        )
        p = check.Prometheus(f"http://127.0.0.1:{pport}")
        replicas = []
        lock = threading.Lock()

        def add_replica():
            r = Replica(args, len(replicas), tmp)
            replicas.append(r)
            sd.write_text(json.dumps([
                {"targets": [f"127.0.0.1:{x.mport}"], "labels": {"namespace": "rehearsal", "pod": x.name}}
                for x in replicas
            ]))

        def watch_ready():
            while not stop.is_set():
                for r in list(replicas):
                    if not r.ready:
                        try:
                            if request(r.port, "/healthz", 1) == 200:
                                with lock:
                                    r.ready = True
                        except OSError:
                            pass
                time.sleep(0.1)

        stop = threading.Event()
        samples = []  # (due, latency or None, status)
        jobs = queue.Queue()
        rr = [0]

        def client():
            while True:
                due = jobs.get()
                if due is None:
                    return
                with lock:
                    ready = [r for r in replicas if r.ready]
                    r = ready[rr[0] % len(ready)]
                    rr[0] += 1
                try:
                    status = request(r.port, f"/delay/{args.delay_ms}", 30)
                except OSError:
                    status = None
                samples.append((due, time.monotonic() - due, status))

        try:
            add_replica()
            threading.Thread(target=watch_ready, daemon=True).start()
            check.wait_for(30, "Prometheus", lambda: p.get("/api/v1/status/buildinfo"))
            check.wait_for(30, "replica 0", lambda: replicas[0].ready)
            clients = [threading.Thread(target=client, daemon=True) for _ in range(400)]
            for c in clients:
                c.start()

            t0 = time.monotonic()
            end = t0 + len(rates) * args.step_seconds
            rows = []
            events = []

            def autoscale():
                next_sync = t0 + args.sync
                while not stop.is_set() and time.monotonic() < end:
                    now = time.monotonic()
                    with lock:
                        n = len(replicas)
                        names = "|".join(r.name for r in replicas)
                    backlog = p.query('sum(gunicorn_pending_connections{job="ferrocorn"})')
                    backlog = float(backlog[0]["value"][1]) if backlog else 0.0
                    per_pod = {
                        x["metric"]["pod"]: float(x["value"][1])
                        for x in p.query(check.adapter_query(
                            rule, f'namespace="rehearsal",pod=~"{names}"', "pod"))
                    }
                    # A pod without a value yet counts as 0 (the HPA's
                    # conservative choice when scaling up).
                    avg = sum(per_pod.values()) / n
                    rows.append((now - t0, n, sum(r.ready for r in replicas), backlog, avg))
                    if now >= next_sync:
                        next_sync += args.sync
                        ratio = avg / target
                        if ratio > 1.1:
                            desired = min(math.ceil(n * ratio), 2 * n, args.max_replicas)
                            if desired > n:
                                events.append((now - t0, n, desired, avg))
                                print(f"{now - t0:6.1f} s: average backlog {avg:.1f} per pod, "
                                      f"target {target:g}: {n} -> {desired} replicas", flush=True)
                                for _ in range(desired - n):
                                    add_replica()
                    time.sleep(max(0.0, 1.0 - (time.monotonic() - now)))

            scaler = threading.Thread(target=autoscale)
            scaler.start()
            # Open-loop arrivals: request i of a step is due at a fixed time.
            for step, rate in enumerate(rates):
                start = t0 + step * args.step_seconds
                print(f"{start - t0:6.1f} s: offering {rate:g} requests/s "
                      f"(a replica serves at most {per_replica:g})", flush=True)
                k = 0
                while (due := start + k / rate) < start + args.step_seconds:
                    delay = due - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    jobs.put(due)
                    k += 1
            scaler.join()
            for _ in clients:
                jobs.put(None)
            for c in clients:
                c.join(35)
        finally:
            stop.set()
            for r in replicas:
                check.stop(r.proc)
            check.stop(prom)

    report(args, rates, per_replica, target, t0, rows, samples, events)
    return 0


def p99(values):
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, math.ceil(0.99 * len(v)) - 1)]


def report(args, rates, per_replica, target, t0, rows, samples, events):
    out = Path(args.out)
    by_second = {}
    for due, lat, status in samples:
        by_second.setdefault(int(due - t0), []).append((lat, status))
    lines = [
        "# Autoscaling rehearsal",
        "",
        f"`python deploy/rehearsal/rehearse.py --ferrocorn {args.ferrocorn}`: each replica "
        f"`-w {args.workers} --threads {args.threads} --worker-connections {args.threads}`, "
        f"requests `GET /delay/{args.delay_ms}` (at most {per_replica:g} requests/s per replica), "
        f"open-loop load {', '.join(f'{r:g}' for r in rates)} requests/s for {args.step_seconds} s each, "
        f"HPA formula every {args.sync:g} s with the target of hpa.yaml ({target:g} queued "
        f"connections per pod) on the prometheus-adapter query, read from a real Prometheus.",
        "",
        "Scale-ups:",
        "",
    ]
    lines += [f"- at {t:.0f} s: average backlog {a:.1f} per pod: {n} -> {d} replicas" for t, n, d, a in events]
    lines += ["", "| s | offered req/s | replicas (ready) | backlog (sum) | adapter avg/pod | done | errors | p99 ms |",
              "|---|---|---|---|---|---|---|---|"]
    xs, reps, backlogs, p99s, offered = [], [], [], [], []
    for t, n, ready, backlog, avg in rows:
        s = int(t)
        got = by_second.get(s, [])
        lat = [x for x, st in got if st == 200]
        errors = sum(1 for _x, st in got if st != 200)
        rate = rates[min(len(rates) - 1, s // args.step_seconds)]
        q = p99(lat) * 1000
        xs.append(t)
        reps.append(n)
        backlogs.append(backlog)
        p99s.append(q)
        offered.append(rate)
        if s % 2 == 0:
            lines.append(f"| {t:.0f} | {rate:g} | {n} ({ready}) | {backlog:.0f} | {avg:.1f} | {len(got)} | {errors} | {q:.0f} |")
    (out / "RESULTS.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    ax[0].step(xs, offered, where="post", label="offered req/s")
    ax[0].step(xs, [r * per_replica for r in reps], where="post", label="capacity of the replicas, req/s")
    ax[0].set_ylabel("requests/s")
    ax[0].legend(loc="upper left")
    ax2 = ax[0].twinx()
    ax2.step(xs, reps, where="post", color="black", label="replicas")
    ax2.set_ylabel("replicas")
    ax2.legend(loc="lower right")
    ax[1].plot(xs, backlogs, color="tab:red")
    ax[1].set_ylabel("listen backlog\n(sum, Prometheus)")
    ax[2].plot(xs, p99s, color="tab:purple")
    ax[2].set_ylabel("p99 latency, ms")
    ax[2].set_yscale("log")
    ax[2].set_xlabel("seconds")
    fig.suptitle("ferrocorn: HPA formula on the listen backlog (loopback rehearsal)")
    fig.tight_layout()
    fig.savefig(out / "rehearsal.png", dpi=80)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
