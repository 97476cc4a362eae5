"""Progress of Ray tasks, seen from the driver: a counter actor and the workers' side of it.

Apart from the standard library this module imports nothing, so the counter actor's process starts
without loading torch (seconds on a busy machine).
"""

from __future__ import annotations

import time


class Counter:
    """Units done per block, kept by a Ray actor so the driver sees progress inside running tasks.
    Set, not added: a retried block starts again from 0 instead of counting twice."""

    def __init__(self):
        self.done: dict[int, int] = {}

    def set(self, key: int, n: int) -> None:
        self.done[key] = n

    def total(self) -> int:
        return sum(self.done.values())


class Ticker:
    """A block's progress on a worker: tqdm's ``update(n)``, sent to the counter at most 5 times a second."""

    def __init__(self, counter, key: int):
        self.counter, self.key, self.n, self.sent = counter, key, 0, 0.0

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self.sent > 0.2:
            self.flush()

    def flush(self) -> None:
        self.counter.set.remote(self.key, self.n)
        self.sent = time.monotonic()
