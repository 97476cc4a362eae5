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


class Lines:
    """Lines that blocks print on workers, kept by a Ray actor until the driver prints them."""

    def __init__(self):
        self.lines: list[str] = []

    def add(self, line: str) -> None:
        self.lines.append(line)

    def take(self) -> list[str]:
        taken, self.lines = self.lines, []
        return taken


class LineRelay:
    """A block's ``sys.stdout`` on a worker: each line it prints goes to a :class:`Lines` actor."""

    def __init__(self, lines):
        self.lines, self.partial, self.last = lines, "", None

    def write(self, text: str) -> int:
        *complete, self.partial = (self.partial + text).split("\n")
        for line in complete:
            self.last = self.lines.add.remote(line)
        return len(text)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        """Send what is left and wait until the actor has every line (before the block's result)."""
        import ray

        if self.partial:
            self.last, self.partial = self.lines.add.remote(self.partial), ""
        if self.last is not None:
            ray.get(self.last)
