"""URLs of the example shop: the orders pages and the admin (django_tq's screens live there)."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("orders.urls")),
]
