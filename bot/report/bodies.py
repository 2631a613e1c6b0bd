"""The words lora-bot publishes: PR and discussion bodies, comments, and the dry-run preview.

Every body says what changed, why (the failure a user would otherwise hit), how it was verified, and how
to opt out. Text from the repo is escaped where it is built (bot.report.text.escape_markdown).
"""

from __future__ import annotations

from collections.abc import Sequence

from bot.proposals.model import Proposal, Submission, render_marker

ABOUT = (
    "lora-bot reads LoRA files' safetensors headers (never the whole file, never a pickle) and proposes "
    "fixes for what would make them fail to load or be hard to find."
)

OPT_OUT = (
    "**Not wanted?** Close this and lora-bot will never propose the same change again. To keep lora-bot away "
    "from this repo entirely, add `lora-bot: ignore` to the model card's metadata or the tag `lora-bot-ignore`. "
    "Flag codes are explained by `lora-bot explain CODE`."
)

COMMANDS_HELP = (
    "**Commands** (from the repo's owner or a member of the owning organisation, on a line of their own in a "
    "comment here): `@lora-bot ignore` (never propose this again), `@lora-bot ignore repo` (leave this repo "
    "alone), `@lora-bot recreate` (rebuild from the current head), `@lora-bot variant r8` (add a rank-8 "
    "copy), `@lora-bot check` (inspect again now), `@lora-bot explain CODE`."
)


def _files_table(members: Sequence[Proposal]) -> str:
    rows = ["| file | change | size |", "|---|---|---|"]
    for proposal in members:
        for change in proposal.files:
            action = "added" if change.is_new else "replaced" if not change.is_text else "edited"
            size = len(change.content()) if change.is_text else change.size
            rows.append(f"| `{change.path}` | {action} ({proposal.kind}) | {size:,} bytes |")
    return "\n".join(rows)


def pr_body(members: Sequence[Proposal], supersedes: Sequence[int] = ()) -> str:
    parts = [ABOUT, ""]
    if supersedes:
        parts += [
            "This replaces "
            + ", ".join(f"#{n}" for n in supersedes)
            + ": the repo changed since it was opened.",
            "",
        ]
    for index, proposal in enumerate(members, start=1):
        heading = proposal.title[:1].upper() + proposal.title[1:]
        parts += [
            f"### {index}. {heading}",
            "",
            proposal.summary,
            "",
            f"How it was verified: {proposal.verification}",
            "",
        ]
    parts += [
        "### Files",
        "",
        _files_table(members),
        "",
        f"Built from commit `{members[0].revision}`; nothing else in the repo is touched.",
        "",
        *_footer(members),
    ]
    return "\n".join(parts) + "\n"


def _footer(members: Sequence[Proposal]) -> list[str]:
    """The end of every PR and discussion body: how to opt out, the commands, and the hidden record."""
    return ["---", "", OPT_OUT, "", COMMANDS_HELP, "", render_marker(members)]


def discussion_body(proposal: Proposal) -> str:
    return (
        "\n".join(
            [
                ABOUT,
                "",
                proposal.summary,
                "",
                f"How this was checked: {proposal.verification}",
                "",
                (
                    "lora-bot updates this discussion with a comment when the findings change, and closes it when they "
                    "are resolved; it never opens a second one."
                ),
                "",
                *_footer([proposal]),
            ]
        )
        + "\n"
    )


def flags_update_comment(proposal: Proposal) -> str:
    return (
        "\n".join(
            [
                "The findings changed since the last check:",
                "",
                proposal.summary,
                "",
                render_marker([proposal]),
            ]
        )
        + "\n"
    )


def close_note(replacement: int) -> str:
    return f"Superseded by #{replacement}: the repo changed since this PR was opened, so lora-bot rebuilt it."


def duplicate_note(original: int) -> str:
    return (
        f"Duplicate of #{original}, which proposes the same change: two lora-bot runs overlapped. "
        "Closing this one; nothing else changes."
    )


def resolved_note(discussion: bool = False) -> str:
    what = "these findings" if discussion else "the changes this PR proposed"
    return (
        f"The repo no longer needs {what} (it was fixed or changed), so lora-bot is closing this. Thank you!"
    )


def preview(submission: Submission) -> str:
    """A dry run's full picture of one submission: title, body, every text diff, every binary file."""
    kind = "pull request" if submission.is_pull_request else "discussion"
    lines = [f"--- would open a {kind} on {submission.repo_id}: {submission.title}"]
    if submission.supersedes:
        lines.append("    and close " + ", ".join(f"#{n}" for n in submission.supersedes) + " as superseded")
    lines += ["", submission.body.rstrip(), ""]
    for change in submission.files:
        if change.is_text:
            lines.append(change.diff().rstrip())
        else:
            what = "replaces the repo's file" if change.replaces else "new"
            lines.append(f"binary file {change.path}: {change.size:,} bytes ({what})")
        lines.append("")
    return "\n".join(lines)
