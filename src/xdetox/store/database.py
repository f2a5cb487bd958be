"""The run database: one SQLite file (WAL) per run directory.

Every write is idempotent (primary keys + INSERT OR IGNORE) and a batch of
completions is committed in one transaction together with its ``batches`` row,
so a run killed at any moment and started again neither loses nor duplicates
rows. The store computes nothing; it records and reads back.

Opening checks the file first: an existing file must be an xdetox store (an SQLite
database, not truncated: ``file.check_store_file``, which reads its header only;
its pages whole: ``check_intact``; with the xdetox tables), or ``Store`` raises ``XdetoxInputError``
naming it and leaves it untouched. An SQLite error met later inside ``with Store(...)`` is named the
same way (``file.store_error``): damaged, locked, or a full disk (``OSError`` ENOSPC; each
transaction is rolled back whole, so the store stays consistent and the run resumes). ``Store(path, readonly=True)``
(``xdetox report``) opens it with SQLite's ``mode=ro`` and writes nothing; when the
store has no ``-wal`` file (no writer is open and none was killed), it is read as
``immutable``, so no ``-wal``/``-shm`` files are left behind.

Attempts: each ``xdetox run``/``grid run`` on the store is one row of ``attempts``
(start, end, outcome: finished, interrupted or failed). Every committed transaction
of an attempt also records its time (``last_s``), so a killed attempt (no end, outcome
``running``) counts up to its last committed write. ``times()`` gives the latest
attempt's seconds and the sum over all attempts.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path

from xdetox.errors import XdetoxInputError
from xdetox.specs import Completion
from xdetox.store.file import check_intact, check_store_file, check_tables, readonly_uri, store_error
from xdetox.store.reads import StoreReads
from xdetox.store.schema import DATA_TABLES, REQUIRED_TABLES, SCHEMA, SCHEMA_VERSION

ATTEMPT_OUTCOMES: tuple[str, ...] = ("finished", "interrupted", "failed")


class Store(StoreReads):
    """A run's SQLite database."""

    def __init__(self, path: str | Path, readonly: bool = False):
        self.path = Path(path)
        self.attempt: int | None = None  # the attempt this process runs (``begin_attempt``)
        existing = readonly or self.path.exists()
        if existing:
            check_store_file(self.path)
        try:
            if readonly:
                self.conn = sqlite3.connect(readonly_uri(self.path), uri=True, timeout=60, isolation_level=None)
            else:
                self.conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            if existing:  # whole pages (nothing written to a damaged one), then the xdetox tables and schema
                check_intact(self.conn, self.path)
                check_tables(self.conn, self.path, REQUIRED_TABLES, SCHEMA_VERSION)
            if not readonly:
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=FULL")
                self.conn.executescript(SCHEMA)
                self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (json.dumps(SCHEMA_VERSION),))
        except (sqlite3.DatabaseError, XdetoxInputError) as err:
            if hasattr(self, "conn"):
                self.conn.close()
            if isinstance(err, XdetoxInputError):
                raise
            raise store_error(self.path, err) or XdetoxInputError(f"cannot use the store {self.path}: {err}") from None

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, kind, err, traceback) -> None:
        """Close; an SQLite error met inside the block becomes what it means (``file.store_error``):
        a damaged or locked store one ``XdetoxInputError`` line, a full disk an ``OSError`` naming the store."""
        self.close()
        if isinstance(err, Exception) and (meaning := store_error(self.path, err)) is not None:
            raise meaning from None

    @contextmanager
    def transaction(self):
        """One transaction: committed whole, or (on any error, a full disk's at COMMIT too) rolled back."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
            if self.attempt is not None:  # the attempt's time reaches its last committed write
                self.conn.execute("UPDATE attempts SET last_s = ? WHERE id = ?", (time.time(), self.attempt))
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise

    # -- attempts ---------------------------------------------------------------
    def begin_attempt(self, started: str) -> int:
        """Record that an attempt (``started``: an ISO time) starts now; later commits extend it."""
        now = time.time()
        with self.transaction() as c:
            cursor = c.execute("INSERT INTO attempts (started, start_s, last_s) VALUES (?, ?, ?)",
                               (started, now, now))
        self.attempt = cursor.lastrowid
        return self.attempt

    def end_attempt(self, outcome: str) -> None:
        """Close this process's attempt: its end time and outcome (finished, interrupted or failed)."""
        if outcome not in ATTEMPT_OUTCOMES:
            raise ValueError(f"unknown attempt outcome {outcome!r}")
        if self.attempt is None:
            return
        attempt, self.attempt = self.attempt, None
        now = time.time()
        with self.transaction() as c:
            c.execute("UPDATE attempts SET end_s = ?, last_s = ?, outcome = ? WHERE id = ?",
                      (now, now, outcome, attempt))

    # -- metadata ---------------------------------------------------------------
    def set_meta(self, key: str, value: object) -> None:
        with self.transaction() as c:
            c.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    # -- training settings ------------------------------------------------------
    def add_train_setting(
        self, key: str, label: str, model: str, paradigm: str, source: str | None, percent: int | None,
        seed: int, spec: dict,
    ) -> None:
        with self.transaction() as c:
            c.execute(
                "INSERT OR IGNORE INTO train_settings (key, label, model, paradigm, source, percent, seed, spec)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (key, label, model, paradigm, source, percent, seed, json.dumps(spec, sort_keys=True)),
            )

    def finish_train_setting(self, key: str, adapter_path: str | None, sha256: str | None) -> None:
        with self.transaction() as c:
            c.execute(
                "UPDATE train_settings SET adapter_path = ?, adapter_sha256 = ?, status = 'done'"
                " WHERE key = ?",
                (adapter_path, sha256, key),
            )

    # -- evaluations and their batches -----------------------------------------
    def add_evaluation(
        self, key: str, train_key: str, target: str, split: str, decode: dict, n_batches: int
    ) -> None:
        with self.transaction() as c:
            c.execute(
                "INSERT OR IGNORE INTO evaluations VALUES (?, ?, ?, ?, ?, ?)",
                (key, train_key, target, split, json.dumps(decode, sort_keys=True), n_batches),
            )

    def add_batch(self, eval_key: str, batch: int, completions: Iterable[Completion]) -> None:
        """Commit one batch's completions and its done-mark together, or nothing."""
        with self.transaction() as c:
            c.executemany(
                "INSERT OR IGNORE INTO completions VALUES (?, ?, ?, ?, ?, ?)",
                [(eval_key, x.prompt_id, x.sample, x.prompt, x.text, x.n_tokens) for x in completions],
            )
            c.execute("INSERT OR IGNORE INTO batches VALUES (?, ?)", (eval_key, batch))

    # -- scores -----------------------------------------------------------------
    def drop_scores(self, scorers: Iterable[str]) -> None:
        """Forget every score of these scorer names (their model changed: the run rescores)."""
        names = list(scorers)
        with self.transaction() as c:
            c.executemany("DELETE FROM scores WHERE scorer = ?", [(n,) for n in names])

    def add_scores(self, scorer: str, rows: Iterable[tuple[str, str, int, float]]) -> None:
        with self.transaction() as c:
            c.executemany(
                "INSERT OR IGNORE INTO scores VALUES (?, ?, ?, ?, ?)",
                [(e, p, s, scorer, float(v)) for e, p, s, v in rows],
            )

    # -- reference measures (per training setting, not per completion) ---------
    def add_measures(self, train_key: str, rows: Iterable[tuple[str, str, object]]) -> None:
        """A setting's measures ((lang or "*", name, JSON-able value)), all in one transaction."""
        with self.transaction() as c:
            c.executemany(
                "INSERT OR IGNORE INTO measures VALUES (?, ?, ?, ?)",
                [(train_key, lang, name, json.dumps(value)) for lang, name, value in rows],
            )

    # -- shards: a worker's private store, merged by the single writer ----------
    def merge_rows(self, tables: dict[str, list[tuple]]) -> None:
        """Add a shard's rows in ONE transaction: all of them or none.

        Rows already present are kept (INSERT OR IGNORE: the same keys hold the same
        content), except that a training setting still pending here takes the shard's
        finished state (adapter path, checksum, status).
        """
        unknown = set(tables) - set(DATA_TABLES)
        if unknown:
            raise ValueError(f"not data tables: {', '.join(sorted(unknown))}")
        with self.transaction() as c:
            for name in DATA_TABLES:
                rows = tables.get(name) or []
                if not rows:
                    continue
                marks = ", ".join("?" * len(rows[0]))
                if name == "train_settings":
                    c.executemany(
                        f"INSERT INTO train_settings VALUES ({marks}) ON CONFLICT(key) DO UPDATE SET"
                        " adapter_path = excluded.adapter_path, adapter_sha256 = excluded.adapter_sha256,"
                        " status = excluded.status"
                        " WHERE train_settings.status != 'done' AND excluded.status = 'done'",
                        rows,
                    )
                else:
                    c.executemany(f"INSERT OR IGNORE INTO {name} VALUES ({marks})", rows)  # noqa: S608

    def forget_outputs(self, train_key: str) -> int:
        """Drop what a training setting's adapter produced (batches, completions, scores, measures),
        in one transaction; returns the number of completions dropped. Its evaluations stay."""
        evals = "SELECT key FROM evaluations WHERE train_key = ?"
        with self.transaction() as c:
            n = c.execute(f"SELECT COUNT(*) FROM completions WHERE eval_key IN ({evals})", (train_key,)).fetchone()[0]
            for table in ("scores", "completions", "batches"):
                c.execute(f"DELETE FROM {table} WHERE eval_key IN ({evals})", (train_key,))  # noqa: S608
            c.execute("DELETE FROM measures WHERE train_key = ?", (train_key,))
        return n
