"""``path("tq/metrics/", include("django_tq.metrics.urls"))`` serves the cluster-wide gauges."""

from __future__ import annotations

from django.urls import path

from django_tq.metrics import views

app_name = "django_tq_metrics"
urlpatterns = [path("", views.metrics, name="metrics")]
