"""Solar schedules: at sunrise, sunset, solar noon or a twilight, at a place on Earth.

``solar("sunset", 48.8566, 2.3522)`` runs at every sunset in Paris. The events are Celery's
(``celery.schedules.solar``): astronomical, nautical and civil dawn and dusk (the sun's centre
18°, 12° and 6° below the horizon), sunrise and sunset (its upper edge at the horizon, with
refraction) and solar noon (the sun at its highest).

The astronomy is `astral <https://pypi.org/project/astral/>`_'s (pure Python, imported only here,
the ``solar`` extra). An event that does not happen on a day — no sunset in a polar summer, no
astronomical dusk in a London June — is skipped: the schedule's next run is the next day it
happens. A place where it never happens within :data:`SEARCH_DAYS` has no next run.
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from django_tq.schedules import UTC, Schedule

#: Celery's solar events, in the order of a day, with their names in words
EVENTS = {
    "dawn_astronomical": gettext_lazy("astronomical dawn"),
    "dawn_nautical": gettext_lazy("nautical dawn"),
    "dawn_civil": gettext_lazy("civil dawn"),
    "sunrise": gettext_lazy("sunrise"),
    "solar_noon": gettext_lazy("solar noon"),
    "sunset": gettext_lazy("sunset"),
    "dusk_civil": gettext_lazy("civil dusk"),
    "dusk_nautical": gettext_lazy("nautical dusk"),
    "dusk_astronomical": gettext_lazy("astronomical dusk"),
}
LATITUDE, LONGITUDE = gettext_lazy("latitude"), gettext_lazy("longitude")
#: how far below the horizon the sun's centre is at each twilight, in degrees
DEPRESSIONS = {"astronomical": 18.0, "nautical": 12.0, "civil": 6.0}
#: how many days without the event a search goes through before concluding it never happens
#: (the polar night at the pole lasts about 180 days)
SEARCH_DAYS = 400
ONE_DAY = dt.timedelta(days=1)
#: two occurrences of one event closer than this are one (computed from two neighbouring dates)
SAME_EVENT = dt.timedelta(hours=12)


def _astral() -> Any:
    """Return astral's ``sun`` module, or raise ``ImproperlyConfigured`` saying how to get it."""
    try:
        from astral import sun
    except ImportError:
        raise ImproperlyConfigured(
            "Solar schedules need astral: pip install 'django-tq[solar]'."
        ) from None
    return sun


def _degrees(value: float | decimal.Decimal | str, name: Any, limit: int) -> decimal.Decimal:
    try:
        number = decimal.Decimal(str(value))
    except decimal.InvalidOperation:
        raise ValueError(
            _("The %(name)s must be a number (got %(value)r).") % {"name": name, "value": value}
        ) from None
    if not number.is_finite() or not -limit <= number <= limit:
        raise ValueError(
            _("The %(name)s must be between -%(limit)d and %(limit)d degrees (got %(value)s).")
            % {"name": name, "limit": limit, "value": value}
        )
    return number


@functools.lru_cache(maxsize=2048)
def occurrence(event: str, latitude: float, longitude: float, day: dt.date) -> dt.datetime | None:
    """Return when ``event`` happens on ``day`` (in the place's own solar time), in UTC.

    Return ``None`` when it does not happen that day (the sun does not get that high or low).
    """
    sun = _astral()
    from astral import Observer

    observer = Observer(latitude=latitude, longitude=longitude)
    # Local mean solar time, so that "the day" is the place's day wherever it is.
    zone = dt.timezone(dt.timedelta(hours=round(longitude / 15)))
    compute: Callable[..., dt.datetime]
    kind, _sep, twilight = event.partition("_")
    if event == "solar_noon":
        compute = sun.noon
    elif event in ("sunrise", "sunset"):
        compute = getattr(sun, event)
    else:
        compute = functools.partial(getattr(sun, kind), depression=DEPRESSIONS[twilight])
    try:
        moment = compute(observer, day, tzinfo=zone)
    except ValueError:  # astral: "Sun never reaches … degrees below the horizon"
        return None
    return moment.astimezone(UTC).replace(microsecond=0)


@dataclass(frozen=True, slots=True)
class Solar(Schedule):
    """At ``event`` (one of :data:`EVENTS`) every day it happens at ``latitude``, ``longitude``."""

    event: str
    latitude: decimal.Decimal
    longitude: decimal.Decimal

    def __post_init__(self) -> None:
        if self.event not in EVENTS:
            raise ValueError(
                _("Unknown solar event %(event)r: choose one of %(events)s.")
                % {"event": self.event, "events": ", ".join(EVENTS)}
            )
        # Translated only on an error: settings may call solar() before the apps are loaded.
        object.__setattr__(self, "latitude", _degrees(self.latitude, LATITUDE, 90))
        object.__setattr__(self, "longitude", _degrees(self.longitude, LONGITUDE, 180))

    def _on(self, day: dt.date) -> dt.datetime | None:
        return occurrence(self.event, float(self.latitude), float(self.longitude), day)

    def _local_date(self, moment: dt.datetime) -> dt.date:
        return moment.astimezone(dt.timezone(dt.timedelta(hours=round(self.longitude / 15)))).date()

    def _days(self, start: dt.date, step: dt.timedelta) -> Iterator[dt.datetime]:
        """Yield the occurrences day by day from ``start`` on, in ``step``'s direction."""
        day, idle, previous = start, 0, None
        while idle < SEARCH_DAYS:
            moment = self._on(day)
            day += step
            if moment is None or (previous is not None and abs(moment - previous) < SAME_EVENT):
                idle += 1
                continue
            idle, previous = 0, moment
            yield moment

    def iter_after(self, moment: dt.datetime, *, since: dt.datetime) -> Iterator[dt.datetime]:
        floor = max(moment, since)
        for occurred in self._days(self._local_date(floor) - ONE_DAY, ONE_DAY):
            if occurred > floor:
                yield occurred

    def iter_before(self, moment: dt.datetime, *, since: dt.datetime) -> Iterator[dt.datetime]:
        if moment <= since:
            return
        for occurred in self._days(self._local_date(moment) + ONE_DAY, -ONE_DAY):
            if occurred <= since:
                return
            if occurred <= moment:
                yield occurred

    def describe(self) -> str:
        return _("at %(event)s at %(latitude)s, %(longitude)s") % {
            "event": EVENTS[self.event],
            "latitude": format(self.latitude.normalize(), "f"),
            "longitude": format(self.longitude.normalize(), "f"),
        }


def solar(
    event: str, lat: float | decimal.Decimal | str, lon: float | decimal.Decimal | str
) -> Solar:
    """Return a solar schedule (Celery's ``solar(event, lat, lon)``): ``solar("sunset", 48.85, 2.35)``.

    ``event`` is one of :data:`EVENTS`; latitude north and longitude east are positive. Raise
    ``ValueError`` for an unknown event or a place off the globe.
    """
    return Solar(event=event, latitude=lat, longitude=lon)  # type: ignore[arg-type]
