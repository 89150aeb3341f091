"""Running workers over the API: what one runs now, and the live actions (remote control).

``GET workers/{hostname}/active/`` asks the worker (through :mod:`django_tq.mailbox`) for the
tasks it runs; ``POST workers/{hostname}/control/`` shuts it down warm or resizes its pool. Both
answer 504 when the worker does not reply within the timeout, so a lost worker never hangs a
request.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from django.utils.translation import gettext_lazy as _
from rest_framework import serializers
from rest_framework.exceptions import APIException
from rest_framework.request import Request
from rest_framework.response import Response

from django_tq import control
from django_tq.api.permissions import ApiAccess, CanControlWorkers
from django_tq.api.schema import document
from django_tq.api.serializers import ErrorSerializer
from django_tq.api.views import ONE_ERRORS, ApiView
from django_tq.models import WorkerState
from django_tq.routing import QUEUE_NAME

#: seconds a request waits for the worker's reply
TIMEOUT = 3.0
COMMANDS = ("shutdown", "pool_grow", "pool_shrink", "add_consumer", "cancel_consumer")


class NoReply(APIException):
    status_code = 504
    default_detail = _("The worker did not answer in time: it may be lost or overloaded.")
    default_code = "no_reply"


class ActiveTaskSerializer(serializers.Serializer):
    """A task a worker runs now."""

    id = serializers.CharField()
    name = serializers.CharField()
    args = serializers.CharField(help_text="The positional arguments' repr, cut at 200 characters.")
    kwargs = serializers.CharField()
    worker = serializers.CharField()
    pid = serializers.IntegerField()
    started = serializers.DateTimeField(allow_null=True)
    runtime = serializers.FloatField(allow_null=True, help_text="Seconds since it started.")


class WorkerControlSerializer(serializers.Serializer):
    """The body of ``POST workers/{hostname}/control/``."""

    command = serializers.ChoiceField(choices=COMMANDS)
    n = serializers.IntegerField(
        default=1, min_value=1, max_value=100, help_text="pool_grow/pool_shrink: consumers"
    )
    queue = serializers.RegexField(
        QUEUE_NAME, max_length=200, required=False, help_text="add_consumer/cancel_consumer"
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs["command"].endswith("_consumer") and not attrs.get("queue"):
            raise serializers.ValidationError({"queue": _("Name the queue.")})
        return attrs

    def arguments(self) -> dict[str, Any]:
        """Return the command's arguments."""
        command = self.validated_data["command"]
        if command.startswith("pool_"):
            return {"n": self.validated_data["n"]}
        if command.endswith("_consumer"):
            return {"queue": self.validated_data["queue"]}
        return {}


class WorkerControlReplySerializer(serializers.Serializer):
    """What the worker answered."""

    hostname = serializers.CharField()
    reply = serializers.JSONField()


class WorkerView(ApiView):
    permission_model = WorkerState

    def get_queryset(self) -> QuerySet[WorkerState]:
        return self.visible(WorkerState.objects.all())

    def worker(self, hostname: str) -> WorkerState:
        return get_object_or_404(self.get_queryset(), hostname=hostname)

    def ask(self, hostname: str, name: str, arguments: dict[str, Any] | None = None) -> Any:
        replies = control.broadcast(name, arguments, destination=[hostname], timeout=TIMEOUT)
        if not replies:
            raise NoReply()
        return replies[0].payload


class WorkerActive(WorkerView):
    """``GET workers/{hostname}/active/``: the tasks the worker runs now."""

    permission_classes = [ApiAccess]

    @document(responses={200: ActiveTaskSerializer(many=True), 504: ErrorSerializer, **ONE_ERRORS})
    def get(self, request: Request, hostname: str) -> Response:
        """Ask the worker which tasks it runs (its parent answers, however busy it is)."""
        worker = self.worker(hostname)
        return Response(ActiveTaskSerializer(self.ask(worker.hostname, "active"), many=True).data)


class WorkerControl(WorkerView):
    """``POST workers/{hostname}/control/``: shut down warm, resize the pool, add/cancel a queue."""

    permission_classes = [ApiAccess, CanControlWorkers]

    @document(
        request=WorkerControlSerializer,
        responses={
            200: WorkerControlReplySerializer,
            409: ErrorSerializer,
            504: ErrorSerializer,
            **ONE_ERRORS,
        },
    )
    def post(self, request: Request, hostname: str) -> Response:
        """Run a control command on the worker and return its reply (409: it refused)."""
        worker = self.worker(hostname)
        body = WorkerControlSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        reply = self.ask(worker.hostname, body.validated_data["command"], body.arguments())
        answer = WorkerControlReplySerializer({"hostname": worker.hostname, "reply": reply}).data
        return Response(answer, status=409 if isinstance(reply, dict) and "error" in reply else 200)
