"""The API's routes; mount them with ``path("api/tq/", include("django_tq.api.urls"))``.

``schema/`` exists only when drf-spectacular (the ``openapi`` extra) is installed. Any other path
under the mount point is a JSON 404.
"""

from __future__ import annotations

from django.urls import URLPattern, path, re_path

from django_tq.api import errors, groups, schedules, schema, views, workers

app_name = "django_tq_api"

urlpatterns: list[URLPattern] = [
    path("results/", views.ResultList.as_view(), name="result-list"),
    # Task and group ids are the caller's strings (``converters.py``): the routes with a suffix
    # come before the detail route, which takes the rest of the path.
    path("results/<tq_id:task_id>/retry/", views.ResultRequeue.as_view(), name="result-retry"),
    path("results/<tq_id:task_id>/revoke/", views.ResultRevoke.as_view(), name="result-revoke"),
    path("results/<tq_id:task_id>/graph/", groups.ResultGraph.as_view(), name="result-graph"),
    path("results/<tq_id:task_id>/", views.ResultDetail.as_view(), name="result-detail"),
    path("groups/", groups.GroupList.as_view(), name="group-list"),
    path("groups/<tq_id:group_id>/", groups.GroupDetail.as_view(), name="group-detail"),
    path("dead-letters/", views.DeadLetterList.as_view(), name="dead-letter-list"),
    path("dead-letters/<int:pk>/", views.DeadLetterDetail.as_view(), name="dead-letter-detail"),
    path("tasks/", views.TaskList.as_view(), name="task-list"),
    path("tasks/<str:name>/enqueue/", views.TaskEnqueue.as_view(), name="task-enqueue"),
    path("periodic-tasks/", schedules.PeriodicTaskList.as_view(), name="periodic-task-list"),
    path(
        "periodic-tasks/<int:pk>/",
        schedules.PeriodicTaskDetail.as_view(),
        name="periodic-task-detail",
    ),
    path(
        "periodic-tasks/<int:pk>/run/",
        schedules.PeriodicTaskRun.as_view(),
        name="periodic-task-run",
    ),
    path("workers/", views.WorkerList.as_view(), name="worker-list"),
    path("workers/<str:hostname>/active/", workers.WorkerActive.as_view(), name="worker-active"),
    path("workers/<str:hostname>/control/", workers.WorkerControl.as_view(), name="worker-control"),
    path("queues/", views.QueueList.as_view(), name="queue-list"),
]

schema_view = schema.schema_view(views.ApiView)
if schema_view is not None:
    urlpatterns.append(path("schema/", schema_view, name="schema"))

# Last: paths ending in "/" that match nothing above (APPEND_SLASH redirects the others here),
# whatever characters they hold.
urlpatterns.append(re_path(r"^(?:[\s\S]*/)?$", errors.not_found, name="not-found"))
