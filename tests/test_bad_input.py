"""Bad input never crashes, never leaves debris, never passes silently: every command, one table.

Each case writes its inputs under ``tmp_path`` (the working directory of the command),
snapshots that tree (every path; each file's size, mtime and bytes), runs
``xdetox.cli.main`` in-process and asserts: exit code 2, exactly one stderr line without
a traceback that contains the case's needle (what is wrong, and where), and the same tree
afterwards: no run directory, no store, no ``-wal``/``-shm`` file, and a pre-existing store
byte for byte as it was. Cases that need a model use the tiny random model of conftest.
"""

from __future__ import annotations

import hashlib
import io
import json
import socket
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from xdetox.cli import main
from xdetox.store import SCHEMA_VERSION, Store

STORE = "xdetox.sqlite"


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]  # "{model}" is the tiny model's directory; paths are relative to tmp_path
    needle: str  # a part of the one stderr line
    setup: Callable[[Path, str], None] | None = None  # (tmp_path, model dir) -> files
    stdin: bytes | None = None


# --------------------------------------------------------------------------- inputs


def files(contents: dict[str, str | bytes]) -> Callable[[Path, str], None]:
    """Files by path relative to tmp_path; "{model}" in a text becomes the model directory."""
    def setup(root: Path, model: str) -> None:
        for name, content in contents.items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content.replace("{model}", json.dumps(model)[1:-1]), encoding="utf-8")
    return setup


def both(*setups) -> Callable[[Path, str], None]:
    def setup(root: Path, model: str) -> None:
        for one in setups:
            one(root, model)
    return setup


HEAD = {"name": '"c"', "paradigms": '["zs"]', "sources": '["en"]', "targets": '["en"]', "limit": "1"}


def config(body: str = "", models: str = '["{model}"]') -> Callable[[Path, str], None]:
    """c.toml: ZS on English, one prompt, the tiny model; ``body``'s keys replace these."""
    given = {line.split("=")[0].strip() for line in body.split("[")[0].splitlines() if "=" in line}
    head = "".join(f"{k} = {v}\n" for k, v in {**HEAD, "models": models}.items() if k not in given)
    return files({"c.toml": head + body})


def jsonl(*rows: dict | str) -> Callable[[Path, str], None]:
    lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows]
    return files({"d.jsonl": "\n".join(lines) + "\n"})


def good(i: int, lang: str = "en", **over) -> dict:
    return {"lang": lang, "toxic": f"bad {i}", "neutral": f"good {i}", **over}


def _fresh_store(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with Store(path):
        pass


def store(kind: str, where: str = "out") -> Callable[[Path, str], None]:
    """``where``/xdetox.sqlite in one of several broken or unusable states."""
    def setup(root: Path, model: str) -> None:
        path = root / where / STORE
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "text":
            path.write_text("this is not a database\n" * 20)
        elif kind == "empty":
            path.write_bytes(b"")
        elif kind == "half":
            _fresh_store(path)
            whole = path.read_bytes()
            path.write_bytes(whole[: len(whole) // 2])
        elif kind == "foreign":
            with sqlite3.connect(path) as conn:
                conn.execute("CREATE TABLE notes (x TEXT)")
            conn.close()
        elif kind == "blank":  # an xdetox store killed before its first write
            _fresh_store(path)
        elif kind == "unfinished":
            with Store(path) as s:
                s.set_meta("config", {"name": "x", "scorers": ["offline"]})
                s.set_meta("planned_evaluations", 3)
        elif kind == "newer":
            with Store(path) as s:
                s.set_meta("schema", SCHEMA_VERSION + 1)
        elif kind == "other-run":
            with Store(path) as s:
                s.set_meta("config", {"name": "someone else's"})
                s.set_meta("plan_id", "0" * 64)
        elif kind == "directory":
            path.mkdir()
        elif kind == "tuned":  # a run whose x-ft:en is not trained yet
            with Store(path) as s:
                s.set_meta("config", {"name": "x", "models": [{"name": model}]})
                s.add_train_setting("zs-1", "zs", model, "zs", None, None, 42, {})
                s.add_train_setting("xft-1", "x-ft:en", model, "x-ft", "en", None, 42, {})
        else:
            raise AssertionError(kind)
    return setup


# --------------------------------------------------------------------------- the table

RUN = ("run", "--model", "{model}", "--targets", "en", "--limit", "1", "--epochs", "1",
       "--max-new-tokens", "2", "--quiet", "--out", "out")
LINE_1 = (json.dumps({"lang": "en", "toxic": "bad", "neutral": "good"}) + "\n").encode()
BAD_BYTE_LINE = b'{"lang": "en", "toxic": "\xff"}\n'
BAD_OFFSET = len(LINE_1) + BAD_BYTE_LINE.index(b"\xff")
BAD_CONFIG = files({"model/config.json": "{not json", "model/weights.bin": b"\0"})


def run(*extra: str, needle: str, setup=None, id: str) -> Case:
    return Case(f"run-{id}", RUN + extra, needle, setup)


def plan(body: str, needle: str, id: str, models: str = '["{model}"]') -> Case:
    return Case(f"plan-{id}", ("grid", "plan", "c.toml"), needle, config(body, models))


def data(setup, needle: str, id: str, name: str = "d.jsonl", *extra: str) -> Case:
    return Case(f"data-{id}", RUN + ("--data", name, *extra), needle, setup)


CASES: list[Case] = [
    # -- arguments argparse refuses, on every command ---------------------------------------
    Case("args-no-command", (), "required"),
    Case("args-unknown-command", ("nope",), "invalid choice"),
    Case("args-run-limit-word", ("run", "--limit", "abc"), "--limit"),
    Case("args-run-temperature-word", ("run", "--temperature", "hot"), "--temperature"),
    Case("args-run-seed-float", ("run", "--seed", "1.5"), "--seed"),
    Case("args-grid-no-sub", ("grid",), "required"),
    Case("args-grid-plan-no-config", ("grid", "plan"), "config"),
    Case("args-grid-run-backend", ("grid", "run", "c.toml", "--backend", "nope"), "--backend"),
    Case("args-score-no-lang", ("score", "t.txt"), "--lang"),
    Case("args-scorer-no-sub", ("scorer",), "required"),
    Case("args-export-no-setting", ("export", "run", "--out", "x"), "--setting"),
    Case("args-bench-prompts-word", ("bench", "--prompts", "many"), "--prompts"),
    Case("args-report-no-dir", ("report",), "run_dir"),
    # -- run: flags --------------------------------------------------------------------------
    run("--temperature", "nan", needle="temperature must be a finite number", id="temperature-nan"),
    run("--temperature", "inf", needle="temperature must be a finite number", id="temperature-inf"),
    run("--temperature", "0", needle="temperature must be a finite number", id="temperature-0"),
    run("--temperature", "-1", needle="temperature", id="temperature-negative"),
    run("--top-p", "0", needle="top_p must be a number in (0, 1]", id="top-p-0"),
    run("--top-p", "1.5", needle="top_p", id="top-p-1.5"),
    run("--top-p", "nan", needle="top_p", id="top-p-nan"),
    run("--samples", "0", needle="samples_per_prompt", id="samples-0"),
    run("--batch-size", "0", needle="batch_size", id="batch-size-0"),
    run("--train-batch-size", "0", needle="batch_size", id="train-batch-size-0"),
    run("--max-new-tokens", "0", needle="max_new_tokens", id="max-new-tokens-0"),
    run("--lora-r", "0", needle="LoRA r", id="lora-r-0"),
    run("--lora-alpha", "0", needle="LoRA alpha must be a positive number", id="lora-alpha-0"),
    run("--lora-alpha", "-5", needle="LoRA alpha", id="lora-alpha-negative"),
    run("--lora-dropout", "1.5", needle="LoRA dropout must be a number in [0, 1)", id="lora-dropout-1.5"),
    run("--lora-dropout", "-0.1", needle="LoRA dropout", id="lora-dropout-negative"),
    run("--lr", "nan", needle="learning rate must be a positive number", id="lr-nan"),
    run("--lr", "inf", needle="learning rate", id="lr-inf"),
    run("--lr", "0", needle="learning rate", id="lr-0"),
    run("--epochs", "0", needle="epochs must be an integer of at least 1", id="epochs-0"),
    run("--seed", "99999999999999999999999", needle="seed must be between 0 and 4294967295", id="seed-huge"),
    run("--seed", "-1", needle="seed must be between 0 and", id="seed-negative"),
    run("--targets", "en,en", needle="targets list en twice", id="targets-twice"),
    run("--sentences-per-sequence", "0", needle="sentences_per_sequence must be an integer of at least 1",
        id="sentences-per-sequence-0"),
    run("--text-normalisation", "v9", needle="unknown text normalisation 'v9'; choose one of none, v1",
        id="text-normalisation-unknown"),
    run("--limit", "0", needle="limit must be at least 1", id="limit-0"),
    run("--limit", "-3", needle="limit", id="limit-negative"),
    run("--targets", "xx", needle="'xx'", id="targets-unknown"),
    run("--targets", ",", needle="at least one language", id="targets-empty"),
    run("--targets", "en,xx", needle="'xx'", id="targets-one-unknown"),
    run("--source", "qq", needle="'qq'", id="source-unknown"),
    run("--split", "dev", needle="'dev'", id="split-unknown"),
    run("--dtype", "int8", needle="--dtype 'int8'", id="dtype-unknown"),
    run("--scorer", "nope", needle="unknown scorer 'nope'", id="scorer-unknown"),
    run("--scorer", "hf:nosuchorg/nosuchclassifier", needle="nosuchorg/nosuchclassifier", id="scorer-hf-missing"),
    # -- run: models (checked before the run directory exists) ---------------------------------
    Case("model-path-missing", RUN[:2] + ("./no/such/model",) + RUN[3:], "model path not found"),
    Case("model-hub-offline", RUN[:2] + ("nosuchorg/nosuchmodel",) + RUN[3:],
         "cannot load model 'nosuchorg/nosuchmodel' (HF_HUB_OFFLINE is set)"),
    Case("model-config-not-json", RUN[:2] + ("model",) + RUN[3:], "model/config.json", BAD_CONFIG),
    Case("model-dir-without-config", RUN[:2] + ("model",) + RUN[3:], "no config.json",
         files({"model/weights.bin": b"\0"})),
    Case("model-is-a-file", RUN[:2] + ("model",) + RUN[3:], "not a model directory", files({"model": "x"})),
    Case("model-config-unknown-type", RUN[:2] + ("model",) + RUN[3:], "model/config.json",
         files({"model/config.json": '{"model_type": "no-such-architecture"}'})),
    # -- run: --out --------------------------------------------------------------------------
    run(needle="exists and is not a directory", setup=files({"out": "a file"}), id="out-is-a-file"),
    run(needle="not an xdetox run", setup=files({"out/notes.txt": "mine"}), id="out-foreign-dir"),
    run(needle="out/xdetox.sqlite is not an xdetox store (not an SQLite", setup=store("text"), id="out-store-text"),
    run(needle="out/xdetox.sqlite is truncated", setup=store("half"), id="out-store-half"),
    run(needle="out/xdetox.sqlite is an empty file", setup=store("empty"), id="out-store-empty"),
    run(needle="out/xdetox.sqlite is not an xdetox store (no meta", setup=store("foreign"), id="out-store-foreign"),
    run(needle="schema", setup=store("newer"), id="out-store-newer"),
    run(needle="different configuration", setup=store("other-run"), id="out-store-other-run"),
    run(needle="not an xdetox run", setup=store("directory"), id="out-store-directory"),
    # -- run --data: every row's fields, named by file, row and line ---------------------------
    data(files({"d.jsonl": ""}), "missing column(s) lang, toxic, neutral", "jsonl-empty-file"),
    data(jsonl(good(0), "{not json"), "d.jsonl: line 2", "jsonl-bad-json"),
    data(jsonl(good(0), "[1, 2]"), "d.jsonl: line 2 is not a JSON object", "jsonl-not-object"),
    data(jsonl(good(0), good(1, toxic="")), "empty 'toxic' on row 2 (line 2)", "jsonl-toxic-empty"),
    data(jsonl(good(0), good(1, toxic="   ")), "empty 'toxic' on row 2", "jsonl-toxic-blank"),
    data(jsonl(good(0), good(1, toxic=None)), "empty 'toxic' on row 2", "jsonl-toxic-null"),
    data(jsonl(good(0), good(1, toxic=5)), "'toxic' on row 2 (line 2) must be a string, got 5", "jsonl-toxic-number"),
    data(jsonl(good(0), good(1, neutral=["a"])), "'neutral' on row 2 (line 2) must be a string",
         "jsonl-neutral-list"),
    data(jsonl(good(0), {"lang": "en", "toxic": "x"}), "empty 'neutral' on row 2", "jsonl-neutral-missing"),
    data(jsonl({"lang": "en", "toxic": "x"}), "missing column(s) neutral", "jsonl-no-neutral-column"),
    data(jsonl(good(0), good(1, neutral=False)), "'neutral' on row 2 (line 2) must be a string",
         "jsonl-neutral-bool"),
    data(jsonl(good(0), good(1, lang=7)), "'lang' on row 2 (line 2) must be a string", "jsonl-lang-number"),
    data(jsonl(good(0), good(1, lang="xx")), "unknown language code 'xx' (line 2)", "jsonl-lang-unknown"),
    data(jsonl(good(0, id="a"), good(1, id="a")), "duplicate id 'a' (line 2)", "jsonl-duplicate-id"),
    data(jsonl(good(0, id="a"), good(1, id=1.5)), "'id' on row 2 (line 2) must be a string or an integer",
         "jsonl-id-float"),
    data(jsonl(good(0, split="train"), good(1, split="dev")), "unknown split 'dev' (line 2)", "jsonl-split-unknown"),
    data(jsonl(good(0, split="train"), good(1)), "'split' on row 2 (line 2)", "jsonl-split-missing"),
    data(jsonl(good(0, split="test")), "language 'en' has no train rows", "jsonl-no-train-rows"),
    data(jsonl(good(0), "", good(1, toxic="")), "empty 'toxic' on row 2 (line 3)", "jsonl-blank-line-counted"),
    data(files({"d.jsonl": LINE_1 + BAD_BYTE_LINE}), f"not UTF-8 text at byte offset {BAD_OFFSET}", "jsonl-not-utf8"),
    data(jsonl(*[good(i, "de") for i in range(4)]),
         "language 'en' is not in the data", "jsonl-target-missing"),
    data(files({"d.csv": "lang,toxic,neutral\nen,a,b\nen,,c\n"}), "d.csv: empty 'toxic' on row 2 (line 3)",
         "csv-toxic-empty", "d.csv"),
    data(files({"d.csv": "lang,toxic,neutral\nen,\"a\nb\",c\nen,d,\n"}), "empty 'neutral' on row 2 (line 4)",
         "csv-neutral-empty-after-multiline", "d.csv"),
    data(files({"d.csv": "lang,toxic,neutral\nen,a,b,c\n"}), "d.csv: line 2: more fields", "csv-extra-field",
         "d.csv"),
    data(files({"d.csv": "lang,toxic,neutral\nen,a\n"}), "empty 'neutral' on row 1 (line 2)", "csv-short-row",
         "d.csv"),
    data(files({"d.csv": "lang,toxic,neutral\n"}), "no rows", "csv-header-only", "d.csv"),
    data(files({"d.csv": "lang,toxic\nen,a\n"}), "missing column(s) neutral", "csv-no-neutral", "d.csv"),
    data(files({"d.txt": "x"}), "must end in .jsonl or .csv", "wrong-suffix", "d.txt"),
    data(None, "data file not found", "missing-file", "nope.jsonl"),
    # -- grid plan: every value of a config, before anything runs ------------------------------
    plan("[decode]\ntemperature = 0\n", "temperature must be a finite number above 0", "temperature-0"),
    plan('[decode]\ntemperature = "hot"\n', "temperature", "temperature-word"),
    plan("[decode]\ntop_p = 1.5\n", "top_p", "top-p"),
    plan("[decode]\nsamples_per_prompt = 0\n", "samples_per_prompt", "samples-0"),
    plan("[decode]\nbatch_size = 0\n", "batch_size", "decode-batch-0"),
    plan("[decode]\nmax_new_tokens = 0\n", "max_new_tokens", "max-new-tokens-0"),
    plan("[decode]\ntop_k = -5\n", "top_k", "top-k-negative"),
    plan('[decode]\ntemplate = "no slot"\n', "{toxic}", "template-without-slot"),
    plan("[decode]\nnucleus = 1\n", "unknown key(s) nucleus", "decode-unknown-key"),
    plan('scorers = ["nope"]\n', "unknown scorer 'nope'", "scorer-unknown"),
    plan("scorers = []\n", "scorers must not be empty", "scorers-empty"),
    plan("[train.lora]\nr = 0\n", "LoRA r", "lora-r-0"),
    plan("[train.lora]\nalpha = 0\n", "LoRA alpha", "lora-alpha-0"),
    plan("[train.lora]\ndropout = 1\n", "LoRA dropout", "lora-dropout-1"),
    plan("[train]\nbatch_size = 0\n", "batch_size", "train-batch-0"),
    plan("[train]\nlearning_rate = 0\n", "learning rate", "learning-rate-0"),
    plan('[train]\nobjective = "shout"\n', "unknown objective 'shout'", "objective-unknown"),
    plan("[train]\ndpo_beta = 0\n", "dpo_beta", "dpo-beta-0"),
    plan("[train.x-ft]\nepochs = 0\n", "epochs", "x-ft-epochs-0"),
    plan("train = 5\n", "train must be a table", "train-not-a-table"),
    plan("decode = 5\n", "decode must be a table", "decode-not-a-table"),
    plan("[train]\nlora = 5\n", "train.lora must be a table", "lora-not-a-table"),
    plan('seeds = "abc"\n', "seed must be an integer, got 'abc'", "seeds-word"),
    plan('seeds = ["abc"]\n', "seed must be an integer, got 'abc'", "seeds-list-of-word"),
    plan("seeds = [1, 1]\n", "seeds are listed twice", "seeds-twice"),
    plan('text_normalisation = "V1"\n', "unknown text normalisation 'V1'", "text-normalisation-case"),
    plan("[train]\nsentences_per_sequence = 1.5\n", "sentences_per_sequence must be an integer", "packing-float"),
    plan("seeds = []\n", "seeds must not be empty", "seeds-empty"),
    plan('paradigms = ["nope"]\n', "unknown paradigm 'nope'", "paradigm-unknown"),
    plan("percents = [0]\n", "percents must be integers in 1..100", "percent-0"),
    plan('targets = ["xx"]\n', "'xx'", "target-unknown"),
    plan('splits = ["dev"]\n', "unknown split 'dev'", "split-unknown"),
    plan('limit = "x"\n', "c.toml", "limit-word"),
    plan("colour = 1\n", "unknown key(s) colour", "unknown-key"),
    plan("data = 5\n", "data must be a file path", "data-not-a-path"),
    plan('data = "nope.jsonl"\n', "data file not found", "data-missing"),
    plan('generator = "nope"\n', "unknown generator 'nope'", "generator-unknown"),
    plan("[resources]\nnum_cpus = -1\n", "num_cpus", "resources-negative"),
    plan("", "a model is a name or a table", "model-number", models="[5]"),
    plan("", "a model name must be a non-empty string", "model-name-empty", models='[{name = ""}]'),
    plan("", "unknown dtype 'int8'", "model-dtype", models='[{name = "x", dtype = "int8"}]'),
    plan("", "unknown quantization 'q2'", "model-quantization", models='[{name = "x", quantization = "q2"}]'),
    plan("", "trust_remote_code must be true or false", "model-trust-word",
         models='[{name = "x", trust_remote_code = "yes"}]'),
    Case("plan-not-toml", ("grid", "plan", "c.toml"), "not valid TOML", files({"c.toml": "name = \n"})),
    Case("plan-not-utf8", ("grid", "plan", "c.toml"), "not valid TOML", files({"c.toml": b"name = \"\xff\"\n"})),
    Case("plan-missing-file", ("grid", "plan", "nope.toml"), "config file not found"),
    Case("plan-config-is-a-dir", ("grid", "plan", "c.toml"), "config file not found",
         files({"c.toml/x": ""})),
    # -- grid run: the same checks, then the model and --out, before any directory is made -----
    Case("grid-run-temperature-0", ("grid", "run", "c.toml", "--out", "out", "--quiet"), "temperature",
         config("[decode]\ntemperature = 0\n")),
    Case("grid-run-scorer-unknown", ("grid", "run", "c.toml", "--out", "out", "--quiet"), "unknown scorer",
         config('scorers = ["nope"]\n')),
    Case("grid-run-seeds-word", ("grid", "run", "c.toml", "--out", "out", "--quiet"), "seed must be an integer",
         config('seeds = ["abc"]\n')),
    Case("grid-run-address-without-ray", ("grid", "run", "c.toml", "--out", "out", "--address", "auto"),
         "--address needs --backend ray", config()),
    Case("grid-run-model-config-not-json", ("grid", "run", "c.toml", "--out", "out", "--quiet"),
         "model/config.json", both(config(models='["model"]'), BAD_CONFIG)),
    Case("grid-run-default-out-broken", ("grid", "run", "c.toml", "--quiet"), "runs/c/xdetox.sqlite is an empty",
         both(config(), store("empty", where="runs/c"))),
    Case("grid-run-out-store-text", ("grid", "run", "c.toml", "--out", "out", "--quiet"),
         "out/xdetox.sqlite is not an xdetox store", both(config(), store("text"))),
    Case("grid-run-out-store-half", ("grid", "run", "c.toml", "--out", "out", "--quiet"),
         "out/xdetox.sqlite is truncated", both(config(), store("half"))),
    Case("grid-run-out-store-empty", ("grid", "run", "c.toml", "--out", "out", "--quiet"),
         "out/xdetox.sqlite is an empty file", both(config(), store("empty"))),
    Case("grid-run-data-bad-row", ("grid", "run", "c.toml", "--out", "out", "--quiet"),
         "empty 'toxic' on row 1 (line 1)", both(config('data = "d.jsonl"\n'), jsonl(good(0, toxic="")))),
    # -- report: the store is checked, read-only, and never written ----------------------------
    Case("report-missing-dir", ("report", "nope"), "no xdetox.sqlite"),
    Case("report-no-store", ("report", "run"), "no xdetox.sqlite", files({"run/notes.txt": "x"})),
    Case("report-store-text", ("report", "run"), "run/xdetox.sqlite is not an xdetox store (not an SQLite",
         store("text", "run")),
    Case("report-store-half", ("report", "run"), "run/xdetox.sqlite is truncated", store("half", "run")),
    Case("report-store-empty", ("report", "run"), "run/xdetox.sqlite is an empty file", store("empty", "run")),
    Case("report-store-foreign", ("report", "run"), "run/xdetox.sqlite is not an xdetox store (no meta",
         store("foreign", "run")),
    Case("report-store-newer", ("report", "run"), f"of schema {SCHEMA_VERSION + 1}", store("newer", "run")),
    Case("report-store-directory", ("report", "run"), "no xdetox.sqlite", store("directory", "run")),
    Case("report-store-blank", ("report", "run"), "holds no run configuration", store("blank", "run")),
    Case("report-store-unfinished", ("report", "run"), "is not finished (0 of 3 evaluations started)",
         store("unfinished", "run")),
    # -- score --------------------------------------------------------------------------------
    Case("score-lang-unknown", ("score", "--lang", "xx", "t.txt"), "does not support xx", files({"t.txt": "hi\n"})),
    Case("score-scorer-unknown", ("score", "--scorer", "nope", "--lang", "en", "t.txt"), "unknown scorer",
         files({"t.txt": "hi\n"})),
    Case("score-hf-missing", ("score", "--scorer", "hf:nosuchorg/nosuchclassifier", "--lang", "en", "t.txt"),
         "nosuchorg/nosuchclassifier", files({"t.txt": "hi\n"})),
    Case("score-ppl-model-missing", ("score", "--scorer", "ppl:./no/such/model", "--lang", "en", "t.txt"),
         "model path not found", files({"t.txt": "hi\n"})),
    Case("score-missing-file", ("score", "--lang", "en", "nope.txt"), "input file not found: nope.txt"),
    Case("score-file-is-a-dir", ("score", "--lang", "en", "d"), "cannot read d", files({"d/x": ""})),
    Case("score-file-not-utf8", ("score", "--lang", "en", "t.txt"), "t.txt is not UTF-8 text: byte offset 6",
         files({"t.txt": b"hello\n\xff\xfe\n"})),
    Case("score-stdin-not-utf8", ("score", "--lang", "en", "-"), "stdin is not UTF-8 text: byte offset 8",
         stdin=b"fine\nok\n\xc3\x28\n"),
    # -- scorer eval / scorer check ------------------------------------------------------------
    Case("scorer-eval-unknown", ("scorer", "eval", "--scorer", "nope"), "unknown scorer"),
    Case("scorer-eval-not-toxicity", ("scorer", "eval", "--scorer", "lang-fidelity"), "not a toxicity scorer"),
    Case("scorer-eval-hf-missing", ("scorer", "eval", "--scorer", "hf:nosuchorg/nosuchclassifier"),
         "nosuchorg/nosuchclassifier"),
    Case("scorer-eval-ppl-missing", ("scorer", "eval", "--scorer", "ppl:./no/such/model"), "model path not found"),
    Case("scorer-check-unknown", ("scorer", "check", "--scorer", "nope"), "unknown scorer"),
    Case("scorer-check-not-toxicity", ("scorer", "check", "--scorer", "lang-fidelity"), "not a toxicity scorer"),
    Case("scorer-check-lang-unknown", ("scorer", "check", "--langs", "xx"), "'xx'"),
    Case("scorer-check-langs-empty", ("scorer", "check", "--langs", ","), "at least one language"),
    # -- export --------------------------------------------------------------------------------
    Case("export-missing-run", ("export", "nope", "--setting", "x-ft:en", "--out", "exp"), "no xdetox.sqlite"),
    Case("export-store-text", ("export", "run", "--setting", "x-ft:en", "--out", "exp"),
         "run/xdetox.sqlite is not an xdetox store", store("text", "run")),
    Case("export-store-half", ("export", "run", "--setting", "x-ft:en", "--out", "exp"),
         "run/xdetox.sqlite is truncated", store("half", "run")),
    Case("export-store-empty", ("export", "run", "--setting", "x-ft:en", "--out", "exp"),
         "run/xdetox.sqlite is an empty file", store("empty", "run")),
    Case("export-store-blank", ("export", "run", "--setting", "x-ft:en", "--out", "exp"),
         "holds no run configuration", store("blank", "run")),
    Case("export-setting-unknown", ("export", "run", "--setting", "x-ft:hi", "--out", "exp"),
         "its settings: x-ft:en, zs", store("tuned", "run")),
    Case("export-setting-zs", ("export", "run", "--setting", "zs", "--out", "exp"), "trains no adapter",
         store("tuned", "run")),
    Case("export-not-trained", ("export", "run", "--setting", "x-ft:en", "--out", "exp"), "is not trained yet",
         store("tuned", "run")),
    Case("export-seed-missing", ("export", "run", "--setting", "x-ft:en", "--seed", "3", "--out", "exp"),
         "has no seed 3", store("tuned", "run")),
    Case("export-dtype", ("export", "run", "--setting", "x-ft:en", "--dtype", "int8", "--out", "exp"),
         "unknown --dtype", store("tuned", "run")),
    Case("export-out-not-empty", ("export", "run", "--setting", "x-ft:en", "--out", "exp"),
         "exists and is not an empty directory", both(store("tuned", "run"), files({"exp/keep.txt": "mine"}))),
    Case("export-out-is-a-file", ("export", "run", "--setting", "x-ft:en", "--out", "exp"),
         "exists and is not an empty directory", both(store("tuned", "run"), files({"exp": "mine"}))),
    # -- bench ---------------------------------------------------------------------------------
    Case("bench-prompts-0", ("bench", "--prompts", "0"), "--prompts must be at least 1"),
    Case("bench-batch-size-0", ("bench", "--batch-size", "0"), "--batch-size must be at least 1"),
    Case("bench-train-examples-0", ("bench", "--train-examples", "0"), "--train-examples must be at least 1"),
    Case("bench-lang-unknown", ("bench", "--lang", "xx"), "'xx'"),
    Case("bench-model-missing", ("bench", "--model", "./no/such/model"), "model path not found"),
    Case("bench-model-config-not-json", ("bench", "--model", "model"), "model/config.json", BAD_CONFIG),
    Case("bench-model-hub-offline", ("bench", "--model", "nosuchorg/nosuchmodel"), "HF_HUB_OFFLINE is set"),
]


# --------------------------------------------------------------------------- the test


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under ``root``: directories by name, files by size, mtime and content."""
    tree = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_dir():
            tree[rel] = ("dir",)
        else:
            stat = path.stat()
            tree[rel] = (stat.st_size, stat.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
    return tree


def test_the_table_covers_every_command():
    assert len(CASES) >= 100
    assert len({c.id for c in CASES}) == len(CASES), "case ids are unique"
    commands = {c.argv[0] + (" " + c.argv[1] if c.argv[0] in ("grid", "scorer") and len(c.argv) > 1 else "")
                for c in CASES if c.argv}
    assert {"run", "grid plan", "grid run", "score", "report", "scorer eval", "scorer check", "export",
            "bench"} <= commands


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, request, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("XDETOX_CACHE", str(work / "cache"))  # nothing may be cached for a refused command
    uses_model = any("{model}" in a for a in case.argv) or case.setup is not None
    model = str(request.getfixturevalue("tiny_model_dir")) if uses_model else ""
    if case.setup is not None:
        case.setup(work, model)
    if case.stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(case.stdin), encoding="utf-8"))
    before = snapshot(work)
    capsys.readouterr()

    code = main([a.replace("{model}", model) for a in case.argv])

    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("xdetox: error: "), err
    assert case.needle in err, err
    assert snapshot(work) == before, "the command changed the files it was given, or left some behind"


def test_stdin_bytes_through_a_real_pipe(tmp_path):
    """The console command reads stdin as bytes: a bad byte is refused with its offset, one line."""
    done = subprocess.run([sys.executable, "-m", "xdetox.cli", "score", "--lang", "en", "-"],
                          input=b"ok\n\xe2\x82\n", capture_output=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "stdin is not UTF-8 text: byte offset 3" in lines[0], lines
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_hub_switches_to_offline_at_once(monkeypatch):
    """Without HF_HUB_OFFLINE, one failed connection makes xdetox offline for the process."""
    from huggingface_hub import constants

    from xdetox import models

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"https://127.0.0.1:{port}")
    why = models.hub_offline.__wrapped__()
    assert why == "the hub at 127.0.0.1 is unreachable; xdetox set HF_HUB_OFFLINE=1"
    assert constants.is_offline_mode()
    import os

    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_interrupt_is_one_line_and_130(monkeypatch, capsys, tmp_path):
    from xdetox import cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "cmd_report", interrupted)
    assert cli.main(["report", "run"]) == 130
    assert capsys.readouterr().err.strip() == "xdetox: interrupted"
