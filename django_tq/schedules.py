"""Schedules: when a periodic task runs — every N seconds, on a crontab, or once at a set time.

Pure values and time arithmetic, no database: :func:`crontab`, :func:`schedule` (``Every``) and
:class:`Clocked` answer ``iter_after(moment, since=…)`` and ``iter_before(moment, since=…)`` with
aware UTC datetimes. ``since`` is the instant a schedule counts from (the last run): an interval
runs every N after it; a crontab or a clocked time only uses it as a lower bound.

A crontab is evaluated in its own time zone with zoneinfo; croniter (imported only here, when a
crontab is first expanded: the models import this module, and a worker never expands one) parses
and expands the five fields and decides nothing else. Daylight saving time follows Vixie cron:

* if the hour field starts with ``*`` the job follows real time: a wall time that occurs twice
  runs twice and one that does not exist does not run (an hourly job runs 25 times on a
  fall-back day and 23 times on a spring-forward day);
* otherwise it follows wall time: a wall time that occurs twice runs once (the first), and one
  that does not exist runs once, at the first instant after the gap (02:30 → 03:00).

Day of month and day of week must both match (Celery's rule, not Vixie cron's "either").
A crontab in words (``describe()``) is :mod:`django_tq.crontab_words`'s.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from django_tq.conf import tq_settings
from django_tq.crontab_words import describe_crontab

UTC = dt.UTC
#: the earliest instant, for "count from the beginning of time"
BEGINNING = dt.datetime(1970, 1, 1, tzinfo=UTC)
#: how far a crontab search goes without a match before concluding there is none (the
#: weekday/date calendar repeats every 28 years)
SEARCH_DAYS = 28 * 366
ONE_MICROSECOND = dt.timedelta(microseconds=1)
ONE_DAY = dt.timedelta(days=1)
CRONTAB_FIELDS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
FIELD_RANGES = {
    "minute": range(60),
    "hour": range(24),
    "day_of_month": range(1, 32),
    "month_of_year": range(1, 13),
    "day_of_week": range(7),
}


def check_timezone(name: str) -> ZoneInfo:
    """Return the zone called ``name``; raise ``ValueError`` naming it when it does not exist."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(_("Unknown time zone: %(name)s.") % {"name": name}) from None


def default_timezone() -> str:
    """Return the zone crontabs use when they name none (``TQ["TIMEZONE"]``)."""
    return str(tq_settings.TIMEZONE)


class Schedule:
    """What every schedule answers. Instants are aware datetimes; results are in UTC."""

    __slots__ = ()

    #: occurs more than once (a clocked time does not)
    recurring: ClassVar[bool] = True

    def iter_after(self, moment: dt.datetime, *, since: dt.datetime) -> Iterator[dt.datetime]:
        """Yield the occurrences after ``moment`` (and after ``since``), earliest first."""
        raise NotImplementedError

    def iter_before(self, moment: dt.datetime, *, since: dt.datetime) -> Iterator[dt.datetime]:
        """Yield the occurrences at or before ``moment`` and after ``since``, latest first."""
        raise NotImplementedError

    def next_after(self, moment: dt.datetime, *, since: dt.datetime) -> dt.datetime | None:
        """Return the first occurrence after ``moment`` (and after ``since``), if any."""
        return next(self.iter_after(moment, since=since), None)

    def last_at_or_before(self, moment: dt.datetime, *, since: dt.datetime) -> dt.datetime | None:
        """Return the latest occurrence at or before ``moment`` and after ``since``, if any."""
        return next(self.iter_before(moment, since=since), None)

    def since_for_start(self, start: dt.datetime) -> dt.datetime:
        """Return the ``since`` whose first occurrence is the first one at or after ``start``."""
        return start - ONE_MICROSECOND

    def since_for_new(self, created: dt.datetime) -> dt.datetime:
        """Return the ``since`` of a schedule that never ran, created at ``created``."""
        return created

    def describe(self) -> str:
        """Return the schedule in words (``at 03:00 every day, Europe/Paris``)."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Every(Schedule):
    """Every ``every`` (whole seconds, at least one) after the last run."""

    every: dt.timedelta

    def __post_init__(self) -> None:
        if self.every < dt.timedelta(seconds=1) or self.every.microseconds:
            raise ValueError(
                _("An interval must be a whole number of seconds, at least 1 (got %(every)s).")
                % {"every": self.every}
            )

    def iter_after(self, moment: dt.datetime, *, since: dt.datetime) -> Iterator[dt.datetime]:
        count = 1 if moment < since else (moment - since) // self.every + 1
        while True:
            yield since + count * self.every
            count += 1

    def iter_before(self, moment: dt.datetime, *, since: dt.datetime) -> Iterator[dt.datetime]:
        if moment < since:
            return
        for count in range((moment - since) // self.every, 0, -1):
            yield since + count * self.every

    def since_for_start(self, start: dt.datetime) -> dt.datetime:
        return start - self.every

    @property
    def unit(self) -> tuple[int, str]:
        """Return ``(number, period)`` in the largest period that divides the interval."""
        seconds = int(self.every.total_seconds())
        for period, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
            if seconds % size == 0:
                return seconds // size, period
        return seconds, "seconds"

    def describe(self) -> str:
        number, period = self.unit
        words = {
            "days": ngettext("every day", "every %(n)d days", number),
            "hours": ngettext("every hour", "every %(n)d hours", number),
            "minutes": ngettext("every minute", "every %(n)d minutes", number),
            "seconds": ngettext("every second", "every %(n)d seconds", number),
        }[period]
        return words % {"n": number}


@dataclass(frozen=True, slots=True)
class Clocked(Schedule):
    """Once, at ``at`` (an aware datetime); if that has passed, the misfire policy decides."""

    at: dt.datetime

    recurring: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if self.at.tzinfo is None:
            raise ValueError(_("A clocked time must be an aware datetime."))

    def iter_after(self, moment: dt.datetime, *, since: dt.datetime) -> Iterator[dt.datetime]:
        if self.at > moment and self.at > since:
            yield self.at.astimezone(UTC)

    def iter_before(self, moment: dt.datetime, *, since: dt.datetime) -> Iterator[dt.datetime]:
        if since < self.at <= moment:
            yield self.at.astimezone(UTC)

    def since_for_new(self, created: dt.datetime) -> dt.datetime:
        return BEGINNING

    def describe(self) -> str:
        return _("once at %(when)s UTC") % {
            "when": self.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        }


@dataclass(frozen=True, slots=True)
class CronFields:
    """The five fields of a crontab, expanded."""

    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  #: 0 is Sunday
    follows_real_time: bool  #: the hour field starts with ``*``

    def matches(self, day: dt.date) -> bool:
        """Return whether the job runs on ``day`` (month, day of month and weekday all match)."""
        return (
            day.month in self.months
            and day.day in self.days
            and day.isoweekday() % 7 in self.weekdays
        )


@functools.lru_cache(maxsize=512)
def expand(
    minute: str, hour: str, day_of_month: str, month_of_year: str, day_of_week: str
) -> CronFields:
    """Expand crontab fields; raise ``ValueError`` naming the first bad one."""
    values = dict(
        zip(CRONTAB_FIELDS, (minute, hour, day_of_month, month_of_year, day_of_week), strict=True)
    )
    # croniter (and dateutil under it) only where a crontab is parsed: beat, the admin, the API
    from croniter import croniter

    expanded: dict[str, frozenset[int]] = {}
    for index, name in enumerate(CRONTAB_FIELDS):
        expression = " ".join(values[name] if i == index else "*" for i in range(5))
        try:
            fields, nth_weekday = croniter.expand(expression)
        except Exception as exc:  # croniter raises several unrelated classes
            raise ValueError(
                _("Invalid crontab %(field)s %(value)r: %(error)s")
                % {"field": name, "value": values[name], "error": exc}
            ) from None
        numbers = fields[index]
        if nth_weekday or any(isinstance(n, str) and n != "*" for n in numbers):
            raise ValueError(
                _("Unsupported crontab %(field)s %(value)r (L, W, # and H are not supported).")
                % {"field": name, "value": values[name]}
            )
        full = FIELD_RANGES[name]
        expanded[name] = frozenset(full if numbers == ["*"] else (int(n) for n in numbers))
    return CronFields(
        minutes=tuple(sorted(expanded["minute"])),
        hours=tuple(sorted(expanded["hour"])),
        days=expanded["day_of_month"],
        months=expanded["month_of_year"],
        weekdays=frozenset(n % 7 for n in expanded["day_of_week"]),
        follows_real_time=hour.strip().startswith("*"),
    )


def _gap_end(before: dt.datetime, after: dt.datetime, zone: ZoneInfo) -> dt.datetime:
    """Return the instant a DST gap ends: the offset changes between ``before`` and ``after``."""
    offset = before.astimezone(zone).utcoffset()
    low, high = before, after
    while high - low > dt.timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(zone).utcoffset() == offset:
            low = middle
        else:
            high = middle
    return high.replace(microsecond=0)


def resolve(wall: dt.datetime, zone: ZoneInfo, *, follows_real_time: bool) -> list[dt.datetime]:
    """Return the UTC instants a naive wall time ``wall`` in ``zone`` fires at (see module doc)."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if first == second:
        return [first]
    exists = first.astimezone(zone).replace(tzinfo=None) == wall
    if exists:  # the wall time occurs twice (fall-back): ``first`` is the earlier instant
        return [first, second] if follows_real_time else [first]
    # The wall time falls into a gap (spring-forward): fold=1 used the later offset.
    return [] if follows_real_time else [_gap_end(second, first, zone)]


@functools.lru_cache(maxsize=128)
def _day(fields: CronFields, zone_name: str, day: dt.date) -> tuple[dt.datetime, ...]:
    """Return the UTC instants a crontab fires at on local ``day``, sorted."""
    zone = ZoneInfo(zone_name)
    instants: set[dt.datetime] = set()
    for hour in fields.hours:
        for minute in fields.minutes:
            wall = dt.datetime.combine(day, dt.time(hour, minute))
            instants.update(resolve(wall, zone, follows_real_time=fields.follows_real_time))
    return tuple(sorted(instants))


def _field(value: str | int | Iterable[int | str]) -> str:
    """Return a Celery-style field value (``5``, ``"*/15"``, ``[0, 30]``) as cron text."""
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value.strip() or "*"
    return ",".join(str(item) for item in value)


@dataclass(frozen=True, slots=True)
class Crontab(Schedule):
    """Cron fields (Celery's syntax) evaluated in ``timezone`` (``None``: ``TQ["TIMEZONE"]``)."""

    minute: str = "*"
    hour: str = "*"
    day_of_week: str = "*"
    day_of_month: str = "*"
    month_of_year: str = "*"
    timezone: str | None = None

    def __post_init__(self) -> None:
        fields = self.fields
        if not any(min(fields.days) <= _days_in(month) for month in fields.months):
            raise ValueError(
                _("This crontab never runs: no month has day %(days)s.")
                % {"days": self.day_of_month}
            )
        if self.timezone is not None:
            check_timezone(self.timezone)

    @property
    def fields(self) -> CronFields:
        """Return the expanded fields."""
        return expand(
            self.minute, self.hour, self.day_of_month, self.month_of_year, self.day_of_week
        )

    @property
    def zone_name(self) -> str:
        """Return the zone the crontab is evaluated in."""
        return self.timezone or default_timezone()

    @property
    def expression(self) -> str:
        """Return the five fields as a cron line (minute hour day-of-month month day-of-week)."""
        return " ".join(
            (self.minute, self.hour, self.day_of_month, self.month_of_year, self.day_of_week)
        )

    def _local_date(self, moment: dt.datetime) -> dt.date:
        return moment.astimezone(ZoneInfo(self.zone_name)).date()

    def iter_after(self, moment: dt.datetime, *, since: dt.datetime) -> Iterator[dt.datetime]:
        floor = max(moment, since)
        fields, zone = self.fields, self.zone_name
        # Start a day early: a wall time in a gap late on the previous day can land after floor.
        day = self._local_date(floor) - ONE_DAY
        idle = 0
        while idle < SEARCH_DAYS:
            idle += 1
            if fields.matches(day):
                for instant in _day(fields, zone, day):
                    if instant > floor:
                        idle = 0
                        yield instant
            day += ONE_DAY

    def iter_before(self, moment: dt.datetime, *, since: dt.datetime) -> Iterator[dt.datetime]:
        if moment <= since:
            return
        fields, zone = self.fields, self.zone_name
        day = self._local_date(moment) + ONE_DAY
        last_day = self._local_date(since) - ONE_DAY
        while day >= last_day:
            if fields.matches(day):
                for instant in reversed(_day(fields, zone, day)):
                    if since < instant <= moment:
                        yield instant
            day -= ONE_DAY

    def describe(self) -> str:
        return describe_crontab(self)


def _days_in(month: int) -> int:
    return 29 if month == 2 else (30 if month in (4, 6, 9, 11) else 31)


# -- constructors with Celery's names ------------------------------------------------------------
def crontab(
    minute: str | int | Iterable[int | str] = "*",
    hour: str | int | Iterable[int | str] = "*",
    day_of_week: str | int | Iterable[int | str] = "*",
    day_of_month: str | int | Iterable[int | str] = "*",
    month_of_year: str | int | Iterable[int | str] = "*",
    timezone: str | None = None,
) -> Crontab:
    """Return a crontab schedule: ``crontab(minute=0, hour=3)`` runs at 03:00 every day.

    Fields take Celery's values: a number, ``"*"``, ``"*/15"``, ``"1-5"``, ``"mon-fri"``, or a
    list of numbers. ``day_of_week`` counts from Sunday (0). ``timezone`` defaults to
    ``TQ["TIMEZONE"]``. Raise ``ValueError`` for a bad field.
    """
    return Crontab(
        minute=_field(minute),
        hour=_field(hour),
        day_of_week=_field(day_of_week),
        day_of_month=_field(day_of_month),
        month_of_year=_field(month_of_year),
        timezone=timezone,
    )


def schedule(run_every: dt.timedelta | float) -> Every:
    """Return an interval schedule (Celery's ``schedule(run_every=…)``); numbers are seconds."""
    if isinstance(run_every, dt.timedelta):
        return Every(run_every)
    return Every(dt.timedelta(seconds=run_every))


def to_schedule(value: Schedule | dt.timedelta | dt.datetime | float) -> Schedule:
    """Return ``value`` as a schedule: a timedelta or seconds is an interval, a datetime clocked."""
    if isinstance(value, Schedule):
        return value
    if isinstance(value, dt.datetime):
        return Clocked(value)
    if isinstance(value, dt.timedelta | int | float) and not isinstance(value, bool):
        return schedule(value)
    raise TypeError(
        _("A schedule must be a crontab(), a timedelta, seconds or a datetime, not %(value)r.")
        % {"value": value}
    )


def local_format(moment: dt.datetime, zone_name: str) -> str:
    """Return ``moment`` as wall time in ``zone_name`` with its abbreviation and UTC offset."""
    return moment.astimezone(ZoneInfo(zone_name)).strftime("%Y-%m-%d %H:%M %Z (UTC%z)")
