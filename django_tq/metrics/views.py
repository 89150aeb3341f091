"""The Django view of the cluster-wide gauges, for a Prometheus scrape job.

Allowed with ``Authorization: Bearer <TQ["METRICS_TOKEN"]>`` (compared in constant time), or for
a logged-in user who is staff or holds the ``django_tq.view_metrics`` permission.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.utils.crypto import constant_time_compare
from django.views.decorators.http import require_GET

from django_tq.conf import tq_settings
from django_tq.metrics.collectors import ClusterCollector

PERMISSION = "django_tq.view_metrics"


def _bearer_token(request: HttpRequest) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def is_allowed(request: HttpRequest) -> bool:
    """Return whether ``request`` may read the metrics (token, staff, or the permission)."""
    expected = tq_settings.METRICS_TOKEN
    given = _bearer_token(request)
    if expected and given is not None and constant_time_compare(given, expected):
        return True
    user = getattr(request, "user", None)  # None without AuthenticationMiddleware
    if user is None or not user.is_authenticated:
        return False
    return bool(user.is_staff or user.has_perm(PERMISSION))


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Return the cluster-wide gauges in Prometheus's text format."""
    if not is_allowed(request):
        response = HttpResponse("Authentication required.\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="django_tq metrics"'
        return response
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(ClusterCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
