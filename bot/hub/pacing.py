"""Pacing to the Hub's rate limits: a budget per bucket (api, resolvers), learned from the headers.

Every Hub response carries `RateLimit: "<bucket>";r=<remaining>;t=<seconds to reset>` and
`RateLimit-Policy: "fixed window";"<bucket>";q=<quota>;w=<window>` (hub-scale.md). The pacer reads them
(huggingface_hub's `parse_ratelimit_headers`) on every response and holds a request back, before it is sent,
when its bucket's window is spent, until the window resets. So a run stays under the quota instead of
collecting 429s and backing off.

A shard (`--shard K/N`) shares the token with N-1 others: it spends at most its share, quota/N per window,
and never more than the server says remains. Before the first response says anything, nothing is held.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from huggingface_hub.utils import parse_ratelimit_headers

PACED_BUCKETS = ("api", "resolvers")


@dataclass
class _Bucket:
    quota: int | None = None
    window: int | None = None
    remaining: int | None = None  # what the server last said remains in the current window
    reset_at: float | None = None  # when the current window ends, on our clock
    used: int = 0  # requests this process sent in the current window
    in_flight: int = 0
    epoch: int = 0  # which of our windows; an answer to a request of an earlier window teaches nothing


class Pacer:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._buckets: dict[str, _Bucket] = {}
        self.share = 1.0
        self.waited = 0.0  # seconds requests were held back, for the report

    def use_endpoint(self, endpoint: str) -> None:
        """What was learned about one Hub says nothing about another."""
        with self._cond:
            if getattr(self, "_endpoint", None) != endpoint:
                self._buckets = {}
                self._endpoint = endpoint

    def reset(self, share: float = 1.0) -> None:
        """Forget what was learned (a new run, maybe another Hub) and spend `share` of each quota."""
        with self._cond:
            self._buckets = {}
            self.share = share
            self.waited = 0.0

    def acquire(self, bucket: str) -> int:
        """Wait until `bucket` may send one more request; returns the window it was sent in."""
        if bucket not in PACED_BUCKETS:
            return 0
        with self._cond:
            state = self._buckets.setdefault(bucket, _Bucket())
            started = None
            while True:
                now = self._clock()
                if state.reset_at is not None and now >= state.reset_at:
                    state.used, state.remaining, state.reset_at = 0, None, None
                    state.epoch += 1
                wait = self._wait(state, now)
                if wait is None:
                    break
                started = started if started is not None else now
                self._cond.wait(timeout=wait)
            if started is not None:
                self.waited += self._clock() - started
            state.used += 1
            state.in_flight += 1
            return state.epoch

    def _wait(self, state: _Bucket, now: float) -> float | None:
        """None: send now; else seconds until it may be worth looking again."""
        if state.quota is None:
            return None  # the server has not said its policy: nothing to pace by
        allowance = max(1, math.floor(state.quota * self.share))
        spent_here = state.used >= allowance
        # The server's count includes the other shards; requests in flight may not be in it yet.
        spent_there = state.remaining is not None and state.remaining - state.in_flight <= 0
        if not (spent_here or spent_there):
            return None
        if state.reset_at is None:
            # An answer in flight will say when the window ends; with none in flight, one request is sent to
            # learn it (a server that stopped sending the headers must never stall the run).
            return 0.05 if state.in_flight else None
        return max(0.0, state.reset_at - now) + 0.001

    def release(self, bucket: str, epoch: int, response) -> None:
        """Learn from a response (None: the request failed without one)."""
        if bucket not in PACED_BUCKETS and response is None:
            return
        with self._cond:
            if bucket in PACED_BUCKETS:
                state = self._buckets.setdefault(bucket, _Bucket())
                state.in_flight = max(0, state.in_flight - 1)
            if response is not None:
                self._learn(bucket, epoch, response)
            self._cond.notify_all()

    def _learn(self, bucket: str, epoch: int, response) -> None:
        now = self._clock()
        info = parse_ratelimit_headers(response.headers)
        name = info.resource_type if info is not None else bucket
        if name not in PACED_BUCKETS:
            return
        state = self._buckets.setdefault(name, _Bucket())
        if response.status_code == 429:
            retry_after = _seconds(response.headers.get("Retry-After"))
            wait = retry_after if retry_after is not None else (info.reset_in_seconds if info else None)
            if wait is not None:
                state.remaining = 0
                state.reset_at = max(state.reset_at or 0.0, now + wait)
        if info is None:
            return
        if info.limit is not None:
            state.quota, state.window = info.limit, info.window_seconds
        if epoch != state.epoch and name == bucket:
            return  # sent in an earlier window of ours: its counts are that window's
        state.remaining = info.remaining if state.remaining is None else min(state.remaining, info.remaining)
        reset_at = now + info.reset_in_seconds
        state.reset_at = reset_at if state.reset_at is None else min(state.reset_at, reset_at)

    def snapshot(self) -> dict[str, dict]:
        with self._cond:
            return {
                name: {"quota": b.quota, "window": b.window, "remaining": b.remaining}
                for name, b in self._buckets.items()
            }


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


PACER = Pacer()
