"""One backoff for everything that retries: sources reconnecting, the ledger writer, opening the ledger."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Delays between attempts: exponential from ``min_s`` to ``max_s``, jittered.

    Every delay lies in ``[min_s, max_s]``: the base doubles per attempt and the delay is
    drawn from the upper half of it.

    Full jitter would sometimes retry almost at once and hammer a PLC that is busy
    rebooting; equal jitter (half fixed, half random) keeps attempts spread out while
    many gateways restarting together still do not hit the server in lockstep.
    ``reset()`` after a connection that worked, so the next outage starts fast again.

    Kept here (a dozen lines) rather than taking ``tenacity``/``backoff``: those wrap a
    call in a retry decorator, while a source needs the next delay inside a loop that
    never ends and starts over after every success; the ledger writer's retry loop is
    the same shape.
    """

    def __init__(self, min_s: float, max_s: float, *, rand: Callable[[], float] = random.random) -> None:
        if min_s <= 0 or max_s < min_s:
            raise ValueError(f"need 0 < min_s <= max_s, got min_s={min_s}, max_s={max_s}")
        self.min_s = min_s
        self.max_s = max_s
        self._rand = rand
        self._attempt = 0

    def next(self) -> float:
        """The delay before the next attempt; each call doubles the base up to ``max_s``."""
        base = min(self.max_s, self.min_s * 2**self._attempt)
        self._attempt = min(self._attempt + 1, 64)  # 2**64 × min_s is past any max_s
        return max(self.min_s, base / 2 + self._rand() * base / 2)

    def delay(self, attempt: int) -> float:
        """The delay after the ``attempt``-th failure (1, 2, …) without keeping state: for retries
        whose count is stored elsewhere (an outbox row's attempts)."""
        base = min(self.max_s, self.min_s * 2 ** min(max(attempt - 1, 0), 64))
        return max(self.min_s, base / 2 + self._rand() * base / 2)

    def reset(self) -> None:
        self._attempt = 0
