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
from urllib.parse import urlparse

from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_url
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
from bot.core.limits import MAX_ADAPTER_HEADER_BYTES, MAX_TEXT_BYTES
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
    url: str | None = None  # where the read was redirected to, when it was

    @property
    def total_size(self) -> int | None:
        """The whole file's size: a 206's `Content-Range: bytes a-b/TOTAL`, or a 200's Content-Length."""
        if self.status_code == 206:
            found = re.match(r"bytes \d+-\d+/(\d+)", self.headers.get("Content-Range", ""))
            return int(found.group(1)) if found else None
        length = self.headers.get("Content-Length")
        return int(length) if self.status_code == 200 and length and length.isdigit() else None


class RemoteReader:
    """Reads one repo at one revision through huggingface_hub, retrying transient failures."""

    def __init__(self, api: HfApi, policy: RetryPolicy | None = None) -> None:
        self.api = api
        self.policy = policy or RetryPolicy()

    def _get(
        self,
        repo_id: str,
        path: str,
        revision: str,
        limit: int,
        headers: Mapping[str, str] | None = None,
        url: str | None = None,
    ) -> Fetched:
        """GET a file, reading at most `limit` body bytes. A server that ignores `Range` and starts sending
        the whole file is cut off there, so no answer can turn a header read into a download.

        `url`: where an earlier read of the same file was redirected (the Hub sends LFS files to a CDN). Reads
        sent there directly skip the `/resolve/` URL, which is what the Hub's resolver rate limit counts."""
        resolve_url = hf_hub_url(repo_id, path, revision=revision, endpoint=self.api.endpoint)
        target = url or resolve_url
        all_headers = dict(headers or {})
        if _same_origin(target, self.api.endpoint):  # the token never goes to another host
            all_headers = {**build_hf_headers(token=self.api.token, library_name="lora-bot"), **all_headers}

        def call() -> Fetched:
            with session().stream("GET", target, headers=all_headers) as response:
                if response.status_code >= 400:
                    response.read()
                    hf_raise_for_status(response)
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) >= limit:
                        break
                final = str(response.url)
                return Fetched(
                    response.status_code,
                    response.headers,
                    bytes(body[:limit]),
                    url=final if final != resolve_url else None,
                )

        return with_retries(self.policy, call)

    def file_size(self, repo_id: str, path: str, revision: str) -> int | None:
        url = hf_hub_url(repo_id, path, revision=revision, endpoint=self.api.endpoint)
        return with_retries(
            self.policy, lambda: get_hf_file_metadata(url, token=self.api.token, endpoint=self.api.endpoint)
        ).size

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

    def read_ranges(
        self,
        repo_id: str,
        path: str,
        revision: str,
        ranges: list[tuple[int, int]],
        url: str | None = None,
    ) -> dict:
        """Bytes of each [start, end) range, in as few requests as the server allows."""
        found: dict[tuple[int, int], bytes] = {}
        for batch in _range_batches(ranges):
            spec = ",".join(f"{a}-{b - 1}" for a, b in batch)
            # A 206 answer is about as long as the ranges; a 200 (Range ignored) must be read up to the last one.
            limit = max(b for _, b in batch) if len(batch) == 1 else MAX_IGNORED_RANGE_READ
            response = self._get(repo_id, path, revision, limit, {"Range": f"bytes={spec}"}, url=url)
            pieces = _split_range_response(response)
            for a, b in batch:
                found[(a, b)] = _slice(pieces, a, b)
        return found

    def header(
        self,
        repo_id: str,
        path: str,
        revision: str,
        size: int | None,
        first_read: int = FIRST_READ,
        limit: int = MAX_ADAPTER_HEADER_BYTES,
    ) -> HeaderRead:
        """The parsed header, the raw bytes of the first read (they often hold the alpha scalars too), the
        file's size (from the read itself when the listing did not give it) and where later reads go.
        `first_read` bytes are asked for first (a base model's shards ask for more: one read per shard).
        A header longer than `limit` is refused (HeaderTooLarge, the file is then skipped, not judged) before
        its bytes are asked for; a base model's shards pass the format's own limit."""
        if (
            size == 0
        ):  # nothing to read, and a range read of no bytes is refused (416): the file's error, not ours
            return HeaderRead(parse_header(b"", 0), b"", 0, None)
        first = self._get(repo_id, path, revision, first_read, {"Range": f"bytes=0-{first_read - 1}"})
        size = size if size is not None else first.total_size
        prefix = first.content  # a server without range support sends the whole file; it is then all here
        try:
            length = declared_header_length(prefix, size, limit)
            if 8 + length > len(prefix):
                rest = self.read_ranges(repo_id, path, revision, [(len(prefix), 8 + length)], url=first.url)
                prefix = prefix + rest[(len(prefix), 8 + length)]
            return HeaderRead(parse_header(prefix, size, limit), prefix, size, first.url)
        except HeaderError as error:
            raise SizedHeaderError(str(error), size) from None

    def alpha_scalars(
        self,
        repo_id: str,
        path: str,
        revision: str,
        header: SafetensorsHeader,
        prefix: bytes,
        url: str | None = None,
    ) -> dict[str, float]:
        names = scalar_names(header)
        spans = {name: header.absolute_range(name) for name in names}
        missing = sorted({span for span in spans.values() if span[1] > len(prefix)})
        fetched = self.read_ranges(repo_id, path, revision, _coalesce(missing), url=url) if missing else {}
        pieces = [(start, data) for (start, _), data in fetched.items()]
        values = {}
        for name, (a, b) in spans.items():
            raw = prefix[a:b] if b <= len(prefix) else _slice(pieces, a, b)
            values[name] = decode_scalar(header.tensors[name], raw)
        return values

    def read(self, ref: RepoRef) -> RepoSnapshot:
        """Evidence for every LoRA file of the repo; a failure becomes the snapshot's `error`, never an exception.

        A repo the listing described (sha and file names) costs no API call: only resolver reads of its
        headers and adapter configs. README.md is read only when the listing had no `cardData` for it."""
        if ref.sha and ref.files is not None:
            sizes: dict[str, int | None] = dict.fromkeys(ref.files)
            base = RepoSnapshot(
                ref.repo_id,
                ref.sha,
                ref.last_modified,
                tags=ref.tags,
                card_data=dict(ref.card_data or {}),
                sizes=sizes,
            )
            card_listed = ref.card_data is not None
        else:
            try:
                info = with_retries(
                    self.policy,
                    lambda: self.api.model_info(ref.repo_id, revision=ref.sha, files_metadata=True),
                )
            except Exception as error:  # noqa: BLE001 — a report line, the scan goes on
                return RepoSnapshot(
                    ref.repo_id, ref.sha, ref.last_modified, error=describe_error(error), tags=ref.tags
                )
            sizes = {s.rfilename: s.size for s in (info.siblings or [])}  # None: the Hub did not say
            base = RepoSnapshot(
                ref.repo_id,
                info.sha or ref.sha,
                info.last_modified or ref.last_modified,
                tags=tuple(info.tags or ref.tags),
                card_data=_card_data(info),
                sizes=sizes,
            )
            card_listed = False  # model_info's cardData: the README is read as before, the reads cost alike
        return self._read_files(base, card_listed)

    def _read_files(self, base: RepoSnapshot, card_listed: bool) -> RepoSnapshot:
        repo_id, sha = base.repo_id, base.sha
        # A name that could smuggle another path into a request is never requested nor written; it costs
        # only itself: the repo's other files are read as usual.
        skipped = [
            (p, "refused: not a plain relative path inside the repo")
            for p in base.sizes
            if not is_safe_repo_path(p)
        ]
        sizes = {p: size for p, size in base.sizes.items() if is_safe_repo_path(p)}
        base = replace(base, sizes=sizes)
        texts: dict[str, str] = {}
        evidence: list[FileEvidence] = []
        refused: dict[str, str] = {}
        try:
            candidates = select_candidates(sizes)
            wanted = {c.config_path for c in candidates} | {c.card_path for c in candidates}
            if CARD_NAME in sizes:
                wanted.add(CARD_NAME)
            if card_listed:
                # The Hub parsed the card's metadata for the listing: it is valid, and what inspection needs
                # from it is in `card_data`. The text is read later only if a card proposal needs it.
                wanted.discard(CARD_NAME)
            for path in sorted(p for p in wanted if p):
                try:
                    texts[path] = self.read_text(repo_id, path, sha, sizes.get(path))
                except TextRefused as why:
                    refused[path] = f"refused: {why}"
            skipped += refused.items()
            card_data = base.card_data if card_listed else None
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
                    item = self._evidence(
                        repo_id, sha, candidate, sizes.get(candidate.path), texts, card_data
                    )
                except Exception as error:
                    if is_transient(error) or isinstance(error, RangeReadError):
                        raise  # the Hub failed, not the file: the repo is read again next run
                    skipped.append((candidate.path, f"not inspected: {describe_error(error)}"))
                    continue
                evidence.append(item)
                if item.size is not None:
                    sizes[candidate.path] = item.size
        except Exception as error:  # noqa: BLE001 — keep what was found, report why the rest is missing
            return replace(
                base,
                evidence=tuple(evidence),
                texts=texts,
                sizes=sizes,
                error=describe_error(error),
                skipped_files=tuple(skipped),
            )
        return replace(base, evidence=tuple(evidence), texts=texts, sizes=sizes, skipped_files=tuple(skipped))

    def _evidence(
        self,
        repo_id: str,
        sha: str,
        candidate,
        size: int | None,
        texts: Mapping[str, str],
        card_data: Mapping | None = None,
    ):
        context = {
            "adapter_config_text": texts.get(candidate.config_path or ""),
            "card_text": texts.get(candidate.card_path or ""),
            "card_data": card_data if candidate.card_path == CARD_NAME else None,
        }
        if candidate.pickle:
            if size is None:  # never opened, but its size is reported: one HEAD, as model_info would cost
                size = self.file_size(repo_id, candidate.path, sha)
            return FileEvidence(path=candidate.path, size=size, pickle=True, **context)
        try:
            read = self.header(repo_id, candidate.path, sha, size)
            scalars = self.alpha_scalars(repo_id, candidate.path, sha, read.header, read.prefix, read.url)
        except HeaderError as error:
            size = getattr(error, "size", size)
            return FileEvidence(path=candidate.path, size=size, header_error=str(error), **context)
        return FileEvidence(
            path=candidate.path, size=read.size, header=read.header, scalars=scalars, **context
        )


class SizedHeaderError(HeaderError):
    """A bad header, with the file's size as the read learned it (the report shows it)."""

    def __init__(self, message: str, size: int | None) -> None:
        super().__init__(message)
        self.size = size


@dataclass(frozen=True)
class HeaderRead:
    header: SafetensorsHeader
    prefix: bytes  # the bytes of the first read
    size: int | None  # the file's size, as the listing or the read's Content-Range said
    url: str | None  # where the file's reads were redirected (a CDN), for the file's later reads


def _same_origin(url: str, endpoint: str) -> bool:
    a, b = urlparse(url), urlparse(endpoint)
    return (a.scheme, a.netloc) == (b.scheme, b.netloc)


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
