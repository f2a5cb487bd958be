"""Training the shipped ``offline-tuned`` scorer: ``xdetox scorer train --out DIR``.

``train`` fits the encoder view (``train_encoder``: adapter and unit on language-weighted rows) and the
lexical view (``train_lexical``), writes them, reads the written files back, fits the combiner and the
per-language calibration on them (``calibration_rows``, ``fit_calibration``) and measures the written
model (``xdetox.scorers.validation``): what ships is what was validated. ``resources/scorer_model/README.md``
says how the shipped files were made.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from xdetox._io import check_writable_dir
from xdetox.data import LANGS
from xdetox.errors import XdetoxInputError
from xdetox.scorers.base import log_progress
from xdetox.scorers.offline.config import OfflineScorerConfig
from xdetox.scorers.offline.data import training_set
from xdetox.scorers.offline.hashed import HashedLexical
from xdetox.scorers.semantic import training_rows
from xdetox.scorers.tuned import (CALIBRATION_BORROW, ENCODER_FIELDS, FILES, FORMAT_VERSION, TunedEncoder,
                                  TunedScorer, TunedScorerConfig, prepare)

SHORT_LEXICAL_CLIP = 3.0
"""A short text's lexical logit enters the combiner bounded to +-this (``semantic.combiner_features``)."""


def language_weights(langs: list[str]) -> np.ndarray:
    """One weight per row: each language's rows together weigh the same; mean weight 1."""
    counts = {lang: langs.count(lang) for lang in set(langs)}
    return np.array([len(langs) / (len(counts) * counts[lang]) for lang in langs])


def _platt(logits: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> list[float]:
    """[slope, intercept] of a logistic map of the logit, each class given half of the weight."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=100.0).fit(logits[:, None], labels, sample_weight=balanced(labels, weights))
    return [float(model.coef_[0, 0]), float(model.intercept_[0])]


def balanced(labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``weights`` rescaled so each class carries half of their sum."""
    w = np.asarray(weights, dtype=float).copy()
    for label in (0, 1):
        w[labels == label] *= 0.5 * w.sum() / w[labels == label].sum()
    return w


def fit_calibration(logits: np.ndarray, labels: np.ndarray, langs: list[str], weights: np.ndarray,
                    shrinkage: float = 0.0) -> dict:
    """``{lang: [slope, intercept]}``: a logistic map of the logit per language, classes balanced.

    ``shrinkage`` > 0 pulls each language's map towards the pooled one (every language weighing the same):
    the weighted log-loss of the language's rows (mean weight 1) plus ``shrinkage`` times the squared distance
    of (slope, intercept) from the pooled map's. Calibration cases that separate almost perfectly otherwise give
    a language a steep map, which makes middling readings certain."""
    mine = np.array(langs)
    for lang in dict.fromkeys(langs):
        if len(set(labels[mine == lang])) < 2:
            raise ValueError(f"calibration rows of {lang} hold one class only: too few rows to calibrate")
    if shrinkage == 0:
        return {lang: _platt(logits[mine == lang], labels[mine == lang], weights[mine == lang])
                for lang in dict.fromkeys(langs)}
    pooled = np.array(_platt(logits, labels, weights * language_weights(langs)))
    return {lang: _shrunk_platt(logits[mine == lang], labels[mine == lang], weights[mine == lang], pooled, shrinkage)
            for lang in dict.fromkeys(langs)}


def _shrunk_platt(logits: np.ndarray, labels: np.ndarray, weights: np.ndarray, pooled: np.ndarray,
                  shrinkage: float) -> list[float]:
    """[slope, intercept] minimising the balanced weighted log-loss (mean over the rows) plus ``shrinkage`` times
    the squared distance from ``pooled``."""
    from scipy.optimize import minimize
    from scipy.special import expit, log_expit

    w = balanced(labels, weights)
    w = w / w.sum()
    y = labels.astype(float)

    def loss(params):
        z = params[0] * logits + params[1]
        value = -np.sum(w * (y * log_expit(z) + (1 - y) * log_expit(-z))) + shrinkage * np.sum((params - pooled) ** 2)
        residual = w * (expit(z) - y)
        gradient = np.array([np.sum(residual * logits), np.sum(residual)]) + 2 * shrinkage * (params - pooled)
        return value, gradient

    found = minimize(loss, pooled, jac=True, method="L-BFGS-B")
    return [float(found.x[0]), float(found.x[1])]


def calibration_rows(config: TunedScorerConfig):
    """(texts, labels, langs, is_augmentation) the combiner and calibration are fitted on: per language its
    corpus calibration slice (a language of ``CALIBRATION_BORROW``: the named language's) and its
    augmentation calibration cases."""
    _, corpus, augment = training_rows(config.semantic)
    rows, langs, is_augment = [], [], []
    for lang in LANGS:
        own = [r for r in corpus if r.lang == CALIBRATION_BORROW.get(lang, lang)]
        cases = [r for r in augment if r.lang == lang]
        rows += own + cases
        langs += [lang] * (len(own) + len(cases))
        is_augment += [False] * len(own) + [True] * len(cases)
    return [r.text for r in rows], np.array([r.label for r in rows]), langs, np.array(is_augment)


def train_encoder(config: TunedScorerConfig, progress: bool) -> TunedEncoder:
    """The encoder view: adapter and unit fitted on the language-weighted training rows."""
    train_rows, _, _ = training_rows(config.semantic)
    order = np.random.default_rng(config.seed).permutation(len(train_rows))
    train_rows = [train_rows[i] for i in order]
    langs = [r.lang for r in train_rows]
    weights = language_weights(langs) if config.balance_languages else np.ones(len(langs))
    log_progress(progress, f"training the offline-tuned adapter on {len(train_rows):,} texts ({config.epochs:g} epochs)")
    encoder = TunedEncoder(config)
    encoder.fit(prepare([r.text for r in train_rows]), [r.label for r in train_rows], weights.tolist(), progress)
    return encoder


def train_lexical(config: TunedScorerConfig) -> HashedLexical:
    """The lexical view on ``offline``'s training rows and weights (``rows["lexical"]`` overrides its
    configuration, as for ``offline-semantic``), its n-grams hashed."""
    lexical = OfflineScorerConfig(**config.semantic.lexical)
    data = training_set(lexical)
    return HashedLexical.fit(data.texts, np.asarray(data.labels), np.asarray(data.weights), config.lexical_bits,
                             lexical.ngram_range, lexical.nb_alpha, lexical.C)


def _adapter_from(directory: Path, config: TunedScorerConfig) -> dict:
    """The encoder view's tensors of an earlier training whose encoder settings equal ``config``'s."""
    from safetensors.numpy import load_file

    manifest = json.loads((directory / "manifest.json").read_text())
    earlier = {name: manifest["config"].get(name) for name in ENCODER_FIELDS}
    wanted = {name: value for name, value in asdict(config).items() if name in ENCODER_FIELDS}
    if json.loads(json.dumps(earlier)) != json.loads(json.dumps(wanted)):
        raise XdetoxInputError(f"{directory}: its encoder was trained with other settings ({earlier}, not {wanted})")
    name = "weights.safetensors" if (directory / "weights.safetensors").is_file() else "adapter.safetensors"
    return {k: v for k, v in load_file(str(directory / name)).items() if not k.startswith("lexical.")}


def train(out: Path, config: TunedScorerConfig = TunedScorerConfig(), progress: bool = True,
          validate: bool = True, adapter_from: Path | None = None) -> TunedScorer:
    """Train both views, write them, fit combiner and calibration on the written model, and validate it.

    ``adapter_from``: take the encoder view from an earlier training with the same encoder settings
    (``ENCODER_FIELDS``; its manifest says so) instead of training it again. Writes ``FILES`` (and
    ``validation.json`` when ``validate``) into ``out`` through a temporary directory beside it, so
    ``out`` never holds half a model.
    """
    import os
    import shutil
    import tempfile

    import torch
    from safetensors.numpy import save_file
    from sklearn.linear_model import LogisticRegression

    from xdetox.machine import cpu_info
    from xdetox.models import cpu_supports_bf16

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(p.name not in (*FILES, "validation.json") for p in out.iterdir())):
        raise XdetoxInputError(f"{out}: exists and is not an offline-tuned scorer's directory; choose a new --out")
    check_writable_dir(out, "--out")  # before half an hour of training, not after
    start = time.perf_counter()
    if adapter_from is not None:
        tensors = _adapter_from(Path(adapter_from), config)
    else:
        tensors = {k: v.numpy() for k, v in train_encoder(config, progress).adapter().items()}
    log_progress(progress, "training the lexical view")
    lexical = train_lexical(config)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        save_file({**tensors, **lexical.tensors()}, str(work / "weights.safetensors"))
        manifest = {"format": FORMAT_VERSION, "config": asdict(config),
                    "lexical": {"bias": lexical.bias, "bits": lexical.bits},
                    "encoder_from": None if adapter_from is None else str(adapter_from),
                    "cpu": cpu_info().model, "dtype": "bf16" if cpu_supports_bf16() else "fp32",
                    "torch_threads": torch.get_num_threads(), "python": platform.python_version()}
        (work / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        (work / "calibration.json").write_text(json.dumps({"combiner": {}, "languages": {}}))
        scorer = TunedScorer.load(work, progress=False)  # fit on what is written: fp16, merged
        texts, labels, langs, is_augment = calibration_rows(config)
        prepared = prepare(texts)
        features = scorer_features(scorer, prepared, langs)
        combiner = LogisticRegression(C=1.0, max_iter=1000).fit(features, labels, sample_weight=balanced(
            labels, language_weights(langs) * np.where(is_augment, config.combiner_augment_weight, 1.0)))
        combined = combiner.decision_function(features)
        mask = is_augment if config.calibration_rows == "augmentation" else np.ones(len(labels), dtype=bool)
        calibration = {"combiner": {"coef": combiner.coef_[0].tolist(), "intercept": float(combiner.intercept_[0]),
                                    "short_lexical_clip": SHORT_LEXICAL_CLIP},
                       "languages": fit_calibration(combined[mask], labels[mask], [g for g, m in zip(langs, mask) if m],
                                                    np.ones(int(mask.sum())), config.calibration_shrinkage)}
        (work / "calibration.json").write_text(json.dumps(calibration, indent=1) + "\n")
        manifest.update(train_seconds=round(time.perf_counter() - start, 1), calibration_rows=len(texts))
        (work / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        scorer = TunedScorer.load(work, progress=False)
        if validate:
            from xdetox.scorers.validation import validate as run_validation

            log_progress(progress, "validating the written model")
            (work / "validation.json").write_text(json.dumps(run_validation(scorer), indent=1) + "\n")
        umask = os.umask(0)
        os.umask(umask)
        for path in (work, *work.iterdir()):  # mkdtemp's 0700 is for the work in progress only
            path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)
        if out.exists():
            shutil.rmtree(out)
        os.replace(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    log_progress(progress, f"offline-tuned written to {out} in {time.perf_counter() - start:.0f} s")
    return scorer  # read from the same bytes now in ``out``: the same identity


def scorer_features(scorer: TunedScorer, prepared: list[str], langs: list[str]) -> np.ndarray:
    """The combiner's inputs for prepared texts (``semantic.combiner_features``)."""
    from scipy.special import expit

    from xdetox.scorers.semantic import combiner_features, short_mask

    return combiner_features(expit(scorer.lexical.logits(prepared)), expit(scorer.encoder.logits(prepared)),
                             short_mask(prepared, langs), SHORT_LEXICAL_CLIP)
