"""Message signing: an HMAC-SHA256 over the body and headers, keyed from ``SECRET_KEY``.

With ``TQ["SIGNING"] = True``, ``enqueue()`` signs every message and the worker verifies it
before decoding anything, so only processes holding the secret can make a worker run a task.
The key is derived from the secret with a django_tq-specific salt (``salted_hmac``), so a
signature made here is never valid anywhere else Django uses the secret. Verification also
accepts ``SECRET_KEY_FALLBACKS``, so keys can be rotated without dead-lettering messages in
flight.

The signature covers the content type, the body and every header except the signature itself,
:data:`UNSIGNED_HEADERS` (those added after signing, like parking's ``released``) and those
named ``x-…`` (:data:`BROKER_HEADER_PREFIX`: what brokers add on the way, such as a RabbitMQ
quorum queue's ``x-delivery-count`` on every redelivery; django_tq's own headers never start
so): a header added later to the protocol is covered without anyone remembering to add it here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.core.signing import BadSignature
from django.utils.crypto import constant_time_compare, salted_hmac

from django_tq.message import RELEASED_HEADER, WireMessage

#: the header holding the signature
SIGNATURE_HEADER = "signature"
#: headers set after a message was signed, which the signature does not cover
UNSIGNED_HEADERS = frozenset({SIGNATURE_HEADER, RELEASED_HEADER})
#: headers named so are added by brokers and their plugins after the signing (RabbitMQ's
#: ``x-delivery-count``, ``x-death``; shovels', federation's): not covered
BROKER_HEADER_PREFIX = "x-"
#: the key derivation salt: a signature made here is valid nowhere else the secret is used
KEY_SALT = "django_tq.signing.message"
ALGORITHM = "sha256"


def _signed_bytes(headers: dict[str, Any], body: str | bytes, content_type: str) -> bytes:
    covered = {
        key: value
        for key, value in headers.items()
        if key not in UNSIGNED_HEADERS and not key.startswith(BROKER_HEADER_PREFIX)
    }
    # JSON output has no raw newline: the first one ends the metadata, the rest is the body.
    meta = json.dumps([content_type, covered], sort_keys=True, separators=(",", ":"), default=str)
    raw = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    return meta.encode("utf-8") + b"\n" + raw


def signature(
    headers: dict[str, Any], body: str | bytes, content_type: str, *, secret: str | bytes
) -> str:
    """Return the signature of a message under ``secret``."""
    mac = salted_hmac(
        KEY_SALT, _signed_bytes(headers, body, content_type), secret=secret, algorithm=ALGORITHM
    )
    return f"{ALGORITHM}:{mac.hexdigest()}"


def sign(wire: WireMessage, *, secret: str | bytes | None = None) -> WireMessage:
    """Return ``wire`` with a signature header (keyed from ``SECRET_KEY`` unless ``secret``)."""
    value = signature(
        wire.headers, wire.body, wire.content_type, secret=secret or settings.SECRET_KEY
    )
    return WireMessage(
        headers={**wire.headers, SIGNATURE_HEADER: value},
        body=wire.body,
        content_type=wire.content_type,
    )


def verification_keys() -> list[str | bytes]:
    """Return the secrets a signature may be made with: ``SECRET_KEY``, then the fallbacks."""
    return [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]


def verify(
    headers: Any,
    body: str | bytes,
    content_type: str,
    *,
    secrets: Iterable[str | bytes] | None = None,
) -> None:
    """Check a delivered message's signature; raise ``BadSignature`` with the reason if it fails."""
    if not isinstance(headers, dict) or not headers.get(SIGNATURE_HEADER):
        raise BadSignature("the message is not signed (TQ['SIGNING'] is on)")
    claimed = headers[SIGNATURE_HEADER]
    if not isinstance(claimed, str) or not claimed.startswith(f"{ALGORITHM}:"):
        raise BadSignature(f"unsupported signature {str(claimed)[:20]!r} (expected {ALGORITHM})")
    for secret in verification_keys() if secrets is None else secrets:
        if constant_time_compare(claimed, signature(headers, body, content_type, secret=secret)):
            return
    raise BadSignature(
        "the signature does not match: the message was altered, or signed with another key"
    )
