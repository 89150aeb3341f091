"""Beat: the database-backed periodic scheduler (``tqbeat``, or ``tqworker --beat``).

``scheduler`` holds the loop and the claims, ``due`` the misfire policies, ``declarations`` the
schedules declared in code (``TQ["BEAT_SCHEDULE"]``, ``@periodic_task``) and ``sync`` writes them
into the tables. The schedule arithmetic is :mod:`django_tq.schedules`.
"""
