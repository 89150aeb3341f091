"""Schedule arithmetic: intervals, clocked times and crontabs, across DST in two zones."""

from __future__ import annotations

import datetime as dt
from itertools import islice
from zoneinfo import ZoneInfo

import pytest

from django_tq.schedules import Clocked, Crontab, Every, crontab, schedule, to_schedule

UTC = dt.UTC
PARIS = "Europe/Paris"
NEW_YORK = "America/New_York"
#: (zone, spring-forward day, fall-back day) in 2024
DST_DAYS = [
    (PARIS, dt.date(2024, 3, 31), dt.date(2024, 10, 27)),
    (NEW_YORK, dt.date(2024, 3, 10), dt.date(2024, 11, 3)),
]


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def local_day(cron: Crontab, day: dt.date) -> list[str]:
    """Return the runs of ``cron`` during local ``day``, as local wall times with their offset."""
    zone = ZoneInfo(cron.zone_name)
    start = dt.datetime.combine(day, dt.time(), zone).astimezone(UTC)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), zone).astimezone(UTC)
    runs = []
    for moment in cron.iter_after(
        start - dt.timedelta(microseconds=1), since=start - dt.timedelta(days=2)
    ):
        if moment >= end:
            break
        runs.append(moment.astimezone(zone).strftime("%H:%M%z"))
    return runs


# -- intervals and clocked times -------------------------------------------------------------------
def test_an_interval_counts_from_since() -> None:
    every = schedule(dt.timedelta(minutes=10))
    since = utc("2024-05-01 12:00")
    assert every.next_after(since, since=since) == utc("2024-05-01 12:10")
    assert every.next_after(utc("2024-05-01 12:25"), since=since) == utc("2024-05-01 12:30")
    assert every.next_after(utc("2024-05-01 12:30"), since=since) == utc("2024-05-01 12:40")
    assert every.last_at_or_before(utc("2024-05-01 12:30"), since=since) == utc("2024-05-01 12:30")
    assert every.last_at_or_before(utc("2024-05-01 12:09"), since=since) is None
    assert list(every.iter_before(utc("2024-05-01 12:35"), since=since)) == [
        utc("2024-05-01 12:30"),
        utc("2024-05-01 12:20"),
        utc("2024-05-01 12:10"),
    ]


def test_an_interval_started_at_a_time_runs_at_that_time() -> None:
    every = schedule(3600)
    start = utc("2024-05-01 09:00")
    assert every.next_after(utc("2024-05-01 08:00"), since=every.since_for_start(start)) == start


@pytest.mark.parametrize("value", [0, 0.5, 1.5, dt.timedelta(milliseconds=10)])
def test_an_interval_is_whole_seconds(value: float | dt.timedelta) -> None:
    with pytest.raises(ValueError, match="whole number of seconds"):
        schedule(value)


def test_a_clocked_time_occurs_once() -> None:
    clocked = Clocked(utc("2024-05-01 09:00"))
    assert clocked.next_after(
        utc("2024-05-01 08:00"), since=clocked.since_for_new(utc("2024-05-01 10:00"))
    ) == utc("2024-05-01 09:00")
    assert (
        clocked.next_after(
            utc("2024-05-01 09:00"), since=clocked.since_for_new(utc("2024-05-01 10:00"))
        )
        is None
    )
    assert clocked.last_at_or_before(utc("2024-05-02 00:00"), since=utc("2024-05-01 09:00")) is None
    assert not clocked.recurring


def test_to_schedule_reads_seconds_timedeltas_datetimes_and_crontabs() -> None:
    assert to_schedule(30) == Every(dt.timedelta(seconds=30))
    assert to_schedule(dt.timedelta(hours=1)) == Every(dt.timedelta(hours=1))
    assert to_schedule(utc("2024-05-01 09:00")) == Clocked(utc("2024-05-01 09:00"))
    assert to_schedule(crontab(hour=3)) == crontab(hour=3)
    with pytest.raises(TypeError):
        to_schedule("daily")  # type: ignore[arg-type]


# -- crontab fields -------------------------------------------------------------------------------
def test_crontab_takes_celery_values() -> None:
    cron = crontab(minute=[0, 30], hour="9-17", day_of_week="mon-fri", timezone=PARIS)
    assert cron.expression == "0,30 9-17 * * mon-fri"
    fields = cron.fields
    assert fields.minutes == (0, 30) and fields.hours == tuple(range(9, 18))
    assert fields.weekdays == frozenset({1, 2, 3, 4, 5})
    assert crontab(day_of_week=7).fields.weekdays == frozenset({0})  # 7 is Sunday too


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"hour": 24}, "Invalid crontab hour"),
        ({"minute": "*/x"}, "Invalid crontab minute"),
        ({"day_of_month": "L"}, "not supported"),
        ({"day_of_week": "1#2"}, "not supported"),
        ({"day_of_month": 31, "month_of_year": "2,4"}, "never runs"),
        ({"timezone": "Mars/Olympus"}, "Unknown time zone"),
    ],
)
def test_crontab_rejects_bad_fields_naming_them(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        crontab(**fields)


def test_day_of_month_and_day_of_week_must_both_match() -> None:
    first_monday = crontab(minute=0, hour=9, day_of_month="1-7", day_of_week="mon", timezone="UTC")
    runs = list(
        islice(first_monday.iter_after(utc("2024-01-01 10:00"), since=utc("2024-01-01 10:00")), 3)
    )
    assert runs == [utc("2024-02-05 09:00"), utc("2024-03-04 09:00"), utc("2024-04-01 09:00")]


def test_a_leap_day_crontab_finds_the_next_leap_year() -> None:
    leap = crontab(minute=0, hour=0, day_of_month=29, month_of_year=2, timezone="UTC")
    assert leap.next_after(utc("2024-03-01 00:00"), since=utc("2024-03-01 00:00")) == utc(
        "2028-02-29 00:00"
    )


def test_crontab_runs_backwards_too() -> None:
    cron = crontab(minute=0, hour="*/6", timezone="UTC")
    runs = list(cron.iter_before(utc("2024-05-02 07:00"), since=utc("2024-05-01 11:00")))
    assert runs == [
        utc("2024-05-02 06:00"),
        utc("2024-05-02 00:00"),
        utc("2024-05-01 18:00"),
        utc("2024-05-01 12:00"),
    ]


@pytest.mark.parametrize(
    ("cron", "text"),
    [
        (crontab(minute=0, hour=3, timezone=PARIS), "at 03:00 every day, Europe/Paris"),
        (crontab(timezone="UTC"), "every minute, UTC"),
        (crontab(minute="*/15", timezone="UTC"), "every 15 minutes, UTC"),
        (crontab(minute=30, timezone="UTC"), "at minute 30 of every hour, UTC"),
        (
            crontab(minute=0, hour="9,17", day_of_week="mon-fri", timezone="UTC"),
            "at 09:00 and 17:00 on Monday to Friday, UTC",
        ),
        (
            crontab(minute=0, hour=0, day_of_month=1, month_of_year="1,7", timezone="UTC"),
            "at 00:00 on day 1 of the month in January and July, UTC",
        ),
    ],
)
def test_crontab_in_words(cron: Crontab, text: str) -> None:
    assert cron.describe() == text


def test_intervals_in_words() -> None:
    assert schedule(1).describe() == "every second"
    assert schedule(90).describe() == "every 90 seconds"
    assert schedule(dt.timedelta(hours=2)).describe() == "every 2 hours"
    assert schedule(dt.timedelta(days=1)).describe() == "every day"


# -- daylight saving time -------------------------------------------------------------------------
@pytest.mark.parametrize(("zone", "spring", "fall"), DST_DAYS)
def test_an_hourly_job_follows_real_time(zone: str, spring: dt.date, fall: dt.date) -> None:
    hourly = crontab(minute=0, timezone=zone)
    assert len(local_day(hourly, spring)) == 23
    assert len(local_day(hourly, fall)) == 25
    assert len(local_day(hourly, spring + dt.timedelta(days=7))) == 24


def test_a_half_hourly_star_hour_job_skips_the_gap_and_repeats_the_overlap() -> None:
    cron = crontab(minute="0,30", hour="*", timezone=NEW_YORK)
    spring = local_day(cron, dt.date(2024, 3, 10))
    assert "01:30-0500" in spring and "03:00-0400" in spring and len(spring) == 46
    fall = local_day(cron, dt.date(2024, 11, 3))
    assert fall.count("01:30-0400") == 1 and fall.count("01:30-0500") == 1 and len(fall) == 50


def test_a_0230_job_in_paris_runs_once_on_both_dst_days() -> None:
    cron = crontab(minute=30, hour=2, timezone=PARIS)
    # Spring forward: 02:30 does not exist; it runs at the first instant after the gap.
    assert local_day(cron, dt.date(2024, 3, 31)) == ["03:00+0200"]
    # Fall back: 02:30 occurs twice; it runs at the first.
    assert local_day(cron, dt.date(2024, 10, 27)) == ["02:30+0200"]
    assert local_day(cron, dt.date(2024, 10, 28)) == ["02:30+0100"]


def test_new_york_jobs_in_the_gap_and_the_overlap_run_once() -> None:
    gap = crontab(minute=30, hour=2, timezone=NEW_YORK)
    assert local_day(gap, dt.date(2024, 3, 10)) == ["03:00-0400"]
    assert local_day(gap, dt.date(2024, 11, 3)) == ["02:30-0500"]
    overlap = crontab(minute=30, hour=1, timezone=NEW_YORK)
    assert local_day(overlap, dt.date(2024, 3, 10)) == ["01:30-0500"]
    assert local_day(overlap, dt.date(2024, 11, 3)) == ["01:30-0400"]


def test_several_wall_times_in_the_gap_run_once_at_its_end() -> None:
    cron = crontab(minute="0,15,30,45", hour="2,3", timezone=PARIS)
    assert local_day(cron, dt.date(2024, 3, 31)) == [
        "03:00+0200",
        "03:15+0200",
        "03:30+0200",
        "03:45+0200",
    ]


def test_a_daily_job_keeps_its_wall_time_across_the_change() -> None:
    cron = crontab(minute=0, hour=9, timezone=NEW_YORK)
    runs = list(islice(cron.iter_after(utc("2024-03-09 00:00"), since=utc("2024-03-09 00:00")), 2))
    assert runs == [utc("2024-03-09 14:00"), utc("2024-03-10 13:00")]  # 09:00 EST, then 09:00 EDT
