"""`bot.check(adapter, base=...)`: will this adapter load on this base, answered from headers before loading.

The adapter is a LoRA file, a folder holding one, or a Hub repo id; the base a local file or folder (single
file, shards with their index, a diffusers pipeline) or a Hub repo id. Both are read header-only (the base
through `bot.sources.base`, cached by file sha); the rules are `bot.core.compat`'s.

    import bot
    bot.ensure_loads("./my-lora", base="stabilityai/stable-diffusion-xl-base-1.0")  # raises if it would not
    pipe.load_lora_weights("./my-lora")
"""

from __future__ import annotations

import os
from pathlib import Path

from bot.core.compat import CheckResult, check_compatibility
from bot.core.inspect import FileEvidence, inspect_evidence
from bot.core.selection import is_repo_id
from bot.vocab import Verdict


class CheckInputError(ValueError):
    """The adapter or the base cannot be read (no such path, not a repo, no LoRA file, unreadable base)."""


class IncompatibleAdapterError(RuntimeError):
    """Raised by `ensure_loads` before a script calls PEFT or diffusers: the verdict and its first problems."""

    def __init__(self, result: CheckResult) -> None:
        self.result = result
        lines = [f"{result.adapter} on {result.base.label}: {result.verdict}: {result.reason}"]
        lines += [f"  {p.code}: {p.message}" for p in result.problems[:5]]
        super().__init__("\n".join(lines))


def check(
    adapter: str | os.PathLike,
    base: str | os.PathLike,
    *,
    file: str | None = None,
    revision: str | None = None,
    base_revision: str | None = None,
    endpoint: str | None = None,
    token: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> CheckResult:
    """The adapter against the base: a `CheckResult` (verdict, applied fraction, problems, modules).
    `file` picks one LoRA file when the adapter holds several."""
    evidence = _adapter_evidence(adapter, file, revision, endpoint, token)
    return check_compatibility(
        inspect_evidence(evidence), _base_weights(base, base_revision, endpoint, token, cache_dir)
    )


def ensure_loads(adapter, base, *, allow_partial: bool = False, **options) -> CheckResult:
    """`check`, raising `IncompatibleAdapterError` unless the adapter loads fully (or, with `allow_partial`,
    loads while ignoring some modules). Returns the result when it does."""
    result = check(adapter, base, **options)
    accepted = {Verdict.LOADS, Verdict.PARTIAL} if allow_partial else {Verdict.LOADS}
    if result.verdict not in accepted:
        raise IncompatibleAdapterError(result)
    return result


def _api(endpoint: str | None, token: str | None):
    from bot.hub.client import make_api

    return make_api(endpoint or os.environ.get("HF_ENDPOINT"), token or os.environ.get("HF_TOKEN"))


def _adapter_evidence(adapter, file, revision, endpoint, token) -> FileEvidence:
    target = Path(adapter)
    if target.exists():
        from bot.sources import local

        found = local.collect(target)
        where = str(target)
    elif is_repo_id(str(adapter)):
        from bot.core.repo import RepoRef
        from bot.sources.hub import RemoteReader

        snapshot = RemoteReader(_api(endpoint, token)).read(RepoRef(str(adapter), sha=revision))
        if snapshot.error and not snapshot.evidence:
            raise CheckInputError(f"{adapter}: {snapshot.error}")
        found = list(snapshot.evidence)
        where = str(adapter)
    else:
        raise CheckInputError(f"no such file or folder, and not a Hub repo id: {adapter}")
    if file is not None:
        found = [e for e in found if e.path == file or e.path.endswith("/" + file)]
    if not found:
        raise CheckInputError(f"{where} holds no LoRA file" + (f" named {file}" if file else ""))
    if len(found) > 1:
        names = ", ".join(e.path for e in found[:5])
        raise CheckInputError(f"{where} holds {len(found)} LoRA files ({names}); name one with --file")
    return found[0]


def _base_weights(base, base_revision, endpoint, token, cache_dir):
    from bot.sources.base import BaseReadError, HubBaseReader, cache_for, read_local_base
    from bot.sources.hub import RemoteReader

    target = Path(base)
    try:
        if target.exists():
            return read_local_base(target)
        if not is_repo_id(str(base)):
            raise CheckInputError(f"no such file or folder, and not a Hub repo id: {base}")
        reader = HubBaseReader(RemoteReader(_api(endpoint, token)), cache_for(cache_dir))
        return reader.read(str(base), base_revision)
    except BaseReadError as error:
        raise CheckInputError(f"cannot read the base: {error}") from None
