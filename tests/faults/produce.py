"""Send burst tasks from a process of its own: ``python -m tests.faults.produce COUNT [SECONDS]``.

For a client of a database the test process is not connected to (the private PostgreSQL
cluster). Prints one line per task: its id once ``.delay()`` returned, or ``refused <error>``
when ``.delay()`` raised, so the test knows exactly which tasks must run.
"""

from __future__ import annotations

import sys

import django


def main(count: int, seconds: float = 0.0) -> None:
    """Send ``count`` ``slow_record`` tasks (each sleeping ``seconds``) and report each one."""
    django.setup()
    from tests.testapp.tasks import slow_record

    for _ in range(count):
        try:
            print(slow_record.delay(seconds, "b").id, flush=True)
        except Exception as exc:  # whatever the client raises is the answer we report
            print("refused", repr(exc).replace("\n", " "), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 0.0)
