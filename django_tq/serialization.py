"""Serializers for task arguments and results: JSON with Django-aware types, pickle only on request.

JSON carries ``datetime``, ``date``, ``time``, ``timedelta``, ``Decimal``, ``UUID`` and ``bytes`` as
small tagged objects (``{"__tq__": "datetime", "v": "…"}``) so they arrive in the task as the same
types. Anything else that JSON cannot represent raises :class:`EncodeError` at the call site.
Pickle is decoded only when the caller's accept list names it: a worker never unpickles a message
it was not told to trust.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import pickle
import sys
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from django_tq.exceptions import DecodeError, EncodeError, TaskError

JSON = "application/json"
PICKLE = "application/x-python-serialize"
CONTENT_TYPES = {"json": JSON, "pickle": PICKLE}
TAG = "__tq__"


def _encode_value(value: Any) -> dict[str, Any]:
    # datetime is checked before date: it is a subclass.
    if isinstance(value, dt.datetime):
        return {TAG: "datetime", "v": value.isoformat()}
    if isinstance(value, dt.date):
        return {TAG: "date", "v": value.isoformat()}
    if isinstance(value, dt.time):
        return {TAG: "time", "v": value.isoformat()}
    if isinstance(value, dt.timedelta):
        return {TAG: "timedelta", "v": [value.days, value.seconds, value.microseconds]}
    if isinstance(value, decimal.Decimal):
        return {TAG: "decimal", "v": str(value)}
    if isinstance(value, uuid.UUID):
        return {TAG: "uuid", "v": str(value)}
    if isinstance(value, bytes | bytearray | memoryview):
        return {TAG: "bytes", "v": base64.b64encode(bytes(value)).decode("ascii")}
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_DECODERS: dict[str, Callable[[Any], Any]] = {
    "datetime": dt.datetime.fromisoformat,
    "date": dt.date.fromisoformat,
    "time": dt.time.fromisoformat,
    "timedelta": lambda v: dt.timedelta(days=v[0], seconds=v[1], microseconds=v[2]),
    "decimal": decimal.Decimal,
    "uuid": uuid.UUID,
    "bytes": lambda v: base64.b64decode(v, validate=True),
}


def _decode_object(obj: dict[str, Any]) -> Any:
    tag = obj.get(TAG)
    if tag is None or len(obj) != 2:
        return obj
    decoder = _DECODERS.get(tag)
    return decoder(obj["v"]) if decoder else obj


_json_decoder = json.JSONDecoder(object_hook=_decode_object)


def json_text_encoder(
    default: Callable[[Any], Any], *, ensure_ascii: bool, separators: tuple[str, str]
) -> Callable[[Any], str]:
    """Return ``JSONEncoder(default=…, …, check_circular=False).encode``, its C encoder built once.

    ``JSONEncoder.encode`` (and so ``json.dumps``) builds a C encoder on every call; on the
    publish path that is a measurable part of a message. The text is the same.
    """
    item_separator, key_separator = separators
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - Python without json's C speedups
        encoder = json.JSONEncoder(
            default=default, separators=separators, ensure_ascii=ensure_ascii, check_circular=False
        )
        return encoder.encode
    quote = json.encoder.encode_basestring_ascii if ensure_ascii else json.encoder.encode_basestring
    c_encoder = make(None, default, quote, None, key_separator, item_separator, False, False, True)
    return lambda value: "".join(c_encoder(value, 0))


_encode_json = json_text_encoder(_encode_value, ensure_ascii=False, separators=(",", ":"))


def to_json(value: Any) -> str:
    """Serialize ``value`` to JSON text with the tagged types; raise :class:`EncodeError`."""
    try:
        return _encode_json(value)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise EncodeError(str(exc)) from exc


def from_json(text: str | bytes) -> Any:
    """Parse JSON text produced by :func:`to_json`; raise :class:`DecodeError`."""
    try:
        if isinstance(text, bytes | bytearray | memoryview):
            text = bytes(text).decode("utf-8")
        return _json_decoder.decode(text)
    except (ValueError, TypeError, ArithmeticError, LookupError, RecursionError) as exc:
        # A malformed tagged value raises what its constructor raises (InvalidOperation, …).
        raise DecodeError(f"malformed JSON: {exc}") from exc


def to_jsonable(value: Any) -> Any:
    """Return ``value`` as plain JSON data (tagged types become tag objects), for a JSONField."""
    return json.loads(to_json(value))


def from_jsonable(value: Any) -> Any:
    """Rebuild the tagged types in plain JSON data read from a JSONField."""
    if isinstance(value, dict | list):
        return from_json(json.dumps(value))
    return value


def has_nul(value: Any) -> bool:
    """Return whether a string (or key) in JSON data ``value`` holds U+0000.

    PostgreSQL cannot store that character in ``jsonb`` or text columns: input forms and the API
    refuse it rather than fail when the row is written.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str) and "\x00" in item:
            return True
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


def dumps(value: Any, serializer: str = "json") -> tuple[str, str | bytes]:
    """Serialize ``value``; return ``(content_type, body)``."""
    if serializer == "json":
        return JSON, to_json(value)
    if serializer == "pickle":
        try:
            return PICKLE, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise EncodeError(str(exc)) from exc
    raise EncodeError(f"Unknown serializer {serializer!r} (use 'json' or 'pickle').")


def loads(body: str | bytes, content_type: str, accept: Iterable[str]) -> Any:
    """Deserialize ``body`` if ``content_type`` is in ``accept`` (names like ``"json"``)."""
    accepted = {CONTENT_TYPES.get(name, name) for name in accept}
    if content_type not in accepted:
        raise DecodeError(
            f"content type {content_type!r} is not accepted (accepted: {sorted(accepted)})"
        )
    if content_type == JSON:
        return from_json(body)
    if content_type == PICKLE:
        data = body.encode("latin-1") if isinstance(body, str) else bytes(body)
        try:
            return pickle.loads(data)
        except Exception as exc:
            raise DecodeError(f"malformed pickle: {exc}") from exc
    raise DecodeError(f"unknown content type {content_type!r}")


def exception_to_data(exc: BaseException) -> dict[str, Any]:
    """Describe ``exc`` as JSON data: its qualified type name and message (never pickled)."""
    cls = type(exc)
    return {
        "exc_type": f"{cls.__module__}.{cls.__qualname__}",
        "exc_message": str(exc),
        "exc_args": to_jsonable(list(exc.args)) if _is_plain(exc.args) else [str(exc)],
    }


def _is_plain(value: Any) -> bool:
    try:
        to_json(value)
    except EncodeError:
        return False
    return True


def is_exception_data(value: Any) -> bool:
    """Return whether ``value`` is what :func:`exception_to_data` produced."""
    return isinstance(value, dict) and "exc_type" in value and "exc_message" in value


def exception_from_data(data: dict[str, Any]) -> BaseException:
    """Re-create a stored exception when that is safe, else return a ``TaskError``.

    Safe means: the class is already imported (nothing is imported on behalf of stored data), is
    an ``Exception`` subclass, and can be built from its stored arguments.
    """
    type_name = str(data.get("exc_type", "Exception"))
    message = str(data.get("exc_message", ""))
    module_name, _, qualname = type_name.rpartition(".")
    module = sys.modules.get(module_name or "builtins")
    cls: Any = module
    for part in qualname.split("."):
        cls = getattr(cls, part, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        args = data.get("exc_args")
        try:
            return cls(*from_jsonable(args)) if isinstance(args, list) else cls(message)
        except Exception:
            try:
                return cls(message)
            except Exception:
                pass
    return TaskError(type_name, message)
