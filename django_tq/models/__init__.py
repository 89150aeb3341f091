"""django_tq's models, one module per concern."""

from django_tq.models.control import ControlCommand, ControlReply
from django_tq.models.dead_letters import DeadLetter
from django_tq.models.groups import ChordCounter, GroupResult
from django_tq.models.imports import ImportedPeriodicTask
from django_tq.models.metrics import Dashboard, QueueDepthSample
from django_tq.models.outbox import OutboxMessage
from django_tq.models.overrides import TaskOverride
from django_tq.models.parking import ParkedMessage
from django_tq.models.periodic_tasks import PeriodicTask, PeriodicTaskRun
from django_tq.models.queue import QueueMessage
from django_tq.models.rate_limits import RateLimitBucket
from django_tq.models.results import TaskResult
from django_tq.models.revocations import Revocation
from django_tq.models.schedules import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    SolarSchedule,
)
from django_tq.models.unique import UniqueLock
from django_tq.models.workers import WorkerState

__all__ = [
    "ChordCounter",
    "ClockedSchedule",
    "ControlCommand",
    "ControlReply",
    "CrontabSchedule",
    "Dashboard",
    "DeadLetter",
    "GroupResult",
    "ImportedPeriodicTask",
    "IntervalSchedule",
    "OutboxMessage",
    "ParkedMessage",
    "PeriodicTask",
    "PeriodicTaskRun",
    "QueueDepthSample",
    "QueueMessage",
    "RateLimitBucket",
    "Revocation",
    "SolarSchedule",
    "TaskOverride",
    "TaskResult",
    "UniqueLock",
    "WorkerState",
]
