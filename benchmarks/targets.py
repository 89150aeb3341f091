"""The performance targets of SPEC §12 and issue 17, judged on the rows of one run.

Every target is a ratio measured in the same run (or an absolute figure where the target is one):
django_tq's row against the best peer of the same broker (Redis: Huey, Dramatiq, Celery;
RabbitMQ: Dramatiq, Celery — with and without publisher confirms; PostgreSQL: Procrastinate),
against a raw ceiling, or against its own results-off row. :func:`judge` returns one
:class:`Verdict` per target: what was measured, against whom, and whether it is met.
"""

# ruff: noqa: RUF001 (the multiplication sign is the report's ratio sign)
from __future__ import annotations

import dataclasses
from typing import Any

Row = dict[str, Any]
Rows = dict[str, Row]

BOTH = "issue 17, SPEC §12"
ISSUE = "issue 17"
SPEC = "SPEC §12"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Verdict:
    """One target judged on one run."""

    figure: str
    goal: str
    source: str
    measured: str
    met: bool | None  # None: not measured in this run


def number(row: Row | None, key: str) -> float | None:
    """Return ``row[key]`` if it is a measured figure, else None (missing, a status, a flag)."""
    value = row.get(key) if row else None
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _show(value: float, unit: str) -> str:
    if unit == "/s":
        return f"{value:,.0f}/s"
    if unit == " MiB":
        return f"{value:,.0f} MiB"
    return f"{value:.2f}{unit}"


def versus(
    figure: str,
    goal: str,
    source: str,
    ours: Row | None,
    others: list[Row | None],
    key: str,
    threshold: float,
    *,
    lower: bool = False,
    unit: str = "/s",
) -> Verdict:
    """Judge ``ours[key] / best(others)[key]`` against ``threshold`` (``≤`` if ``lower``)."""
    value = number(ours, key)
    candidates = [(v, row) for row in others if row and (v := number(row, key)) is not None]
    if value is None or not candidates:
        return Verdict(figure=figure, goal=goal, source=source, measured="—", met=None)
    pick = min if lower else max
    other, row = pick(candidates, key=lambda pair: pair[0])
    if not other:
        return Verdict(figure=figure, goal=goal, source=source, measured="—", met=None)
    r = value / other
    measured = f"{r:.2f}× {row['label']} ({_show(value, unit)} vs {_show(other, unit)})"
    met = r <= threshold if lower else r >= threshold
    return Verdict(figure=figure, goal=goal, source=source, measured=measured, met=met)


def absolute(
    figure: str,
    goal: str,
    source: str,
    row: Row | None,
    key: str,
    threshold: float,
    *,
    lower: bool = False,
    unit: str = "",
) -> Verdict:
    value = number(row, key)
    if value is None:
        return Verdict(figure=figure, goal=goal, source=source, measured="—", met=None)
    met = value <= threshold if lower else value >= threshold
    return Verdict(figure=figure, goal=goal, source=source, measured=_show(value, unit), met=met)


def peers(rows: Rows, broker: str, results: str = "") -> list[Row | None]:
    return [
        row
        for row in rows.values()
        if row["role"] == "peer" and row["broker"] == broker and row["results"] == results
    ]


def judge(rows: Rows) -> list[Verdict]:
    """Return the verdict of every target this benchmark can measure, and say which it cannot."""
    get = rows.get
    out = [
        versus(
            "enqueue, Redis",
            "≥ 1× the best Redis peer",
            BOTH,
            get("redis/tq"),
            peers(rows, "redis"),
            "enqueue_rate",
            1.0,
        ),
        versus(
            "enqueue, RabbitMQ, one by one (our confirms on)",
            "≥ 1.5× Celery (no confirms)",
            BOTH,
            get("amqp/tq"),
            [get("amqp/celery")],
            "enqueue_rate",
            1.5,
        ),
        versus(
            'enqueue, RabbitMQ, one by one, BROKER_CONFIRM="batch" (confirms read in the background)',
            "≥ 1.5× Celery (no confirms)",
            BOTH,
            get("amqp/tq/batch"),
            [get("amqp/celery")],
            "enqueue_rate",
            1.5,
        ),
        bulk_enqueue(rows),
        versus(
            "drain, Redis",
            "≥ 1.5× the best Redis peer",
            BOTH,
            get("redis/tq"),
            peers(rows, "redis"),
            "drain_rate",
            1.5,
        ),
        versus(
            "drain, RabbitMQ",
            "≥ 1.5× the best RabbitMQ peer (issue 17: Dramatiq)",
            BOTH,
            get("amqp/tq"),
            peers(rows, "amqp"),
            "drain_rate",
            1.5,
        ),
        versus(
            "drain, django:// PostgreSQL",
            "≥ 5× Procrastinate",
            SPEC,
            get("postgres/tq"),
            [get("postgres/procrastinate")],
            "drain_rate",
            5.0,
        ),
        versus(
            "drain, django:// PostgreSQL",
            "≥ 0.5× the raw SKIP LOCKED ceiling",
            BOTH,
            get("postgres/tq"),
            [get("postgres/raw-pg")],
            "drain_rate",
            0.5,
        ),
    ]
    for broker, name in (("redis", "Redis"), ("amqp", "RabbitMQ")):
        out.append(
            versus(
                f"drain, results on (django-db defaults), {name}",
                "≥ 10× Celery + django-celery-results",
                BOTH,
                get(f"{broker}/tq/results"),
                [get(f"{broker}/celery/results")],
                "drain_rate",
                10.0,
            )
        )
    for broker, name in (("redis", "Redis"), ("amqp", "RabbitMQ"), ("postgres", "django:// PG")):
        out.append(
            versus(
                f"drain, results on (django-db defaults), {name}",
                "≥ 0.5× our results-off drain",
                BOTH,
                get(f"{broker}/tq/results"),
                [get(f"{broker}/tq")],
                "drain_rate",
                0.5,
            )
        )
    out.append(
        versus(
            "drain, results in Redis (django-cache on django-redis)",
            "≥ 1× the best peer with Redis results",
            BOTH,
            get("redis/tq/results-redis"),
            peers(rows, "redis", "redis"),
            "drain_rate",
            1.0,
        )
    )
    for broker, name in (("redis", "Redis"), ("amqp", "RabbitMQ"), ("postgres", "django:// PG")):
        out.append(
            versus(
                f"enqueue, results on (django-db defaults), {name}",
                "≥ 0.7× our results-off enqueue",
                ISSUE,
                get(f"{broker}/tq/results"),
                [get(f"{broker}/tq")],
                "enqueue_rate",
                0.7,
            )
        )
    for broker, name, p50, p99 in (
        ("redis", "Redis", 1.0, 2.0),
        ("postgres", "django:// PG", 2.0, 4.0),
    ):
        out += [
            absolute(
                f"latency p50, {name}",
                f"≤ {p50:g} ms",
                BOTH,
                get(f"{broker}/tq"),
                "p50_ms",
                p50,
                lower=True,
                unit=" ms",
            ),
            absolute(
                f"latency p99, {name}",
                f"≤ {p99:g} ms",
                BOTH,
                get(f"{broker}/tq"),
                "p99_ms",
                p99,
                lower=True,
                unit=" ms",
            ),
        ]
    out.append(sqlite_drain(get("sqlite/tq")))
    for broker, name in (
        ("redis", "Redis"),
        ("amqp", "RabbitMQ"),
        ("postgres", "django:// PG"),
        ("sqlite", "django:// SQLite"),
    ):
        out.append(
            versus(
                f"drain with the metrics port on, {name}",
                "≥ 0.95× the same drain with it off",
                "issue 14",
                get(f"{broker}/tq/metrics"),
                [get(f"{broker}/tq")],
                "drain_rate",
                0.95,
            )
        )
    for broker, name in (("redis", "Redis"), ("amqp", "RabbitMQ")):
        out += [
            versus(
                f"worker RSS (sum), {name}",
                "≤ Dramatiq's",
                BOTH,
                get(f"{broker}/tq"),
                [get(f"{broker}/dramatiq")],
                "rss_mb",
                1.0,
                lower=True,
                unit=" MiB",
            ),
            versus(
                f"worker PSS (sum), {name}",
                "≤ 0.7× Celery",
                SPEC,
                get(f"{broker}/tq"),
                [get(f"{broker}/celery")],
                "pss_mb",
                0.7,
                lower=True,
                unit=" MiB",
            ),
        ]
    for row in rows.values():
        if row["role"] == "ours" and not row["results"]:
            out.append(
                absolute(
                    f"start→first task, {row['label']}",
                    "≤ 0.5 s",
                    BOTH,
                    row,
                    "start_to_first_s",
                    0.5,
                    lower=True,
                    unit=" s",
                )
            )
    out.append(
        Verdict(
            figure="100k / 1M backlog (claim p99, RSS), 1→2→4 processes, 1→10→100 queues, 30-minute soak",
            goal="claim p99 ≤ 10 ms; RSS flat",
            source="issue 17 part 6, SPEC §12",
            measured="not in this benchmark",
            met=None,
        )
    )
    return out


def bulk_enqueue(rows: Rows) -> Verdict:
    """django_tq's reusable publisher (confirms on) against Dramatiq at its default (none)."""
    return versus(
        "enqueue, RabbitMQ, bulk path (reusable publisher, our confirms on)",
        "≥ 1× Dramatiq",
        BOTH,
        rows.get("amqp/tq/bulk"),
        [rows.get("amqp/dramatiq")],
        "enqueue_rate",
        1.0,
    )


def sqlite_drain(row: Row | None) -> Verdict:
    goal = "≥ 500/s, no 'database is locked'"
    rate = number(row, "drain_rate")
    if row is None or rate is None:
        return Verdict(
            figure="drain, django:// SQLite", goal=goal, source=SPEC, measured="—", met=None
        )
    locked = row.get("db_locked_errors") or 0
    return Verdict(
        figure="drain, django:// SQLite",
        goal=goal,
        source=SPEC,
        measured=f"{rate:,.0f}/s, {locked} locked errors",
        met=rate >= 500 and not locked,
    )
