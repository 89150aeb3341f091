"""Which occurrences of a schedule to send now, under a misfire policy (pure, no database).

An occurrence found within ``grace`` of its time is *on time* and is always sent. One found
later was *missed* (beat was down, or the database slow); the policy decides what happens to the
missed ones:

* ``run_once`` (default) — they collapse into one catch-up run, the latest of them;
* ``skip`` — they are dropped;
* ``run_all`` — each is sent, the latest :data:`RUN_ALL_LIMIT` at most.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from itertools import islice, takewhile

from django_tq.models.periodic_tasks import MisfirePolicy
from django_tq.schedules import Schedule

#: the most missed runs ``run_all`` sends after downtime (the latest ones)
RUN_ALL_LIMIT = 100


@dataclass(frozen=True, kw_only=True, slots=True)
class Due:
    """What to do with a periodic task now."""

    send: tuple[dt.datetime, ...] = ()  #: occurrences to send, earliest first
    latest: dt.datetime | None = None  #: the latest due occurrence, sent or not


def due(
    schedule: Schedule,
    *,
    since: dt.datetime,
    floor: dt.datetime,
    now: dt.datetime,
    grace: dt.timedelta,
    policy: str,
    one_off: bool = False,
) -> Due:
    """Return the occurrences in ``(floor, now]`` to send under ``policy``.

    ``since`` is what the schedule counts from (an interval's last run); ``floor`` (at or after
    ``since``) excludes what came before. A one-off task sends only the latest of them.
    """
    cutoff = now - grace
    on_time = list(
        takewhile(
            lambda moment: moment <= now, schedule.iter_after(max(floor, cutoff), since=since)
        )
    )
    missed: list[dt.datetime] = []
    if cutoff > floor:
        earlier = takewhile(
            lambda moment: moment > floor, schedule.iter_before(cutoff, since=since)
        )
        if policy == MisfirePolicy.RUN_ALL:
            missed = list(islice(earlier, RUN_ALL_LIMIT))[::-1]
        else:
            missed = list(islice(earlier, 1))
    latest = on_time[-1] if on_time else (missed[-1] if missed else None)
    send = on_time if policy == MisfirePolicy.SKIP else missed + on_time
    if one_off:
        send = send[-1:]
    return Due(send=tuple(send), latest=latest)
