"""Send burst tasks from a process of its own: ``python -m tests.faults.produce COUNT [SECONDS [PAUSE]]``.

For a client of a database the test process is not connected to (the private PostgreSQL
cluster, or another test host's). Each task sleeps ``SECONDS``; ``PAUSE`` seconds pass between two
``.delay()`` calls. Prints one line per task: its id once ``.delay()`` returned, or
``refused after 4.0s: <error>`` when ``.delay()`` raised (after how long), so the test knows
exactly which tasks must run.
"""

from __future__ import annotations

import sys
import time

import django


def main(count: int, seconds: float = 0.0, pause: float = 0.0) -> None:
    """Send ``count`` ``slow_record`` tasks (each sleeping ``seconds``) and report each one."""
    django.setup()
    from tests.testapp.tasks import slow_record

    for index in range(count):
        if pause and index:
            time.sleep(pause)
        started = time.monotonic()
        try:
            print(slow_record.delay(seconds, "b").id, flush=True)
        except Exception as exc:  # whatever the client raises is the answer we report
            error = repr(exc).replace("\n", " ")
            print(f"refused after {time.monotonic() - started:.1f}s: {error}", flush=True)


if __name__ == "__main__":
    main(*(float(arg) if index else int(arg) for index, arg in enumerate(sys.argv[1:4])))
