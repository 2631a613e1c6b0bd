"""Which repos to scan: config queries + explicit repos, minus skips and opt-outs, one shard, newer than the
watermark (`bot.state`). Produces `RepoRef`s; reads nothing but listings.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

from huggingface_hub import HfApi

from bot.config import DiscoveryConfig
from bot.core.repo import RepoRef
from bot.hub.client import RetryPolicy, with_retries

log = logging.getLogger(__name__)

OPT_OUT_TAG = "lora-bot-ignore"
_SORT_ARGUMENT = {
    "lastModified": "last_modified",
    "createdAt": "created_at",
    "downloads": "downloads",
    "likes": "likes",
    "trendingScore": "trending_score",
}


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based, as in `--shard 2/4`
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError:
            raise ValueError(f"--shard takes K/N with whole numbers, e.g. 1/4; got {text!r}") from None
        if not 1 <= index <= count:
            raise ValueError(f"--shard K/N needs 1 <= K <= N; got {text!r}")
        return cls(index, count)

    def owns(self, repo_id: str) -> bool:
        """Stable across runs and machines: a hash of the repo id, not Python's salted hash()."""
        digest = int.from_bytes(hashlib.sha256(repo_id.encode()).digest()[:8], "big")
        return digest % self.count == self.index - 1


def opted_out(tags: Iterable[str], card_data: dict | None) -> bool:
    """The owner's own opt-out: the tag `lora-bot-ignore`, or `lora-bot: ignore` in the card metadata."""
    if OPT_OUT_TAG in set(tags or ()):
        return True
    value = (card_data or {}).get("lora-bot")
    return isinstance(value, str) and value.strip().lower() == "ignore"


# ------------------------------------------------------------------------------------------- discovery

LISTING_FIELDS = ("lastModified", "sha", "tags", "siblings", "cardData", "gated")


def listed_ref(model, modified: datetime | None) -> RepoRef:
    """A listing entry as a RepoRef; `files` only when the listing carried siblings (None: read model_info)."""
    siblings = getattr(model, "siblings", None)
    card = getattr(model, "card_data", None)
    if card is not None and hasattr(card, "to_dict"):
        card = card.to_dict()
    return RepoRef(
        model.id,
        sha=model.sha,
        last_modified=modified,
        tags=tuple(model.tags or ()),
        files=None if siblings is None else tuple(s.rfilename for s in siblings),
        card_data=card,
        gated=bool(getattr(model, "gated", False)),
    )


def _aware(when: datetime | None) -> datetime | None:
    if when is not None and when.tzinfo is None:
        return when.replace(tzinfo=timezone.utc)
    return when


@dataclass(frozen=True)
class Discovery:
    refs: tuple[RepoRef, ...]
    skipped: tuple[tuple[str, str], ...]  # (repo id, why), shown in the report


def discover(
    api: HfApi,
    config: DiscoveryConfig,
    policy: RetryPolicy,
    *,
    explicit: Iterable[str] = (),
    shard: Shard | None = None,
    watermark: datetime | None = None,
) -> Discovery:
    """Explicit repos (`--repo`) replace the queries; config `repos` are added to them."""
    explicit = list(explicit)
    found: dict[str, RepoRef] = {}
    skipped: list[tuple[str, str]] = []
    if explicit:
        for repo_id in explicit:
            found.setdefault(repo_id, RepoRef(repo_id))
    else:
        for query in config.queries:
            for ref in _list(api, config, query, policy, watermark):
                found.setdefault(ref.repo_id, ref)
        for repo_id in config.repos:
            found.setdefault(repo_id, RepoRef(repo_id))
    refs = []
    skip = set(config.skip)
    for repo_id, ref in found.items():
        if repo_id in skip:
            log.info("%s: skipped, in the config's skip list", repo_id)
            skipped.append((repo_id, "in the config's skip list"))
        elif OPT_OUT_TAG in ref.tags:
            log.info("%s: skipped, opted out with the tag %s", repo_id, OPT_OUT_TAG)
            skipped.append((repo_id, f"opted out with the tag {OPT_OUT_TAG}"))
        elif shard and not shard.owns(repo_id):
            continue  # another shard's repo: not skipped, just not ours
        else:
            refs.append(ref)
    return Discovery(tuple(refs), tuple(skipped))


def _list(
    api: HfApi, config: DiscoveryConfig, query, policy: RetryPolicy, watermark: datetime | None
) -> list[RepoRef]:
    watermark = _aware(watermark)
    incremental = config.incremental and watermark is not None
    newest_first = config.sort == "lastModified"

    def listing() -> list[RepoRef]:
        refs = []
        models = api.list_models(
            filter=list(query.filter) or None,
            author=query.author,
            search=query.search,
            sort=_SORT_ARGUMENT[config.sort],
            limit=config.limit,
            # Everything the reader needs, so a listed repo costs no model_info (hub-scale.md: listing
            # siblings carry names only; the header read's Content-Range gives each file's size).
            expand=list(LISTING_FIELDS),
        )
        for model in models:
            modified = _aware(model.last_modified)
            if incremental and modified is not None and modified <= watermark:
                if newest_first:
                    break  # everything after this was scanned already
                continue
            refs.append(listed_ref(model, modified))
        return refs

    # A failed page restarts the listing: the first page is not retried by huggingface_hub itself.
    return with_retries(policy, listing)
