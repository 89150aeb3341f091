"""``BROKER_CONFIRM="batch"`` on RabbitMQ: ``.delay()`` returns once its message is written, the
publisher confirms are read in the background, and a nack, a timeout or a lost connection puts
the message in the outbox (logged, ``task_publish_failed``) instead of losing it."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.utils import timezone
from kombu import Connection

from django_tq import AsyncResult, outbox, signals, states
from django_tq.broker import Broker, get_broker
from django_tq.broker.confirms import Late, _Entry
from django_tq.conf import tq_settings
from django_tq.exceptions import PublishError
from django_tq.message import WireMessage
from django_tq.models import OutboxMessage
from django_tq.outgoing import Outgoing
from tests.conftest import AMQP_URL, require_service, worker_env
from tests.core.test_bursts import _reject_publish_queue
from tests.testapp.tasks import add

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def batch_queue(settings: Any) -> Any:
    """A fresh RabbitMQ queue as ``DEFAULT_QUEUE``, with ``BROKER_CONFIRM="batch"``."""
    require_service("RabbitMQ", 5672)
    queue = f"q-late-{uuid.uuid4().hex[:10]}"
    settings.TQ = {
        **settings.TQ,
        "BROKER_URL": AMQP_URL,
        "DEFAULT_QUEUE": queue,
        "BROKER_CONFIRM": "batch",
    }
    yield queue
    get_broker().wait_for_confirms()
    with Connection(AMQP_URL) as conn:
        conn.default_channel.queue_delete(queue)


def test_the_setting_is_validated_and_wait_stays_the_default(settings: Any) -> None:
    assert tq_settings.BROKER_CONFIRM == "wait"
    assert Broker(AMQP_URL).confirms_late is False
    assert Broker(AMQP_URL, confirm="batch").confirms_late is True
    # without confirms there is nothing to collect
    no_confirms = Broker(AMQP_URL, transport_options={"confirm_publish": False}, confirm="batch")
    assert no_confirms.confirms_late is False
    settings.TQ = {**settings.TQ, "BROKER_CONFIRM": "later"}
    with pytest.raises(ImproperlyConfigured, match="BROKER_CONFIRM"):
        tq_settings.BROKER_CONFIRM  # noqa: B018


def test_delay_returns_before_the_confirm_and_the_thread_settles_every_one(
    batch_queue: str,
) -> None:
    broker = get_broker()
    add.delay(0, 0)
    confirms = broker._local.confirms
    waits: list[float] = []
    real_wait = confirms.wait
    confirms.wait = lambda timeout: waits.append(timeout) or real_wait(timeout)
    results = [add.delay(i, i) for i in range(300)]
    assert waits == []  # no call waited for its confirm
    assert broker.wait_for_confirms(timeout=10)
    assert confirms.late == 0
    assert confirms.unsettled() == []
    assert broker.depth(batch_queue) == 301
    assert {AsyncResult(r.id).state for r in results} == {states.QUEUED}
    assert OutboxMessage.objects.count() == 0
    # a burst (a publisher) still waits for its own confirms, late messages beside it or not
    add.delay(1, 1)
    with add.publisher() as publisher:
        burst = [add.apply_async((i, i), publisher=publisher) for i in range(20)]
    assert publisher.sent == [r.id for r in burst]
    assert len(waits) == 1
    assert broker.wait_for_confirms(timeout=10)
    assert broker.depth(batch_queue) == 322


def test_a_late_nack_is_logged_signalled_and_relayed_from_the_outbox(
    batch_queue: str, caplog: Any
) -> None:
    _reject_publish_queue(batch_queue, 2)  # RabbitMQ nacks every publish past 2 messages
    broker = get_broker()
    broker._producer()
    broker._local.declared.add(batch_queue)  # ours would declare it with other arguments
    failed: list[tuple[str, PublishError]] = []

    def receiver(sender: str, message: Any, exc: PublishError, **kwargs: Any) -> None:
        failed.append((message.id, exc))

    signals.task_publish_failed.connect(receiver)
    try:
        with caplog.at_level(logging.ERROR, logger="django_tq.enqueue"):
            results = [add.delay(i, i) for i in range(5)]  # none raises: none waited
            assert broker.wait_for_confirms(timeout=10)
    finally:
        signals.task_publish_failed.disconnect(receiver)
    refused = [r.id for r in results[2:]]
    assert [task_id for task_id, _ in failed] == refused
    assert all("refused (nack)" in str(exc) for _, exc in failed)
    assert sum("waits in the outbox" in record.getMessage() for record in caplog.records) == 3
    assert sorted(OutboxMessage.objects.values_list("task_id", flat=True)) == sorted(refused)
    # nothing is lost or given up: the refused tasks are still QUEUED, to be relayed
    assert [AsyncResult(r.id).state for r in results] == [states.QUEUED] * 5
    assert broker.depth(batch_queue) == 2
    with Connection(AMQP_URL) as conn:  # room again: the relay (every worker's) sends them
        conn.default_channel.queue_purge(batch_queue)
    later = timezone.now() + outbox.RELAY_AFTER * 2
    with pytest.raises(PublishError, match="refused"):  # the relay waits for its confirms
        outbox.relay(broker, later)
    assert broker.depth(batch_queue) == 2  # the queue's limit again: two of the three taken
    assert list(OutboxMessage.objects.values_list("task_id", flat=True)) == [refused[2]]


def test_a_lost_connection_puts_every_unconfirmed_message_in_the_outbox(
    batch_queue: str,
) -> None:
    broker = get_broker()
    first = add.delay(0, 0)
    assert broker.wait_for_confirms(timeout=10)
    connection = broker._local.connection
    confirms = broker._local.confirms
    with confirms.lock:  # the collector reads nothing until the socket is gone
        results = [add.delay(i, i) for i in range(50)]
        connection.connection.transport.sock.close()  # their confirms are never read
    assert broker.wait_for_confirms(timeout=10)
    in_outbox = set(OutboxMessage.objects.values_list("task_id", flat=True))
    assert in_outbox == {r.id for r in results}  # none lost, whatever RabbitMQ received
    # RabbitMQ took those it had read before the close: the relay's copies of these are
    # marked, and a worker skips a copy whose task already ran
    assert _task_ids_in(batch_queue) <= {r.id for r in results} | {first.id}
    assert add.delay(1, 1)  # the next publish reconnects
    assert broker.wait_for_confirms(timeout=10)


def _task_ids_in(queue: str) -> set[str]:
    """Return the task ids of the messages waiting in ``queue`` (taking them out)."""
    ids = set()
    with Connection(AMQP_URL) as conn:
        channel = conn.default_channel
        while (message := channel.basic_get(queue, no_ack=True)) is not None:
            ids.add(message.headers["id"])
    return ids


def test_a_confirm_that_never_comes_fails_at_its_deadline(batch_queue: str) -> None:
    broker = get_broker()
    add.delay(0, 0)
    assert broker.wait_for_confirms(timeout=10)
    confirms = broker._local.confirms
    reported: list[tuple[str, str]] = []
    item = Outgoing(
        wire=WireMessage(headers={}, body="{}", content_type="application/json"),
        queue=batch_queue,
        label="ghost",
    )
    late = Late(item, lambda i, exc: reported.append((i.label, str(exc))), time.monotonic())
    with confirms.lock:  # as if published under a tag RabbitMQ will never confirm
        confirms._unsettled[10**9] = _Entry("ghost", late)
        confirms._late += 1
    broker._late_confirms.watch(confirms)
    assert broker.wait_for_confirms(timeout=10)
    assert reported == [("ghost", f"{broker.safe_url} did not confirm ghost in time")]
    assert confirms.late == 0


def test_a_worker_relays_and_runs_what_rabbitmq_refused(
    batch_queue: str, start_worker: Any
) -> None:
    _reject_publish_queue(batch_queue, 1)
    broker = get_broker()
    broker._producer()
    broker._local.declared.add(batch_queue)
    results = [add.delay(i, 1) for i in range(4)]
    assert broker.wait_for_confirms(timeout=10)
    assert OutboxMessage.objects.count() == 3  # OUTBOX is off: only the refused are there
    with Connection(AMQP_URL) as conn:  # a queue without the limit, as the worker declares it
        conn.default_channel.queue_delete(batch_queue)
    worker = start_worker("-P", "solo")
    assert [r.get(timeout=30) for r in results[1:]] == [2, 3, 4]
    assert not OutboxMessage.objects.exists()
    assert worker.stop() == 0, worker.output()


def test_threads_publish_on_their_own_channels_and_one_thread_settles_them(
    batch_queue: str,
) -> None:
    broker = get_broker()
    ids: list[str] = []

    def publish() -> None:
        ids.extend(add.delay(i, i).id for i in range(50))
        connections.close_all()

    threads = [threading.Thread(target=publish) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert broker.wait_for_confirms(timeout=10)
    assert _task_ids_in(batch_queue) == set(ids)
    assert len(ids) == 200
    assert OutboxMessage.objects.count() == 0
    collectors = [t for t in threading.enumerate() if t.name == "django_tq-late-confirms"]
    assert len(collectors) <= 1


def test_a_script_that_exits_right_after_delay_still_hands_a_refusal_to_the_outbox(
    batch_queue: str,
) -> None:
    _reject_publish_queue(batch_queue, 1)
    script = (
        "import django; django.setup()\n"
        "from django_tq.broker import get_broker\n"
        "from tests.testapp.tasks import add\n"
        "broker = get_broker(); broker._producer()\n"
        f"broker._local.declared.add({batch_queue!r})\n"
        "print(add.delay(1, 1).id, add.delay(2, 2).id)\n"  # then exit at once
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    accepted, refused = done.stdout.split()
    # the interpreter's exit waited for the confirms: the nack reached the outbox
    assert list(OutboxMessage.objects.values_list("task_id", flat=True)) == [refused]
    assert "waits in the outbox" in done.stderr
    assert _task_ids_in(batch_queue) == {accepted}
