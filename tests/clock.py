"""A clock for the in-memory backends that moves only when a test says so."""

from __future__ import annotations

import threading


class FakeClock:
    """Time that moves only when told to; thread-safe."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds
