"""The schedules periodic tasks point at, stored: intervals, crontabs, solar events, clocked times.

A ``PeriodicTask`` (:mod:`django_tq.models.periodic_tasks`) points at exactly one of them. The time
arithmetic lives in :mod:`django_tq.schedules`; these models only store the fields and turn them
into schedule values.
"""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any, ClassVar

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from django_tq.schedules import (
    CRONTAB_FIELDS,
    Clocked,
    Crontab,
    Every,
    Schedule,
    check_timezone,
    default_timezone,
)
from django_tq.sun import EVENTS, Solar


class ScheduleRow(models.Model):
    """A stored schedule. Saving one restarts the schedules of the periodic tasks that use it."""

    #: the foreign key of ``PeriodicTask`` that points at this kind of schedule
    periodic_task_field: ClassVar[str]

    class Meta:
        abstract = True

    def __str__(self) -> str:
        try:
            return self.as_schedule().describe()
        except (TypeError, ValueError):
            return str(_("invalid schedule"))

    def save(self, *args: Any, **kwargs: Any) -> None:
        edited = not self._state.adding
        super().save(*args, **kwargs)
        if edited:
            # An edited schedule counts as an edit of its tasks: they start afresh, without
            # catch-up runs for occurrences the new schedule would have had in the past.
            # PeriodicTask's module imports this one: reach it through the app registry.
            periodic_task = self._meta.apps.get_model("django_tq", "PeriodicTask")
            periodic_task._default_manager.filter(**{self.periodic_task_field: self}).update(
                date_changed=timezone.now()
            )

    def clean(self) -> None:
        try:
            self.as_schedule()
        except (TypeError, ValueError) as exc:
            raise ValidationError(str(exc)) from None

    def as_schedule(self) -> Schedule:
        """Return the schedule value this row stores."""
        raise NotImplementedError


class IntervalSchedule(ScheduleRow):
    """Every N days, hours, minutes or seconds after the last run."""

    class Period(models.TextChoices):
        DAYS = "days", _("days")
        HOURS = "hours", _("hours")
        MINUTES = "minutes", _("minutes")
        SECONDS = "seconds", _("seconds")

    periodic_task_field = "interval"

    every = models.PositiveIntegerField(_("every"), validators=[MinValueValidator(1)])
    period = models.CharField(_("period"), max_length=24, choices=Period.choices)

    class Meta:
        verbose_name = _("interval")
        verbose_name_plural = _("intervals")
        ordering = ["period", "every"]
        constraints = [
            models.UniqueConstraint(fields=["every", "period"], name="tq_interval_unique"),
        ]

    def as_schedule(self) -> Every:
        return Every(dt.timedelta(**{self.period: self.every}))

    @classmethod
    def for_schedule(cls, value: Every) -> IntervalSchedule:
        """Return the row storing ``value``, created if needed."""
        every, period = value.unit
        row, _created = cls.objects.get_or_create(every=every, period=period)
        return row


class CrontabSchedule(ScheduleRow):
    """Cron fields in Celery's syntax, evaluated in ``timezone`` (see django_tq.schedules)."""

    periodic_task_field = "crontab"

    minute = models.CharField(_("minute"), max_length=240, default="*")
    hour = models.CharField(_("hour"), max_length=96, default="*")
    day_of_week = models.CharField(_("day of week"), max_length=64, default="*")
    day_of_month = models.CharField(_("day of month"), max_length=124, default="*")
    month_of_year = models.CharField(_("month of year"), max_length=64, default="*")
    timezone = models.CharField(_("time zone"), max_length=63, default=default_timezone)

    class Meta:
        verbose_name = _("crontab")
        verbose_name_plural = _("crontabs")
        ordering = ["month_of_year", "day_of_month", "day_of_week", "hour", "minute"]
        constraints = [
            models.UniqueConstraint(
                fields=[
                    "minute",
                    "hour",
                    "day_of_week",
                    "day_of_month",
                    "month_of_year",
                    "timezone",
                ],
                name="tq_crontab_unique",
            ),
        ]

    def clean(self) -> None:
        errors = {}
        for field in CRONTAB_FIELDS:
            try:
                Crontab(**{field: getattr(self, field)})
            except ValueError as exc:
                errors[field] = str(exc)
        try:
            check_timezone(self.timezone)
        except ValueError as exc:
            errors["timezone"] = str(exc)
        if errors:
            raise ValidationError(errors)
        super().clean()

    def as_schedule(self) -> Crontab:
        return Crontab(
            minute=self.minute,
            hour=self.hour,
            day_of_week=self.day_of_week,
            day_of_month=self.day_of_month,
            month_of_year=self.month_of_year,
            timezone=self.timezone,
        )

    @classmethod
    def for_schedule(cls, value: Crontab) -> CrontabSchedule:
        """Return the row storing ``value`` (its zone resolved), created if needed."""
        row, _created = cls.objects.get_or_create(
            minute=value.minute,
            hour=value.hour,
            day_of_week=value.day_of_week,
            day_of_month=value.day_of_month,
            month_of_year=value.month_of_year,
            timezone=value.zone_name,
        )
        return row


class ClockedSchedule(ScheduleRow):
    """Once, at a set time."""

    periodic_task_field = "clocked"

    clocked_time = models.DateTimeField(_("clocked time"), unique=True)

    class Meta:
        verbose_name = _("clocked time")
        verbose_name_plural = _("clocked times")
        ordering = ["clocked_time"]

    def as_schedule(self) -> Clocked:
        return Clocked(self.clocked_time)

    @classmethod
    def for_schedule(cls, value: Clocked) -> ClockedSchedule:
        """Return the row storing ``value``, created if needed."""
        row, _created = cls.objects.get_or_create(clocked_time=value.at)
        return row


class SolarSchedule(ScheduleRow):
    """At a solar event (sunrise, sunset, a twilight, solar noon) at a place on Earth."""

    periodic_task_field = "solar"

    event = models.CharField(
        _("solar event"), max_length=24, choices=[(key, label) for key, label in EVENTS.items()]
    )
    latitude = models.DecimalField(
        _("latitude"), max_digits=9, decimal_places=6, help_text=_("North is positive.")
    )
    longitude = models.DecimalField(
        _("longitude"), max_digits=9, decimal_places=6, help_text=_("East is positive.")
    )

    class Meta:
        verbose_name = _("solar event")
        verbose_name_plural = _("solar events")
        ordering = ["event", "latitude", "longitude"]
        constraints = [
            models.UniqueConstraint(
                fields=["event", "latitude", "longitude"], name="tq_solar_unique"
            ),
        ]

    def as_schedule(self) -> Solar:
        return Solar(event=self.event, latitude=self.latitude, longitude=self.longitude)

    @classmethod
    def for_schedule(cls, value: Solar) -> SolarSchedule:
        """Return the row storing ``value`` (its place to the micro-degree), created if needed."""
        places = decimal.Decimal("0.000001")
        row, _created = cls.objects.get_or_create(
            event=value.event,
            latitude=value.latitude.quantize(places),
            longitude=value.longitude.quantize(places),
        )
        return row


#: the row model of each kind of schedule value
ROW_MODELS: dict[type[Schedule], type[ScheduleRow]] = {
    Every: IntervalSchedule,
    Crontab: CrontabSchedule,
    Solar: SolarSchedule,
    Clocked: ClockedSchedule,
}


def row_for(schedule: Schedule) -> ScheduleRow:
    """Return the stored row of ``schedule`` (created if needed); raise ``TypeError`` if unknown."""
    model: Any = ROW_MODELS.get(type(schedule))
    if model is None:
        raise TypeError(f"Unsupported schedule {schedule!r}.")
    row: ScheduleRow = model.for_schedule(schedule)
    return row
