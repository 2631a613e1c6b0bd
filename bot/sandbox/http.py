"""HTTP for the sandbox Hub: requests and replies, paging, byte ranges, and the threaded server that answers.

The handler reaches the Hub API through the hub it serves (`ServedHub.routes`), so this module does not
import the routes (bot.sandbox.routes builds on this one).
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol
from urllib.parse import parse_qs, urlencode

from bot.sandbox.faults import DROP_KINDS, HANDLED_KINDS, FaultInjector, FaultRule, RateLimiter
from bot.sandbox.store import CHUNK_SIZE, Blob, HubError

_BYTE_RANGE = re.compile(r"^\s*(\d*)\s*-\s*(\d*)\s*$")


# ----- requests and replies ----------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    stream: Callable[[], Iterable[bytes]] | None = None  # for file bodies, so they are never held in memory
    length: int = 0  # body length when streaming

    @property
    def content_length(self) -> int:
        return self.length if self.stream is not None else len(self.body)

    def chunks(self) -> Iterable[bytes]:
        return self.stream() if self.stream is not None else [self.body]


def json_reply(
    payload,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    content_type: str = "application/json",
) -> Reply:
    body = json.dumps(payload, default=str).encode()
    return Reply(status, body, {"Content-Type": content_type, **(headers or {})})


def error_reply(error: HubError) -> Reply:
    headers = dict(error.headers)
    if error.code:
        headers["X-Error-Code"] = error.code
    # Header values must be latin-1 and single-line; the client shows this text in its exception.
    headers["X-Error-Message"] = (
        re.sub(r"[\r\n]+", " ", error.message).encode("ascii", "replace").decode()[:500]
    )
    return json_reply({"error": error.message}, error.status, headers)


@dataclass
class Request:
    method: str
    path: str  # raw path, without the query string
    query: dict[str, list[str]]
    params: dict[str, str]  # route pattern groups, URL-decoded
    user: str | None
    base_url: str  # absolute http://host:port the client used, for Link and upload URLs
    headers: Mapping[str, str]
    body_source: Iterator[bytes]
    _body: bytes | None = None
    ignore_range: bool = False  # the "ignore-range" fault: answer as a server without Range support

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def flag(self, name: str) -> bool:
        return (self.arg(name) or "").lower() in ("1", "true", "yes")

    def int_arg(self, name: str, default: int) -> int:
        value = self.arg(name)
        if value is None or value == "":
            return default
        if not value.isdigit():
            raise HubError(400, f"Query parameter {name} must be a non-negative integer, got {value!r}")
        return int(value)

    def body(self) -> bytes:
        if self._body is None:
            self._body = b"".join(self.body_source)
        return self._body

    def json(self) -> dict:
        raw = self.body()
        if not raw:
            return {}
        try:
            payload = json.loads(raw)
        except ValueError:
            raise HubError(400, "Request body is not valid JSON") from None
        if not isinstance(payload, dict):
            raise HubError(400, "Request body must be a JSON object")
        return payload

    def require_user(self) -> str:
        if not self.user:
            raise HubError(401, "Invalid credentials in Authorization header")
        return self.user

    def next_page_link(self, cursor: int) -> str:
        pairs = [(key, value) for key, values in self.query.items() if key != "cursor" for value in values]
        return f'<{self.base_url}{self.path}?{urlencode([*pairs, ("cursor", cursor)])}>; rel="next"'


def paged(request: Request, items: list, page_size: int) -> Reply:
    """One page of a Link-paginated listing; the next URL is absolute, as the client requires."""
    start = request.int_arg("cursor", 0)
    headers = {}
    if start + page_size < len(items):
        headers["Link"] = request.next_page_link(start + page_size)
    return json_reply(items[start : start + page_size], headers=headers)


# ----- byte ranges -------------------------------------------------------------------------------


def parse_ranges(header: str | None, size: int) -> list[tuple[int, int]] | None:
    """Inclusive byte ranges of a `Range` header; None means "serve everything", [] unsatisfiable."""
    unit, _, spec = (header or "").partition("=")
    if unit.strip().lower() != "bytes":
        return None
    ranges = []
    for part in spec.split(","):
        match = _BYTE_RANGE.match(part)
        if not match or match.groups() == ("", ""):
            return None  # RFC 7233: a malformed Range header is ignored
        first, last = match.groups()
        if not first:  # "-N": the last N bytes
            if int(last) == 0:
                continue
            start, end = max(0, size - int(last)), size - 1
        else:
            start, end = int(first), int(last) if last else size - 1
            if end < start:
                return None
        if start < size:
            ranges.append((start, min(end, size - 1)))
    return ranges


def file_reply(blob: Blob, headers: dict[str, str], range_header: str | None) -> Reply:
    ranges = parse_ranges(range_header, blob.size)
    headers = {**headers, "Accept-Ranges": "bytes"}
    if ranges is None:
        return Reply(
            200,
            headers={**headers, "Content-Type": "application/octet-stream"},
            stream=lambda: blob.iter_bytes(),
            length=blob.size,
        )
    if not ranges:
        raise HubError(
            416,
            f"Range not satisfiable for {blob.size} bytes",
            headers={"Content-Range": f"bytes */{blob.size}"},
        )
    if len(ranges) == 1:
        start, end = ranges[0]
        headers.update(
            {"Content-Type": "application/octet-stream", "Content-Range": f"bytes {start}-{end}/{blob.size}"}
        )
        return Reply(
            206, headers=headers, stream=lambda: blob.iter_bytes(start, end + 1), length=end - start + 1
        )
    return multipart_reply(blob, ranges, headers)


def multipart_reply(blob: Blob, ranges: list[tuple[int, int]], headers: dict[str, str]) -> Reply:
    """RFC 7233 multipart/byteranges: one part per range, each with its own Content-Range."""
    boundary = secrets.token_hex(16)
    part_heads = [
        (b"\r\n" if index else b"")
        + (
            f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Range: bytes {start}-{end}/{blob.size}\r\n\r\n"
        ).encode()
        for index, (start, end) in enumerate(ranges)
    ]
    closing = f"\r\n--{boundary}--\r\n".encode()

    def stream() -> Iterator[bytes]:
        for head, (start, end) in zip(part_heads, ranges, strict=True):
            yield head
            yield from blob.iter_bytes(start, end + 1)
        yield closing

    length = sum(map(len, part_heads)) + sum(end - start + 1 for start, end in ranges) + len(closing)
    headers = {**headers, "Content-Type": f"multipart/byteranges; boundary={boundary}"}
    return Reply(206, headers=headers, stream=stream, length=length)


# ----- what the handler needs of the hub and its routes ------------------------------------------


class MatchedRoute(Protocol):
    @property
    def name(self) -> str:
        """The route's name, as request-log entries and fault rules call it."""


class Router(Protocol):
    """What the handler asks of the Hub API (SandboxRoutes, in bot.sandbox.routes)."""

    def match(self, method: str, raw_path: str) -> tuple[MatchedRoute | None, dict[str, str], bool]:
        """(route, decoded params, path_known); path_known without a route means a wrong method."""

    def handle(self, route: MatchedRoute, request: Request) -> Reply:
        """The route's reply to the request; raises HubError."""


class ServedHub(Protocol):
    """What the handler asks of the hub it serves (SandboxHub, in bot.sandbox.hub)."""

    latency_ms: int
    faults: FaultInjector
    limiter: RateLimiter
    routes: Router

    @property
    def endpoint(self) -> str: ...

    def user_for_token(self, token: str | None) -> str | None: ...

    def begin_request(self) -> int: ...

    def record_request(self, entry: dict) -> None: ...


# ----- HTTP plumbing -----------------------------------------------------------------------------


def _parse_length(text: str | bytes, *, base: int) -> int:
    try:
        return int(text, base)
    except ValueError:
        # Treated like a hang-up: the connection cannot be resynchronised after a bad length.
        raise ConnectionError(f"malformed body length {text!r}") from None


class SandboxHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, hub: ServedHub):
        self.hub = hub
        self.open_connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, SandboxRequestHandler)

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], OSError):  # clients hanging up, or stop() closing keep-alives
            super().handle_error(request, client_address)

    def close_open_connections(self) -> None:
        """Stop keep-alive connections too, so a stopped hub really stops answering."""
        with self.connections_lock:
            connections, self.open_connections = list(self.open_connections), set()
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                connection.shutdown(socket.SHUT_RDWR)


class SandboxRequestHandler(BaseHTTPRequestHandler):
    # HTTP/1.1 keep-alive, as the client's pooled connections expect; every reply sets Content-Length.
    protocol_version = "HTTP/1.1"
    timeout = 120
    server: SandboxHTTPServer

    def setup(self):
        super().setup()
        # Headers and body go out in separate writes; with Nagle on, each reply would wait ~40 ms for an ACK.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.connections_lock:
            self.server.open_connections.add(self.connection)

    def finish(self):
        with self.server.connections_lock:
            self.server.open_connections.discard(self.connection)
        super().finish()

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        self._serve()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def _serve(self) -> None:
        hub = self.server.hub
        arrival = hub.begin_request()
        raw_path, _, query_string = self.path.partition("?")
        route, params, path_known = hub.routes.match(self.command, raw_path)
        route_name = route.name if route else "unknown"
        request = Request(
            self.command,
            raw_path,
            parse_qs(query_string, keep_blank_values=True),
            params,
            hub.user_for_token(self._bearer_token()),
            self._base_url(hub),
            self.headers,
            self._iter_body(),
        )
        reply, fault, sent = None, None, 0
        try:
            if hub.latency_ms:
                time.sleep(hub.latency_ms / 1000)
            metered = hub.limiter.take(route_name)
            fault = (
                None if metered is not None and metered.over else hub.faults.pick(route_name, self.command)
            )
            request.ignore_range = fault is not None and fault.kind == "ignore-range"
            if metered is not None and metered.over:
                for _ in request.body_source:
                    pass
                reply = json_reply(
                    {"error": "You have exceeded the rate limit (sandbox quota)"},
                    429,
                    {"Retry-After": str(metered.retry_after)},
                )
            elif fault is None or fault.kind in HANDLED_KINDS:
                reply = self._dispatch(hub, request, route, path_known)
            if fault is not None and fault.kind != "ignore-range":
                reply = self._fault_reply(request, fault, hub.faults.spec.retry_after)
            if reply is not None and metered is not None:  # the Hub sends both headers on every response
                reply = replace(reply, headers={**reply.headers, **metered.headers})
            sent = 0 if reply is None else self._send(reply)
        finally:
            hub.record_request(
                {
                    "method": self.command,
                    "path": raw_path,
                    "query": query_string,
                    "status": 0 if reply is None else reply.status,
                    "bytes": sent,
                    "route": route_name,
                    "user": request.user,
                    "fault": fault.kind if fault else None,
                    "arrival": arrival,
                }
            )

    def _dispatch(
        self, hub: ServedHub, request: Request, route: MatchedRoute | None, path_known: bool
    ) -> Reply:
        try:
            if route is None:
                raise HubError(405 if path_known else 404, f"No route for {self.command} {request.path}")
            reply = hub.routes.handle(route, request)
        except HubError as error:
            reply = error_reply(error)
        except Exception as error:  # noqa: BLE001 - a sandbox bug: answer it rather than drop the connection
            reply = error_reply(HubError(500, f"sandbox error: {type(error).__name__}: {error}"))
        for _ in request.body_source:  # unread body bytes would corrupt the next keep-alive request
            pass
        return reply

    def _fault_reply(self, request: Request, fault: FaultRule, retry_after: int) -> Reply | None:
        """The injected failure; None means "close the connection without a reply"."""
        for _ in request.body_source:
            pass
        if fault.kind in DROP_KINDS:
            self.close_connection = True
            return None
        headers = {}
        if fault.kind == "429":
            headers = {"Retry-After": str(retry_after), "RateLimit": f'"api";r=0;t={retry_after}'}
        return json_reply({"error": f"sandbox fault injection: HTTP {fault.kind}"}, int(fault.kind), headers)

    def _send(self, reply: Reply) -> int:
        sent = 0
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(reply.content_length))
            self.end_headers()
            if self.command != "HEAD":
                for chunk in reply.chunks():
                    self.wfile.write(chunk)
                    sent += len(chunk)
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        return sent

    def _bearer_token(self) -> str | None:
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        return (token.strip() or None) if scheme.lower() == "bearer" else None

    def _base_url(self, hub: ServedHub) -> str:
        host = self.headers.get("Host")
        return f"http://{host}" if host else hub.endpoint

    def _iter_body(self) -> Iterator[bytes]:
        """The request body in chunks, from Content-Length or chunked transfer encoding."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            while True:
                size = _parse_length(self.rfile.readline().split(b";")[0].strip() or b"0", base=16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return
                yield from self._read_exactly(size)
                self.rfile.readline()
        else:
            yield from self._read_exactly(_parse_length(self.headers.get("Content-Length") or "0", base=10))

    def _read_exactly(self, remaining: int) -> Iterator[bytes]:
        while remaining > 0:
            chunk = self.rfile.read(min(CHUNK_SIZE, remaining))
            if not chunk:
                raise ConnectionError("client closed the connection mid-body")
            remaining -= len(chunk)
            yield chunk
