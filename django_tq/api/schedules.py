"""Periodic tasks over the API: list, create, edit, delete and run now, schedules nested.

A periodic task has exactly one schedule, given as one of ``interval``, ``crontab``, ``solar``
or ``clocked`` (the others ``null``). Schedules are validated by the models' own ``clean()`` — the
code the admin runs — and stored as shared rows (the same crontab used twice is one row). Giving a
new schedule in a ``PATCH`` replaces the old one. The task must be registered in this process and
its ``args``/``kwargs`` must fit the task's signature, as in the admin.

Tasks declared in code (``TQ["BEAT_SCHEDULE"]``, ``@periodic_task``) are edited in the code: as
in the admin, only ``enabled`` may change here, and they cannot be deleted (beat would declare
them again at its next start).
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.core.exceptions import NON_FIELD_ERRORS
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import router
from django.db.models import Model, QuerySet
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.status import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from django_tq import control
from django_tq.api import errors
from django_tq.api.filters import ListQuery, any_of, orderings
from django_tq.api.pagination import KeysetPagination
from django_tq.api.permissions import ApiAccess, HasModelPermission
from django_tq.api.schema import document, document_field
from django_tq.api.serializers import (
    URL_SCHEMA,
    EnqueuedSerializer,
    ErrorSerializer,
    absolute_url,
    without_nul,
)
from django_tq.api.views import INVALID, LIST_ERRORS, ONE_ERRORS, SEND_ERRORS, ApiView, accepted
from django_tq.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    SolarSchedule,
)
from django_tq.models.schedules import ScheduleRow
from django_tq.registry import registry
from django_tq.routing import QUEUE_NAME
from django_tq.sqlite import write_atomic

#: the largest ``every`` of an interval (a million days is already past any calendar)
MAX_EVERY = 1_000_000
#: the fields a code-declared task lets the API change
CODE_EDITABLE = frozenset({"enabled"})


def validation_error(exc: DjangoValidationError) -> serializers.ValidationError:
    """Return a model's ``ValidationError`` as the API's ``{"field": [messages]}`` error."""
    if not hasattr(exc, "error_dict"):
        return serializers.ValidationError({api_settings.NON_FIELD_ERRORS_KEY: exc.messages})
    return serializers.ValidationError(
        {
            api_settings.NON_FIELD_ERRORS_KEY if field == NON_FIELD_ERRORS else field: [
                str(message) for error in field_errors for message in error.messages
            ]
            for field, field_errors in exc.error_dict.items()
        }
    )


class ScheduleSerializer(serializers.ModelSerializer):
    """A schedule, validated by its model's ``clean()`` (the admin's validation)."""

    def get_validators(self) -> list[Any]:
        return []  # rows are shared: an existing identical schedule is reused, not a conflict

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # A schedule is given whole, also in a PATCH (which DRF would make partial): it replaces
        # the task's schedule rather than editing a row other tasks may share.
        missing = [
            name for name, field in self.fields.items() if field.required and name not in attrs
        ]
        if missing:
            raise serializers.ValidationError(
                {name: [self.fields[name].error_messages["required"]] for name in missing}
            )
        try:
            self.Meta.model(**attrs).clean()
        except DjangoValidationError as exc:
            raise validation_error(exc) from None
        return attrs

    @classmethod
    def stored(cls, attrs: dict[str, Any]) -> ScheduleRow:
        """Return the row storing the validated schedule ``attrs``, created if needed."""
        model: Any = cls.Meta.model
        row: ScheduleRow = model.for_schedule(model(**attrs).as_schedule())
        return row

    class Meta:
        model: type[Model] = ScheduleRow
        fields: list[str] = []


class IntervalSerializer(ScheduleSerializer):
    """Every ``every`` ``period`` (days, hours, minutes or seconds)."""

    every = serializers.IntegerField(min_value=1, max_value=MAX_EVERY)

    class Meta:
        model = IntervalSchedule
        fields = ["every", "period"]


class CrontabSerializer(ScheduleSerializer):
    """Cron fields in Celery's syntax (``*``, ``*/15``, ``1-5``, ``mon-fri``) and a time zone."""

    class Meta:
        model = CrontabSchedule
        fields = ["minute", "hour", "day_of_month", "month_of_year", "day_of_week", "timezone"]


class SolarSerializer(ScheduleSerializer):
    """At ``event`` (``sunrise``, ``sunset``, ``solar_noon``, ``dawn_civil``, …) at a place."""

    latitude = serializers.DecimalField(
        max_digits=9, decimal_places=6, min_value=-90, max_value=90, coerce_to_string=True
    )
    longitude = serializers.DecimalField(
        max_digits=9, decimal_places=6, min_value=-180, max_value=180, coerce_to_string=True
    )

    class Meta:
        model = SolarSchedule
        fields = ["event", "latitude", "longitude"]


class ClockedSerializer(ScheduleSerializer):
    """Once, at ``clocked_time``."""

    clocked_time = serializers.DateTimeField()

    class Meta:
        model = ClockedSchedule
        fields = ["clocked_time"]


SCHEDULES: dict[str, type[ScheduleSerializer]] = {
    "interval": IntervalSerializer,
    "crontab": CrontabSerializer,
    "solar": SolarSerializer,
    "clocked": ClockedSerializer,
}


class PeriodicTaskSerializer(serializers.ModelSerializer):
    """A periodic task with its schedule, arguments, delivery options and run history."""

    url = serializers.SerializerMethodField()
    task = serializers.CharField(max_length=255, help_text=_("A registered task name."))
    interval = IntervalSerializer(required=False, allow_null=True)
    crontab = CrontabSerializer(required=False, allow_null=True)
    solar = SolarSerializer(required=False, allow_null=True)
    clocked = ClockedSerializer(required=False, allow_null=True)
    schedule = serializers.SerializerMethodField(help_text=_("The schedule in words."))
    next_run = serializers.SerializerMethodField()
    args = serializers.ListField(required=False, max_length=1000)
    kwargs = serializers.DictField(required=False)
    headers = serializers.DictField(required=False)
    queue = serializers.RegexField(QUEUE_NAME, required=False, allow_blank=True, max_length=200)

    class Meta:
        model = PeriodicTask
        fields = [
            "id", "url", "name", "task", "enabled", "description", "interval", "crontab",
            "solar", "clocked", "schedule", "next_run", "start_time", "expires", "expire_seconds",
            "one_off", "misfire_policy", "args", "kwargs", "queue", "exchange", "routing_key",
            "priority", "headers",
            "code_managed", "last_run_at", "total_run_count", "date_created", "date_changed",
        ]  # fmt: skip
        read_only_fields = [
            "id", "code_managed", "last_run_at", "total_run_count", "date_created", "date_changed",
        ]  # fmt: skip

    @document_field(URL_SCHEMA)
    def get_url(self, obj: PeriodicTask) -> str:
        return absolute_url(self.context, "periodic-task-detail", obj.pk)

    def get_schedule(self, obj: PeriodicTask) -> str | None:
        row = obj.schedule_row()
        return None if row is None else str(row)

    @document_field({"type": "string", "format": "date-time", "nullable": True})
    def get_next_run(self, obj: PeriodicTask) -> Any:
        if not obj.enabled or obj.schedule_row() is None:
            return None
        try:
            upcoming = obj.upcoming(timezone.now(), 1)
        except (ArithmeticError, ValueError):  # a schedule running past the calendar's end
            return None
        return serializers.DateTimeField().to_representation(upcoming[0]) if upcoming else None

    def validate_args(self, value: list[Any]) -> list[Any]:
        return list(without_nul(value))

    def validate_kwargs(self, value: dict[str, Any]) -> dict[str, Any]:
        return dict(without_nul(value))

    def validate_headers(self, value: dict[str, Any]) -> dict[str, Any]:
        return dict(without_nul(value))

    def validate_task(self, value: str) -> str:
        if value not in registry:
            raise serializers.ValidationError(
                _("No task of this name is registered (GET tasks/ lists them).")
            )
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        instance = self.instance
        if isinstance(instance, PeriodicTask) and instance.code_managed:
            refused = sorted(set(attrs) - CODE_EDITABLE)
            if refused:
                message = _("This task is declared in code: edit it there (only enabled here).")
                raise serializers.ValidationError({field: [message] for field in refused})
        given = [field for field in SCHEDULES if attrs.get(field) is not None]
        if len(given) > 1:
            message = _(
                "Give one schedule only: an interval, a crontab, a solar event or a clocked time."
            )
            raise serializers.ValidationError({field: [message] for field in given})
        return attrs

    def create(self, validated_data: dict[str, Any]) -> PeriodicTask:
        return self.written(PeriodicTask(), validated_data)

    def update(self, instance: PeriodicTask, validated_data: dict[str, Any]) -> PeriodicTask:
        return self.written(instance, validated_data)

    def written(self, instance: PeriodicTask, attrs: dict[str, Any]) -> PeriodicTask:
        """Apply ``attrs`` to ``instance``, validate it as the admin does, and save it."""
        schedules = {field: attrs.pop(field) for field in SCHEDULES if field in attrs}
        with write_atomic(router.db_for_write(PeriodicTask) or "default"):
            if any(value is not None for value in schedules.values()):
                for field in SCHEDULES:  # a new schedule replaces the one the task had
                    setattr(instance, field, None)
            for field, value in schedules.items():
                setattr(instance, field, None if value is None else SCHEDULES[field].stored(value))
            for field, value in attrs.items():
                setattr(instance, field, value)
            try:
                instance.full_clean()
            except DjangoValidationError as exc:
                raise validation_error(exc) from None  # and the schedule rows made are rolled back
            instance.save()
        return instance


class PeriodicTaskQuery(ListQuery):
    """``GET periodic-tasks/``: filter periodic tasks; by name unless ``ordering`` says otherwise."""

    default_ordering = "name"

    task = any_of(255)
    enabled = serializers.BooleanField(required=False, allow_null=True, default=None)
    code_managed = serializers.BooleanField(required=False, allow_null=True, default=None)
    ordering = serializers.ChoiceField(
        choices=orderings("name", "date_changed", "last_run_at"), required=False
    )

    def lookups(self) -> dict[str, Any]:
        return {name: value for name, value in super().lookups().items() if value is not None}


class PeriodicTaskView(ApiView):
    """Periodic tasks: staff with the view permission read; writes need add, change or delete."""

    permission_classes = [ApiAccess, HasModelPermission]
    permission_model = PeriodicTask
    serializer_class = PeriodicTaskSerializer

    def get_queryset(self) -> QuerySet[PeriodicTask]:
        return self.visible(PeriodicTask.objects.select_related(*PeriodicTask.SCHEDULE_FIELDS))


class PeriodicTaskList(PeriodicTaskView):
    """``GET periodic-tasks/`` (one page) and ``POST periodic-tasks/`` (create one)."""

    pagination_class = KeysetPagination

    @document(
        parameters=[PeriodicTaskQuery],
        responses={200: PeriodicTaskSerializer(many=True), **LIST_ERRORS},
    )
    def get(self, request: Request) -> Response:
        """List periodic tasks with their schedules; filter, order and page with the query."""
        return self.page(PeriodicTaskQuery)

    @document(
        request=PeriodicTaskSerializer, responses={201: PeriodicTaskSerializer, **LIST_ERRORS}
    )
    def post(self, request: Request) -> Response:
        """Create a periodic task; beat picks it up at its next check."""
        body = self.get_serializer(data=request.data)
        body.is_valid(raise_exception=True)
        body.save()
        return Response(body.data, status=HTTP_201_CREATED)


class PeriodicTaskDetail(PeriodicTaskView):
    """``GET``, ``PATCH`` and ``DELETE periodic-tasks/{id}/``."""

    @document(responses={200: PeriodicTaskSerializer, **ONE_ERRORS})
    def get(self, request: Request, pk: int) -> Response:
        """Return a periodic task with its schedule and next run."""
        return Response(self.get_serializer(self.get_object()).data)

    @document(
        request=PeriodicTaskSerializer(partial=True),
        responses={200: PeriodicTaskSerializer, 400: INVALID, **ONE_ERRORS},
    )
    def patch(self, request: Request, pk: int) -> Response:
        """Change some fields; the schedule starts afresh at beat's next check (no catch-up)."""
        body = self.get_serializer(self.get_object(), data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        body.save()
        return Response(body.data)

    @document(responses={204: None, 409: ErrorSerializer, **ONE_ERRORS})
    def delete(self, request: Request, pk: int) -> Response:
        """Delete a periodic task and its run history (not one declared in code)."""
        periodic_task = self.get_object()
        if periodic_task.code_managed:
            raise errors.Conflict(
                _("This task is declared in code: remove it there, or pause it (enabled false).")
            )
        periodic_task.delete()
        return Response(status=HTTP_204_NO_CONTENT)


class PeriodicTaskRun(PeriodicTaskView):
    """``POST periodic-tasks/{id}/run/``: send one run now, as the admin's "run now" does."""

    #: running a task now needs the change permission, as in the admin
    model_action: ClassVar[str] = "change"

    @document(request=None, responses={202: EnqueuedSerializer, **SEND_ERRORS})
    def post(self, request: Request, pk: int) -> Response:
        """Send the task now with its arguments and options; its schedule is unchanged."""
        periodic_task = self.get_object()
        sent = control.run_periodic_task(periodic_task, by=f"api: {request.user}")
        return accepted(request, sent.id, periodic_task.task)
