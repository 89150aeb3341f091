"""django_tq's models, one module per concern."""

from django_tq.models.dead_letters import DeadLetter
from django_tq.models.queue import QueueMessage
from django_tq.models.results import TaskResult
from django_tq.models.workers import WorkerState

__all__ = ["DeadLetter", "QueueMessage", "TaskResult", "WorkerState"]
