from django.urls import path

from orders import views

app_name = "orders"

urlpatterns = [
    path("", views.shop, name="shop"),
    path("reports/rebuild/", views.rebuild, name="rebuild-report"),
    path("tasks/<str:task_id>/", views.task_page, name="task"),
    path("tasks/<str:task_id>/status/", views.task_status, name="task-status"),
]
