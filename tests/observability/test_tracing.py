"""OpenTelemetry: the task's span, in a real prefork worker, is a child of the span around
``.delay()`` — and each step of a chain a child of the step before."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from django_tq import chain, chord, tracing
from tests.conftest import wait_for
from tests.observability import span_file
from tests.testapp.tasks import add, always_retries, fail, tsum

pytestmark = pytest.mark.django_db(transaction=True)

_memory = InMemorySpanExporter()


@pytest.fixture(scope="module")
def tracer_provider() -> TracerProvider:
    """This process's tracer provider (set once: OpenTelemetry allows one per process)."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_memory))
    trace.set_tracer_provider(provider)
    return provider


@pytest.fixture
def spans_here(tracer_provider: TracerProvider, settings: Any) -> Iterator[InMemorySpanExporter]:
    settings.TQ = {**settings.TQ, "OTEL": True}
    assert tracing.is_enabled()
    _memory.clear()
    yield _memory
    _memory.clear()


@pytest.fixture
def traced_worker(start_worker: Any, spans_here: Any, tmp_path: Path) -> Path:
    path = tmp_path / "spans.jsonl"
    env = {
        "DJANGO_SETTINGS_MODULE": "tests.observability.otel_settings",
        span_file.ENV: str(path),
    }
    start_worker("-P", "prefork", "-c", "2", env=env)
    return path


def test_off_by_default_no_receiver_and_no_header() -> None:
    assert not tracing.is_enabled()
    uids = [key[0] for key, *_ in trace_receivers()]
    assert tracing.DISPATCH_UID not in uids


def trace_receivers() -> list[Any]:
    from django_tq import signals

    return list(signals.task_started.receivers) + list(signals.task_postrun.receivers)


def here(exporter: InMemorySpanExporter) -> list[dict[str, Any]]:
    return [span_file.as_dict(span) for span in exporter.get_finished_spans()]


def test_the_task_span_is_a_child_of_the_span_around_delay(
    traced_worker: Path, spans_here: InMemorySpanExporter
) -> None:
    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("POST /orders/"):
        result = add.delay(2, 3)
    assert result.get(timeout=30) == 5
    [request, send] = sorted(here(spans_here), key=lambda s: s["kind"] != "INTERNAL")
    assert send["name"] == f"send {add.name}" and send["kind"] == "PRODUCER"
    assert send["parent_id"] == request["span_id"] and send["trace_id"] == request["trace_id"]
    assert send["attributes"]["messaging.system"] == "django_tq"
    assert send["attributes"]["messaging.destination.name"] == "default"
    assert send["attributes"]["messaging.message.id"] == result.id

    [process] = wait_for(lambda: span_file.read(traced_worker), what="the worker's span")
    assert process["name"] == f"process {add.name}" and process["kind"] == "CONSUMER"
    assert process["trace_id"] == request["trace_id"]
    assert process["parent_id"] == send["span_id"]
    assert process["pid"] != send["pid"]  # exported by a prefork child
    attributes = process["attributes"]
    assert attributes["messaging.operation.type"] == "process"
    assert attributes["messaging.message.id"] == result.id
    assert attributes["django_tq.task.state"] == "SUCCESS"
    assert process["status"] == "UNSET"


def test_a_failure_marks_the_span_and_records_the_exception(
    traced_worker: Path, spans_here: InMemorySpanExporter
) -> None:
    result = fail.delay("traced")
    with pytest.raises(ValueError):
        result.get(timeout=30)
    [process] = wait_for(lambda: span_file.read(traced_worker), what="the worker's span")
    assert process["status"] == "ERROR" and process["events"] == ["exception"]
    [send] = here(spans_here)
    assert send["parent_id"] is None  # no span around the call: the publish starts the trace
    assert process["parent_id"] == send["span_id"]


def lineage(spans: list[dict[str, Any]], task_id: str) -> list[tuple[str, str]]:
    """Return (kind, name) from the last execution of ``task_id`` up to the root span."""
    by_id = {span["span_id"]: span for span in spans}
    assert len({span["trace_id"] for span in spans}) == 1
    *_, last = [
        s
        for s in spans
        if s["kind"] == "CONSUMER" and s["attributes"]["messaging.message.id"] == task_id
    ]
    found = []
    span: dict[str, Any] | None = last
    while span is not None:
        found.append((span["kind"], span["name"]))
        span = by_id.get(span["parent_id"])
    return found


def all_spans(here_: InMemorySpanExporter, path: Path, consumers: int) -> list[dict[str, Any]]:
    return wait_for(
        lambda: (
            (found := here(here_) + span_file.read(path))
            and sum(s["kind"] == "CONSUMER" for s in found) == consumers
            and found
        ),
        what=f"{consumers} process spans",
    )


def test_each_step_of_a_chain_is_a_child_of_the_step_before(
    traced_worker: Path, spans_here: InMemorySpanExporter
) -> None:
    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("POST /orders/"):
        result = chain(add.s(1, 2), add.s(3), add.s(4)).delay()
    assert result.get(timeout=30) == 10
    spans = all_spans(spans_here, traced_worker, 3)
    send, process = f"send {add.name}", f"process {add.name}"
    assert lineage(spans, result.id) == [
        ("CONSUMER", process),
        ("PRODUCER", send),
        ("CONSUMER", process),
        ("PRODUCER", send),
        ("CONSUMER", process),
        ("PRODUCER", send),
        ("INTERNAL", "POST /orders/"),
    ]


def test_each_retry_is_a_child_of_the_attempt_before(
    traced_worker: Path, spans_here: InMemorySpanExporter
) -> None:
    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("POST /orders/"):
        result = always_retries.delay()
    with pytest.raises(ConnectionError):
        result.get(timeout=30)
    spans = all_spans(spans_here, traced_worker, 3)
    send, process = f"send {always_retries.name}", f"process {always_retries.name}"
    assert lineage(spans, result.id) == [
        ("CONSUMER", process),
        ("PRODUCER", send),
        ("CONSUMER", process),
        ("PRODUCER", send),
        ("CONSUMER", process),
        ("PRODUCER", send),
        ("INTERNAL", "POST /orders/"),
    ]
    retried = [s for s in spans if s["kind"] == "CONSUMER" and "retry" in s["events"]]
    assert len(retried) == 2


def test_an_eager_run_is_a_child_of_the_caller_and_gives_its_context_back(
    spans_here: InMemorySpanExporter,
) -> None:
    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("caller") as caller:
        assert add.apply((1, 1)).get() == 2
        assert trace.get_current_span() is caller
    spans = {span["name"]: span for span in here(spans_here)}
    assert spans[f"process {add.name}"]["parent_id"] == spans["caller"]["span_id"]
    assert not trace.get_current_span().get_span_context().is_valid


def test_a_chord_body_is_a_child_of_the_header_task_that_finished_last(
    traced_worker: Path, spans_here: InMemorySpanExporter
) -> None:
    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("POST /orders/"):
        result = chord([add.s(1, 1), add.s(2, 2), add.s(3, 3)], tsum.s()).delay()
    assert result.get(timeout=30) == 12
    spans = all_spans(spans_here, traced_worker, 4)
    add_send, add_process = f"send {add.name}", f"process {add.name}"
    assert lineage(spans, result.id) == [
        ("CONSUMER", f"process {tsum.name}"),
        ("PRODUCER", f"send {tsum.name}"),
        ("CONSUMER", add_process),
        ("PRODUCER", add_send),
        ("INTERNAL", "POST /orders/"),
    ]
    [request] = [s for s in spans if s["name"] == "POST /orders/"]
    header_sends = [s for s in spans if s["name"] == add_send]
    assert len(header_sends) == 3
    assert {s["parent_id"] for s in header_sends} == {request["span_id"]}
