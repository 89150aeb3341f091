"""URL converters for ids that are the caller's strings (task and group ids), used by admin and API.

``apps.py`` registers :class:`TaskIdConverter` as ``<tq_id:…>``. Task ids come from
``apply_async(task_id=…)`` and from foreign messages: they may hold "/", newlines, anything. The
converter takes the rest of the path (routes with a suffix must come first) and reverses with any
character percent-encoded, so every id stays addressable and no id breaks a page that links to it.
"""

from __future__ import annotations

#: the name routes use: ``path("results/<tq_id:task_id>/", …)``
NAME = "tq_id"


class TaskIdConverter:
    """Match one or more of any character, newlines and "/" included."""

    regex = r"(?s:.+)"

    def to_python(self, value: str) -> str:
        """Return the id as it is."""
        return value

    def to_url(self, value: str) -> str:
        """Return the id as it is (``reverse()`` percent-encodes it)."""
        return value
