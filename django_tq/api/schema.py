"""The OpenAPI 3 description of the API: the one door to drf-spectacular (the ``openapi`` extra).

Without drf-spectacular installed, :func:`document` and :func:`document_field` leave what they
decorate as it is, views keep DRF's default schema, and :func:`schema_view` returns ``None`` so
the ``schema/`` route is not mounted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from rest_framework.permissions import IsAuthenticated
from rest_framework.schemas.inspectors import DefaultSchema

import django_tq
from django_tq.api import errors

try:
    from drf_spectacular import generators as spectacular_generators
    from drf_spectacular import openapi as spectacular_openapi
    from drf_spectacular import renderers as spectacular_renderers
    from drf_spectacular import utils as spectacular_utils
    from drf_spectacular import views as spectacular_views
except ImportError:  # the ``openapi`` extra is not installed
    IS_AVAILABLE = False
else:
    IS_AVAILABLE = True

F = TypeVar("F", bound=Callable[..., Any])

TITLE = "django_tq API"
DESCRIPTION = (
    "Task results, dead letters, registered tasks, workers and queues of django_tq. "
    "See docs/api.md for the permission model."
)


def _unchanged(target: F) -> F:
    return target


def document(**details: Any) -> Callable[[F], F]:
    """Attach OpenAPI details (``extend_schema`` arguments) to a view method."""
    if not IS_AVAILABLE:
        return _unchanged
    extend = spectacular_utils.extend_schema(**details)

    def decorate(method: F) -> F:
        # Build on drf-spectacular's AutoSchema even when the project's DEFAULT_SCHEMA_CLASS is
        # DRF's own (extend_schema would otherwise subclass that one and break generation).
        method.kwargs = {**getattr(method, "kwargs", {}), "schema": spectacular_openapi.AutoSchema}  # type: ignore[attr-defined]
        return extend(method)

    return decorate


def document_field(schema: Any) -> Callable[[F], F]:
    """Give a serializer field (class or method) an explicit OpenAPI schema."""
    if not IS_AVAILABLE:
        return _unchanged
    return spectacular_utils.extend_schema_field(schema)


def view_schema() -> Any:
    """Return the schema inspector every API view uses (drf-spectacular's when installed)."""
    if not IS_AVAILABLE:
        return DefaultSchema()
    return spectacular_openapi.AutoSchema()


def _is_view_of(callback: Any, base: type) -> bool:
    view_class = getattr(callback, "cls", None)
    return isinstance(view_class, type) and issubclass(view_class, base)


def schema_view(base: type) -> Callable[..., Any] | None:
    """Return the view serving the OpenAPI 3 document of the views built on ``base``.

    ``urls`` passes the API's ``ApiView``. Return ``None`` without drf-spectacular.
    """
    if not IS_AVAILABLE:
        return None

    class Generator(spectacular_generators.SchemaGenerator):
        """Describe django_tq's endpoints only, wherever the project mounted them."""

        def _initialise_endpoints(self) -> None:
            super()._initialise_endpoints()
            self.endpoints = [e for e in self.endpoints if _is_view_of(e[3], base)]

        def get_schema(self, request: Any = None, public: bool = False) -> dict[str, Any]:
            document = dict(super().get_schema(request=request, public=public))
            document["info"] = {
                "title": TITLE,
                "version": django_tq.__version__,
                "description": DESCRIPTION,
            }
            return document

    class SchemaView(spectacular_views.SpectacularAPIView):
        """Serve the OpenAPI 3 document (JSON by default, YAML on request) to signed-in users."""

        permission_classes = [IsAuthenticated]
        renderer_classes = [
            spectacular_renderers.OpenApiJsonRenderer,
            spectacular_renderers.OpenApiYamlRenderer,
        ]
        generator_class = Generator
        serve_public = True
        metadata_class = None

        def get_exception_handler(self) -> Callable[..., Any]:
            return errors.exception_handler

    view: Callable[..., Any] = SchemaView.as_view()
    return view
