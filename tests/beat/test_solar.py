"""Solar schedules against published almanac tables, polar day and night, beat, admin and API.

Sources of the expected times (each table's own rounding is to the minute):

* Trondheim and Tromsø, 6 May 2020: *Almanakk for Norge 2021*, as quoted by the University of
  Oslo's Institute of Theoretical Astrophysics, "Soloppgang og solnedgang i Midt-Norge 2021" and
  "… i Nord-Norge 2021" (the worked examples: Trondheim rises 04:39, south 13:15, sets 21:53;
  Tromsø 02:50, 12:41, 22:37; Norwegian summer time, UTC+2).
* Tromsø (69.5 N, 19.0 E), 1 April 2014 and the midnight sun of 2014: the US Naval Observatory's
  "Sun and Moon Data for One Day" (UT+1): civil twilight begins 03:46, sunrise 04:50, transit
  11:48, sunset 18:49, civil twilight ends 19:53; after 17 May the sun next sets at 23:20 on
  25 July.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from decimal import Decimal
from itertools import islice
from typing import Any

import pytest
from django.urls import reverse

from django_tq import solar
from django_tq.beat.scheduler import Scheduler
from django_tq.models import PeriodicTask, SolarSchedule
from django_tq.sun import EVENTS, Solar
from django_tq.testing import CapturedQueue
from tests.beat.conftest import make_task, utc

TRONDHEIM = (63.4305, 10.3951)
TROMSO_ALMANAC = (69.6492, 18.9553)
TROMSO_USNO = (69.5, 19.0)
#: the published tables round to the minute; astral and the almanacs model refraction a little
#: differently
TOLERANCE = dt.timedelta(minutes=2)


def first_after(schedule: Solar, moment: dt.datetime) -> dt.datetime:
    return next(schedule.iter_after(moment, since=moment))


def near(found: dt.datetime, expected: dt.datetime, tolerance: dt.timedelta = TOLERANCE) -> bool:
    return abs(found - expected) <= tolerance


@pytest.mark.parametrize(
    ("place", "event", "expected"),
    [
        (TRONDHEIM, "sunrise", "2020-05-06 02:39"),
        (TRONDHEIM, "solar_noon", "2020-05-06 11:15"),
        (TRONDHEIM, "sunset", "2020-05-06 19:53"),
        (TROMSO_ALMANAC, "sunrise", "2020-05-06 00:50"),
        (TROMSO_ALMANAC, "solar_noon", "2020-05-06 10:41"),
        (TROMSO_ALMANAC, "sunset", "2020-05-06 20:37"),
        (TROMSO_USNO, "dawn_civil", "2014-04-01 02:46"),
        (TROMSO_USNO, "sunrise", "2014-04-01 03:50"),
        (TROMSO_USNO, "solar_noon", "2014-04-01 10:48"),
        (TROMSO_USNO, "sunset", "2014-04-01 17:49"),
        (TROMSO_USNO, "dusk_civil", "2014-04-01 18:53"),
    ],
)
def test_events_match_the_published_tables(
    place: tuple[float, float], event: str, expected: str
) -> None:
    day_start = utc(expected[:10] + " 00:00") - dt.timedelta(hours=3)
    assert near(first_after(solar(event, *place), day_start), utc(expected))


def test_the_midnight_sun_skips_sunsets_until_the_sun_sets_again() -> None:
    sunsets = solar("sunset", *TROMSO_USNO)
    # USNO: no sunset at Tromsø between late May and 25 July 2014, 23:20 UT+1
    assert near(
        first_after(sunsets, utc("2014-06-01 00:00")),
        utc("2014-07-25 22:20"),
        dt.timedelta(minutes=5),
    )
    runs = list(islice(sunsets.iter_after(utc("2014-07-20 00:00"), since=BEGIN), 3))
    assert [run.date() for run in runs] == [dt.date(2014, 7, d) for d in (25, 26, 27)]
    # and backwards, as beat's misfire policies read it: the last sunset before the polar day
    (last,) = islice(sunsets.iter_before(utc("2014-07-01 00:00"), since=BEGIN), 1)
    assert dt.date(2014, 5, 17) <= last.date() <= dt.date(2014, 5, 19)


def test_the_polar_night_skips_sunrises_and_a_night_long_twilight_skips_its_dusk() -> None:
    sunrises = solar("sunrise", *TROMSO_ALMANAC)
    # Tromsø's polar night: the sun stays below the horizon from late November to mid January
    after = first_after(sunrises, utc("2014-12-10 00:00"))
    assert dt.date(2015, 1, 14) <= after.date() <= dt.date(2015, 1, 17)
    # London at midsummer: the sun never gets 18° below the horizon, so no astronomical dusk
    dusk = first_after(solar("dusk_astronomical", 51.5074, -0.1278), utc("2024-06-21 00:00"))
    assert dusk.date() >= dt.date(2024, 7, 15)


def test_bad_events_and_places_are_refused_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match="Unknown solar event 'moonrise'"):
        solar("moonrise", 0, 0)
    with pytest.raises(ValueError, match="latitude must be between -90 and 90"):
        solar("sunset", 91, 0)
    with pytest.raises(ValueError, match="longitude must be a number"):
        solar("sunset", 0, "east")
    assert next(iter(EVENTS)) == "dawn_astronomical" and len(EVENTS) == 9


def test_settings_can_declare_a_solar_schedule_before_the_apps_are_loaded() -> None:
    # TQ["BEAT_SCHEDULE"] is read from settings.py, before Django translates anything
    code = (
        "from django.conf import settings; settings.configure(); "
        "from django_tq import solar; print(solar('sunset', 48.85, 2.35).event)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "sunset", done.stderr


BEGIN = utc("2014-01-01 00:00")


@pytest.mark.django_db
@pytest.mark.db
def test_beat_sends_a_solar_task_at_sunset_and_not_before(queue: CapturedQueue) -> None:
    created = utc("2020-05-06 12:00")
    job = make_task(solar("sunset", *TRONDHEIM), created=created)
    assert job.solar is not None and job.get_schedule() == Solar(
        event="sunset", latitude=Decimal("63.4305"), longitude=Decimal("10.3951")
    )
    beat = Scheduler(name="beat-solar", max_interval=5, grace=dt.timedelta(seconds=10))
    sunset = first_after(job.get_schedule(), created)
    assert beat.tick(sunset - dt.timedelta(seconds=1)) == []
    (sent,) = beat.tick(sunset)
    assert sent.scheduled_for == sunset and len(queue.messages) == 1
    job.refresh_from_db()
    (upcoming, *_rest) = job.upcoming(sunset, 2)
    assert upcoming.date() == dt.date(2020, 5, 7)


@pytest.mark.django_db
@pytest.mark.django_version
def test_the_admin_screen_adds_a_solar_event_and_previews_its_next_runs(
    admin_client: Any,
) -> None:
    url = reverse("admin:django_tq_solarschedule_add")
    response = admin_client.post(url, {"event": "sunrise", "latitude": "91", "longitude": "10.75"})
    assert response.status_code == 200 and "between -90 and 90" in response.content.decode()
    response = admin_client.post(
        url, {"event": "sunrise", "latitude": "59.9139", "longitude": "10.7522"}
    )
    assert response.status_code == 302
    row = SolarSchedule.objects.get()
    page = admin_client.get(reverse("admin:django_tq_solarschedule_change", args=[row.pk]))
    content = page.content.decode()
    assert "at sunrise at 59.9139, 10.7522" in content and content.count("<li>") >= 5


@pytest.mark.django_db
@pytest.mark.django_version
def test_the_api_nests_a_solar_schedule(admin_client: Any) -> None:
    body = {
        "name": "lights on",
        "task": "tests.testapp.tasks.record",
        "solar": {"event": "dusk_civil", "latitude": "48.8566", "longitude": "2.3522"},
    }
    response = admin_client.post("/api/tq/periodic-tasks/", body, content_type="application/json")
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["solar"] == {
        "event": "dusk_civil",
        "latitude": "48.856600",
        "longitude": "2.352200",
    }
    assert data["schedule"] == "at civil dusk at 48.8566, 2.3522" and data["next_run"]
    assert PeriodicTask.objects.get().solar == SolarSchedule.objects.get()
    bad = {**body, "name": "bad", "solar": {"event": "moonrise", "latitude": 0, "longitude": 0}}
    response = admin_client.post("/api/tq/periodic-tasks/", bad, content_type="application/json")
    assert response.status_code == 400 and "event" in response.json()["solar"]
