"""The sandbox Hub: a local fake of the Hugging Face Hub HTTP API for tests and the demo.

One job a module, each importing only those before it: faults (which requests fail), http (requests,
replies, the server), routes (the Hub API), hub (SandboxHub), cli (`lora-bot sandbox`). `store` holds the
repos, commits and discussions; `samples` and `layouts` write the demo's sample repos.
"""

from importlib import import_module

# Loaded on first use: `lora-bot --help` and every other command register `sandbox` without paying for the
# server's imports.
_EXPORTS = {
    "FaultSpec": "bot.sandbox.faults",
    "SandboxHub": "bot.sandbox.hub",
    "request_repo": "bot.sandbox.routes",
    "serve_main": "bot.sandbox.cli",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'bot.sandbox' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
