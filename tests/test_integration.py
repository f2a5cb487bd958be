"""The embedded Gemma 3 270M model on a handful of prompts (converted once into the cache)."""

import pytest

from xdetox import data, models
from xdetox.generate import DecodeSpec, Generator
from xdetox.score import get_scorer

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
