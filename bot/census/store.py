"""The census store: what every scan learned, per repo and per LoRA file, in one SQLite file (stdlib).

Per repo: the sha it was read at, the error that stopped the read (if any), its tags, card metadata, file
names and sizes, the texts inspection read (adapter configs, README.md when read), whether a live run's
proposals for that sha are done, and which run last saw it. Per file: the whole inspection
(`inspection_record`), so a repo whose sha has not changed is reused as it was, with no request.

Every repo is committed as it finishes: a run killed half-way loses only the repos in flight, and the next
run resumes from what is here. Rows are read back one at a time, so memory does not grow with the census.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path

from bot.core.inspect import inspection_from_record, inspection_record
from bot.core.repo import RepoInspection

SCHEMA_VERSION = 2  # 2: the files a read left out (skipped_files)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS repos (
    repo_id TEXT PRIMARY KEY,
    sha TEXT,
    last_modified TEXT,
    error TEXT,
    skipped TEXT,            -- why the repo is left alone (the owner opted out), else NULL
    tags TEXT NOT NULL,      -- JSON list
    card_data TEXT NOT NULL, -- JSON object
    sizes TEXT NOT NULL,     -- JSON object: path -> size or null
    texts TEXT NOT NULL,     -- JSON object: path -> text
    proposed INTEGER NOT NULL DEFAULT 0,  -- a live run's proposals for this sha are done
    run TEXT NOT NULL,       -- the last run that read or reused it
    seq INTEGER NOT NULL DEFAULT 0,  -- its place in that run's discovery: the report's order
    skipped_files TEXT NOT NULL DEFAULT '[]'  -- JSON list of [path, why]: files the read left out
);
CREATE INDEX IF NOT EXISTS repos_run ON repos (run);
CREATE TABLE IF NOT EXISTS files (
    repo_id TEXT NOT NULL,
    path TEXT NOT NULL,
    record TEXT NOT NULL,    -- JSON: bot.core.inspect.inspection_record
    PRIMARY KEY (repo_id, path)
);
"""


class StoreError(Exception):
    """The store file cannot be used (not SQLite, another schema, unwritable); the message says which."""


# Opening: attempts at setting up a store another run is setting up too, and the pause between them (about
# 2.4 s in all); how long a statement waits for another run's transaction.
_OPEN_ATTEMPTS, _OPEN_PAUSE_SECONDS = 20, 0.125
_BUSY_SECONDS = 30.0


class CensusStore:
    """One SQLite connection shared by the scan's threads behind a lock; each `save` is one transaction."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = self._open()
        except (sqlite3.Error, OSError) as error:
            raise StoreError(f"cannot use the census store {self.path}: {error}") from None

    def _open(self) -> sqlite3.Connection:
        """A connection to a store set up for this schema. Two runs started together (two live scans, the
        Action beside a cron job) may both find the file new: switching it to WAL takes a lock SQLite does not
        wait for, so the loser tries again once the winner has set the store up."""
        attempt = 0
        while True:
            db = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None, timeout=_BUSY_SECONDS
            )
            try:
                self._set_up(db)
                return db
            except sqlite3.OperationalError as error:
                db.close()
                attempt += 1
                if "locked" not in str(error) or attempt == _OPEN_ATTEMPTS:
                    raise
                time.sleep(_OPEN_PAUSE_SECONDS)
            except BaseException:
                db.close()
                raise

    def _set_up(self, db: sqlite3.Connection) -> None:
        db.execute("PRAGMA journal_mode=WAL")  # a reader (export) never blocks the scan
        db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a commit survives a killed process
        db.executescript(_SCHEMA)
        version = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if version is None:
            db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif version[0] != str(SCHEMA_VERSION):
            raise StoreError(
                f"{self.path}: census store schema {version[0]}, this lora-bot reads {SCHEMA_VERSION}"
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> CensusStore:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # ------------------------------------------------------------------------------------- writing

    def save(self, repo: RepoInspection, run: str, skipped: str | None = None, seq: int = 0) -> None:
        """Replace the repo and its files in one transaction: the row is whole or absent, never half."""
        row = (
            repo.repo_id,
            repo.sha,
            repo.last_modified.isoformat() if repo.last_modified else None,
            repo.error,
            skipped,
            json.dumps(list(repo.tags)),
            json.dumps(dict(repo.card_data), default=str),
            json.dumps(dict(repo.sizes)),
            json.dumps(dict(repo.texts)),
            run,
            seq,
            json.dumps([list(item) for item in repo.skipped_files]),
        )
        files = [(repo.repo_id, f.path, json.dumps(inspection_record(f))) for f in repo.files]
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.execute("DELETE FROM files WHERE repo_id = ?", (repo.repo_id,))
                self._db.execute("INSERT OR REPLACE INTO repos VALUES (?,?,?,?,?,?,?,?,?,0,?,?,?)", row)
                self._db.executemany("INSERT INTO files VALUES (?,?,?)", files)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def touch(self, repo_ids: Iterable[tuple[str, int]], run: str) -> None:
        """Mark reused repos (id, place in discovery) as part of this run (its report), in one transaction."""
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "UPDATE repos SET run = ?, seq = ? WHERE repo_id = ?", ((run, n, r) for r, n in repo_ids)
            )
            self._db.execute("COMMIT")

    def mark_proposed(self, repo_id: str, sha: str | None) -> None:
        """A live run's proposals for this sha are done: later runs do not make them again."""
        with self._lock:
            self._db.execute("UPDATE repos SET proposed = 1 WHERE repo_id = ? AND sha IS ?", (repo_id, sha))

    # ------------------------------------------------------------------------------------- reading

    def reusable_sha(self, repo_id: str) -> str | None:
        """The sha a repo was completely read at (no error), else None: a failed read is read again."""
        with self._lock:
            row = self._db.execute(
                "SELECT sha FROM repos WHERE repo_id = ? AND error IS NULL", (repo_id,)
            ).fetchone()
        return row[0] if row else None

    def load(self, repo_id: str) -> tuple[RepoInspection, str | None, bool] | None:
        """(the inspection, why it is skipped or None, whether its proposals are done)."""
        with self._lock:
            row = self._db.execute("SELECT * FROM repos WHERE repo_id = ?", (repo_id,)).fetchone()
            if row is None:
                return None
            records = self._db.execute(
                "SELECT record FROM files WHERE repo_id = ? ORDER BY rowid", (repo_id,)
            ).fetchall()
        return _inspection(row, records), row[4], bool(row[9])

    def repo_ids(self, run: str | None = None, *, skipped: bool | None = None) -> list[str]:
        query, args = "SELECT repo_id FROM repos WHERE 1=1", []
        if run is not None:
            query += " AND run = ?"
            args.append(run)
        if skipped is not None:
            query += " AND skipped IS NOT NULL" if skipped else " AND skipped IS NULL"
        with self._lock:
            return [r[0] for r in self._db.execute(query + " ORDER BY seq, repo_id", args)]

    def count(self, run: str | None = None) -> tuple[int, int]:
        """(repos, files) of one run's report (opted-out repos excluded), or of the whole store."""
        where = "WHERE r.skipped IS NULL" + (" AND r.run = ?" if run else "")
        args = (run,) if run else ()
        with self._lock:
            repos = self._db.execute(f"SELECT COUNT(*) FROM repos r {where}", args).fetchone()[0]
            files = self._db.execute(
                f"SELECT COUNT(*) FROM files f JOIN repos r USING (repo_id) {where}", args
            ).fetchone()[0]
        return repos, files

    def rows(self) -> Iterator[tuple[str, str | None, str | None, str | None, dict]]:
        """(repo id, sha, last modified, skipped, file record) for every file of every repo, in repo order,
        streamed: the export's input. Repos without a file give no row."""
        with self._lock:
            cursor = self._db.execute(
                "SELECT r.repo_id, r.sha, r.last_modified, r.skipped, f.record FROM repos r "
                "JOIN files f USING (repo_id) ORDER BY r.repo_id, f.rowid"
            )
            batch = cursor.fetchmany(500)
        while batch:
            for repo_id, sha, modified, skipped, record in batch:
                yield repo_id, sha, modified, skipped, json.loads(record)
            with self._lock:
                batch = cursor.fetchmany(500)


def _inspection(row, records) -> RepoInspection:
    return RepoInspection(
        repo_id=row[0],
        sha=row[1],
        last_modified=datetime.fromisoformat(row[2]) if row[2] else None,
        files=tuple(inspection_from_record(json.loads(r[0])) for r in records),
        error=row[3],
        tags=tuple(json.loads(row[5])),
        card_data=json.loads(row[6]),
        sizes=json.loads(row[7]),
        texts=json.loads(row[8]),
        skipped_files=tuple((path, why) for path, why in json.loads(row[12])),
    )


class StoredRepos:
    """One run's repos as the report reads them: loaded from the store one at a time, never all at once."""

    def __init__(self, store: CensusStore, run: str) -> None:
        self.store = store
        self.run = run

    def __iter__(self) -> Iterator[RepoInspection]:
        for repo_id in self.store.repo_ids(self.run, skipped=False):
            loaded = self.store.load(repo_id)
            if loaded is not None:
                yield loaded[0]

    def __len__(self) -> int:
        return self.store.count(self.run)[0]

    def __bool__(self) -> bool:
        return len(self) > 0
