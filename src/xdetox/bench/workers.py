"""``xdetox bench``'s measurements, each run in a process of its own (``python -m xdetox.bench.workers
WORKER SPEC_JSON``, started by ``xdetox.bench.run``): the reference pattern, xdetox's generator with the
bound of its linear-layer products (``linear_seconds``), LoRA training and the profile. Each prints its
figures as one JSON line."""

from __future__ import annotations

import json
import resource
import sys
import time
from dataclasses import asdict, replace

from xdetox.bench import BenchSpec, Measurement


def _prompts(spec: BenchSpec):
    from xdetox import data

    prompts = data.load().prompts(spec.lang, "test_toxic")
    prompts = (prompts * (spec.prompts // len(prompts) + 1))[: spec.prompts]
    return prompts


def _reference(spec: BenchSpec) -> Measurement:
    """The reference pattern: fp32, one prompt per ``model.generate`` call."""
    import torch

    from xdetox import models
    from xdetox.generate import DecodeSpec

    loaded = models.load(models.ModelSpec(name=spec.model), dtype="float32")
    decode = DecodeSpec(max_new_tokens=spec.max_new_tokens)
    tok, model = loaded.tokenizer, loaded.model
    torch.manual_seed(spec.seed)
    tokens = 0
    start = time.perf_counter()
    with torch.inference_mode():
        for p in _prompts(spec):
            enc = tok(decode.render(p.text), return_tensors="pt")
            out = model.generate(**enc, do_sample=True, temperature=decode.temperature, top_p=decode.top_p,
                                 top_k=0, max_new_tokens=decode.max_new_tokens, pad_token_id=tok.pad_token_id)
            new = out[0, enc["input_ids"].shape[1]:].tolist()
            eos = model.generation_config.eos_token_id
            stops = set(eos if isinstance(eos, list) else [eos])
            tokens += next((i for i, t in enumerate(new) if t in stops), len(new))
    return Measurement("reference", time.perf_counter() - start, tokens, spec.prompts, _peak_rss_mb(), "float32",
                       torch.get_num_threads())


def _xdetox(spec: BenchSpec) -> Measurement:
    import torch

    from xdetox import models
    from xdetox.generate import DecodeSpec, Generator
    from xdetox.prepack import packed_layers

    loaded = models.load(models.ModelSpec(name=spec.model))
    decode = DecodeSpec(max_new_tokens=spec.max_new_tokens, batch_size=spec.batch_size)
    generator = Generator(loaded.model, loaded.tokenizer)
    start = time.perf_counter()
    completions = generator.generate(_prompts(spec), decode, seed=spec.seed)
    seconds = time.perf_counter() - start
    tokens = sum(c.n_tokens for c in completions)
    dtype = str(loaded.dtype).removeprefix("torch.")
    return Measurement("xdetox", seconds, tokens, spec.prompts, _peak_rss_mb(), dtype, torch.get_num_threads(),
                       dict(packed_layers(loaded.model)), linear_seconds(loaded.model, spec.batch_size))


def linear_seconds(model, rows: int, repeats: int = 5) -> float:
    """Seconds of one decoding step's linear-layer products at ``rows`` rows (the output projection
    included), each layer timed alone on random inputs with the weights the generator multiplies with
    (prepacked where ``xdetox.prepack`` packs them); the median of ``repeats`` per layer.

    ``rows`` / this is what generation would reach if a decoding step cost nothing but these products:
    a bound on the tokens/s of batches of ``rows`` (attention, sampling and everything else cost more).
    """
    import statistics

    import torch

    from xdetox.prepack import prepacked

    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    total = 0.0
    with torch.inference_mode(), prepacked(model):
        for layer in layers:
            x = torch.randn(rows, 1, layer.in_features, dtype=layer.weight.dtype, device=layer.weight.device)
            layer(x)  # warm-up
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                layer(x)
                times.append(time.perf_counter() - start)
            total += statistics.median(times)
    return total


def _profile(spec: BenchSpec) -> dict:
    """xdetox's generator under torch.profiler (after one warm-up batch): time per region and top operators."""
    from torch.profiler import ProfilerActivity, profile, record_function

    from xdetox import models
    from xdetox.generate import DecodeSpec, Generator

    loaded = models.load(models.ModelSpec(name=spec.model))
    decode = DecodeSpec(max_new_tokens=spec.max_new_tokens, batch_size=spec.batch_size)
    generator = Generator(loaded.model, loaded.tokenizer)
    prompts = _prompts(spec)
    generator.generate(prompts[: spec.batch_size], decode, seed=spec.seed + 1)  # warm-up
    live: list[int] = []  # rows per output-projection call
    open_regions: list = []

    def enter(module, args):
        live.append(args[0].shape[0])
        open_regions.append(record_function("xdetox::lm_head").__enter__())

    def leave(module, args, out):
        open_regions.pop().__exit__(None, None, None)

    head = loaded.model.get_output_embeddings()
    head.register_forward_pre_hook(enter)
    head.register_forward_hook(leave)
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        completions = generator.generate(prompts, decode, seed=spec.seed)
    wall = time.perf_counter() - start
    events = prof.key_averages()
    spent = {e.key.removeprefix("xdetox::"): e.cpu_time_total / 1e6 for e in events if e.key.startswith("xdetox::")}
    named = [("prefill (prompt forward passes)", spent.get("prefill", 0.0)),
             ("decoding steps (forward passes)", spent.get("decode_step", 0.0)),
             ("  of which output projection", spent.get("lm_head", 0.0)),
             ("sampling (top-k, top-p, draw)", spent.get("sample", 0.0)),
             ("dropping finished rows", spent.get("drop_finished", 0.0))]
    accounted = sum(seconds for name, seconds in named if not name.startswith("  "))
    named.append(("rest (Python, tokenising, bookkeeping)", max(0.0, wall - accounted)))
    ops = sorted((e for e in events if e.key.startswith("aten::")), key=lambda e: e.self_cpu_time_total, reverse=True)
    return {
        "wall_s": wall, "tokens": sum(c.n_tokens for c in completions), "batch_size": spec.batch_size,
        "rows_per_step": sum(live) / len(live) if live else 0.0,  # prefill calls included
        "regions": named, "top_ops": [(e.key, e.self_cpu_time_total / 1e6) for e in ops[:8]],
    }


def _train(spec: BenchSpec) -> Measurement:
    import tempfile
    from pathlib import Path

    import torch

    from xdetox import data, models, train

    corpus = data.load()
    pairs = [p for p in corpus.pairs if not (p.lang == spec.lang and p.split == "train")]
    pairs += corpus.select(spec.lang, "train")[: spec.train_examples]
    corpus = replace(corpus, pairs=tuple(pairs))
    tspec = train.TrainSpec(source=spec.lang, epochs=1, seed=spec.seed)
    with tempfile.TemporaryDirectory() as tmp:
        out = train.train_adapter(models.ModelSpec(name=spec.model), tspec, corpus, Path(tmp) / "a", progress=False)
        meta = train.read_metadata(out)
    dtype = str(models.resolve_dtype("auto")).removeprefix("torch.")
    return Measurement("train", meta["train_seconds"], meta["train_tokens"], meta["n_examples"], _peak_rss_mb(), dtype,
                       torch.get_num_threads())


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":  # a worker: python -m xdetox.bench.workers WORKER SPEC_JSON
    from xdetox._io import quiet_libraries

    quiet_libraries()
    name, raw = sys.argv[1], json.loads(sys.argv[2])
    worker = {"reference": _reference, "xdetox": _xdetox, "train": _train, "profile": _profile}[name]
    result = worker(BenchSpec(**raw))
    print(json.dumps(result if isinstance(result, dict) else asdict(result)))
