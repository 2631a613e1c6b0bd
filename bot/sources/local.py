"""Evidence from the local disk: a single file or every LoRA file in a folder, header-only reads."""

from __future__ import annotations

from pathlib import Path

from bot.core.header import HeaderError, HeaderTooLarge, scalar_names
from bot.core.inspect import FileEvidence
from bot.core.limits import MAX_TEXT_BYTES
from bot.core.selection import CARD_NAME, CONFIG_NAME, PICKLE_SUFFIXES, Candidate, select_candidates
from bot.files.safetensors import read_local_header, read_local_scalars


def _read_text(path: Path | None) -> str | None:
    """A sibling README.md or adapter_config.json; one that cannot be read whole counts as absent (a
    regular file only, at most MAX_TEXT_BYTES: a FIFO or a huge file would hang or fill memory)."""
    if path is None or not path.is_file():
        return None
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_TEXT_BYTES + 1)
    except OSError:
        return None
    return raw.decode("utf-8", errors="replace") if len(raw) <= MAX_TEXT_BYTES else None


def file_evidence(
    path: Path, label: str, config: Path | None, card: Path | None, pickle: bool
) -> FileEvidence:
    size = path.stat().st_size
    context = {"adapter_config_text": _read_text(config), "card_text": _read_text(card)}
    if pickle:
        return FileEvidence(path=label, size=size, pickle=True, **context)
    try:
        header = read_local_header(path)
        scalars = read_local_scalars(path, header, scalar_names(header))
    except HeaderTooLarge as error:  # lora-bot's cap, not the format's: never a corrupt-header claim
        return FileEvidence(path=label, size=size, not_inspected=str(error), **context)
    except HeaderError as error:
        return FileEvidence(path=label, size=size, header_error=str(error), **context)
    except OSError as error:
        return FileEvidence(
            path=label, size=size, header_error=f"cannot read the file: {error.strerror}", **context
        )
    except Exception as error:  # noqa: BLE001 — a parser bug must cost one file, never the folder's report
        return FileEvidence(
            path=label,
            size=size,
            header_error=f"unreadable header ({type(error).__name__}: {str(error)[:200]})",
            **context,
        )
    return FileEvidence(path=label, size=size, header=header, scalars=scalars, **context)


def collect(target: Path) -> list[FileEvidence]:
    """Evidence for a file (its siblings give context) or for every LoRA file under a folder."""
    if target.is_file():
        # A file named on the command line is inspected whatever its name; a pickle is still never opened.
        pickle = target.suffix.lower() in PICKLE_SUFFIXES
        return [
            file_evidence(target, target.name, target.parent / CONFIG_NAME, target.parent / CARD_NAME, pickle)
        ]
    paths = [p.relative_to(target).as_posix() for p in sorted(target.rglob("*")) if p.is_file()]
    return [_evidence_for(target, candidate) for candidate in select_candidates(paths)]


def _evidence_for(root: Path, candidate: Candidate) -> FileEvidence:
    def resolve(relative):
        return root / relative if relative else None

    return file_evidence(
        root / candidate.path,
        candidate.path,
        resolve(candidate.config_path),
        resolve(candidate.card_path),
        candidate.pickle,
    )
