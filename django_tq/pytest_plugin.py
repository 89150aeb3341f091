"""pytest fixtures for projects using django_tq (registered through the ``pytest11`` entry point).

* ``tq_capture``: capture the tasks a test sends (:func:`django_tq.testing.capture`).
* ``tq_worker``: a real worker in this process for the length of the test
  (:class:`django_tq.worker.embedded.EmbeddedWorker`); override ``tq_worker_parameters`` to give
  it ``queues``, ``concurrency``, ``hostname``, …

Imports of django_tq happen inside the fixtures: the plugin loads before Django is set up.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from django_tq.testing import CapturedQueue
    from django_tq.worker.embedded import EmbeddedWorker


@pytest.fixture
def tq_capture() -> Iterator[CapturedQueue]:
    """Capture tasks enqueued during the test: ``tq_capture.assert_enqueued(task, args=…)``."""
    # import-inside: app loading: pytest loads this plugin before Django's settings and apps
    from django_tq.testing import capture

    with capture() as queue:
        yield queue


@pytest.fixture
def tq_worker_parameters() -> dict[str, Any]:
    """Return the keyword arguments of ``tq_worker``'s ``EmbeddedWorker`` (override it)."""
    return {}


@pytest.fixture
def tq_worker(
    request: pytest.FixtureRequest, transactional_db: None, tq_worker_parameters: dict[str, Any]
) -> Iterator[EmbeddedWorker]:
    """Run a worker (``threads`` pool) in this process while the test runs; stop it after.

    It needs pytest-django's ``transactional_db`` (which it requests): its threads have
    database connections of their own, which see only committed rows, so the test's data is
    committed (and flushed after the test) instead of rolled back. It consumes from
    ``TQ["BROKER_URL"]`` (``django://`` by default, in the test database) every queue tasks are
    routed to, unless ``tq_worker_parameters`` says otherwise.
    """
    if "tq_capture" in request.fixturenames:
        pytest.fail(
            "tq_worker and tq_capture cannot be used in one test: tq_capture keeps every task "
            "from reaching the broker the worker consumes.",
            pytrace=False,
        )
    # import-inside: app loading: pytest loads this plugin before Django's settings and apps
    from django_tq.worker.embedded import EmbeddedWorker

    with EmbeddedWorker(**tq_worker_parameters) as worker:
        yield worker
