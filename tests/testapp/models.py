"""Rows tasks write, so tests count executions by their side effects."""

from django.db import models


class Execution(models.Model):
    """One run of a test task."""

    task_id = models.CharField(max_length=255, db_index=True)
    label = models.CharField(max_length=255, blank=True, default="")
    pid = models.IntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.task_id} {self.label}"


class Order(models.Model):
    """A row created next to an enqueue in the same transaction."""

    number = models.CharField(max_length=50)

    def __str__(self) -> str:
        return self.number
