"""The `lora-bot sandbox` command: serve the sandbox Hub until SIGINT or SIGTERM.

`add_arguments` and `run` plug it into a parser like any other subcommand; `serve_main(argv)` is the
command on its own, with its own parser (tests and `python -c` subprocesses call it).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import threading
from pathlib import Path

from bot.sandbox.faults import FaultSpec, QuotaSpec

PROG = "lora-bot sandbox"
DESCRIPTION = "Serve a local Hub emulator for tests and demos."
EXIT_USAGE = 2


class _UsageError(Exception):
    pass


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message):  # one clear line instead of usage + traceback-like noise
        raise _UsageError(message)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options, on `parser` (its own in serve_main, or a subcommand's)."""
    parser.add_argument("--repos", type=Path, help="directory laid out as <namespace>/<name>/<files>")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--request-log", type=Path, help="append one JSON line per request")
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument("--faults", default=None, help='e.g. "429:0.1,drop:0.03@write,seed=7,retry-after=1"')
    parser.add_argument(
        "--quota",
        default=None,
        help='rate limits as the Hub counts them, e.g. "api=1000/300,resolvers=5000/300" (Q requests per W '
        "seconds, fixed windows; RateLimit headers on every response, 429 + Retry-After past Q)",
    )
    parser.add_argument("--state-out", type=Path, help="write the final state as JSON on exit")
    parser.add_argument("--user", default="lora-bot", help="user name every other token maps to")
    parser.add_argument(
        "--token-user",
        action="append",
        default=[],
        metavar="TOKEN=NAME",
        help="this token acts as this user (repeatable: the bot, an owner, an org member, a stranger)",
    )
    parser.add_argument(
        "--org",
        action="append",
        default=[],
        metavar="ORG=USER,USER",
        help="an organisation and its members (repeatable); members administer the org's repos",
    )
    parser.add_argument("--webhook", metavar="URL", help="POST a webhook here on pushes to main and comments")
    parser.add_argument("--webhook-secret", metavar="S", help="sent as X-Webhook-Secret with every webhook")


def _check(args: argparse.Namespace) -> FaultSpec | None:
    """What the parser cannot check; returns the parsed --faults (--quota is parsed into args.quota_spec).
    Raises _UsageError."""
    try:
        args.quota_spec = QuotaSpec.parse(args.quota) if args.quota else None
    except ValueError as error:
        raise _UsageError(f"--quota: {error}") from None
    if args.repos is not None and not args.repos.is_dir():
        raise _UsageError(f"--repos {args.repos}: not a directory")
    if not 0 <= args.port <= 65535:
        raise _UsageError(f"--port {args.port}: must be between 0 and 65535")
    if args.latency_ms < 0:
        raise _UsageError("--latency-ms must not be negative")
    for option, values in (("--token-user", args.token_user), ("--org", args.org)):
        for value in values:
            name, _, rest = value.partition("=")
            if not name or not rest:
                raise _UsageError(f"{option} {value!r}: expected {option[2:].upper().replace('-', '_')}=...")
    if args.webhook_secret and not args.webhook:
        raise _UsageError("--webhook-secret needs --webhook URL")
    try:
        return FaultSpec.parse(args.faults) if args.faults else None
    except ValueError as error:
        raise _UsageError(f"--faults: {error}") from None


def _pairs(values: list[str]) -> dict[str, str]:
    return dict(value.partition("=")[::2] for value in values)


def _usage_error(error: _UsageError) -> int:
    print(f"{PROG}: error: {error}", file=sys.stderr)
    return EXIT_USAGE


def _load_samples(hub, scratch: Path) -> None:
    """Without --repos, serve the demo repos from bot.sandbox.samples, or an empty hub if it is absent."""
    try:
        from bot.sandbox.samples import write_sample_repos
    except ImportError as error:
        print(f"{PROG}: no sample repos ({error}); serving an empty hub", file=sys.stderr)
        return
    write_sample_repos(scratch)
    hub.load_directory(scratch)


def run(args: argparse.Namespace) -> int:
    """`lora-bot sandbox`: print the endpoint as the first stdout line, serve until SIGINT/SIGTERM."""
    try:
        faults = _check(args)
    except _UsageError as error:
        return _usage_error(error)
    from bot.sandbox.hub import SandboxHub  # the server's imports, only when it serves

    hub = SandboxHub(
        user=args.user,
        users=_pairs(args.token_user),
        orgs={org: [m for m in members.split(",") if m] for org, members in _pairs(args.org).items()},
        latency_ms=args.latency_ms,
        faults=faults,
        request_log=args.request_log,
        quotas=args.quota_spec,
        webhook_url=args.webhook,
        webhook_secret=args.webhook_secret,
    )
    with tempfile.TemporaryDirectory(prefix="lora-bot-sandbox-") as scratch:
        if args.repos is not None:
            hub.load_directory(args.repos)
        else:
            _load_samples(hub, Path(scratch))
        try:
            endpoint = hub.start(args.host, args.port)
        except OSError as error:
            print(f"{PROG}: error: cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr)
            return 1
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        print(endpoint, flush=True)
        print(
            f"{PROG}: serving {len(hub.store.repos)} repos; Ctrl-C to stop",
            file=sys.stderr,
            flush=True,
        )
        while not stop.wait(0.2):  # a timed wait lets the signal handlers run promptly
            pass
        state = hub.state()
        hub.stop()
    if args.state_out is not None:
        args.state_out.write_text(json.dumps(state, indent=2, default=str) + "\n", encoding="utf-8")
    return 0


def serve_main(argv: list[str] | None = None) -> int:
    """The command on its own parser; a usage error is one line on stderr and exit 2."""
    parser = _ArgumentParser(prog=PROG, description=DESCRIPTION)
    add_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except _UsageError as error:
        return _usage_error(error)
    return run(args)


if __name__ == "__main__":
    raise SystemExit(serve_main())
