"""The sandbox Hub: a local fake of the Hugging Face Hub HTTP API for tests and the demo.

One job a module, each importing only those before it: faults (which requests fail), http (requests,
replies, the server), routes (the Hub API), hub (SandboxHub), cli (`lora-bot sandbox`). `store` holds the
repos, commits and discussions; `samples` and `layouts` write the demo's sample repos.
"""

from bot.sandbox.cli import serve_main
from bot.sandbox.faults import FaultSpec
from bot.sandbox.hub import SandboxHub
from bot.sandbox.routes import request_repo

__all__ = ["FaultSpec", "SandboxHub", "request_repo", "serve_main"]
