"""``hf:<model id or path>[#<label>]``: any local Hugging Face sequence classifier as a toxicity scorer.

Nothing is downloaded: the model must be a directory or already in the local Hugging Face
cache.  ``HFScorerSpec`` parses the name and checks the model and its label offline;
``toxic_label_index`` picks the output that is the toxicity probability.  transformers and
torch are imported only when a classifier is checked or loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from xdetox.data import LANGS
from xdetox.errors import XdetoxInputError
from xdetox.scorers.base import check_input

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

HF_PREFIX = "hf:"
NOT_TOXIC_MARKERS: tuple[str, ...] = ("non", "not", "neutral")


@dataclass(frozen=True)
class HFScorerSpec:
    """``hf:<model id or path>[#<label>]``: which classifier, and which label is "toxic"."""

    model: str
    label: str | None = None

    @classmethod
    def parse(cls, name: str) -> HFScorerSpec:
        model, sep, label = name.removeprefix(HF_PREFIX).partition("#")
        if not model.strip() or (sep and not label.strip()):
            raise XdetoxInputError(f"bad scorer {name!r}; write hf:<model id or path>[#<label>]")
        return cls(model.strip(), label.strip() or None)

    @property
    def name(self) -> str:
        return f"{HF_PREFIX}{self.model}" + (f"#{self.label}" if self.label else "")

    def config(self) -> PretrainedConfig:
        """The model's config from disk or the local Hugging Face cache (never downloads)."""
        from transformers import AutoConfig

        try:
            return AutoConfig.from_pretrained(self.model, local_files_only=True)
        except (OSError, ValueError):
            raise XdetoxInputError(
                f"scorer {self.name!r}: {self.model!r} is neither a model directory nor a model in the "
                "local Hugging Face cache; download it first or give a path"
            ) from None

    def check(self) -> int:
        """Validate offline; the index of the toxic label."""
        return toxic_label_index(self.config().id2label, self.label)


def toxic_label_index(id2label: Mapping[int, str], label: str | None = None) -> int:
    """Which output of a classifier is the toxicity probability.

    ``label`` names it (case-insensitive) or gives its index.  Without one: the first label
    whose name contains "toxic" but none of "non", "not", "neutral"; else index 1 (index 0
    for a one-output model).
    """
    names = {int(index): str(name) for index, name in id2label.items()}
    if label is not None:
        for index, name in sorted(names.items()):
            if name.lower() == label.lower():
                return index
        if label.isdigit() and int(label) in names:
            return int(label)
        raise XdetoxInputError(
            f"label {label!r} is not one of the model's labels: {', '.join(names[i] for i in sorted(names))}"
        )
    for index, name in sorted(names.items()):
        lowered = name.lower()
        if "toxic" in lowered and not any(marker in lowered for marker in NOT_TOXIC_MARKERS):
            return index
    return 1 if len(names) > 1 else 0


class HFScorer:
    """A Hugging Face ``AutoModelForSequenceClassification`` as a toxicity scorer.

    Texts go in batches of ``batch_size``, truncated to ``max_length`` tokens; the score is
    the softmax probability of the toxic label (``toxic_label_index``), or its sigmoid for a
    multi-label or one-output model.  Runs on the GPU when there is one.  The classifier's
    language coverage is not known here: every LANGS language is accepted.
    """

    kind = "toxicity"
    supported_languages: frozenset[str] = frozenset(LANGS)

    def __init__(self, spec: HFScorerSpec, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                 label_index: int, batch_size: int = 32, max_length: int = 512) -> None:
        self.name = spec.name
        self.spec = spec
        self.model = model
        self.tokenizer = tokenizer
        self.label_index = label_index
        self.batch_size = batch_size
        self.max_length = min(max_length, tokenizer.model_max_length)
        config = model.config
        self.multi_label = config.problem_type == "multi_label_classification" or config.num_labels == 1

    @classmethod
    def checked_factory(cls, name: str) -> Callable[[], HFScorer]:
        """The factory for scorer ``name`` (``hf:...``), once its model and label exist offline."""
        spec = HFScorerSpec.parse(name)
        spec.check()
        return partial(cls.load, spec)

    @classmethod
    def load(cls, spec: HFScorerSpec, batch_size: int = 32, device: str | None = None) -> HFScorer:
        """Load the classifier from disk or the local cache, in eval mode on ``device``."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from xdetox.models import device as default_device

        label_index = spec.check()
        tokenizer = AutoTokenizer.from_pretrained(spec.model, local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(spec.model, local_files_only=True)
        model.to(device or default_device()).eval()
        return cls(spec, model, tokenizer, label_index, batch_size=batch_size)

    def score(self, texts: list[str], lang: str) -> list[float]:
        """Toxicity probability of each text; ``lang`` is checked but not used."""
        check_input(self, texts, lang)
        scores: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            scores.extend(self._score_batch(texts[start:start + self.batch_size]))
        return scores

    def _score_batch(self, texts: list[str]) -> list[float]:
        import torch

        encoded = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt").to(self.model.device)
        with torch.inference_mode():
            logits = self.model(**encoded).logits.float()
        probs = logits.sigmoid() if self.multi_label else logits.softmax(dim=-1)
        return probs[:, self.label_index].tolist()

