"""Errors as JSON: the exception handler every API view uses, and the API's own error classes.

Every failure becomes a JSON body (``{"detail": …, "code": …}``, or DRF's ``{"field": […]}`` for
invalid input), never an HTML page — not even for an unexpected exception with ``DEBUG = True``.
Unexpected exceptions are logged and sent to ``got_request_exception`` (what error trackers hook
into) before the 500 response.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.signals import got_request_exception
from django.http import Http404, HttpRequest, JsonResponse
from django.utils.translation import gettext_lazy as _
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import set_rollback

from django_tq.exceptions import (
    DecodeError,
    EncodeError,
    PayloadTooLarge,
    PublishError,
    QueueNotFound,
)

logger = logging.getLogger("django_tq.api")


class Conflict(exceptions.APIException):
    """The request is valid but the resource is in the wrong state for it (e.g. requeue a success)."""

    status_code = status.HTTP_409_CONFLICT
    default_detail = _("The task is not in a state that allows this.")
    default_code = "conflict"


class PayloadTooLargeError(exceptions.APIException):
    """The task message would exceed ``TQ["MAX_PAYLOAD_BYTES"]``."""

    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = _("The task message is too large.")
    default_code = "payload_too_large"


class BrokerUnavailable(exceptions.APIException):
    """The broker did not take the message in time; the client may try again."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = _("The broker is unavailable; try again later.")
    default_code = "broker_unavailable"


def _as_api_exception(exc: Exception) -> exceptions.APIException | None:
    if isinstance(exc, exceptions.APIException):
        return exc
    if isinstance(exc, Http404):
        return exceptions.NotFound()
    if isinstance(exc, DjangoPermissionDenied):
        return exceptions.PermissionDenied()
    if isinstance(exc, PayloadTooLarge):
        return PayloadTooLargeError(str(exc))
    if isinstance(exc, EncodeError | DecodeError):
        return exceptions.ValidationError({"args": [str(exc)]}, code="invalid")
    if isinstance(exc, QueueNotFound):  # CREATE_MISSING_QUEUES is off, or a key reaches nothing
        return exceptions.ValidationError({"queue": [str(exc)]}, code="invalid")
    if isinstance(exc, PublishError):
        return BrokerUnavailable()
    return None


def error_body(exc: exceptions.APIException) -> Any:
    """Return the JSON body for ``exc``: field errors as they are, else ``detail`` and ``code``."""
    if isinstance(exc.detail, list | dict):
        return exc.detail
    return {"detail": exc.detail, "code": exc.detail.code}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """Turn any exception raised in an API view into a JSON response."""
    api_exception = _as_api_exception(exc)
    set_rollback()
    if api_exception is None:
        request = context.get("request")
        logger.error("Unexpected error in the django_tq API", exc_info=exc)
        got_request_exception.send(sender=None, request=getattr(request, "_request", request))
        return Response(
            {"detail": _("Internal server error."), "code": "server_error"},
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    headers = {}
    if getattr(api_exception, "auth_header", None):
        headers["WWW-Authenticate"] = str(api_exception.auth_header)
    if getattr(api_exception, "wait", None):
        headers["Retry-After"] = f"{api_exception.wait:.0f}"
    return Response(error_body(api_exception), status=api_exception.status_code, headers=headers)


@csrf_exempt  # a 404 changes nothing; without this, a POST or DELETE would get CSRF's HTML 403
def not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    """Answer a path under the API that matches no endpoint with a JSON 404."""
    return JsonResponse({"detail": str(_("Not found.")), "code": "not_found"}, status=404)
