"""The report of a run: one table section per broker with django_tq's row, its peers' and the raw
ceilings', then ratio rows against the best peer of that broker (per column: the best value any
peer reached, and who reached it) and against each ceiling; the results tables; problems; and
the SPEC §12 / issue 17 targets judged on this run (``benchmarks/targets.py``).
"""

from __future__ import annotations

from typing import Any

from benchmarks.systems import BROKER_TITLES
from benchmarks.targets import judge, number

Row = dict[str, Any]

COLUMNS = [
    ("enqueue /s", "enqueue_rate", ",.0f"),
    ("drain /s", "drain_rate", ",.0f"),
    ("drain /s from start", "drain_rate_from_start", ",.0f"),
    ("start→first s", "start_to_first_s", ".2f"),
    ("p50 ms", "p50_ms", ".2f"),
    ("p99 ms", "p99_ms", ".2f"),
    ("worker CPU µs/task", "worker_cpu_us", ",.0f"),
    ("server CPU µs/task", "service_cpu_us", ",.0f"),
    ("RSS MiB", "rss_mb", ",.0f"),
    ("PSS MiB", "pss_mb", ",.0f"),
]
HIGHER_IS_BETTER = {"enqueue_rate", "drain_rate", "drain_rate_from_start"}


def fmt(value: Any, spec: str = ",.0f") -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    return format(value, spec)


def ratio(a: Any, b: Any) -> str:
    if not isinstance(a, int | float) or not isinstance(b, int | float) or not b:
        return "—"
    return f"{a / b:.2f}×"  # noqa: RUF001


def cell(row: Row | None, key: str, spec: str = ",.0f") -> str:
    if row is None:
        return "—"
    if key in ("drain_rate", "drain_rate_from_start") and row.get("drain_status"):
        return row["drain_status"]
    if key in ("p50_ms", "p99_ms") and row.get("latency_status"):
        return "timeout"
    if row.get("error") and key not in row:
        return "error"
    return fmt(row.get(key), spec)


def best(rows: list[Row], key: str) -> Row | None:
    """Return the row with the best value of ``key`` (highest rate, lowest time or memory)."""
    measured = [row for row in rows if number(row, key) is not None]
    if not measured:
        return None
    pick = max if key in HIGHER_IS_BETTER else min
    return pick(measured, key=lambda row: number(row, key) or 0.0)


def table_row(label: str, cells: list[str]) -> str:
    return f"| {label} | " + " | ".join(cells) + " |"


def broker_section(rows: list[Row]) -> list[str]:
    """Rows of one broker (results off): ours, peers, ceilings, then the ratio rows."""
    out = [table_row(row["label"], [cell(row, k, s) for _, k, s in COLUMNS]) for row in rows]
    ours = next((row for row in rows if row["role"] == "ours"), None)
    if ours is None:
        return out
    peers = [row for row in rows if row["role"] == "peer"]
    if peers:
        cells = []
        for _, key, _ in COLUMNS:
            top = best(peers, key)
            cells.append(
                f"{ratio(number(ours, key), number(top, key))} {top['short']}" if top else "—"
            )
        out.append(table_row("*django_tq / best peer*", cells))
    for ceiling in (row for row in rows if row["role"] == "ceiling"):
        cells = [ratio(number(ours, key), number(ceiling, key)) for _, key, _ in COLUMNS]
        out.append(table_row(f"*django_tq / {ceiling['short']}*", cells))
    for variant in (row for row in rows if row["role"] == "variant"):
        cells = [ratio(number(variant, key), number(ours, key)) for _, key, _ in COLUMNS]
        out.append(table_row("*django_tq metrics port on / off*", cells))
    return out


def results_tables(rows: list[Row], by_key: dict[str, Row]) -> list[str]:
    out: list[str] = []
    db_rows = [row for row in rows if row["results"] == "db"]
    header = [
        "| system | N | enqueue /s | drain /s | drain /s from start |",
        "|---|---|---|---|---|",
    ]
    keys = ("enqueue_rate", "drain_rate", "drain_rate_from_start")

    def line(row: Row) -> str:
        return table_row(row["label"], [str(row["n"]), *(cell(row, k) for k in keys)])

    def ratios(label: str, a: Row | None, b: Row | None) -> str:
        return table_row(label, ["", *(ratio(number(a, k), number(b, k)) for k in keys)])

    if db_rows:
        out += [
            "",
            "Drain with results stored in PostgreSQL (django_tq's defaults: django-db, TRACK_ENQUEUED, TRACK_STARTED):",
            "",
            *header,
        ]
        for broker in BROKER_TITLES:
            tq = by_key.get(f"{broker}/tq/results")
            celery = by_key.get(f"{broker}/celery/results")
            out += [line(row) for row in (tq, celery) if row is not None]
            if tq is not None and celery is not None:
                out.append(ratios("*ratio django_tq / Celery*", tq, celery))
            if tq is not None and f"{broker}/tq" in by_key:
                out.append(ratios("*django_tq results on / off*", tq, by_key[f"{broker}/tq"]))
    redis_rows = [row for row in rows if row["results"] == "redis"]
    if redis_rows:
        out += [
            "",
            "Drain with results in Redis, Redis broker (django_tq: django-cache on django-redis, TRACK_* at their defaults):",
            "",
            *header,
            *(line(row) for row in redis_rows),
        ]
        ours = next((row for row in redis_rows if row["role"] == "ours"), None)
        peers = [row for row in redis_rows if row["role"] == "peer"]
        if ours is not None and peers:
            cells = [""]
            for key in keys:
                top = best(peers, key)
                cells.append(
                    f"{ratio(number(ours, key), number(top, key))} {top['short']}" if top else "—"
                )
            out.append(table_row("*django_tq / best peer*", cells))
    return out


def problems(rows: list[Row], skipped: list[tuple[str, str]]) -> list[str]:
    notes = []
    for row in rows:
        found = []
        if row.get("duplicates"):
            found.append(f"{row['duplicates']} duplicate deliveries")
        if row.get("db_locked_errors"):
            found.append(f"{row['db_locked_errors']} 'database is locked' errors")
        if row.get("worker_errors"):
            found.append(f"{row['worker_errors']} error lines in the worker log")
        if row.get("error"):
            found.append(f"error: {row['error']}")
        if row.get("rounds_failed"):
            found.append(
                f"{row['rounds_failed']} of {row['rounds']} rounds failed (median of the rest)"
            )
        if row.get("other_load_cores", 0) > 0.25:
            found.append(
                f"other processes used {row['other_load_cores']:.2f} cores during the drain (figures disturbed)"
            )
        if row.get("stop") == "killed":
            found.append("worker did not stop within 15 s of SIGTERM (killed)")
        if found:
            notes.append(f"* {row['label']}: " + "; ".join(found))
    notes += [f"* skipped {label}: {reason}" for label, reason in skipped]
    return notes


def targets_table(by_key: dict[str, Row]) -> list[str]:
    out = [
        "Targets (issue 17 and SPEC §12), judged on this run:",
        "",
        "| figure | target | source | this run | verdict |",
        "|---|---|---|---|---|",
    ]
    absent = []
    for verdict in judge(by_key):
        if verdict.measured == "—":  # a row it needs was not in this run (or failed)
            absent.append(verdict.figure)
            continue
        word = {True: "met", False: "**MISSED**", None: "not measured"}[verdict.met]
        out.append(
            f"| {verdict.figure} | {verdict.goal} | {verdict.source} | {verdict.measured} | {word} |"
        )
    if absent:
        missing = "; ".join(dict.fromkeys(absent))
        out += ["", f"Not measured in this run (a row it needs is missing): {missing}."]
    return out


def report(rows: list[Row], skipped: list[tuple[str, str]]) -> str:
    by_key = {row["key"]: row for row in rows}
    out = [
        "| system | " + " | ".join(c[0] for c in COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 1) + "|",
    ]
    for broker in BROKER_TITLES:
        section = [row for row in rows if row["broker"] == broker and not row["results"]]
        out += broker_section(section)
    out += [
        "",
        "Ratios are django_tq's figure over the other's: above 1 is better for rates (/s), below 1"
        " for times, CPU and memory.",
    ]
    out += results_tables(rows, by_key)
    notes = problems(rows, skipped)
    if notes:
        out += ["", *notes]
    out += ["", *targets_table(by_key)]
    return "\n".join(out)
