"""Priorities: Django's ``-100…100`` (larger runs sooner, default 0) onto django_tq's ``0…9``
(9 highest) and back.

Each level holds twenty of Django's values; Django's default 0 is level 5, and reading a level
back gives the lowest Django value of its band, so the multiples of 20 round-trip exactly:

=================  =====  ===========
Django priority    level  read back as
=================  =====  ===========
-100 … -81         0      -100
-80 … -61          1      -80
-60 … -41          2      -60
-40 … -21          3      -40
-20 … -1           4      -20
0 … 19 (default)   5      0
20 … 39            6      20
40 … 59            7      40
60 … 79            8      60
80 … 100           9      80
=================  =====  ===========
"""

from __future__ import annotations

HIGHEST = 9
BAND = 20


def to_level(priority: int) -> int:
    """Return the django_tq level (0-9) of a Django priority (-100 to 100)."""
    return min(HIGHEST, (int(priority) + 100) // BAND)


def to_priority(level: int) -> int:
    """Return the Django priority a django_tq level reads back as."""
    return (max(0, min(HIGHEST, int(level))) - 5) * BAND
