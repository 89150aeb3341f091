"""django_tq's models, one module per concern."""

from django_tq.models.dead_letters import DeadLetter
from django_tq.models.groups import ChordCounter, GroupResult
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
    "ChordCounter",
    "ClockedSchedule",
    "CrontabSchedule",
    "DeadLetter",
    "GroupResult",
    "IntervalSchedule",
    "ParkedMessage",
    "PeriodicTask",
    "PeriodicTaskRun",
    "QueueMessage",
    "Revocation",
    "TaskResult",
    "WorkerState",
]
