"""pytest fixtures for projects using django_tq (registered through the ``pytest11`` entry point).

Imports of django_tq happen inside the fixtures: the plugin loads before Django is set up.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from django_tq.testing import CapturedQueue


@pytest.fixture
def tq_capture() -> Iterator[CapturedQueue]:
    """Capture tasks enqueued during the test: ``tq_capture.assert_enqueued(task, args=…)``."""
    from django_tq.testing import capture

    with capture() as queue:
        yield queue
