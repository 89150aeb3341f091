"""How a publish retries while the broker is unreachable."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryPolicy:
    """How a publish retries while the broker is unreachable (Celery's ``retry_policy``).

    The default tries again and again, 0.2 s, 0.4 s, … (at most 1 s) apart, for
    ``BROKER_CONNECTION_TIMEOUT`` seconds in all; then the publish raises :class:`PublishError`.
    """

    max_retries: int | None = None  #: None: as many as fit in the timeout
    interval_start: float = 0.2
    interval_step: float = 0.2
    interval_max: float = 1.0
    timeout: float | None = None  #: seconds in all; None: ``BROKER_CONNECTION_TIMEOUT``

    @classmethod
    def from_options(cls, retry: bool | None, policy: Mapping[str, Any] | None) -> RetryPolicy:
        """Read ``apply_async(retry=…, retry_policy={…})``; ``retry=False`` tries once."""
        if retry is not False and not policy:
            return DEFAULT_RETRY_POLICY  # the usual call: nothing to read on the hot path
        fields = dict(policy or {})
        unknown = set(fields) - {
            "max_retries", "interval_start", "interval_step", "interval_max", "timeout"
        }  # fmt: skip
        if unknown:
            raise TypeError(f"Unknown retry_policy key(s): {', '.join(sorted(unknown))}")
        if retry is False:
            fields["max_retries"] = 0
        for key, value in fields.items():
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float)
            ):
                raise TypeError(f"retry_policy[{key!r}] must be a number, got {value!r}")
        return cls(**fields)

    def wait(self, attempt: int) -> float:
        """Return the seconds to wait after failed attempt number ``attempt`` (from 1)."""
        return min(self.interval_start + self.interval_step * (attempt - 1), self.interval_max)


DEFAULT_RETRY_POLICY = RetryPolicy()
