"""The thread that renews a consumer's leases while its tasks run (``django://``, ``redis://``)."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from django_tq.outage import Outage

if TYPE_CHECKING:
    from django_tq.worker.consumer import Consumer

logger = logging.getLogger("django_tq.worker")


class LeaseKeeper(threading.Thread):
    """Renew the leases of every message the consumer holds, every third of the lease.

    It asks the consumer for its subscription each time: after a reconnect, the new one.
    """

    def __init__(self, consumer: Consumer, interval: float) -> None:
        super().__init__(name="django_tq-lease-keeper", daemon=True)
        self.consumer = consumer
        self.interval = interval
        self.stopped = threading.Event()

    def run(self) -> None:
        outage = Outage("Renewing leases", logger, transient=self.consumer.transient)
        while not self.stopped.wait(self.interval):
            subscription = self.consumer.subscription
            if subscription is not None:
                outage.attempt(subscription.renew_leases, time.monotonic())

    def stop(self) -> None:
        """Stop renewing."""
        self.stopped.set()
