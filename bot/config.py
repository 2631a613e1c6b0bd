"""config.yaml: the schema as frozen dataclasses, loaded and validated before any request is made.

Every option has a default here and a comment in config.yaml. A wrong option or value is an error that names
the option and what it accepts — a scheduled bot must not start with a typo'd limit.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from bot.core.limits import MAX_CONFIG_BYTES
from bot.core.yaml_bounded import load_yaml

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config.yaml"


class ConfigError(ValueError):
    """The configuration is wrong; the message names the option and the allowed values."""


@dataclass(frozen=True)
class Query:
    filter: tuple[str, ...] = ("lora",)  # tags a repo must all have, e.g. [lora], [peft, lora]
    author: str | None = None
    search: str | None = None


@dataclass(frozen=True)
class HubConfig:
    endpoint: str | None = None  # None: the HF_ENDPOINT environment variable, else the Hub
    token_env: str = "HF_TOKEN"
    workers: int = 8
    timeout: float = 60.0
    retries: int = 5
    max_retry_wait: float = 60.0
    # Check each file against the Hub base its card or config declares (`lora-bot check`'s rules): one
    # listing, one index and one read per shard for each distinct base per run.
    verify_base: bool = False


@dataclass(frozen=True)
class DiscoveryConfig:
    queries: tuple[Query, ...] = (Query(),)
    repos: tuple[str, ...] = ()
    skip: tuple[str, ...] = ()
    sort: Literal["lastModified", "createdAt", "downloads", "likes", "trendingScore"] = "lastModified"
    limit: int = 1000
    incremental: bool = True
    state_file: str = ".lora-bot/state.json"


@dataclass(frozen=True)
class VariantPolicy:
    reduce_above_rank: int = 16  # offer a reduced variant when the rank exceeds this
    reduce_to_rank: int = 16
    min_energy: float = 0.99  # ...and only when that rank keeps this share of the Frobenius energy
    pad_to_declared_rank: bool = True  # offer a padded variant at the rank adapter_config.json declares
    max_variant_bytes: int = 2_000_000_000


@dataclass(frozen=True)
class ProposalsConfig:
    card: bool = True
    config_fix: bool = True
    variants: bool = True
    flag_discussions: bool = True
    variant_policy: VariantPolicy = field(default_factory=VariantPolicy)
    max_prs_per_run: int = 10
    max_prs_per_repo: int = 1
    # Bytes of whole weight files a run may download to build metadata fixes and variants; beyond it
    # those proposals are reported `deferred` and built on a later run.
    download_budget_bytes: int = 200_000_000
    title_prefix: str = "[lora-bot]"
    # Manners (bot/manners.py). Variants by the policy only for these repos (or namespaces); any repo's
    # owner can still ask for one with `@lora-bot variant rN`.
    variant_repos: tuple[str, ...] = ()
    cooldown_hours: float = 1.0  # no writes to a repo modified less than this long ago; 0 turns it off
    max_prs_per_hour: int = 10  # across all repos, counted over the last hour (manners file)
    max_prs_per_owner: int = 5  # per namespace, counted over the last 24 hours (manners file)
    disabled_retry_days: int = 30  # a repo whose PRs/discussions are disabled is tried again after this
    mode: Literal["all", "opt-in"] = "all"
    opt_in: tuple[str, ...] = ()  # repos or namespaces that asked for lora-bot (mode opt-in)


@dataclass(frozen=True)
class CensusConfig:
    store: str = ".lora-bot/census.sqlite"  # the embedded store; `lora-bot scan --store PATH` overrides it


@dataclass(frozen=True)
class Config:
    hub: HubConfig = field(default_factory=HubConfig)
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    proposals: ProposalsConfig = field(default_factory=ProposalsConfig)
    census: CensusConfig = field(default_factory=CensusConfig)


_POSITIVE = {
    "workers",
    "retries",
    "limit",
    "max_prs_per_repo",
    "reduce_to_rank",
    "max_variant_bytes",
    "timeout",
}
_NON_NEGATIVE = {
    "max_prs_per_run",
    "download_budget_bytes",
    "reduce_above_rank",
    "max_retry_wait",
    "cooldown_hours",
    "max_prs_per_hour",
    "max_prs_per_owner",
    "disabled_retry_days",
}


def load_config(path: str | Path | None = None) -> Config:
    """`path`, else the repository's config.yaml; a missing or malformed file given by path is a ConfigError.

    An installed package has no config.yaml beside it: the schema's defaults are then the configuration
    (a test keeps config.yaml and these defaults identical)."""
    if path is None and not DEFAULT_CONFIG.is_file():
        return Config()
    path = Path(path) if path else DEFAULT_CONFIG
    return load_config_text(_read_config(path), source=path)


def _read_config(path: Path) -> str:
    """The file's text, whole: a folder, a FIFO or a device (`/dev/zero`) is not a config, nor is a file
    over MAX_CONFIG_BYTES or one that is not UTF-8."""
    try:
        if not path.is_file():
            what = "does not exist" if not path.exists() else "is not a regular file"
            raise ConfigError(f"cannot read config {path}: it {what}")
        with path.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as error:
        raise ConfigError(f"cannot read config {path}: {error.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"cannot read config {path}: larger than {MAX_CONFIG_BYTES:,} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"cannot read config {path}: not UTF-8 text (byte {error.start:,})") from None


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int past float range
        return False


def load_config_text(text: str, source: Path | str = "config") -> Config:
    """A config from YAML text (`load_config` reads the file); every problem is a one-line ConfigError."""
    try:
        data = load_yaml(text) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{source} is not valid YAML: {(str(error).splitlines() or [''])[0]}") from None
    except RecursionError:
        raise ConfigError(f"{source} is nested too deeply to be a config") from None
    return config_from_mapping(data, source=Path(str(source)).name)


def config_from_mapping(data: Any, source: str = "config") -> Config:
    return _build(Config, data, source)


def _build(cls, data: Any, where: str):
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of options, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown option; allowed: {', '.join(names)}")
    values = {name: _value(hints[name], data[name], f"{where}.{name}") for name in names if name in data}
    return cls(**values)


def _value(hint, raw: Any, where: str):
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if raw is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _value(inner, raw, where)
    if origin is Literal:
        if raw not in args:
            raise ConfigError(f"{where}: {raw!r} is not allowed; allowed values: {', '.join(map(str, args))}")
        return raw
    if origin is tuple:
        items = [raw] if isinstance(raw, str) else raw
        if not isinstance(items, list):
            raise ConfigError(f"{where}: expected a list, got {type(raw).__name__}")
        return tuple(_value(args[0], item, f"{where}[{i}]") for i, item in enumerate(items))
    if dataclasses.is_dataclass(hint):
        return _build(hint, raw, where)
    return _scalar(hint, raw, where)


def _scalar(hint, raw: Any, where: str):
    name = where.rsplit(".", 1)[-1]
    if hint is bool:
        if not isinstance(raw, bool):
            raise ConfigError(f"{where}: expected true or false, got {raw!r}")
        return raw
    if hint in (int, float):
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not _finite(raw):
            raise ConfigError(
                f"{where}: expected {'a whole number' if hint is int else 'a finite number'}, got {raw!r}"
            )
        if hint is int and int(raw) != raw:
            raise ConfigError(
                f"{where}: expected {'a whole number' if hint is int else 'a number'}, got {raw!r}"
            )
        if name in _POSITIVE and raw <= 0:
            raise ConfigError(f"{where}: must be greater than 0, got {raw!r}")
        if name in _NON_NEGATIVE and raw < 0:
            raise ConfigError(f"{where}: must be 0 or more, got {raw!r}")
        if name == "min_energy" and not 0 < raw <= 1:
            raise ConfigError(f"{where}: must be in (0, 1], got {raw!r}")
        return hint(raw)
    if hint is str:
        if not isinstance(raw, str) or not raw:
            raise ConfigError(f"{where}: expected a non-empty string, got {raw!r}")
        return raw
    raise ConfigError(f"{where}: unsupported option type")  # a schema bug, caught by the tests
