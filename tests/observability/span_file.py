"""A span exporter for worker subprocesses: each finished span is one JSON line in a file.

``tests.observability.otel_settings`` installs it when ``TQ_TEST_SPAN_FILE`` names the file. It
exports synchronously (no thread), so a tracer provider set up before the fork serves prefork
children too; lines are appended with one ``write`` each, so processes never mix them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

ENV = "TQ_TEST_SPAN_FILE"


def as_dict(span: ReadableSpan) -> dict[str, Any]:
    """Return what the tests compare of ``span``."""
    context = span.get_span_context()
    assert context is not None
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_id": f"{span.parent.span_id:016x}" if span.parent is not None else None,
        "attributes": dict(span.attributes or {}),
        "status": span.status.status_code.name,
        "events": [event.name for event in span.events],
        "pid": os.getpid(),
    }


class FileSpanExporter(SpanExporter):
    """Append each span to ``path`` as a JSON line."""

    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            for span in spans:
                os.write(fd, (json.dumps(as_dict(span), default=str) + "\n").encode())
        finally:
            os.close(fd)
        return SpanExportResult.SUCCESS


def install(path: str) -> None:
    """Make a tracer provider exporting to ``path`` the global one."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(FileSpanExporter(path)))
    trace.set_tracer_provider(provider)


def read(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Return the spans written so far."""
    try:
        with open(path) as handle:
            return [json.loads(line) for line in handle if line.strip()]
    except FileNotFoundError:
        return []
