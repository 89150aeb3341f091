"""kombu's JSON read as django_tq's: kombu tags datetimes, dates, times, decimals, UUIDs and bytes
(``{"__type__": "datetime", "__value__": "…"}``); they become django_tq's tags
(:mod:`django_tq.serialization`), so they come back as the same types.

Read wherever Celery's JSON comes in: the rows ``tqimport`` copies and the Celery messages a
worker consumes with ``--accept-celery`` (:mod:`django_tq.celery_message`).
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import uuid
from collections.abc import Callable
from typing import Any

from django_tq.serialization import TAG


def _kombu_bytes(value: str) -> str:
    return base64.b64encode(value.encode("utf-8")).decode("ascii")


#: kombu's JSON type tag -> (our tag, how its value becomes ours)
KOMBU_TAGS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "datetime": ("datetime", lambda v: dt.datetime.fromisoformat(v).isoformat()),
    "date": ("date", lambda v: dt.datetime.fromisoformat(v).date().isoformat()),
    "time": ("time", lambda v: dt.time.fromisoformat(v).isoformat()),
    "decimal": ("decimal", lambda v: str(decimal.Decimal(v))),
    "uuid": ("uuid", lambda v: str(uuid.UUID(hex=v["hex"]))),
    "bytes": ("bytes", _kombu_bytes),
    "base64": ("bytes", lambda v: base64.b64encode(base64.b64decode(v)).decode("ascii")),
}


def from_kombu(value: Any) -> Any:
    """Return JSON data decoded by kombu's rules with django_tq's tags instead of kombu's."""
    if isinstance(value, list):
        return [from_kombu(item) for item in value]
    if not isinstance(value, dict):
        return value
    if value.keys() == {"__type__", "__value__"} and value["__type__"] in KOMBU_TAGS:
        tag, convert = KOMBU_TAGS[value["__type__"]]
        try:
            return {TAG: tag, "v": convert(value["__value__"])}
        except (TypeError, ValueError, KeyError, ArithmeticError):
            return value  # malformed: kept as it is
    return {key: from_kombu(item) for key, item in value.items()}
