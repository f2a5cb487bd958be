"""From scored completions to result files: pure functions, no model code.

Input is one DataFrame row per completion with the columns ``setting`` (e.g.
``"zs"``, ``"x-ft:en"``), ``paradigm`` (``"zs"``, ``"x-ft"``; later ``"p-ft"``,
``"m-ft"``, ``"dpo"``), ``source`` (training language, None for zs),
``target``, ``split``, ``prompt_id``, ``sample`` (optional, default 0),
``prompt``, ``completion`` and ``toxicity`` (float in [0, 1]).

``write_report`` writes ``matrix_reduction.csv``, ``heatmap_reduction.png``,
``report.md`` and, last and atomically, ``summary.json``: its presence marks a
finished run.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from xdetox.data import LANG_NAMES, LANGS, PROMPT_SETS
from xdetox.errors import XdetoxInputError

# Known paradigms in report order; an unknown one sorts after these, by name.
PARADIGMS: tuple[str, ...] = ("zs", "x-ft", "p-ft", "m-ft", "dpo")
PARADIGM_LABELS: dict[str, str] = {
    "zs": "ZS", "x-ft": "X-FT", "p-ft": "P-FT", "m-ft": "M-FT", "dpo": "DPO",
}
REQUIRED_COLUMNS: tuple[str, ...] = (
    "setting", "paradigm", "source", "target", "split",
    "prompt_id", "prompt", "completion", "toxicity",
)
MATRIX_CSV = "matrix_reduction.csv"
HEATMAP_PNG = "heatmap_reduction.png"
REPORT_MD = "report.md"
SUMMARY_JSON = "summary.json"
EXAMPLES_PER_TARGET = 3
EXAMPLE_MAX_CHARS = 300
DIGITS = 6


@dataclass(frozen=True)
class RunInfo:
    """What produced a set of completions; stored verbatim in ``summary["run"]``."""

    model: str
    scorer: str
    seed: int
    epochs: int
    limit: int | None
    decode: dict = field(default_factory=dict)  # temperature, top_p, max_new_tokens, template
    lora: dict = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    device: str = "cpu"
    wall_time_s: float | None = None
    started: str = field(
        default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds")
    )

    def to_dict(self) -> dict:
        """A JSON-serialisable deep copy (numpy scalars -> Python, NaN -> None)."""
        return _jsonable(asdict(self))


# --------------------------------------------------------------------------- summary


def summarize(completions: pd.DataFrame, info: RunInfo) -> dict:
    """Per (setting, target, split): n prompts, mean toxicity and reduction vs ZS.

    ``reduction_abs`` = ZS mean − setting mean, both over the completions of the
    prompts the two have in common; ``reduction_rel`` = reduction_abs / that ZS
    mean. Both are None for ZS itself, without a ZS for the target/split, with
    no common prompt, and (rel only) when that ZS mean is 0.
    """
    frame = _prepare(completions)
    groups = {
        key: group
        for key, group in frame.groupby(["paradigm", "_src", "target", "split"], sort=False)
    }
    settings = []
    for key in sorted(groups, key=_setting_key):
        paradigm, src, target, split = key
        group = groups[key]
        zs = groups.get(("zs", "", target, split))
        red_abs = red_rel = None
        if paradigm != "zs" and zs is not None:
            common = set(group["prompt_id"]) & set(zs["prompt_id"])
            if common:
                zs_mean = float(zs.loc[zs["prompt_id"].isin(common), "toxicity"].mean())
                ft_mean = float(group.loc[group["prompt_id"].isin(common), "toxicity"].mean())
                red_abs = zs_mean - ft_mean
                red_rel = red_abs / zs_mean if zs_mean > 0 else None
        settings.append({
            "paradigm": paradigm,
            "source": src or None,
            "target": target,
            "split": split,
            "n": int(group["prompt_id"].nunique()),
            "mean_toxicity": _round(group["toxicity"].mean()),
            "reduction_abs": _round(red_abs),
            "reduction_rel": _round(red_rel),
        })
    return _jsonable({
        "model": info.model,
        "scorer": info.scorer,
        "seed": info.seed,
        "run": info.to_dict(),
        "settings": settings,
    })


def reduction_matrix(
    summary: dict, paradigm: str = "x-ft", split: str = "test_toxic"
) -> pd.DataFrame:
    """reduction_abs as a source × target table (targets in LANGS order, NaN = none)."""
    rows = [
        s for s in summary["settings"] if s["paradigm"] == paradigm and s["split"] == split
    ]
    sources = sorted({_source_label(s) for s in rows}, key=_lang_rank)
    targets = sorted({s["target"] for s in rows}, key=_lang_rank)
    matrix = pd.DataFrame(float("nan"), index=sources, columns=targets, dtype=float)
    for s in rows:
        value = s["reduction_abs"]
        matrix.loc[_source_label(s), s["target"]] = float("nan") if value is None else value
    matrix.index.name = "source"
    matrix.columns.name = "target"
    return matrix


def print_table(summary: dict) -> str:
    """A compact plain-text table (one row per target and fine-tuned setting)."""
    header = ("target", "n", "ZS", "setting", "tox", "red_abs", "red_rel")
    out: list[str] = []
    for split in _splits(summary):
        rows: list[tuple[str, ...]] = []
        for target, zs, others in _by_target(summary, split):
            n = str(zs["n"]) if zs else str(max(s["n"] for s in others))
            zs_tox = _fmt(zs["mean_toxicity"]) if zs else "-"
            if not others:
                rows.append((target, n, zs_tox, "-", "-", "-", "-"))
            for s in others:
                rows.append((
                    target, n, zs_tox, _setting_name(s), _fmt(s["mean_toxicity"]),
                    _fmt(s["reduction_abs"], signed=True), _pct(s["reduction_rel"]),
                ))
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        line = lambda r: "  ".join(  # noqa: E731
            c.ljust(w) if i in (0, 3) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))
        ).rstrip()
        if out:
            out.append("")
        out.append(f"split: {split}  (model {summary['model']}, scorer {summary['scorer']}, "
                   f"seed {summary['seed']})")
        out.append(line(header))
        out.append(line(tuple("-" * w for w in widths)))
        out.extend(line(r) for r in rows)
    if not out:
        return "(no results)"
    return "\n".join(out)


# --------------------------------------------------------------------------- files


def write_report(
    run_dir: Path, completions: pd.DataFrame, info: RunInfo, split: str | None = None
) -> dict:
    """Write the matrix CSV, heatmap PNG, report.md and finally summary.json.

    ``split`` picks the prompt set of the matrix/heatmap/examples; by default
    ``test_toxic`` when present, else the first split the results have.
    Any existing summary.json is removed first, so a partly rewritten run
    directory never looks finished. Returns the summary.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(completions, info)
    (run_dir / SUMMARY_JSON).unlink(missing_ok=True)
    splits = _splits(summary)
    if split is None:
        split = "test_toxic" if "test_toxic" in splits or not splits else splits[0]
    matrix = reduction_matrix(summary, "x-ft", split)

    _atomic_write(run_dir / MATRIX_CSV, lambda p: matrix.to_csv(p, index_label="source"))
    _atomic_write(run_dir / HEATMAP_PNG, lambda p: _heatmap(matrix, summary, split, p))
    markdown = _markdown(summary, _prepare(completions), split)
    _atomic_write(run_dir / REPORT_MD, lambda p: p.write_text(markdown, encoding="utf-8"))
    text = json.dumps(summary, ensure_ascii=False, indent=2, allow_nan=False) + "\n"
    _atomic_write(run_dir / SUMMARY_JSON, lambda p: p.write_text(text, encoding="utf-8"))
    return summary


def _atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """Call ``write`` on a temp file next to ``path``, fsync it, then os.replace."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _heatmap(matrix: pd.DataFrame, summary: dict, split: str, path: Path) -> None:
    # Figure + Agg canvas directly: no pyplot, no change to the global backend.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    import seaborn as sns

    rows, cols = matrix.shape
    fig = Figure(figsize=(max(6.0, 1.0 + 0.9 * cols), max(3.2, 1.6 + 0.6 * rows)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    title = (
        f"Toxicity reduction ZS − X-FT ({split})\n"
        f"model {summary['model']} · scorer {summary['scorer']}\n"
        f"{_n_phrase(summary, split, short=True)} · seed {summary['seed']}"
    )
    if matrix.notna().to_numpy().any():
        limit = float(matrix.abs().max().max()) or 1.0
        with warnings.catch_warnings():  # seaborn 0.13 + matplotlib 3.11: set_bad notice
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            sns.heatmap(
                matrix, ax=ax, cmap="RdBu", center=0.0, vmin=-limit, vmax=limit,
                annot=True, fmt=".3f", linewidths=0.5, linecolor="white",
                cbar_kws={"label": "reduction_abs (positive = less toxic)"},
            )
        ax.set_xlabel("target (evaluated on)")
        ax.set_ylabel("source (fine-tuned on)")
        ax.tick_params(axis="y", rotation=0)
    else:
        ax.axis("off")
        ax.text(0.5, 0.5, "no X-FT results to compare with ZS", ha="center", va="center")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=120, bbox_inches="tight")


def _markdown(summary: dict, frame: pd.DataFrame, split: str) -> str:
    run = summary["run"]
    esc = md_escape
    decode = run.get("decode") or {}
    lora = run.get("lora") or {}
    lines = [f"# xdetox report: {esc(summary['model'])}", ""]
    wall = run.get("wall_time_s")
    lines += [
        f"Started {esc(run.get('started', ''))} on {esc(run.get('device', ''))}"
        + (f", wall time {wall:.1f} s." if isinstance(wall, (int, float)) else "."),
        "",
        "## How these numbers were computed",
        "",
        f"The model **{esc(summary['model'])}** completed {_n_phrase(summary, split)} "
        f"of the {esc(split)} prompt set ({_samples_phrase(frame)}, seed "
        f"{esc(summary['seed'])}, prompt limit {esc(run.get('limit') or 'none')}). "
        f"Decoding: {_kv(decode)}. Each completion was scored by **{esc(summary['scorer'])}** "
        "(toxicity in [0, 1]); the mean toxicity of a setting is the mean over all its "
        "completions. ZS is the base model zero-shot; X-FT from *s* is the model "
        f"LoRA fine-tuned ({_kv(lora)}) for {esc(run.get('epochs'))} epoch(s) on "
        "neutral rewrites in source language *s* and evaluated on every target language. "
        "**reduction_abs** = ZS mean toxicity − fine-tuned mean toxicity, both computed "
        "over the same prompts (those the two settings have in common); positive means "
        "less toxic after fine-tuning. **reduction_rel** = reduction_abs / the ZS mean "
        "toxicity on those prompts (empty when that mean is 0 or there is no ZS).",
        "",
    ]
    if run.get("versions"):
        lines += [f"Versions: {_kv(run['versions'])}.", ""]
    lines += [
        f"## Reduction matrix ({esc(split)})",
        "",
        f"![Toxicity reduction heatmap, source × target]({HEATMAP_PNG})",
        "",
        f"The values are in [{MATRIX_CSV}]({MATRIX_CSV}); all numbers in "
        f"[{SUMMARY_JSON}]({SUMMARY_JSON}).",
        "",
        "## Results per target",
        "",
    ]
    for sp in _splits(summary):
        for target, zs, others in _by_target(summary, sp):
            lines += [f"### {esc(_lang_title(target))}, {esc(sp)}", ""]
            lines += [
                "| setting | n | mean toxicity | reduction (abs) | reduction (rel) |",
                "|---|---:|---:|---:|---:|",
            ]
            for s in ([zs] if zs else []) + others:
                lines.append(
                    f"| {esc(_setting_name(s))} | {s['n']} | {_fmt(s['mean_toxicity'])} | "
                    f"{_fmt(s['reduction_abs'], signed=True)} | {_pct(s['reduction_rel'])} |"
                )
            lines.append("")
    lines += _examples(summary, frame, split)
    return "\n".join(lines).rstrip() + "\n"


def _examples(summary: dict, frame: pd.DataFrame, split: str) -> list[str]:
    """Up to EXAMPLES_PER_TARGET prompts per target (most toxic under ZS first)."""
    esc = md_escape
    frame = frame[frame["split"] == split]
    if frame.empty:
        return []
    lines = [
        "## Example completions",
        "",
        "Model outputs are shown as untrusted text (escaped, cut to "
        f"{EXAMPLE_MAX_CHARS} characters); sample with the lowest index per prompt.",
        "",
    ]
    for target, _zs, _others in _by_target(summary, split):
        sub = frame[frame["target"] == target]
        first = sub.sort_values("sample", kind="stable").drop_duplicates(
            ["paradigm", "_src", "prompt_id"]
        )
        keys = sorted({(p, s) for p, s in zip(first["paradigm"], first["_src"])},
                      key=lambda k: _setting_key((k[0], k[1], "", "")))
        anchor = first[(first["paradigm"] == keys[0][0]) & (first["_src"] == keys[0][1])]
        if len(keys) > 1:  # prefer prompts that some other setting also has
            shared = anchor["prompt_id"].isin(first.loc[
                (first["paradigm"] != keys[0][0]) | (first["_src"] != keys[0][1]), "prompt_id"
            ])
            anchor = anchor[shared] if shared.any() else anchor
        anchor = anchor.sort_values(["toxicity", "prompt_id"], ascending=[False, True])
        chosen = list(anchor["prompt_id"][:EXAMPLES_PER_TARGET])
        lines += [f"### {esc(_lang_title(target))}", ""]
        for pid in chosen:
            rows = first[first["prompt_id"] == pid]
            lines += [
                f"**Prompt {esc(pid)}:** {esc(_cut(rows['prompt'].iloc[0]))}",
                "",
                "| setting | toxicity | completion |",
                "|---|---:|---|",
            ]
            for paradigm, src in keys:
                hit = rows[(rows["paradigm"] == paradigm) & (rows["_src"] == src)]
                if hit.empty:
                    continue
                row = hit.iloc[0]
                name = _setting_name({"paradigm": paradigm, "source": src or None})
                lines.append(
                    f"| {esc(name)} | {_fmt(float(row['toxicity']))} | "
                    f"{esc(_cut(row['completion']))} |"
                )
            lines.append("")
    return lines


# --------------------------------------------------------------------------- escaping

_MD_ESCAPES = {
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "|": "&#124;", "`": "&#96;",
    "\\": "&#92;", "*": "&#42;", "_": "&#95;", "[": "&#91;", "]": "&#93;", "!": "&#33;",
    "#": "&#35;", "~": "&#126;", "$": "&#36;",
}


def md_escape(value: Any) -> str:
    """Make untrusted text inert inside Markdown (also inside a table cell).

    HTML (``< > & "``), table pipes, code backticks and link/emphasis/heading
    characters become HTML character references; line breaks become ``<br>``.
    """
    text = "" if value is None else str(value)
    text = "".join(_MD_ESCAPES.get(ch, ch) for ch in text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.replace("\n", "<br>").replace("\t", " ")


# --------------------------------------------------------------------------- helpers


def _prepare(completions: pd.DataFrame) -> pd.DataFrame:
    """Validate and normalise a completions frame (adds ``_src``: source or "")."""
    missing = [c for c in REQUIRED_COLUMNS if c not in completions.columns]
    if missing:
        raise XdetoxInputError(f"completions: missing column(s) {', '.join(missing)}")
    frame = completions.copy()
    if "sample" not in frame.columns:
        frame["sample"] = 0
    for col in ("setting", "paradigm", "target", "split", "prompt_id"):
        frame[col] = frame[col].astype(str)
    frame["_src"] = [_none_if_missing(v) or "" for v in frame["source"]]
    frame["source"] = [s or None for s in frame["_src"]]
    frame["sample"] = pd.to_numeric(frame["sample"], errors="coerce").fillna(0).astype(int)
    tox = pd.to_numeric(frame["toxicity"], errors="coerce")
    bad = ~(tox.between(-1e-9, 1 + 1e-9))
    if bad.any():
        row = frame.index[bad][0]
        raise XdetoxInputError(
            f"completions: toxicity must be a number in [0, 1], got "
            f"{frame.loc[row, 'toxicity']!r} (setting {frame.loc[row, 'setting']}, "
            f"prompt {frame.loc[row, 'prompt_id']})"
        )
    frame["toxicity"] = tox.astype(float)
    zs_src = frame[(frame["paradigm"] == "zs") & (frame["_src"] != "")]
    if len(zs_src):
        raise XdetoxInputError(
            f"completions: zs rows must have no source, got {zs_src['_src'].iloc[0]!r}"
        )
    names = frame.groupby(["paradigm", "_src"])["setting"].unique()
    for (paradigm, src), values in names.items():
        if len(values) > 1:
            raise XdetoxInputError(
                f"completions: settings {', '.join(sorted(values))} share paradigm "
                f"{paradigm!r} and source {src or None!r}; the summary cannot tell them apart"
            )
    dup = frame.duplicated(["paradigm", "_src", "target", "split", "prompt_id", "sample"])
    if dup.any():
        row = frame[dup].iloc[0]
        raise XdetoxInputError(
            f"completions: duplicate row for setting {row['setting']}, target {row['target']}, "
            f"split {row['split']}, prompt {row['prompt_id']}, sample {row['sample']}"
        )
    return frame


def _none_if_missing(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    text = str(value).strip()
    return text or None


def _rank(value: str, order: tuple[str, ...]) -> tuple[int, str]:
    return (order.index(value), "") if value in order else (len(order), str(value))


def _lang_rank(value: str) -> tuple[int, str]:
    return _rank(value, LANGS)


def _setting_key(key: tuple[str, str, str, str]) -> tuple:
    paradigm, src, target, split = key
    src_rank = (-1, "") if not src else _lang_rank(src)
    return (_rank(paradigm, PARADIGMS), src_rank, _lang_rank(target), _rank(split, PROMPT_SETS))


def _source_label(s: dict) -> str:
    return s["source"] if s["source"] is not None else s["paradigm"]


def _setting_name(s: dict) -> str:
    label = PARADIGM_LABELS.get(s["paradigm"], s["paradigm"].upper())
    return f"{label} from {s['source']}" if s.get("source") else label


def _lang_title(code: str) -> str:
    return f"{LANG_NAMES[code]} ({code})" if code in LANG_NAMES else code


def _splits(summary: dict) -> list[str]:
    return sorted({s["split"] for s in summary["settings"]}, key=lambda v: _rank(v, PROMPT_SETS))


def _by_target(summary: dict, split: str) -> list[tuple[str, dict | None, list[dict]]]:
    """[(target, zs setting or None, other settings in summary order)] for one split."""
    rows = [s for s in summary["settings"] if s["split"] == split]
    out = []
    for target in sorted({s["target"] for s in rows}, key=_lang_rank):
        here = [s for s in rows if s["target"] == target]
        zs = next((s for s in here if s["paradigm"] == "zs"), None)
        out.append((target, zs, [s for s in here if s["paradigm"] != "zs"]))
    return out


def _n_by_target(summary: dict, split: str) -> dict[str, int]:
    return {
        target: zs["n"] if zs else max(s["n"] for s in others)
        for target, zs, others in _by_target(summary, split)
    }


def _n_phrase(summary: dict, split: str, short: bool = False) -> str:
    counts = _n_by_target(summary, split)
    if not counts:
        return "n=0" if short else "no prompts"
    values = set(counts.values())
    if len(values) == 1:
        n = values.pop()
        return f"n={n}/target" if short else f"{n} prompts per target language"
    listed = ", ".join(f"{t} {n}" for t, n in counts.items())
    return f"n per target: {listed}" if short else f"a varying number of prompts per target language ({listed})"


def _samples_phrase(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "no samples"
    per = frame.groupby(["paradigm", "_src", "target", "split", "prompt_id"]).size()
    lo, hi = int(per.min()), int(per.max())
    count = f"{lo}" if lo == hi else f"{lo}-{hi}"
    return f"{count} sample{'s' if hi > 1 else ''} per prompt"


def _kv(mapping: dict) -> str:
    if not mapping:
        return "not recorded"
    shown = (json.dumps(v, ensure_ascii=False) if isinstance(v, str) else v for v in mapping.values())
    return ", ".join(f"{md_escape(k)}={md_escape(v)}" for k, v in zip(mapping, shown))


def _cut(text: Any) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= EXAMPLE_MAX_CHARS else text[:EXAMPLE_MAX_CHARS] + "…"


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:+.1f}%"


def _round(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if not math.isfinite(value) else round(value, DIGITS)


def _jsonable(value: Any) -> Any:
    """Deep copy with plain Python types only: no numpy scalars, NaN/inf -> None."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    item = getattr(value, "item", None)  # numpy / pandas scalars
    if callable(item):
        try:
            return _jsonable(item())
        except (TypeError, ValueError):
            pass
    if value is pd.NA or value is pd.NaT:
        return None
    return str(value)
