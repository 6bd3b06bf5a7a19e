"""Builds deploy/grafana/ferrocorn.json with grafana-foundation-sdk.

    python deploy/grafana/build.py            # rewrite ferrocorn.json
    python deploy/grafana/build.py --check    # exit 1 if ferrocorn.json differs

The metric names are ferrocorn's defaults (`prefix = "gunicorn"`, the seed's
names). Every query is evaluated by a real Prometheus scraping a real
ferrocorn in tests/tests/deploy.rs (deploy/check.py dashboard-queries).
"""

import itertools
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus
from grafana_foundation_sdk.builders import timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    VariableRefresh,
    VariableSort,
)

OUT = Path(__file__).with_name("ferrocorn.json")
DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
SEL = 'job="$job", instance=~"$instance"'
IDS = itertools.count(1)


def query(expr, legend, ref):
    return (
        prometheus.Dataquery()
        .expr(expr)
        .legend_format(legend)
        .ref_id(ref)
        .range()
        .datasource(DS)
    )


def panel(title, description, unit, targets, width=12, height=8, stack=False):
    p = (
        timeseries.Panel()
        .id(next(IDS))
        .title(title)
        .description(description)
        .datasource(DS)
        .unit(unit)
        .span(width)
        .height(height)
        .min(0)
        .fill_opacity(10)
        .legend(
            common_b.VizLegendOptions()
            .show_legend(True)
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM)
            .calcs(["lastNotNull", "max"])
        )
    )
    if stack:
        p = p.stacking(common_b.StackingConfig().mode(common.StackingMode.NORMAL))
    for i, (expr, legend) in enumerate(targets):
        p = p.with_target(query(expr, legend, chr(ord("A") + i)))
    return p


def row(title):
    return dash.Row(title).id(next(IDS))


def quantiles(metric, by=""):
    sel = f"{metric}_bucket{{{SEL}}}"
    extra = f", {by}" if by else ""
    return [
        (
            f"histogram_quantile({q}, sum by (le{extra}) (rate({sel}[$__rate_interval])))",
            f"p{int(q * 100)}" + (f" {{{{{by}}}}}" if by else ""),
        )
        for q in (0.5, 0.9, 0.99)
    ]


def build():
    d = (
        dash.Dashboard("ferrocorn")
        .uid("ferrocorn")
        .description(
            "ferrocorn: the listen backlog (the autoscaling signal), workers, requests"
        )
        .tags(["ferrocorn", "gunicorn"])
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("browser")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .with_variable(
            dash.DatasourceVariable("datasource").label("Data source").type("prometheus")
        )
        .with_variable(
            dash.QueryVariable("job")
            .label("job")
            .datasource(DS)
            .query("label_values(gunicorn_workers, job)")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_ASC)
        )
        .with_variable(
            dash.QueryVariable("instance")
            .label("instance")
            .datasource(DS)
            .query('label_values(gunicorn_workers{job="$job"}, instance)')
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
    )

    d = d.with_row(row("Listen backlog: the autoscaling signal"))
    d = d.with_panel(
        panel(
            "Listen queue per listener",
            "Connections waiting for accept() at scrape time "
            "(gunicorn_pending_connections), and the highest length sampled "
            "between two scrapes (_peak). The HPA scales on the first.",
            "short",
            [
                (
                    f"sum by (instance, listener) (gunicorn_pending_connections{{{SEL}}})",
                    "{{instance}} {{listener}}",
                ),
                (
                    f"max by (instance, listener) (gunicorn_pending_connections_peak{{{SEL}}})",
                    "peak {{instance}} {{listener}}",
                ),
            ],
        )
    )
    d = d.with_panel(
        panel(
            "Listen queue fill",
            "Queue length over its capacity (backlog, clamped by "
            "net.core.somaxconn). Connections past 100% are dropped.",
            "percentunit",
            [
                (
                    f"max by (instance, listener) (gunicorn_pending_connections{{{SEL}}}"
                    f" / gunicorn_listen_backlog{{{SEL}}})",
                    "{{instance}} {{listener}}",
                )
            ],
        )
    )
    d = d.with_panel(
        panel(
            "Accept-queue wait",
            "How long connections waited in the listen queue "
            "(gunicorn_accept_queue_wait_seconds; empty until ferrocorn exports it).",
            "s",
            quantiles("gunicorn_accept_queue_wait_seconds"),
            width=24,
        )
    )

    d = d.with_row(row("Workers"))
    d = d.with_panel(
        panel(
            "Connections per worker",
            "Connections each worker holds, against worker_connections. "
            "At the maximum on every worker, new connections queue.",
            "short",
            [
                (
                    f"gunicorn_active_worker_connections{{{SEL}}}",
                    "{{instance}} pid {{pid}}",
                ),
                (
                    f"max by (instance) (gunicorn_max_worker_connections{{{SEL}}})",
                    "max {{instance}}",
                ),
            ],
        )
    )
    d = d.with_panel(
        panel(
            "Busy threads per worker",
            "Pool threads running a request, against threads.",
            "short",
            [
                (
                    f"gunicorn_active_worker_threads{{{SEL}}}",
                    "{{instance}} pid {{pid}}",
                ),
                (
                    f"max by (instance) (gunicorn_max_worker_threads{{{SEL}}})",
                    "max {{instance}}",
                ),
            ],
        )
    )
    d = d.with_panel(
        panel(
            "Requests waiting in workers",
            "Requests read and not yet answered, per worker.",
            "short",
            [(f"gunicorn_pending_requests{{{SEL}}}", "{{instance}} pid {{pid}}")],
        )
    )
    d = d.with_panel(
        panel(
            "Workers alive and wanted",
            "Worker processes alive, and the number wanted (workers, TTIN/TTOU).",
            "short",
            [
                (f"gunicorn_workers{{{SEL}}}", "alive {{instance}}"),
                (f"gunicorn_workers_target{{{SEL}}}", "wanted {{instance}}"),
            ],
        )
    )
    d = d.with_panel(
        panel(
            "Worker restarts by reason",
            "Workers replaced after an unexpected exit; timeout = killed for "
            "making no progress within `timeout`.",
            "short",
            [
                (
                    f"sum by (reason) (increase(gunicorn_worker_restarts_total{{{SEL}}}[$__rate_interval]))",
                    "{{reason}}",
                )
            ],
            width=24,
            stack=True,
        )
    )

    d = d.with_row(row("Requests"))
    d = d.with_panel(
        panel(
            "Requests by status",
            "Requests answered per second, by status.",
            "reqps",
            [
                (
                    f"sum by (status) (rate(gunicorn_requests_total{{{SEL}}}[$__rate_interval]))",
                    "{{status}}",
                )
            ],
            stack=True,
        )
    )
    d = d.with_panel(
        panel(
            "5xx ratio",
            "Share of requests answered with a 5xx status.",
            "percentunit",
            [
                (
                    f'sum(rate(gunicorn_requests_total{{{SEL}, status=~"5.."}}[$__rate_interval]))'
                    f" / sum(rate(gunicorn_requests_total{{{SEL}}}[$__rate_interval]))",
                    "5xx",
                )
            ],
        )
    )
    d = d.with_panel(
        panel(
            "Request duration",
            "Quantiles of the time to answer a request, from the histogram "
            "gunicorn_request_duration_seconds (interpolated within buckets).",
            "s",
            quantiles("gunicorn_request_duration_seconds"),
        )
    )
    d = d.with_panel(
        panel(
            "Request duration by method (p99)",
            "99th percentile of the time to answer, per method.",
            "s",
            [
                (
                    "histogram_quantile(0.99, sum by (le, method) "
                    f"(rate(gunicorn_request_duration_seconds_bucket{{{SEL}}}[$__rate_interval])))",
                    "{{method}}",
                )
            ],
        )
    )

    d = d.with_row(row("Python apps"))
    d = d.with_panel(
        panel(
            "GIL wait",
            "How long pool threads waited for the GIL before calling a Python "
            "app (gunicorn_python_gil_wait_seconds; empty for Rust apps and "
            "until ferrocorn exports it).",
            "s",
            quantiles("gunicorn_python_gil_wait_seconds"),
            width=24,
        )
    )
    return d.build()


def render():
    return json.dumps(build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv[1:]:
        if OUT.read_text() != text:
            print(f"{OUT} is not what build.py makes: run python {sys.argv[0]}")
            sys.exit(1)
    else:
        OUT.write_text(text)
