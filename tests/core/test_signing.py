"""Message signing: signed messages run; unsigned, altered and foreign ones are DEAD, never run."""

from __future__ import annotations

import pytest
from django.core.signing import BadSignature

from django_tq import AsyncResult, signing, states
from django_tq.broker import get_broker
from django_tq.enqueue import encode
from django_tq.message import RELEASED_HEADER, TaskMessage, WireMessage
from django_tq.message import encode as encode_unsigned
from django_tq.models import DeadLetter, ParkedMessage
from tests.conftest import wait_for
from tests.testapp.models import Execution
from tests.testapp.tasks import add, always_retries, record

OLD_SECRET = "django_tq-tests-old-secret"  # in tests/settings.py SECRET_KEY_FALLBACKS
RECORD = "tests.testapp.tasks.record"


def _message(task_id: str, label: str, queue: str = "default") -> TaskMessage:
    return TaskMessage(id=task_id, task=RECORD, args=(label,), queue=queue)


def _verify(wire: WireMessage) -> None:
    signing.verify(wire.headers, wire.body, wire.content_type)


def test_a_signed_message_verifies_with_the_key_or_a_fallback():
    wire = encode_unsigned(_message("s-1", "x"))
    _verify(signing.sign(wire))
    _verify(signing.sign(wire, secret=OLD_SECRET))
    with pytest.raises(BadSignature, match="another key"):
        _verify(signing.sign(wire, secret="someone-else"))
    with pytest.raises(BadSignature, match="not signed"):
        _verify(wire)


def test_headers_a_broker_adds_on_the_way_are_not_covered():
    """A RabbitMQ quorum queue adds ``x-delivery-count`` to each redelivery, ``x-death`` to a
    dead-lettered message; our own headers never start with ``x-``."""
    message = _message("s-x", "x").with_changes(
        headers={"x-mine": 1},  # a custom header: under "custom", so covered
        root_id="r",
        parent_id="p",
        group_id="g",
        exchange="e",
        routing_key="k",
        time_limit=5.0,
        unique_key="u",
        priority=3,
    )
    signed = signing.sign(encode_unsigned(message))
    assert not [key for key in signed.headers if key.startswith(signing.BROKER_HEADER_PREFIX)]
    redelivered = {**signed.headers, "x-delivery-count": 2, "x-death": [{"count": 1}]}
    _verify(WireMessage(headers=redelivered, body=signed.body, content_type=signed.content_type))


def test_the_signature_covers_the_body_the_content_type_and_every_header():
    signed = signing.sign(encode_unsigned(_message("s-2", "x")))
    altered = [
        WireMessage(
            headers=signed.headers, body=signed.body + " ", content_type="application/json"
        ),
        WireMessage(headers=signed.headers, body=signed.body, content_type="application/x-other"),
        *(
            WireMessage(
                headers={**signed.headers, key: value},
                body=signed.body,
                content_type="application/json",
            )
            for key, value in [
                ("task", "tests.testapp.tasks.fail"),
                ("id", "s-3"),
                ("retries", 1),
                ("timelimit", [1, None]),
                ("custom", {"added": True}),
            ]
        ),
    ]
    for wire in altered:
        with pytest.raises(BadSignature, match="altered"):
            _verify(wire)
    # Parking marks a message after it was signed: that header is not covered.
    _verify(
        WireMessage(**{**_fields(signed), "headers": {**signed.headers, RELEASED_HEADER: True}})
    )


def _fields(wire: WireMessage) -> dict[str, object]:
    return {"headers": wire.headers, "body": wire.body, "content_type": wire.content_type}


def test_enqueue_signs_only_when_signing_is_on(settings):
    assert signing.SIGNATURE_HEADER not in encode(_message("s-4", "x")).headers
    settings.TQ = {**settings.TQ, "SIGNING": True}
    _verify(encode(_message("s-4", "x")))


@pytest.mark.django_db(transaction=True)
def test_only_messages_signed_with_a_known_key_run(broker_url, settings, start_worker):
    settings.TQ = {**settings.TQ, "SIGNING": True, "ETA_HORIZON_SECONDS": 1}
    queue = settings.TQ["DEFAULT_QUEUE"]
    worker = start_worker("-P", "solo")
    parked = record.apply_async(("parked",), countdown=2)
    assert ParkedMessage.objects.filter(task_id=parked.id).exists()  # headers in a JSON column

    def publish(wire: WireMessage) -> None:
        get_broker().publish(wire, queue=queue)

    publish(
        signing.sign(encode_unsigned(_message("fallback-1", "fallback", queue)), secret=OLD_SECRET)
    )
    publish(encode_unsigned(_message("unsigned-1", "unsigned", queue)))
    signed = signing.sign(encode_unsigned(_message("tampered-1", "original", queue)))
    forged = encode_unsigned(_message("tampered-1", "forged", queue))
    publish(WireMessage(**{**_fields(signed), "body": forged.body}))
    retargeted = signing.sign(encode_unsigned(_message("retarget-1", "retarget", queue)))
    publish(
        WireMessage(
            **{
                **_fields(retargeted),
                "headers": {**retargeted.headers, "task": "tests.testapp.tasks.fail"},
            }
        )
    )
    publish(
        signing.sign(
            encode_unsigned(_message("foreign-1", "foreign", queue)), secret="someone-else"
        )
    )

    assert add.delay(2, 3).get(timeout=20) == 5  # signed by enqueue(): runs
    assert parked.get(timeout=20) == "parked"  # released from parking: still verifies
    retried = always_retries.delay()  # retries are enqueued, hence signed, by the worker
    wait_for(lambda: AsyncResult(retried.id).state == states.FAILURE, what="retries exhausted")
    assert Execution.objects.filter(task_id=retried.id).count() == 3
    wait_for(lambda: DeadLetter.objects.count() == 4, what="4 dead letters")
    reasons = {letter.task_id: letter.reason for letter in DeadLetter.objects.all()}
    assert "bad signature: the message is not signed" in reasons["unsigned-1"]
    for task_id in ("tampered-1", "retarget-1", "foreign-1"):
        assert "bad signature: the signature does not match" in reasons[task_id]
        assert AsyncResult(task_id).state == states.DEAD
    assert list(
        Execution.objects.filter(task_id__endswith="-1").values_list("label", flat=True)
    ) == ["fallback"]
    assert worker.process.poll() is None
