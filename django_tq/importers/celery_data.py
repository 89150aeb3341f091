"""Values Celery stored, read as django_tq stores them: JSON only, never unpickled.

* Celery's JSON is kombu's: datetimes, dates, times, decimals, UUIDs and bytes are tagged
  objects (``{"__type__": "datetime", "__value__": "…"}``); they become django_tq's tags
  (:mod:`django_tq.serialization`), so they come back as the same types.
* A stored exception (``{"exc_type": "ValueError", "exc_message": ["boom"], "exc_module":
  "builtins"}``) becomes django_tq's exception data, so ``AsyncResult.get()`` raises it.
* Anything not JSON — pickle above all — is never decoded: the value is replaced by a note.
* Task arguments: django-celery-results stores JSON in some versions and Celery's *repr* of the
  arguments (``"(2, 3)"``, possibly JSON-quoted) in others; a repr made only of literals is read
  with ``ast.literal_eval`` (which evaluates no code), anything else is kept as text.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from typing import Any

from django_tq.kombu_json import from_kombu

JSON = "application/json"
PICKLE = "application/x-python-serialize"
#: the longest argument repr read with ``ast.literal_eval`` (longer ones are kept as text)
MAX_REPR = 100_000


def loads(text: str) -> Any:
    """Parse Celery's JSON text into django_tq's JSON data; raise ``ValueError``."""
    return from_kombu(json.loads(text))


@dataclass(frozen=True, kw_only=True, slots=True)
class Content:
    """A stored value as read: the data to keep, or a note saying why it was not decoded."""

    value: Any = None
    #: why the value was not decoded (then ``value`` is that note), for the report
    note: str = ""
    #: the theme of the note, to count rows alike ("pickled result replaced by a note")
    theme: str = ""


def decode(
    text: str | None, content_type: str | None, content_encoding: str | None, *, what: str = "value"
) -> Content:
    """Decode a value django-celery-results stored with its content type; never unpickle.

    ``what`` names the value in the note that replaces one not decoded (``"result"``).
    """
    if text is None or text == "":
        return Content()
    content_type = content_type or ""
    if content_type in (JSON, "") and content_encoding != "binary":
        try:
            return Content(value=loads(text))
        except ValueError as exc:
            note = f"[not imported: unreadable JSON ({exc})]"
            return Content(
                value=note, note=note, theme=f"unreadable JSON {what} replaced by a note"
            )
    if content_type == PICKLE:
        note = f"[not imported: a pickled {what} ({PICKLE}); django_tq never unpickles]"
        return Content(value=note, note=note, theme=f"pickled {what} replaced by a note")
    note = f"[not imported: a {what} in {content_type}; django_tq reads JSON only]"
    return Content(value=note, note=note, theme=f"{what} in {content_type} replaced by a note")


def exception_data(value: Any) -> Any:
    """Return Celery's stored exception as django_tq's exception data (anything else as is)."""
    if not (isinstance(value, dict) and "exc_type" in value and "exc_message" in value):
        return value
    type_name = str(value["exc_type"])
    module = value.get("exc_module")
    if module and "." not in type_name:
        type_name = f"{module}.{type_name}"
    arguments = value["exc_message"]
    if isinstance(arguments, list | tuple):
        arguments = list(arguments)
        message = (
            "" if not arguments else str(arguments[0] if len(arguments) == 1 else tuple(arguments))
        )
    else:
        message = str(arguments)
        arguments = [message]
    return {"exc_type": type_name, "exc_message": message, "exc_args": arguments}


def _literal(text: str) -> Any:
    """Return the literal ``text`` is the repr of, or raise ``ValueError``."""
    if len(text) > MAX_REPR:
        raise ValueError("too long")
    try:
        return ast.literal_eval(text)
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError) as exc:
        raise ValueError(str(exc)) from None


def arguments(text: str | None, *, kind: type[list[Any]] | type[dict[str, Any]]) -> tuple[Any, str]:
    """Return stored task arguments as ``(value, text)``: JSON data of ``kind``, else text.

    ``value`` is a list (``kind=list``) or a dict (``kind=dict``); when the stored text is
    neither JSON of that kind nor a repr of literals, ``value`` is ``None`` and ``text`` is what
    to keep instead (the repr itself, unquoted if it was stored JSON-quoted).
    """
    if text is None or text == "":
        return None, ""
    candidate: Any
    try:
        candidate = loads(text)
    except ValueError:
        candidate = text  # not JSON: a repr stored as it is (django-celery-results < 2)
    if isinstance(candidate, str):  # a repr, JSON-quoted or not
        kept = candidate
        try:
            candidate = _literal(candidate)
            json.dumps(candidate)
        except (ValueError, TypeError):
            return None, kept  # not only literals, or a set, bytes, …: not JSON data
        if kind is list and isinstance(candidate, tuple):
            candidate = list(candidate)
        if not isinstance(candidate, kind):
            return None, kept
        return candidate, ""
    if isinstance(candidate, kind):
        return candidate, ""
    return None, text
