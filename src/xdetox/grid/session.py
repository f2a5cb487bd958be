"""``Session``: what a worker process keeps between training settings.

The loaded base model (one at a time) with the adapters switched in it, tokenizers
loaded without their model, the vLLM engine of the last model generated with vLLM,
and the scorers. ``generator_for`` gives the one ``BatchGenerator`` a setting samples
with, whichever backend the config chose.
"""

from __future__ import annotations

import gc
from pathlib import Path

from xdetox.grid.plan import TrainSetting
from xdetox.specs import ModelSpec


def collect_garbage() -> None:
    """Free what a dropped model left in reference cycles, then set what survives aside (``gc.freeze``).

    What survives a full collection here is what the process keeps: the modules torch, transformers and
    scikit-learn imported (half a million objects), the scorers, the store. Set aside, later collections
    (this one's, and those accelerate and the Trainer make at each training) walk only what was made since:
    about 0.27 s each becomes a few milliseconds. Objects set aside are still freed when their last
    reference goes; a model is always dropped before this is called, so none of it is set aside.
    """
    gc.collect()
    gc.freeze()


class Session:
    """What a worker process keeps between settings: the loaded base model, its adapters, scorers."""

    def __init__(self):
        self.loaded = None
        self.peft = None
        self.scorers: dict[str, object] = {}
        self.tokenizers: dict[ModelSpec, object] = {}  # tokenizers loaded without their model
        self.vllm = None  # (ModelSpec, VLLMGenerator) of the last model generated with vLLM

    def base(self, spec: ModelSpec):
        from xdetox import models

        if self.loaded is None or self.loaded.spec != spec:
            self.loaded = self.peft = None
            collect_garbage()
            self.loaded = models.load(spec)
        return self.loaded

    def release(self) -> None:
        """Let go of the loaded base model and its adapters (a training loads a model of its own: two at once
        would double the peak memory); the next ``base`` loads it again. Tokenizers and scorers stay."""
        if self.loaded is not None:
            self.loaded = self.peft = None
            collect_garbage()

    def tokenizer(self, spec: ModelSpec):
        """The base model's tokenizer (without loading the model when it is not loaded)."""
        if self.loaded is not None and self.loaded.spec == spec:
            return self.loaded.tokenizer
        if spec not in self.tokenizers:  # loaded once: the sweep after a Ray run asks for every evaluation
            from transformers import AutoTokenizer

            from xdetox import models

            self.tokenizers[spec] = AutoTokenizer.from_pretrained(models.locate(spec),
                                                                  trust_remote_code=spec.trust_remote_code)
        return self.tokenizers[spec]

    def model_for(self, setting: TrainSetting, adapter: Path | None):
        """The base model with the setting's adapter active (or none, for ZS); an eval setting's given model."""
        loaded = self.base(setting.generates_with)
        if adapter is None:
            if self.peft is None:
                return loaded.model
            self.peft.base_model.disable_adapter_layers()
            return self.peft
        from peft import PeftModel

        if self.peft is None:
            self.peft = PeftModel.from_pretrained(loaded.model, str(adapter), adapter_name=setting.key)
        elif setting.key not in self.peft.peft_config:
            self.peft.load_adapter(str(adapter), adapter_name=setting.key)
        self.peft.base_model.enable_adapter_layers()
        self.peft.set_adapter(setting.key)
        self.peft.eval()
        return self.peft

    def vllm_for(self, spec: ModelSpec, max_lora_rank: int):
        """The vLLM engine of this base model (built once; adapters come as LoRA requests)."""
        from xdetox import models
        from xdetox.generate import VLLMGenerator

        if self.vllm is None or self.vllm[0] != spec or self.vllm[1].max_lora_rank < max_lora_rank:
            self.vllm = None
            collect_garbage()
            loaded = self.base(spec)
            self.vllm = (spec, VLLMGenerator(models.locate(spec), loaded.tokenizer, max_lora_rank=max_lora_rank,
                                             generation_config=loaded.model.generation_config))
        return self.vllm[1]

    def generator_for(self, setting: TrainSetting, adapter: Path | None, requested: str, max_lora_rank: int):
        """The ``BatchGenerator`` of a setting: its base model with its adapter active (none for ZS).

        ``requested``: the config's generator ("auto", "transformers" or "vllm"; see
        ``choose_generator``). With vLLM the adapter is a LoRA request on the base model's engine.
        """
        from xdetox.generate import Generator, choose_generator

        loaded = self.base(setting.generates_with)
        if choose_generator(requested, loaded.seq2seq, warn=lambda _: None) == "vllm":
            engine = self.vllm_for(setting.generates_with, max_lora_rank)
            return engine if adapter is None else engine.with_adapter(setting.key, adapter)
        return Generator(self.model_for(setting, adapter), loaded.tokenizer)

    def scorer(self, name: str, progress: bool = False):
        """The scorer of ``name`` (loaded once); a scorer with a ``progress`` attribute gets ``progress``.
        ``sentences:X`` wraps this session's own X (one model in memory, not two: 0.75 GB for offline-tuned)."""
        from xdetox.scorers.registry import check_scorer, get_scorer
        from xdetox.scorers.sentences import SENTENCES_PREFIX, SentenceMaxScorer, inner_scorer_name

        if name not in self.scorers:
            if name.startswith(SENTENCES_PREFIX):
                check_scorer(name)
                self.scorers[name] = SentenceMaxScorer(name, self.scorer(inner_scorer_name(name), progress))
            else:
                self.scorers[name] = get_scorer(name)
        scorer = self.scorers[name]
        if hasattr(scorer, "progress"):
            scorer.progress = progress
        return scorer
