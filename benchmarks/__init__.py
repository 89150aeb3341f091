"""django_tq's benchmark against its peers (SPEC §12): ``python -m benchmarks --help``.

Every system runs the same task body (:func:`benchmarks.probe.record`) on the same broker, on the
same machine, in the same run, and the report prints django_tq's figures next to the peer's and
their ratio. See ``docs/performance.md``.
"""
