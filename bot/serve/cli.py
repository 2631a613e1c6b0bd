"""The `lora-bot serve` command: the webhook service under uvicorn until SIGINT or SIGTERM.

Starlette and uvicorn are the optional extra `serve`; this module imports them only when the command runs,
so every other command (and a core install) works without them.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

DESCRIPTION = (
    "Receive Hub webhooks (pushes to main, comments on the bot's threads) and scan each repo at once with "
    "the same pipeline as `scan`. The secret is read from an environment variable, never from the command line."
)
HINT = "lora-bot serve needs the optional extra: pip install 'lora-bot[serve]' (Starlette and uvicorn)"
EXIT_USAGE = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="config.yaml (default: the repository's)")
    parser.add_argument("--endpoint", help="Hub URL (default: hub.endpoint, then HF_ENDPOINT)")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=7860, help="7860: the port a Hub Space serves")
    parser.add_argument(
        "--secret-env",
        default="LORA_BOT_WEBHOOK_SECRET",
        metavar="NAME",
        help="environment variable holding the webhook secret (required)",
    )
    parser.add_argument(
        "--queue-file",
        type=Path,
        default=Path(".lora-bot/serve-queue.json"),
        help="repos still waiting at shutdown are kept here and scanned after the next start",
    )
    parser.add_argument(
        "--dedupe-ttl", type=float, default=3600.0, help="seconds a delivery's key is remembered (replays)"
    )


def build(args: argparse.Namespace, secret: str):
    """(the ASGI app, its queue) for these arguments; raises ConfigError for a bad config."""
    from bot.config import load_config
    from bot.pipeline import ScanOptions, run_scan
    from bot.serve.app import create_app
    from bot.serve.worker import RepoQueue

    config = load_config(args.config)
    base = ScanOptions(endpoint=args.endpoint)
    queue = None

    def scan(repo_id: str) -> object:
        result = run_scan(config, dataclasses.replace(base, repos=(repo_id,)))
        rest = cooldown_left(result, config.proposals.cooldown_hours)
        if rest is not None:
            queue.put_later(repo_id, rest)  # nothing else will bring the repo back after its cooldown
        return result

    queue = RepoQueue(scan, args.queue_file)
    return create_app(queue, secret, args.dedupe_ttl), queue


def cooldown_left(result, cooldown_hours: float) -> float | None:
    """Seconds until the scanned repo's cooldown ends, when the scan held it back for its cooldown."""
    from datetime import datetime, timedelta, timezone

    from bot.vocab import Status

    if not any(o.status == Status.COOLDOWN for o in result.outcomes) or not result.repos:
        return None
    modified = result.repos[0].last_modified
    if modified is None:
        return None
    if modified.tzinfo is None:
        modified = modified.replace(tzinfo=timezone.utc)
    left = (modified + timedelta(hours=cooldown_hours) - datetime.now(timezone.utc)).total_seconds()
    return max(left, 0.0) + 1.0


def run(args: argparse.Namespace) -> int:
    try:
        import starlette  # noqa: F401 — only to tell a missing extra apart
        import uvicorn
    except ImportError:
        print(f"lora-bot: {HINT}", file=sys.stderr)
        return EXIT_USAGE
    from bot.config import ConfigError
    from bot.serve.logs import configure

    secret = os.environ.get(args.secret_env, "")
    if not secret:
        print(f"lora-bot: error: set {args.secret_env} to the webhook's secret", file=sys.stderr)
        return EXIT_USAGE
    try:
        app, _queue = build(args, secret)
    except ConfigError as error:
        print(f"lora-bot: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    configure(sys.stderr)
    # uvicorn handles SIGINT/SIGTERM: it stops accepting, answers the requests in flight, then runs the
    # app's shutdown, which finishes the scan in flight and keeps the waiting repos in the queue file.
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False)
    return 0
