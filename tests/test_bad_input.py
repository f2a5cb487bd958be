"""Bad input never crashes, never leaves debris, never passes silently: every command, one table.

Each case writes its inputs under ``tmp_path`` (the working directory of the command),
snapshots that tree (every path; each file's size, mtime and bytes), runs
``xdetox.cli.main`` in-process and asserts: exit code 2, exactly one stderr line without
a traceback that contains the case's needle (what is wrong, and where), and the same tree
afterwards: no run directory, no store, no ``-wal``/``-shm`` file, and a pre-existing store
byte for byte as it was. Cases that need a model use the tiny random model of conftest.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import random
import socket
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from xdetox.cli import main
from xdetox.specs import Completion
from xdetox.store import SCHEMA_VERSION, Store

STORE = "xdetox.sqlite"


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]  # "{model}" is the tiny model's directory; paths are relative to tmp_path
    needle: str  # a part of the one stderr line
    setup: Callable[[Path, str], None] | None = None  # (tmp_path, model dir) -> files
    stdin: bytes | None = None
    env: tuple[tuple[str, str], ...] = ()  # environment variables set for the command (paths relative to tmp_path)


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


def damage(path: Path) -> None:
    """Overwrite the middle third of an SQLite file's pages with garbage: header intact, same size."""
    page = int.from_bytes(path.read_bytes()[16:18], "big")
    pages = path.stat().st_size // page
    assert pages >= 6, "too small a store to damage its middle"
    garbage = random.Random(0)
    with open(path, "r+b") as handle:
        for number in range(pages // 3, 2 * pages // 3):
            handle.seek(number * page)
            handle.write(bytes(garbage.randrange(256) for _ in range(page)))


def _trained(path: Path, model: str) -> None:
    """A finished-looking run whose x-ft:en has an adapter file and a summary.json (export's checks pass)."""
    with Store(path) as s:
        s.set_meta("config", {"name": "x", "models": [{"name": model}], "decode": {}})
        s.add_train_setting("xft-1", "x-ft:en", model, "x-ft", "en", None, 42, {})
        s.finish_train_setting("xft-1", "adapters/xft-1", None)
    (path.parent / "adapters" / "xft-1").mkdir(parents=True)
    (path.parent / "adapters" / "xft-1" / "adapter_model.safetensors").write_bytes(b"\0")
    (path.parent / "summary.json").write_text("{}")


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
        elif kind == "damaged":  # a store with rows, its middle pages overwritten (header intact, same size)
            with Store(path) as s:
                s.set_meta("config", {"name": "x", "scorers": ["offline"]})
                s.add_train_setting("zs-1", "zs", model or "m", "zs", None, None, 42, {})
                s.add_evaluation("e-1", "zs-1", "en", "test_toxic", {}, 1)
                s.add_batch("e-1", 0, [Completion(f"p{i}", 0, "prompt " * 50, "text " * 50, 3) for i in range(200)])
            damage(path)
        elif kind == "trained":
            _trained(path, model)
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
LONG = " ".join(f"word{i}" for i in range(300))  # far more than the tiny model's 512 positions


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
    run("--max-new-tokens", "9000", needle="max_new_tokens must be at most 8192", id="max-new-tokens-above-bound"),
    run("--samples", "1001", needle="samples_per_prompt must be at most 1000", id="samples-above-bound"),
    run("--batch-size", "5000", needle="batch_size must be at most 4096", id="batch-size-above-bound"),
    run("--train-batch-size", "5000", needle="batch_size must be at most 4096", id="train-batch-size-above-bound"),
    run("--max-new-tokens", "600", needle="with max_new_tokens 600 it needs", id="max-new-tokens-over-context"),
    run("--reuse", "other", "--reuse", "other", needle="--reuse list", setup=files({"other/x": ""}),
        id="reuse-twice"),
    run("--out", "afile/sub", needle="--out afile/sub: afile is a file, not a directory", setup=files({"afile": "x"}),
        id="out-below-a-file"),
    Case("run-cache-is-a-file", RUN, "XDETOX_CACHE cachefile exists and is not a directory",
         files({"cachefile": "x"}), env=(("XDETOX_CACHE", "cachefile"),)),
    Case("run-cache-below-a-file", RUN, "XDETOX_CACHE cachefile/sub: cachefile is a file, not a directory",
         files({"cachefile": "x"}), env=(("XDETOX_CACHE", "cachefile/sub"),)),
    Case("run-tmpdir-missing", RUN, "TMPDIR nope: no such directory", env=(("TMPDIR", "nope"),)),
    Case("run-tmpdir-is-a-file", RUN, "TMPDIR tmpfile exists and is not a directory", files({"tmpfile": "x"}),
         env=(("TMPDIR", "tmpfile"),)),
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
    run(needle="the store out/xdetox.sqlite is damaged (integrity_check:", setup=store("damaged"),
        id="out-store-damaged"),
    run("--reuse", "old", "--scorer", "offline", needle="the store old/xdetox.sqlite is damaged (integrity_check:",
        setup=store("damaged", "old"), id="reuse-store-damaged"),
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
    data(files({"d.txt": "x"}), "must end in .jsonl, .csv or .parquet", "wrong-suffix", "d.txt"),
    data(None, "data file not found", "missing-file", "nope.jsonl"),
    data(jsonl(good(0, split="train"), good(1, split="test", toxic=LONG)), "d.jsonl: the prompt on row 2 (id en-001)",
         "prompt-longer-than-context"),
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
    plan("seeds = [1, 1]\n", "config: seeds list 1 twice", "seeds-twice"),
    plan('scorers = ["offline", "offline"]\n', "config: scorers list offline twice", "scorers-twice"),
    plan('sources = ["de", "en", "de"]\n', "config: sources list de twice", "sources-twice"),
    plan("percents = [10, 20, 10]\n", "config: percents list 10 twice", "percents-twice"),
    plan('splits = ["test_toxic", "test_toxic"]\n', "config: splits list test_toxic twice", "splits-twice"),
    plan('paradigms = ["zs", "zs"]\n', "config: paradigms list zs twice", "paradigms-twice"),
    plan("", "config: models list", "models-twice", models='["{model}", "{model}"]'),
    plan("[decode]\nmax_new_tokens = 9000\n", "max_new_tokens must be at most 8192", "max-new-tokens-above-bound"),
    plan("[decode]\nsamples_per_prompt = 1001\n", "samples_per_prompt must be at most 1000", "samples-above-bound"),
    plan("[decode]\nbatch_size = 5000\n", "batch_size must be at most 4096", "decode-batch-above-bound"),
    plan("[train]\nbatch_size = 5000\n", "batch_size must be at most 4096", "train-batch-above-bound"),
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
    Case("grid-run-seeds-twice", ("grid", "run", "c.toml", "--out", "out", "--quiet"), "config: seeds list 7 twice",
         config("seeds = [7, 7]\n")),
    Case("grid-run-max-length-over-context", ("grid", "run", "c.toml", "--out", "out", "--quiet"),
         "[train] max_length 1000 (x-ft) exceeds the 512-token context",
         config('paradigms = ["zs", "x-ft"]\n[train]\nmax_length = 1000\n')),
    Case("grid-run-default-out-below-a-file", ("grid", "run", "c.toml", "--quiet"),
         "--out runs/c: runs is a file, not a directory", both(config(), files({"runs": "x"}))),
    Case("grid-run-out-store-damaged", ("grid", "run", "c.toml", "--out", "out", "--quiet"),
         "the store out/xdetox.sqlite is damaged (integrity_check:", both(config(), store("damaged"))),
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
    Case("report-store-damaged", ("report", "run"), "the store run/xdetox.sqlite is damaged (integrity_check:",
         store("damaged", "run")),
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
    Case("score-cache-is-a-file", ("score", "--scorer", "offline", "--lang", "en", "t.txt"),
         "XDETOX_CACHE cachefile: cannot create", files({"t.txt": "hi\n", "cachefile": "x"}),
         env=(("XDETOX_CACHE", "cachefile"),)),
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
    Case("scorer-check-langs-twice", ("scorer", "check", "--scorer", "offline", "--langs", "en,de,en"),
         "--langs list en twice"),
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
    Case("export-store-damaged", ("export", "run", "--setting", "x-ft:en", "--out", "exp"),
         "the store run/xdetox.sqlite is damaged (integrity_check:", store("damaged", "run")),
    # --push-to-hub without a network (HF_HUB_OFFLINE, as in every test): a bad repo id is refused first
    Case("export-push-not-a-repo-id", ("export", "run", "--setting", "x-ft:en", "--out", "exp", "--push-to-hub",
                                       "not a repo"), "--push-to-hub 'not a repo' is not a hub repo id",
         store("trained", "run")),
    Case("export-push-repo-too-deep", ("export", "run", "--setting", "x-ft:en", "--out", "exp", "--push-to-hub",
                                       "a/b/c"), "--push-to-hub 'a/b/c' is not a hub repo id", store("trained", "run")),
    Case("export-push-out-not-empty", ("export", "run", "--setting", "x-ft:en", "--out", "exp", "--push-to-hub",
                                       "someone/x"), "exists and is not an empty directory",
         both(store("trained", "run"), files({"exp/keep.txt": "mine"}))),
    # -- compare --------------------------------------------------------------------------------
    Case("compare-one-run", ("compare", "a"), "compare needs at least 2 run directories, got 1"),
    Case("compare-same-run-twice", ("compare", "a", "b", "./a"), "the runs to compare list", files({"a/x": "", "b/x": ""})),
    Case("compare-csv-and-markdown", ("compare", "a", "b", "--csv", "--markdown"), "not allowed with argument"),
    Case("compare-missing-run", ("compare", "nope", "b"), "no run directory at nope"),
    Case("compare-run-is-a-file", ("compare", "a", "b"), "a is not a directory", files({"a": "x", "b/x": ""})),
    Case("compare-not-a-run", ("compare", "a", "b"), "a is not an xdetox run directory (no xdetox.sqlite)",
         files({"a/x": "", "b/x": ""})),
    Case("compare-store-text", ("compare", "run", "b"), "run/xdetox.sqlite is not an xdetox store (not an SQLite",
         store("text", "run")),
    Case("compare-store-half", ("compare", "run", "b"), "run/xdetox.sqlite is truncated", store("half", "run")),
    Case("compare-store-blank", ("compare", "run", "b"), "holds no run configuration yet", store("blank", "run")),
    Case("compare-store-unfinished", ("compare", "run", "b"), "is not finished (0 of 3 evaluations started",
         store("unfinished", "run")),
    Case("compare-store-damaged", ("compare", "run", "b"), "the store run/xdetox.sqlite is damaged (integrity_check:",
         store("damaged", "run")),
    # -- bench ---------------------------------------------------------------------------------
    Case("bench-prompts-0", ("bench", "--prompts", "0"), "--prompts must be at least 1"),
    Case("bench-batch-size-0", ("bench", "--batch-size", "0"), "--batch-size must be at least 1"),
    Case("bench-train-examples-0", ("bench", "--train-examples", "0"), "--train-examples must be at least 1"),
    Case("bench-batch-size-above-bound", ("bench", "--batch-size", "8,5000"), "--batch-size must be at most 4096"),
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
            "bench", "compare"} <= commands


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, request, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("XDETOX_CACHE", str(work / "cache"))  # nothing may be cached for a refused command
    for name, value in case.env:
        monkeypatch.setenv(name, value)
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


def test_a_prompt_longer_than_the_context_is_refused_naming_file_row_and_length(tmp_path, monkeypatch, capsys,
                                                                              tiny_model_dir):
    """Refused, never truncated: the data file, the row, the prompt's tokens and the model's context."""
    import re

    monkeypatch.chdir(tmp_path)
    jsonl(good(0, split="train"), good(1, split="test", toxic=LONG))(tmp_path, "")
    capsys.readouterr()
    assert main([a.replace("{model}", str(tiny_model_dir)) for a in RUN] + ["--data", "d.jsonl"]) == 2
    line = capsys.readouterr().err.strip()
    found = re.fullmatch(rf"xdetox: error: {re.escape(str(tmp_path / 'd.jsonl'))}: the prompt on row 2 \(id en-001\)"
                         rf" is (\d+) tokens in the template, longer than the 512-token context of model"
                         rf" {re.escape(str(tiny_model_dir))}; shorten or remove that row \(xdetox refuses, never"
                         r" truncates, a prompt\)", line)
    assert found and int(found.group(1)) > 512, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl"]


# --------------------------------------------------------------------------- the smallest runs finish


@pytest.fixture(scope="module", params=["5", "1"], ids=["5-tokens", "1-token"])
def smallest(request, tmp_path_factory, tiny_model_dir):
    """``xdetox run --targets en --limit 1 --epochs 1 --max-new-tokens N --samples 1``: one prompt, one sample,
    one reference sentence; (run directory, the exit code, stdout).

    The tiny model's weights are random, so its one token may be letterless (silent: nothing to score or pair),
    and which token it samples moves with the thread count. The first sampling seed at which ZS and X-FT
    both write text is taken, so the one-prompt pair is there to test on every machine."""
    from xdetox.text import is_silent

    for seed in range(42, 62):
        run = tmp_path_factory.mktemp("smallest") / "run"
        capture = io.StringIO()
        real_stdout, sys.stdout = sys.stdout, capture
        try:
            code = main(["run", "--model", str(tiny_model_dir), "--targets", "en", "--limit", "1", "--epochs", "1",
                         "--max-new-tokens", request.param, "--samples", "1", "--scorer", "offline", "--quiet",
                         "--seed", str(seed), "--out", str(run)])
        finally:
            sys.stdout = real_stdout
        lines = (run / "completions.jsonl").read_text().splitlines() if code == 0 else []
        if code != 0 or not any(is_silent(json.loads(line)["completion"]) for line in lines):
            return run, code, capture.getvalue()
    pytest.fail("the tiny model wrote no text at 20 sampling seeds")


def test_the_smallest_run_ends_with_a_summary_and_a_report(smallest):
    from xdetox.report.results import ONE_PROMPT

    run, code, printed = smallest
    assert code == 0
    for name in ("summary.json", "report.html", "report.md", "completions.jsonl", "settings.parquet"):
        assert (run / name).is_file(), name
    summary = json.loads((run / "summary.json").read_text())
    zs, xft = summary["settings"]
    assert (zs["paradigm"], xft["paradigm"], xft["n"], xft["n_paired"]) == ("zs", "x-ft", 1, 1)
    assert xft["reduction_abs"] is not None  # what one prompt gives is computed
    # what one prompt cannot give is not computed, and says why: no interval of width 0, no p-value of 1
    assert xft["ci95"] is None and xft["p_value"] is None and xft["q_value"] is None
    assert xft["reduction_length_matched_ci"] is None and xft["reduction_length_matched_p"] is None
    assert xft["not_computed"] == {"ci95": ONE_PROMPT, "reduction_length_matched_ci": ONE_PROMPT}
    assert zs["not_computed"] is None
    for entry in summary["measures"]:  # one language, one reference sentence
        assert entry["silhouette"] is None and entry["ppl_ref"]["en"] > 0
        assert entry["not_computed"] == {
            "silhouette": "one language (en): a silhouette compares two or more",
            "projection": "1 sentence of 32 dimensions: a 2-D projection needs at least 2 of each"}
    assert "n/c" in printed and f"n/c: not computed from so little data ({ONE_PROMPT})" in printed
    html = (run / "report.html").read_text()
    assert "Not computed from these sentences: projection: 1 sentence" in html
    assert '<td class="num">not computed</td>' in html and 'class="projection"' not in html
    assert f"n/c: not computed from so little data ({ONE_PROMPT})" in (run / "report.md").read_text()


def test_the_smallest_run_exports_and_a_push_without_a_network_keeps_the_export(smallest, tmp_path, capsys,
                                                                                monkeypatch):
    """``export --push-to-hub`` with the hub unreachable (HF_HUB_OFFLINE): the export is written whole, then
    one line, exit 3."""
    from huggingface_hub import constants

    from xdetox.models import hub_offline

    run, code, _ = smallest
    assert code == 0
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    hub_offline.cache_clear()
    out = tmp_path / "exp"
    capsys.readouterr()
    try:
        code = main(["export", str(run), "--setting", "x-ft:en", "--out", str(out), "--no-merge",
                     "--push-to-hub", "someone/detox-en"])
    finally:
        hub_offline.cache_clear()
    [line] = capsys.readouterr().err.strip().splitlines()
    assert code == 3
    assert line.startswith("xdetox: error: cannot push to the Hugging Face hub: HF_HUB_OFFLINE is set;"), line
    assert f"the export is complete in {out}" in line and "Traceback" not in line
    assert {"adapter_model.safetensors", "README.md", "xdetox_export.json"} <= {p.name for p in out.iterdir()}
    assert [p.name for p in tmp_path.iterdir()] == ["exp"]  # no half-written sibling


# --------------------------------------------------------------------------- a full disk during work


def _integrity(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def test_a_full_disk_during_a_run_is_one_line_exit_3_and_the_same_command_resumes(tmp_path, tiny_model_dir,
                                                                                  monkeypatch, capsys):
    run = tmp_path / "run"
    argv = ["run", "--model", str(tiny_model_dir), "--targets", "en", "--limit", "1", "--epochs", "1",
            "--max-new-tokens", "2", "--scorer", "offline", "--quiet", "--out", str(run)]
    add_batch, calls = Store.add_batch, []

    def disk_full_at_the_second_batch(self, eval_key, batch, completions):
        calls.append(eval_key)
        if len(calls) == 2:  # ZS's batch is in; X-FT's meets a full disk
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path))
        return add_batch(self, eval_key, batch, completions)

    monkeypatch.setattr(Store, "add_batch", disk_full_at_the_second_batch)
    assert main(argv) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"xdetox: error: no space left on device writing {run / STORE}; free some space; the run is"
                       " resumable: run the same command again")
    assert sum(line.startswith("xdetox: error:") for line in err) == 1 and "Traceback" not in "\n".join(err)
    assert _integrity(run / STORE) == "ok" and not (run / "summary.json").exists()
    with Store(run / STORE, readonly=True) as store:  # what was committed is whole; nothing half-written
        assert len(store.table("batches")) == 1 and len(store.table("completions")) == 1
        assert list(store.table("attempts")["outcome"]) == ["failed"]

    calls.clear()
    monkeypatch.setattr(Store, "add_batch", lambda self, *a: (calls.append(a[0]), add_batch(self, *a))[1])
    assert main(argv) == 0  # room again: the same command resumes, generating only what was missing
    assert len(calls) == 1 and (run / "summary.json").is_file()
    with Store(run / STORE, readonly=True) as store:
        assert len(store.table("batches")) == 2 and list(store.table("attempts")["outcome"]) == ["failed", "finished"]


def test_sqlite_meeting_a_full_disk_rolls_back_and_names_the_store(tmp_path):
    """SQLite's own "database or disk is full" (a page limit stands in for the disk): ENOSPC naming the store."""
    from xdetox.errors import no_space

    path = tmp_path / STORE
    with Store(path) as store:
        store.add_evaluation("e", "t", "en", "test_toxic", {}, 2)
        store.add_batch("e", 0, [Completion("p0", 0, "x", "y", 1)])
    with pytest.raises(OSError) as info:
        with Store(path) as store:
            store.conn.execute(f"PRAGMA max_page_count = {store.conn.execute('PRAGMA page_count').fetchone()[0]}")
            store.add_batch("e", 1, [Completion(f"p{i}", 0, "x" * 500, "y" * 500, 1) for i in range(100)])
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert no_space(info.value) == f"no space left on device writing {path}; free some space"
    assert _integrity(path) == "ok"
    with Store(path, readonly=True) as store:
        assert store.done_batches("e") == {0} and len(store.table("completions")) == 1


def test_the_damaged_store_of_the_table_is_damaged_where_its_header_is_whole(tmp_path):
    """store("damaged"): the header and size as they were, the pages between not; SQLite itself says so."""
    store("damaged", ".")(tmp_path, "m")
    path = tmp_path / STORE
    assert path.read_bytes()[:16] == b"SQLite format 3\x00"
    try:
        found = _integrity(path)
    except sqlite3.DatabaseError as err:  # too damaged to check
        found = str(err)
    assert found != "ok"


@pytest.mark.parametrize("reader", ["sqlite3", "pandas"])
def test_a_damaged_page_met_while_reading_is_named_not_raised(tmp_path, reader):
    """Damage found past the opening check (a page read later): SQLite's and pandas' DatabaseError become the
    store's one line; an SQLite error of a whole store (a bug) is left as it is."""
    import pandas as pd

    from xdetox.errors import XdetoxInputError
    from xdetox.store.file import store_error

    store("damaged", ".")(tmp_path, "m")
    path = tmp_path / STORE
    conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        with pytest.raises(Exception) as info:
            if reader == "pandas":
                pd.read_sql_query("SELECT * FROM completions", conn)
            else:
                conn.execute("SELECT * FROM completions").fetchall()
    finally:
        conn.close()
    meaning = store_error(path, info.value)
    assert isinstance(meaning, XdetoxInputError)
    assert str(meaning).startswith(f"the store {path} is damaged (integrity_check: ") and "\n" not in str(meaning)
    whole = tmp_path / "whole" / STORE
    _fresh_store(whole)
    assert store_error(whole, sqlite3.OperationalError("no such column: nope")) is None


# --------------------------------------------------------------------------- the Python API says what the CLI says


def _api_run(**over):
    """``xdetox.run`` with the options of ``RUN`` (the tiny model set by the test)."""
    import xdetox

    options = {"targets": "en", "limit": 1, "epochs": 1, "max_new_tokens": 2, "out": "out", **over}
    return lambda model: xdetox.run(model=model, **options)


def _api_open(path: str):
    import xdetox

    return lambda model: xdetox.open_run(path)


API_CASES = [  # (id, CLI argv, the same through the Python API, setup)
    ("run-max-new-tokens-above-bound", RUN + ("--max-new-tokens", "9000"), _api_run(max_new_tokens=9000), None),
    ("run-samples-above-bound", RUN + ("--samples", "1001"), _api_run(samples=1001), None),
    ("run-targets-twice", RUN + ("--targets", "en,en"), _api_run(targets="en,en"), None),
    ("run-seed-negative", RUN + ("--seed", "-1"), _api_run(seed=-1), None),
    ("run-over-context", RUN + ("--max-new-tokens", "600"), _api_run(max_new_tokens=600), None),
    ("run-out-below-a-file", RUN + ("--out", "afile/sub"), _api_run(out="afile/sub"), files({"afile": "x"})),
    ("run-out-store-damaged", RUN, _api_run(), store("damaged")),
    ("grid-run-seeds-twice", ("grid", "run", "c.toml", "--out", "out", "--quiet"),
     lambda model: __import__("xdetox").run("c.toml", out="out"), config("seeds = [7, 7]\n")),
    ("open-run-damaged", ("compare", "run", "b"), _api_open("run"), store("damaged", "run")),
    ("open-run-text", ("compare", "run", "b"), _api_open("run"), store("text", "run")),
    ("open-run-unfinished", ("compare", "run", "b"), _api_open("run"), store("unfinished", "run")),
    ("open-run-missing", ("compare", "nope", "b"), _api_open("nope"), None),
    ("open-run-no-store", ("compare", "run", "b"), _api_open("run"), files({"run/notes.txt": "x"})),
]


@pytest.mark.parametrize(("argv", "call", "setup"), [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_the_python_api_raises_the_line_the_cli_prints(argv, call, setup, tmp_path, monkeypatch, capsys,
                                                       tiny_model_dir):
    from xdetox.errors import XdetoxInputError

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("XDETOX_CACHE", str(work / "cache"))
    model = str(tiny_model_dir)
    if setup is not None:
        setup(work, model)
    before = snapshot(work)
    capsys.readouterr()
    assert main([a.replace("{model}", model) for a in argv]) == 2
    line = capsys.readouterr().err.strip()
    with pytest.raises(XdetoxInputError) as info:
        call(model)
    assert line == f"xdetox: error: {info.value}" and "\n" not in str(info.value)
    assert snapshot(work) == before
