"""``xdetox bench`` on the tiny model: every figure present, measured in separate processes; the CPU it ran on."""

import contextlib
import io
import json

import pytest

from xdetox.bench import BenchSpec, format_table
from xdetox.cli import build_parser, main
from xdetox.machine import SPEED_FLAGS, cpu_info, parse_cpuinfo

KEYS = {"reference_tok_s", "xdetox_tok_s", "ratio", "reference_peak_rss_mb", "xdetox_peak_rss_mb", "train_tok_s"}
REGIONS = ("prefill (prompt forward passes)", "decoding steps (forward passes)", "  of which output projection",
           "sampling (top-k, top-p, draw)", "dropping finished rows", "rest (Python, tokenising, bookkeeping)")


@pytest.fixture(scope="module")
def bench_json(tiny_model_dir) -> dict:
    """One ``xdetox bench --json --profile`` over two batch sizes (five processes, each importing torch), read by
    the tests below: the figures of the first size, the sweep, the profile."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["bench", "--model", str(tiny_model_dir), "--prompts", "6", "--batch-size", "3",
                     "--batch-size", "4", "--train-examples", "16", "--json", "--profile"]) == 0
    return json.loads(out.getvalue())


def test_bench_json_reports_every_figure(bench_json):
    result = bench_json
    assert KEYS <= set(result)
    assert result["reference_tok_s"] > 0 and result["xdetox_tok_s"] > 0 and result["train_tok_s"] > 0
    assert result["ratio"] == round(result["xdetox_tok_s"] / result["reference_tok_s"], 2) or \
        abs(result["ratio"] - result["xdetox_tok_s"] / result["reference_tok_s"]) < 0.02
    assert result["reference_peak_rss_mb"] > 50 and result["xdetox_peak_rss_mb"] > 50
    assert result["prompts"] == 6 and result["reference_dtype"] == "float32"
    # the bound: a decoding step of linear-layer products only is faster than a whole decoding step
    assert result["xdetox_linear_bound_tok_s"] > result["xdetox_tok_s"]
    # --profile: where the generation time goes, region by region (figures, not timings, are checked)
    profile = result["profile"]
    assert [name for name, _ in profile["regions"]] == list(REGIONS)
    regions = dict(profile["regions"])
    assert all(isinstance(v, float) and v >= 0 for v in regions.values())
    assert profile["tokens"] > 0 and profile["batch_size"] == 3
    for region in ("prefill (prompt forward passes)", "decoding steps (forward passes)", "  of which output projection",
                   "sampling (top-k, top-p, draw)"):
        assert regions[region] > 0, f"{region.strip()} was not recorded"
    accounted = sum(v for k, v in regions.items() if not k.startswith("  ") and not k.startswith("rest"))
    assert regions["rest (Python, tokenising, bookkeeping)"] == max(0.0, profile["wall_s"] - accounted)
    assert 1 <= profile["rows_per_step"] <= 3  # batches of 3, finished rows leave
    assert len(profile["top_ops"]) > 0 and all(name.startswith("aten::") for name, _ in profile["top_ops"])
    table = format_table(result)
    assert f"ratio xdetox / reference: {result['ratio']}x" in table
    assert f"only its linear-layer products: {result['xdetox_linear_bound_tok_s']:.1f} tok/s" in table
    assert "where xdetox's generation time goes" in table and "aten::" in table
    assert all(f"  {region:34} {regions[region]:7.2f} s" in table for region in REGIONS)


def test_bench_rejects_bad_counts(capsys):
    assert main(["bench", "--prompts", "0"]) == 2
    assert "--prompts must be at least 1" in capsys.readouterr().err



AVX2_ONLY = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz
flags\t\t: fpu vme sse sse2 avx avx2 fma bmi2

processor\t: 1
model name\t: Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz
flags\t\t: fpu vme sse sse2 avx avx2 fma bmi2
"""

SAPPHIRE_RAPIDS = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu avx avx2 avx512f avx512bw avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8
"""


@pytest.mark.parametrize("text, model, present", [
    (AVX2_ONLY, "Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz", {"avx2"}),
    (SAPPHIRE_RAPIDS, "Intel(R) Xeon(R) Platinum 8480+", {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}),
    ("", None, set()),
])
def test_cpuinfo_parser_reads_the_model_and_the_speed_flags(text, model, present):
    info = parse_cpuinfo(text)
    assert info.model == model
    assert set(info.flags) == set(SPEED_FLAGS)
    assert {flag for flag, on in info.flags.items() if on} == present
    assert info.has("avx512_bf16") == ("avx512_bf16" in present)


_FIGURES = {"model": "m", "prompts": 1, "max_new_tokens": 1, "reference_tok_s": 1.0, "reference_prompts_s": 1.0,
            "reference_peak_rss_mb": 1.0, "xdetox_tok_s": 2.0, "xdetox_prompts_s": 2.0, "xdetox_peak_rss_mb": 1.0,
            "xdetox_dtype": "float32", "ratio": 2.0, "train_dtype": "float32", "train_tok_s": 1.0,
            "train_examples_s": 1.0, "train_peak_rss_mb": 1.0}


def test_the_table_says_how_many_layers_were_prepacked():
    assert "xdetox (batched, bfloat16, 91 layers prepacked)" in format_table(
        {**_FIGURES, "cpu_flags": None, "xdetox_dtype": "bfloat16", "xdetox_prepacked_layers": {"onednn": 91}})


def test_cpu_info_without_a_cpuinfo_file_names_the_platform_and_no_flags(tmp_path):
    info = cpu_info(tmp_path / "no-such-cpuinfo")
    assert info.flags is None and not info.has("avx2")
    assert info.to_dict() == {"model": info.model, "flags": None}
    assert "flags unknown" in format_table({**_FIGURES, "cpu_flags": None})


def test_bench_sweeps_the_batch_sizes_it_is_given(bench_json):
    result = bench_json
    assert KEYS <= set(result)  # the figures of before are all still there
    assert result["batch_size"] == 3
    sweep = result["batch_sweep"]
    assert [row["batch_size"] for row in sweep] == [3, 4]
    for row in sweep:
        assert set(row) == {"batch_size", "tok_s", "prompts_s", "peak_rss_mb", "bound_tok_s"}
        assert all(isinstance(row[key], float) and row[key] > 0
                   for key in ("tok_s", "prompts_s", "peak_rss_mb", "bound_tok_s"))
        assert row["bound_tok_s"] > row["tok_s"]  # each size's own bound, above what it reached
    assert sweep[0]["tok_s"] == result["xdetox_tok_s"]  # the headline figures are the first size's
    assert sweep[0]["bound_tok_s"] == result["xdetox_linear_bound_tok_s"]
    assert set(result["dtypes"]) == {"reference", "generation", "training"}
    assert result["dtypes"]["generation"] == result["xdetox_dtype"] and result["dtypes"]["reference"] == "float32"
    assert isinstance(result["torch_threads"], int) and result["torch_threads"] >= 1
    # the tiny model's layers are all under prepack.MIN_FEATURES: none packed, and the table says nothing
    assert result["xdetox_prepacked_layers"] == {} and "prepacked" not in format_table(result)
    assert isinstance(result["torch_cpu_capability"], str) and result["torch_cpu_capability"]
    assert result["cpu_flags"] is None or set(result["cpu_flags"]) == set(SPEED_FLAGS)
    assert result["cpu_model"] is None or isinstance(result["cpu_model"], str)
    table = format_table(result)
    assert "xdetox generation by batch size" in table
    lines = table.splitlines()
    rows = lines[lines.index(next(line for line in lines if "generation by batch size" in line)) + 2:][:2]
    assert [line.split()[0] for line in rows] == ["3", "4"]
    assert [float(line.split()[-1]) for line in rows] == [row["bound_tok_s"] for row in sweep]


@pytest.mark.parametrize("flags, expected", [
    (["--batch-size", "8"], 8),
    (["--batch-size", "8,16", "--batch-size", "32"], (8, 16, 32)),
    ([], 16),
])
def test_batch_sizes_come_one_at_a_time_or_comma_separated(flags, expected):
    args = build_parser().parse_args(["bench", *flags])
    assert BenchSpec(batch_size=args.batch_size).batch_size == expected


@pytest.mark.parametrize("flags, needle", [
    (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["--batch-size", "8,0"], "--batch-size must be at least 1, got 0"),
    (["--batch-size", "8,x"], "--batch-size takes whole numbers"),
    (["--batch-size", "8,16,8"], "--batch-size names 8 more than once"),
    (["--batch-size", ","], "--batch-size needs at least one size"),
])
def test_bad_batch_sizes_are_one_line(flags, needle, capsys):
    assert main(["bench", *flags]) == 2
    assert needle in capsys.readouterr().err


def test_linear_seconds_sums_every_linear_layer(tiny_model_dir, monkeypatch):
    """The bound times each linear layer once per repeat at the batch's rows, the output projection included."""
    import torch

    from xdetox import models
    from xdetox.bench import workers

    loaded = models.load(models.ModelSpec(name=str(tiny_model_dir)))
    layers = [m for m in loaded.model.modules() if isinstance(m, torch.nn.Linear)]
    seen = []
    for layer in layers:
        layer.register_forward_pre_hook(lambda module, args: seen.append((module, tuple(args[0].shape))))
    ticks = iter(range(10_000))
    monkeypatch.setattr(workers.time, "perf_counter", lambda: next(ticks) * 0.5)  # every product takes 0.5 s
    seconds = workers.linear_seconds(loaded.model, rows=3, repeats=2)
    assert seconds == 0.5 * len(layers)  # the median of each layer's repeats, summed over the layers
    assert loaded.model.get_output_embeddings() in {module for module, _ in seen}
    assert {module for module, _ in seen} == set(layers)
    assert all(shape[0] == 3 for _, shape in seen) and len(seen) == 3 * len(layers)  # warm-up + 2 repeats
