"""The API's endpoints: task results (and requeueing them), dead letters, tasks, workers, queues.

Every view derives from :class:`ApiView`: JSON in and out only, errors through
:func:`django_tq.api.errors.exception_handler`, and permission classes named on the view itself
(a view naming none refuses to run). Rows are narrowed by the permission classes before any
lookup, so a row the user may not see is a 404.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, ClassVar

from django.core.exceptions import ImproperlyConfigured
from django.db.models import Model, QuerySet
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.generics import GenericAPIView
from rest_framework.parsers import JSONParser
from rest_framework.permissions import BasePermission
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.status import HTTP_202_ACCEPTED

from django_tq import control
from django_tq.api import errors, queues
from django_tq.api.filters import DeadLetterQuery, ListQuery, ResultQuery
from django_tq.api.pagination import KeysetPagination, paginate
from django_tq.api.permissions import ApiAccess, CanEnqueue, CanRequeue, CanRevoke
from django_tq.api.schema import document, view_schema
from django_tq.api.serializers import (
    DEAD_LETTER_LIST_DEFERRED,
    RESULT_LIST_DEFERRED,
    DeadLetterDetailSerializer,
    DeadLetterSerializer,
    EnqueuedSerializer,
    EnqueueSerializer,
    ErrorSerializer,
    QueueSerializer,
    RegisteredTaskSerializer,
    RequeueSerializer,
    RevokedSerializer,
    RevokeSerializer,
    TaskResultDetailSerializer,
    TaskResultSerializer,
    WorkerSerializer,
    absolute_url,
)
from django_tq.conf import tq_settings
from django_tq.models import DeadLetter, QueueMessage, TaskResult, WorkerState
from django_tq.registry import registry
from django_tq.tasks import send_task

#: states a task can be requeued from

INVALID = {"type": "object", "additionalProperties": True, "description": "Errors by field."}
READ_ERRORS: dict[int, Any] = {401: ErrorSerializer, 403: ErrorSerializer}
LIST_ERRORS: dict[int, Any] = {400: INVALID, **READ_ERRORS}
ONE_ERRORS: dict[int, Any] = {**READ_ERRORS, 404: ErrorSerializer}
SEND_ERRORS: dict[int, Any] = {
    400: INVALID,
    **ONE_ERRORS,
    413: ErrorSerializer,
    503: ErrorSerializer,
}


class ApiView(GenericAPIView):
    """Base of every endpoint: JSON only, JSON errors, explicit permissions, scoped querysets."""

    renderer_classes = [JSONRenderer]
    parser_classes = [JSONParser]
    permission_classes: ClassVar[list[type[BasePermission]]] = []
    filter_backends: ClassVar[list[Any]] = []
    metadata_class = None  # no OPTIONS self-description: the OpenAPI document is the description
    #: set on lists so the OpenAPI document shows their responses paginated
    pagination_class: ClassVar[type[KeysetPagination] | None] = None
    schema = view_schema()

    #: the model whose view permission lets staff see every row (see permissions.py)
    permission_model: ClassVar[type[Model] | None] = None
    #: the foreign key to the user owning a row; ``None``: rows have no owner
    owner_field: ClassVar[str | None] = None

    def get_exception_handler(self) -> Any:
        return errors.exception_handler

    def get_permissions(self) -> list[BasePermission]:
        if not self.permission_classes:
            raise ImproperlyConfigured(f"{type(self).__name__} names no permission classes.")
        return [permission() for permission in self.permission_classes]

    def visible(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        """Return ``queryset`` narrowed to what the permission classes let this user see."""
        for permission in self.get_permissions():
            scope = getattr(permission, "scope_queryset", None)
            if scope is not None:
                queryset = scope(self.request, self, queryset)
        return queryset

    def page(self, query_class: type[ListQuery]) -> Response:
        """Return one page of ``get_queryset()`` filtered and ordered by the query string."""
        query = query_class(data=self.request.query_params)
        query.is_valid(raise_exception=True)
        page = paginate(
            self.get_queryset().filter(**query.lookups()),
            ordering=query.ordering,
            cursor=query.validated_data.get("cursor"),
            size=query.validated_data.get("page_size"),
        )
        results = self.get_serializer(page.rows, many=True).data
        return KeysetPagination().response(self.request, page, results)


def accepted(request: Request, task_id: str, name: str, *, requeued_from: str = "") -> Response:
    """Answer 202 with the id of the task just sent and the URL to poll."""
    body = {"task_id": task_id, "task_name": name}
    body["url"] = absolute_url({"request": request}, "result-detail", task_id)
    if requeued_from:
        body["requeued_from"] = requeued_from
    return Response(EnqueuedSerializer(body).data, status=HTTP_202_ACCEPTED)


# -- task results ---------------------------------------------------------------------------
class ResultView(ApiView):
    """Task results: staff with the view permission see all; other users the ones they own."""

    permission_classes = [ApiAccess]
    permission_model = TaskResult
    owner_field = "owner"
    lookup_field = "task_id"
    serializer_class = TaskResultDetailSerializer

    def get_queryset(self) -> QuerySet[TaskResult]:
        return self.visible(TaskResult.objects.select_related("owner"))


class ResultList(ResultView):
    """``GET results/``: one page of task results."""

    pagination_class = KeysetPagination
    serializer_class = TaskResultSerializer

    def get_queryset(self) -> QuerySet[TaskResult]:
        return super().get_queryset().defer(*RESULT_LIST_DEFERRED)

    @document(
        parameters=[ResultQuery], responses={200: TaskResultSerializer(many=True), **LIST_ERRORS}
    )
    def get(self, request: Request) -> Response:
        """List task results, newest first; filter, order and page with the query string."""
        return self.page(ResultQuery)


class ResultDetail(ResultView):
    """``GET results/{task_id}/``: one task result (404 for an id never recorded)."""

    @document(responses={200: TaskResultDetailSerializer, **ONE_ERRORS})
    def get(self, request: Request, task_id: str) -> Response:
        """Return a task result with its arguments and outcome."""
        return Response(self.get_serializer(self.get_object()).data)


class ResultRequeue(ResultView):
    """``POST results/{task_id}/retry/``: run a failed, dead or revoked task again, as a new task."""

    permission_classes = [ApiAccess, CanRequeue]

    @document(
        request=RequeueSerializer,
        responses={202: EnqueuedSerializer, 409: ErrorSerializer, **SEND_ERRORS},
    )
    def post(self, request: Request, task_id: str) -> Response:
        """Send the task again with its stored (or the given) args, kwargs and queue."""
        result = self.get_object()
        body = RequeueSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        changes = body.validated_data
        try:
            sent = control.requeue(
                result.task_id,
                args=changes.get("args"),
                kwargs=changes.get("kwargs"),
                queue=changes.get("queue"),
                owner=result.owner_id,
            )
        except control.ArgumentsMismatch as exc:
            raise ValidationError({"non_field_errors": [str(exc)]}, code="invalid") from None
        except control.NotRequeueable:
            raise errors.Conflict(
                _("Only FAILURE, DEAD or REVOKED tasks can be requeued; this one is %(state)s.")
                % {"state": result.state}
            ) from None
        return accepted(request, sent.id, result.task_name, requeued_from=result.task_id)


class ResultRevoke(ResultView):
    """``POST results/{task_id}/revoke/``: the task will not run; ``terminate`` kills it if running."""

    permission_classes = [ApiAccess, CanRevoke]

    @document(request=RevokeSerializer, responses={202: RevokedSerializer, **ONE_ERRORS})
    def post(self, request: Request, task_id: str) -> Response:
        """Revoke the task (durably: every worker, also ones started later, skips it)."""
        result = self.get_object()
        body = RevokeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        options = body.validated_data
        control.revoke(result.task_id, terminate=options["terminate"], signal=options["signal"])
        result.refresh_from_db(fields=["state"])
        answer = {
            "task_id": result.task_id,
            "state": result.state,
            "terminate": options["terminate"],
        }
        return Response(RevokedSerializer(answer).data, status=HTTP_202_ACCEPTED)


# -- dead letters ---------------------------------------------------------------------------
class DeadLetterView(ApiView):
    """Dead letters: staff with the view permission only."""

    permission_classes = [ApiAccess]
    permission_model = DeadLetter
    serializer_class = DeadLetterDetailSerializer

    def get_queryset(self) -> QuerySet[DeadLetter]:
        return self.visible(DeadLetter.objects.all())


class DeadLetterList(DeadLetterView):
    """``GET dead-letters/``: one page of dead letters."""

    pagination_class = KeysetPagination
    serializer_class = DeadLetterSerializer

    def get_queryset(self) -> QuerySet[DeadLetter]:
        return super().get_queryset().defer(*DEAD_LETTER_LIST_DEFERRED)

    @document(
        parameters=[DeadLetterQuery],
        responses={200: DeadLetterSerializer(many=True), **LIST_ERRORS},
    )
    def get(self, request: Request) -> Response:
        """List dead letters, newest first."""
        return self.page(DeadLetterQuery)


class DeadLetterDetail(DeadLetterView):
    """``GET dead-letters/{id}/``: one dead letter with its raw payload."""

    @document(responses={200: DeadLetterDetailSerializer, **ONE_ERRORS})
    def get(self, request: Request, pk: int) -> Response:
        """Return a dead letter with its headers and raw payload."""
        return Response(self.get_serializer(self.get_object()).data)


# -- registered tasks ---------------------------------------------------------------------
class TaskList(ApiView):
    """``GET tasks/``: the tasks registered in this process, for staff who may view results."""

    permission_classes = [ApiAccess]
    permission_model = TaskResult
    serializer_class = RegisteredTaskSerializer

    @document(responses={200: RegisteredTaskSerializer(many=True), **READ_ERRORS})
    def get(self, request: Request) -> Response:
        """List registered tasks and their options."""
        allowed = set(tq_settings.API_ENQUEUE_ALLOWLIST)
        rows = [
            {
                "name": name,
                "queue": task.queue,
                "priority": task.priority,
                "max_retries": task.resolved_max_retries(),
                "acks_late": task.resolved_acks_late(),
                "ignore_result": task.ignore_result,
                "bind": task.bind,
                "enqueue_allowed": name in allowed,
            }
            for name, task in registry.items()
        ]
        return Response(self.get_serializer(rows, many=True).data)


class TaskEnqueue(ApiView):
    """``POST tasks/{name}/enqueue/``: start an allowlisted task; the caller owns its result."""

    permission_classes = [ApiAccess, CanEnqueue]
    permission_model = TaskResult
    owner_field = "owner"  # the result row will be the caller's
    serializer_class = EnqueueSerializer

    @document(request=EnqueueSerializer, responses={202: EnqueuedSerializer, **SEND_ERRORS})
    def post(self, request: Request, name: str) -> Response:
        """Enqueue task ``name`` (listed in TQ['API_ENQUEUE_ALLOWLIST']) owned by the caller."""
        if name not in tq_settings.API_ENQUEUE_ALLOWLIST:
            raise NotFound(_("No task of this name may be enqueued over the API."))
        body = EnqueueSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        call = body.validated_data
        options: dict[str, Any] = {"owner": request.user}
        if call.get("queue"):
            options["queue"] = call["queue"]
        if call.get("countdown") is not None:
            options["countdown"] = call["countdown"]
        sent = send_task(name, call.get("args", []), call.get("kwargs", {}), **options)
        return accepted(request, sent.id, name)


# -- workers and queues -------------------------------------------------------------------
class WorkerList(ApiView):
    """``GET workers/``: every worker that has reported, alive or lost."""

    permission_classes = [ApiAccess]
    permission_model = WorkerState
    serializer_class = WorkerSerializer

    def get_queryset(self) -> QuerySet[WorkerState]:
        return self.visible(WorkerState.objects.order_by("hostname"))

    @document(responses={200: WorkerSerializer(many=True), **READ_ERRORS})
    def get(self, request: Request) -> Response:
        """List workers with their liveness, queues and counts."""
        context = {**self.get_serializer_context(), "now": timezone.now()}
        return Response(WorkerSerializer(self.get_queryset(), many=True, context=context).data)


class QueueList(ApiView):
    """``GET queues/``: the queues in use, their depth and their live consumers."""

    permission_classes = [ApiAccess]
    permission_model = QueueMessage
    serializer_class = QueueSerializer

    @document(responses={200: QueueSerializer(many=True), **READ_ERRORS})
    def get(self, request: Request) -> Response:
        """List queues with their depth."""
        rows = [asdict(info) for info in queues.overview(timezone.now())]
        return Response(self.get_serializer(rows, many=True).data)
