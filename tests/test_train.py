import json
import math
import os
import subprocess
import sys

import pytest
import torch
from peft import PeftModel

from xdetox import data, models, train
from xdetox.errors import XdetoxInputError


def _changes_logits(model_dir, adapter, seq2seq=False) -> bool:
    base = models.load(models.ModelSpec(name=str(model_dir)), dtype="float32").model
    ids = torch.tensor([[2, 40, 50, 60]])
    extra = {"decoder_input_ids": torch.tensor([[0, 41]])} if seq2seq else {}
    before = base(input_ids=ids, **extra).logits
    after = PeftModel.from_pretrained(base, str(adapter))(input_ids=ids, **extra).logits
    return not torch.allclose(before, after)


def test_xft_adapter_is_peft_loadable_with_metadata(tiny_model_dir, tmp_path):
    corpus = data.load()
    spec_model = models.ModelSpec(name=str(tiny_model_dir))
    spec = train.TrainSpec(source="de", epochs=1, batch_size=16, seed=3, sentences_per_sequence=1)
    out = train.train_adapter(spec_model, spec, corpus, tmp_path / "adapter", progress=False)
    meta = json.loads((out / train.METADATA).read_text())
    assert meta["train"]["source"] == "de" and meta["train"]["seed"] == 3
    assert meta["train"]["lora"] == {"r": 16, "alpha": 32, "dropout": 0.05,
                                    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
    assert meta["train"]["learning_rate"] == 2e-4
    assert meta["n_examples"] == 300
    assert meta["key"] == train.adapter_key(spec_model, spec, train.training_examples(spec, corpus))
    assert not list(tmp_path.glob(".adapter-*")), "temporary training folder left behind"
    assert _changes_logits(tiny_model_dir, out), "the trained adapter changes nothing"


def test_dpo_adapter_trains_through_trl(tiny_model_dir, tmp_path):
    corpus = data.load()
    spec = train.TrainSpec(paradigm="dpo", source="en", epochs=1, batch_size=16, max_length=48)
    out = train.train_adapter(models.ModelSpec(name=str(tiny_model_dir)), spec, corpus, tmp_path / "dpo",
                              progress=False)
    meta = train.read_metadata(out)
    assert meta["train"]["paradigm"] == "dpo" and meta["n_examples"] == 300
    assert math.isfinite(meta["train_loss"])
    assert meta["end_token_trained"] is True
    assert _changes_logits(tiny_model_dir, out)


def test_seq2seq_model_trains_and_generates_through_the_same_path(tiny_seq2seq_dir, tmp_path):
    from xdetox.generate import DecodeSpec, Generator

    corpus = data.load()
    spec_model = models.ModelSpec(name=str(tiny_seq2seq_dir))
    spec = train.TrainSpec(source="es", objective="rewrite", epochs=1, batch_size=16)
    out = train.train_adapter(spec_model, spec, corpus, tmp_path / "s2s", progress=False)
    assert _changes_logits(tiny_seq2seq_dir, out, seq2seq=True)
    loaded = models.load(spec_model)
    assert loaded.seq2seq
    completions = Generator(loaded.model, loaded.tokenizer).generate(
        corpus.prompts("es", "test_toxic")[:3], DecodeSpec(max_new_tokens=4), seed=1)
    assert len(completions) == 3 and all(0 < c.n_tokens <= 4 for c in completions)
    assert all("Complete the sentence" not in c.text for c in completions)


def test_training_examples_per_paradigm_and_objective():
    corpus = data.load()
    uk = corpus.select("uk", "train")
    xft = train.training_examples(train.TrainSpec(source="uk", sentences_per_sequence=1), corpus)
    assert [(e.prompt, e.completion) for e in xft] == [("", p.neutral) for p in uk]
    rewrite = train.training_examples(train.TrainSpec(source="uk", objective="rewrite"), corpus)
    assert rewrite[0].prompt == train.REWRITE_TEMPLATE.format(toxic=uk[0].toxic)
    assert rewrite[0].completion == uk[0].neutral
    dpo = train.training_examples(train.TrainSpec(paradigm="dpo", source="uk"), corpus)
    assert (dpo[0].prompt, dpo[0].completion, dpo[0].rejected) == (
        f"Complete the sentence: {uk[0].toxic}", uk[0].neutral, uk[0].toxic)
    assert train.training_examples(train.TrainSpec(paradigm="zs", source=None), corpus) == []


def test_pft_takes_a_seeded_nested_share_of_every_pooled_language():
    corpus = data.load()
    pool = ("en", "zh", "am")

    def ids(percent, seed=1):
        spec = train.TrainSpec(paradigm="p-ft", source=None, percent=percent, pool=pool, seed=seed)
        return [p.id for p in train.training_pairs(spec, corpus)]

    ten, twenty, thirty = ids(10), ids(20), ids(30)
    assert len(ten) == 3 * 30 and len(twenty) == 3 * 60 and len(thirty) == 3 * 90
    assert set(ten) < set(twenty) < set(thirty)
    for lang in pool:
        assert sum(1 for i in ten if corpus_lang(corpus, i) == lang) == 30
    assert ids(10) == ten, "the same seed chooses the same pairs"
    assert ids(10, seed=2) != ten, "another seed chooses others"
    mft = train.training_pairs(train.TrainSpec(paradigm="m-ft", source=None, pool=pool), corpus)
    assert len(mft) == 900 and {p.lang for p in mft} == set(pool)


def corpus_lang(corpus, pair_id):
    return next(p.lang for p in corpus.pairs if p.id == pair_id)


def test_adapter_key_depends_on_data_and_seed():
    m = models.ModelSpec()
    a = train.TrainSpec(source="en", seed=1)
    ex = [train.Example("", "x"), train.Example("", "\u00fc")]
    key = train.adapter_key(m, a, ex)
    assert len(key) == 16 and set(key) <= set("0123456789abcdef")
    # Another process (another hash seed) finds the same key: a resumed run finds its adapters.
    code = ("from xdetox import train; print(train.adapter_key(train.ModelSpec(), train.TrainSpec(source='en', seed=1),"
            " [train.Example('', 'x'), train.Example('', '\\u00fc')]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert out.stdout.strip() == key
    assert key != train.adapter_key(m, a, ex[::-1]), "the order of the examples is part of the data"
    assert key != train.adapter_key(m, a, [train.Example("", "x"), train.Example("", "y")])
    assert key != train.adapter_key(m, train.TrainSpec(source="en", seed=2), ex)
    assert key != train.adapter_key(models.ModelSpec(name="other"), a, ex)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"paradigm": "sft"}, "unknown paradigm"), ({"source": "xx"}, "'xx'"), ({"epochs": 0}, "epochs"),
     ({"paradigm": "p-ft", "percent": 0}, "percent"), ({"paradigm": "dpo", "source": None}, "source"),
     ({"objective": "rlhf"}, "unknown objective"), ({"gradient_accumulation_steps": 0}, "gradient_accumulation"),
     ({"batch_size": -2}, "batch_size"), ({"max_length": 0}, "max_length"), ({"learning_rate": float("nan")}, "learning"),
     ({"epochs": 1.5}, "epochs"), ({"dpo_beta": 0}, "dpo_beta")],
)
def test_bad_specs(kwargs, message):
    with pytest.raises(XdetoxInputError, match=message):
        train.TrainSpec(**kwargs)


def _first_batch(model_dir, spec, tmp_path, eos_appending_tokenizer=False):
    corpus = data.load()
    loaded = models.load(models.ModelSpec(name=str(model_dir)), for_training=True)
    loaded.tokenizer.padding_side = "right"
    if eos_appending_tokenizer:  # a tokenizer that ends every text with EOS itself
        from tokenizers.processors import TemplateProcessing

        loaded.tokenizer._tokenizer.post_processor = TemplateProcessing(
            single="<bos> $A <eos>", special_tokens=[("<bos>", 2), ("<eos>", 1)])
        assert loaded.tokenizer("hello").input_ids[-1] == loaded.tokenizer.eos_token_id
    examples = train.training_examples(spec, corpus)
    trainer = train.make_trainer(loaded, spec, examples, tmp_path / "trainer")
    return loaded.tokenizer, examples, next(iter(trainer.get_train_dataloader()))


@pytest.mark.parametrize("eos_appending", [False, True])
def test_neutral_lm_trains_the_sentence_tokens_and_never_the_end_token(tiny_model_dir, tmp_path, eos_appending):
    spec = train.TrainSpec(source="en", epochs=1, batch_size=8, max_length=64)
    tok, examples, batch = _first_batch(tiny_model_dir, spec, tmp_path, eos_appending)
    labels = batch["labels"]
    assert labels.shape[0] == 8
    assert not (labels == tok.eos_token_id).any(), "the end token is a training target"
    assert not (labels == tok.pad_token_id).any(), "padding is a training target"
    # every real token of a row is a target (the BOS too: it is never predicted, the model shifts labels)
    assert torch.equal((labels != -100).sum(1), batch["attention_mask"].sum(1))
    neutrals = [e.completion.strip() for e in examples]
    for row in labels.tolist():  # each row is one neutral sentence (its start, when cut at max_length)
        text = tok.decode([t for t in row if t != -100], skip_special_tokens=True).strip()
        assert any(n.startswith(text) for n in neutrals), f"not a neutral sentence: {text!r}"


def test_rewrite_objective_keeps_its_end_token(tiny_model_dir, tmp_path):
    spec = train.TrainSpec(source="en", objective="rewrite", epochs=1, batch_size=8, max_length=1024)
    tok, _, batch = _first_batch(tiny_model_dir, spec, tmp_path)
    assert ((batch["labels"] == tok.eos_token_id).sum(1) == 1).all(), "each rewrite ends with one end token"
    last = batch["attention_mask"].sum(1) - 1
    assert (batch["labels"].gather(1, last.unsqueeze(1)) == tok.eos_token_id).all()
    assert train.end_token_trained("x-ft", "rewrite") and train.end_token_trained("dpo", "neutral-lm")
    assert not train.end_token_trained("x-ft", "neutral-lm") and not train.end_token_trained("m-ft", "neutral-lm")


def test_gradient_accumulation_reaches_the_trainer_and_the_metadata(tiny_model_dir, tmp_path):
    corpus = data.load()
    spec = train.TrainSpec(source="de", epochs=1, batch_size=16, gradient_accumulation_steps=4, seed=3)
    out = train.train_adapter(models.ModelSpec(name=str(tiny_model_dir)), spec, corpus, tmp_path / "a",
                              progress=False)
    meta = train.read_metadata(out)
    assert meta["train"]["gradient_accumulation_steps"] == 4
    assert meta["end_token_trained"] is False
    loaded = models.load(models.ModelSpec(name=str(tiny_model_dir)), for_training=True)
    trainer = train.make_trainer(loaded, spec, train.training_examples(spec, corpus), tmp_path / "t")
    assert trainer.args.gradient_accumulation_steps == 4


def test_the_training_bar_shows_each_step_and_its_loss_and_changes_nothing(tiny_model_dir, tmp_path, capfd):
    corpus = data.load()
    model = models.ModelSpec(name=str(tiny_model_dir))
    spec = train.TrainSpec(source="de", epochs=1, batch_size=16, gradient_accumulation_steps=2, seed=3,
                           sentences_per_sequence=1)
    shown = train.train_adapter(model, spec, corpus, tmp_path / "shown", progress=True)
    bar = capfd.readouterr()
    hidden = train.train_adapter(model, spec, corpus, tmp_path / "hidden", progress=False)
    silent = capfd.readouterr()
    steps = math.ceil(300 / 16 / 2)  # optimizer steps: the bar's total (its last frame may be skipped)
    assert "train x-ft:de: " in bar.err and f"/{steps} [" in bar.err and "loss=" in bar.err
    assert "train x-ft:de" not in silent.err
    assert bar.out == "" and silent.out == "", "the trainer printed its metrics"
    assert (shown / "adapter_model.safetensors").read_bytes() == (hidden / "adapter_model.safetensors").read_bytes()
    assert train.read_metadata(shown)["train_loss"] == train.read_metadata(hidden)["train_loss"]


def _loss_curve(trainer) -> list[float]:
    """Train, recording each step's loss as the trainer computes it (the value itself is not touched)."""
    losses, step = [], trainer.training_step

    def recording(*args, **kwargs):
        loss = step(*args, **kwargs)
        losses.append(float(loss))
        return loss

    trainer.training_step = recording
    trainer.train()
    return losses


def test_neutral_lm_follows_trls_loss_curve(tiny_model_dir, tmp_path):
    """`neutral-lm` trains through transformers' Trainer (the reference's recipe, faster on a CPU); the loss
    curve is the one TRL's SFTTrainer gives on the same token ids, seed and optimiser, step by step."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    corpus = data.load()
    spec = train.TrainSpec(source="de", epochs=1, batch_size=16, seed=3, max_length=64, sentences_per_sequence=1)
    examples = train.training_examples(spec, corpus)

    def loaded():
        model = models.load(models.ModelSpec(name=str(tiny_model_dir)), for_training=True)
        model.tokenizer.padding_side = "right"
        return model

    ours = train.make_trainer(loaded(), spec, examples, tmp_path / "ours")
    assert type(ours).__name__ == "NeutralLMTrainer"
    reference = loaded()
    config = SFTConfig(
        output_dir=str(tmp_path / "trl"), num_train_epochs=1, per_device_train_batch_size=16, learning_rate=2e-4,
        seed=3, data_seed=3, save_strategy="no", report_to="none", logging_strategy="no", disable_tqdm=True,
        use_cpu=True, bf16=reference.dtype == torch.bfloat16, max_length=64, packing=False)
    trl = SFTTrainer(
        model=reference.model, args=config, processing_class=reference.tokenizer,
        train_dataset=Dataset.from_dict({"input_ids": train.neutral_lm_ids(reference, examples, 64)}),
        peft_config=train._lora_config(reference, spec))
    a, b = _loss_curve(ours), _loss_curve(trl)
    assert len(a) == len(b) == math.ceil(300 / 16)
    assert a[0] == pytest.approx(b[0], rel=1e-5), "same initial adapter, same first batch"
    assert max(abs(x - y) / y for x, y in zip(a, b)) < 1e-3  # measured: 4e-5 (bf16)
    assert sum(a[-5:]) < sum(a[:5]), "the loss does not fall"


def _tiny_neutral_lm(tiny_model_dir, tmp_path, name, **spec_fields):
    loaded = models.load(models.ModelSpec(name=str(tiny_model_dir)), for_training=True)
    loaded.tokenizer.padding_side = "right"
    spec = train.TrainSpec(**{"source": "de", "epochs": 1, "batch_size": 8, "seed": 7, **spec_fields})
    examples = train.training_examples(spec, data.load())[:32]
    return train.make_trainer(loaded, spec, examples, tmp_path / name)


def test_the_lm_head_runs_on_labelled_positions_only_and_the_loss_and_gradients_are_the_models(
        tiny_model_dir, tmp_path):
    from xdetox.neutral_lm import next_token_targets

    trainer = _tiny_neutral_lm(tiny_model_dir, tmp_path, "head")
    model = trainer.model.eval()  # LoRA dropout off: both losses see the same network
    batch = next(iter(trainer.get_train_dataloader()))
    labelled = int((next_token_targets(batch["labels"]) != -100).sum())
    assert labelled < batch["labels"].numel() - batch["labels"].shape[0], "the batch has padding to skip"
    rows = []
    hook = model.get_output_embeddings().register_forward_hook(lambda _m, args, out: rows.append(out.shape))

    def grads(loss):
        model.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in model.parameters() if p.requires_grad]

    with trainer.compute_loss_context_manager():
        ours = trainer.compute_loss(model, dict(batch))
    ours_grads = grads(ours)
    with trainer.compute_loss_context_manager():
        full = model(**batch).loss  # the model's own ForCausalLMLoss over every position
    full_grads = grads(full)
    hook.remove()
    assert rows[0][0] == labelled and len(rows[0]) == 2, "the head saw labelled positions only"
    assert rows[1][:2] == batch["labels"].shape, "the model's own forward scores every position"
    assert ours.item() == pytest.approx(full.item(), rel=1e-5)
    for a, b in zip(ours_grads, full_grads):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-6)


def test_neutral_lm_trainer_keeps_the_plain_trainers_loss_curve_under_gradient_accumulation(
        tiny_model_dir, tmp_path):
    from peft import get_peft_model
    from transformers import Trainer, set_seed

    ours = _tiny_neutral_lm(tiny_model_dir, tmp_path, "ours", batch_size=4, gradient_accumulation_steps=2)
    loaded = models.load(models.ModelSpec(name=str(tiny_model_dir)), for_training=True)
    set_seed(7)
    plain = Trainer(
        model=get_peft_model(loaded.model, train._lora_config(loaded, train.TrainSpec(source="de"))),
        args=ours.args, train_dataset=ours.train_dataset, data_collator=ours.data_collator)
    a, b = _loss_curve(ours), _loss_curve(plain)
    assert len(a) == len(b) == 32 // 4, "one loss per micro-batch"
    assert a[0] == pytest.approx(b[0], rel=1e-5), "same adapter, same first batches, same normalisation"
    assert max(abs(x - y) / y for x, y in zip(a, b)) < 1e-3


def test_length_grouping_is_opt_in_and_keeps_existing_keys():
    m, ex = models.ModelSpec(), [train.Example("", "x")]
    plain, grouped = train.TrainSpec(source="en"), train.TrainSpec(source="en", group_by_length=True)
    assert "group_by_length" not in plain.to_dict(), "a field added later must not change existing keys"
    assert grouped.to_dict()["group_by_length"] is True
    assert train.adapter_key(m, plain, ex) != train.adapter_key(m, grouped, ex)
    for spec in (plain, grouped):  # the store keeps the dict; a spec rebuilt from it is the same spec
        fields = spec.to_dict()
        assert train.TrainSpec(**{**fields, "lora": train.LoraSpec(**fields["lora"])}) == spec
    with pytest.raises(XdetoxInputError, match="not dpo"):
        train.TrainSpec(paradigm="dpo", source="en", group_by_length=True)
    with pytest.raises(XdetoxInputError, match="true or false"):
        train.TrainSpec(source="en", group_by_length="yes")


def _padding_share(trainer) -> float:
    masks = [batch["attention_mask"] for batch in trainer.get_train_dataloader()]
    return 1 - sum(int(m.sum()) for m in masks) / sum(m.numel() for m in masks)


def test_length_grouped_batches_carry_less_padding_and_the_same_examples(tiny_model_dir, tmp_path):
    corpus = data.load()
    shares, seen = {}, {}
    for grouped in (False, True):
        loaded = models.load(models.ModelSpec(name=str(tiny_model_dir)), for_training=True)
        loaded.tokenizer.padding_side = "right"
        spec = train.TrainSpec(source="ar", epochs=1, batch_size=8, seed=5, group_by_length=grouped,
                               sentences_per_sequence=1)
        trainer = train.make_trainer(loaded, spec, train.training_examples(spec, corpus), tmp_path / str(grouped))
        assert trainer.args.train_sampling_strategy == ("group_by_length" if grouped else "random")
        shares[grouped] = _padding_share(trainer)
        seen[grouped] = sorted(tuple(row[row != -100].tolist()) for b in trainer.get_train_dataloader()
                               for row in b["labels"])
    assert seen[True] == seen[False], "grouping reorders the examples, it does not change them"
    assert shares[True] < shares[False] / 3, shares


def test_row_cross_entropy_equals_torchs_fp32_cross_entropy_and_leaves_the_logits_alone():
    from xdetox.neutral_lm import RowCrossEntropy

    torch.manual_seed(0)
    base = (torch.randn(7, 1000) * 4).to(torch.bfloat16)
    targets, weights = torch.randint(0, 1000, (7,)), torch.rand(7)
    ours_in, ref_in = base.clone().requires_grad_(True), base.clone().requires_grad_(True)
    ours = RowCrossEntropy.apply(ours_in, targets)
    ref = torch.nn.functional.cross_entropy(ref_in.float(), targets, reduction="none")
    (ours * weights).sum().backward()
    (ref * weights).sum().backward()
    assert ours.dtype == torch.float32 and ours_in.grad.dtype == torch.bfloat16
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ours_in.grad.float(), ref_in.grad.float(), rtol=8e-3, atol=1e-7)  # bf16 ulp
    assert torch.equal(ours_in.detach(), base), "the saved logits were modified in place"


def _bf16_step(tiny_model_dir, tmp_path, monkeypatch, plain: bool = False, softcap: float | None = None):
    """One training-mode loss and its LoRA gradients on the first batch (bf16 tiny model, no dropout),
    and how often the row-wise loss ran."""
    from xdetox import neutral_lm

    calls = []
    apply = neutral_lm.RowCrossEntropy.apply
    monkeypatch.setattr(neutral_lm.RowCrossEntropy, "apply", lambda *a: calls.append(1) or apply(*a))
    if plain:
        monkeypatch.setattr(neutral_lm, "LOGIT_TRANSFORMS", ("vocab_size",))  # a set field: the plain path
    loaded = models.load(models.ModelSpec(name=str(tiny_model_dir), dtype="bfloat16"), for_training=True)
    loaded.model.config.final_logit_softcapping = softcap
    loaded.tokenizer.padding_side = "right"
    spec = train.TrainSpec(source="de", epochs=1, batch_size=8, seed=7, lora=train.LoraSpec(dropout=0.0))
    trainer = train.make_trainer(loaded, spec, train.training_examples(spec, data.load())[:32], tmp_path / "t")
    model = trainer.model.train()
    batch = next(iter(trainer.get_train_dataloader()))
    with trainer.compute_loss_context_manager():
        loss = trainer.compute_loss(model, dict(batch))
    loss.backward()
    own = model(**batch).loss.item()  # the model's own ForCausalLMLoss (softcap included) over every position
    return loss.item(), [p.grad.clone() for p in model.parameters() if p.requires_grad], own, len(calls)


def test_under_bf16_the_loss_is_taken_row_by_row_at_the_head_and_equals_the_plain_path(
        tiny_model_dir, tmp_path, monkeypatch):
    fused, fused_grads, own, calls = _bf16_step(tiny_model_dir, tmp_path / "a", monkeypatch)
    assert calls == 1, "bf16 logits on a CPU: the row-wise loss"
    plain, plain_grads, _, plain_calls = _bf16_step(tiny_model_dir, tmp_path / "b", monkeypatch, plain=True)
    assert plain_calls == 0, "the plain path does not take it"
    assert fused == pytest.approx(plain, rel=1e-5) and fused == pytest.approx(own, rel=1e-2)
    for a, b in zip(fused_grads, plain_grads):
        torch.testing.assert_close(a, b, rtol=2e-2, atol=1e-5)


def test_a_model_that_transforms_its_logits_gets_the_loss_of_the_logits_it_returns(
        tiny_model_dir, tmp_path, monkeypatch):
    loss, _, own, calls = _bf16_step(tiny_model_dir, tmp_path, monkeypatch, softcap=0.5)
    assert calls == 0, "final_logit_softcapping changes the head's output: no row-wise loss at the head"
    assert loss == pytest.approx(own, rel=1e-2), "the softcapped logits' loss"


def test_sentences_are_packed_as_running_text_within_each_language():
    corpus = data.load()
    pool = ("en", "zh")
    spec = train.TrainSpec(paradigm="m-ft", source=None, pool=pool, sentences_per_sequence=4, seed=3)
    examples = train.training_examples(spec, corpus)
    neutrals = {lang: [p.neutral for p in corpus.select(lang, "train")] for lang in pool}
    assert len(examples) == 2 * 75 and all(e.prompt == "" for e in examples)
    en, zh = examples[:75], examples[75:]
    # each sequence is 4 sentences of one language joined by a space; every sentence exactly once
    joined = " ".join(e.completion for e in en)
    assert sorted(s for e in en for s in _split_known(e.completion, neutrals["en"])) == sorted(neutrals["en"])
    assert all(len(_split_known(e.completion, neutrals["zh"])) == 4 for e in zh)
    assert neutrals["zh"][0] not in joined
    assert train.training_examples(spec, corpus) == examples, "the same seed packs the same sequences"
    assert train.training_examples(train.TrainSpec(paradigm="m-ft", source=None, pool=pool, sentences_per_sequence=4,
                                                   seed=4), corpus) != examples
    one = train.training_examples(train.TrainSpec(source="en", sentences_per_sequence=1), corpus)
    assert [e.completion for e in one] == neutrals["en"], "1: one sentence per sequence, in the data's order"


def _split_known(text: str, sentences: list[str]) -> list[str]:
    """The known sentences a packed sequence is made of, in order (greedy, longest first)."""
    found, rest = [], text
    while rest:
        match = max((s for s in sentences if rest.startswith(s)), key=len)
        found.append(match)
        rest = rest[len(match):].removeprefix(" ")
    return found


def test_packing_is_a_neutral_lm_setting_and_keeps_the_reference_keys_at_one():
    m, ex = models.ModelSpec(), [train.Example("", "x")]
    one, four = train.TrainSpec(source="en", sentences_per_sequence=1), train.TrainSpec(source="en",
                                                                                       sentences_per_sequence=4)
    assert "sentences_per_sequence" not in one.to_dict()
    assert four.to_dict()["sentences_per_sequence"] == 4
    assert train.adapter_key(m, one, ex) != train.adapter_key(m, four, ex)
    assert train.TrainSpec(paradigm="dpo", source="en", sentences_per_sequence=4).sentences_per_sequence == 1
    assert train.TrainSpec(source="en", objective="rewrite", sentences_per_sequence=4).sentences_per_sequence == 1
    with pytest.raises(XdetoxInputError, match="sentences_per_sequence"):
        train.TrainSpec(source="en", sentences_per_sequence=0)
    assert train.adapter_key(m, one, ex, "v1") != train.adapter_key(m, one, ex), "the text version is in the key"
