"""The HfApi edge: one configured client, a request/byte meter, and bounded retries.

Everything lora-bot sends to a Hub goes through huggingface_hub: `HfApi` for the API, and huggingface_hub's
shared HTTP session for the few range reads HfApi has no method for. This module configures that session
(timeouts, metering) and wraps calls in a retry policy, because most HfApi methods do not retry
429s or 5xx themselves (pr-bots.md §4).
"""

from __future__ import annotations

import ipaddress
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urlparse

import httpx2
from huggingface_hub import HfApi, constants
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import get_session, set_client_factory
from huggingface_hub.utils._http import hf_request_event_hook

from bot.hub.pacing import PACER

T = TypeVar("T")
DEFAULT_ENDPOINT = "https://huggingface.co"
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class HubMeter:
    """Counts requests and response-body bytes of every call huggingface_hub makes in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.bytes = 0
        self.writes = 0
        self.by_bucket: dict[str, int] = {}  # requests per rate-limit bucket (`bucket_of`)
        self.throttled = 0  # 429 answers received

    def add(
        self,
        requests: int = 0,
        nbytes: int = 0,
        writes: int = 0,
        bucket: str | None = None,
        throttled: int = 0,
    ) -> None:
        with self._lock:
            self.requests += requests
            self.bytes += nbytes
            self.writes += writes
            self.throttled += throttled
            if bucket is not None:
                self.by_bucket[bucket] = self.by_bucket.get(bucket, 0) + requests

    def snapshot(self) -> tuple[int, int, int]:
        with self._lock:
            return self.requests, self.bytes, self.writes

    def buckets(self) -> dict[str, int]:
        with self._lock:
            return {**self.by_bucket, "429": self.throttled}

    def buckets_since(self, before: dict[str, int]) -> dict[str, int]:
        now = self.buckets()
        return {name: count - before.get(name, 0) for name, count in sorted(now.items())}


def bucket_of(url: httpx2.URL | str) -> str:
    """The Hub's rate-limit bucket a request counts against (hub-scale.md): any URL with `/resolve/` is a
    resolver request, `/api/` the Hub API; the rest (a CDN a file was redirected to, LFS uploads) neither."""
    path = httpx2.URL(str(url)).path
    if "/resolve/" in path:
        return "resolvers"
    if path.startswith("/api/"):
        return "api"
    return "other"


METER = HubMeter()


class _CountingStream(httpx2.SyncByteStream):
    def __init__(self, inner: httpx2.SyncByteStream) -> None:
        self._inner = inner

    def __iter__(self):
        for chunk in self._inner:
            METER.add(nbytes=len(chunk))
            yield chunk

    def close(self) -> None:
        self._inner.close()


class _MeteredTransport(httpx2.BaseTransport):
    def __init__(self, inner: httpx2.BaseTransport) -> None:
        self._inner = inner

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        bucket = bucket_of(request.url)
        window = PACER.acquire(bucket)
        METER.add(requests=1, writes=int(request.method not in ("GET", "HEAD")), bucket=bucket)
        try:
            response = self._inner.handle_request(request)
        except BaseException:
            PACER.release(bucket, window, None)
            raise
        PACER.release(bucket, window, response)
        if response.status_code == 429:
            METER.add(throttled=1)
        response.stream = _CountingStream(response.stream)
        return response

    def close(self) -> None:
        self._inner.close()


_configured = threading.Lock()
_timeout_installed: float | None = None


def configure_session(timeout: float = 60.0) -> None:
    """Install the metered session with a timeout (huggingface_hub's default waits forever on a hung server)."""
    global _timeout_installed
    with _configured:
        if _timeout_installed == timeout:
            return

        def factory() -> httpx2.Client:
            return httpx2.Client(
                event_hooks={"request": [hf_request_event_hook]},
                follow_redirects=True,
                timeout=httpx2.Timeout(timeout, connect=min(timeout, 15.0)),
                transport=_MeteredTransport(httpx2.HTTPTransport()),
            )

        set_client_factory(factory)
        _timeout_installed = timeout


def is_loopback(endpoint: str) -> bool:
    host = urlparse(endpoint).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class TokenError(ValueError):
    """The token cannot be sent as given; the message never contains it."""


_secrets_lock = threading.Lock()
_SECRETS: set[str] = set()
# What a credential looks like in someone else's error text: an Authorization value, a Hub token.
_CREDENTIAL_PATTERNS = (
    (re.compile(r"(?i)\b(bearer)\s+[^\s'\",;]+"), r"\1 ***"),
    (re.compile(r"\bhf_[A-Za-z0-9_]{6,}"), "hf_***"),
)


def clean_token(token: str | None) -> str | None:
    """The token as the Hub expects it: surrounding whitespace dropped (a file written by `echo` ends with a
    newline; sent as is, the HTTP layer fails with the token in its message, and every retry fails the same
    way). Whitespace or control characters inside it, or a non-ASCII character, cannot be sent: refused."""
    if token is None:
        return None
    cleaned = token.strip()
    with _secrets_lock:
        if token:
            _SECRETS.add(token)
        if cleaned:
            _SECRETS.add(cleaned)
    if not cleaned:
        return None
    if any(ord(c) <= 32 or ord(c) >= 127 for c in cleaned):
        raise TokenError(
            "the Hub token contains whitespace, a control character or a non-ASCII character; "
            "check the token's value (it is not shown here)"
        )
    return cleaned


def scrub(text: str) -> str:
    """`text` with every token this process was given, and anything shaped like a credential, replaced."""
    with _secrets_lock:
        secrets = sorted(_SECRETS, key=len, reverse=True)
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    for pattern, replacement in _CREDENTIAL_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def make_api(endpoint: str | None, token: str | None, timeout: float = 60.0) -> HfApi:
    """An HfApi for `endpoint`. A loopback endpoint is the sandbox Hub, which speaks LFS, not Xet.

    The token is cleaned (see `clean_token`) before any request, and remembered so `scrub` removes it from
    every error text lora-bot prints or writes."""
    token = clean_token(token)
    configure_session(timeout)
    endpoint = (endpoint or constants.ENDPOINT or DEFAULT_ENDPOINT).rstrip("/")
    if is_loopback(endpoint):
        # Read at call time by huggingface_hub; without it uploads ask the sandbox for a Xet token (hub-api.md).
        constants.HF_HUB_DISABLE_XET = True
    if endpoint != constants.ENDPOINT.rstrip("/"):
        # With telemetry on, huggingface_hub's user agent fetches an agent registry from constants.ENDPOINT
        # (huggingface.co): a scan of another Hub, the sandbox included, would send requests off to it.
        constants.HF_HUB_DISABLE_TELEMETRY = True
    PACER.use_endpoint(endpoint)
    return HfApi(endpoint=endpoint, token=token or False, library_name="lora-bot")


def session() -> httpx2.Client:
    return get_session()


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5  # total tries, the first included
    base_wait: float = 1.0
    max_wait: float = 60.0  # a Retry-After longer than this is not waited out: the call fails with a reason
    # How a wait is spent. Injectable (ScanOptions.sleep) so tests keep their fault rates without the waiting.
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False, repr=False)

    def wait_for(self, attempt: int, error: BaseException) -> float | None:
        """Seconds to wait before the next try, or None when the error is not worth retrying."""
        if isinstance(error, HfHubHTTPError):
            response = getattr(error, "response", None)
            status = getattr(response, "status_code", None)
            if status not in RETRY_STATUS:
                return None
            advised = _advised_wait(response.headers) if response is not None else None
            if advised is not None:
                return advised if advised <= self.max_wait else None
        elif isinstance(error, httpx2.LocalProtocolError):
            return None  # the request itself cannot be sent (an illegal header value): no retry can help
        elif not isinstance(error, (httpx2.TransportError, TimeoutError, ConnectionError)):
            return None
        backoff = self.base_wait * (2 ** (attempt - 1))
        return min(self.max_wait, backoff * (0.5 + random.random() / 2))


def _advised_wait(headers) -> float | None:
    """Retry-After in seconds, or the reset time of an IETF `RateLimit: "api";r=0;t=55` header."""
    retry_after = headers.get("Retry-After")
    if retry_after:
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            pass
    rate_limit = headers.get("RateLimit")
    if rate_limit:
        for part in rate_limit.split(";"):
            key, _, value = part.strip().partition("=")
            if key == "t":
                try:
                    return max(0.0, float(value))
                except ValueError:
                    return None
    return None


def with_retries(
    policy: RetryPolicy, call: Callable[[], T], recover: Callable[[], T | None] | None = None
) -> T:
    """Run `call`, retrying what is transient (429, 5xx, dropped connections) within the policy's bounds.

    For a write that is not idempotent, `recover` looks for the write's result after a failure (the server
    may have acted and lost its answer): when it finds one, that is the result, and nothing is sent again."""
    attempt = 1
    while True:
        try:
            return call()
        except Exception as error:
            landed = recover() if recover is not None else None
            if landed is not None:
                return landed
            wait = policy.wait_for(attempt, error) if attempt < policy.attempts else None
            if wait is None:
                raise
            policy.sleep(wait)
            attempt += 1


def is_transient(error: BaseException) -> bool:
    """A failure of the Hub or the network (worth trying again next run), not of the repo's content."""
    return isinstance(error, (HfHubHTTPError, httpx2.TransportError, TimeoutError, ConnectionError))


def describe_error(error: BaseException) -> str:
    """One line for a report: the HTTP status and the server's message, never a token or a traceback."""
    return scrub(_one_line(_describe(error)))


def _one_line(text: str) -> str:
    line = text.splitlines()[0] if text.strip() else text
    return "".join(c if c.isprintable() else " " for c in line)[:500]


def _describe(error: BaseException) -> str:
    if isinstance(error, HfHubHTTPError):
        response = getattr(error, "response", None)
        status = getattr(response, "status_code", "?")
        # str(error) starts with a generic "404 Client Error."; the server's own message says what went wrong.
        message = (getattr(error, "server_message", None) or "").strip() or str(error)
        first_line = message.splitlines()[0] if message else type(error).__name__
        return f"HTTP {status}: {first_line}"
    if isinstance(error, httpx2.TransportError):
        return f"connection failed: {type(error).__name__}: {error}"
    return f"{type(error).__name__}: {error}"
