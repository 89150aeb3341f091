"""``manage.py demo_data``: fill the admin with a day of made-up task history (DEBUG only).

Results of every state spread over the last 24 hours (so the dashboard's charts have a shape),
a failure with its traceback, dead letters, workers alive, lost and stopped, queue depth samples,
messages waiting in the ``django://`` queue, and the periodic tasks. ``scripts/screenshots``
runs it on a scratch database; run it on yours only for a demo.
"""

from __future__ import annotations

import math
import random
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from django_tq import serialization, states
from django_tq.beat.sync import sync_declared
from django_tq.models import (
    CrontabSchedule,
    DeadLetter,
    PeriodicTask,
    QueueDepthSample,
    TaskResult,
    WorkerState,
)
from orders.payments import GatewayUnavailable
from orders.tasks import charge_order, send_receipt

CHARGE = "orders.tasks.charge_order"
RECEIPT = "orders.tasks.send_receipt"
REPORT = "orders.tasks.rebuild_report"
TRACEBACK = """Traceback (most recent call last):
  File "/srv/shop/django_tq/execution.py", line 212, in run_task
    value = task.run(*args, **kwargs)
  File "/srv/shop/orders/tasks.py", line 58, in charge_order
    transaction_id = payments.authorise(order)
  File "/srv/shop/orders/payments.py", line 31, in authorise
    raise GatewayUnavailable("The payment gateway did not answer in 10 s")
orders.payments.GatewayUnavailable: The payment gateway did not answer in 10 s
"""


def _gateway_failure() -> dict[str, Any]:
    return serialization.exception_to_data(
        GatewayUnavailable("The payment gateway did not answer in 10 s")
    )


class Command(BaseCommand):
    help = "Fill the task queue tables with a day of demo history. Refuses unless DEBUG."

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG:
            raise CommandError("demo_data writes made-up task history: only with DEBUG on.")
        now = timezone.now()
        chance = random.Random(7)  # the same pictures every run
        with transaction.atomic():  # one commit: quick on SQLite
            TaskResult.objects.filter(task_id__startswith="demo-").delete()  # again: afresh
            self._history(now, chance)
            self._live(now)
            self._samples(now, chance)
            self._workers(now)
            self._dead_letters()
            self._periodic_tasks()
        self.stdout.write(f"Wrote {TaskResult.objects.count()} task results of demo history.")

    def _history(self, now: Any, chance: random.Random) -> None:
        rows = []
        for minute in range(24 * 60, 0, -1):
            done = now - timedelta(minutes=minute, seconds=chance.randint(0, 59))
            busy = 1.2 + math.sin(minute / 180) + (1.5 if minute < 60 else 0)
            for number in range(chance.randint(0, round(busy * 1.5))):
                name = chance.choice([CHARGE, CHARGE, RECEIPT, REPORT])
                roll = chance.random()
                state = states.SUCCESS
                result: Any = {"order": minute, "transaction": f"tx-{minute}-{number}"}
                traceback = ""
                if roll < 0.04 or (400 < minute < 430 and roll < 0.5):  # an outage at 7 h ago
                    state, result, traceback = states.FAILURE, _gateway_failure(), TRACEBACK
                elif roll < 0.05:
                    state, result = states.REVOKED, {"reason": "revoked"}
                elif roll < 0.055:
                    state, result = states.DEAD, {"reason": "delivered 5 times, never finished"}
                rows.append(
                    TaskResult(
                        task_id=f"demo-{minute:04d}-{number}",
                        task_name=name,
                        state=state,
                        args=[minute],
                        kwargs={},
                        result=result if name != RECEIPT or state != states.SUCCESS else "sent",
                        traceback=traceback,
                        queue="mail" if name == RECEIPT else "default",
                        worker=chance.choice(["tq-1@web-1", "tq-2@web-2"]),
                        delivery_count=5 if state == states.DEAD else 1,
                        date_started=done - timedelta(milliseconds=chance.randint(40, 3000)),
                        date_done=done,
                    )
                )
        TaskResult.objects.bulk_create(rows, batch_size=500)
        TaskResult.objects.filter(task_id__startswith="demo-").update(
            date_created=F("date_started")
        )

    def _live(self, now: Any) -> None:
        """Tasks in the states before the end: running, retrying, waiting in the queue."""
        for order_id in (101, 102, 103):
            charge_order.delay(order_id)  # waits in the queue: no worker runs
        send_receipt.delay(101)
        send_receipt.apply_async((102,), countdown=600)  # delayed
        running = {
            "task_name": CHARGE,
            "queue": "default",
            "worker": "tq-1@web-1",
            "date_started": now - timedelta(seconds=4),
        }
        TaskResult.objects.create(
            task_id="demo-progress",
            state="PROGRESS",
            args=[104],
            meta={"step": 2, "steps": 4, "label": "Authorising the card", "attempt": 1},
            **running,
        )
        TaskResult.objects.create(
            task_id="demo-started", state=states.STARTED, args=[105], **running
        )
        TaskResult.objects.create(
            task_id="demo-received", state=states.RECEIVED, args=[106], **running
        )
        TaskResult.objects.create(
            task_id="demo-retry",
            state=states.RETRY,
            args=[107],
            retries=1,
            result=_gateway_failure(),
            traceback=TRACEBACK,
            eta=now + timedelta(seconds=2),
            **running,
        )
        TaskResult.objects.create(task_id="demo-pending", task_name=REPORT, state=states.PENDING)

    def _samples(self, now: Any, chance: random.Random) -> None:
        rows = []
        for minute in range(24 * 60, 0, -1):
            at = (now - timedelta(minutes=minute)).replace(second=0, microsecond=0)
            wave = max(0.0, 30 * math.sin(minute / 95) + chance.uniform(-4, 6))
            backlog = 120 if 400 < minute < 440 else 0  # the outage's backlog
            rows.append(
                QueueDepthSample(queue="default", depth=round(wave + backlog), sampled_at=at)
            )
            rows.append(QueueDepthSample(queue="mail", depth=chance.randint(0, 6), sampled_at=at))
        QueueDepthSample.objects.bulk_create(rows, batch_size=500, ignore_conflicts=True)

    def _workers(self, now: Any) -> None:
        day_ago = now - timedelta(days=1)
        for hostname, beat, stopped, processed in (
            ("tq-1@web-1", now, None, 18234),
            ("tq-2@web-2", now, None, 17920),
            ("tq-3@web-3", now - timedelta(minutes=12), None, 4211),
            ("tq-4@batch-1", now - timedelta(hours=3), now - timedelta(hours=3), 912),
        ):
            WorkerState.objects.update_or_create(
                hostname=hostname,
                defaults={
                    "pid": 4000 + processed % 1000,
                    "queues": ["default", "mail"] if "web" in hostname else ["reports"],
                    "pool": "prefork",
                    "concurrency": 4,
                    "processed": processed,
                    "started_at": day_ago,
                    "last_heartbeat": beat,
                    "stopped_at": stopped,
                },
            )

    def _dead_letters(self) -> None:
        for task_id, name, queue, reason in (
            ("demo-dead-1", "orders.tasks.old_refund", "default", "unknown task: orders.tasks.old_refund"),
            ("demo-dead-2", CHARGE, "default", "poison message: delivered 5 times, never finished"),
            (None, "", "mail", "undecodable body: Expecting value: line 1 column 1 (char 0)"),
        ):  # fmt: skip
            DeadLetter.objects.update_or_create(
                reason=reason,
                defaults={
                    "task_id": task_id,
                    "task_name": name,
                    "queue": queue,
                    "content_type": "application/json",
                    "headers": {"task": name, "id": task_id},
                    "payload": '{"args": [42], "kwargs": {}}' if task_id else "\x00\x01not json",
                    "worker": "tq-1@web-1",
                },
            )

    def _periodic_tasks(self) -> None:
        sync_declared()
        weekly, _ = CrontabSchedule.objects.get_or_create(
            minute="30", hour="6", day_of_week="1", timezone="Europe/Paris"
        )
        PeriodicTask.objects.update_or_create(
            name="weekly-receipts-digest",
            defaults={
                "task": RECEIPT,
                "crontab": weekly,
                "args": [0],
                "queue": "mail",
                "enabled": False,
                "description": "Monday 06:30 (Paris): a digest of the week's receipts. Paused.",
            },
        )
