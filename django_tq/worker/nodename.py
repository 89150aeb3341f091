"""Worker names and file names with Celery's ``%`` variables.

``--hostname``, ``--logfile`` and ``--pidfile`` take the same variables as Celery's:

======  ==================================================  ====================
``%h``  the host name, with its domain                      ``web-1.example.com``
``%n``  the host name only                                  ``web-1``
``%d``  the domain only                                     ``example.com``
``%p``  the worker's full name (file names only)            ``mail@web-1.example.com``
``%i``  the pool process index, 0 for the parent            ``0``
``%I``  the same with a separator, empty for the parent     ``""``
``%%``  a ``%``
======  ==================================================  ====================
"""

from __future__ import annotations

import re
import socket

_VARIABLE = re.compile(r"%(.)")


def expand(template: str, *, nodename: str = "", index: int = 0, host: str | None = None) -> str:
    """Return ``template`` with its ``%`` variables replaced; raise ValueError for an unknown one."""
    host = host if host is not None else socket.gethostname()
    short, _, domain = host.partition(".")
    values = {
        "h": host,
        "n": short,
        "d": domain,
        "p": nodename,
        "i": str(index),
        "I": f"-{index}" if index else "",
        "%": "%",
    }

    def one(match: re.Match[str]) -> str:
        name = match[1]
        if name not in values:
            raise ValueError(
                f"unknown variable %{name} in {template!r} (known: %h %n %d %p %i %I %%)"
            )
        return values[name]

    return _VARIABLE.sub(one, template)
