"""A run from config to report: ``run_config`` (``xdetox run`` and ``xdetox grid run``) and
``write_outputs`` (the completions file and report from a store alone: ``xdetox report`` too),
with ``completions_frame`` (every completion with a column per scorer of the run, ``RunScorers``).

``run_config`` checks everything first (the writable locations: ``--out``, the cache, ``$TMPDIR``;
corpus, plan, scorers, each prompt and its token budget in the model's context, generator,
``--out``'s store, the ``--reuse`` sources): a bad input is one ``XdetoxInputError`` and nothing is
written. Then it opens the run directory's store, records the attempt, copies the
reused work, runs (or resumes) the plan here or on Ray, and writes the report.
Progress lines go to stderr; the caller prints the result.

Not imported by ``xdetox.grid`` itself: it sits above the grid, ``xdetox.distributed``
and ``xdetox.reuse`` (which import the grid).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from xdetox import grid
from xdetox._io import atomic_write, check_writable_dir
from xdetox.errors import XdetoxInputError
from xdetox.specs import ModelSpec, end_token_trained
from xdetox.store import Store

if TYPE_CHECKING:
    import pandas as pd

ATTEMPT_ENVIRONMENT = "environment/attempt-"
"""Meta key prefix of each attempt's environment (device, dtype, linear kernels, generator), by attempt id."""
ATTEMPT_PROGRESS = "progress/attempt-"
"""Meta key prefix of the evaluations complete when each attempt began its own work (``xdetox status``'s pace)."""

RECIPE_KEYS = ("objective", "epochs", "batch_size", "gradient_accumulation_steps", "max_length", "learning_rate",
               "sentences_per_sequence")
"""The training settings the report lists per tuned setting."""


@dataclass(frozen=True)
class Finished:
    """A finished run: where it is, its summary (``summary.json``), and this attempt's seconds."""

    run_dir: Path
    summary: dict
    elapsed_s: float


def run_config(config: grid.GridConfig, out: str | None, quiet: bool = False, backend: str = "local",
               address: str | None = None, reuse: list[str] = ()) -> Finished:
    """Validate everything, then run (or resume) the plan of ``config`` in ``out`` and write the report.

    ``out`` None: ``runs/<timestamp>``. ``backend``: ``local`` (this process) or ``ray``
    (one task per training setting, on the cluster at ``address`` or a local one).
    ``reuse``: run directories whose work with the same content keys is copied first.
    """
    from xdetox import data

    check_locations(out)
    if backend == "ray":
        from xdetox import distributed

        distributed.import_ray()  # not installed: one line, before any work
    from xdetox.hygiene import clean_corpus

    corpus = clean_corpus(data.load(config.data_path), config.text_normalisation)
    plan = grid.make_plan(config, corpus)
    grid.check_runnable(config, here=backend == "local")
    grid.check_context(plan, corpus)  # every prompt and its token budget fit each model's context
    from xdetox.generate import choose_generator

    # an explicit vllm that cannot run here says so, once; ray tasks choose on their own machines
    generator = choose_generator(config.generator) if backend == "local" else config.generator
    config_dict = config.to_dict()
    run_dir = prepare_out(out, config_dict, plan.identity())
    found = []
    if reuse:  # read (and checked) before anything is written
        from xdetox.reuse import find_work

        found = find_work(reuse, [s.key for s in plan.settings], [e.key for e in plan.evaluations],
                          config.scorers, run_dir)

    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    run_dir.mkdir(parents=True, exist_ok=True)
    print(f"xdetox: {config.name} -> {run_dir}  ({plan.decomposition()})", file=sys.stderr)
    with Store(run_dir / grid.STORE_FILE) as store:
        attempt = store.begin_attempt(started)  # this attempt's start, end and outcome: summary wall/total time
        environment = {**grid.environment(), "generator": generator}
        if backend == "local":  # what this attempt runs on, even if it stops (Ray tasks' devices: at the end)
            store.set_meta(f"{ATTEMPT_ENVIRONMENT}{attempt}", environment)
        store.set_meta("config", config_dict)
        store.set_meta("plan_id", plan.identity())
        store.set_meta("planned_evaluations", len(plan.evaluations))
        if found:
            from xdetox.reuse import reuse_work

            for done in reuse_work(found, config.scorers, run_dir, store):
                print(f"xdetox: {done.line()}", file=sys.stderr)
        store.set_meta(f"{ATTEMPT_PROGRESS}{attempt}", sum(done for *_, done in store.progress().values()))
        try:
            if backend == "ray":
                devices = distributed.execute(plan, corpus, run_dir, store, progress=not quiet, address=address)
            else:
                grid.execute(plan, corpus, run_dir, store, progress=not quiet)
        except BaseException as err:
            with contextlib.suppress(Exception):  # never hide why the run stopped
                store.end_attempt("interrupted" if isinstance(err, KeyboardInterrupt) else "failed")
            print(f"xdetox: run stopped before it finished; the same command resumes it from {run_dir}",
                  file=sys.stderr)
            raise
        store.end_attempt("finished")
        elapsed = time.perf_counter() - t0
        # the run's start is its first attempt's, however many attempts came before the first that finished
        store.set_meta("started", store.get_meta("started") or min(store.table("attempts")["started"]))
        if backend == "ray":  # the tasks' devices, not the driver's
            previous = store.get_meta("environment") or {}
            environment["device"] = ", ".join(devices) if devices else previous.get("device", environment["device"])
        store.set_meta("environment", environment)
        store.set_meta(f"{ATTEMPT_ENVIRONMENT}{attempt}", environment)
        summary = write_outputs(run_dir, store)
    return Finished(run_dir=run_dir, summary=summary, elapsed_s=elapsed)


def check_locations(out: str | None) -> None:
    """Before any work, that the run directory (``out``; by default under ``runs``), the cache and ``$TMPDIR``
    (when set) can be created and written: otherwise one ``XdetoxInputError`` line naming the path and the
    cause (a file where a directory is needed, no permission, a read-only file system). Creates nothing."""
    from xdetox.cache import cache_root

    check_writable_dir(Path(out) if out is not None else Path("runs"), "--out")
    check_writable_dir(*cache_root())
    if os.environ.get("TMPDIR"):
        check_writable_dir(os.environ["TMPDIR"], "TMPDIR", exists=True)


def attempt_environments(store: Store) -> list[tuple[int, dict]]:
    """(attempt id, environment) of every attempt that recorded one, in order."""
    meta = store.table("meta")
    return sorted((int(key.removeprefix(ATTEMPT_ENVIRONMENT)), json.loads(value))
                  for key, value in zip(meta["key"], meta["value"]) if key.startswith(ATTEMPT_ENVIRONMENT))


def by_attempt(attempts: list[tuple[int, dict]], field: str, latest: str) -> str:
    """``latest`` (the finishing attempt's ``field``: device, linear kernels, generator) where every
    recorded attempt had the same, else each value with the attempts that ran with it, in order:
    a run resumed on another machine says so, as its completions come from both."""
    runs = [(attempt, environment.get(field)) for attempt, environment in attempts]
    values = list(dict.fromkeys(value for _, value in runs if value))
    if len(values) <= 1:
        return latest
    named = []
    for value in values:
        ids = [str(i) for i, v in runs if v == value]
        named.append(f"{value} (attempt{'s' if len(ids) > 1 else ''} {', '.join(ids)})")
    return "; ".join(named)


def prepare_out(out: str | None, config_dict: dict, plan_id: str) -> Path:
    """Check --out before anything is written; an existing run resumes only if it plans the same work.

    Same work = the same evaluation keys (models, training settings, data, decoding, seeds,
    prompts). Scorers, measures and resources may change between invocations: what a new
    scorer or measure needs is computed for the finished settings too.
    """
    if out is None:
        return Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise XdetoxInputError(f"--out {out} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()):
        if not (path / grid.STORE_FILE).is_file():
            raise XdetoxInputError(f"--out {out} is a non-empty directory that is not an xdetox run")
        with Store(path / grid.STORE_FILE, readonly=True) as store:  # a damaged or foreign file is refused untouched
            previous_plan, previous = store.get_meta("plan_id"), store.get_meta("config")
        same = previous_plan == plan_id if previous_plan is not None else previous in (None, config_dict)
        if not same:
            raise XdetoxInputError(f"--out {out} holds a run with a different configuration; choose another --out")
    return path


PARTIAL_DIR = "partial"
"""Where ``xdetox report --partial`` writes, inside the run directory: never the run's own report files."""


def report_run(run_dir: str | Path, partial: bool = False) -> dict:
    """``xdetox report``: the completions file and report of a run directory, rebuilt from its store
    (opened read-only: checked, then read; never written). Returns the summary.

    ``partial``: an unfinished run's finished settings only, written to ``PARTIAL_DIR``."""
    run_dir = Path(run_dir)
    if not (run_dir / grid.STORE_FILE).is_file():
        raise XdetoxInputError(f"{run_dir} is not an xdetox run directory (no {grid.STORE_FILE})")
    with Store(run_dir / grid.STORE_FILE, readonly=True) as store:
        return write_outputs(run_dir, store, partial=partial)


def write_outputs(run_dir: Path, store: Store, partial: bool = False) -> dict:
    """Completions file + report from the store alone (so `xdetox report` gives the same).

    With ``partial`` (an unfinished run only): the report of the settings it has finished
    (``finished_part``), in ``run_dir / PARTIAL_DIR``, saying on its first lines what it lacks."""
    from xdetox import report

    config = store.get_meta("config")
    if config is None:  # killed before its first write: nothing to report
        raise XdetoxInputError(f"{run_dir} holds no run configuration yet; run the same command again to resume")
    env = store.get_meta("environment", {})
    missing = store.missing_work(store.get_meta("planned_evaluations", 0))
    if missing and not partial:
        raise XdetoxInputError(f"{run_dir} is not finished ({missing}); run the same command again to resume"
                               " (`xdetox report --partial` reports the settings it has finished)")
    if partial and not missing:
        raise XdetoxInputError(f"{run_dir} is finished: `xdetox report {run_dir}` writes its whole report")
    from xdetox.scorers.registry import scorer_validation
    from xdetox.text import is_silent

    scorers = RunScorers.of(config["scorers"])
    frame = completions_frame(store, scorers)
    written = ~frame["completion"].map(is_silent)  # silent completions are never scored
    scores = frame.drop(columns=["source", "percent", report.LM_COLUMN, report.LM_ZS_COLUMN])
    unscored = written & scores.isna().any(axis=1)
    measures, note, out_dir = store.measures_frame(), None, run_dir
    if partial:
        done, note = finished_part(store, frame, unscored, measures, missing)
        out_dir = run_dir / PARTIAL_DIR
    elif unscored.any():
        raise XdetoxInputError(f"{run_dir} is not finished (unscored completions); run it again to resume")
    training = training_rows(store)
    if partial:
        frame = frame[[k in done for k in _setting_keys(frame)]].reset_index(drop=True)
        measures = measures[[k in done for k in _setting_keys(measures)]].reset_index(drop=True)
        training = tuple(t for t in training if (t["model"], t["setting"], t["seed"]) in done)
    out_dir.mkdir(exist_ok=True)
    atomic_write(out_dir / grid.COMPLETIONS_FILE,
                 lambda p: frame.to_json(p, orient="records", lines=True, force_ascii=False))
    train = config["train"]
    attempts = attempt_environments(store)
    info = report.RunInfo(
        model=", ".join(ModelSpec(**m).display_name for m in config["models"]),
        scorer=scorers.primary,
        seeds=tuple(config["seeds"]),
        epochs=train["epochs"],
        limit=config["limit"],
        decode={**config["decode"], "generator": by_attempt(attempts, "generator", env.get("generator", "transformers")),
                "linear": by_attempt(attempts, "linear", env.get("linear", "F.linear"))},
        lora={**train["lora"], "learning_rate": train["learning_rate"], "batch_size": train["batch_size"],
              "objective": train["objective"], "sentences_per_sequence": train.get("sentences_per_sequence", 1)},
        text_normalisation=config.get("text_normalisation", "none"),
        versions=env.get("versions", {}),
        device=by_attempt(attempts, "device", env.get("device", "unknown")),
        **store.times(),  # wall_time_s (the latest attempt), total_time_s (all attempts), attempts
        started=store.get_meta("started", ""),
        config_name=config["name"],
        ppl_scorer=scorers.ppl,
        relevance_scorer=scorers.relevance,
        lang_scorer=scorers.lang,
        training=training,
        scorer_validation=scorer_validation(scorers.primary),
        partial=note,
        evaluated=evaluated(config),
    )
    return report.write_report(out_dir, frame, info, measures=measures)


def evaluated(config: dict) -> dict | None:
    """What an eval run measured (``RunInfo.evaluated``): the model, its adapter, and the baseline (its ZS) if any."""
    if config.get("evaluate") is None:
        return None
    from xdetox.given import GivenSpec

    given = GivenSpec.from_stored(config["evaluate"], "the run's stored config evaluate")
    baseline = ModelSpec(**config["models"][0]).display_name if "zs" in config["paradigms"] else None
    return {"model": given.model.display_name, "adapter": given.adapter, "adapter_sha256": given.adapter_sha256,
            "baseline": baseline}


@dataclass(frozen=True)
class RunScorers:
    """A run's scorers by what they measure: its toxicity scorers (the first is the primary one, the
    report's ``toxicity``) and at most one each of perplexity, language fidelity and relevance."""

    toxicity: tuple[str, ...]
    ppl: str | None = None
    lang: str | None = None
    relevance: str | None = None

    def __post_init__(self):
        if not self.toxicity:
            raise XdetoxInputError("the run has no toxicity scorer; add one to scorers")

    @classmethod
    def of(cls, names: list[str] | tuple[str, ...]) -> RunScorers:
        """The roles of ``names`` (a config's ``scorers``, in order), from the kind each scorer declares."""
        from xdetox.scorers.registry import scorer_kind

        kinds = {name: scorer_kind(name) for name in names}
        first = {kind: next((s for s, k in kinds.items() if k == kind), None) for kind in ("fluency", "language",
                                                                                           "relevance")}
        return cls(toxicity=tuple(s for s, kind in kinds.items() if kind == "toxicity"),
                   ppl=first["fluency"], lang=first["language"], relevance=first["relevance"])

    @property
    def primary(self) -> str:
        """The toxicity scorer every reduction is computed with."""
        return self.toxicity[0]


def completions_frame(store: Store, scorers: RunScorers) -> pd.DataFrame:
    """One row per completion of the store — model, setting, paradigm, source, percent, seed, target,
    split, prompt_id, sample, prompt, completion, n_tokens — with a column per scorer of the run:
    ``toxicity`` (the primary toxicity scorer), ``ppl``, ``lang_fidelity`` and ``relevance`` (when the run
    has those scorers), ``toxicity:<name>`` per other toxicity scorer, and the primary scorer's toxicity of
    the completion and of ZS's completion of the same prompt, both cut to the shorter one's length
    (``report.LM_COLUMN``, ``report.LM_ZS_COLUMN``). NaN where a scorer has not scored a completion (a
    silent one is never scored). These are the rows of ``completions.jsonl``."""
    from xdetox import report

    frame = store.completions_frame(scorers.primary)
    extras = [("ppl", scorers.ppl), ("lang_fidelity", scorers.lang), ("relevance", scorers.relevance)]
    extras += [(report.EXTRA_TOXICITY + name, name) for name in scorers.toxicity[1:]]
    extras += [(report.LM_COLUMN, scorers.primary + grid.LENGTH_MATCHED),
               (report.LM_ZS_COLUMN, scorers.primary + grid.LENGTH_MATCHED_ZS)]
    for column, scorer in extras:
        if scorer is not None:  # measures of the same completions, in the same row order
            frame[column] = store.completions_frame(scorer)["toxicity"].to_numpy()
    return frame


def _setting_keys(frame) -> list[tuple]:
    """(model, setting label, seed) of each row of a completions or measures frame."""
    return list(zip(frame["model"], frame["setting"], frame["seed"]))


def finished_part(store: Store, frame, unscored, measures, missing: str) -> tuple[set, str]:
    """(model, label, seed) of the settings an unfinished run has finished — every batch generated,
    every written completion scored by every scorer (``unscored``: the rows that are not), measured
    (when the run measures), their seed's ZS among them (reductions need it) — and a note naming
    them and what is missing."""
    evaluations = store.table("evaluations")
    complete = store.complete_evaluations(evaluations["key"].tolist())
    generated = set(evaluations["train_key"]) - set(evaluations.loc[~evaluations["key"].isin(complete), "train_key"])
    done = {(r.model, r.label, int(r.seed)) for r in store.table("train_settings").itertuples() if r.key in generated}
    measured = set(_setting_keys(measures))
    done -= {k for k, bad in zip(_setting_keys(frame), unscored) if bad}
    done = {k for k in done if not measured or k in measured}
    if (store.table("train_settings")["paradigm"] == "zs").any():  # reductions need their seed's ZS
        done = {k for k in done if (k[0], "zs", k[2]) in done}
    if not done:
        raise XdetoxInputError("the run has finished no setting yet (with its seed's ZS, if it has one): nothing to"
                               " report")
    in_order = sorted(done, key=lambda k: (k[2], k[0], k[1] != "zs", k[1]))  # per seed and model, ZS first
    names = ", ".join(f"{label} (seed {seed})" for _, label, seed in in_order)
    note = (f"Partial report of an unfinished run ({missing}): {len(done)} of its training settings are finished "
            f"and reported here: {names}. Every other setting is absent from the tables, figures and analyses.")
    return done, note


def training_rows(store: Store) -> tuple[dict, ...]:
    """Per training setting of the store: model, label and seed; for a tuned one, its recipe
    (``RECIPE_KEYS``) and whether its loss covers the end token."""
    rows = []
    for row in store.table("train_settings").itertuples():
        entry = {"model": row.model, "setting": row.label, "seed": int(row.seed)}
        if row.paradigm == "eval":  # given, not trained
            entry["evaluated"] = json.loads(row.spec)["given"]
        elif row.paradigm != "zs":
            spec = json.loads(row.spec)
            entry |= {key: spec.get(key, 1 if key == "sentences_per_sequence" else None) for key in RECIPE_KEYS}
            entry["end_token_trained"] = end_token_trained(row.paradigm, spec.get("objective", "neutral-lm"))
        rows.append(entry)
    return tuple(rows)
