"""From scored completions to result files: pure functions, no model code.

``summarize(completions, info)`` turns a completions frame (one row per
completion; its columns in ``frame``) into the summary dict: per model, setting,
target and prompt set, over seeds, the mean toxicity of the completions
that are text (not silent), its reduction against ZS with a paired bootstrap CI and p-value, the
length-matched reduction, empty share, new tokens, fluency and language, and the
transfer analysis. ``write_report`` writes one ``matrix_<alias>_<paradigm>.csv``
per model and paradigm, ``report.html`` (self-contained: inline CSS, figures as
PNG data URIs, no script), ``report.md``, ``settings.parquet`` (the settings as
``summary_frame`` flattens them), ``completions.parquet`` (the completions frame) and, last and atomically,
``summary.json``: its presence marks a finished run.

Layout, each module building on those above it:

- ``values``: report order (LANGS, PARADIGMS, PROMPT_SETS), means, rounding, JSON conversion;
- ``formatting``: numbers and names as text;
- ``stats``: expected maximum toxicity, toxicity probability, paired bootstrap, scorer
  agreement (numpy/scipy only);
- ``results``: typed results (``RunInfo``, ``Setting``, ``Cell``, ``SeedResult``,
  ``CellResult``, ``View``) and the file names;
- ``frame``: the completions frame's columns and its validation;
- ``measures``: the reference measures of each setting's model;
- ``transfer``: the cross-lingual transfer analysis of a summary;
- ``summary``: the frame → the summary dict (per seed, per cell, other scorers, measures,
  transfer analysis);
- ``tables``: matrices and the text table; ``examples``: example completions;
  ``method``: how the numbers were computed, in words;
- ``figures``, ``html``, ``markdown``: the two pages;
- ``tabular``: summary rows as flat frames (``summary_frame``: ``Run.settings()``, ``settings.parquet``);
- ``files``: ``write_report``, atomic writes.

Reference measures travel from ``summary`` to ``html`` inside the summary dict, with
their 2-D projections under ``_projections`` (tuple keys); ``summarize`` and
``write_report`` drop that key before the summary leaves the package.
"""

from __future__ import annotations

from xdetox.report.examples import EXAMPLE_MAX_CHARS, EXAMPLES_PER_TARGET, Example, ExampleLine
from xdetox.report.files import write_report
from xdetox.report.frame import EXTRA_TOXICITY, LM_COLUMN, LM_ZS_COLUMN, REQUIRED_COLUMNS, extra_scorers
from xdetox.report.markdown import md_escape
from xdetox.report.measures import measures_projection
from xdetox.report.results import (
    ABSTENTION_POINTS,
    COMPLETIONS_PARQUET,
    REPORT_HTML,
    REPORT_MD,
    ROW_AXIS,
    SETTINGS_PARQUET,
    SUMMARY_JSON,
    ZS,
    Cell,
    CellResult,
    RunInfo,
    SeedResult,
    Setting,
    View,
)
from xdetox.report.stats import (
    SeedLevelTest,
    q_values,
    seed_level_test,
    BOOT_SEED,
    N_BOOT,
    TOXIC_THRESHOLD,
    PairedBootstrap,
    ScorerAgreement,
    expected_max_toxicity,
    paired_bootstrap,
    scorer_agreement,
    toxicity_probability,
)
from xdetox.report.summary import ANALYSIS_METRICS, GroupKey, summarize
from xdetox.report.tabular import summary_frame
from xdetox.report.tables import (
    ABSTENTION_MARK,
    ABSTENTION_NOTE,
    LANGUAGE_MARK,
    LANGUAGE_NOTE,
    TABLE_HEADER,
    matrix_filename,
    model_aliases,
    print_table,
    result_matrix,
)
from xdetox.report.transfer import analysis_html, analysis_markdown, transfer_analysis
from xdetox.report.values import DIGITS
from xdetox.specs import PARADIGM_LABELS, PARADIGMS

__all__ = [
    "ABSTENTION_MARK", "ABSTENTION_NOTE", "ABSTENTION_POINTS", "ANALYSIS_METRICS", "BOOT_SEED", "COMPLETIONS_PARQUET",
    "DIGITS", "LANGUAGE_MARK", "LANGUAGE_NOTE",
    "EXAMPLES_PER_TARGET", "EXAMPLE_MAX_CHARS", "EXTRA_TOXICITY", "LM_COLUMN", "LM_ZS_COLUMN", "N_BOOT",
    "PARADIGMS", "PARADIGM_LABELS", "REPORT_HTML", "REPORT_MD", "REQUIRED_COLUMNS", "ROW_AXIS",
    "SETTINGS_PARQUET", "SUMMARY_JSON", "TABLE_HEADER", "TOXIC_THRESHOLD", "ZS",
    "Cell", "CellResult", "Example", "ExampleLine", "GroupKey", "PairedBootstrap", "RunInfo",
    "ScorerAgreement", "SeedLevelTest", "q_values", "seed_level_test", "SeedResult", "Setting", "View",
    "analysis_html", "analysis_markdown", "expected_max_toxicity", "extra_scorers", "matrix_filename", "model_aliases",
    "md_escape", "measures_projection", "paired_bootstrap", "print_table", "result_matrix",
    "scorer_agreement", "summarize", "summary_frame", "toxicity_probability", "transfer_analysis", "write_report",
]
