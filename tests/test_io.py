"""The shared helpers of ``xdetox._io``: content keys pinned to their hashlib/json form, atomic writes."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import asdict
from pathlib import Path

import pytest

from xdetox import data, grid, train
from xdetox._io import atomic_write, content_digest, content_key, file_sha256, first_line
from xdetox.generate import derive_seed

VALUES = [
    {"b": [1, 2.5, None, True], "a": {"z": "Grüße, 世界", "y": ("t", "u")}},
    ["x", {"k": 1}],
    {"path": Path("/x/y"), "n": 3},  # not JSON: written as its str
    ("seed", 7, "abc", 0),
]


def _inline_key(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


@pytest.mark.parametrize("value", VALUES)
def test_content_keys_are_the_sha256_of_the_sorted_json(value):
    assert content_key(value) == _inline_key(value)
    assert content_digest(value) == hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()
    assert content_digest(value, sort_keys=False, ensure_ascii=False) == hashlib.sha256(
        json.dumps(value, ensure_ascii=False, default=str).encode()).hexdigest()


def test_plan_adapter_and_data_keys_are_unchanged():
    """A resumed run finds its rows by these keys: each one equals its hashlib/json computation."""
    corpus = data.load()
    config = grid.config_from_dict({"paradigms": ["zs", "x-ft", "dpo"], "sources": ["zh"], "targets": ["de", "am"],
                                    "seeds": [3], "limit": 4, "text_normalisation": "none"})
    plan = grid.make_plan(config, corpus)
    model = config.models[0]
    for setting in plan.settings:
        if setting.spec.paradigm == "zs":
            assert setting.key == "zs-" + _inline_key({"model": model.to_dict(), "seed": 3})
            continue
        examples = train.training_examples(setting.spec, corpus)
        data_hash = hashlib.sha256(json.dumps([asdict(e) for e in examples], ensure_ascii=False).encode()).hexdigest()
        assert train.data_digest(examples) == data_hash
        assert setting.key == hashlib.sha256(json.dumps(
            {"model": model.to_dict(), "train": setting.spec.to_dict(), "data": data_hash}, sort_keys=True,
        ).encode()).hexdigest()[:16]
    for lang in ("de", "am", None):
        rows = [p.__dict__ for p in corpus.pairs if lang is None or p.lang == lang]
        assert corpus.digest(lang) == hashlib.sha256(
            json.dumps(rows, ensure_ascii=False, sort_keys=True).encode()).hexdigest()
    for ev in plan.evaluations:
        assert ev.key == _inline_key({
            "setting": ev.setting.key, "target": ev.target, "split": ev.split, "decode": config.decode.to_dict(),
            "seed": 3, "prompts": corpus.digest(ev.target),
            "ids": [p.id for p in corpus.prompts(ev.target, ev.split)[:4]],
        })
        blob = json.dumps([3, ev.key, 1], sort_keys=True, default=str).encode()
        assert derive_seed(3, ev.key, 1) == int.from_bytes(hashlib.sha256(blob).digest()[:4], "big") & 0x7FFFFFFF
    assert len({s.key for s in plan.settings}) == 3 and len({e.key for e in plan.evaluations}) == 6


def test_a_text_normalisation_adds_its_version_to_the_keys_of_its_cleaned_data():
    from xdetox.hygiene import clean_corpus

    corpus = data.load()
    config = grid.config_from_dict({"paradigms": ["zs", "x-ft"], "sources": ["am"], "targets": ["am"], "seeds": [3],
                                    "limit": 4})
    plan, cleaned = grid.make_plan(config, corpus), clean_corpus(corpus, "v1")
    assert cleaned.text_normalisation == "v1" and cleaned.digest("am") != corpus.digest("am")
    setting = next(s for s in plan.settings if s.spec.paradigm == "x-ft")
    examples = train.training_examples(setting.spec, cleaned)
    assert setting.key == _inline_key({"model": config.models[0].to_dict(), "train": setting.spec.to_dict(),
                                       "data": train.data_digest(examples), "text": "v1"})
    ev = next(e for e in plan.evaluations if e.setting is setting)
    assert ev.key == _inline_key({
        "setting": setting.key, "target": "am", "split": "test_toxic", "decode": config.decode.to_dict(), "seed": 3,
        "prompts": cleaned.digest("am"), "ids": [p.id for p in cleaned.prompts("am", "test_toxic")[:4]],
        "text": "v1"})


def test_atomic_write_replaces_the_file_whole_and_leaves_nothing_behind(tmp_path):
    path = tmp_path / "out.txt"
    atomic_write(path, lambda p: p.write_text("first"))
    atomic_write(path, lambda p: p.write_text("second"))
    assert path.read_text() == "second"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert os.listdir(tmp_path) == ["out.txt"]


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_a_failed_atomic_write_keeps_the_old_file(tmp_path, error):
    path = tmp_path / "out.txt"
    path.write_text("old")

    def write(p: Path):
        p.write_text("half")
        raise error

    with pytest.raises(type(error)):
        atomic_write(path, write)
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_file_sha256_and_first_line(tmp_path):
    blob = os.urandom(3 << 20)  # more than one read block
    (tmp_path / "f").write_bytes(blob)
    assert file_sha256(tmp_path / "f") == hashlib.sha256(blob).hexdigest()
    assert first_line(ValueError("\n  bad value\nmore detail")) == "bad value"
    assert first_line(ConnectionError()) == "ConnectionError"
