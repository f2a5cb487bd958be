"""The Python face of xdetox, for notebooks and scripts: ``run`` a config, ``open_run`` a run directory.

::

    import xdetox

    run = xdetox.open_run("runs/embedded")
    run.config        # the GridConfig the run was made with
    run.summary       # summary.json, as a dict
    run.settings()    # one row per setting of summary.json: toxicity, reductions, intervals, shares
    run.per_seed()    # the same per seed
    run.completions() # one row per completion, a column per scorer of the run
    run.measures()    # the reference measures (perplexity, silhouette, ...) per setting
    run.report()      # the report files rebuilt from the store, as ``xdetox report`` does

    part = xdetox.open_run("runs/embedded", partial=True)  # a grid still running: its finished settings

    run = xdetox.run(source="en", targets="en,de", limit=20, out="runs/en-de")  # options of ``xdetox run``
    run = xdetox.evaluate("runs/export", baseline="embedded", out="runs/eval")  # options of ``xdetox eval``

Importing this module loads no model code (torch, transformers): ``run`` loads it when it runs a config.
A ``Run`` reads its store read-only, once per call, and summary.json; it computes no result itself.
Bad input is one ``XdetoxInputError`` line, as on the command line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from xdetox.errors import XdetoxInputError
from xdetox.grid import STORE_FILE, EvalOptions, GridConfig, RunOptions, config_from_stored, load_config
from xdetox.grid.run import PARTIAL_DIR, RunScorers, completions_frame, report_run, run_config
from xdetox.report import SUMMARY_JSON
from xdetox.report.tabular import summary_frame  # defined beside write_report, which writes settings.parquet
from xdetox.store import Store

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Run", "evaluate", "open_run", "run", "summary_frame"]

class Run:
    """A finished xdetox run directory, read through its store and its ``summary.json``.

    ``path`` is the directory, ``config`` the ``GridConfig`` the run was made with (rebuilt from the
    store), ``summary`` the content of ``summary.json``. The methods return pandas frames read afresh
    on every call; only ``report()`` writes (the report files, as ``xdetox report`` does).

    Opened with ``partial=True`` while unfinished, it is the run's partial report (``xdetox report
    --partial``): ``summary`` is ``partial/summary.json`` as last written, ``partial`` says what it lacks,
    ``completions()`` and ``measures()`` keep the settings that summary holds, and ``report()`` rewrites it
    from the store as it is now.
    """

    path: Path
    """The run directory."""
    config: GridConfig
    """The configuration the run was made with: ``GridConfig.to_dict`` of it is what the store holds."""
    summary: dict
    """``summary.json``: settings, per_seed, measures, analysis, training, run (times, device, versions)."""
    partial: str | None
    """None for a finished run; for an unfinished one opened with ``partial=True``, what its report lacks."""

    def __init__(self, path: str | os.PathLike, partial: bool = False):
        """Open the finished run in ``path`` (with ``partial``, an unfinished one's partial report); every
        reason it cannot be read is one ``XdetoxInputError``."""
        if not isinstance(partial, bool):
            raise XdetoxInputError(f"partial must be True or False, got {partial!r}")
        self.path, self.partial = Path(path), None
        try:
            exists, is_dir, has_store = (self.path.exists(), self.path.is_dir(),
                                         (self.path / STORE_FILE).is_file())
        except OSError as err:  # the operating system refuses to look (a permission, a name too long)
            raise XdetoxInputError(f"cannot read {self.path}: {err.strerror or err}") from None
        if not exists:
            raise XdetoxInputError(f"no run directory at {self.path}")
        if not is_dir:
            raise XdetoxInputError(f"{self.path} is not a directory: a run is a directory with {STORE_FILE}")
        if not has_store:
            raise XdetoxInputError(f"{self.path} is not an xdetox run directory (no {STORE_FILE})")
        with self._store() as store:
            stored = store.get_meta("config")
            missing = store.missing_work(store.get_meta("planned_evaluations", 0))
        if stored is None:
            raise XdetoxInputError(f"{self.path} holds no run configuration yet: its run stopped before its"
                                   " first write; run the same command again to resume it")
        self.config = config_from_stored(stored, f"{self.path / STORE_FILE}: the stored config")
        resume = f"run the same command again (or xdetox.run(config, out={str(self.path)!r})) to finish it"
        if missing and not partial:
            raise XdetoxInputError(f"{self.path} is not finished ({missing}; no {SUMMARY_JSON}): {resume},"
                                   " or open what it has finished with open_run(path, partial=True)")
        if missing:
            self.summary = self._read_summary(resume, PARTIAL_DIR)
            self.partial = str(self.summary.get("run", {}).get("partial") or missing)
        else:
            self.summary = self._read_summary(resume)

    def _store(self) -> Store:
        return Store(self.path / STORE_FILE, readonly=True)

    def _read_summary(self, resume: str, folder: str = "") -> dict:
        """``summary.json`` (of the partial report in ``folder``), checked to be a summary."""
        file = self.path / folder / SUMMARY_JSON
        rewrite = f"`xdetox report {'--partial ' if folder else ''}{self.path}`"
        if not file.is_file():
            raise XdetoxInputError(
                f"{self.path} is not finished and has no partial report yet: {rewrite} writes one" if folder else
                f"{self.path} has no {SUMMARY_JSON}: its run is not finished; {resume}"
                f" ({rewrite} rewrites the files of a finished run)")
        try:
            summary = json.loads(file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise XdetoxInputError(f"{file} is not valid JSON ({err}); {rewrite} rewrites it") from None
        if not isinstance(summary, dict) or not isinstance(summary.get("settings"), list):
            raise XdetoxInputError(f"{file} is not an xdetox summary (no settings list); {rewrite} rewrites it")
        return summary

    def _in_summary(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame``'s rows of the settings (model, label, seed) the summary holds: all of a finished run's."""
        if self.partial is None:
            return frame
        held = {(t.get("model"), t.get("setting"), t.get("seed")) for t in self.summary.get("training", [])}
        keep = [key in held for key in zip(frame["model"], frame["setting"], frame["seed"])]
        return frame[keep].reset_index(drop=True)

    def __repr__(self) -> str:
        return (f"Run({str(self.path)!r}, name={self.config.name!r}, settings={len(self.summary['settings'])},"
                f" scorers={list(self.config.scorers)}{', partial' if self.partial else ''})")

    def settings(self) -> pd.DataFrame:
        """One row per setting of ``summary["settings"]`` (model, paradigm, source, percent, target, split)
        and a column per field (``summary_frame``): ``ci95_low``/``ci95_high``, ``flags.short``, ..."""
        return summary_frame(self.summary["settings"])

    def per_seed(self) -> pd.DataFrame:
        """One row per setting and seed of ``summary["per_seed"]``, a column per field (``summary_frame``)."""
        return summary_frame(self.summary.get("per_seed", []))

    def completions(self) -> pd.DataFrame:
        """One row per completion (model, setting, paradigm, source, percent, seed, target, split,
        prompt_id, sample, prompt, completion, n_tokens) with a column per scorer of the run:
        ``toxicity`` (the run's first toxicity scorer), ``ppl``, ``lang_fidelity``, ``relevance``,
        ``toxicity:<name>`` per other toxicity scorer, and the length-matched toxicities
        (``toxicity_length_matched``, ``zs_toxicity_length_matched``). NaN where a completion is silent
        (never scored). The rows of ``completions.jsonl``, read from the store."""
        scorers = RunScorers.of(self.config.scorers)
        with self._store() as store:
            return self._in_summary(completions_frame(store, scorers))

    def measures(self) -> pd.DataFrame:
        """One row per reference measure of a setting (model, setting, paradigm, source, percent, seed,
        lang, name, value): perplexity of the test_neutral texts, silhouette, language similarity."""
        with self._store() as store:
            return self._in_summary(store.measures_frame())

    def report(self) -> dict:
        """Rebuild ``completions.jsonl``, the matrices, ``report.html``, ``report.md``, ``settings.parquet``,
        ``completions.parquet`` and ``summary.json`` from the store, as ``xdetox report`` does, and return (and
        keep as ``summary``) the summary. A partial run's report is rewritten (``xdetox report --partial``)
        with what the store has finished by now; a run that has finished since is opened whole."""
        with self._store() as store:
            missing = store.missing_work(store.get_meta("planned_evaluations", 0))
        self.summary = report_run(self.path, partial=bool(missing))
        self.partial = str(self.summary["run"].get("partial") or missing) if missing else None
        return self.summary


def open_run(path: str | os.PathLike, partial: bool = False) -> Run:
    """The finished run in directory ``path``; a missing directory, a directory without a store, a foreign
    or damaged store and an unfinished run are each one ``XdetoxInputError`` line saying what to do.

    ``partial=True`` also opens an unfinished run, as its partial report (``xdetox report --partial``, which
    ``Run.report()`` rewrites): the settings it has finished, ``Run.partial`` saying what it lacks."""
    return Run(path, partial=partial)


def run(config_or_path: GridConfig | str | os.PathLike | None = None, /, out: str | os.PathLike | None = None,
        quiet: bool = True, reuse: Sequence[str | os.PathLike] = (), **options) -> Run:
    """Run (or resume) a config to its report and open the finished run.

    ``config_or_path``: a ``GridConfig``; a path to a TOML config (as ``xdetox grid run``); or None, and
    the run is the one ``xdetox run`` makes from ``options``, named like its flags (``--max-new-tokens``
    is ``max_new_tokens``): ``source="en", targets=("en", "de"), limit=2, epochs=1, model=...,
    scorer="offline", seed=..., text_normalisation=..., sentences_per_sequence=...`` (``RunOptions``).
    ``quick=True`` is ``--quick``: targets en,de, limit 20, scorer offline, one epoch, no reference measures;
    giving one of those four options beside it is refused.

    ``out``: the run directory; by default ``runs/<config name>`` for a config, ``runs/<timestamp>`` for
    options (``runs/quick`` with ``quick=True``), as on the command line. An existing run of the same work
    resumes; one of other work is refused. ``quiet``: no progress bars (stderr keeps the start and resume
    lines). ``reuse``: run directories whose work with the same content keys is copied instead of computed
    (``--reuse``).

    Everything is checked before anything is written; bad input is one ``XdetoxInputError`` line, the one
    ``xdetox run`` prints (the bounds of the specs, a prompt longer than the model's context, an ``out``, cache
    or ``$TMPDIR`` that cannot be written, a damaged store). A full disk during work is an ``OSError``
    (``ENOSPC``) naming the path. An interrupted run (an exception, Ctrl-C, a full disk) resumes with the same call.
    """
    if config_or_path is None:
        run_options = RunOptions.from_mapping(options)
        config = run_options.to_config()
        out = run_options.default_out() if out is None else out  # quick=True: runs/quick
    elif options:
        raise XdetoxInputError(f"the option(s) {', '.join(map(repr, sorted(options)))} build xdetox run's config"
                               " and apply only without one: set them in the config instead")
    elif isinstance(config_or_path, GridConfig):
        config = config_or_path
    elif isinstance(config_or_path, (str, os.PathLike)):
        config = load_config(config_or_path)
    else:
        raise XdetoxInputError("xdetox.run takes a GridConfig, the path of a TOML config or None (with options),"
                               f" got {type(config_or_path).__name__}")
    if out is not None and not isinstance(out, (str, os.PathLike)):
        raise XdetoxInputError(f"out must be a directory path, got {out!r}")
    if not isinstance(quiet, bool):
        raise XdetoxInputError(f"quiet must be True or False, got {quiet!r}")
    reuse = [reuse] if isinstance(reuse, (str, os.PathLike)) else list(reuse)
    if not all(isinstance(r, (str, os.PathLike)) for r in reuse):
        raise XdetoxInputError(f"reuse takes run directory paths, got {reuse!r}")
    if out is None and config_or_path is not None:
        out = Path("runs") / config.name
    finished = run_config(config, None if out is None else str(out), quiet=quiet, reuse=[str(r) for r in reuse])
    return Run(finished.run_dir)


def evaluate(model: str | os.PathLike | None = None, /, out: str | os.PathLike | None = None, quiet: bool = True,
             reuse: Sequence[str | os.PathLike] = (), **options) -> Run:
    """Measure a given model as it is (``xdetox eval``) and open the finished run.

    ``model``: an HF id, a local directory, an ``xdetox export`` directory or a PEFT adapter directory (read on
    the base it records); None: the embedded model, or an ``adapter``'s recorded base. ``options`` are the
    other options of ``xdetox eval``, named like its flags (``EvalOptions``): ``adapter=PATH`` (a PEFT adapter
    on ``model``), ``baseline=MODEL`` (whose completions play ZS, so each target gets a reduction against it;
    without one, the model's toxicity per target), ``targets``, ``split``, ``limit``, ``data``,
    ``chat_template=True``, ``scorer``, ``seed``, the decoding options, ...

    ``out``, ``quiet`` and ``reuse`` as for ``run``. The directory is a run: ``open_run``, ``xdetox report``,
    ``compare`` and ``export`` read it. Bad input is one ``XdetoxInputError`` line, before anything is written.
    """
    if isinstance(model, os.PathLike):
        model = str(model)
    config = EvalOptions.from_mapping({"model": model, **options}).to_config()
    return run(config, out=runs_dir(out), quiet=quiet, reuse=reuse)


def runs_dir(out: str | os.PathLike | None) -> str | os.PathLike:
    """``out``, or ``runs/<timestamp>`` as the command line chooses it."""
    from datetime import datetime

    return out if out is not None else Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
