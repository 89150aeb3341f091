"""Importers: copy another system's schedules and results into django_tq's tables.

``manage.py tqimport <source>`` runs one of them. Each source has its own module, which reads
the other app's rows (:mod:`django_tq.importers.tables`: through that app's models when it is
installed, else its tables with plain SQL), maps each onto django_tq's models, and tells for
every row what it did (:mod:`django_tq.importers.report`):

* :mod:`django_tq.importers.celery_beat` — django-celery-beat's periodic tasks and schedules
  (Celery's crontab syntax: :mod:`~django_tq.importers.celery_crontab`), written by
  :mod:`~django_tq.importers.periodic_tasks`;
* :mod:`django_tq.importers.celery_results` — django-celery-results' task and group results
  (Celery's stored values: :mod:`~django_tq.importers.celery_data`), written by
  :mod:`~django_tq.importers.batches`.

Every importer is idempotent (a second run changes nothing and says so) and has a dry run.
"""
