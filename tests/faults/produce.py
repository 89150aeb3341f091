"""Send burst tasks from a process of its own: ``python -m tests.faults.produce COUNT``.

For a client of a database the test process is not connected to (the private PostgreSQL
cluster). Prints one line per task: its id once ``.delay()`` returned, or ``refused <error>``
when ``.delay()`` raised, so the test knows exactly which tasks must run.
"""

from __future__ import annotations

import sys

import django


def main(count: int) -> None:
    """Send ``count`` ``slow_record`` tasks and report each one."""
    django.setup()
    from tests.testapp.tasks import slow_record

    for _ in range(count):
        try:
            print(slow_record.delay(0, "b").id, flush=True)
        except Exception as exc:  # whatever the client raises is the answer we report
            print("refused", repr(exc).replace("\n", " "), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]))
