"""Server-side SVG charts for the dashboard: stacked bars and lines, no JavaScript.

Each chart is an ``<svg role="img">`` with a ``<title>`` and ``<desc>``, labelled axes, and a
``<title>`` tooltip on every bar and point; all text is escaped. Colours of the frame and text
come from the page (``currentColor`` and the admin's CSS variables), so dark mode works.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.utils.formats import number_format
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

WIDTH = 720
HEIGHT = 220
LEFT = 48  # room for the y tick labels and the y axis label
RIGHT = 12
TOP = 12
BOTTOM = 36  # room for the x tick labels
#: at most this many x tick labels; the others are left out (every bar keeps its tooltip)
MAX_X_LABELS = 8
Y_TICKS = 4


@dataclass(frozen=True, kw_only=True)
class Series:
    """One named row of values (``None``: no data there), drawn in ``colour``."""

    name: Any
    values: tuple[float | None, ...]
    colour: str


def nice_ceiling(value: float) -> float:
    """Return the smallest 1, 2, 2.5 or 5 times a power of ten that is at least ``value``."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude  # pragma: no cover - the loop always returns


def _number(value: float) -> str:
    return number_format(int(value) if float(value).is_integer() else round(value, 1))


def _frame(
    chart_id: str, title: Any, description: Any, y_label: Any, top: float, x_labels: Sequence[str]
) -> list[SafeString]:
    plot_height = HEIGHT - TOP - BOTTOM
    plot_width = WIDTH - LEFT - RIGHT
    parts = [
        format_html('<title id="{}-title">{}</title>', chart_id, title),
        format_html('<desc id="{}-desc">{}</desc>', chart_id, description),
    ]
    for tick in range(Y_TICKS + 1):
        value = top * tick / Y_TICKS
        y = TOP + plot_height - plot_height * tick / Y_TICKS
        parts.append(
            format_html(
                '<line class="tq-grid" x1="{}" y1="{}" x2="{}" y2="{}"/>'
                '<text class="tq-tick" x="{}" y="{}" text-anchor="end">{}</text>',
                LEFT,
                f"{y:.1f}",
                WIDTH - RIGHT,
                f"{y:.1f}",
                LEFT - 6,
                f"{y + 4:.1f}",
                _number(value),
            )
        )
    parts.append(
        format_html(
            '<text class="tq-axis" transform="translate(12 {}) rotate(-90)" '
            'text-anchor="middle">{}</text>',
            f"{TOP + plot_height / 2:.1f}",
            y_label,
        )
    )
    slot = plot_width / max(1, len(x_labels))
    every = max(1, math.ceil(len(x_labels) / MAX_X_LABELS))
    for index, label in enumerate(x_labels):
        if index % every:
            continue
        parts.append(
            format_html(
                '<text class="tq-tick" x="{}" y="{}" text-anchor="middle">{}</text>',
                f"{LEFT + slot * (index + 0.5):.1f}",
                HEIGHT - BOTTOM + 16,
                label,
            )
        )
    parts.append(
        format_html(
            '<line class="tq-baseline" x1="{}" y1="{}" x2="{}" y2="{}"/>',
            LEFT,
            TOP + plot_height,
            WIDTH - RIGHT,
            TOP + plot_height,
        )
    )
    return parts


def _svg(chart_id: str, parts: list[SafeString]) -> SafeString:
    return format_html(
        '<svg class="tq-chart" role="img" aria-labelledby="{0}-title {0}-desc" '
        'viewBox="0 0 {1} {2}" preserveAspectRatio="xMidYMid meet" '
        'xmlns="http://www.w3.org/2000/svg">{3}</svg>',
        chart_id,
        WIDTH,
        HEIGHT,
        format_html_join("", "{}", ((part,) for part in parts)),
    )


def bar_chart(
    *,
    key: str,
    title: Any,
    description: Any,
    y_label: Any,
    x_labels: Sequence[str],
    series: Sequence[Series],
) -> SafeString:
    """Return stacked bars, one per x label, the ``series`` stacked in order from the bottom.

    ``key`` makes the ids of the chart's title and description unique in the page.
    """
    chart_id = f"tq-chart-{key}"
    totals = [sum(row.values[index] or 0 for row in series) for index in range(len(x_labels))]
    top = nice_ceiling(max(totals, default=0))
    parts = _frame(chart_id, title, description, y_label, top, x_labels)
    plot_height = HEIGHT - TOP - BOTTOM
    slot = (WIDTH - LEFT - RIGHT) / max(1, len(x_labels))
    gap = min(2.0, slot * 0.2)
    for index, label in enumerate(x_labels):
        base: float = TOP + plot_height
        tooltip = ", ".join(f"{row.name}: {_number(row.values[index] or 0)}" for row in series)
        for row in series:
            value = row.values[index] or 0
            if not value:
                continue
            height = plot_height * value / top
            base -= height
            parts.append(
                format_html(
                    '<rect x="{}" y="{}" width="{}" height="{}" fill="{}">'
                    "<title>{} — {}</title></rect>",
                    f"{LEFT + slot * index + gap / 2:.2f}",
                    f"{base:.2f}",
                    f"{max(0.5, slot - gap):.2f}",
                    f"{height:.2f}",
                    row.colour,
                    label,
                    tooltip,
                )
            )
    return _svg(chart_id, parts)


def line_chart(
    *,
    key: str,
    title: Any,
    description: Any,
    y_label: Any,
    x_labels: Sequence[str],
    series: Sequence[Series],
) -> SafeString:
    """Return one line per series over the x labels; ``None`` values leave a gap in the line."""
    chart_id = f"tq-chart-{key}"
    values = [value for row in series for value in row.values if value is not None]
    top = nice_ceiling(max(values, default=0))
    parts = _frame(chart_id, title, description, y_label, top, x_labels)
    plot_height = HEIGHT - TOP - BOTTOM
    slot = (WIDTH - LEFT - RIGHT) / max(1, len(x_labels))
    points: list[SafeString] = []
    for row in series:
        runs: list[list[tuple[float, float]]] = [[]]
        for index, value in enumerate(row.values):
            if value is None:
                runs.append([])
                continue
            point = (LEFT + slot * (index + 0.5), TOP + plot_height - plot_height * value / top)
            runs[-1].append(point)
            points.append(
                format_html(
                    '<circle cx="{}" cy="{}" r="{}" fill="{}"><title>{} — {}: {}</title></circle>',
                    f"{point[0]:.2f}",
                    f"{point[1]:.2f}",
                    2.5 if len(row.values) <= 60 else 1.5,
                    row.colour,
                    x_labels[index],
                    row.name,
                    _number(value),
                )
            )
        parts.extend(
            format_html(
                '<polyline points="{}" fill="none" stroke="{}" stroke-width="2" '
                'stroke-linejoin="round"/>',
                " ".join(f"{x:.2f},{y:.2f}" for x, y in run),
                row.colour,
            )
            for run in runs
            if len(run) > 1
        )
    return _svg(chart_id, parts + points)  # points over the lines


def legend(series: Sequence[Series]) -> SafeString:
    """Return an HTML legend (colour swatch and name) for ``series``."""
    return format_html(
        '<ul class="tq-legend">{}</ul>',
        format_html_join(
            "",
            '<li><span class="tq-swatch" style="background:{}"></span>{}</li>',
            ((row.colour, row.name) for row in series),
        ),
    )
