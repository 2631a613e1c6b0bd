"""The words lora-bot uses on the wire: flag codes, severities, formats, module kinds, proposal kinds, statuses.

Each vocabulary is a `StrEnum`, so a member *is* its string in JSON, reports and PR bodies, and a typo is an
`AttributeError` at import instead of a silently wrong report. Reports, tools and the README's tables are
keyed on these strings: a member's value never changes meaning once released. New words go here first;
the README's tables are generated from these enums (and tests keep the two in sync).
"""

from __future__ import annotations

import sys
from enum import Enum

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # Python 3.10: the same behaviour, spelled out

    class StrEnum(str, Enum):
        def __str__(self) -> str:
            return str(self.value)


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


class FlagCode(StrEnum):
    """What can be wrong with a LoRA file. Explanations live in `bot.core.flags` (`lora-bot explain CODE`)."""

    RANK_MISMATCH_CONFIG = "rank-mismatch-config"
    RANK_MISMATCH_METADATA = "rank-mismatch-metadata"
    BASE_MODEL_MISMATCH = "base-model-mismatch"
    BASE_MODEL_NOT_A_REPO = "base-model-not-a-repo"
    ALPHA_MISSING = "alpha-missing"
    UNPAIRED_MODULE = "unpaired-module"
    PAIR_SHAPE_MISMATCH = "pair-shape-mismatch"
    MIXED_RANK_UNDECLARED = "mixed-rank-undeclared"
    UNKNOWN_KEYS = "unknown-keys"
    DORA_PRESENT = "dora-present"
    NON_LORA_ADAPTER = "non-lora-adapter"
    CORRUPT_HEADER = "corrupt-header"
    NOT_INSPECTED = "not-inspected"
    PICKLE_ONLY = "pickle-only"
    NOT_AN_ADAPTER = "not-an-adapter"
    CONFIG_INVALID = "config-invalid"
    CARD_INVALID = "card-invalid"
    # `lora-bot check`: the adapter against a given base's weights.
    TARGET_MISSING_IN_BASE = "target-missing-in-base"
    SHAPE_MISMATCH_BASE = "shape-mismatch-base"
    UNMAPPED_NAMING = "unmapped-naming"
    PATTERN_UNCHECKED = "pattern-unchecked"


class Format(StrEnum):
    """Who wrote the file, by its key names (`inspect --json` "format")."""

    PEFT = "peft"
    DIFFUSERS = "diffusers"
    DIFFUSERS_LEGACY = "diffusers-legacy"
    KOHYA = "kohya"
    LYCORIS = "lycoris"
    UNKNOWN = "unknown"


class ModuleKind(StrEnum):
    """What one adapted layer holds. Only LORA and LORA_TUCKER are rank-r products B·A that can be resized."""

    LORA = "lora"
    LORA_TUCKER = "lora-tucker"
    LOHA = "loha"
    LOKR = "lokr"
    OTHER = "other"


class Verdict(StrEnum):
    """`lora-bot check`: what loading the adapter onto the base does."""

    LOADS = "loads"  # every module fits a weight of the base
    PARTIAL = "partial"  # it loads, but the loader ignores some modules
    FAILS = "fails"  # the loader raises
    UNKNOWN = "unknown"  # some module names need a converter lora-bot does not model


class ModuleStatus(StrEnum):
    """`lora-bot check`: one adapter module against the base."""

    APPLIES = "applies"
    MISSING = "missing"  # the base has no such layer: the loader leaves the module unused
    SHAPE_MISMATCH = "shape-mismatch"  # the layer exists with other widths: the load fails
    UNMAPPED = "unmapped"  # an original-checkpoint name the base does not use


class ProposalKind(StrEnum):
    CARD = "card"
    CONFIG_FIX = "config-fix"
    METADATA_FIX = "metadata-fix"
    VARIANT = "variant"
    FLAGS = "flags"
    GROUP = "group"  # one PR holding proposals of several kinds
    REPO = "repo"  # an outcome about the whole repo (its proposal stage failed)
    PR = "pr"  # closing a PR of any kind
    COMMAND = "command"  # an owner's comment command, acted on and answered


class Command(StrEnum):
    """What an owner can ask in a comment on the bot's own threads (`@lora-bot <command>`)."""

    IGNORE = "ignore"  # this proposal, forever
    IGNORE_REPO = "ignore-repo"  # opt the whole repo out
    RECREATE = "recreate"  # rebuild from the current head
    EXPLAIN = "explain"  # explain a flag code
    VARIANT = "variant"  # build and add a rank-N variant now
    CHECK = "check"  # re-inspect now
    UNKNOWN = "unknown"  # `@lora-bot` followed by words lora-bot does not know: answered with the list


class Status(StrEnum):
    """What happened to a proposal this run (the report's `proposals[].status`)."""

    OPENED = "opened"
    WOULD_OPEN = "would-open"
    EXISTS = "exists"
    CLOSED_BY_OWNER = "closed-by-owner"
    UPDATED = "updated"
    WOULD_UPDATE = "would-update"
    SUPERSEDED = "superseded"
    WOULD_SUPERSEDE = "would-superseded"
    CLOSED_STALE = "closed-stale"
    WOULD_CLOSE_STALE = "would-closed-stale"
    RESOLVED = "resolved"
    WOULD_RESOLVE = "would-resolved"
    LIMIT_REACHED = "limit-reached"
    DEFERRED = "deferred"
    FAILED = "failed"
    REPLIED = "replied"
    WOULD_REPLY = "would-reply"
    OPTED_OUT = "opted-out"
    COOLDOWN = "cooldown"
    DISABLED = "discussions-disabled"
    NOT_OPTED_IN = "not-opted-in"
    UNBUILDABLE = "unbuildable"
    DUPLICATE_CLOSED = "closed-duplicate"

    @property
    def dry_run_form(self) -> Status:
        """What a dry run reports instead of this status: the same act, not carried out."""
        return _WOULD.get(self, self)


_WOULD = {
    Status.OPENED: Status.WOULD_OPEN,
    Status.UPDATED: Status.WOULD_UPDATE,
    Status.SUPERSEDED: Status.WOULD_SUPERSEDE,
    Status.CLOSED_STALE: Status.WOULD_CLOSE_STALE,
    Status.RESOLVED: Status.WOULD_RESOLVE,
    Status.REPLIED: Status.WOULD_REPLY,
}

STATUS_MEANINGS: dict[Status, str] = {
    Status.OPENED: "a PR or discussion was opened",
    Status.WOULD_OPEN: "dry run: would be opened",
    Status.EXISTS: "the same change is already proposed (open or merged); nothing new is opened",
    Status.CLOSED_BY_OWNER: "the owner closed the same proposal before; it is never proposed again",
    Status.UPDATED: "the flags discussion got a comment: its findings changed",
    Status.WOULD_UPDATE: "dry run: the flags discussion would get a comment",
    Status.SUPERSEDED: "an open lora-bot PR was closed with a link to the PR that replaces it",
    Status.WOULD_SUPERSEDE: "dry run: an open lora-bot PR would be superseded",
    Status.CLOSED_STALE: "an open lora-bot PR no longer needed (the repo was fixed or changed) was closed",
    Status.WOULD_CLOSE_STALE: "dry run: an unneeded lora-bot PR would be closed",
    Status.RESOLVED: "the flags discussion was closed: its findings are resolved",
    Status.WOULD_RESOLVE: "dry run: the flags discussion would be closed as resolved",
    Status.LIMIT_REACHED: "a PR limit (per run or per repo) held it back; proposed again next run",
    Status.DEFERRED: (
        "not built: the weights it needs do not fit what is left of the run's download budget "
        "(`proposals.download_budget_bytes`; `detail` says how many bytes); proposed again next run"
    ),
    Status.FAILED: "the write failed (the reason is in `detail`); tried again next run",
    Status.REPLIED: "an owner's `@lora-bot` command was acted on and answered in its thread (once per comment)",
    Status.WOULD_REPLY: "dry run: an owner's command would be acted on and answered",
    Status.OPTED_OUT: "the owner opted the repo out (`@lora-bot ignore repo`); nothing is written there",
    Status.COOLDOWN: "the repo changed less than `proposals.cooldown_hours` ago (it may be mid-upload); "
    "proposed again later",
    Status.DISABLED: "the repo's pull requests or discussions are disabled; recorded, not retried for "
    "`proposals.disabled_retry_days`",
    Status.NOT_OPTED_IN: "`proposals.mode: opt-in` and the owner has not asked for lora-bot; nothing is written",
    Status.DUPLICATE_CLOSED: "two lora-bot runs raced: the newer of two open threads proposing the same "
    "change was closed with a link to the older",
    Status.UNBUILDABLE: "this proposal could not be built from the repo's files (the reason is in `detail`); "
    "the repo's other proposals go on",
}

# A later run must make these proposals again: their repos hold the scan's watermark back.
UNFINISHED = frozenset({Status.FAILED, Status.LIMIT_REACHED, Status.COOLDOWN, Status.DEFERRED})


def status_table_markdown() -> str:
    """The README's table of proposal statuses, generated so the two never disagree."""
    rows = ["| status | meaning |", "|---|---|"]
    rows += [f"| `{status}` | {STATUS_MEANINGS[status]} |" for status in Status]
    return "\n".join(rows)
