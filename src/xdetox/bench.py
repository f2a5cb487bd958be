"""``xdetox bench``: xdetox's generator against the reference pattern, on the same prompts.

The reference scripts sample one prompt at a time in fp32 with ``model.generate``
(transformers' own temperature/top-p sampling over the full vocabulary). xdetox
batches prompts by length, runs bf16 where the hardware supports it and samples
from the top candidates only (``generate.NucleusSampler``). Both use the same
prompts and decoding settings (temperature 0.7, top-p 0.9, 50 new tokens).

Each measurement runs in its own process, so its peak RSS is its own. Training
throughput is one LoRA epoch on the source language's train neutrals.

``--profile`` adds a fourth process that runs xdetox's generator under
``torch.profiler`` and says where the time goes: the prefill, the decoding steps,
the output projection inside them (262k-token vocabulary), sampling, dropping
finished rows, the rest (Python, tokenisation), and the top operators.

Beside xdetox's tokens/s stands a bound on it (``linear_seconds``): the tokens/s of a decoding step
that cost nothing but its linear layers' matrix products at the batch size, the output projection
included, timed on this machine with the generator's own kernels. How far generation is from it is
what the Python loop, attention, sampling and the small operators cost.

The figures say what they ran on: the CPU's model and speed flags (``xdetox.machine``),
torch's intra-op threads and CPU kernel level, and the dtype of each stage. Several
``--batch-size`` values (``--batch-size 8,16`` or the flag repeated) sweep xdetox's
generator: tokens/s per batch size (``batch_sweep``), each size in its own process; the
headline xdetox figures are the first size's.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace

from xdetox.errors import XdetoxInputError

WORKERS = ("reference", "xdetox", "train")


@dataclass(frozen=True)
class BenchSpec:
    model: str = "embedded"
    prompts: int = 64
    lang: str = "en"
    max_new_tokens: int = 50
    batch_size: int | tuple[int, ...] = 16  # several: a sweep, the first size being the headline one
    train_examples: int = 300
    seed: int = 0
    profile: bool = False

    def __post_init__(self):
        sizes = tuple(self.batch_size) if isinstance(self.batch_size, (list, tuple)) else (self.batch_size,)
        for name, value in [("prompts", self.prompts), ("max_new_tokens", self.max_new_tokens),
                            *(("batch_size", size) for size in sizes), ("train_examples", self.train_examples)]:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise XdetoxInputError(f"--{name.replace('_', '-')} must be at least 1, got {value!r}")
        if not sizes:
            raise XdetoxInputError("--batch-size needs at least one size")
        twice = sorted({size for size in sizes if sizes.count(size) > 1})
        if twice:
            raise XdetoxInputError(f"--batch-size names {', '.join(map(str, twice))} more than once")
        object.__setattr__(self, "batch_size", sizes[0] if len(sizes) == 1 else sizes)
        from xdetox.data import check_langs

        check_langs([self.lang])

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        return self.batch_size if isinstance(self.batch_size, tuple) else (self.batch_size,)


class BatchSizes(argparse.Action):
    """``--batch-size 8 --batch-size 16,32`` -> (8, 16, 32): every size, in order; the first replaces the default.

    Whole numbers only (the parser's error otherwise); ``BenchSpec`` checks the values.
    """

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            sizes = tuple(int(v) for v in values.split(",") if v.strip())
        except ValueError:
            parser.error(f"{option_string} takes whole numbers, one or comma-separated, got {values!r}")
        given = getattr(namespace, self.dest, None)
        setattr(namespace, self.dest, (given if isinstance(given, tuple) else ()) + sizes)


@dataclass(frozen=True)
class Measurement:
    worker: str
    seconds: float
    tokens: int
    items: int
    peak_rss_mb: float
    dtype: str
    threads: int  # torch's intra-op threads in the worker
    prepacked: dict[str, int] = field(default_factory=dict)  # layers multiplying with packed weights, per kernel
    linear_s: float | None = None  # one decoding step's linear-layer products at the batch size (``linear_seconds``)

    @property
    def tok_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    @property
    def items_s(self) -> float:
        return self.items / self.seconds if self.seconds else 0.0


def run(spec: BenchSpec, progress=print) -> dict:
    """All three measurements (and the sweep's other batch sizes), each in a fresh process; the figures as a dict."""
    from xdetox import models

    models.locate(models.ModelSpec(name=spec.model))  # convert/check once, before timing anything
    first, *others = spec.batch_sizes
    headline = replace(spec, batch_size=first)
    jobs = [(worker, worker, headline) for worker in WORKERS]
    jobs += [("xdetox", f"xdetox batch {size}", replace(spec, batch_size=size)) for size in others]
    results = {}
    for worker, label, worker_spec in jobs:
        progress(f"bench: {label} ...")
        results[label] = m = _spawn(worker, worker_spec)
        progress(f"bench: {label}: {m.tokens} tokens in {m.seconds:.1f} s = {m.tok_s:.1f} tok/s,"
                 f" peak RSS {m.peak_rss_mb:.0f} MB ({m.dtype})")
    ref, ours, train = results["reference"], results["xdetox"], results["train"]
    sweep = [(first, ours), *((size, results[f"xdetox batch {size}"]) for size in others)]
    profiled = None
    if spec.profile:
        progress("bench: profile ...")
        profiled = _run_worker("profile", headline)
    return {
        "model": spec.model,
        "prompts": spec.prompts,
        "max_new_tokens": spec.max_new_tokens,
        "reference_tok_s": round(ref.tok_s, 2),
        "xdetox_tok_s": round(ours.tok_s, 2),
        "ratio": round(ours.tok_s / ref.tok_s, 2) if ref.tok_s else None,
        "reference_prompts_s": round(ref.items_s, 3),
        "xdetox_prompts_s": round(ours.items_s, 3),
        "reference_peak_rss_mb": round(ref.peak_rss_mb, 1),
        "xdetox_peak_rss_mb": round(ours.peak_rss_mb, 1),
        "train_tok_s": round(train.tok_s, 2),
        "train_examples_s": round(train.items_s, 3),
        "train_peak_rss_mb": round(train.peak_rss_mb, 1),
        "reference_dtype": ref.dtype,
        "xdetox_dtype": ours.dtype,
        "xdetox_prepacked_layers": ours.prepacked,
        "xdetox_linear_bound_tok_s": round(first / ours.linear_s, 1) if ours.linear_s else None,
        "train_dtype": train.dtype,
        **machine_figures(),
        "torch_threads": ours.threads,
        "dtypes": {"reference": ref.dtype, "generation": ours.dtype, "training": train.dtype},
        "batch_size": first,
        "batch_sweep": [{"batch_size": size, "tok_s": round(m.tok_s, 2), "prompts_s": round(m.items_s, 3),
                         "peak_rss_mb": round(m.peak_rss_mb, 1)} for size, m in sweep],
        **({"profile": profiled} if profiled is not None else {}),
    }


def machine_figures() -> dict:
    """What the figures ran on: CPU model, its speed flags (``None``: unknown), torch's CPU kernel level."""
    import torch

    from xdetox.machine import cpu_info

    cpu = cpu_info()
    return {"cpu_model": cpu.model, "cpu_flags": cpu.flags,
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}


def format_table(result: dict) -> str:
    rows = [
        ("reference (1 prompt at a time, fp32)", result["reference_tok_s"], result["reference_prompts_s"],
         result["reference_peak_rss_mb"]),
        (f"xdetox (batched, {result['xdetox_dtype']}{_packed_note(result)})", result["xdetox_tok_s"],
         result["xdetox_prompts_s"], result["xdetox_peak_rss_mb"]),
    ]
    lines = [f"CPU {result.get('cpu_model') or 'unknown'}; {_flag_line(result.get('cpu_flags'))};"
             f" {result.get('torch_threads')} torch threads, kernels {result.get('torch_cpu_capability')}",
             f"model {result['model']}, {result['prompts']} prompts, {result['max_new_tokens']} new tokens,"
             " temperature 0.7, top-p 0.9", f"{'generator':40} {'tok/s':>9} {'prompts/s':>10} {'peak RSS MB':>12}"]
    lines += [f"{name:40} {tok:9.1f} {ps:10.3f} {rss:12.0f}" for name, tok, ps, rss in rows]
    lines.append(f"ratio xdetox / reference: {result['ratio']}x")
    if result.get("xdetox_linear_bound_tok_s"):
        bound = result["xdetox_linear_bound_tok_s"]
        lines.append(f"bound at batch {result['batch_size']} if a decoding step cost only its linear-layer products:"
                     f" {bound:.1f} tok/s (xdetox reaches {100 * result['xdetox_tok_s'] / bound:.0f} %)")
    lines.append(f"LoRA training ({result['train_dtype']}): {result['train_tok_s']:.1f} tok/s,"
                 f" {result['train_examples_s']:.2f} examples/s, peak RSS {result['train_peak_rss_mb']:.0f} MB")
    if len(result.get("batch_sweep", [])) > 1:
        lines += ["", f"xdetox generation by batch size ({result['xdetox_dtype']}):",
                  f"{'batch size':>10} {'tok/s':>9} {'prompts/s':>10} {'peak RSS MB':>12}"]
        lines += [f"{row['batch_size']:>10} {row['tok_s']:9.1f} {row['prompts_s']:10.3f} {row['peak_rss_mb']:12.0f}"
                  for row in result["batch_sweep"]]
    if "profile" in result:
        lines += ["", format_profile(result["profile"])]
    return "\n".join(lines)


def _packed_note(result: dict) -> str:
    layers = sum((result.get("xdetox_prepacked_layers") or {}).values())
    return f", {layers} layers prepacked" if layers else ""


def _flag_line(flags: dict[str, bool] | None) -> str:
    if flags is None:
        return "flags unknown"
    present = [flag for flag, on in flags.items() if on]
    return f"flags {' '.join(present)}" if present else f"none of {'/'.join(flags)}"


def format_profile(profile: dict) -> str:
    wall = profile["wall_s"]
    lines = [f"where xdetox's generation time goes ({profile['tokens']} tokens, {wall:.1f} s wall under the"
             f" profiler, batch {profile['batch_size']}, {profile['rows_per_step']:.1f} live rows per decoding step"
             " on average):"]
    lines += [f"  {name:34} {seconds:7.2f} s {100 * seconds / wall:5.1f} %" for name, seconds in profile["regions"]]
    lines.append("  top operators (self CPU time, all threads):")
    lines += [f"    {name:32} {seconds:7.2f} s" for name, seconds in profile["top_ops"]]
    return "\n".join(lines)


def _run_worker(worker: str, spec: BenchSpec) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "xdetox.bench", worker, json.dumps(asdict(spec))],
        capture_output=True, text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench worker {worker} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _spawn(worker: str, spec: BenchSpec) -> Measurement:
    return Measurement(**_run_worker(worker, spec))


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


if __name__ == "__main__":  # a worker: python -m xdetox.bench WORKER SPEC_JSON
    from xdetox._io import quiet_libraries

    quiet_libraries()
    name, raw = sys.argv[1], json.loads(sys.argv[2])
    worker = {"reference": _reference, "xdetox": _xdetox, "train": _train, "profile": _profile}[name]
    result = worker(BenchSpec(**raw))
    print(json.dumps(result if isinstance(result, dict) else asdict(result)))
