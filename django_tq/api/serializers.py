"""What the API reads and writes: rows rendered as JSON, and the bodies of the actions.

Task arguments, results and meta are returned as the JSON they are stored as (Django types such
as datetimes appear as ``{"__tq__": "datetime", "v": …}``), so a client can send them back
unchanged to requeue a task. Stored strings are JSON strings: nothing is HTML here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from django_tq import abort, serialization, states
from django_tq.api.schema import document_field
from django_tq.exceptions import DecodeError
from django_tq.models import DeadLetter, TaskResult, WorkerState
from django_tq.routing import QUEUE_NAME

#: the longest countdown the API accepts, in seconds (one year)
MAX_COUNTDOWN = 365 * 24 * 3600.0

URL_NAMESPACE = "django_tq_api"


def absolute_url(context: dict[str, Any], name: str, *args: Any) -> str:
    """Return the absolute URL of the API route ``name`` (relative without a request)."""
    path = reverse(f"{URL_NAMESPACE}:{name}", args=args)
    request = context.get("request")
    return str(request.build_absolute_uri(path)) if request is not None else path


@document_field(
    {
        "type": "object",
        "nullable": True,
        "properties": {
            "id": {"oneOf": [{"type": "integer"}, {"type": "string"}]},
            "username": {"type": "string", "nullable": True},
        },
    }
)
class OwnerField(serializers.Field):
    """The user who started the task: ``{"id": …, "username": …}`` or ``null``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(read_only=True, source="*", **kwargs)

    def to_representation(self, value: TaskResult) -> dict[str, Any] | None:
        if value.owner_id is None:
            return None
        owner = value.owner  # select_related by the views; None if the user row is gone
        username = owner.get_username() if owner is not None else None
        return {"id": value.owner_id, "username": username}


URL_SCHEMA = {"type": "string", "format": "uri"}


def without_nul(value: Any) -> Any:
    """Return JSON data ``value`` as it is; refuse it (400) if a string in it holds U+0000.

    PostgreSQL cannot store that character, so the row write would fail as a 500 later.
    """
    if serialization.has_nul(value):
        raise serializers.ValidationError(_("Strings cannot contain the NUL character."))
    return value


class TaskResultSerializer(serializers.ModelSerializer):
    """One task result, as listed: identity, state and timing (no arguments or outcome)."""

    url = serializers.SerializerMethodField()
    ready = serializers.SerializerMethodField()
    owner = OwnerField()

    class Meta:
        model = TaskResult
        fields = [
            "task_id",
            "url",
            "task_name",
            "state",
            "ready",
            "queue",
            "worker",
            "retries",
            "owner",
            "parent_id",
            "root_id",
            "group_id",
            "date_created",
            "date_started",
            "date_done",
        ]
        read_only_fields = fields

    @document_field(URL_SCHEMA)
    def get_url(self, obj: TaskResult) -> str:
        return absolute_url(self.context, "result-detail", obj.task_id)

    def get_ready(self, obj: TaskResult) -> bool:
        return states.is_ready(obj.state)


class TaskResultDetailSerializer(TaskResultSerializer):
    """One task result with its arguments, return value or error, meta and traceback."""

    args = serializers.JSONField(read_only=True)
    kwargs = serializers.JSONField(read_only=True)
    result = serializers.JSONField(read_only=True)
    meta = serializers.JSONField(read_only=True)

    class Meta(TaskResultSerializer.Meta):
        fields = [
            *TaskResultSerializer.Meta.fields,
            "args",
            "kwargs",
            "result",
            "meta",
            "traceback",
            "delivery_count",
            "eta",
            "expires",
        ]
        read_only_fields = fields


#: the columns a result list never shows (so it never loads them)
RESULT_LIST_DEFERRED = ("args", "kwargs", "result", "meta", "traceback")


class DeadLetterSerializer(serializers.ModelSerializer):
    """One dead letter, as listed: which message, from where, and why it could not run."""

    url = serializers.SerializerMethodField()

    class Meta:
        model = DeadLetter
        fields = ["id", "url", "task_id", "task_name", "queue", "reason", "worker", "created_at"]
        read_only_fields = fields

    @document_field(URL_SCHEMA)
    def get_url(self, obj: DeadLetter) -> str:
        return absolute_url(self.context, "dead-letter-detail", obj.pk)


class DeadLetterDetailSerializer(DeadLetterSerializer):
    """One dead letter with its content type, headers and raw payload."""

    headers = serializers.JSONField(read_only=True)

    class Meta(DeadLetterSerializer.Meta):
        fields = [*DeadLetterSerializer.Meta.fields, "content_type", "headers", "payload"]
        read_only_fields = fields


#: the columns a dead letter list never shows
DEAD_LETTER_LIST_DEFERRED = ("headers", "payload", "content_type")


class WorkerSerializer(serializers.ModelSerializer):
    """One worker and whether it is alive (heartbeat recent, not stopped)."""

    alive = serializers.SerializerMethodField()

    class Meta:
        model = WorkerState
        fields = [
            "hostname",
            "alive",
            "pid",
            "queues",
            "pool",
            "concurrency",
            "processed",
            "started_at",
            "last_heartbeat",
            "stopped_at",
        ]
        read_only_fields = fields

    def get_alive(self, obj: WorkerState) -> bool:
        now: datetime = self.context.get("now") or timezone.now()
        return obj.is_alive(now)


class RegisteredTaskSerializer(serializers.Serializer):
    """A task registered in this process, with its options (``null``: from settings/routing)."""

    name = serializers.CharField()
    queue = serializers.CharField(allow_null=True)
    priority = serializers.IntegerField(allow_null=True)
    max_retries = serializers.IntegerField(allow_null=True)
    acks_late = serializers.BooleanField()
    ignore_result = serializers.BooleanField()
    bind = serializers.BooleanField()
    enqueue_allowed = serializers.BooleanField(
        help_text=_("Whether TQ['API_ENQUEUE_ALLOWLIST'] lets the API enqueue it.")
    )


class QueueSerializer(serializers.Serializer):
    """A queue: its depth (``null`` when the broker could not be asked) and its live consumers."""

    name = serializers.CharField()
    depth = serializers.IntegerField(allow_null=True)
    workers = serializers.IntegerField(help_text=_("Live workers consuming from the queue."))


class CallSerializer(serializers.Serializer):
    """Arguments of a task call: ``args``, ``kwargs`` (stored JSON form) and a ``queue``."""

    args = serializers.ListField(required=False, max_length=1000)
    kwargs = serializers.DictField(required=False)
    queue = serializers.RegexField(QUEUE_NAME, required=False, max_length=200)

    def _rebuilt(self, value: Any) -> Any:
        try:
            return serialization.from_jsonable(without_nul(value))
        except (DecodeError, ArithmeticError) as exc:  # a bad "decimal" escapes as ArithmeticError
            raise serializers.ValidationError(_("Invalid tagged value: %s") % exc) from None

    def validate_args(self, value: list[Any]) -> list[Any]:
        return list(self._rebuilt(value))

    def validate_kwargs(self, value: dict[str, Any]) -> dict[str, Any]:
        return dict(self._rebuilt(value))


class RequeueSerializer(CallSerializer):
    """``POST results/{id}/retry/``: what to change; anything left out is taken from the result."""


class RevokeSerializer(serializers.Serializer):
    """The body of ``POST results/{id}/revoke/``."""

    terminate = serializers.BooleanField(
        default=False, help_text="Stop the task if it is running (on every pool)."
    )
    signal = serializers.ChoiceField(
        choices=list(abort.SIGNALS),
        default="SIGTERM",
        help_text="How terminate stops it: SIGTERM and SIGINT raise Terminated in the task, "
        "SIGUSR1 raises SoftTimeLimitExceeded, SIGKILL kills a prefork child.",
    )


class RevokedSerializer(serializers.Serializer):
    """The answer of ``POST results/{id}/revoke/``."""

    task_id = serializers.CharField()
    state = serializers.CharField(help_text="REVOKED at once when the task had not started.")
    terminate = serializers.BooleanField()


class EnqueueSerializer(CallSerializer):
    """``POST tasks/{name}/enqueue/``: the call, and optionally a delay in seconds."""

    countdown = serializers.FloatField(required=False, min_value=0, max_value=MAX_COUNTDOWN)


class EnqueuedSerializer(serializers.Serializer):
    """The task the API just enqueued: poll ``url`` for its state."""

    task_id = serializers.CharField()
    task_name = serializers.CharField()
    url = serializers.URLField()
    requeued_from = serializers.CharField(required=False)


class ErrorSerializer(serializers.Serializer):
    """An error: a message and a machine-readable code (invalid input is ``{"field": [...]}``)."""

    detail = serializers.CharField()
    code = serializers.CharField()
