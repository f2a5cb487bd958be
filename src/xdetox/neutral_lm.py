"""The ``neutral-lm`` trainer: transformers' ``Trainer`` whose LM head runs over labelled positions only.

The objective is the reference's (``DataCollatorForLanguageModeling(mlm=False)``: labels = the
input ids, every padding position -100; the model's own token-mean cross-entropy). What changes
is where the work goes. A causal LM's forward turns *every* position of the padded batch into
vocabulary logits (262k of them for Gemma 3), upcasts them to fp32 for the loss, and the loss
then ignores the positions whose next token is padding. On a CPU the output projection and
that fp32 softmax are a large part of a LoRA step, and a random batch of 8 neutral sentences is about
a third padding. Here a forward pre-hook on the output embeddings hands the LM head only the
positions whose shifted label is a real token; the loss is ``transformers``' own
``fixed_cross_entropy`` over those rows, with the same normalisation (``num_items_in_batch``
under gradient accumulation, the token mean otherwise).

Second, with bf16 logits on a CPU, the loss is taken inside the head's forward hook, one row at a time
in fp32 (``RowCrossEntropy``): accelerate's mixed-precision wrapper would otherwise copy the model's
logits to fp32 and torch's cross-entropy would build three more fp32 tensors as wide as the
vocabulary; those copies, not the arithmetic, were about a third of a step.

Same loss, same gradients up to rounding: on a tiny model the loss equals the model's own and the LoRA
gradients agree (tests/test_train.py), and ``RowCrossEntropy`` equals torch's fp32 cross-entropy
(loss 1e-6 relative, gradient to bf16 rounding). On the embedded model (bf16, one epoch of the 300 en
neutrals, batch 8, 1 torch thread, the other core idle, Intel Xeon with AMX; medians of 2-3 runs
alternating in one process): TRL's ``SFTTrainer`` 2.33 examples/s, labelled-rows head alone 7.02
(3.0x), with the row-wise loss 8.26 (3.5x); first step's loss within 7e-6 relative, later steps within
0.28 % (mean 0.10 %, the adapters drift apart by rounding as any two of these implementations do);
mean training loss 4.60274 -> 4.60311. With fp32 logits (a CPU without bf16) the row-wise loss
measured no faster (1.04x, within noise), so there the loss is torch's (docs/performance.md, "LoRA training").
"""

from __future__ import annotations

import torch
from transformers import Trainer
from transformers.loss.loss_utils import fixed_cross_entropy

from xdetox.models import head_on_rows

IGNORE = -100


def next_token_targets(labels: torch.Tensor) -> torch.Tensor:
    """Position t's target is label t+1; the last position has none (as ``ForCausalLMLoss`` shifts)."""
    return torch.nn.functional.pad(labels, (0, 1), value=IGNORE)[..., 1:]


# Config fields through which a model changes its head's output before returning it as logits; a model
# with any of them set gets the plain path (its loss must see the logits it returns).
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


class NeutralLMTrainer(Trainer):
    """``Trainer`` computing a causal LM's logits and loss at labelled positions only.

    Everything else (forward without labels, gradient-accumulation normalisation, device
    averaging) is ``Trainer.compute_loss``'s own path for a ``compute_loss_func``.

    On a CPU with low-precision logits (bf16 autocast) the loss is also taken where the logits are
    made: a forward hook on the head computes the per-row cross-entropy (``RowCrossEntropy``) and hands
    the model an empty logits tensor, so neither accelerate's fp32 copy of the model's outputs nor
    torch's fp32 softmax buffers are built for 262k-wide rows; ``compute_loss_func`` then reduces those
    rows as ``fixed_cross_entropy`` would. Elsewhere (fp32 logits, a GPU, a model that transforms its
    head's output: ``LOGIT_TRANSFORMS``) the loss is computed from the returned logits.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, compute_loss_func=self._labelled_loss, **kwargs)
        self._row_losses: torch.Tensor | None = None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        unwrapped = self.accelerator.unwrap_model(model)
        head = unwrapped.get_output_embeddings()
        if head is None or "labels" not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        targets = next_token_targets(inputs["labels"])
        keep = targets != IGNORE
        targets = targets[keep]
        config = getattr(unwrapped, "config", None)
        fused = model.training and not return_outputs and not any(
            getattr(config, name, None) not in (None, 1, 1.0) for name in LOGIT_TRANSFORMS)

        def row_losses(_module, _args, logits):
            # fp32 logits (a CPU without bf16): measured no faster this way (1.04x, within noise)
            if logits.dtype == torch.float32 or logits.device.type != "cpu" or logits.shape[:-1] != targets.shape:
                return None
            self._row_losses = RowCrossEntropy.apply(logits, targets)
            return logits[..., :0]  # the model's logits output: the loss is already taken

        with head_on_rows(head, keep):  # the head computes the labelled positions only
            hook = head.register_forward_hook(row_losses) if fused else None
            try:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            finally:
                if hook is not None:
                    hook.remove()
                self._row_losses = None

    def _labelled_loss(self, outputs, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
        losses, self._row_losses = self._row_losses, None
        if losses is None:
            return labelled_positions_loss(outputs, labels, num_items_in_batch)
        return _reduce(losses, num_items_in_batch)


def labelled_positions_loss(outputs, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
    """``ForCausalLMLoss`` over the labelled positions: logits are already those rows, or are cut to them."""
    targets = next_token_targets(labels)
    keep = targets != IGNORE
    logits = outputs.logits
    if logits.dim() == 3:  # a head that was not handed the hidden states as (batch, positions, width)
        logits = logits[keep]
    return fixed_cross_entropy(logits.float(), targets[keep], num_items_in_batch)


def _reduce(losses: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
    """``fixed_cross_entropy``'s reduction of per-row losses: the sum over ``num_items_in_batch`` where the
    trainer counts tokens across gradient-accumulation micro-batches, the mean otherwise."""
    if num_items_in_batch is None:
        return losses.mean()
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(losses.device)
    return losses.sum() / num_items_in_batch


class RowCrossEntropy(torch.autograd.Function):
    """Per-row cross-entropy of low-precision logits, computed in fp32 one row at a time.

    The same values as ``cross_entropy(logits.float(), targets, reduction="none")`` (fp32 softmax, the
    gradient cast back to the logits' dtype), without its full-width fp32 copies: torch's path
    materialises the upcast logits, their log-softmax, a dense gradient and its fp32 backward, four
    tensors of rows x 262k floats for Gemma 3, and on a CPU moving them costs more than the
    arithmetic. Here a row's fp32 values live only while that row is worked on (1 MB, in cache),
    and backward saves the bf16 logits instead of an fp32 log-softmax. Measured on 160 rows x 262,144
    bf16 logits, forward + backward, 1 thread, Intel Xeon (AMX): 491 ms -> 148 ms; loss within 1e-6
    relative, gradient within 1e-6 absolute (tests/test_train.py checks both against torch's path).
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        lse = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
        for i, row in enumerate(logits):
            lse[i] = torch.logsumexp(row.float(), 0)
        ctx.save_for_backward(logits, targets, lse)
        return lse - logits.gather(1, targets[:, None]).squeeze(1).float()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        logits, targets, lse = ctx.saved_tensors
        out = torch.empty_like(logits)
        for i, row in enumerate(logits):  # d loss_i / d logits_i = softmax_i - onehot(target_i)
            p = row.to(torch.float32, copy=True).sub_(lse[i]).exp_()
            p[targets[i]] -= 1
            out[i] = p.mul_(grad[i])
        return out, None
