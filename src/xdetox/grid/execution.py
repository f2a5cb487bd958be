"""Execution: each training setting of a plan, in plan order, against the run's store.

One unit per training setting (``run_setting``): train its adapter if needed
(``ensure_adapter``), register its evaluations and generate the batches the store
lacks (``pending_batches``, ``generate``), take its reference measures (``measure``),
score (``xdetox.grid.scoring``). ``execute`` runs the units in-process, keeping the
base model loaded between settings of one model (``Session``); ``--backend ray``
(``xdetox.distributed``) runs the same unit as one Ray task per setting. Each batch
and each chunk of scores is committed as it is done, so a killed run resumes where
it stopped.

With ``progress`` (a run without ``--quiet``), each step that takes time draws a bar on
stderr under the "settings" bar (tqdm, ``position=1``, cleared when done): training (per
optimizer step, with the loss), generation (per batch), the reference measures (per text,
with the language), scoring (per scorer, per text; ``ppl:`` adds its forward passes
below). The bars only watch: batching, order, seeds and values are the same without them.

The run directory holds the store (``STORE_FILE``), the adapters (``ADAPTERS_DIR``)
and the written results (``COMPLETIONS_FILE`` and the report).
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from xdetox._io import file_sha256
from xdetox.data import Corpus
from xdetox.errors import XdetoxInputError
from xdetox.grid.config import GridConfig
from xdetox.grid.plan import Evaluation, Plan, TrainSetting
from xdetox.grid.scoring import check_scorer_identity, score, score_length_matched
from xdetox.grid.session import Session, collect_garbage
from xdetox.hygiene import clean_corpus
from xdetox.store import Store

if TYPE_CHECKING:
    from xdetox.generate import Batch

STORE_FILE = "xdetox.sqlite"
ADAPTERS_DIR = "adapters"
COMPLETIONS_FILE = "completions.jsonl"


def check_runnable(config: GridConfig, here: bool = True) -> None:
    """Everything that can be refused before any work starts.

    ``here=False`` (the Ray backend): the settings run on other machines, so what this
    machine lacks (a CUDA GPU, bitsandbytes) is checked by each task where it runs; here
    only that a 4-bit model asks for a GPU.
    """
    from xdetox import models
    from xdetox.scorers.registry import check_languages, check_scorer

    for scorer in config.scorers:
        check_scorer(scorer)
        check_languages(scorer, config.targets)
    for model in config.models + ((config.evaluate.model,) if config.evaluate else ()):
        if here:
            models.check_runnable(model)
        elif model.quantization == "nf4" and config.resources.num_gpus <= 0:
            raise XdetoxInputError(
                f"{model.name}: quantization = \"nf4\" needs a CUDA GPU per setting; ask for one with"
                " [resources] num_gpus = 1 in the config"
            )
        where = models.locate(model)
        if config.decode.chat_template:
            from transformers import AutoTokenizer

            if not AutoTokenizer.from_pretrained(where, trust_remote_code=model.trust_remote_code).chat_template:
                raise XdetoxInputError(f"{model.name}'s tokenizer has no chat template: leave out --chat-template"
                                       " (chat_template), which wraps prompts for instruction-tuned models")


def execute(plan: Plan, corpus: Corpus, run_dir: Path, store: Store, progress: bool = True) -> None:
    """Run every training setting in plan order (local, in-process)."""
    for name in plan.config.scorers:  # scores of another model than today's are dropped first
        check_scorer_identity(store, name)
    session = Session()
    bar = tqdm(total=len(plan.settings), desc="settings", unit="setting", disable=not progress, position=0)
    for setting in plan.settings:
        bar.set_postfix_str(f"{setting.model.name} {setting.label} seed {setting.spec.seed}")
        start = time.perf_counter()
        run_setting(plan, setting, corpus, run_dir, store, session, progress)
        # Wall time summed over settings, so a run resumed across sessions reports its real cost.
        store.set_meta("wall_time_s", round(store.get_meta("wall_time_s", 0.0) + time.perf_counter() - start, 1))
        bar.update()
    bar.close()
    start = time.perf_counter()
    score_length_matched(plan, store, session, progress)  # pairs whose ZS came after the setting
    store.set_meta("wall_time_s", round(store.get_meta("wall_time_s", 0.0) + time.perf_counter() - start, 1))


def run_setting(
    plan: Plan, setting: TrainSetting, corpus: Corpus, run_dir: Path, store: Store,
    session: Session, progress: bool = False,
) -> None:
    """One unit of work: train the setting's adapter if needed, generate and score its evaluations.

    The adapter is needed (and trained when its directory is missing) only while the setting
    has batches to generate or measures to take: a store whose completions are all in can be
    scored again, or resumed on another machine, without its adapters. The corpus is read as the
    plan's ``text_normalisation`` cleans it (as ``make_plan`` keyed it).
    """
    corpus = clean_corpus(corpus, plan.config.text_normalisation)
    evaluations = plan.evaluations_of(setting)
    todo = pending_batches(plan, setting, evaluations, corpus, store, session)
    to_measure = plan.config.measure_references and not store.has_measures(setting.key)
    if todo or to_measure or store.train_setting(setting.key) is None:
        adapter = ensure_adapter(plan, setting, corpus, run_dir, store, progress, session)
        todo = pending_batches(plan, setting, evaluations, corpus, store, session)  # all, if the adapter changed
        to_measure = plan.config.measure_references and not store.has_measures(setting.key)
        generate(plan, setting, todo, store, session, adapter, progress)
        if to_measure:
            measure(plan, setting, corpus, store, session, adapter, progress)
    score(plan, [e.key for e in evaluations], store, session, progress)
    score_length_matched(plan, store, session, progress, evaluations)


def measure(plan: Plan, setting: TrainSetting, corpus: Corpus, store: Store, session: Session,
            adapter: Path | None, progress: bool = False) -> None:
    """Knowledge preservation and representation: the setting's model on the test_neutral references.

    Per target: the perplexity of its test_neutral sentences (``ppl_ref``); over all
    targets: the silhouette of the sentences' mean-pooled hidden states grouped by
    language, the language similarity matrix and a 2-D projection. What the sentences cannot give
    (one language, too few sentences) is stored as ``not_computed`` ({measure: why}) instead. Stored in
    one transaction, so a setting has all its measures or none.
    """
    from xdetox.analysis import embedding_analysis, reference_measures

    loaded = session.base(setting.generates_with)
    if loaded.seq2seq:
        store.add_measures(setting.key, [("*", "skipped", "encoder-decoder model: no causal-LM perplexity")])
        return
    limit = plan.config.limit
    texts = {t: [p.text for p in corpus.prompts(t, "test_neutral")[:limit]] for t in plan.config.targets}
    model = session.model_for(setting, adapter)
    measures = reference_measures(model, loaded.tokenizer, texts, progress=progress)
    analysis = embedding_analysis(measures.embeddings)
    rows = [(lang, "ppl_ref", value) for lang, value in measures.ppl.items()]
    rows += [("*", name, value) for name, value in (("silhouette", analysis.silhouette),
                                                     ("similarity", analysis.similarity),
                                                     ("projection", analysis.projection)) if value is not None]
    if analysis.not_computed:  # too few sentences (a run of one prompt): why, for the report
        rows.append(("*", "not_computed", analysis.not_computed))
    store.add_measures(setting.key, rows)


def ensure_adapter(
    plan: Plan, setting: TrainSetting, corpus: Corpus, run_dir: Path, store: Store, progress: bool,
    session: Session | None = None,
) -> Path | None:
    """The setting's adapter, trained now unless the store (and the disk) already hold it; an eval setting's
    given adapter is copied into the run (``given.copy_adapter``), and one without an adapter has none.
    A training first makes ``session`` let go of its loaded model (``Session.release``): one model in
    memory at a time."""
    from xdetox.train import train_adapter

    spec, given = setting.spec, setting.given
    store.add_train_setting(
        setting.key, setting.label, setting.model.display_name, spec.paradigm, spec.source, spec.percent,
        spec.seed, spec.to_dict() if given is None else {"paradigm": spec.paradigm, "seed": spec.seed,
                                                         "given": given.to_dict()},
    )
    if spec.paradigm == "zs" or (given is not None and given.adapter is None):
        store.finish_train_setting(setting.key, None, None)
        return None
    relative = f"{ADAPTERS_DIR}/{setting.key}"
    path = run_dir / relative
    complete = (path / "adapter_model.safetensors").is_file()  # renamed into place only when done
    if not complete:
        for stale in path.parent.glob(f".{setting.key}-*"):  # a training (or copy) killed half-way
            shutil.rmtree(stale, ignore_errors=True)
    if not complete and given is not None:
        from xdetox.given import copy_adapter

        copy_adapter(given, path)
    elif not complete:
        if progress:
            tqdm.write(f"training {setting.model.name} {setting.label} seed {spec.seed} -> {path}")
        if session is not None:
            session.release()
        train_adapter(setting.model, spec, corpus, path, progress=progress)
        collect_garbage()
    row, sha = store.train_setting(setting.key), file_sha256(path / "adapter_model.safetensors")
    if row["status"] == "done" and row["adapter_sha256"] not in (None, sha):
        # Not the adapter the store's completions came from (retrained on another CPU, say, where
        # kernels round differently): one setting's completions must all come from one adapter.
        dropped = store.forget_outputs(setting.key)
        tqdm.write(f"xdetox: the adapter of {setting.label} seed {spec.seed} differs from the one the run "
                   f"recorded; its {dropped} completions are generated again", file=sys.stderr)
    if row["status"] != "done" or row["adapter_sha256"] != sha:
        store.finish_train_setting(setting.key, relative, sha)
    return path


def pending_batches(
    plan: Plan, setting: TrainSetting, evaluations: Iterable[Evaluation], corpus: Corpus, store: Store,
    session: Session,
) -> list[tuple[Evaluation, Batch]]:
    """Register the setting's evaluations in the store; the batches it does not hold yet."""
    from xdetox.generate import make_batches

    decode = plan.config.decode
    todo = []
    for ev in evaluations:
        by_id = {p.id: p for p in corpus.prompts(ev.target, ev.split)}
        prompts = [by_id[i] for i in ev.prompt_ids]
        batches = make_batches(prompts, session.tokenizer(setting.generates_with), decode)
        store.add_evaluation(ev.key, setting.key, ev.target, ev.split, decode.to_dict(), len(batches))
        done = store.done_batches(ev.key)
        todo.extend((ev, b) for b in batches if b.index not in done)
    return todo


def generate(
    plan: Plan, setting: TrainSetting, todo: list[tuple[Evaluation, Batch]], store: Store,
    session: Session, adapter: Path | None, progress: bool,
) -> None:
    """Sample these batches (``pending_batches``) with the setting's model and commit each as it comes.

    Batch ``b`` of evaluation ``e`` is sampled with ``derive_seed(setting seed, e, b)``,
    by whichever backend the config chose (``Session.generator_for``).
    """
    from xdetox.generate import derive_seed

    if not todo:
        return
    rank = plan.config.train.lora.r
    if setting.given is not None and adapter is not None:  # a given adapter has the rank its maker chose
        from xdetox.given import lora_rank

        rank = max(rank, lora_rank(adapter))
    generator = session.generator_for(setting, adapter, plan.config.generator, rank)
    work = [(batch, derive_seed(setting.spec.seed, ev.key, batch.index)) for ev, batch in todo]
    bar = tqdm(total=len(todo), desc=f"generate {setting.label}", unit="batch", disable=not progress,
               leave=False, position=1)
    for (ev, batch), completions in zip(todo, generator.generate_batches(work, plan.config.decode), strict=True):
        store.add_batch(ev.key, batch.index, completions)
        bar.set_postfix_str(ev.target)
        bar.update()
    bar.close()
