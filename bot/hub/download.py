"""Whole-file downloads, for the only proposals that need the weights themselves (variants, metadata fixes)."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import HfApi

from bot.hub.client import RetryPolicy, with_retries


class Downloader:
    """Files of one revision into a scratch cache; a file asked for twice is downloaded once."""

    def __init__(self, api: HfApi, retry: RetryPolicy, cache_dir: Path) -> None:
        self.api = api
        self.retry = retry
        self.cache_dir = cache_dir

    def fetch(self, repo_id: str, path: str, revision: str) -> Path:
        return Path(
            with_retries(
                self.retry,
                lambda: self.api.hf_hub_download(repo_id, path, revision=revision, cache_dir=self.cache_dir),
            )
        )
