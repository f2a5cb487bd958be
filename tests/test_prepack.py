"""Prepacked linear weights (``xdetox.prepack``): the same outputs (bf16 bit for bit, fp32 within the
stated tolerance), or no packing at all."""

import pytest
import torch

from xdetox import data, models, prepack
from xdetox.generate import DecodeSpec, Generator, derive_seed, make_batches
from xdetox.scorers.perplexity import scored_batches

needs_onednn = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")


@pytest.fixture
def tiny_bf16(tiny_model_dir):
    """A fresh load each time: a packed weight stays on its layer."""
    return models.load(models.ModelSpec(name=str(tiny_model_dir)), dtype="bfloat16")


def _inputs(loaded, texts):
    return loaded.tokenizer(texts, return_tensors="pt", padding=True)


def _packed_layers(model) -> int:
    return sum("forward" in vars(m) for m in model.modules())


@needs_onednn
def test_packed_layers_give_the_same_logits_and_are_restored_on_exit(tiny_bf16):
    model = tiny_bf16.model
    enc = _inputs(tiny_bf16, ["Complete the sentence: du bist", "hallo"])
    with torch.inference_mode():
        plain = model(**enc).logits
        with prepack.prepacked(model, min_features=16) as packed:
            inside = model(**enc).logits
            n_packed = _packed_layers(model)
        after = model(**enc).logits
    assert torch.equal(inside, plain)
    assert torch.equal(after, plain)
    assert sum(packed.values()) == n_packed
    assert _packed_layers(model) == 0
    if models.cpu_supports_bf16():  # where bf16 is the default dtype, the output projection and the MLPs pack
        assert n_packed >= 5 and set(packed) == {"onednn"}


def test_a_kernel_that_adds_in_another_order_is_not_used(tiny_bf16, monkeypatch):
    def nudged(weight):
        return lambda x, bias: torch.nn.functional.linear(x, weight, bias) + torch.finfo(weight.dtype).eps
    monkeypatch.setattr(prepack, "candidates", lambda dtype: [("nudged", nudged)])
    model = tiny_bf16.model
    enc = _inputs(tiny_bf16, ["hallo welt"])
    with torch.inference_mode():
        plain = model(**enc).logits
        with prepack.prepacked(model, min_features=16) as packed:
            inside = model(**enc).logits
    assert not packed and _packed_layers(model) == 0
    assert torch.equal(inside, plain)


@needs_onednn
def test_fp32_layers_pack_within_the_stated_tolerance_and_a_wider_gap_is_refused(monkeypatch):
    torch.manual_seed(0)
    layer = torch.nn.Linear(256, 1024)
    x = torch.randn(3, 5, 256)
    with torch.no_grad():
        expected = layer(x)
        with prepack.prepacked(layer, min_features=16) as packed:
            inside = layer(x)
        assert packed == {"onednn": 1}
        assert (inside - expected).abs().max() <= prepack.FP32_TOLERANCE * expected.abs().max()
        real = prepack._onednn

        def off_by_more(weight):
            product = real(weight)
            return lambda x, bias: product(x, bias) * (1 + 10 * prepack.FP32_TOLERANCE)
        monkeypatch.setattr(prepack, "candidates", lambda dtype: [("onednn", off_by_more)])
        layer.weight.add_(0)  # a new version of the weight: packed again, with the candidate above
        with prepack.prepacked(layer, min_features=16) as packed:
            assert not packed and torch.equal(layer(x), expected)


def test_the_description_names_the_check_per_dtype():
    if torch.backends.mkldnn.is_available():
        assert "bit-identical" in prepack.description(torch.bfloat16)
        assert f"within {prepack.FP32_TOLERANCE:g}" in prepack.description(torch.float32)
    assert prepack.description(torch.float16) == "F.linear"


@needs_onednn
def test_inputs_that_need_gradients_take_f_linear():
    layer = torch.nn.Linear(32, 48).to(torch.bfloat16)
    x = torch.randn(3, 32, dtype=torch.bfloat16, requires_grad=True)
    layer(x).float().sum().backward()
    expected, x.grad = x.grad.clone(), None
    with prepack.prepacked(layer, min_features=16):
        layer(x).float().sum().backward()
    assert torch.equal(x.grad, expected)


@needs_onednn
def test_a_changed_weight_is_packed_again():
    layer = torch.nn.Linear(32, 48).to(torch.bfloat16)
    x = torch.randn(4, 32, dtype=torch.bfloat16)
    with torch.no_grad():
        with prepack.prepacked(layer, min_features=16):
            layer(x)
        layer.weight.mul_(2)  # as merging an adapter into the base weights does
        with prepack.prepacked(layer, min_features=16):
            inside = layer(x)
        assert torch.equal(inside, torch.nn.functional.linear(x, layer.weight, layer.bias))


@needs_onednn
def test_generation_with_packed_layers_samples_the_same_tokens(tiny_bf16, monkeypatch):
    generator = Generator(tiny_bf16.model, tiny_bf16.tokenizer)
    decode = DecodeSpec(max_new_tokens=8, batch_size=4)
    prompts = data.load().prompts("es", "test_toxic")[:10]
    work = [(b, derive_seed(5, b.index)) for b in make_batches(prompts, generator.tokenizer, decode)]
    plain = [c for batch, seed in work for c in generator.generate_batch(batch, decode, seed)]
    monkeypatch.setattr(prepack, "MIN_FEATURES", 16)
    seen = []
    real = prepack.pack_layer
    monkeypatch.setattr(prepack, "pack_layer", lambda layer: seen.append(real(layer)) or seen[-1])
    packed = [c for completions in generator.generate_batches(work, decode) for c in completions]
    assert packed == plain
    assert seen and _packed_layers(tiny_bf16.model) == 0
    if models.cpu_supports_bf16():
        assert "onednn" in seen


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_perplexity_from_the_real_rows_equals_the_full_logits(tiny_model_dir, dtype, monkeypatch):
    loaded = models.load(models.ModelSpec(name=str(tiny_model_dir)), dtype=dtype)
    monkeypatch.setattr(prepack, "MIN_FEATURES", 16)
    texts = ["du bist", "", "ein viel längerer Satz, der viel Padding bei den anderen erzeugt", "ok"]
    got = list(scored_batches(loaded.model, loaded.tokenizer, texts, batch_size=3, max_length=64, pooled=True))
    tok = loaded.tokenizer
    tok.padding_side = "right"
    for start, (nll, embedding) in zip((0, 3), got, strict=True):
        enc = tok([t + tok.eos_token for t in texts[start:start + 3]], return_tensors="pt", padding=True)
        with torch.inference_mode():
            out = loaded.model(**enc, output_hidden_states=True)
        mask = enc["attention_mask"][:, 1:].bool()
        losses = torch.nn.functional.cross_entropy(out.logits[:, :-1].float().transpose(1, 2),
                                                   enc["input_ids"][:, 1:], reduction="none")
        expected = ((losses * mask).sum(1) / mask.sum(1)).tolist()
        assert nll == pytest.approx(expected, rel=1e-6)
        weights = enc["attention_mask"].unsqueeze(-1).float()
        pooled = (out.hidden_states[-1].float() * weights).sum(1) / weights.sum(1)
        if dtype == "bfloat16":  # bit for bit; fp32 layers within prepack.FP32_TOLERANCE
            assert torch.equal(torch.from_numpy(embedding), pooled)
        else:
            assert torch.allclose(torch.from_numpy(embedding), pooled, rtol=1e-5, atol=1e-5)
