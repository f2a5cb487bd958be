"""``xdetox bench`` on the tiny model: every figure present, measured in separate processes."""

import json

from xdetox.bench import format_table
from xdetox.cli import main

KEYS = {"reference_tok_s", "xdetox_tok_s", "ratio", "reference_peak_rss_mb", "xdetox_peak_rss_mb", "train_tok_s"}


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
    # --profile: where the generation time goes
    profile = result["profile"]
    regions = dict(profile["regions"])
    decoding, prefill = regions["decoding steps (forward passes)"], regions["prefill (prompt forward passes)"]
    assert profile["tokens"] > 0 and decoding > 0 and prefill > 0
    assert 0 < regions["  of which output projection"] < decoding + prefill
    accounted = sum(v for k, v in regions.items() if not k.startswith("  ") and not k.startswith("rest"))
    assert accounted <= profile["wall_s"] * 1.05 and regions["rest (Python, tokenising, bookkeeping)"] >= 0
    assert 1 <= profile["rows_per_step"] <= 3  # batches of 3, finished rows leave
    table = format_table(result)
    assert "where xdetox's generation time goes" in table and "aten::" in table


def test_bench_rejects_bad_counts(capsys):
    assert main(["bench", "--prompts", "0"]) == 2
    assert "--prompts must be at least 1" in capsys.readouterr().err

