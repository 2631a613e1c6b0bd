"""Fault injection for the sandbox Hub: which requests fail, and how, from a spec like `429:0.1,drop:0.03`."""

from __future__ import annotations

import math
import random
import threading
from dataclasses import dataclass

# The route names a fault may be narrowed to: the names of bot.sandbox.routes.ROUTES.
ROUTE_NAMES = (
    "whoami",
    "models",
    "model_info",
    "tree",
    "refs",
    "commits",
    "resolve",
    "validate_yaml",
    "preupload",
    "lfs",
    "commit",
    "discussions",
    "discussion",
    "comment",
    "status",
    "title",
    "merge",
    "create_repo",
)
DROP_KINDS = ("drop", "drop-after")
# Faults after which the request is still handled: a lost response, or a server that ignores Range headers.
HANDLED_KINDS = ("drop-after", "ignore-range")


@dataclass(frozen=True)
class FaultRule:
    """Inject `kind` on `share` of the matching requests. Kinds: an HTTP status 400-599 or "drop" (both
    answered before the request is handled, so it has no effect), "drop-after": the request IS handled,
    then the connection closes without a reply, like a response lost on the way back, or "ignore-range": the
    request is answered as if it had no Range header (200 and the whole file), as some servers do."""

    kind: str
    share: float
    # None: every route. Route names and the groups "read" and "write" narrow it down together:
    # `write` is every write, `discussions` both listing and opening, `write|discussions` opening only.
    routes: frozenset[str] | None = None

    def applies_to(self, route: str, method: str) -> bool:
        if self.routes is None:
            return True
        groups = self.routes & {"read", "write"}
        names = self.routes - groups
        group = "read" if method in ("GET", "HEAD") else "write"
        return (not names or route in names) and (not groups or group in groups)


@dataclass(frozen=True)
class FaultSpec:
    """Parsed form of `429:0.1,503:0.05,drop:0.03@write|discussions,seed=7,retry-after=1,limit=5`."""

    rules: tuple[FaultRule, ...] = ()
    seed: int = 0
    retry_after: int = 1
    limit: int | None = None  # each rule injects at most this many faults; None: no limit

    @classmethod
    def parse(cls, text: str) -> FaultSpec:
        rules: list[FaultRule] = []
        options: dict[str, int | None] = {"seed": 0, "retry-after": 1, "limit": None}
        for token in (part.strip() for part in text.split(",")):
            if not token:
                continue
            if "=" in token:
                name, _, value = token.partition("=")
                if name.strip() not in options or not value.strip().isdigit():
                    raise ValueError(f"bad fault option {token!r}: expected seed=N, retry-after=N or limit=N")
                options[name.strip()] = int(value)
                continue
            rules.append(cls._parse_rule(token))
        return cls(
            tuple(rules), seed=options["seed"], retry_after=options["retry-after"], limit=options["limit"]
        )

    @staticmethod
    def _parse_rule(token: str) -> FaultRule:
        body, _, route_text = token.partition("@")
        kind, colon, share_text = body.partition(":")
        kind = kind.strip().lower()
        if not colon or not (
            kind in DROP_KINDS + HANDLED_KINDS or (kind.isdigit() and 400 <= int(kind) <= 599)
        ):
            raise ValueError(
                f"bad fault {token!r}: expected KIND:SHARE[@ROUTES] with KIND 400-599, drop, "
                f"drop-after or ignore-range"
            )
        try:
            share = float(share_text)
        except ValueError:
            share = -1.0
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"bad fault {token!r}: SHARE must be a number between 0 and 1")
        routes = None
        if route_text:
            routes = frozenset(name.strip() for name in route_text.split("|"))
            unknown = routes - set(ROUTE_NAMES) - {"read", "write"}
            if unknown:
                raise ValueError(
                    f"bad fault {token!r}: unknown route(s) {', '.join(sorted(unknown))}; "
                    f"known: read, write, {', '.join(ROUTE_NAMES)}"
                )
        return FaultRule(kind, share, routes)


class FaultInjector:
    """Decides, deterministically for a given seed and request order, which requests fail."""

    def __init__(self, spec: FaultSpec):
        self.spec = spec
        self._random = random.Random(spec.seed)
        self._lock = threading.Lock()
        self._injected = [0] * len(spec.rules)  # per rule, for `limit`

    def pick(self, route: str, method: str) -> FaultRule | None:
        with self._lock:
            for index, rule in enumerate(self.spec.rules):
                if self.spec.limit is not None and self._injected[index] >= self.spec.limit:
                    continue
                if rule.applies_to(route, method) and self._random.random() < rule.share:
                    self._injected[index] += 1
                    return rule
        return None


# ------------------------------------------------------------------------------------------ rate limits

# The Hub's buckets (hub-scale.md): any `/resolve/` URL is a resolver request; the API routes are the API.
# The sandbox's CDN (`cdn`, where LFS files are redirected) and LFS transfers count against neither.
RESOLVER_ROUTES = frozenset({"resolve"})
UNMETERED_ROUTES = frozenset({"lfs", "cdn", "unknown"})


@dataclass(frozen=True)
class Quota:
    bucket: str
    requests: int  # Q requests ...
    window: int  # ... per W seconds, in fixed windows


@dataclass(frozen=True)
class QuotaSpec:
    """Parsed form of `api=1000/300,resolvers=5000/300`: the buckets the sandbox meters, as the Hub does."""

    quotas: tuple[Quota, ...] = ()

    @classmethod
    def parse(cls, text: str) -> QuotaSpec:
        quotas = []
        for token in (part.strip() for part in text.split(",")):
            if not token:
                continue
            name, _, rest = token.partition("=")
            count, _, window = rest.partition("/")
            if name not in ("api", "resolvers") or not count.isdigit() or not window.isdigit():
                raise ValueError(
                    f"bad quota {token!r}: expected api=Q/W or resolvers=Q/W (Q requests per W seconds)"
                )
            if int(count) < 1 or int(window) < 1:
                raise ValueError(f"bad quota {token!r}: Q and W must be at least 1")
            quotas.append(Quota(name, int(count), int(window)))
        return cls(tuple(quotas))


@dataclass(frozen=True)
class Metered:
    """One request's standing in its bucket: the headers every response carries, and whether it is over."""

    headers: dict
    over: bool
    retry_after: int


class RateLimiter:
    """Fixed windows per bucket, as the Hub counts them: the Nth request of a window gets r = Q - N; past Q,
    429 with Retry-After until the window ends. Windows start at the limiter's creation."""

    def __init__(self, spec: QuotaSpec, clock=None):
        import time

        self.spec = spec
        self._clock = clock or time.monotonic
        self._start = self._clock()
        self._lock = threading.Lock()
        self._counts: dict[str, tuple[int, int]] = {}  # bucket → (window index, requests in it)
        self.throttled = 0

    @staticmethod
    def bucket_of(route: str) -> str | None:
        if route in UNMETERED_ROUTES:
            return None
        return "resolvers" if route in RESOLVER_ROUTES else "api"

    def take(self, route: str) -> Metered | None:
        bucket = self.bucket_of(route)
        quota = next((q for q in self.spec.quotas if q.bucket == bucket), None)
        if quota is None:
            return None
        with self._lock:
            elapsed = self._clock() - self._start
            window = int(elapsed // quota.window)
            current, used = self._counts.get(bucket, (window, 0))
            used = used + 1 if current == window else 1
            self._counts[bucket] = (window, used)
            over = used > quota.requests
            self.throttled += over
        reset = max(1, math.ceil((window + 1) * quota.window - elapsed))
        headers = {
            "RateLimit": f'"{bucket}";r={max(0, quota.requests - used)};t={reset}',
            "RateLimit-Policy": f'"fixed window";"{bucket}";q={quota.requests};w={quota.window}',
        }
        return Metered(headers, over, reset)
