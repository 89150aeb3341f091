"""Periodic tasks: what beat sends and with which options, and each occurrence it claimed.

A ``PeriodicTask`` has exactly one schedule — an ``IntervalSchedule``, a ``CrontabSchedule``, a
``SolarSchedule`` or a ``ClockedSchedule`` (:mod:`django_tq.models.schedules`; a database constraint says so). Beat claims
every occurrence it sends by inserting a ``PeriodicTaskRun``, unique on
``(periodic_task, scheduled_for)``: with several beats running, only one insert wins, so each
occurrence is sent once.
"""

from __future__ import annotations

import datetime as dt
import functools
import operator
import uuid
from typing import Any, ClassVar

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.core.validators import MaxValueValidator, RegexValidator
from django.db import models
from django.db.models import F, Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from django_tq import routing
from django_tq.exceptions import QueueNotFound
from django_tq.models.schedules import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    ScheduleRow,
    SolarSchedule,
)
from django_tq.registry import registry
from django_tq.schedules import Schedule

#: namespace of the task ids of periodic runs (uuid5 of the periodic task and the occurrence)
RUN_NAMESPACE = uuid.UUID("5f0c2a8e-2f4b-4c1e-9a51-7d3e0b6c9e21")


def occurrence_task_id(periodic_task_id: int, scheduled_for: dt.datetime) -> str:
    """Return the task id of one occurrence: the same for every beat, so a re-send is a no-op."""
    moment = scheduled_for.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return str(uuid.uuid5(RUN_NAMESPACE, f"{periodic_task_id}@{moment}"))


#: the schedule foreign keys of a periodic task; exactly one is set
SCHEDULE_FIELDS = ("interval", "crontab", "solar", "clocked")
#: the fields that say where a run goes (``apply_async``'s options of the same names)
ROUTING_FIELDS = ("queue", "exchange", "routing_key")
#: what an exchange name or a routing key may be made of (as a queue name, ``routing.QUEUE_NAME``)
ROUTING_NAME = RegexValidator(
    routing.QUEUE_NAME, _("Use letters, digits and . _ : @ - only (no spaces).")
)


def routing_problem(*, queue: str, exchange: str, routing_key: str) -> str | None:
    """Return why a run sent with these options would reach no queue, if it would not.

    Routed as a call with the same options is (:func:`django_tq.routing.destination`): an
    exchange not in ``TQ["QUEUES"]``, a key no declared queue is bound with, or an undeclared
    queue with ``CREATE_MISSING_QUEUES`` off is refused when the task is saved (or imported)
    rather than failing at every run.
    """
    try:
        routing.destination({"queue": queue, "exchange": exchange, "routing_key": routing_key})
    except QueueNotFound as exc:
        return str(exc)
    return None


class MisfirePolicy(models.TextChoices):
    """What beat does with occurrences it finds late (after downtime)."""

    RUN_ONCE = "run_once", _("run once: one catch-up run for all the missed ones")
    SKIP = "skip", _("skip: drop the missed runs")
    RUN_ALL = "run_all", _("run all: every missed run (the latest 100 at most)")


class PeriodicTask(models.Model):
    """A task sent on a schedule, with its arguments and delivery options."""

    #: the schedule foreign keys; exactly one is set
    SCHEDULE_FIELDS: ClassVar[tuple[str, ...]] = SCHEDULE_FIELDS

    name = models.CharField(_("name"), max_length=200, unique=True)
    task = models.CharField(_("task"), max_length=255)
    interval = models.ForeignKey(
        IntervalSchedule,
        verbose_name=_("interval"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="periodic_tasks",
    )
    crontab = models.ForeignKey(
        CrontabSchedule,
        verbose_name=_("crontab"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="periodic_tasks",
    )
    solar = models.ForeignKey(
        SolarSchedule,
        verbose_name=_("solar event"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="periodic_tasks",
    )
    clocked = models.ForeignKey(
        ClockedSchedule,
        verbose_name=_("clocked time"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="periodic_tasks",
    )
    args = models.JSONField(_("positional arguments"), default=list, blank=True)
    kwargs = models.JSONField(_("keyword arguments"), default=dict, blank=True)
    queue = models.CharField(
        _("queue"),
        max_length=200,
        blank=True,
        default="",
        help_text=_("Leave empty to route the task as usual."),
    )
    exchange = models.CharField(
        _("exchange"),
        max_length=200,
        blank=True,
        default="",
        validators=[ROUTING_NAME],
        help_text=_(
            "Publish through this exchange of TQ['QUEUES'] (with the routing key). Leave empty "
            "for the default exchange when a routing key is given, else to route as usual."
        ),
    )
    routing_key = models.CharField(
        _("routing key"),
        max_length=200,
        blank=True,
        default="",
        validators=[ROUTING_NAME],
        help_text=_(
            "The key the exchange routes by (feed.import reaches a queue bound with feed.#). "
            "Leave empty to route as usual."
        ),
    )
    priority = models.PositiveSmallIntegerField(
        _("priority"),
        null=True,
        blank=True,
        validators=[MaxValueValidator(9)],
        help_text=_("0 to 9, 9 the highest. Leave empty for the task's own."),
    )
    headers = models.JSONField(_("headers"), default=dict, blank=True)
    enabled = models.BooleanField(_("enabled"), default=True)
    one_off = models.BooleanField(
        _("one-off"), default=False, help_text=_("Run once, then disable the task.")
    )
    start_time = models.DateTimeField(
        _("start time"), null=True, blank=True, help_text=_("No run before this time.")
    )
    expires = models.DateTimeField(
        _("expires"),
        null=True,
        blank=True,
        help_text=_("No run after this time; runs sent before it expire then."),
    )
    expire_seconds = models.PositiveIntegerField(
        _("expire seconds"),
        null=True,
        blank=True,
        help_text=_("A run not started this many seconds after its time is dropped."),
    )
    misfire_policy = models.CharField(
        _("misfire policy"),
        max_length=16,
        choices=MisfirePolicy.choices,
        default=MisfirePolicy.RUN_ONCE,
    )
    last_run_at = models.DateTimeField(
        _("last run at"),
        null=True,
        blank=True,
        editable=False,
        help_text=_("The scheduled time of the latest run sent."),
    )
    total_run_count = models.PositiveIntegerField(_("runs"), default=0, editable=False)
    description = models.TextField(_("description"), blank=True, default="")
    code_managed = models.BooleanField(
        _("declared in code"),
        default=False,
        editable=False,
        help_text=_(
            "Declared in TQ['BEAT_SCHEDULE'] or with @periodic_task; synced at beat start."
        ),
    )
    date_created = models.DateTimeField(_("created"), auto_now_add=True)
    date_changed = models.DateTimeField(_("changed"), auto_now=True)

    class Meta:
        verbose_name = _("periodic task")
        verbose_name_plural = _("periodic tasks")
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=functools.reduce(
                    operator.or_,
                    (
                        Q(**{f"{field}__isnull": field != chosen for field in SCHEDULE_FIELDS})
                        for chosen in SCHEDULE_FIELDS
                    ),
                ),
                name="tq_periodic_task_one_schedule",
                violation_error_message=_(
                    "Choose exactly one schedule: an interval, a crontab, a solar event or a clocked time."
                ),
            ),
            models.CheckConstraint(
                condition=Q(priority__isnull=True) | Q(priority__lte=9),
                name="tq_periodic_task_priority",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    # -- the schedule ---------------------------------------------------------------------------
    def schedule_row(self) -> ScheduleRow | None:
        """Return the schedule row that is set (loads it unless it was selected with the task)."""
        for field in self.SCHEDULE_FIELDS:
            if getattr(self, f"{field}_id") is not None:
                row: ScheduleRow = getattr(self, field)
                return row
        return None

    def get_schedule(self) -> Schedule:
        """Return the schedule value; raise ``ValueError`` when the task has none."""
        row = self.schedule_row()
        if row is None:
            raise ValueError(f"Periodic task {self.name!r} has no schedule.")
        return row.as_schedule()

    def since(self, schedule: Schedule) -> dt.datetime:
        """Return the instant the schedule counts from: the last run, start time or creation."""
        start = self.start_time
        if start is not None and (self.last_run_at is None or self.last_run_at < start):
            return schedule.since_for_start(start)
        if self.last_run_at is not None:
            return self.last_run_at
        return schedule.since_for_new(self.date_created or timezone.now())

    def upcoming(self, now: dt.datetime, count: int = 5) -> list[dt.datetime]:
        """Return the next ``count`` run times after ``now`` (fewer if the schedule ends)."""
        schedule = self.get_schedule()
        runs: list[dt.datetime] = []
        for moment in schedule.iter_after(now, since=self.since(schedule)):
            if (self.expires is not None and moment >= self.expires) or len(runs) >= count:
                break
            runs.append(moment)
            if self.one_off:
                break
        return runs

    def call_options(self, scheduled_for: dt.datetime) -> dict[str, Any]:
        """Return the ``apply_async`` options of the run scheduled for ``scheduled_for``."""
        headers = {
            **(self.headers or {}),
            "periodic_task": self.name,
            "scheduled_for": scheduled_for.isoformat(),
        }
        options: dict[str, Any] = {"headers": headers}
        for field in ROUTING_FIELDS:
            if getattr(self, field):
                options[field] = getattr(self, field)
        if self.priority is not None:
            options["priority"] = self.priority
        deadlines = [self.expires] if self.expires is not None else []
        if self.expire_seconds is not None:
            deadlines.append(scheduled_for + dt.timedelta(seconds=self.expire_seconds))
        if deadlines:
            options["expires"] = min(deadlines)
        return options

    def record_sent_now(self, task_id: str, *, by: str) -> PeriodicTaskRun:
        """Record a run sent outside the schedule ("run now"); the schedule itself is unchanged."""
        now = timezone.now()
        run = PeriodicTaskRun.objects.create(
            periodic_task=self,
            scheduled_for=now,
            task_id=task_id,
            claimed_at=now,
            claimed_by=by,
            sent_at=now,
        )
        PeriodicTask.objects.filter(pk=self.pk).update(total_run_count=F("total_run_count") + 1)
        return run

    # -- validation -----------------------------------------------------------------------------
    def clean(self) -> None:
        errors: dict[str, list[Any]] = {}
        chosen = [field for field in self.SCHEDULE_FIELDS if getattr(self, f"{field}_id")]
        if len(chosen) != 1:
            message = _(
                "Choose exactly one schedule: an interval, a crontab, a solar event or a clocked time."
            )
            for field in self.SCHEDULE_FIELDS:
                errors.setdefault(field, []).append(message)
        if not isinstance(self.args, list):
            errors.setdefault("args", []).append(
                _('Positional arguments must be a JSON list, e.g. [1, "a"].')
            )
        if not isinstance(self.kwargs, dict):
            errors.setdefault("kwargs", []).append(
                _('Keyword arguments must be a JSON object, e.g. {"order_id": 1}.')
            )
        if not isinstance(self.headers, dict):
            errors.setdefault("headers", []).append(_("Headers must be a JSON object."))
        if self.expires and self.start_time and self.expires <= self.start_time:
            errors.setdefault("expires", []).append(_("The task would expire before it starts."))
        if not errors:
            mismatch = self.signature_mismatch()
            if mismatch:  # not tied to one field: args, kwargs and task may all be read-only
                errors.setdefault(NON_FIELD_ERRORS, []).append(mismatch)
            names = [getattr(self, field) for field in ROUTING_FIELDS]
            # a name ROUTING_NAME refuses is its field's error already (clean_fields)
            unrouted = (
                self.routing_problem()
                if all(not name or routing.QUEUE_NAME.match(name) for name in names)
                else None
            )
            if unrouted:  # not tied to one field either: it is the three together
                errors.setdefault(NON_FIELD_ERRORS, []).append(unrouted)
        if errors:
            raise ValidationError(errors)

    def signature_mismatch(self) -> str | None:
        """Return why args/kwargs do not fit the registered task's signature, if they do not."""
        return registry.signature_mismatch(self.task, self.args, self.kwargs)

    def routing_problem(self) -> str | None:
        """Return why the queue, exchange and routing key reach no queue, if they do not."""
        return routing_problem(**{field: getattr(self, field) for field in ROUTING_FIELDS})


class PeriodicTaskRun(models.Model):
    """One occurrence of a periodic task, claimed by the beat that inserted it, and when sent."""

    periodic_task = models.ForeignKey(
        PeriodicTask,
        verbose_name=_("periodic task"),
        on_delete=models.CASCADE,
        related_name="runs",
    )
    scheduled_for = models.DateTimeField(_("scheduled for"))
    task_id = models.CharField(_("task id"), max_length=255, db_index=True)
    claimed_at = models.DateTimeField(_("claimed at"))
    claimed_by = models.CharField(_("claimed by"), max_length=255, blank=True, default="")
    sent_at = models.DateTimeField(_("sent at"), null=True, blank=True)

    class Meta:
        verbose_name = _("periodic task run")
        verbose_name_plural = _("periodic task runs")
        ordering = ["-scheduled_for", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["periodic_task", "scheduled_for"], name="tq_run_once_per_occurrence"
            ),
        ]
        indexes = [
            models.Index(fields=["sent_at"], name="tq_run_sent"),
            models.Index(fields=["scheduled_for"], name="tq_run_scheduled"),
        ]

    def __str__(self) -> str:
        return f"{self.periodic_task_id}@{self.scheduled_for.isoformat()}"
