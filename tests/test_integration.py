"""The embedded Gemma 3 270M model on a handful of prompts (converted once into the cache)."""

import pytest

from xdetox import data, models
from xdetox.generate import DecodeSpec, Generator
from xdetox.scorers import get_scorer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def embedded():
    return models.load(models.ModelSpec())


def test_embedded_model_loads_from_the_hf_cache(embedded):
    assert embedded.model.config.model_type == "gemma3_text"
    assert (models.embedded_path() / "config.json").is_file()
    assert embedded.dtype == models.resolve_dtype("auto")


def test_embedded_generation_is_seeded_and_scored(embedded):
    corpus = data.load()
    generator = Generator(embedded.model, embedded.tokenizer)
    decode = DecodeSpec(max_new_tokens=12, batch_size=4)
    scorer = get_scorer("offline")
    for lang in ("en", "de"):
        prompts = corpus.prompts(lang, "test_toxic")[:2]
        first = generator.generate(prompts, decode, seed=7)
        assert first == generator.generate(prompts, decode, seed=7)
        assert all(c.text and c.n_tokens <= 12 for c in first)
        values = scorer.score([c.text for c in first], lang)
        assert all(0.0 <= v <= 1.0 for v in values)


def test_bf16_log_probabilities_are_within_one_percent_of_fp32(embedded):
    """The speed dtype must not change what the model says: mean per-token log-probability, bf16 vs fp32."""
    import torch

    if embedded.dtype != torch.bfloat16:
        pytest.skip("this machine runs the embedded model in fp32: nothing to compare")
    fp32 = models.load(models.ModelSpec(), dtype="float32")
    corpus = data.load()
    batches = [[f"Complete the sentence: {p.text}" for p in corpus.prompts(lang, "test_neutral")[:4]]
               for lang in ("en", "de", "zh", "ru", "am")]  # one batch per language: little padding to compute

    def mean_logprob(loaded) -> float:
        tok = loaded.tokenizer
        tok.padding_side = "right"
        total, count = 0.0, 0
        for texts in batches:
            enc = tok(texts, return_tensors="pt", padding=True)
            with torch.inference_mode():
                logits = loaded.model(**enc).logits[:, :-1].float()
            logp = logits.log_softmax(-1).gather(-1, enc["input_ids"][:, 1:, None])[..., 0]
            mask = enc["attention_mask"][:, 1:].bool()
            total, count = total + float(logp[mask].sum()), count + int(mask.sum())
        tok.padding_side = "left"
        return total / count

    ours, reference = mean_logprob(embedded), mean_logprob(fp32)
    print(f"mean token log-prob: bf16 {ours:.4f}, fp32 {reference:.4f}")
    assert abs(ours - reference) <= 0.01 * abs(reference)


def test_embedded_neutral_lm_batches_never_train_an_end_token(embedded, tmp_path):
    """Gemma 3's real tokenizer: no neutral-lm label is EOS, <end_of_turn> or padding, in all 9 languages."""
    import torch

    from xdetox import train
    from xdetox.generate import stop_ids

    stop = stop_ids(embedded.tokenizer, embedded.model.generation_config)
    assert embedded.tokenizer.eos_token_id in stop and len(stop) >= 2
    corpus = data.load()
    for lang in data.LANGS:
        spec = train.TrainSpec(source=lang)
        ids = train.neutral_lm_ids(embedded, train.training_examples(spec, corpus)[:40], spec.max_length)
        assert all(row and not stop & set(row) for row in ids), lang
        assert all(row[0] == embedded.tokenizer.bos_token_id for row in ids), lang
        embedded.tokenizer.padding_side = "right"
        try:  # the training batch itself: targets are the sentence tokens, never a stop token or padding
            batch = train.neutral_lm_collator(embedded.tokenizer)([{"input_ids": row} for row in ids[:8]])
        finally:
            embedded.tokenizer.padding_side = "left"
        labels = batch["labels"]
        assert not stop & set(labels.unique().tolist()), lang
        assert torch.equal((labels != -100).sum(1), batch["attention_mask"].sum(1)), lang
