"""The run database: one SQLite file (WAL) per run directory.

Every write is idempotent (primary keys + INSERT OR IGNORE) and a batch of
completions is committed in one transaction together with its ``batches`` row,
so a run killed at any moment and started again neither loses nor duplicates
rows. The store computes nothing; it records and reads back.

Opening checks the file first: an existing file must be an xdetox store (an SQLite
database, not truncated: ``store_file.check_store_file``, which reads its header only;
its pages whole: ``check_intact``; with the xdetox tables), or ``Store`` raises ``XdetoxInputError``
naming it and leaves it untouched. An SQLite error met later inside ``with Store(...)`` is named the
same way (``store_file.store_error``): damaged, locked, or a full disk (``OSError`` ENOSPC; each
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

import pandas as pd

from xdetox.errors import XdetoxInputError
from xdetox.specs import Completion
from xdetox.store_file import check_intact, check_store_file, check_tables, readonly_uri, store_error

SCHEMA_VERSION = 1  # meta "schema": a store written by a newer xdetox is refused, not misread

# The tables that hold results (``meta`` holds bookkeeping: config, wall time, environment).
DATA_TABLES: tuple[str, ...] = ("train_settings", "evaluations", "batches", "completions", "scores", "measures")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS train_settings (
    key TEXT PRIMARY KEY, label TEXT NOT NULL, model TEXT NOT NULL, paradigm TEXT NOT NULL,
    source TEXT, percent INTEGER, seed INTEGER NOT NULL, spec TEXT NOT NULL,
    adapter_path TEXT, adapter_sha256 TEXT, status TEXT NOT NULL DEFAULT 'pending');
CREATE TABLE IF NOT EXISTS evaluations (
    key TEXT PRIMARY KEY, train_key TEXT NOT NULL, target TEXT NOT NULL, split TEXT NOT NULL,
    decode TEXT NOT NULL, n_batches INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    eval_key TEXT NOT NULL, batch INTEGER NOT NULL, PRIMARY KEY (eval_key, batch));
CREATE TABLE IF NOT EXISTS completions (
    eval_key TEXT NOT NULL, prompt_id TEXT NOT NULL, sample INTEGER NOT NULL,
    prompt TEXT NOT NULL, text TEXT NOT NULL, n_tokens INTEGER NOT NULL,
    PRIMARY KEY (eval_key, prompt_id, sample));
CREATE TABLE IF NOT EXISTS scores (
    eval_key TEXT NOT NULL, prompt_id TEXT NOT NULL, sample INTEGER NOT NULL,
    scorer TEXT NOT NULL, value REAL NOT NULL,
    PRIMARY KEY (eval_key, prompt_id, sample, scorer));
CREATE TABLE IF NOT EXISTS measures (
    train_key TEXT NOT NULL, lang TEXT NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (train_key, lang, name));
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY, started TEXT NOT NULL, start_s REAL NOT NULL, last_s REAL NOT NULL,
    end_s REAL, outcome TEXT NOT NULL DEFAULT 'running');
"""
REQUIRED_TABLES: tuple[str, ...] = ("meta", *DATA_TABLES)  # ``attempts`` is added to older stores on write
ATTEMPT_OUTCOMES: tuple[str, ...] = ("finished", "interrupted", "failed")


class Store:
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
        """Close; an SQLite error met inside the block becomes what it means (``store_file.store_error``):
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

    def times(self) -> dict:
        """``wall_time_s`` of the latest attempt, ``total_time_s`` over all, and the number of ``attempts``.

        An attempt without an end (killed, or still running) counts up to its last committed
        write. A store from before attempts were recorded gives its summed ``wall_time_s``
        meta value as the total and no latest attempt.
        """
        has_table = self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'attempts'").fetchone()
        rows = self.conn.execute(
            "SELECT COALESCE(end_s, last_s) - start_s FROM attempts ORDER BY id").fetchall() if has_table else []
        if not rows:
            legacy = self.get_meta("wall_time_s")
            return {"wall_time_s": None, "total_time_s": legacy, "attempts": None}
        seconds = [max(0.0, r[0]) for r in rows]
        return {"wall_time_s": round(seconds[-1], 1), "total_time_s": round(sum(seconds), 1),
                "attempts": len(seconds)}

    # -- metadata ---------------------------------------------------------------
    def set_meta(self, key: str, value: object) -> None:
        with self.transaction() as c:
            c.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def get_meta(self, key: str, default: object = None) -> object:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

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

    def train_setting(self, key: str) -> dict | None:
        row = self.conn.execute(
            "SELECT key, label, spec, adapter_path, adapter_sha256, status FROM train_settings"
            " WHERE key = ?", (key,),
        ).fetchone()
        if row is None:
            return None
        return dict(zip(("key", "label", "spec", "adapter_path", "adapter_sha256", "status"), row))

    # -- evaluations and their batches -----------------------------------------
    def add_evaluation(
        self, key: str, train_key: str, target: str, split: str, decode: dict, n_batches: int
    ) -> None:
        with self.transaction() as c:
            c.execute(
                "INSERT OR IGNORE INTO evaluations VALUES (?, ?, ?, ?, ?, ?)",
                (key, train_key, target, split, json.dumps(decode, sort_keys=True), n_batches),
            )

    def done_batches(self, eval_key: str) -> set[int]:
        rows = self.conn.execute("SELECT batch FROM batches WHERE eval_key = ?", (eval_key,))
        return {r[0] for r in rows}

    def add_batch(self, eval_key: str, batch: int, completions: Iterable[Completion]) -> None:
        """Commit one batch's completions and its done-mark together, or nothing."""
        with self.transaction() as c:
            c.executemany(
                "INSERT OR IGNORE INTO completions VALUES (?, ?, ?, ?, ?, ?)",
                [(eval_key, x.prompt_id, x.sample, x.prompt, x.text, x.n_tokens) for x in completions],
            )
            c.execute("INSERT OR IGNORE INTO batches VALUES (?, ?)", (eval_key, batch))

    def missing_work(self, planned_evaluations: int) -> str | None:
        """What keeps the run from being complete, in words (None when complete)."""
        n_evals = self.conn.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0]
        if n_evals < planned_evaluations:
            return f"{n_evals} of {planned_evaluations} evaluations started"
        open_batches = self.conn.execute(
            "SELECT COALESCE(SUM(e.n_batches), 0) - (SELECT COUNT(*) FROM batches) FROM evaluations e"
        ).fetchone()[0]
        if open_batches:
            return f"{open_batches} batches not generated"
        return None

    # -- scores -----------------------------------------------------------------
    def unscored(self, scorer: str, eval_keys: list[str] | None = None) -> pd.DataFrame:
        """Completions (with their prompt and target language) that ``scorer`` has not scored, of some
        evaluations or all."""
        where = ""
        params: list = [scorer]
        if eval_keys is not None:
            where = f" AND c.eval_key IN ({', '.join('?' * len(eval_keys))})"
            params.extend(eval_keys)
        return pd.read_sql_query(
            "SELECT c.eval_key, c.prompt_id, c.sample, c.prompt, c.text, e.target FROM completions c"
            " JOIN evaluations e ON e.key = c.eval_key"
            " WHERE NOT EXISTS (SELECT 1 FROM scores s WHERE s.eval_key = c.eval_key"
            "   AND s.prompt_id = c.prompt_id AND s.sample = c.sample AND s.scorer = ?)" + where +
            " ORDER BY c.eval_key, c.prompt_id, c.sample",
            self.conn, params=params,
        )

    def unmatched_pairs(self, eval_key: str, zs_eval_key: str, scorer: str) -> pd.DataFrame:
        """(prompt_id, sample, text, zs_text) of an evaluation and its ZS where ``scorer`` has no score yet."""
        return pd.read_sql_query(
            "SELECT c.prompt_id, c.sample, c.text, z.text AS zs_text FROM completions c"
            " JOIN completions z ON z.eval_key = ? AND z.prompt_id = c.prompt_id AND z.sample = c.sample"
            " WHERE c.eval_key = ? AND NOT EXISTS (SELECT 1 FROM scores s WHERE s.eval_key = c.eval_key"
            "   AND s.prompt_id = c.prompt_id AND s.sample = c.sample AND s.scorer = ?)"
            " ORDER BY c.prompt_id, c.sample",
            self.conn, params=(zs_eval_key, eval_key, scorer),
        )

    def has_scores(self, scorer: str) -> bool:
        return self.conn.execute("SELECT 1 FROM scores WHERE scorer = ? LIMIT 1", (scorer,)).fetchone() is not None

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

    def has_measures(self, train_key: str) -> bool:
        return self.conn.execute("SELECT 1 FROM measures WHERE train_key = ? LIMIT 1", (train_key,)).fetchone() is not None

    def measures_frame(self) -> pd.DataFrame:
        """One row per measure with its setting's model, label, paradigm, source, percent and seed."""
        frame = pd.read_sql_query(
            "SELECT t.model, t.label AS setting, t.paradigm, t.source, t.percent, t.seed, m.lang, m.name,"
            " m.value FROM measures m JOIN train_settings t ON t.key = m.train_key"
            " ORDER BY t.model, t.paradigm, t.source, t.percent, t.seed, m.lang, m.name",
            self.conn,
        )
        frame["value"] = [json.loads(v) for v in frame["value"]]
        _setting_columns(frame)
        return frame

    def complete_evaluations(self, eval_keys: list[str]) -> set[str]:
        """Those of ``eval_keys`` whose every batch is committed."""
        if not eval_keys:
            return set()
        rows = self.conn.execute(
            "SELECT e.key FROM evaluations e WHERE e.key IN (" + ", ".join("?" * len(eval_keys)) + ")"
            " AND e.n_batches = (SELECT COUNT(*) FROM batches b WHERE b.eval_key = e.key)",
            eval_keys,
        )
        return {r[0] for r in rows}

    # -- shards: a worker's private store, merged by the single writer ----------
    def export_rows(self) -> dict[str, list[tuple]]:
        """Every row of the data tables, as plain tuples in column order (a shard's result)."""
        return {name: self.conn.execute(f"SELECT * FROM {name}").fetchall()  # noqa: S608 - fixed names
                for name in DATA_TABLES}

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

    # -- reads for reports ------------------------------------------------------
    def completions_frame(self, scorer: str) -> pd.DataFrame:
        """One row per completion with its setting, target, split and ``scorer``'s toxicity."""
        frame = pd.read_sql_query(
            "SELECT t.model, t.label AS setting, t.paradigm, t.source, t.percent, t.seed, e.target, e.split,"
            " c.prompt_id, c.sample, c.prompt, c.text AS completion, c.n_tokens,"
            " s.value AS toxicity"
            " FROM completions c JOIN evaluations e ON e.key = c.eval_key"
            " JOIN train_settings t ON t.key = e.train_key"
            " LEFT JOIN scores s ON s.eval_key = c.eval_key AND s.prompt_id = c.prompt_id"
            "   AND s.sample = c.sample AND s.scorer = ?"
            " ORDER BY t.model, t.paradigm, t.source, t.percent, t.seed, e.target, e.split, c.prompt_id, c.sample",
            self.conn, params=(scorer,),
        )
        _setting_columns(frame)
        return frame

    def table(self, name: str) -> pd.DataFrame:
        """A whole table, sorted by its primary key columns (for comparisons)."""
        frame = pd.read_sql_query(f"SELECT * FROM {name}", self.conn)  # noqa: S608 - fixed names
        return frame.sort_values(list(frame.columns)).reset_index(drop=True)


def _setting_columns(frame: pd.DataFrame) -> None:
    """SQL NULLs as None in ``source`` and ``percent`` (and percents as ints, not floats), in place."""
    frame["source"] = frame["source"].astype(object).where(frame["source"].notna(), None)
    frame["percent"] = [None if pd.isna(v) else int(v) for v in frame["percent"]]
