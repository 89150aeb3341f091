"""Settings of a worker subprocess that exports its spans to ``$TQ_TEST_SPAN_FILE``."""

import os

from tests.settings import *  # noqa: F403

if os.environ.get("TQ_TEST_SPAN_FILE"):
    from tests.observability import span_file

    span_file.install(os.environ["TQ_TEST_SPAN_FILE"])
