from django.contrib import admin
from django.urls import include, path

from tests.testapp.views import enqueue_async, place_order

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/tq/", include("django_tq.api.urls")),
    path("tq/metrics/", include("django_tq.metrics.urls")),
    path("orders/", place_order),
    path("enqueue-async/", enqueue_async),
]
