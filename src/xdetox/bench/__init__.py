"""``xdetox bench``: xdetox's generator against the reference pattern, on the same prompts.

The reference scripts sample one prompt at a time in fp32 with ``model.generate``
(transformers' own temperature/top-p sampling over the full vocabulary). xdetox
batches prompts by length, runs bf16 where the hardware supports it and samples
from the top candidates only (``generate.NucleusSampler``). Both use the same
prompts and decoding settings (temperature 0.7, top-p 0.9, 50 new tokens).

Each measurement runs in its own process (``xdetox.bench.workers``), so its peak RSS is its own. Training
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
generator: tokens/s and the linear-layer bound per batch size (``batch_sweep``), each size in its own
process; the headline xdetox figures are the first size's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
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
        from xdetox.specs import MAX_BATCH_SIZE, MAX_NEW_TOKENS  # the bounds of a run's DecodeSpec

        for name, value, most in [("max_new_tokens", self.max_new_tokens, MAX_NEW_TOKENS),
                                  *(("batch_size", size, MAX_BATCH_SIZE) for size in sizes)]:
            if value > most:
                raise XdetoxInputError(f"--{name.replace('_', '-')} must be at most {most} (xdetox's bound), got {value}")
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
        "xdetox_linear_bound_tok_s": _bound(first, ours),
        "train_dtype": train.dtype,
        **machine_figures(),
        "torch_threads": ours.threads,
        "dtypes": {"reference": ref.dtype, "generation": ours.dtype, "training": train.dtype},
        "batch_size": first,
        "batch_sweep": [{"batch_size": size, "tok_s": round(m.tok_s, 2), "prompts_s": round(m.items_s, 3),
                         "peak_rss_mb": round(m.peak_rss_mb, 1), "bound_tok_s": _bound(size, m)} for size, m in sweep],
        **({"profile": profiled} if profiled is not None else {}),
    }


def _bound(rows: int, measurement: Measurement) -> float | None:
    """Tokens/s of a decoding step of ``rows`` rows that cost only its linear-layer products."""
    return round(rows / measurement.linear_s, 1) if measurement.linear_s else None


def _bound_cell(bound: float | None) -> str:
    return f"{bound:12.1f}" if bound else f"{'-':>12}"


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
                  f"{'batch size':>10} {'tok/s':>9} {'prompts/s':>10} {'peak RSS MB':>12} {'bound tok/s':>12}"]
        lines += [f"{row['batch_size']:>10} {row['tok_s']:9.1f} {row['prompts_s']:10.3f} {row['peak_rss_mb']:12.0f}"
                  f" {_bound_cell(row.get('bound_tok_s'))}" for row in result["batch_sweep"]]
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
        [sys.executable, "-m", "xdetox.bench.workers", worker, json.dumps(asdict(spec))],
        capture_output=True, text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench worker {worker} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _spawn(worker: str, spec: BenchSpec) -> Measurement:
    return Measurement(**_run_worker(worker, spec))
