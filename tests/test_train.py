import json

import pytest
import torch
from peft import PeftModel

from xdetox import data, models, train
from xdetox.errors import XdetoxInputError


def test_xft_adapter_is_peft_loadable_with_metadata(tiny_model_dir, tmp_path):
    corpus = data.load()
    spec_model = models.ModelSpec(name=str(tiny_model_dir))
    spec = train.TrainSpec(source="de", epochs=1, batch_size=16, seed=3)
    out = train.train_adapter(spec_model, spec, corpus, tmp_path / "adapter", progress=False)
    meta = json.loads((out / train.METADATA).read_text())
    assert meta["train"]["source"] == "de" and meta["train"]["seed"] == 3
    assert meta["train"]["lora"] == {"r": 16, "alpha": 32, "dropout": 0.05,
                                    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
    assert meta["train"]["learning_rate"] == 2e-4
    assert meta["n_texts"] == 300
    assert meta["key"] == train.adapter_key(spec_model, spec, corpus.train_neutrals("de"))
    assert not list(tmp_path.glob(".adapter-*")), "temporary training folder left behind"

    base = models.load(spec_model, dtype="float32").model
    before = base(torch.tensor([[2, 40, 50, 60]])).logits
    peft = PeftModel.from_pretrained(base, str(out))
    after = peft(torch.tensor([[2, 40, 50, 60]])).logits
    assert not torch.allclose(before, after), "the trained adapter changes nothing"
    assert peft.peft_config["default"].r == 16


def test_training_texts_are_the_source_neutrals():
    corpus = data.load()
    texts = train.training_texts(train.TrainSpec(source="uk"), corpus)
    assert texts == [p.neutral for p in corpus.select("uk", "train")]
    assert train.training_texts(train.TrainSpec(paradigm="zs", source=None), corpus) == []


def test_adapter_key_depends_on_data_and_seed():
    m = models.ModelSpec()
    a = train.TrainSpec(source="en", seed=1)
    assert train.adapter_key(m, a, ["x"]) == train.adapter_key(m, a, ["x"])
    assert train.adapter_key(m, a, ["x"]) != train.adapter_key(m, a, ["y"])
    assert train.adapter_key(m, a, ["x"]) != train.adapter_key(m, train.TrainSpec(source="en", seed=2), ["x"])


@pytest.mark.parametrize(
    "kwargs, message",
    [({"paradigm": "sft"}, "unknown paradigm"), ({"source": "xx"}, "'xx'"), ({"epochs": 0}, "epochs")],
)
def test_bad_specs(kwargs, message):
    with pytest.raises(XdetoxInputError, match=message):
        train.TrainSpec(**kwargs)
