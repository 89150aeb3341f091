"""Who may see and do what over the API.

Every view names its permission classes. :class:`ApiAccess` is the one every view names first: it
applies the classes listed in ``TQ["API_PERMISSION_CLASSES"]`` (resolved once per settings load),
by default :class:`IsStaffOrOwner`. Actions that change something add a class requiring an
explicit model permission: :class:`CanRequeue`, :class:`CanEnqueue`, and on endpoints that write
rows (periodic tasks) :class:`HasModelPermission`: add, change or delete, by method.

A permission class may also narrow querysets: a ``scope_queryset(request, view, queryset)``
method is applied by the views to every list and lookup, so a row a user may not see is absent
(404) rather than forbidden (403), and its existence does not leak.

Views describe themselves with two attributes the classes here read: ``permission_model`` (the
model whose ``view`` permission lets staff see every row) and ``owner_field`` (the foreign key to
the user who owns a row, or ``None`` when rows have no owner).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db.models import Model, QuerySet
from django.utils.module_loading import import_string
from django.utils.translation import gettext_lazy as _
from rest_framework.permissions import BasePermission

from django_tq.conf import on_reload, tq_settings

SETTING = "API_PERMISSION_CLASSES"


def can_see_all(user: Any, model: type[Model] | None) -> bool:
    """Return whether ``user`` is active staff with the view (or change) permission on ``model``."""
    if model is None or not (user and user.is_authenticated and user.is_active and user.is_staff):
        return False
    opts = model._meta
    return bool(
        user.has_perm(f"{opts.app_label}.view_{opts.model_name}")
        or user.has_perm(f"{opts.app_label}.change_{opts.model_name}")
    )


class IsStaffOrOwner(BasePermission):
    """Staff with the model's view permission see every row; a signed-in user sees rows they own.

    On a view whose rows have no owner (dead letters, workers, queues, registered tasks) only such
    staff get in. Anonymous requests never do.
    """

    message = _("Only staff with the view permission can see this.")

    def has_permission(self, request: Any, view: Any) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        model = getattr(view, "permission_model", None)
        return can_see_all(user, model) or getattr(view, "owner_field", None) is not None

    def has_object_permission(self, request: Any, view: Any, obj: Any) -> bool:
        if can_see_all(request.user, getattr(view, "permission_model", None)):
            return True
        field = getattr(view, "owner_field", None)
        return field is not None and getattr(obj, f"{field}_id", None) == request.user.pk

    def scope_queryset(self, request: Any, view: Any, queryset: QuerySet[Any]) -> QuerySet[Any]:
        """Return ``queryset`` narrowed to the rows the user may see."""
        if can_see_all(request.user, getattr(view, "permission_model", None)):
            return queryset
        field = getattr(view, "owner_field", None)
        if field is None or not request.user.is_authenticated:
            return queryset.none()
        return queryset.filter(**{f"{field}_id": request.user.pk})


def _resolve(entry: Any) -> type[BasePermission]:
    try:
        cls = import_string(entry) if isinstance(entry, str) else entry
    except ImportError as exc:
        raise ImproperlyConfigured(f"TQ[{SETTING!r}]: cannot import {entry!r}: {exc}") from exc
    if not (isinstance(cls, type) and hasattr(cls, "has_permission")):
        raise ImproperlyConfigured(
            f"TQ[{SETTING!r}] must list permission classes (dotted paths), got {entry!r}."
        )
    return cls


_configured: tuple[type[BasePermission], ...] | None = None


def configured_classes() -> tuple[type[BasePermission], ...]:
    """Return the classes named in ``TQ["API_PERMISSION_CLASSES"]``, imported once per settings load."""
    global _configured
    if _configured is None:
        entries = tq_settings.API_PERMISSION_CLASSES
        if not entries:
            raise ImproperlyConfigured(
                f"TQ[{SETTING!r}] is empty, which would open the API to everyone. Name the "
                "permission classes to apply (rest_framework.permissions.AllowAny if you mean it)."
            )
        _configured = tuple(_resolve(entry) for entry in entries)
    return _configured


@on_reload
def _forget_configured() -> None:
    global _configured
    _configured = None


class ApiAccess(BasePermission):
    """Every class in ``TQ["API_PERMISSION_CLASSES"]`` must allow the request."""

    def __init__(self) -> None:
        self.members = [cls() for cls in configured_classes()]

    def has_permission(self, request: Any, view: Any) -> bool:
        for member in self.members:
            if not member.has_permission(request, view):
                self.message = getattr(member, "message", None)
                return False
        return True

    def has_object_permission(self, request: Any, view: Any, obj: Any) -> bool:
        for member in self.members:
            if not member.has_object_permission(request, view, obj):
                self.message = getattr(member, "message", None)
                return False
        return True

    def scope_queryset(self, request: Any, view: Any, queryset: QuerySet[Any]) -> QuerySet[Any]:
        """Return ``queryset`` narrowed by every member that narrows querysets."""
        for member in self.members:
            scope = getattr(member, "scope_queryset", None)
            if scope is not None:
                queryset = scope(request, view, queryset)
        return queryset


class HasPermission(BasePermission):
    """The user holds ``permission`` (a ``"app_label.codename"`` string), and is staff if required."""

    permission: str = ""
    staff_only: bool = False

    def has_permission(self, request: Any, view: Any) -> bool:
        user = request.user
        if not (user and user.is_authenticated and user.is_active):
            return False
        if self.staff_only and not user.is_staff:
            return False
        return bool(user.has_perm(self.permission))


class CanRequeue(HasPermission):
    """Staff with ``django_tq.change_taskresult`` may requeue a finished task."""

    permission = "django_tq.change_taskresult"
    staff_only = True
    message = _("Requeueing a task needs staff status and the change task result permission.")


class CanRevoke(HasPermission):
    """Staff with ``django_tq.change_taskresult`` may revoke (and terminate) a task."""

    permission = "django_tq.change_taskresult"
    staff_only = True
    message = _("Revoking a task needs staff status and the change task result permission.")


class CanControlWorkers(HasPermission):
    """Staff with ``django_tq.control_workerstate`` may shut down and resize running workers."""

    permission = "django_tq.control_workerstate"
    staff_only = True
    message = _("Controlling workers needs staff status and the control workers permission.")


class CanEnqueue(HasPermission):
    """Users with ``django_tq.enqueue_task`` may enqueue allowlisted tasks by name."""

    permission = "django_tq.enqueue_task"
    message = _("Enqueueing a task needs the enqueue task permission.")


class HasModelPermission(BasePermission):
    """Writes need staff status and the model permission for them: add, change or delete.

    The action follows the method (``POST`` add, ``PATCH``/``PUT`` change, ``DELETE`` delete) or
    the view's ``model_action`` (``"change"`` for "run now"); the model is the view's
    ``permission_model``. Reads pass here: :class:`ApiAccess` decides who may read.
    """

    ACTIONS = {"POST": "add", "PUT": "change", "PATCH": "change", "DELETE": "delete"}
    message = _("This needs staff status and the add, change or delete permission for it.")

    def has_permission(self, request: Any, view: Any) -> bool:
        action = getattr(view, "model_action", None) or self.ACTIONS.get(request.method)
        if action is None:
            return True
        user = request.user
        model = getattr(view, "permission_model", None)
        if model is None or not (user and user.is_authenticated and user.is_active):
            return False
        opts = model._meta
        return bool(user.is_staff and user.has_perm(f"{opts.app_label}.{action}_{opts.model_name}"))
