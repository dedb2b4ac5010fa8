"""When and how long to wait before trying a call again. Pure: the sync and async clients only sleep.

Retried: 429 (shed) and 503 (not ready, draining) answers, and failures to reach the service (connect errors,
a connection dropped before the answer). Never a 4xx that is the caller's mistake, nor a 500. A pose call is a
pure function of its input, so sending it again is safe.

The wait is never shorter than the service's Retry-After, and grows exponentially from `backoff_s` (capped at
`max_backoff_s`) when that is longer: a request that keeps being shed (a large one, say, that only fits once
the service has drained) backs off further instead of knocking every second. A random extra of up to `jitter`
of the wait spreads many clients that were shed together, so they do not all come back in the same
millisecond. `budget_s` caps the total time one call spends waiting: a call that would have to wait beyond it
gives up with the last error instead.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import httpx

RETRY_STATUSES = frozenset({429, 503})
# Raised before the service could have answered: sending again cannot do the work twice.
RETRY_TRANSPORT_ERRORS: tuple[type[httpx.TransportError], ...] = (
    httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError,
)


@dataclass
class RetryPolicy:
    max_retries: int = 8
    backoff_s: float = 0.2  # the first retry's least wait; doubles each retry
    max_backoff_s: float = 10.0  # cap of the exponential wait (Retry-After itself is never cut short)
    jitter: float = 0.25  # up to +25 % random extra on every wait
    budget_s: float = 60.0  # total waiting across one call's retries
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def delay(self, retry: int, retry_after_s: float | None) -> float:
        """Seconds to wait before retry number `retry` (0 for the first retry)."""
        base = min(self.max_backoff_s, self.backoff_s * 2 ** retry)
        if retry_after_s is not None:
            base = max(base, retry_after_s)
        return base * (1.0 + self.jitter * self.rng.random())


class RetryState:
    """One call's retry bookkeeping: `next_delay` says how long to wait, or None to give up."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.retries = 0
        self.waited_s = 0.0

    @property
    def attempts(self) -> int:
        return self.retries + 1

    def next_delay(self, retry_after_s: float | None, limit_s: float = float("inf")) -> float | None:
        """The wait before the next retry, or None to give up: out of retries, or the wait would pass the budget
        or `limit_s` (what is left of the call's deadline)."""
        if self.retries >= self.policy.max_retries:
            return None
        delay = self.policy.delay(self.retries, retry_after_s)
        if self.waited_s + delay > self.policy.budget_s or delay >= limit_s:  # give up now, not after sleeping
            return None
        self.retries += 1
        self.waited_s += delay
        return delay


def should_retry_status(status: int) -> bool:
    return status in RETRY_STATUSES
