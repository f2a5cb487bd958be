"""What a store holds, read back: ``StoreReads``, the query half of ``Store``.

Every query of a run's database lives here or in ``database`` (the writes); nothing outside
``xdetox.store`` runs SQL. Reads return plain values, row tuples in column order (for
``Store.merge_rows``) or pandas DataFrames (for reports and ``xdetox.open_run``).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable

import pandas as pd

from xdetox.store.schema import DATA_TABLES

AMONG = "IN (SELECT value FROM json_each(?))"
"""A column among a set of keys given as one parameter (``key_set``): no statement grows with the set."""


def key_set(values: Iterable[str]) -> str:
    """The parameter ``AMONG`` reads: the distinct values as a JSON array."""
    return json.dumps(sorted(set(values)))


class StoreReads:
    """The reads of a run's SQLite database (``Store`` adds opening and writing)."""

    conn: sqlite3.Connection

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

    def latest_attempt(self) -> dict | None:
        """The latest attempt's ``id``, ``started`` (ISO time), ``start_s``, ``last_s`` (its last commit), ``end_s``
        (None: running, or killed) and ``outcome``; None where none is recorded."""
        has_table = self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'attempts'").fetchone()
        fields = ("id", "started", "start_s", "last_s", "end_s", "outcome")
        row = self.conn.execute(f"SELECT {', '.join(fields)} FROM attempts ORDER BY id DESC LIMIT 1"  # noqa: S608
                                ).fetchone() if has_table else None
        return None if row is None else dict(zip(fields, row))

    def progress(self) -> dict[str, tuple[str, int, int]]:
        """Per training setting in the store (by key): its status, its evaluations started and those complete
        (every batch committed)."""
        rows = self.conn.execute(
            "SELECT t.key, t.status, COUNT(e.key), COALESCE(SUM(e.n_batches = (SELECT COUNT(*) FROM batches b"
            " WHERE b.eval_key = e.key)), 0) FROM train_settings t LEFT JOIN evaluations e ON e.train_key = t.key"
            " GROUP BY t.key")
        return {key: (status, started, complete) for key, status, started, complete in rows}

    def count_completions(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM completions").fetchone()[0]

    def get_meta(self, key: str, default: object = None) -> object:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def train_setting(self, key: str) -> dict | None:
        row = self.conn.execute(
            "SELECT key, label, spec, adapter_path, adapter_sha256, status FROM train_settings"
            " WHERE key = ?", (key,),
        ).fetchone()
        if row is None:
            return None
        return dict(zip(("key", "label", "spec", "adapter_path", "adapter_sha256", "status"), row))

    def done_batches(self, eval_key: str) -> set[int]:
        rows = self.conn.execute("SELECT batch FROM batches WHERE eval_key = ?", (eval_key,))
        return {r[0] for r in rows}

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

    def export_rows(self) -> dict[str, list[tuple]]:
        """Every row of the data tables, as plain tuples in column order (a shard's result)."""
        return {name: self.conn.execute(f"SELECT * FROM {name}").fetchall()  # noqa: S608 - fixed names
                for name in DATA_TABLES}

    def rows_of(self, train_keys: Iterable[str], eval_keys: Iterable[str],
                scorers: Iterable[str]) -> dict[str, list[tuple]]:
        """The rows of these keys, as ``export_rows`` gives them: the finished training settings among
        ``train_keys``, their evaluations among ``eval_keys``, those evaluations' batches, completions and
        scores of ``scorers``, and the settings' reference measures (what ``--reuse`` copies)."""
        settings = self.conn.execute(
            f"SELECT * FROM train_settings WHERE status = 'done' AND key {AMONG} ORDER BY key",
            (key_set(train_keys),)).fetchall()
        kept = key_set(row[0] for row in settings)
        evaluations = self.conn.execute(
            f"SELECT * FROM evaluations WHERE key {AMONG} AND train_key {AMONG} ORDER BY key",
            (key_set(eval_keys), kept)).fetchall()
        evals = key_set(row[0] for row in evaluations)
        rows = {"train_settings": settings, "evaluations": evaluations}
        for table in ("batches", "completions"):
            rows[table] = self.conn.execute(f"SELECT * FROM {table} WHERE eval_key {AMONG}", (evals,)).fetchall()
        rows["scores"] = self.conn.execute(f"SELECT * FROM scores WHERE eval_key {AMONG} AND scorer {AMONG}",
                                           (evals, key_set(scorers))).fetchall()
        rows["measures"] = self.conn.execute(f"SELECT * FROM measures WHERE train_key {AMONG}", (kept,)).fetchall()
        return rows

    def adapters(self, train_keys: Iterable[str]) -> list[tuple[str, str | None]]:
        """(adapter_path, adapter_sha256) of those of ``train_keys`` whose training wrote an adapter."""
        return self.conn.execute(
            "SELECT adapter_path, adapter_sha256 FROM train_settings WHERE adapter_path IS NOT NULL"
            f" AND key {AMONG} ORDER BY key", (key_set(train_keys),),
        ).fetchall()

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
