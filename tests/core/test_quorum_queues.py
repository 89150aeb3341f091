"""RabbitMQ quorum queues, per queue: declared with ``x-delivery-limit = MAX_DELIVERIES``.

On the shared RabbitMQ, with queues of the test's own (deleted afterwards). The worker counts a
poison message's deliveries from its result row as on a classic queue (the broker's
``x-delivery-count`` also counts the prefetched messages a dying child gave back, which must not
be dead-lettered); the broker's limit is the backstop behind it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from amqp.exceptions import PreconditionFailed
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

from django_tq.broker import ALL_QUEUES, Broker, quorum_queue_names
from django_tq.message import WireMessage
from tests.conftest import AMQP_URL, delete_queues, require_service
from tests.core.test_delivery import assert_a_poison_message_dies_alone


def test_the_option_names_queues_or_all() -> None:
    assert quorum_queue_names(["a", "b"]) == {"a", "b"}
    assert quorum_queue_names("a,b") == {"a", "b"}
    assert quorum_queue_names(True) is ALL_QUEUES
    assert quorum_queue_names(None) == frozenset()
    with pytest.raises(ImproperlyConfigured, match="quorum_queues"):
        quorum_queue_names(3)
    broker = Broker("redis://127.0.0.1:1/0", transport_options={"quorum_queues": True})
    assert not broker.is_quorum("a")  # an AMQP option only
    assert "quorum_queues" not in broker.transport_options  # not handed to kombu


@pytest.fixture
def quorum_queue(queue_name: str, settings: Any) -> Iterator[str]:
    """A quorum queue of this test's own on the shared RabbitMQ, as the default queue."""
    require_service("RabbitMQ", 5672)
    settings.TQ = {
        **settings.TQ,
        "BROKER_URL": AMQP_URL,
        "BROKER_TRANSPORT_OPTIONS": {"quorum_queues": [queue_name]},
        "DEFAULT_QUEUE": queue_name,
    }
    yield queue_name
    delete_queues(AMQP_URL, [queue_name])


def test_a_named_queue_is_declared_quorum_with_the_delivery_limit(quorum_queue, settings) -> None:
    broker = Broker(AMQP_URL, transport_options={"quorum_queues": [quorum_queue]})
    assert broker.queue(quorum_queue).queue_arguments == {
        "x-queue-type": "quorum",
        "x-delivery-limit": settings.TQ.get("MAX_DELIVERIES", 4),
    }
    assert broker.queue("other").queue_arguments == {"x-max-priority": 10}
    broker.publish(WireMessage(headers={}, body="x", content_type="text/plain"), queue=quorum_queue)
    assert broker.depth(quorum_queue) == 1
    with broker.connection() as connection, pytest.raises(PreconditionFailed, match="x-queue-type"):
        # the broker holds a quorum queue: declaring it classic is refused
        Queue(quorum_queue, durable=True)(connection.default_channel).declare()


@pytest.mark.django_db(transaction=True)
def test_a_poison_message_is_dead_after_max_deliveries_and_its_neighbours_run(
    quorum_queue, settings, start_worker
) -> None:
    assert_a_poison_message_dies_alone(settings, start_worker)  # the prefetched ones not dropped
