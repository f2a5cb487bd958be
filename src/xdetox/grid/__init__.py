"""The experiment grid: config -> plan (training settings x evaluations) -> execution against the store.

A *training setting* (model, paradigm, source language or percent, seed) trains
at most one adapter (ZS trains none); an *evaluation* is a training setting on
one target language and split. Both have content keys, so running the same
config again on the same store skips what is done: adapters already trained,
batches already committed, completions already scored.

Rooms:

- ``config``: ``GridConfig``, ``ResourceSpec``, ``load_config`` (the TOML schema),
  ``config_from_dict``, ``config_from_stored`` (a run's stored config read back); torch-free.
- ``options``: ``RunOptions``, ``xdetox run``'s flags as a config (shared with ``xdetox.run(**options)``),
  and its ``--quick`` preset (``QUICK_RUN``, ``QUICK_OUT``, ``refuse_with_quick``); torch-free.
- ``evaluate``: ``EvalOptions``, ``xdetox eval``'s flags as a config (the ``eval`` paradigm: a given
  model or adapter measured, with a baseline as its ZS); torch-free.
- ``plan``: ``TrainSetting``, ``Evaluation``, ``Plan`` and their content keys
  (``make_plan``), ``training_specs``, ``plan_table``.
- ``session``: ``Session``, what a worker keeps between settings (base model,
  adapters, vLLM engine, scorers) and the generator of a setting.
- ``execution``: ``check_runnable``, ``execute`` and its unit ``run_setting``
  (``ensure_adapter``, ``pending_batches``, ``generate``, ``measure``); the run
  directory's file names.
- ``scoring``: ``score``, ``score_length_matched``, ``check_scorer_identity``.
- ``limits``: ``check_context``: every prompt with its token budget, and the training ``max_length``,
  fit each model's context (``context_length``), checked before anything is created.
- ``env``: ``environment``, the library versions and device results depend on.
- ``run``: a run from config to report (``xdetox run``, ``grid run``, ``report``):
  ``run_config`` (checks, ``--out``, ``--reuse``, the attempt, local or Ray execution),
  ``prepare_out``, ``write_outputs`` and ``report_run`` (the completions file and the
  report from the store alone). Imported as ``xdetox.grid.run``, not from here: it
  uses ``xdetox.distributed`` and ``xdetox.reuse``, which import the grid.

``--backend ray`` (``xdetox.distributed``) runs ``run_setting`` as one Ray task per
training setting. Importing the grid loads no torch: model code is imported when
work starts.
"""

from xdetox._io import file_sha256
from xdetox.grid.config import (
    TRAIN_KEYS,
    GridConfig,
    ResourceSpec,
    config_from_dict,
    config_from_stored,
    load_config,
)
from xdetox.grid.env import environment
from xdetox.grid.evaluate import EvalOptions
from xdetox.grid.execution import (
    ADAPTERS_DIR,
    COMPLETIONS_FILE,
    STORE_FILE,
    check_runnable,
    ensure_adapter,
    execute,
    generate,
    measure,
    pending_batches,
    run_setting,
)
from xdetox.grid.limits import check_context, context_length
from xdetox.grid.options import QUICK_OUT, QUICK_RUN, RunOptions, refuse_with_quick
from xdetox.grid.plan import Evaluation, Plan, TrainSetting, make_plan, plan_table, training_specs
from xdetox.grid.scoring import (
    LENGTH_MATCHED,
    LENGTH_MATCHED_ZS,
    check_scorer_identity,
    cut_to_shorter,
    primary_toxicity_scorer,
    score,
    score_length_matched,
    zs_evaluation,
)
from xdetox.grid.session import Session

__all__ = [
    "ADAPTERS_DIR", "COMPLETIONS_FILE", "EvalOptions", "Evaluation", "GridConfig", "LENGTH_MATCHED",
    "LENGTH_MATCHED_ZS", "Plan", "QUICK_OUT", "QUICK_RUN", "ResourceSpec", "RunOptions", "STORE_FILE", "Session",
    "TRAIN_KEYS", "TrainSetting", "check_context", "check_runnable", "check_scorer_identity", "config_from_dict",
    "config_from_stored", "context_length", "cut_to_shorter", "ensure_adapter", "environment", "execute",
    "file_sha256", "generate", "load_config", "make_plan", "measure", "pending_batches", "plan_table",
    "primary_toxicity_scorer", "refuse_with_quick", "run_setting", "score", "score_length_matched",
    "training_specs", "zs_evaluation",
]
