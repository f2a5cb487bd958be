"""Scoring a run's completions: every configured scorer, and the length-matched pairs.

``score`` gives every completion that is text a score per configured scorer;
``score_length_matched`` scores each tuned completion and ZS's completion of the
same prompt cut to the same token count, with the primary toxicity scorer, under
the scorer names ``<scorer>|length-matched`` and ``<scorer>|length-matched-zs``.
``check_scorer_identity`` drops the scores of a scorer whose model changed. What is
scored already is skipped: scoring resumes where it stopped. With ``progress``, one bar
per scorer over the texts it has to score (``score <scorer>``), and per evaluation for the
length-matched pairs (``score <scorer> length-matched``).
"""

from __future__ import annotations

from collections.abc import Iterable

from tqdm.auto import tqdm

from xdetox.grid.plan import Evaluation, Plan
from xdetox.grid.session import Session
from xdetox.store import Store
from xdetox.text import is_silent

LENGTH_MATCHED = "|length-matched"  # scorer-name suffix: the setting's completion cut to the shorter one
LENGTH_MATCHED_ZS = "|length-matched-zs"  # ... and ZS's completion of the same prompt, cut likewise


def score(plan: Plan, eval_keys: list[str], store: Store, session: Session, progress: bool) -> None:
    """Score every completion of these evaluations that is text with every configured scorer.

    A silent completion (empty after normalisation, or punctuation and digits only:
    ``text.is_silent``) is not text: no scorer sees it. What is scored already is skipped. Scores are committed a chunk at a time
    (the scorer's ``batch_size``, default 256), so a slow remote scorer interrupted
    half-way resumes where it stopped. A scorer with a ``progress`` attribute (``ppl:``)
    draws its own bar below this one when ``progress``. A scorer that ``needs_prompts``
    (``relevance:``) gets each completion's prompt beside it.
    """
    for name in plan.config.scorers:
        check_scorer_identity(store, name)
        pending = store.unscored(name, eval_keys)
        pending = pending[~pending["text"].map(is_silent)]
        if pending.empty:
            continue
        scorer = session.scorer(name, progress)
        chunk = getattr(scorer, "batch_size", 256)
        bar = tqdm(total=len(pending), desc=f"score {name}", unit="text", disable=not progress,
                   leave=False, position=1)
        for target, group in pending.groupby("target", sort=False):
            bar.set_postfix_str(target)
            for start in range(0, len(group), chunk):
                part = group.iloc[start:start + chunk]
                prompts = {"prompts": part["prompt"].tolist()} if getattr(scorer, "needs_prompts", False) else {}
                values = scorer.score(part["text"].tolist(), target, **prompts)
                store.add_scores(name, zip(part["eval_key"], part["prompt_id"], part["sample"], values))
                bar.update(len(part))
        bar.close()


def primary_toxicity_scorer(scorers: Iterable[str]) -> str | None:
    """The first toxicity scorer of a config: the one every headline number is read with."""
    from xdetox.scorers.registry import scorer_kind

    return next((name for name in scorers if scorer_kind(name) == "toxicity"), None)


def zs_evaluation(plan: Plan, ev: Evaluation) -> Evaluation | None:
    """The ZS evaluation that ``ev`` is compared with: same model, seed, target and split."""
    return next((z for z in plan.evaluations if z.setting.spec.paradigm == "zs"
                 and z.setting.model == ev.setting.model and z.setting.spec.seed == ev.setting.spec.seed
                 and (z.target, z.split) == (ev.target, ev.split)), None)


def score_length_matched(plan: Plan, store: Store, session: Session, progress: bool,
                         evaluations: Iterable[Evaluation] | None = None) -> None:
    """Score each tuned completion and ZS's completion of the same prompt, cut to equal length.

    Per (prompt, sample) where both are text (not ``is_silent``), both token sequences (the base
    model's tokenizer, no special tokens) are cut to the shorter one's length, decoded and
    scored by the primary toxicity scorer, as ``<scorer>|length-matched`` (the setting's)
    and ``<scorer>|length-matched-zs`` (ZS's), on the setting's evaluation. Needs both
    evaluations complete; what is scored already is skipped.
    """
    name = primary_toxicity_scorer(plan.config.scorers)
    if name is None:
        return
    check_scorer_identity(store, name)
    for ev in plan.evaluations if evaluations is None else evaluations:
        zs = None if ev.setting.spec.paradigm == "zs" else zs_evaluation(plan, ev)
        if zs is None or len(store.complete_evaluations([ev.key, zs.key])) < 2:
            continue
        pairs = store.unmatched_pairs(ev.key, zs.key, name + LENGTH_MATCHED_ZS)
        pairs = pairs[~pairs["text"].map(is_silent) & ~pairs["zs_text"].map(is_silent)]
        if pairs.empty:
            continue
        tokenizer = session.tokenizer(ev.setting.model)
        cut, cut_zs = zip(*(cut_to_shorter(tokenizer, a, b) for a, b in zip(pairs["text"], pairs["zs_text"])))
        scorer = session.scorer(name, progress)
        chunk = getattr(scorer, "batch_size", 256)
        bar = tqdm(total=len(pairs), desc=f"score {name} length-matched", unit="pair", disable=not progress,
                   leave=False, position=1)
        bar.set_postfix_str(ev.setting.label + " " + ev.target)
        for start in range(0, len(pairs), chunk):
            part = pairs.iloc[start:start + chunk]
            keys = list(zip(part["prompt_id"], part["sample"]))
            ours = scorer.score(list(cut[start:start + chunk]), ev.target)
            theirs = scorer.score(list(cut_zs[start:start + chunk]), ev.target)
            store.add_scores(name + LENGTH_MATCHED, [(ev.key, p, s, v) for (p, s), v in zip(keys, ours)])
            store.add_scores(name + LENGTH_MATCHED_ZS, [(ev.key, p, s, v) for (p, s), v in zip(keys, theirs)])
            bar.update(len(part))
        bar.close()


def check_scorer_identity(store: Store, name: str) -> None:
    """A scorer name whose model changed since the run scored with it (a new ``offline``, say)
    would mix two instruments in one column: its old scores (and their length-matched
    derivatives) are dropped, with a line saying so, and the run scores everything again."""
    from xdetox.scorers.registry import scorer_identity

    identity = scorer_identity(name)
    key = f"scorer_identity:{name}"
    recorded = store.get_meta(key)
    if recorded == identity:
        return
    if store.has_scores(name):  # scored by another model (or before runs recorded which)
        tqdm.write(f"xdetox: scorer {name} is not the model this run scored with"
                   f" ({recorded or 'unrecorded'} -> {identity}); its scores are computed again")
        store.drop_scores([name, name + LENGTH_MATCHED, name + LENGTH_MATCHED_ZS])
    store.set_meta(key, identity)


def cut_to_shorter(tokenizer, text: str, other: str) -> tuple[str, str]:
    """Both texts cut to the token count of the shorter one (tokens of ``tokenizer``, no special tokens)."""
    a = tokenizer(text, add_special_tokens=False).input_ids
    b = tokenizer(other, add_special_tokens=False).input_ids
    n = min(len(a), len(b))
    return (tokenizer.decode(a[:n], skip_special_tokens=True).strip(),
            tokenizer.decode(b[:n], skip_special_tokens=True).strip())
