"""``TQTaskBackend``: Django's ``django.tasks`` API on django_tq's queue, workers and results.

    TASKS = {"default": {"BACKEND": "django_tq.backends.TQTaskBackend"}}

``enqueue()`` sends a Task through django_tq's one publish path, as ``apply_async`` would:
Django's ``priority`` becomes a level 0-9 (:mod:`.priority`), ``queue_name`` the queue (Django's
``"default"`` is ``TQ["DEFAULT_QUEUE"]``, after ``TASK_ROUTES``), ``run_after`` the ETA (parked
in the database when it is further than ``ETA_HORIZON_SECONDS``). Inside ``transaction.atomic()``
``PUBLISH_ON_COMMIT`` holds as for every django_tq task: the message is sent when the outermost
block commits and never after a rollback, and Django's ``task_enqueued`` is sent then too.
``get_result()`` reads django_tq's result row (:mod:`.results`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from django.core import checks
from django.db import connections, transaction

import django_tq.backends.adapter as adapter
import django_tq.backends.compat as compat
import django_tq.backends.priority as priority
import django_tq.backends.results as results
from django_tq import enqueue as enqueue_module
from django_tq import serialization
from django_tq.conf import tq_settings
from django_tq.execution import Outcome
from django_tq.result import EagerResult
from django_tq.result_backends import get_backend


class TQTaskBackend(compat.BaseTaskBackend):
    """A ``django.tasks`` backend whose Tasks run on ``tqworker`` beside ``@task`` ones."""

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        adapter.connect_signals()

    def validate_task(self, task: Any) -> None:
        """Validate ``task`` as Django does, then register it so a worker can run it."""
        super().validate_task(task)
        adapter.register(task)

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        """Send ``task`` with these arguments; return its READY ``TaskResult``."""
        self.validate_task(task)
        args = compat.normalize_json(list(args))  # TypeError for non-JSON, as Django raises
        kwargs = compat.normalize_json(dict(kwargs))
        registered = adapter.register(task)
        task_id = str(uuid.uuid4())
        queued = results.queued(task, task_id, alias=self.alias, args=args, kwargs=kwargs)
        options: dict[str, Any] = {
            "task_id": task_id,
            "priority": priority.to_level(task.priority),
            "eta": task.run_after,
            "headers": {adapter.BACKEND_HEADER: self.alias},
        }
        if task.queue_name != compat.DEFAULT_TASK_QUEUE_NAME:
            options["queue"] = task.queue_name
        if tq_settings.ALWAYS_EAGER:
            adapter.send(compat.task_enqueued, self.alias, queued)
            handle = registered.apply_async(args, kwargs, **options)
            return self._eager_result(task, handle)
        registered.apply_async(args, kwargs, **options)
        self._announce(queued)
        return queued

    def _announce(self, queued: Any) -> None:
        """Send ``task_enqueued`` now, or when the transaction the publish waits for commits."""
        alias = enqueue_module.default_alias()
        if connections[alias].in_atomic_block and enqueue_module.is_waiting_for_commit(queued.id):
            transaction.on_commit(
                lambda: adapter.send(compat.task_enqueued, self.alias, queued), using=alias
            )
        else:
            adapter.send(compat.task_enqueued, self.alias, queued)

    def _eager_result(self, task: Any, handle: Any) -> Any:
        """Return the final ``TaskResult`` of a Task run at enqueue (``ALWAYS_EAGER``)."""
        assert isinstance(handle, EagerResult)
        outcome: Outcome = handle.outcome
        stored = outcome.result
        if outcome.exception is not None:
            stored = serialization.exception_to_data(outcome.exception)
        data = results.bare_data(
            handle.id,
            outcome.state,
            task.module_path,
            result=stored,
            traceback=outcome.traceback,
        )
        finished = results.build(task, data, alias=self.alias)
        object.__setattr__(finished, "task", task)
        adapter.send(compat.task_finished, self.alias, finished)
        return finished

    def get_result(self, result_id: str) -> Any:
        """Return the ``TaskResult`` of ``result_id`` as stored now.

        Raise ``TaskResultDoesNotExist`` for an unknown id, for one whose result is not stored
        (``RESULT_BACKEND`` None, expired, ``TRACK_ENQUEUED`` off and not started yet), and for a
        django_tq ``@task`` task's id (it has no ``django.tasks`` Task).
        """
        data = get_backend().get(str(result_id))
        if data is None:
            raise compat.TaskResultDoesNotExist(result_id)
        registered = adapter.adapter_for(data.task_name)
        if registered is None:
            raise compat.TaskResultDoesNotExist(
                f"{result_id} is a result of {data.task_name!r}, not of a django.tasks Task"
            )
        return results.build(registered.django_task, data, alias=self.alias)

    def check(self, **kwargs: Any) -> Iterable[checks.CheckMessage]:
        """Check the backend's settings (Django runs this with the system checks)."""
        yield from super().check(**kwargs)
        if self.options:
            yield checks.Error(
                f"TASKS[{self.alias!r}] gives OPTIONS to TQTaskBackend, which takes none: "
                f"{', '.join(sorted(self.options))}.",
                hint='Configure django_tq with the TQ setting; keep only "BACKEND" and "QUEUES".',
                id="tq.E005",
            )
