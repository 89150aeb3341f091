"""django_tq's models, one module per concern."""

from django_tq.models.dead_letters import DeadLetter
from django_tq.models.metrics import Dashboard, QueueDepthSample
from django_tq.models.parking import ParkedMessage
from django_tq.models.queue import QueueMessage
from django_tq.models.results import TaskResult
from django_tq.models.revocations import Revocation
from django_tq.models.schedules import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    PeriodicTaskRun,
)
from django_tq.models.workers import WorkerState

__all__ = [
    "ClockedSchedule",
    "CrontabSchedule",
    "Dashboard",
    "DeadLetter",
    "IntervalSchedule",
    "ParkedMessage",
    "PeriodicTask",
    "PeriodicTaskRun",
    "QueueDepthSample",
    "QueueMessage",
    "Revocation",
    "TaskResult",
    "WorkerState",
]
