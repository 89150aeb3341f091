"""Prometheus metrics (the ``prometheus`` extra): what runs, how long it waits, how deep queues are.

* :mod:`~django_tq.metrics.tasks` — per-task counters and histograms, tallied in the process
  that runs the task (each prefork child) and written out every 0.5 s, only when metrics are on.
* :mod:`~django_tq.metrics.multiprocess` — the directory prefork children write their counters
  to, so the worker's parent serves their sum.
* :mod:`~django_tq.metrics.collectors` — gauges read at scrape time: a worker's pool, and the
  cluster-wide queues, results and workers (the admin's own cheap queries).
* :mod:`~django_tq.metrics.exporter` — the HTTP endpoint ``tqworker --metrics-port`` serves.
* :mod:`~django_tq.metrics.views` / :mod:`~django_tq.metrics.urls` — the Django view of the
  cluster-wide gauges, behind a bearer token or a permission.

Nothing here is imported, and nothing counted, unless metrics are enabled.
"""
