"""Queues as the API shows them: the shared reading of :mod:`django_tq.queues`."""

from django_tq.queues import QueueInfo, overview

__all__ = ["QueueInfo", "overview"]
