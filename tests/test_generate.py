import pytest
import torch
from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from xdetox import data, models
from xdetox.generate import DecodeSpec, Generator, NucleusSampler, derive_seed, make_batches


@pytest.mark.parametrize("scale", [0.05, 1.0, 3.0, 8.0])
@pytest.mark.parametrize("top_p", [0.5, 0.9, 0.99])
def test_nucleus_sampler_keeps_the_same_tokens_as_transformers(scale, top_p):
    gen = torch.Generator().manual_seed(int(scale * 100 + top_p * 10))
    logits = torch.randn(8, 5000, generator=gen) * scale * 4
    logits[:, :3] += 6 * scale
    sampler = NucleusSampler(temperature=0.7, top_p=top_p, k=64)
    idx, probs = sampler.kept(logits.clone())
    ref = TopPLogitsWarper(top_p)(None, TemperatureLogitsWarper(0.7)(None, logits.clone()))
    ref_probs = ref.softmax(dim=-1)
    for row in range(logits.shape[0]):
        ours = torch.zeros(logits.shape[1]).scatter_add_(0, idx[row], probs[row])
        assert torch.equal(ours > 0, ref_probs[row] > 0)
        assert torch.allclose(ours, ref_probs[row], atol=1e-5)


def test_nucleus_sampler_with_top_k_matches_transformers():
    logits = torch.randn(4, 1000, generator=torch.Generator().manual_seed(3)) * 2
    idx, probs = NucleusSampler(temperature=0.7, top_p=0.9, top_k=20).kept(logits.clone())
    warped = TemperatureLogitsWarper(0.7)(None, logits.clone())
    warped = TopPLogitsWarper(0.9)(None, TopKLogitsWarper(20)(None, warped))
    ref = warped.softmax(dim=-1)
    for row in range(4):
        ours = torch.zeros(1000).scatter_add_(0, idx[row], probs[row])
        assert torch.allclose(ours, ref[row], atol=1e-5)


def test_nucleus_sampler_draws_follow_the_distribution():
    logits = torch.tensor([[2.0, 1.5, 1.0, 0.5, -1.0, -3.0] + [-10.0] * 994])
    sampler = NucleusSampler(temperature=1.0, top_p=0.9, seed=7, k=8)
    idx, probs = sampler.kept(logits)
    expected = torch.zeros(1000).scatter_add_(0, idx[0], probs[0])
    draws = torch.stack([sampler(None, logits).argmax(-1) for _ in range(4000)]).flatten()
    freq = torch.bincount(draws, minlength=1000).float() / len(draws)
    assert set(draws.unique().tolist()) <= set(torch.nonzero(expected).flatten().tolist())
    assert torch.allclose(freq, expected, atol=0.03)
    again = NucleusSampler(temperature=1.0, top_p=0.9, seed=7, k=8)
    assert torch.equal(torch.stack([again(None, logits).argmax(-1) for _ in range(4000)]).flatten(), draws)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_nucleus_sampler_draws_the_same_tokens_chunk_by_chunk(monkeypatch, dtype):
    """Candidates chosen a few rows at a time give every row the draw of the whole batch at once, also
    where some rows are ranked in full (flat rows: their nucleus reaches past the top k) and others not."""
    gen = torch.Generator().manual_seed(11)
    logits = torch.randn(37, 3000, generator=gen) * 4
    logits[::5] *= 0.02  # flat: ranked in full, wider than k
    logits[3::7] = logits[3::7].round()  # ties between candidates
    logits = logits.to(dtype)
    rows = torch.tensor([0, 2, 3, 5, 8, 13, 21, 22, 30, 36, 37, 40])  # live rows of an original batch of 41
    draws = {}
    for chunk in (4, 16, 10**6):
        monkeypatch.setattr(NucleusSampler, "CHUNK_ROWS", chunk)
        sampler = NucleusSampler(temperature=0.7, top_p=0.9, seed=5, k=32)
        draws[chunk] = [sampler.draw(logits), sampler.draw(logits[: len(rows)], rows, 41)]
    for chunk in (4, 16):
        assert all(torch.equal(a, b) for a, b in zip(draws[chunk], draws[10**6]))


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    loaded = models.load(models.ModelSpec(name=str(tiny_model_dir)))
    return Generator(loaded.model, loaded.tokenizer), loaded


def test_seeded_generation_is_reproducible_and_batch_independent(tiny):
    generator, _ = tiny
    prompts = data.load().prompts("de", "test_toxic")[:7]
    decode = DecodeSpec(max_new_tokens=6, batch_size=3)
    first = generator.generate(prompts, decode, seed=11)
    again = generator.generate(prompts, decode, seed=11)
    assert first == again
    assert [c.prompt_id for c in first] != [] and len(first) == 7
    other = generator.generate(prompts, decode, seed=12)
    assert [c.text for c in other] != [c.text for c in first]
    # A batch run on its own (as after a resume) gives the batch's completions of the full run.
    batches = make_batches(prompts, generator.tokenizer, decode)
    last = batches[-1]
    alone = generator.generate_batch(last, decode, derive_seed(11, last.index))
    assert alone == [c for c in first if c.prompt_id in {p.id for p in last.prompts}]


def test_completion_is_only_new_text(tiny):
    generator, loaded = tiny
    prompts = data.load().prompts("en", "test_toxic")[:4]
    decode = DecodeSpec(max_new_tokens=3, batch_size=4)
    for c in generator.generate(prompts, decode, seed=1):
        assert c.prompt.startswith("Complete the sentence: ")
        assert c.n_tokens <= 3
        assert "Complete the sentence" not in c.text


def test_batches_bucket_by_length_and_cover_every_prompt(tiny):
    generator, _ = tiny
    prompts = data.load().prompts("ru", "test_toxic")[:10]
    decode = DecodeSpec(batch_size=4)
    batches = make_batches(prompts, generator.tokenizer, decode)
    assert [len(b.prompts) for b in batches] == [4, 4, 2]
    ids = [p.id for b in batches for p in b.prompts]
    assert sorted(ids) == sorted(p.id for p in prompts)
    lengths = [len(generator.tokenizer(decode.render(p.text)).input_ids) for b in batches for p in b.prompts]
    assert lengths == sorted(lengths)


def test_samples_per_prompt(tiny):
    generator, _ = tiny
    prompts = data.load().prompts("es", "test_toxic")[:2]
    out = generator.generate(prompts, DecodeSpec(max_new_tokens=4, samples_per_prompt=3, batch_size=6), seed=5)
    assert sorted((c.prompt_id, c.sample) for c in out) == sorted(
        (p.id, s) for p in prompts for s in range(3)
    )


def test_derive_seed_is_stable_and_distinct():
    assert derive_seed("a", 1) == derive_seed("a", 1)
    assert derive_seed("a", 1) != derive_seed("a", 2)
    assert 0 <= derive_seed("x") < 2**31


def _until_stop(tokens, stop):
    """Tokens up to and including the first stop token."""
    for i, t in enumerate(tokens):
        if t in stop:
            return tokens[:i + 1]
    return tokens


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dropping_finished_rows_keeps_what_transformers_generate_samples(tiny, seed):
    """decode_rows (finished rows leave the batch) == generate (they stay), token for token."""
    generator, loaded = tiny
    stop = generator.stop_ids()
    prompts = data.load().prompts("en", "test_toxic")[:6]
    texts = [DecodeSpec().render(p.text) for p in prompts]
    enc = generator.tokenizer(texts, return_tensors="pt", padding=True)
    # a flat, high-temperature distribution with a likely EOS makes rows end at different steps
    eos = sorted(stop)[0]
    bias = torch.zeros(loaded.model.config.vocab_size)
    bias[eos] = 8.0

    def sampler():
        return NucleusSampler(temperature=1.5, top_p=0.95, seed=seed, k=16)

    head = loaded.model.get_output_embeddings()
    handle = head.register_forward_hook(lambda module, args, out: out + bias)
    try:
        ours = generator.decode_rows(enc["input_ids"], enc["attention_mask"], sampler(), 12, stop)
        ref = generator.hf_generate(enc, sampler(), 12)[:, enc["input_ids"].shape[1]:].tolist()
    finally:
        handle.remove()
    lengths = [len(t) for t in ours]
    assert len(set(lengths)) > 1 and min(lengths) < 12  # some rows really left early
    assert ours == [_until_stop(t, stop) for t in ref]


def test_vllm_generator_is_skipped_on_cpu_with_a_message(monkeypatch):
    from xdetox.generate import choose_generator

    messages = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert choose_generator("vllm", warn=messages.append) == "transformers"
    assert messages == ["xdetox: vllm generator skipped: no CUDA device (vLLM runs on GPUs); "
                        "generating with transformers"]
    assert choose_generator("auto", warn=messages.append) == "transformers"
    assert choose_generator("transformers", warn=messages.append) == "transformers"
    assert len(messages) == 1  # auto falls back silently
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert choose_generator("vllm", seq2seq=True, warn=messages.append) == "transformers"
    assert "encoder-decoder" in messages[-1]
    with pytest.raises(ValueError, match="unknown generator"):
        choose_generator("fast")


def test_generate_batches_is_generate_batch_for_each_batch_and_seed(tiny):
    generator, _ = tiny
    prompts = data.load().prompts("uk", "test_toxic")[:5]
    decode = DecodeSpec(max_new_tokens=4, batch_size=2)
    work = [(b, derive_seed(3, "e", b.index)) for b in make_batches(prompts, generator.tokenizer, decode)]
    assert list(generator.generate_batches(work, decode)) == [generator.generate_batch(b, decode, s) for b, s in work]
    assert generator.generate(prompts, decode, seed=3) != []


class _FakeLLM:
    """vLLM's ``LLM`` as far as ``VLLMGenerator`` uses it: each sample's token ids follow its seed."""

    calls: list = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def generate(self, prompts, params, lora_request=None, use_tqdm=True):
        from types import SimpleNamespace

        _FakeLLM.calls.append((list(prompts), lora_request))
        return [SimpleNamespace(outputs=[SimpleNamespace(token_ids=[10 + (p.seed + i) % 50, 11]) for i in range(p.n)])
                for p in params]


@pytest.fixture
def fake_vllm(monkeypatch):
    import sys
    import types
    from types import SimpleNamespace

    vllm = types.ModuleType("vllm")
    vllm.LLM = _FakeLLM
    vllm.SamplingParams = lambda **kw: SimpleNamespace(**kw)
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = lambda name, lora_id, path: (name, lora_id, path)
    for name, module in {"vllm": vllm, "vllm.lora": types.ModuleType("vllm.lora"), "vllm.lora.request": request}.items():
        monkeypatch.setitem(sys.modules, name, module)
    _FakeLLM.calls = []
    return _FakeLLM.calls


def test_vllm_generator_implements_the_same_interface_chunk_by_chunk(tiny, fake_vllm, tmp_path):
    from xdetox.generate import VLLMGenerator

    generator, loaded = tiny
    prompts = data.load().prompts("en", "test_toxic")[:7]
    decode = DecodeSpec(max_new_tokens=4, batch_size=2, samples_per_prompt=2)
    batches = make_batches(prompts, generator.tokenizer, decode)
    work = [(b, derive_seed(5, "e", b.index)) for b in batches]
    engine = VLLMGenerator("model", loaded.tokenizer, generation_config=loaded.model.generation_config, chunk=3)
    tuned = engine.with_adapter("x-ft:en", tmp_path / "adapter")
    out = list(tuned.generate_batches(iter(work), decode))
    assert [len(prompts_of_call) for prompts_of_call, _ in fake_vllm] == [3, 3, 1]  # 7 batches of 1 prompt, 3 a call
    assert {lora for _, lora in fake_vllm} == {("x-ft:en", 1, str(tmp_path / "adapter"))}
    assert [[(c.prompt_id, c.sample) for c in cs] for cs in out] == [
        [(p.id, s) for p in b.prompts for s in range(2)] for b in batches]
    assert all(c.prompt == decode.render(p.text) and c.n_tokens == 2 for (b, _), cs in zip(work, out)
               for p, c in zip([p for p in b.prompts for _ in range(2)], cs))
    fake_vllm.clear()
    again = list(engine.generate_batches(work, decode))  # the base model: no LoRA request, same seeds
    assert again == out and {lora for _, lora in fake_vllm} == {None} and engine.adapter is None
