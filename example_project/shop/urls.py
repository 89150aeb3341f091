"""URLs of the example shop: the orders pages, the admin (django_tq's screens live there) and
django_tq's REST API under ``api/tq/``."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/tq/", include("django_tq.api.urls")),
    path("", include("orders.urls")),
]
