"""Celery's crontab fields become django_tq's running on exactly the same numbers.

The port of Celery's parser is checked against Celery's own (Celery is in the dev extra), and
each field django_tq stores is expanded by django_tq's crontab and compared with Celery's sets.
"""

from __future__ import annotations

import pytest
from celery.schedules import ParseException, crontab_parser
from celery.schedules import crontab as celery_crontab

from django_tq.importers.celery_crontab import (
    RANGES,
    CronParseError,
    celery_numbers,
    our_crontab_fields,
    our_numbers,
)
from django_tq.schedules import Crontab

SPECS = {
    "minute": ["*", "*/15", "0,30", "5", "0-59/20", "50-10", "7-9,30", " 5", "0, 30", "*/7", "1-3"],
    "hour": ["*", "*/2", "9-17", "22-2", "0", "8,20", "3-21/6", "23-1/2"],
    "day_of_week": [
        "*", "mon-fri", "sun", "0", "6", "1-5", "sat,sun", "fri-mon", "monday", "MON-FRI",
        "*/2", "tue,thu", "jan", "sunday-tuesday",
    ],
    "day_of_month": ["*", "1", "1,15", "*/3", "28-3", "31", "10-20/5"],
    "month_of_year": ["*", "1", "jan-mar", "*/2", "dec", "11-2", "2-12/2", "sept"],
}  # fmt: skip
BAD = {
    "minute": ["60", "", "-1", "*/0", "1-5/0", "a", "5-", "*/", "1-5/"],
    "hour": ["24", "9-25"],
    "day_of_week": ["7", "8", "1-7", "nonday"],
    "day_of_month": ["0", "32"],
    "month_of_year": ["0", "13"],
}
CASES = [(field, spec) for field, specs in SPECS.items() for spec in specs]
BAD_CASES = [(field, spec) for field, specs in BAD.items() for spec in specs]


def celery_parse(field: str, spec: str) -> set[int]:
    count, first = RANGES[field]
    return crontab_parser(count, first).parse(spec)


@pytest.mark.parametrize(("field", "spec"), CASES)
def test_the_port_reads_a_field_as_celery_does(field: str, spec: str) -> None:
    assert celery_numbers(field, spec) == celery_parse(field, spec)


@pytest.mark.parametrize(("field", "spec"), BAD_CASES)
def test_the_port_rejects_what_celery_rejects(field: str, spec: str) -> None:
    with pytest.raises((ValueError, ParseException)):
        celery_parse(field, spec)
    with pytest.raises(CronParseError):
        celery_numbers(field, spec)


@pytest.mark.parametrize(("field", "spec"), CASES)
def test_the_field_stored_here_runs_on_celerys_numbers(field: str, spec: str) -> None:
    fields = dict.fromkeys(RANGES, "*") | {field: spec}
    ours = our_crontab_fields(fields)
    expected = celery_crontab(**fields)
    expanded = Crontab(**ours).fields
    assert set(expanded.minutes) == expected.minute
    assert set(expanded.hours) == expected.hour
    assert expanded.weekdays == expected.day_of_week
    assert expanded.days == expected.day_of_month
    assert expanded.months == expected.month_of_year


def test_text_both_read_alike_is_kept_and_the_rest_becomes_numbers() -> None:
    fields = {
        "minute": "*/15",
        "hour": "23-1/2",  # Celery wraps the range around midnight, then steps: 23 and 1
        "day_of_week": "monday",  # Celery reads the first three letters
        "day_of_month": "*",
        "month_of_year": "jan-mar",
    }
    assert our_crontab_fields(fields) == {
        "minute": "*/15",
        "hour": "1,23",
        "day_of_week": "1",
        "day_of_month": "*",
        "month_of_year": "jan-mar",
    }
    assert our_crontab_fields(dict.fromkeys(RANGES, "*") | {"hour": "22-2"})["hour"] == "22-2"
    assert our_numbers("minute", "mon") is None  # a weekday name in the minute field
    assert our_crontab_fields(dict.fromkeys(RANGES, "*") | {"day_of_week": "0-6"}) == dict.fromkeys(
        RANGES, "*"
    ) | {"day_of_week": "0-6"}


def test_a_field_celery_rejects_is_named() -> None:
    with pytest.raises(CronParseError, match=r"crontab day_of_week '7': Invalid end range: 7 > 6"):
        our_crontab_fields(dict.fromkeys(RANGES, "*") | {"day_of_week": "7"})
