"""The directory prefork children write their metric values to (prometheus_client's multiprocess
mode): each process keeps its counters in its own file there, and the worker's parent adds the
files up when it is scraped, so a child that dies or is recycled loses none of its counts.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured

#: the environment variable prometheus_client reads
ENV = "PROMETHEUS_MULTIPROC_DIR"


@dataclass(frozen=True, kw_only=True, slots=True)
class MetricsDirectory:
    """A multiprocess directory, and whether this worker made it (and removes it)."""

    path: str
    owned: bool

    def remove(self) -> None:
        """Delete the directory if this worker made it, and leave multiprocess mode."""
        if not self.owned:
            return
        shutil.rmtree(self.path, ignore_errors=True)
        if os.environ.get(ENV) == self.path:
            del os.environ[ENV]
        _reset_value_class()


def _reset_value_class() -> None:
    from prometheus_client import values

    # prometheus_client picks its value class when it is first imported; pick again, so the
    # metrics created from now on follow the environment (files in the directory, or memory).
    values.ValueClass = values.get_value_class()


def prepare() -> MetricsDirectory:
    """Enter multiprocess mode: in ``$PROMETHEUS_MULTIPROC_DIR`` if set, else a new temporary
    directory this worker removes when it stops. Call before any metric is created."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError as exc:
        raise ImproperlyConfigured(
            'A metrics port needs prometheus_client: pip install "django-tq[prometheus]".'
        ) from exc
    existing = os.environ.get(ENV)
    if existing:
        os.makedirs(existing, exist_ok=True)
        directory = MetricsDirectory(path=existing, owned=False)
    else:
        path = tempfile.mkdtemp(prefix="django_tq-metrics-")
        os.environ[ENV] = path
        directory = MetricsDirectory(path=path, owned=True)
    _reset_value_class()
    return directory
