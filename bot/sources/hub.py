"""The Hub source: evidence from a repo without downloading weights: one model_info, header range reads, small texts.

Per safetensors file: one `Range: bytes=0-100000` read (the same first read huggingface_hub's
`parse_safetensors_file_metadata` makes; 97% of headers fit), a second only when the header is larger, and
one multi-range read for kohya `.alpha` scalars that fall outside the first read. We keep the raw bytes
instead of calling `parse_safetensors_file_metadata` so the header is validated as strictly as a local file
and so the alpha offsets (which need the header length) are known.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from huggingface_hub import HfApi, hf_hub_url
from huggingface_hub.utils import build_hf_headers, hf_raise_for_status

from bot.core.header import (
    HeaderError,
    SafetensorsHeader,
    declared_header_length,
    decode_scalar,
    parse_header,
    scalar_names,
)
from bot.core.inspect import FileEvidence
from bot.core.limits import MAX_TEXT_BYTES
from bot.core.repo import RepoRef, RepoSnapshot
from bot.core.selection import CARD_NAME, is_safe_repo_path, select_candidates
from bot.hub.client import RetryPolicy, describe_error, is_transient, session, with_retries

FIRST_READ = 100_000  # bytes of the first range read, as huggingface_hub reads them
# Several ranges in one request: a server that ignores Range sends the file from byte 0; past this, give up.
MAX_IGNORED_RANGE_READ = 16_000_000
# Longest Range header value sent: nginx and Apache refuse a header line above 8 KB by default. A kohya
# SDXL file has ~700 `.alpha` scalars spread over the file; counted in characters they fit in 2 requests.
MAX_RANGE_HEADER = 7_900


class RangeReadError(OSError):
    """The server's answer to a range read is unusable: a failure of the read, not of the file."""


class TextRefused(ValueError):
    """A README.md or adapter_config.json that cannot be read whole and exactly: too large, or not UTF-8."""


@dataclass(frozen=True)
class Fetched:
    """The part of a response lora-bot keeps: status, headers and at most the bytes it asked for."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes


class RemoteReader:
    """Reads one repo at one revision through huggingface_hub, retrying transient failures."""

    def __init__(self, api: HfApi, policy: RetryPolicy | None = None) -> None:
        self.api = api
        self.policy = policy or RetryPolicy()

    def _get(
        self, repo_id: str, path: str, revision: str, limit: int, headers: Mapping[str, str] | None = None
    ) -> Fetched:
        """GET a file, reading at most `limit` body bytes. A server that ignores `Range` and starts sending
        the whole file is cut off there, so no answer can turn a header read into a download."""
        url = hf_hub_url(repo_id, path, revision=revision, endpoint=self.api.endpoint)
        all_headers = {**build_hf_headers(token=self.api.token, library_name="lora-bot"), **(headers or {})}

        def call() -> Fetched:
            with session().stream("GET", url, headers=all_headers) as response:
                if response.status_code >= 400:
                    response.read()
                    hf_raise_for_status(response)
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) >= limit:
                        break
                return Fetched(response.status_code, response.headers, bytes(body[:limit]))

        return with_retries(self.policy, call)

    def read_text(self, repo_id: str, path: str, revision: str, size: int | None = None) -> str:
        """The whole file, exactly: a file over MAX_TEXT_BYTES or not valid UTF-8 is refused, never cut or
        repaired (a cut config reads as invalid JSON, a repaired card would be written back changed)."""
        if size is not None and size > MAX_TEXT_BYTES:
            raise TextRefused(f"{size:,} bytes, over the {MAX_TEXT_BYTES:,}-byte limit for a text file")
        response = self._get(repo_id, path, revision, limit=MAX_TEXT_BYTES + 1)
        if len(response.content) > MAX_TEXT_BYTES:
            raise TextRefused(f"over the {MAX_TEXT_BYTES:,}-byte limit for a text file")
        try:
            return response.content.decode("utf-8")
        except UnicodeDecodeError as error:
            raise TextRefused(f"not valid UTF-8 (byte {error.start:,})") from None

    def read_ranges(self, repo_id: str, path: str, revision: str, ranges: list[tuple[int, int]]) -> dict:
        """Bytes of each [start, end) range, in as few requests as the server allows."""
        found: dict[tuple[int, int], bytes] = {}
        for batch in _range_batches(ranges):
            spec = ",".join(f"{a}-{b - 1}" for a, b in batch)
            # A 206 answer is about as long as the ranges; a 200 (Range ignored) must be read up to the last one.
            limit = max(b for _, b in batch) if len(batch) == 1 else MAX_IGNORED_RANGE_READ
            response = self._get(repo_id, path, revision, limit, {"Range": f"bytes={spec}"})
            pieces = _split_range_response(response)
            for a, b in batch:
                found[(a, b)] = _slice(pieces, a, b)
        return found

    def header(
        self, repo_id: str, path: str, revision: str, size: int | None
    ) -> tuple[SafetensorsHeader, bytes]:
        """The parsed header and the raw bytes of the first read (they often hold the alpha scalars too)."""
        if (
            size == 0
        ):  # nothing to read, and a range read of no bytes is refused (416): the file's error, not ours
            return parse_header(b"", 0), b""
        first = self._get(repo_id, path, revision, FIRST_READ, {"Range": f"bytes=0-{FIRST_READ - 1}"})
        prefix = first.content  # a server without range support sends the whole file; it is then all here
        length = declared_header_length(prefix, size)
        if 8 + length > len(prefix):
            rest = self.read_ranges(repo_id, path, revision, [(len(prefix), 8 + length)])
            prefix = prefix + rest[(len(prefix), 8 + length)]
        return parse_header(prefix, size), prefix

    def alpha_scalars(
        self, repo_id: str, path: str, revision: str, header: SafetensorsHeader, prefix: bytes
    ) -> dict[str, float]:
        names = scalar_names(header)
        spans = {name: header.absolute_range(name) for name in names}
        missing = sorted({span for span in spans.values() if span[1] > len(prefix)})
        fetched = self.read_ranges(repo_id, path, revision, _coalesce(missing)) if missing else {}
        pieces = [(start, data) for (start, _), data in fetched.items()]
        values = {}
        for name, (a, b) in spans.items():
            raw = prefix[a:b] if b <= len(prefix) else _slice(pieces, a, b)
            values[name] = decode_scalar(header.tensors[name], raw)
        return values

    def read(self, ref: RepoRef) -> RepoSnapshot:
        """Evidence for every LoRA file of the repo; a failure becomes the snapshot's `error`, never an exception."""
        try:
            info = with_retries(
                self.policy, lambda: self.api.model_info(ref.repo_id, revision=ref.sha, files_metadata=True)
            )
        except Exception as error:  # noqa: BLE001 — a report line, the scan goes on
            return RepoSnapshot(
                ref.repo_id, ref.sha, ref.last_modified, error=describe_error(error), tags=ref.tags
            )
        sha = info.sha or ref.sha
        listed = {s.rfilename: s.size for s in (info.siblings or [])}  # None: the Hub did not say
        # A name that could smuggle another path into a request is never requested nor written; it costs
        # only itself: the repo's other files are read as usual.
        skipped = [
            (p, "refused: not a plain relative path inside the repo")
            for p in listed
            if not is_safe_repo_path(p)
        ]
        sizes = {p: size for p, size in listed.items() if is_safe_repo_path(p)}
        base = RepoSnapshot(
            ref.repo_id,
            sha,
            info.last_modified or ref.last_modified,
            tags=tuple(info.tags or ref.tags),
            card_data=_card_data(info),
            sizes=sizes,
        )
        texts: dict[str, str] = {}
        evidence: list[FileEvidence] = []
        refused: dict[str, str] = {}
        try:
            candidates = select_candidates(sizes)
            wanted = {c.config_path for c in candidates} | {c.card_path for c in candidates}
            if CARD_NAME in sizes:
                wanted.add(CARD_NAME)
            for path in sorted(p for p in wanted if p):
                try:
                    texts[path] = self.read_text(ref.repo_id, path, sha, sizes.get(path))
                except TextRefused as why:
                    refused[path] = f"refused: {why}"
            skipped += refused.items()
            for candidate in candidates:
                if candidate.config_path in refused:
                    # Judged without its config, the file could be misjudged in public: left out instead.
                    skipped.append(
                        (
                            candidate.path,
                            f"not inspected: {candidate.config_path} was {refused[candidate.config_path]}",
                        )
                    )
                    continue
                try:
                    evidence.append(
                        self._evidence(ref.repo_id, sha, candidate, sizes.get(candidate.path), texts)
                    )
                except Exception as error:
                    if is_transient(error) or isinstance(error, RangeReadError):
                        raise  # the Hub failed, not the file: the repo is read again next run
                    skipped.append((candidate.path, f"not inspected: {describe_error(error)}"))
        except Exception as error:  # noqa: BLE001 — keep what was found, report why the rest is missing
            return replace(
                base,
                evidence=tuple(evidence),
                texts=texts,
                error=describe_error(error),
                skipped_files=tuple(skipped),
            )
        return replace(base, evidence=tuple(evidence), texts=texts, skipped_files=tuple(skipped))

    def _evidence(self, repo_id: str, sha: str, candidate, size: int | None, texts: Mapping[str, str]):
        context = {
            "adapter_config_text": texts.get(candidate.config_path or ""),
            "card_text": texts.get(candidate.card_path or ""),
        }
        if candidate.pickle:
            return FileEvidence(path=candidate.path, size=size, pickle=True, **context)
        try:
            header, prefix = self.header(repo_id, candidate.path, sha, size)
            scalars = self.alpha_scalars(repo_id, candidate.path, sha, header, prefix)
        except HeaderError as error:
            return FileEvidence(path=candidate.path, size=size, header_error=str(error), **context)
        return FileEvidence(path=candidate.path, size=size, header=header, scalars=scalars, **context)


def _card_data(info) -> dict:
    card = getattr(info, "card_data", None) or getattr(info, "cardData", None)
    if card is None:
        return {}
    return card.to_dict() if hasattr(card, "to_dict") else dict(card)


def _coalesce(spans: Iterable[tuple[int, int]], gap: int = 4096) -> list[tuple[int, int]]:
    """Merge nearby ranges: a few KB of extra bytes cost less than another range in the request."""
    merged: list[list[int]] = []
    for a, b in sorted(spans):
        if merged and a - merged[-1][1] <= gap:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def _range_batches(ranges: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """Consecutive ranges grouped so each group's `bytes=a-b,c-d,...` stays within MAX_RANGE_HEADER."""
    batches: list[list[tuple[int, int]]] = []
    length = 0
    for a, b in ranges:
        item = len(f"{a}-{b - 1},")
        if not batches or length + item > MAX_RANGE_HEADER:
            batches.append([])
            length = len("bytes=")
        batches[-1].append((a, b))
        length += item
    return batches


def _split_range_response(response) -> list[tuple[int, bytes]]:
    """(offset, bytes) pieces of a 206 (single or multipart/byteranges) or a 200 (the whole body)."""
    if response.status_code == 200:
        return [(0, response.content)]
    content_type = response.headers.get("Content-Type", "")
    if content_type.startswith("multipart/byteranges"):
        boundary = content_type.split("boundary=", 1)[1].strip().strip('"')
        return _parse_multipart(response.content, boundary)
    return [(_range_start(response.headers.get("Content-Range", "")), response.content)]


def _range_start(content_range: str) -> int:
    found = re.match(r"bytes (\d+)-\d+/", content_range)
    if not found:
        raise RangeReadError(
            f"the server answered a range read without a usable Content-Range ({content_range!r})"
        )
    return int(found.group(1))


def _parse_multipart(body: bytes, boundary: str) -> list[tuple[int, bytes]]:
    pieces = []
    delimiter = b"--" + boundary.encode()
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break
        head, _, data = part.partition(b"\r\n\r\n")
        content_range = next(
            (
                line.split(b":", 1)[1].strip().decode()
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-range:")
            ),
            "",
        )
        if data.endswith(b"\r\n"):
            data = data[:-2]
        pieces.append((_range_start(content_range), data))
    return pieces


def _slice(pieces: list[tuple[int, bytes]], a: int, b: int) -> bytes:
    for offset, data in pieces:
        if offset <= a and b <= offset + len(data):
            return data[a - offset : b - offset]
    raise RangeReadError(f"the server did not return bytes {a}-{b - 1} (it may not honour Range requests)")
