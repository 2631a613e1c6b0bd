"""A clock for retry tests: it records every wait the bot asks for and returns at once.

The fault tests keep their fault rates; the retry policy still computes each wait (Retry-After, back-off),
the tests assert on those waits, and none of them is slept.
"""

from __future__ import annotations

import threading


class RecordingClock:
    def __init__(self) -> None:
        self._lock = threading.Lock()  # the scan's workers retry in parallel
        self.waits: list[float] = []

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.waits.append(seconds)
