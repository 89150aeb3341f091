"""Draw the panels of the Grafana dashboard into one PNG (used by ``scripts/render_dashboard``).

Runs every query of ``docs/grafana/django_tq.json`` as a range query against a Prometheus server
and plots it the way the dashboard's time-series panels show it, so a reader of
``docs/observability.md`` sees what the dashboard shows without a Grafana. Needs matplotlib (the
``docs`` extra).

    python -m scripts.lib.render_dashboard --prometheus http://127.0.0.1:9090 --minutes 15 \\
        --out docs/grafana/django_tq.png
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

from scripts.lib import dashboard

#: how each unit of the dashboard is shown on an axis: (label, divisor)
UNITS = {
    "ops": ("per second", 1.0),
    "s": ("seconds", 1.0),
    "bytes": ("MiB", 1024.0 * 1024.0),
    "short": ("", 1.0),
}


def render(
    board: dashboard.Dashboard,
    base_url: str,
    *,
    start: float,
    end: float,
    out: Path,
    columns: int = 2,
    points: int = 240,
) -> Path:
    """Plot every panel of ``board`` from ``start`` to ``end`` (Unix times) into ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    step = max(1.0, (end - start) / points)
    # a rate needs two samples in its window: at least four steps, as Grafana's $__rate_interval
    rate_interval = f"{max(4, math.ceil(4 * step))}s"
    rows = math.ceil(len(board.panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(7 * columns, 2.9 * rows), squeeze=False)
    for axis, panel in zip(axes.flat, board.panels, strict=False):
        label, divisor = UNITS.get(panel.unit, (panel.unit, 1.0))
        for target in panel.targets:
            promql = target.promql(rate_interval=rate_interval, **board.variables)
            for series in dashboard.query_range(base_url, promql, start=start, end=end, step=step):
                times, values = _points(series, start, divisor)
                axis.plot(times, values, linewidth=1.2, label=target.label(series["metric"]))
        axis.set_title(panel.title, fontsize=10, loc="left")
        axis.set_ylabel(label, fontsize=8)
        axis.tick_params(labelsize=7)
        axis.grid(True, linewidth=0.3, alpha=0.6)
        axis.set_xlim(0, end - start)
        values = [float(v) for line in axis.lines for v in line.get_ydata() if math.isfinite(v)]
        axis.set_ylim(0, max(values, default=0.0) * 1.15 or 1)
        if axis.lines:
            axis.legend(fontsize=6, loc="upper left", frameon=False, ncol=2)
        else:
            axis.text(0.5, 0.5, "no data", ha="center", va="center", transform=axis.transAxes)
    for axis in axes.flat[len(board.panels) :]:
        axis.set_visible(False)
    for axis in axes[-1]:
        axis.set_xlabel("seconds", fontsize=8)
    figure.suptitle(f"{board.title} — {time.strftime('%Y-%m-%d %H:%M', time.gmtime(end))} UTC")
    figure.tight_layout(rect=(0, 0, 1, 0.985))
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=90)
    plt.close(figure)
    return out


def _points(
    series: dict[str, Any], start: float, divisor: float
) -> tuple[list[float], list[float]]:
    times, values = [], []
    for at, raw in series["values"]:
        value = float(raw)
        times.append(float(at) - start)
        values.append(value / divisor if math.isfinite(value) else math.nan)
    return times, values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/render_dashboard", description=__doc__)
    parser.add_argument("--prometheus", required=True, help="base URL of a Prometheus server")
    parser.add_argument("--minutes", type=float, default=15, help="the last M minutes (15)")
    parser.add_argument("--start", type=float, help="Unix time to start at (instead of --minutes)")
    parser.add_argument("--end", type=float, help="Unix time to end at (default now)")
    parser.add_argument("--dashboard", type=Path, default=dashboard.DASHBOARD)
    parser.add_argument("--out", type=Path, default=Path("dashboard.png"))
    args = parser.parse_args(argv)
    end = args.end or time.time()
    start = args.start or end - args.minutes * 60
    if start >= end:
        parser.error("--start must be before --end")
    out = render(
        dashboard.load(args.dashboard), args.prometheus, start=start, end=end, out=args.out
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
