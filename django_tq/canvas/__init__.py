"""Workflows: signatures, and the ``chain``, ``group`` and ``chord`` built from them (Celery's canvas).

A :class:`Signature` is one task call written down (name, arguments, options) to be applied later
or elsewhere. Signatures are values: ``clone``/``set``/``link`` return a new signature. They
serialize to JSON dicts (:meth:`Signature.to_dict`, :func:`signature`), which is how the rest of a
workflow travels in a message (``TaskMessage.chain``/``link``/``link_error``). Applying a workflow
first *freezes* it (every task gets its id), so the result handles are usable at once; each task
is then sent with ``Task.apply_async`` and so by ``enqueue()``, the one place that publishes. What
follows a finished task (the next step, callbacks, errbacks, a chord's body) is applied by
``execution.record`` through :mod:`django_tq.workflow`. See docs/canvas.md.

The canvas sits below ``tasks.py`` (``Task.s()`` builds signatures) and reaches a task by name
through the registry; only :mod:`django_tq.canvas.builtins`, which declares tasks, sits above it
and is not imported here (``apps.ready`` imports it).
"""

from django_tq.canvas.maps import chunks, xmap, xstarmap
from django_tq.canvas.primitives import chain, chord, group
from django_tq.canvas.signatures import Placement, Signature, links_of, signature, task_of

__all__ = [
    "Placement",
    "Signature",
    "chain",
    "chord",
    "chunks",
    "group",
    "links_of",
    "signature",
    "task_of",
    "xmap",
    "xstarmap",
]
