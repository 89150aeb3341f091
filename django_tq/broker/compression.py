"""Message bodies compressed with kombu's compressors (``compression="gzip"|"bzip2"|"zlib"``).

As kombu does it: the body is compressed, the ``compression`` header names the MIME type
(``application/x-gzip``, ``application/x-bz2``), and the content type stays that of the
serializer. A consumer reads the header and decompresses before decoding, so a compressed
message from a plain kombu producer (``Producer.publish(..., compression="gzip")``) works too.
"""

from __future__ import annotations

from typing import Any

from kombu import compression as kombu_compression

from django_tq.message import WireMessage

#: the header kombu writes: the MIME type of the compressor
HEADER = "compression"


def names() -> list[str]:
    """Return the compressor names this process knows (kombu's, plus any registered)."""
    return sorted(kombu_compression._aliases)


def check(name: str | None) -> str | None:
    """Return ``name`` if it is a known compressor (or None); raise ``ValueError`` otherwise."""
    if name is None or name in kombu_compression._aliases:
        return name
    raise ValueError(f"Unknown compression {name!r}: use one of {', '.join(names())}, or None.")


def compress(wire: WireMessage, name: str) -> WireMessage:
    """Return ``wire`` with its body compressed by ``name`` and the ``compression`` header set."""
    body = wire.body.encode("utf-8") if isinstance(wire.body, str) else wire.body
    compressed, mime = kombu_compression.compress(body, check(name))
    return WireMessage(
        headers={**wire.headers, HEADER: mime}, body=compressed, content_type=wire.content_type
    )


def decompress(headers: Any, body: str | bytes) -> str | bytes:
    """Return the body a consumer decodes: decompressed when the ``compression`` header says so.

    Raise ``ValueError`` for a compression this process does not know or a body that does not
    decompress.
    """
    mime = headers.get(HEADER) if isinstance(headers, dict) else None
    if not mime:
        return body
    raw = body.encode("latin-1") if isinstance(body, str) else bytes(body)
    try:
        return bytes(kombu_compression.decompress(raw, mime))
    except KeyError:
        raise ValueError(f"unknown compression {mime!r}") from None
    except Exception as exc:
        raise ValueError(f"body does not decompress as {mime}: {exc}") from exc
