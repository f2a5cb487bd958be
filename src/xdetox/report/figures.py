"""Figures as PNG data URIs (matplotlib on an Agg canvas, no pyplot; seaborn heatmaps)."""

from __future__ import annotations

import base64
import io
import warnings

import pandas as pd

from xdetox.report.formatting import n_phrase, seed_list
from xdetox.report.results import View
from xdetox.report.tables import view_matrix
from xdetox.report.values import lang_rank
from xdetox.specs import PARADIGM_LABELS


def _figure(width: float, height: float):
    """A Figure on an Agg canvas: no pyplot, no change to the global backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _png_data_uri(fig) -> str:
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _title(what: str, view: View) -> str:
    return (f"{what}\n{view.model} · {view.split} · scorer {view.scorer}\n"
            f"{n_phrase(view.n_by_target())} · seeds {seed_list(view.seeds)}")


def zs_bars(view: View) -> str:
    results = sorted(view.of("zs"), key=lambda r: lang_rank(r.cell.target))
    fig, ax = _figure(max(5.0, 1.0 + 0.7 * len(results)), 3.6)
    means = [r.mean_toxicity or 0.0 for r in results]
    several = len(view.seeds) > 1
    errors = [r.std or 0.0 for r in results] if several else [0.0] * len(results)
    ax.bar([r.cell.target for r in results], means, yerr=errors if several else None,
           capsize=4, color="#6b8fb5")
    ax.set_xlabel("target")
    ax.set_ylabel("mean toxicity" + (" (± std over seeds)" if several else ""))
    ax.set_ylim(0, max([1e-3] + [m + e for m, e in zip(means, errors)]) * 1.15)
    ax.set_title(_title("Zero-shot toxicity per language", view), fontsize=9)
    return _png_data_uri(fig)


SAME_LANGUAGE_TITLE = "over the prompts both answered in the target language"


def heatmap(view: View, paradigm: str, field: str = "reduction_abs") -> str:
    """The paradigm's settings × targets, each cell's ``field`` (``reduction_abs``, or ``reduction_same_language``
    with the number of prompt pairs under each value: a cell that rests on a few pairs says so)."""
    import seaborn as sns

    matrix = view_matrix(view, paradigm, field)
    same_language = field == "reduction_same_language"
    rows, cols = matrix.shape
    fig, ax = _figure(max(6.0, 1.0 + 0.9 * cols), max(3.2, 1.6 + 0.5 * rows))
    label = PARADIGM_LABELS.get(paradigm, paradigm.upper())
    if matrix.notna().to_numpy().any():
        limit = float(matrix.abs().max().max()) or 1.0
        with warnings.catch_warnings():  # seaborn 0.13 + matplotlib 3.11: set_bad notice
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            sns.heatmap(
                matrix, ax=ax, cmap="RdBu", center=0.0, vmin=-limit, vmax=limit,
                annot=True, fmt=".3f", linewidths=0.5, linecolor="white",
                cbar_kws={"label": f"{'same-language reduction' if same_language else field} (positive = less toxic)"},
            )
        if same_language:  # under each value, the prompt pairs it rests on (seaborn keeps each text's colour)
            pairs = view_matrix(view, paradigm, "n_same_language")
            for text in ax.texts:
                x, y = text.get_position()
                text.set_text(f"{text.get_text()}\n({pairs.iloc[int(y), int(x)]:.0f})")
        ax.set_xlabel("target (evaluated on)")
        ax.set_ylabel(matrix.index.name)
        ax.tick_params(axis="y", rotation=0)
    else:
        ax.axis("off")
        ax.text(0.5, 0.5, f"no {label} results to compare with ZS", ha="center", va="center")
    what = f"Toxicity reduction ZS − {label}" + (f", {SAME_LANGUAGE_TITLE}" if same_language else "")
    ax.set_title(_title(what, view), fontsize=9)
    return _png_data_uri(fig)


def pft_curve(view: View) -> str:
    fig, ax = _figure(6.0, 3.8)
    results = [r for r in view.of("p-ft")
               if r.reduction_abs is not None and r.cell.setting.percent is not None]
    for target in view.targets:
        points = sorted((r for r in results if r.cell.target == target),
                        key=lambda r: r.cell.setting.percent)
        if points:
            ax.errorbar([r.cell.setting.percent for r in points], [r.reduction_abs for r in points],
                        yerr=[r.reduction_abs_std or 0.0 for r in points],
                        marker="o", capsize=3, label=target)
    ax.set_xticks(sorted({r.cell.setting.percent for r in results}))
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xlabel("P-FT percent")
    ax.set_ylabel("reduction_abs (mean ± std over seeds)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(title="target", fontsize=8)
    ax.set_title(_title("P-FT: toxicity reduction by percent", view), fontsize=9)
    return _png_data_uri(fig)


def projection_plot(points: list, title: str) -> str:
    fig, ax = _figure(5.0, 4.2)
    frame = pd.DataFrame(points, columns=["lang", "x", "y"])
    for lang in sorted(frame["lang"].unique(), key=lang_rank):
        part = frame[frame["lang"] == lang]
        ax.scatter(part["x"], part["y"], s=8, label=lang, alpha=0.7)
    ax.legend(fontsize=7, markerscale=2, ncol=3)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(title, fontsize=9)
    return _png_data_uri(fig)
