"""Prepacked weights for a model's large linear layers during inference on a CPU: faster, same outputs.

A CPU matrix product reorders its weight into the kernel's blocked layout on every call. At
decoding batch sizes that reorder costs as much as the product: Gemma 3's 262k-token output
projection (`[16, 640] x [640, 262144]`, bf16, 2 threads, AMD EPYC with AVX512-BF16) takes
40 ms through ``F.linear`` and 19 ms with its weight reordered once (oneDNN,
``torch.ops.mkldnn._reorder_linear_weight``); the layers' 640 x 1024-2048 products gain 1.35x.

``prepacked(model)`` reorders each large ``nn.Linear`` weight once and routes the layer's
forward through oneDNN's packed linear while the block runs; on exit every layer is as it was.

Equivalence is checked, not assumed, layer by layer, on seeded probe inputs of 1, 5, 16 and
2 x 7 rows; a layer that fails keeps ``F.linear``:

- bf16: the packed product must equal ``F.linear``'s bit for bit (a kernel that adds in another
  order differs in the last bits on random inputs). So a bf16 run's completions, perplexities and
  embeddings are the same with or without it (tested on a tiny model; ``make run`` on that EPYC
  gave the same 1,800 completions, scores and measures, 703 s instead of 898 s).
- fp32 (a CPU without bf16): ``F.linear`` goes through MKL, oneDNN adds in another order, so the two
  differ in the last bits; the packed product must be within ``FP32_TOLERANCE`` of the largest
  output of ``F.linear`` (measured 1.3e-6 to 1.5e-6, fp32 rounding). It changes what an fp32 run
  samples as a change of thread count does (another valid sample, not another distribution), and
  summary.json ``run.decode.linear`` says so (``description``). Measured with oneDNN, MKL and ATen
  held to AVX2 on that EPYC (``ONEDNN_MAX_CPU_ISA=AVX2``, ``MKL_ENABLE_INSTRUCTIONS=AVX2``,
  ``ATEN_CPU_CAPABILITY=avx2``): the output projection 133 -> 49 ms, generation of 32 de prompts
  1.8x faster (32 of 32 completions the same).

Inference only: an input that needs a gradient, or of another dtype than the weight, goes
through ``F.linear`` as before. The weights must not change inside the block. A packed weight
stays on its layer for the next block (packing the embedded model takes 0.5 s; its packed
weights take 430 MB) until the weight changes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

MIN_FEATURES = 512  # smaller products (k/v projections, LoRA factors) gain nothing: 256 x 640 measured slower
PACK_ROWS = 16  # the batch size the packed layout is tuned for (the default decoding batch)
PROBE_SHAPES = ((1,), (5,), (16,), (2, 7))  # leading dimensions of the probe inputs
FP32_TOLERANCE = 1e-5  # fp32: largest |packed - F.linear| allowed, relative to the largest |F.linear| output

Product = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


def _rows(product: Product) -> Product:
    """``product`` over the input's rows as one matrix (the kernels take 2-D inputs their own way)."""
    def flat(x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        out = product(x.reshape(-1, x.shape[-1]), bias)
        return out.view(*x.shape[:-1], out.shape[-1])
    return flat


def _onednn(weight: torch.Tensor) -> Product:
    packed = torch.ops.mkldnn._reorder_linear_weight(weight, PACK_ROWS)
    return _rows(lambda x, bias: torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], ""))


def candidates(dtype: torch.dtype) -> list[tuple[str, Callable[[torch.Tensor], Product]]]:
    """(name, packer) of the packed products this torch build offers for weights of ``dtype``."""
    if torch.backends.mkldnn.is_available() and dtype in (torch.bfloat16, torch.float32):
        return [("onednn", _onednn)]
    return []


def description(dtype: torch.dtype) -> str:
    """What ``prepacked`` does to a model of ``dtype`` on this machine, for a run's record."""
    if not candidates(dtype):
        return "F.linear"
    if dtype == torch.float32:
        return (f"oneDNN prepacked where within {FP32_TOLERANCE:g} of F.linear (relative to its largest output),"
                " checked per layer; else F.linear")
    return "oneDNN prepacked where bit-identical to F.linear, checked per layer; else F.linear"


def same_as_linear(product: Product, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """Whether ``product`` gives ``F.linear``'s output on seeded probe inputs: bit for bit, or in fp32
    within ``FP32_TOLERANCE`` of its largest output."""
    rng = torch.Generator().manual_seed(0)
    for shape in PROBE_SHAPES:
        x = torch.randn(*shape, weight.shape[1], generator=rng).to(weight.dtype)
        try:
            got, expected = product(x, bias), torch.nn.functional.linear(x, weight, bias)
        except RuntimeError:  # a kernel this CPU or build does not run
            return False
        if weight.dtype == torch.float32:
            if got.shape != expected.shape or bool(
                    (got - expected).abs().max() > FP32_TOLERANCE * expected.abs().max()):
                return False
        elif not torch.equal(got, expected):
            return False
    return True


def _forward(layer: torch.nn.Linear, product: Product):
    def forward(x: torch.Tensor) -> torch.Tensor:
        if x.dtype != layer.weight.dtype or (torch.is_grad_enabled() and x.requires_grad):
            return torch.nn.functional.linear(x, layer.weight, layer.bias)
        return product(x, layer.bias)
    return forward


def pack_layer(layer: torch.nn.Linear) -> str | None:
    """Route ``layer`` through the first packed product that matches ``F.linear`` (``same_as_linear``);
    its name, or None.

    The packed weight is kept on the layer for the next block, as long as the weight and bias are
    the same tensors, unchanged (their version counters: a merged adapter changes them).
    """
    with torch.no_grad():
        weight = layer.weight.detach()
        bias = None if layer.bias is None else layer.bias.detach()
        key = (weight.data_ptr(), weight._version, weight.dtype, tuple(weight.shape),
               None if bias is None else (bias.data_ptr(), bias._version))
        cached = getattr(layer, "_xdetox_packed", None)
        if cached is None or cached[0] != key:
            cached = (key, None, None)
            for name, packer in candidates(weight.dtype):
                try:
                    product = packer(weight)
                except RuntimeError:
                    continue
                if same_as_linear(product, weight, bias):
                    cached = (key, name, product)
                    break
            layer._xdetox_packed = cached
    _, name, product = cached
    if product is not None:
        layer.forward = _forward(layer, product)
    return name


def packed_layers(model: torch.nn.Module) -> Counter:
    """How many of ``model``'s layers hold a packed weight, per kernel (what the last block packed)."""
    kernels = (getattr(m, "_xdetox_packed", (None, None))[1] for m in model.modules())
    return Counter(k for k in kernels if k is not None)


@contextmanager
def prepacked(model: torch.nn.Module, min_features: int | None = None) -> Iterator[Counter]:
    """Within the block, ``model``'s CPU ``nn.Linear`` layers with both sides >= ``min_features``
    (default ``MIN_FEATURES``) multiply with prepacked weights where that is bit-identical; yields how
    many layers took which kernel (``Counter``, empty on a GPU, in fp32 or where none matched)."""
    min_features = MIN_FEATURES if min_features is None else min_features
    packed: Counter = Counter()
    layers = [m for m in model.modules() if type(m) is torch.nn.Linear and m.weight.device.type == "cpu"
              and min(m.in_features, m.out_features) >= min_features and "forward" not in vars(m)]
    done = []
    try:
        for layer in layers:
            name = pack_layer(layer)
            if name is not None:
                packed[name] += 1
                done.append(layer)
        yield packed
    finally:
        for layer in done:
            del layer.forward
