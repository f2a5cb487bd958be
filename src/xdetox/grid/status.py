"""``xdetox status RUN_DIR``: how far a run has got, read from its store while it runs (or after it stopped).

A grid takes days: this says, without writing anything, which training settings are done, which one is
being worked on and which are still to come, how many evaluations and completions the store holds, and the
time its attempts have taken. The plan is rebuilt from the configuration the store records (so a setting
not started yet is listed too); the store is opened read-only, beside a run that is writing it.

With the latest attempt's pace (the evaluations it completed, over its time; recorded since attempts note
where they began) the status says about how long is left: a rough guide, as training settings differ in cost
(a pooled or DPO setting trains longer than an X-FT one) and a paused process counts its pause.

A setting's state is its generation's: ``done`` once every evaluation of it has all its batches (its
scoring and measures follow within minutes; ``summary.json`` appears when the whole run has finished),
``evaluating k of n`` while some have, ``trained`` or ``training`` before its first evaluation, and
``-`` when the store has nothing of it yet.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from xdetox.errors import XdetoxInputError

NOT_STARTED = "-"


@dataclass(frozen=True)
class RunStatus:
    """The progress of one run directory (``run_status``)."""

    path: Path
    name: str
    rows: tuple[tuple[str, str, int, str], ...]  # model, setting, seed, state — in plan order
    evaluations: tuple[int, int]  # started, planned
    complete: int  # evaluations with every batch generated
    completions: int
    finished: bool  # summary.json written: the run ended with its report
    times: dict  # StoreReads.times(): total_time_s, attempts
    latest: dict | None  # StoreReads.latest_attempt(): started, last_s, end_s, outcome
    pace: tuple[int, float] | None = None  # evaluations the latest attempt completed, in how many seconds

    @property
    def done(self) -> int:
        return sum(state == "done" for *_, state in self.rows)

    def to_text(self, now: float | None = None) -> str:
        """A table like ``xdetox grid plan``'s with the state of each setting, then the counts and times."""
        from xdetox.grid.plan import left_aligned

        lines = left_aligned([("model", "setting", "seed", "state"),
                              *((m, s, str(seed), st) for m, s, seed, st in self.rows)])
        started, planned = self.evaluations
        head = "finished (summary.json written)" if self.finished else "not finished"
        lines += ["", f"{self.path}: {self.name}, {head}: {self.done} of {len(self.rows)} training settings done,"
                      f" {started} of {planned} evaluations started, {self.completions:,} completions stored"]
        lines.append(self._time_line(time.time() if now is None else now))
        left = self.evaluations[1] - self.complete
        if left == 0 and not self.finished:
            lines.append("every evaluation is generated: scoring, measures and the report remain (minutes)")
        elif self.pace and self.pace[0] > 0 and not self.finished:
            done, seconds = self.pace
            lines.append(f"left: {left} evaluations; at the latest attempt's pace ({done} in {_duration(seconds)})"
                         f" about {_duration(left * seconds / done)} (a rough guide: settings differ in cost)")
        return "\n".join(lines)

    def _time_line(self, now: float) -> str:
        total, attempts = self.times.get("total_time_s"), self.times.get("attempts")
        spent = ("no attempt recorded" if total is None else
                 f"{_duration(total)} over {attempts or '?'} attempt(s), each from its start to its last write")
        if self.latest is None:
            return f"wall-clock time: {spent}"
        latest = f"the latest started {self.latest['started']}"
        if self.latest["end_s"] is not None:
            return f"wall-clock time: {spent}; {latest} and ended {self.latest['outcome']}"
        return (f"wall-clock time: {spent}; {latest}, its last write {_duration(now - self.latest['last_s'])} ago"
                " (running, or stopped without an end: a kill)")


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours} h {rest // 60:02d} min" if hours else f"{rest // 60} min {rest % 60:02d} s"


def run_status(run_dir: str | Path) -> RunStatus:
    """The ``RunStatus`` of the run in ``run_dir``; what is not a run directory is one ``XdetoxInputError``."""
    from xdetox import data
    from xdetox.grid import STORE_FILE, config_from_stored, make_plan
    from xdetox.grid.run import ATTEMPT_PROGRESS
    from xdetox.hygiene import clean_corpus
    from xdetox.report import SUMMARY_JSON
    from xdetox.store import Store

    path = Path(run_dir)
    if not (path / STORE_FILE).is_file():
        raise XdetoxInputError(f"{path} is not an xdetox run directory (no {STORE_FILE})")
    with Store(path / STORE_FILE, readonly=True) as store:
        stored = store.get_meta("config")
        if stored is None:
            raise XdetoxInputError(f"{path} holds no run configuration yet: its run stopped before its first write")
        config = config_from_stored(stored, f"{path / STORE_FILE}: the stored config")
        progress, completions = store.progress(), store.count_completions()
        planned, times, latest = store.get_meta("planned_evaluations", 0), store.times(), store.latest_attempt()
        began = None if latest is None else store.get_meta(f"{ATTEMPT_PROGRESS}{latest['id']}")
    plan = make_plan(config, clean_corpus(data.load(config.data_path), config.text_normalisation))
    rows = []
    for setting in plan.settings:
        status, started, complete = progress.get(setting.key, (None, 0, 0))
        rows.append((setting.model.name, setting.label, setting.spec.seed,
                     state(status, started, complete, len(plan.evaluations_of(setting)))))
    complete = sum(p[2] for p in progress.values())
    pace = None if began is None else (complete - began, (latest["end_s"] or latest["last_s"]) - latest["start_s"])
    return RunStatus(path, config.name, tuple(rows), (sum(p[1] for p in progress.values()), planned or
                                                      len(plan.evaluations)),
                     complete, completions, (path / SUMMARY_JSON).is_file(), times, latest, pace)


def state(status: str | None, started: int, complete: int, planned: int) -> str:
    """One setting's state from its store row's ``status`` (None: no row), its evaluations started and
    complete (every batch in), and its planned evaluations."""
    if status is None:
        return NOT_STARTED
    if complete >= planned:
        return "done"
    if started:
        return f"evaluating {complete} of {planned}"
    return "trained" if status == "done" else "training"
