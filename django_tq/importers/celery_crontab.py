"""Celery's crontab fields, read the way Celery reads them, written as django_tq's crontab fields.

django-celery-beat stores the text of each field and Celery expands it with its own parser
(``celery.schedules.crontab_parser``), which is not cron's: a range may wrap around (hours
``22-2`` are 22, 23, 0, 1 and 2), a word counts by its first three letters, as a month (``jan``)
or else a weekday (``monday``), in any field, and Sunday is 0 only (``7`` is an error). The parser
is ported here, so nothing imports Celery. :func:`our_crontab_fields` returns, for each field, text
that django_tq's crontab (:func:`django_tq.schedules.expand`) expands to exactly the numbers Celery
ran on: the original text where django_tq reads it alike, else the numbers themselves.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from django_tq.schedules import CRONTAB_FIELDS, expand

#: Celery's ranges per field: (count, first value)
RANGES = {
    "minute": (60, 0),
    "hour": (24, 0),
    "day_of_week": (7, 0),
    "day_of_month": (31, 1),
    "month_of_year": (12, 1),
}
MONTH_NAMES = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
MONTHS = {name: number for number, name in enumerate(MONTH_NAMES, 1)}
WEEKDAYS = {
    name: number for number, name in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])
}
#: field text django_tq's crontab reads exactly as written (no spaces, no L/W/#/H words)
PLAIN = re.compile(r"^[0-9a-z*/,-]+$")
#: the names each field of django_tq's crontab understands (croniter's), beside numbers
OUR_NAMES = {"day_of_week": frozenset(WEEKDAYS), "month_of_year": frozenset(MONTHS)}


class CronParseError(ValueError):
    """A crontab field Celery cannot read (so django-celery-beat never ran the task)."""


class CeleryCrontabParser:
    """A port of ``celery.schedules.crontab_parser``: one field's text to its set of numbers."""

    _range = r"(\w+?)-(\w+)"
    _steps = r"/(\w+)?"
    _star = r"\*"

    def __init__(self, max_: int = 60, min_: int = 0) -> None:
        self.max_ = max_
        self.min_ = min_
        self.patterns: tuple[tuple[re.Pattern[str], Callable[[Sequence[Any]], list[int]]], ...] = (
            (re.compile(self._range + self._steps), self._range_steps),
            (re.compile(self._range), self._expand_range),
            (re.compile(self._star + self._steps), self._star_steps),
            (re.compile("^" + self._star + "$"), self._expand_star),
        )

    def parse(self, spec: str) -> set[int]:
        """Return the numbers ``spec`` stands for; raise ``ValueError`` as Celery does."""
        numbers: set[int] = set()
        for part in spec.split(","):
            if not part:
                raise CronParseError("empty part")
            numbers |= set(self._parse_part(part))
        return numbers

    def _parse_part(self, part: str) -> list[int]:
        for regex, handler in self.patterns:
            match = regex.match(part)
            if match:
                return handler(match.groups())
        return self._expand_range((part,))

    def _expand_range(self, tokens: Sequence[str]) -> list[int]:
        first = self._expand_number(tokens[0])
        if len(tokens) > 1:
            last = self._expand_number(tokens[1])
            if last < first:  # wraps around the end of the range
                return list(range(first, self.min_ + self.max_)) + list(range(self.min_, last + 1))
            return list(range(first, last + 1))
        return [first]

    def _range_steps(self, tokens: Sequence[str]) -> list[int]:
        if len(tokens) != 3 or not tokens[2]:
            raise CronParseError("empty filter")
        return self._expand_range(tokens[:2])[:: int(tokens[2])]

    def _star_steps(self, tokens: Sequence[str]) -> list[int]:
        if not tokens or not tokens[0]:
            raise CronParseError("empty filter")
        return self._expand_star()[:: int(tokens[0])]

    def _expand_star(self, *args: Any) -> list[int]:
        return list(range(self.min_, self.max_ + self.min_))

    def _expand_number(self, text: str) -> int:
        if text[0] == "-":
            raise CronParseError("negative numbers not supported")
        try:
            number = int(text)
        except ValueError:
            abbreviation = text[0:3].lower()
            if abbreviation in MONTHS:
                number = MONTHS[abbreviation]
            elif abbreviation in WEEKDAYS:
                number = WEEKDAYS[abbreviation]
            else:
                raise CronParseError(f"Invalid weekday literal {text!r}.") from None
        highest = self.min_ + self.max_ - 1
        if number > highest:
            raise CronParseError(f"Invalid end range: {number} > {highest}.")
        if number < self.min_:
            raise CronParseError(f"Invalid beginning range: {number} < {self.min_}.")
        return number


def celery_numbers(field: str, text: str) -> set[int]:
    """Return the numbers Celery runs field ``field`` on for ``text``; raise ``CronParseError``."""
    count, first = RANGES[field]
    try:
        return CeleryCrontabParser(count, first).parse(text)
    except CronParseError:
        raise
    except (ValueError, IndexError) as exc:  # int() of a step, a zero step: Celery raises too
        raise CronParseError(str(exc)) from None


def our_numbers(field: str, text: str) -> set[int] | None:
    """Return the numbers django_tq's crontab runs field ``field`` on, or ``None`` if invalid."""
    if not PLAIN.match(text):
        return None
    words = set(re.findall(r"[a-z]+", text))
    if words - OUR_NAMES.get(field, frozenset()):
        return None  # croniter would read another field's names, or L, W, H, as its own
    fields = {name: (text if name == field else "*") for name in CRONTAB_FIELDS}
    try:
        expanded = expand(**fields)
    except ValueError:
        return None
    values = {
        "minute": expanded.minutes,
        "hour": expanded.hours,
        "day_of_month": expanded.days,
        "month_of_year": expanded.months,
        "day_of_week": expanded.weekdays,
    }[field]
    return set(values)


def as_text(field: str, numbers: set[int]) -> str:
    """Return ``numbers`` as field text: ``*`` for all, runs of three or more as ``a-b``."""
    count, first = RANGES[field]
    if numbers == set(range(first, first + count)):
        return "*"
    parts: list[str] = []
    ordered = sorted(numbers)
    start = previous = ordered[0]
    for number in [*ordered[1:], None]:
        if number is not None and number == previous + 1:
            previous = number
            continue
        if previous - start >= 2:
            parts.append(f"{start}-{previous}")
        else:
            parts.extend(str(n) for n in range(start, previous + 1))
        if number is not None:
            start = previous = number
    return ",".join(parts)


def our_crontab_fields(celery_fields: dict[str, str]) -> dict[str, str]:
    """Return django_tq's crontab fields running on the very numbers Celery's ``celery_fields`` do.

    Raise ``CronParseError`` naming the field Celery could not read.
    """
    ours = {}
    for field in CRONTAB_FIELDS:
        text = celery_fields[field]
        try:
            numbers = celery_numbers(field, text)
        except CronParseError as exc:
            raise CronParseError(f"crontab {field} {text!r}: {exc}") from None
        kept = text.lower()
        ours[field] = kept if our_numbers(field, kept) == numbers else as_text(field, numbers)
    return ours
