"""The consumer's RabbitMQ socket read in chunks: deliveries that arrived together, one ``recv``."""

from __future__ import annotations

import time
from typing import Any

import pytest

from django_tq.broker import Broker
from django_tq.broker.delivery import Delivery
from django_tq.message import WireMessage
from tests.conftest import AMQP_URL, delete_queues, require_service


@pytest.fixture
def amqp_queue(queue_name: str) -> Any:
    require_service("RabbitMQ", 5672)
    yield queue_name
    delete_queues(AMQP_URL, [queue_name])


def test_a_prefetch_window_that_arrived_is_read_in_a_few_recv_calls(amqp_queue: str) -> None:
    broker = Broker(AMQP_URL)
    for index in range(8):
        broker.publish(
            WireMessage(headers={"id": str(index)}, body="{}" * index, content_type="text/plain"),
            queue=amqp_queue,
        )
    got: list[Delivery] = []
    subscription = broker.subscribe([amqp_queue], prefetch=8, on_delivery=got.append)
    try:
        assert subscription.frames is not None and subscription.frames.chunked
        transport = subscription.connection.connection.transport
        recv, calls = transport._quick_recv, []

        def counted(size: int) -> bytes:
            calls.append(size)
            return bytes(recv(size))

        time.sleep(0.3)  # the window arrives while nothing reads
        transport._quick_recv = counted
        while len(got) < 8:
            subscription.drain(1.0)
        # py-amqp alone: 3 frames a delivery, 3 recv calls a frame (72 here)
        assert len(calls) <= 4, calls
        assert [delivery.headers["id"] for delivery in got] == [str(i) for i in range(8)]
        assert [delivery.body for delivery in got] == ["{}" * i for i in range(8)]
        for delivery in got:
            delivery.ack()
    finally:
        subscription.close()
