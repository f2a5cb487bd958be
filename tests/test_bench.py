"""``xdetox bench`` on the tiny model: every figure present, measured in separate processes."""

import json

from xdetox.bench import format_table
from xdetox.cli import main

KEYS = {"reference_tok_s", "xdetox_tok_s", "ratio", "reference_peak_rss_mb", "xdetox_peak_rss_mb", "train_tok_s"}
REGIONS = ("prefill (prompt forward passes)", "decoding steps (forward passes)", "  of which output projection",
           "sampling (top-k, top-p, draw)", "dropping finished rows", "rest (Python, tokenising, bookkeeping)")


def test_bench_json_reports_every_figure(tiny_model_dir, capsys):
    assert main(["bench", "--model", str(tiny_model_dir), "--prompts", "6", "--batch-size", "3",
                 "--train-examples", "16", "--json", "--profile"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert KEYS <= set(result)
    assert result["reference_tok_s"] > 0 and result["xdetox_tok_s"] > 0 and result["train_tok_s"] > 0
    assert result["ratio"] == round(result["xdetox_tok_s"] / result["reference_tok_s"], 2) or \
        abs(result["ratio"] - result["xdetox_tok_s"] / result["reference_tok_s"]) < 0.02
    assert result["reference_peak_rss_mb"] > 50 and result["xdetox_peak_rss_mb"] > 50
    assert result["prompts"] == 6 and result["reference_dtype"] == "float32"
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
    assert "where xdetox's generation time goes" in table and "aten::" in table
    assert all(f"  {region:34} {regions[region]:7.2f} s" in table for region in REGIONS)


def test_bench_rejects_bad_counts(capsys):
    assert main(["bench", "--prompts", "0"]) == 2
    assert "--prompts must be at least 1" in capsys.readouterr().err

