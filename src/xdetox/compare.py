"""Two or more finished runs side by side: ``compare_runs(paths)`` and ``xdetox compare RUN RUN [...]``.

The runs' cells (model, paradigm, source, percent, target, split) are matched by that key. Per run: its
``reduction_abs``, ``ci95`` (low, high), ``q_value`` and ``mean_toxicity``, under columns
``<label>.<field>``, a label per run directory (its name; ``parent/name`` or ``name#i`` where names
collide). Per run after the first, the difference of the cell's reduction from the first run's
(``<label>.diff`` = reduction of that run − reduction of the first run: positive, that run detoxifies more):

* where the two runs share ZS (per seed of the cell, the same ZS completions of the same prompts, scored
  alike: the same ZS evaluation of (model, seed, target, split)), ``diff`` is the paired estimate
  ``seed_level_test`` gives on d = toxicity in the first run − toxicity in the other run, per seed and
  prompt (a prompt's value is its mean over samples) over the prompts ZS and both settings wrote text for,
  with its 95 % interval and p-value (``diff_ci95_low``/``_high``, ``diff_p_value``): the same model,
  and the same meaning, as a cell's ``ci95`` against ZS. Since ZS is shared it equals the difference of
  the two reductions, unless silence drops other prompts in the two runs (``diff_note`` then says so);
* elsewhere ``diff`` is the plain difference of the two reductions, with no interval, and ``diff_note``
  says why (other seeds, other ZS completions, no ZS, the cell is in one run only).

Runs are refused (one ``XdetoxInputError`` line, nothing written) when fewer than two are given, one is
given twice (a list is a set), one cannot be opened (missing, not a run, unfinished), or two of them score with another toxicity scorer
(another primary scorer name, or another model behind it: the store's ``scorer_identity:<name>``) or
hold other prompts for a target and split (other prompt ids, or other prompt texts: another
``text_normalisation`` or template). Torch-free: it reads stores and summaries only.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from xdetox.errors import XdetoxInputError, refuse_repeats
from xdetox.report.formatting import fmt_ci, fmt_p, fmt_value
from xdetox.report.results import ONE_PROMPT
from xdetox.report.values import DIGITS

KEY = ("model", "paradigm", "source", "percent", "target", "split")
"""What matches a cell across runs."""
PER_RUN = ("reduction_abs", "ci95_low", "ci95_high", "q_value", "mean_toxicity")
"""The fields of each run's cell in the table, as ``<label>.<field>``."""
PER_DIFF = ("diff", "diff_ci95_low", "diff_ci95_high", "diff_p_value", "diff_ci_unit", "diff_note")
"""The fields of each run's difference from the first run, as ``<label>.<field>`` (not for the first run)."""
SUMMARY_ROUNDING = 2 * 10.0 ** -DIGITS
"""How far the difference of two summary.json reductions (each rounded to DIGITS) may lie from the exact one."""


@dataclass(frozen=True)
class CompareResult:
    """The runs' cells side by side.

    ``labels`` name the runs (the first is the one every difference is taken from), ``paths`` their
    directories, ``table`` one row per cell: the ``KEY`` columns, then ``<label>.<field>`` per run for
    ``PER_RUN``, then per run after the first ``<label>.<field>`` for ``PER_DIFF``. ``notes``: the
    distinct ``diff_note`` texts (why a difference has no interval, or how a paired one was taken), in order."""

    labels: tuple[str, ...]
    paths: tuple[Path, ...]
    table: pd.DataFrame
    notes: tuple[str, ...]

    def to_csv(self) -> str:
        """The whole ``table`` as CSV (a header row, one line per cell)."""
        return self.table.to_csv(index=False)

    def display(self) -> tuple[list[str], list[list[str]], list[str]]:
        """(header, rows, notes) of the human table: per cell target, setting (and model and split where the
        runs hold several), per run its reduction, 95 % CI, q and toxicity, per later run its difference
        from the first run with CI and p; a difference without CI carries ``[i]``, the i-th note."""
        t = self.table
        keys = [k for k in ("model", "split") if t[k].nunique() > 1] + ["target", "setting"]
        header = list(keys)
        for label in self.labels:
            header += [f"{label} reduction", "95% CI", "q", "toxicity"]
        for label in self.labels[1:]:
            header += [f"{label} − {self.labels[0]}", "95% CI", "p"]
        rows = []
        for row in t.to_dict("records"):
            cells = [setting_name(row) if k == "setting" else str(row[k]) for k in keys]
            value = {name: plain(v) for name, v in row.items()}  # NaN and NA as None, as the formatters take it
            for label in self.labels:
                cells += [fmt_value(value[f"{label}.reduction_abs"], signed=True),
                          fmt_ci(interval(value, f"{label}.ci95")),
                          fmt_p(value[f"{label}.q_value"]), fmt_value(value[f"{label}.mean_toxicity"])]
            for label in self.labels[1:]:
                note = row[f"{label}.diff_note"]
                mark = f" [{self.notes.index(note) + 1}]" if note in self.notes else ""
                cells += [fmt_value(value[f"{label}.diff"], signed=True) + mark,
                          fmt_ci(interval(value, f"{label}.diff_ci95"))
                          + (" (prompts)" if row[f"{label}.diff_ci_unit"] == "prompts" else ""),
                          fmt_p(value[f"{label}.diff_p_value"])]
            rows.append(cells)
        notes = [f"[{i}] {note}" for i, note in enumerate(self.notes, 1)]
        return header, rows, notes

    def to_text(self) -> str:
        """The terminal table (aligned like ``xdetox.report.print_table``), then what the columns mean."""
        header, rows, notes = self.display()
        table = [header, *rows]
        widths = [max(len(r[i]) for r in table) for i in range(len(header))]
        table.insert(1, ["-" * w for w in widths])
        lines = ["runs: " + ", ".join(f"{label} = {path}" for label, path in zip(self.labels, self.paths))]
        left = header.index("setting") + 1  # the key columns, left-aligned; the numbers right-aligned
        lines += ["  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                  .rstrip() for r in table]
        return "\n".join(lines + [self.legend()] + notes)

    def to_markdown(self) -> str:
        """The human table as a Markdown table (a header row), then the legend and the notes as a list."""
        header, rows, notes = self.display()
        esc = [[c.replace("|", "\\|") for c in r] for r in (header, *rows)]
        lines = ["| " + " | ".join(esc[0]) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in esc[1:]]
        runs = ", ".join(f"`{label}` = `{path}`" for label, path in zip(self.labels, self.paths))
        return "\n".join(lines + ["", f"Runs: {runs}.", "", self.legend()] + [f"* {n}" for n in notes]) + "\n"

    def legend(self) -> str:
        """One line saying what the difference columns hold."""
        return (f"'<run> − {self.labels[0]}': that run's reduction minus {self.labels[0]}'s (positive: less toxic);"
                " its 95% CI and p are seed_level_test's on the per-seed, per-prompt toxicity differences,"
                " given only where the two runs share ZS; '(prompts)': one seed, sampling variance only.")


def compare_runs(paths: Sequence[str | os.PathLike]) -> CompareResult:
    """Open the finished runs at ``paths`` (``xdetox.open_run``), check that they can be compared (the same
    toxicity scorer, the same prompts per target and split) and set their cells side by side; see the
    module's docstring. Every reason they cannot be compared is one ``XdetoxInputError`` line."""
    from xdetox.api import open_run

    if isinstance(paths, (str, os.PathLike)) or len(paths) < 2:
        given = 1 if isinstance(paths, (str, os.PathLike)) else len(paths)
        raise XdetoxInputError(f"compare needs at least 2 run directories, got {given}")
    refuse_repeats("the runs to compare", [os.path.realpath(p) for p in paths])  # a list is a set
    runs = [open_run(p) for p in paths]
    labels = run_labels([r.path for r in runs])
    check_scorers(runs, labels)
    completions = [r.completions() for r in runs]
    check_prompts(runs, labels, completions)
    table, notes = side_by_side(runs, labels, completions)
    return CompareResult(tuple(labels), tuple(r.path for r in runs), table, tuple(notes))


def run_labels(paths: Sequence[Path]) -> list[str]:
    """Each run directory's name; where names collide, ``parent/name``, and where those collide, ``name#i``
    (its place among the runs, from 1)."""
    full = [Path(os.path.abspath(p)) for p in paths]
    labels = [p.name or str(p) for p in full]
    clash = Counter(labels)
    labels = [f"{p.parent.name}/{p.name}" if clash[label] > 1 else label for p, label in zip(full, labels)]
    clash = Counter(labels)
    return [f"{label}#{i}" if clash[label] > 1 else label for i, label in enumerate(labels, 1)]


def check_scorers(runs, labels: Sequence[str]) -> None:
    """Refuse runs whose primary toxicity scorer differs from the first run's, by name or by the model
    recorded behind the name (the store's ``scorer_identity:<name>``, as ``check_scorer_identity`` writes it)."""
    first = runs[0].summary.get("scorer")
    first_identity = recorded_identity(runs[0], first)
    for run, label in zip(runs[1:], labels[1:]):
        name = run.summary.get("scorer")
        if name != first:
            raise XdetoxInputError(f"cannot compare {labels[0]} and {label}: they score toxicity with different"
                                   f" scorers ({first} vs {name}); compare runs of one scorer")
        identity = recorded_identity(run, name)
        if identity != first_identity:
            raise XdetoxInputError(
                f"cannot compare {labels[0]} and {label}: their toxicity scorer {name} is a different model"
                f" in each ({first_identity or 'unrecorded'} vs {identity or 'unrecorded'}); score them with one")


def recorded_identity(run, name: str | None) -> str | None:
    """The model identity a run's store records for scorer ``name`` (None: not recorded)."""
    from xdetox.grid import STORE_FILE
    from xdetox.store import Store

    with Store(run.path / STORE_FILE, readonly=True) as store:
        return store.get_meta(f"scorer_identity:{name}")


def prompts_of(completions: pd.DataFrame) -> dict[tuple[str, str], dict[str, str]]:
    """(target, split) -> {prompt id: prompt text} of a run's completions."""
    rows = completions.drop_duplicates(["target", "split", "prompt_id"])
    out: dict[tuple[str, str], dict[str, str]] = {}
    for target, split, pid, prompt in zip(rows["target"], rows["split"], rows["prompt_id"], rows["prompt"]):
        out.setdefault((target, split), {})[pid] = prompt
    return out


def check_prompts(runs, labels: Sequence[str], completions: Sequence[pd.DataFrame]) -> None:
    """Refuse two runs that hold other prompts for a target and split both have: other prompt ids
    (another ``--limit``, another data file) or other texts (another ``text_normalisation``, template)."""
    prompts = [prompts_of(frame) for frame in completions]
    for i, j in ((i, j) for j in range(len(runs)) for i in range(j)):
        for (target, split), theirs in prompts[j].items():
            ours = prompts[i].get((target, split))
            if ours is None or ours == theirs:
                continue
            if set(ours) != set(theirs):
                only = len(set(ours) ^ set(theirs))
                what = f"other prompt ids ({len(ours)} vs {len(theirs)} prompts, {only} in one run only)"
            else:
                changed = sorted(pid for pid in ours if ours[pid] != theirs[pid])
                what = f"other prompt texts for {len(changed)} of {len(ours)} prompt ids (e.g. {changed[0]})"
            norms = [runs[k].config.text_normalisation for k in (i, j)]
            why = f"; text_normalisation {norms[0]} vs {norms[1]}" if norms[0] != norms[1] else ""
            raise XdetoxInputError(f"cannot compare {labels[i]} and {labels[j]}: different prompts for"
                                   f" {target}/{split}: {what}{why}")


def plain(value):
    """A frame's missing value (NaN, None, NA) as None, else the value."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    return value


def interval(values: dict, name: str) -> tuple[float, float] | None:
    """``(values[name_low], values[name_high])``, or None where either is missing."""
    low, high = values[f"{name}_low"], values[f"{name}_high"]
    return None if low is None or high is None else (low, high)


def norm_key(values: Sequence) -> tuple:
    """A cell's or an evaluation's key from frame values: missing as None, the percent (4th) an int."""
    key = [plain(v) for v in values]
    key[3] = None if key[3] is None else int(key[3])
    return tuple(key)


def cell_key(row: dict) -> tuple:
    return norm_key([row[k] for k in KEY])


def setting_name(row: dict) -> str:
    """"ZS", "X-FT from en", "P-FT 10%", ... of a table row (``xdetox.report.Setting.name``)."""
    from xdetox.report.results import Setting

    _, paradigm, source, percent, *_ = norm_key([row[k] for k in KEY])
    return Setting(paradigm, source, percent).name


def groups_of(completions: pd.DataFrame) -> dict[tuple, pd.DataFrame]:
    """(model, paradigm, source, percent, target, split, seed) -> that evaluation's completions."""
    cols = ["model", "paradigm", "source", "percent", "target", "split", "seed"]
    return {norm_key(key): group for key, group in completions.groupby(cols, sort=False, dropna=False)}


def zs_difference(zs_a: pd.DataFrame | None, zs_b: pd.DataFrame | None, seed: int,
                  labels: tuple[str, str]) -> str | None:
    """Why two runs' ZS completions of one (model, seed, target, split) are not one ZS evaluation (other
    prompts or samples, other texts, other scores); None when they are."""
    if zs_a is None or zs_b is None:
        return f"{labels[0] if zs_a is None else labels[1]} has no ZS of seed {seed}"
    a, b = (z.set_index(["prompt_id", "sample"]).sort_index() for z in (zs_a, zs_b))
    if not a.index.equals(b.index):
        return f"their ZS of seed {seed} completed other prompts"
    if not a["completion"].equals(b["completion"]):
        return f"their ZS completions of seed {seed} differ"
    if not a["toxicity"].equals(b["toxicity"]):
        return f"their ZS completions of seed {seed} are the same texts, scored differently"
    return None


def paired_difference(cell: tuple, seeds: Sequence[int], groups_a: dict, groups_b: dict, labels: tuple[str, str]):
    """``seed_level_test`` on d = toxicity in run A − toxicity in run B per seed and prompt (sample means),
    over the prompts where ZS and both settings wrote text; (test, None) or (None, why there is no test)."""
    from xdetox.report.stats import seed_level_test

    model, _, _, _, target, split = cell
    diffs = {}
    for seed in seeds:
        zs_key = (model, "zs", None, None, target, split, seed)
        why = zs_difference(groups_a.get(zs_key), groups_b.get(zs_key), seed, labels)
        if why:
            return None, f"ZS not shared with {labels[0]}: {why}"
        zs = groups_a[zs_key].groupby("prompt_id")["toxicity"].mean().dropna()
        a, b = (g[(*cell, seed)].groupby("prompt_id")["toxicity"].mean().dropna() for g in (groups_a, groups_b))
        common = zs.index.intersection(a.index).intersection(b.index)
        if len(common):
            diffs[seed] = (a[common] - b[common]).to_dict()
    if not diffs:
        return None, "no prompt where ZS and both settings wrote text"
    return seed_level_test(diffs), None


def difference(cell: tuple, ours: dict | None, first: dict | None, groups_a: dict, groups_b: dict, label: str,
               first_label: str) -> dict:
    """The ``PER_DIFF`` fields of one cell: this run's reduction minus the first run's, paired where ZS is shared."""
    out = dict.fromkeys(PER_DIFF)
    if ours is None or first is None:
        out["diff_note"] = f"the cell is in {first_label if ours is None else label} only"
        return out
    if cell[1] == "zs":
        return out
    r_a, r_b = plain(first["reduction_abs"]), plain(ours["reduction_abs"])
    if r_a is None or r_b is None:
        out["diff_note"] = f"no reduction in {first_label if r_a is None else label} (no ZS to compare with)"
        return out
    plain_diff = r_b - r_a
    seeds_a, seeds_b = tuple(first["seeds"]), tuple(ours["seeds"])
    if seeds_a != seeds_b:
        test, why = None, (f"ZS not shared with {first_label}: other seeds ({', '.join(map(str, seeds_a))} vs"
                           f" {', '.join(map(str, seeds_b))})")
    else:
        test, why = paired_difference(cell, seeds_a, groups_a, groups_b, (first_label, label))
    if test is None:
        out["diff"], out["diff_note"] = plain_diff, f"no CI: {why}"
        return out
    if test.n < 2:  # as a cell's ci95: not an interval of width 0
        out["diff"], out["diff_note"] = test.reduction, f"no CI: {ONE_PROMPT}"
        return out
    out |= {"diff": test.reduction, "diff_ci95_low": test.ci_low, "diff_ci95_high": test.ci_high,
            "diff_p_value": test.p_value, "diff_ci_unit": test.unit}
    if not math.isclose(test.reduction, plain_diff, abs_tol=SUMMARY_ROUNDING):
        out["diff_note"] = (f"paired over the prompts ZS and both settings wrote text for; the difference of the two"
                            f" reductions, each over its own prompts, is {plain_diff:+.3f}")
    return out


def side_by_side(runs, labels: Sequence[str], completions: Sequence[pd.DataFrame]) -> tuple[pd.DataFrame, list[str]]:
    """The ``CompareResult.table`` of the runs and its notes (the distinct reasons, in order)."""
    cells: dict[tuple, list[dict | None]] = {}
    for i, run in enumerate(runs):
        for row in run.settings().to_dict("records"):
            cells.setdefault(cell_key(row), [None] * len(runs))[i] = row
    groups = [groups_of(c) for c in completions]
    records, notes = [], []
    for cell, rows in cells.items():
        record = dict(zip(KEY, cell))
        for label, row in zip(labels, rows):
            record |= {f"{label}.{f}": None if row is None else plain(row.get(f)) for f in PER_RUN}
        for i in range(1, len(runs)):
            diff = difference(cell, rows[i], rows[0], groups[0], groups[i], labels[i], labels[0])
            record |= {f"{labels[i]}.{f}": v for f, v in diff.items()}
            if diff["diff_note"] and diff["diff_note"] not in notes:
                notes.append(diff["diff_note"])
        records.append(record)
    columns = [*KEY, *(f"{label}.{f}" for label in labels for f in PER_RUN),
               *(f"{label}.{f}" for label in labels[1:] for f in PER_DIFF)]
    table = pd.DataFrame.from_records(records, columns=columns)
    numeric = [c for c in columns[len(KEY):] if not c.endswith(("_unit", "_note"))]
    return table.astype(dict.fromkeys(numeric, float)), notes  # a missing number is NaN, in every column
