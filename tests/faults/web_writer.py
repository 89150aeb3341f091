"""Write to the database the way a web process does: ``python -m tests.faults.web_writer SECONDS``.

For SECONDS, in a loop: a view-like transaction (read, then write an ``Order`` row and enqueue a
``record`` task with a countdown in the same ``atomic()``), then an enqueue outside any
transaction. Prints one JSON line per task whose ``.apply_async()`` returned and committed
(``{"id": …}``; its ETA is on its result row), and ``{"refused": error, "where": …}`` for a call
or transaction that raised: the web process keeps the settings it was given, so its own
transactions may fail under load; a test counts only the tasks that were really enqueued. Ends
with ``{"done": iterations}``.
"""

from __future__ import annotations

import json
import random
import sys
import time

import django


def main(seconds: float) -> None:
    """Write for ``seconds``, reporting every task enqueued."""
    django.setup()
    from django.db import DatabaseError, transaction

    from tests.testapp.models import Order
    from tests.testapp.tasks import record

    def report(**values: object) -> None:
        print(json.dumps(values), flush=True)

    deadline = time.monotonic() + seconds
    iterations = 0
    while time.monotonic() < deadline:
        iterations += 1
        try:
            with transaction.atomic():
                Order.objects.filter(number__startswith="web").count()
                Order.objects.create(number=f"web-{iterations}")
                result = record.apply_async(
                    kwargs={"label": "web-atomic"}, countdown=random.uniform(0, 4)
                )
            report(id=result.id)
        except DatabaseError as exc:
            report(refused=repr(exc), where="atomic")
        try:
            result = record.apply_async(kwargs={"label": "web"}, countdown=random.uniform(0, 4))
            report(id=result.id)
        except DatabaseError as exc:
            report(refused=repr(exc), where="autocommit")
        time.sleep(random.uniform(0.01, 0.05))
    report(done=iterations)


if __name__ == "__main__":
    main(float(sys.argv[1]))
