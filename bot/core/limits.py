"""Every size cap lora-bot applies to what strangers' repos and users hand it, in one place.

Each cap is checked *before* the work it bounds (before allocating, parsing, building or uploading), and what
exceeds it is refused with a message that names the cap, never truncated: a truncated README or config would
turn into a false claim or a damaged file. The README's "Limits" table is generated from `LIMITS`
(`limits_table_markdown`), and a test keeps the two equal.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    name: str
    value: int
    unit: str
    why: str


# The safetensors reference implementation refuses headers above 100 MB; so do we, before allocating.
MAX_HEADER_BYTES = 100_000_000
# A LoRA adapter's header is far smaller. The largest real ones are kohya files with a big ss_tag_frequency
# and LoRAs on every expert of a MoE: DeepSeek-V3's 256 experts make ~90,000 tensors and 13 MB. Inspecting
# costs ~20 µs per tensor, and the densest legal header (one tiny tensor per ~125 bytes) at this cap takes
# about 3 s and 200 MB (benchmarks/hostile_bench.py), inside the 5 s a file may cost a scan worker. A LoRA on
# every expert of a 384- or 512-expert MoE (Kimi K2, Qwen3-Next: ~140,000-150,000 tensors, ~21 MB) is over
# it. An adapter's header over this cap is refused before it is read, as "not inspected" (a limit of the
# bot, not a defect of the file: never a corrupt-header claim); base-model shards, which are parsed but not
# analysed, keep the format's limit.
MAX_ADAPTER_HEADER_BYTES = 16_000_000
# adapter_config.json and README.md are read whole or not at all. Real configs with a long rank_pattern reach a
# few MB; a card over this is refused (never cut: a cut card or config is a false claim or a damaged file).
MAX_TEXT_BYTES = 16_000_000
# A card PR uploads the whole README.md; past this the Hub's card page is no longer a card.
MAX_CARD_BYTES = 16_000_000
# YAML nodes after following every alias: a 400-byte "billion laughs" card expands to billions.
MAX_YAML_NODES = 200_000
# A rank_pattern / alpha_pattern key: PEFT's are module names or short regexes; longer is not a config.
MAX_PATTERN_CHARS = 1_000
# States of one compiled pattern (bounded repeats like `a{1000}` expand): bounds the matcher's work per name.
MAX_PATTERN_STATES = 20_000
# A declared LoRA rank above this is no rank any loader can build (a 30-digit `r` would overflow shapes).
MAX_RANK = 65_536
# A variant PR's weights: the estimate from the header is checked before anything is built or downloaded.
MAX_VARIANT_BYTES = 2_000_000_000
# config.yaml given to `scan --config`: read whole or refused (`/dev/zero` is not a config).
MAX_CONFIG_BYTES = 1_000_000
# Nesting of the JSON trainers keep in string metadata (ss_network_args, lora_adapter_metadata): real ones are
# 2-3 levels; a deeper one would exhaust the recursion of the JSON encoder when `resize` rewrites it.
MAX_METADATA_JSON_DEPTH = 32

LIMITS: tuple[Limit, ...] = (
    Limit(
        "MAX_HEADER_BYTES",
        MAX_HEADER_BYTES,
        "bytes",
        "safetensors header JSON; the reference reader's own cap",
    ),
    Limit(
        "MAX_ADAPTER_HEADER_BYTES",
        MAX_ADAPTER_HEADER_BYTES,
        "bytes",
        "a LoRA adapter's header; above it the file is not inspected (base-model shards: the cap above)",
    ),
    Limit(
        "MAX_TEXT_BYTES", MAX_TEXT_BYTES, "bytes", "adapter_config.json or README.md read from a repo, whole"
    ),
    Limit("MAX_CARD_BYTES", MAX_CARD_BYTES, "bytes", "README.md written by a card PR"),
    Limit("MAX_YAML_NODES", MAX_YAML_NODES, "nodes", "YAML front matter after alias expansion (alias bombs)"),
    Limit("MAX_PATTERN_CHARS", MAX_PATTERN_CHARS, "characters", "one rank_pattern / alpha_pattern key"),
    Limit(
        "MAX_PATTERN_STATES", MAX_PATTERN_STATES, "states", "one compiled pattern, bounded repeats expanded"
    ),
    Limit(
        "MAX_RANK",
        MAX_RANK,
        "",
        "a declared r or rank_pattern value (adapter_config.json, lora_adapter_metadata)",
    ),
    Limit(
        "MAX_VARIANT_BYTES",
        MAX_VARIANT_BYTES,
        "bytes",
        "weights of one variant PR, estimated before building",
    ),
    Limit("MAX_CONFIG_BYTES", MAX_CONFIG_BYTES, "bytes", "config.yaml given to `scan --config`"),
    Limit(
        "MAX_METADATA_JSON_DEPTH",
        MAX_METADATA_JSON_DEPTH,
        "levels",
        "JSON in header metadata (ss_network_args, lora_adapter_metadata)",
    ),
)


def limits_table_markdown() -> str:
    """The README's table of limits, generated so the two never disagree."""
    rows = ["| limit | value | what it bounds |", "|---|---|---|"]
    rows += [f"| `{x.name}` | {x.value:,}{' ' + x.unit if x.unit else ''} | {x.why} |" for x in LIMITS]
    return "\n".join(rows)
