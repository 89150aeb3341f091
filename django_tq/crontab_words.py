"""A crontab in words, for the admin and the API: ``at 03:00 every day, Europe/Paris``.

Every phrase goes through gettext, so the words follow the active language.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from django.utils.dates import MONTHS, WEEKDAYS
from django.utils.text import get_text_list
from django.utils.translation import gettext as _
from django.utils.translation import pgettext

if TYPE_CHECKING:
    from django_tq.schedules import CronFields, Crontab


def _runs(numbers: Iterable[int]) -> list[tuple[int, int]]:
    """Group sorted numbers into (first, last) runs of consecutive values."""
    runs: list[tuple[int, int]] = []
    for number in sorted(numbers):
        if runs and number == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], number)
        else:
            runs.append((number, number))
    return runs


def _named(numbers: Iterable[int], name: dict[int, str]) -> str:
    """Return numbers as names, consecutive runs of three or more as ``Monday to Friday``."""
    parts: list[str] = []
    for first, last in _runs(numbers):
        if last - first >= 2:
            parts.append(_("%(first)s to %(last)s") % {"first": name[first], "last": name[last]})
        else:
            parts.extend(name[n] for n in range(first, last + 1))
    return get_text_list(parts, _("and"))


def _time_part(cron: Crontab, fields: CronFields) -> str:
    minute, hour = cron.minute, cron.hour
    if minute == "*" and hour == "*":
        return pgettext("crontab", "every minute")
    if hour == "*" and minute.startswith("*/"):
        return _("every %(n)s minutes") % {"n": minute[2:]}
    if hour == "*" and len(fields.minutes) == 1:
        return _("at minute %(minute)d of every hour") % {"minute": fields.minutes[0]}
    if "*" not in hour and "*" not in minute and len(fields.hours) * len(fields.minutes) <= 4:
        times = [f"{h:02d}:{m:02d}" for h in fields.hours for m in fields.minutes]
        return _("at %(times)s") % {"times": get_text_list(times, _("and"))}
    return _("at minute %(minute)s of hour %(hour)s") % {"minute": minute, "hour": hour}


def describe_crontab(cron: Crontab) -> str:
    """Return a crontab in words: ``at 03:00 every day, Europe/Paris``."""
    fields = cron.fields
    parts = [_time_part(cron, fields)]
    weekdays = {n: str(WEEKDAYS[(n - 1) % 7]) for n in range(7)}
    months = {n: str(MONTHS[n]) for n in range(1, 13)}
    if cron.day_of_month == "*" and cron.day_of_week == "*" and cron.hour != "*":
        parts.append(pgettext("crontab", "every day"))
    if cron.day_of_month != "*":
        days = ", ".join(f"{a}-{b}" if b > a else str(a) for a, b in _runs(fields.days))
        parts.append(_("on day %(days)s of the month") % {"days": days})
    if cron.day_of_week != "*":
        text = _named(fields.weekdays, weekdays)
        if cron.day_of_month != "*":
            parts.append(_("if it is a %(weekdays)s") % {"weekdays": text})
        else:
            parts.append(_("on %(weekdays)s") % {"weekdays": text})
    if cron.month_of_year != "*":
        parts.append(_("in %(months)s") % {"months": _named(fields.months, months)})
    return f"{' '.join(parts)}, {cron.zone_name}"
