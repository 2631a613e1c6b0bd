"""The webhook service's ASGI app (Starlette): `POST /webhook` and `GET /health`.

A delivery is answered at once and the scan runs on the queue's worker: the Hub waits for no scan.
- wrong or missing `X-Webhook-Secret` → 401, compared in constant time (hmac.compare_digest);
- a body that is not JSON → 400;
- an event seen in the last `dedupe_ttl` seconds (the Hub retries; past events can be replayed) → 200
  `duplicate`, nothing queued;
- an event the bot has nothing to do with (a PR ref, a comment without `@lora-bot`) → 202 `ignored`;
- otherwise the repo is queued → 202 `queued` (or `coalesced` when it was waiting already).
"""

from __future__ import annotations

import contextlib
import json
import logging

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bot.serve.events import Deduper, parse_event, secret_ok
from bot.serve.worker import RepoQueue

log = logging.getLogger(__name__)
MAX_BODY = 1_000_000  # the Hub's payloads are a few kB; a larger body is not one of them


def create_app(queue: RepoQueue, secret: str, dedupe_ttl: float = 3600.0) -> Starlette:
    deduper = Deduper(dedupe_ttl)

    async def webhook(request: Request) -> JSONResponse:
        if not secret_ok(secret, request.headers.get("x-webhook-secret")):
            log.info("webhook refused", extra={"fields": {"reason": "secret", "client": _client(request)}})
            return JSONResponse({"error": "invalid X-Webhook-Secret"}, status_code=401)
        body = await request.body()
        if len(body) > MAX_BODY:
            return JSONResponse({"error": "body too large"}, status_code=413)
        try:
            payload = json.loads(body)
        except ValueError:
            return JSONResponse({"error": "body is not JSON"}, status_code=400)
        event, why = parse_event(payload, body)
        if event is None:
            log.info("webhook ignored", extra={"fields": {"reason": why}})
            return JSONResponse({"status": "ignored", "reason": why}, status_code=202)
        if not deduper.first_time(event.key):
            log.info("webhook duplicate", extra={"fields": {"key": event.key}})
            return JSONResponse({"status": "duplicate"}, status_code=200)
        status = "queued" if queue.put(event.repo_id) else "coalesced"
        log.info("webhook %s", status, extra={"fields": {"repo_id": event.repo_id, "scope": event.scope}})
        return JSONResponse({"status": status, "repo_id": event.repo_id}, status_code=202)

    async def health(_request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", **queue.stats()})

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        queue.start()
        log.info("worker started", extra={"fields": queue.stats()})
        try:
            yield
        finally:
            # uvicorn stopped taking requests and answered those in flight; now the scan in flight ends
            # and the repos still waiting go to the queue file.
            queue.stop()
            log.info("worker stopped", extra={"fields": queue.stats()})

    return Starlette(
        routes=[Route("/webhook", webhook, methods=["POST"]), Route("/health", health, methods=["GET"])],
        lifespan=lifespan,
    )


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None
