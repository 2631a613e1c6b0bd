"""The census, written out for people: one row per LoRA file in the store, as JSONL and (with pyarrow) Parquet,
and published to a Hub dataset repo with a dataset card.

Rows are streamed from the store and written as they come, so memory does not grow with the census. Repos
whose owners opted out (`lora-bot: ignore`) are left out: they asked to be left alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from bot.census.store import CensusStore

# The columns, in order, with what each holds: the dataset card's table and the Parquet schema follow this.
COLUMNS: dict[str, str] = {
    "repo": "the model repo id on the Hub",
    "sha": "the commit the file was read at",
    "last_modified": "the repo's lastModified when it was read (ISO 8601)",
    "path": "the LoRA file's path in the repo",
    "format": "who wrote the file, by its key names: peft, diffusers, diffusers-legacy, kohya, lycoris, unknown",
    "variant": "the adapter type inside (lora, loha, lokr, ...) when known",
    "rank": "the rank shared by most modules (null when there is none)",
    "ranks": "rank → number of modules at that rank",
    "alpha": "the alpha (declared, or the rank when the format implies alpha = rank)",
    "family": "the base model family the tensor shapes fit (sd1, sdxl, flux1, llama, ...), or null",
    "base_model": "{repo_id, candidates, source}: the base repo when one is known, the candidate repos of the "
    "family, and where the answer came from (card, config, metadata, shapes)",
    "flags": "the lora-bot flag codes found (`lora-bot explain CODE`)",
    "size": "the file's size in bytes",
}


@dataclass(frozen=True)
class ExportResult:
    rows: int
    repos: int
    jsonl: Path
    parquet: Path | None


def census_rows(store: CensusStore) -> Iterator[dict]:
    """One row per LoRA file of every repo in the store that did not opt out, in repo order."""
    for repo_id, sha, modified, skipped, record in store.rows():
        if skipped is not None:
            continue
        base = record.get("base_model") or {}
        yield {
            "repo": repo_id,
            "sha": sha,
            "last_modified": modified,
            "path": record["path"],
            "format": record["format"],
            "variant": record.get("variant"),
            "rank": record.get("rank"),
            "ranks": {str(rank): count for rank, count in (record.get("ranks") or {}).items()},
            "alpha": record.get("alpha"),
            "family": base.get("family"),
            "base_model": {
                "repo_id": base.get("repo_id"),
                "candidates": list(base.get("candidates") or []),
                "source": base.get("source"),
            },
            "flags": sorted({flag["code"] for flag in record.get("flags") or []}),
            "size": record.get("size"),
        }


def parquet_available() -> bool:
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        return False
    return True


def export_census(store: CensusStore, jsonl: Path, parquet: Path | None = None) -> ExportResult:
    """Write the JSONL (and the Parquet, same rows) in one pass over the store."""
    writer = _ParquetWriter(parquet) if parquet is not None else None
    rows = 0
    repos: set[str] = set()
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    try:
        with jsonl.open("w", encoding="utf-8") as out:
            for row in census_rows(store):
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
                if writer is not None:
                    writer.add(row)
                rows += 1
                repos.add(row["repo"])
    finally:
        if writer is not None:
            writer.close()
    return ExportResult(rows, len(repos), jsonl, parquet)


class _ParquetWriter:
    """Rows to a Parquet file in batches: a typed schema (ranks a map, base_model a struct), flat memory."""

    BATCH = 10_000

    def __init__(self, path: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.pa = pa
        self.schema = pa.schema(
            [
                ("repo", pa.string()),
                ("sha", pa.string()),
                ("last_modified", pa.string()),
                ("path", pa.string()),
                ("format", pa.string()),
                ("variant", pa.string()),
                ("rank", pa.int64()),
                ("ranks", pa.map_(pa.int64(), pa.int64())),
                ("alpha", pa.float64()),
                ("family", pa.string()),
                (
                    "base_model",
                    pa.struct(
                        [
                            ("repo_id", pa.string()),
                            ("candidates", pa.list_(pa.string())),
                            ("source", pa.string()),
                        ]
                    ),
                ),
                ("flags", pa.list_(pa.string())),
                ("size", pa.int64()),
            ]
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = pq.ParquetWriter(path, self.schema)
        self.batch: list[dict] = []

    def add(self, row: dict) -> None:
        typed = dict(row)
        typed["ranks"] = [(int(rank), count) for rank, count in row["ranks"].items()]
        self.batch.append(typed)
        if len(self.batch) >= self.BATCH:
            self._flush()

    def _flush(self) -> None:
        if self.batch:
            self.writer.write_table(self.pa.Table.from_pylist(self.batch, schema=self.schema))
            self.batch = []

    def close(self) -> None:
        self._flush()
        self.writer.close()


# ------------------------------------------------------------------------------------------ publishing

DATA_JSONL = "data/census.jsonl"
DATA_PARQUET = "data/census.parquet"


def dataset_card(result: ExportResult, license_id: str, generated: datetime | None = None) -> str:
    """README.md of the dataset repo: YAML front matter (license, tags, the data file) and the columns."""
    when = (generated or datetime.now(timezone.utc)).strftime("%Y-%m-%d %H:%M UTC")
    columns = "\n".join(f"| `{name}` | {meaning} |" for name, meaning in COLUMNS.items())
    return (
        "---\n"
        f"license: {license_id}\n"
        "pretty_name: LoRA census\n"
        "tags:\n- lora\n- peft\n- safetensors\n- census\n- lora-bot\n"
        "configs:\n- config_name: default\n  data_files:\n"
        f"  - split: train\n    path: {DATA_JSONL}\n"
        "---\n\n"
        "# LoRA census\n\n"
        f"One row per LoRA file found on the Hub by lora-bot: {result.rows:,} files "
        f"in {result.repos:,} repos, generated {when}. Every value was read from the files' safetensors "
        "headers (never the weights, never a pickle), their `adapter_config.json` and model cards. Repos whose "
        "owners opted out (`lora-bot: ignore`) are not included.\n\n"
        f"Files: `{DATA_JSONL}`"
        + (f" and `{DATA_PARQUET}` (the same rows)" if result.parquet else "")
        + ".\n\n"
        "| column | meaning |\n|---|---|\n" + columns + "\n"
    )


def publish_census(api, repo_id: str, result: ExportResult, license_id: str) -> str:
    """Commit the export and its dataset card to the dataset repo `repo_id` (created if needed); the commit URL."""
    from huggingface_hub import CommitOperationAdd

    api.create_repo(repo_id, repo_type="dataset", exist_ok=True)
    operations = [
        CommitOperationAdd(DATA_JSONL, str(result.jsonl)),
        CommitOperationAdd("README.md", dataset_card(result, license_id).encode("utf-8")),
    ]
    if result.parquet is not None:
        operations.insert(1, CommitOperationAdd(DATA_PARQUET, str(result.parquet)))
    info = api.create_commit(
        repo_id,
        operations,
        repo_type="dataset",
        commit_message=f"LoRA census: {result.rows:,} files in {result.repos:,} repos",
    )
    return info.commit_url
