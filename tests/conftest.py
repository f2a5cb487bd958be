"""Shared fixtures: a tiny randomly initialised causal LM and tokenizer, built here.

Nothing is downloaded: the tokenizer is a byte-level BPE trained in the test on
the bundled corpus, the model a 2-layer Gemma 3 with random weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from xdetox import data

    corpus = data.load_bundled()
    texts = [p.toxic for p in corpus.pairs] + [p.neutral for p in corpus.pairs]
    texts.append("Complete the sentence:")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    tok.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=600, special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
        ),
    )
    from tokenizers.processors import TemplateProcessing

    tok.post_processor = TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>",
        unk_token="<unk>",
    )


def build_tiny_model(path: Path, seed: int = 0) -> Path:
    """A 2-layer Gemma 3 causal LM with random weights."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    fast = _tiny_tokenizer()
    torch.manual_seed(seed)
    config = Gemma3TextConfig(
        vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=512,
        sliding_window=64, pad_token_id=0, eos_token_id=1, bos_token_id=2,
        layer_types=["sliding_attention", "full_attention"],
    )
    model = Gemma3ForCausalLM(config)
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path


def build_tiny_seq2seq(path: Path, seed: int = 0) -> Path:
    """A 2-layer mT5-style encoder-decoder with random weights."""
    import torch
    from transformers import MT5Config, MT5ForConditionalGeneration

    fast = _tiny_tokenizer()
    torch.manual_seed(seed)
    config = MT5Config(
        vocab_size=len(fast), d_model=32, d_kv=16, d_ff=64, num_layers=2, num_decoder_layers=2,
        num_heads=2, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )
    MT5ForConditionalGeneration(config).save_pretrained(path)
    fast.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_seq2seq_dir(tmp_path_factory) -> Path:
    return build_tiny_seq2seq(tmp_path_factory.mktemp("tiny-seq2seq"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch) -> Path:
    """Point xdetox's cache at a fresh temporary folder for one test."""
    monkeypatch.setenv("XDETOX_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="session")
def tiny_classifier_dir(tmp_path_factory):
    """A 2-layer BERT classifier with random weights, labels {0: neutral, 1: toxic}."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    path = tmp_path_factory.mktemp("tiny-classifier")
    tokenizer = _tiny_tokenizer()
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=512, pad_token_id=0,
        id2label={0: "neutral", 1: "toxic"}, label2id={"neutral": 0, "toxic": 1},
    )
    BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(autouse=True)
def _no_full_tuned_scorer(monkeypatch):
    """The default toxicity scorer (``offline-tuned``) trains for about 20 minutes on first use, so
    no test may build it: a test that scores names a scorer (tests/test_tuned.py trains a small one).
    Guarding ``load`` (not only ``train``) makes a test fail here as it would on a clean machine,
    where the cache is empty."""
    from xdetox.scorers import registry, tuned

    original = tuned.TunedScorer.load.__func__

    def guarded(cls, config=tuned.TunedScorerConfig(), progress=True):
        if config == tuned.TunedScorerConfig():
            pytest.fail("this test would build the full offline-tuned scorer (about 20 minutes): name a scorer")
        return original(cls, config, progress)

    monkeypatch.setattr(tuned.TunedScorer, "load", classmethod(guarded))
    monkeypatch.setitem(registry.SCORERS, "offline-tuned", tuned.TunedScorer.load)
