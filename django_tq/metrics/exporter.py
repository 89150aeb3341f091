"""The HTTP endpoint ``tqworker --metrics-port`` serves: the task metrics of every process of the
worker (summed from the multiprocess directory) and the worker's own gauges."""

from __future__ import annotations

import logging
from typing import Any

from django_tq.metrics.multiprocess import MetricsDirectory

logger = logging.getLogger("django_tq.metrics")


class Exporter:
    """Serve ``collectors`` plus the values in ``directory`` on ``address:port``."""

    def __init__(
        self, *, port: int, address: str, directory: MetricsDirectory, collectors: list[Any]
    ) -> None:
        self.port = port
        self.address = address
        self.directory = directory
        self.collectors = collectors
        self._server: Any = None

    def start(self) -> None:
        """Start serving in a daemon thread of this process."""
        from prometheus_client import CollectorRegistry, multiprocess, start_http_server

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.directory.path)
        for collector in self.collectors:
            registry.register(collector)
        self._server, _ = start_http_server(self.port, addr=self.address, registry=registry)
        port = self._server.server_port
        logger.info("Serving metrics on http://%s:%d/metrics", self.address, port)

    def stop(self) -> None:
        """Stop serving and remove the directory if this worker made it."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.directory.remove()
