"""The causal-LM training loss computed from hidden states, a chunk of tokens at a time.

Why: with the model's own loss, `forward` returns the logits of every position (batch × seq ×
vocab) as well as the loss. Under mixed precision Accelerate converts that output to fp32, and a
compiled graph has to write it out in full — for a 4 × 256 model with an 8k vocabulary that is
the largest tensor of the step. Here training calls the decoder, then projects and scores a
chunk of `chunk_size` tokens at a time and returns only the loss (~30 % more tokens/s on the
CPU benchmark, `benchmarks/pretrain_throughput.py`). The loss is transformers' `ForCausalLMLoss`:
labels shifted left, `-100` ignored, logits in fp32, summed and divided by `num_items_in_batch`
when the Trainer passes it (gradient accumulation), else the mean.

Why not torch's own `F.linear_cross_entropy` (torch ≥ 2.13, chunked with
`LinearCrossEntropyOptions`): compiled on this CPU it ran the same step at 9.1k tok/s against
17.4k for this loop, which inductor fuses with the rest of the graph; and the project's torch
range starts at 2.4.

Only for models whose head is the plain `lm_head(hidden)` (no logit scaling or soft-capping):
the model types in `CHUNKED_LOSS_MODEL_TYPES`; others keep their own loss. Evaluation and
generation (`model.eval()`) are untouched and still return logits.
"""

from __future__ import annotations

import types
from collections.abc import Callable

import torch
import torch.nn.functional as F
from transformers.modeling_outputs import CausalLMOutputWithPast

IGNORE_INDEX = -100
# Architectures whose logits are exactly `lm_head(last_hidden_state)` and whose loss is ForCausalLMLoss.
CHUNKED_LOSS_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})


class CrossEntropySum(torch.autograd.Function):
    """Summed cross-entropy of `logits` (tokens × vocab, any float dtype) against `target`
    (tokens; IGNORE_INDEX skipped), computed in fp32, with a backward written out by hand.

    Why not `F.cross_entropy`: its backward goes through log-softmax's, which needs the row sums
    of the NLL's one-hot gradient; compiled for the CPU, inductor computes those sums by sweeping
    the whole vocabulary once more (a compare per logit, 4 chunks fused side by side) — ≈ 8 of
    the ≈ 32 ms the loss took in a compiled benchmark step. Here the backward is one fused pass:
    (softmax(logits) − one-hot(target)) · grad, in the logits' dtype; forward saves the logits
    and one log-sum-exp per token. Used where compiled only: run eagerly, its separate ops make
    more passes over the logits than torch's fused log-softmax kernels.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = target != IGNORE_INDEX
        index = torch.where(valid, target, 0)
        logits32 = logits.float()
        lse = torch.logsumexp(logits32, dim=-1)
        picked = logits32.gather(1, index.unsqueeze(1)).squeeze(1)
        ctx.save_for_backward(logits, lse, index, valid)
        return torch.where(valid, lse - picked, 0.0).sum()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        logits, lse, index, valid = ctx.saved_tensors
        probs = torch.exp(logits.float() - lse.unsqueeze(1))
        onehot = torch.arange(logits.shape[1], device=logits.device) == index.unsqueeze(1)
        scale = torch.where(valid, grad, 0.0).unsqueeze(1)
        return ((probs - onehot.float()) * scale).to(logits.dtype), None


def chunked_causal_lm_loss(
    hidden: torch.Tensor,
    head: Callable[[torch.Tensor], torch.Tensor],
    labels: torch.Tensor,
    num_items_in_batch: torch.Tensor | int | None = None,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Next-token cross-entropy of `head(hidden)` against `labels`, a chunk of tokens at a time.

    hidden: (batch, seq, d); labels: (batch, seq), unshifted as the model receives them; head:
    the output projection, called as a module (so autocast and any sharding wrapper's hooks see
    each call).
    """
    shifted = F.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:].reshape(-1)
    flat = hidden.reshape(-1, hidden.shape[-1])
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, flat.shape[0], chunk_size):
        logits, target = head(flat[start : start + chunk_size]), shifted[start : start + chunk_size]
        if torch.compiler.is_compiling():  # one fused pass each way (CrossEntropySum's docstring)
            total = total + CrossEntropySum.apply(logits, target)
        else:  # eager: torch's fused log-softmax kernels beat CrossEntropySum's separate ops
            total = total + F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX, reduction="sum")
    if num_items_in_batch is None:
        return total / (shifted != IGNORE_INDEX).sum()
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch


def use_chunked_loss(model, chunk_size: int = 1024) -> bool:
    """Make `model`'s training forward return only the chunked loss. False where it does not apply.

    Patches this instance's `forward` (what `torch.compile` and the Trainer call); the class,
    the config and what `save_pretrained` writes stay the model's own.
    """
    if chunk_size <= 0 or getattr(model.config, "model_type", None) not in CHUNKED_LOSS_MODEL_TYPES:
        return False
    own_forward = model.forward
    decoder, head = model.get_decoder(), model.get_output_embeddings()

    def forward(self, input_ids=None, labels=None, num_items_in_batch=None, **kwargs):
        if (labels is None or not self.training or kwargs.get("past_key_values") is not None
                or kwargs.get("shift_labels") is not None):
            return own_forward(input_ids=input_ids, labels=labels, num_items_in_batch=num_items_in_batch, **kwargs)
        kwargs.pop("logits_to_keep", None)
        kwargs["use_cache"] = False  # training never reads a KV cache back
        hidden = decoder(input_ids=input_ids, **kwargs).last_hidden_state
        loss = chunked_causal_lm_loss(hidden, head, labels, num_items_in_batch, chunk_size)
        return CausalLMOutputWithPast(loss=loss)

    model.forward = types.MethodType(forward, model)
    return True


def use_chunked_loss_unless_liger(model, training_args) -> bool:
    """For a training stage: give `model` the chunked loss (True), unless its `TrainingArguments`
    set `use_liger_kernel` (the Trainer then applies Liger's fused linear cross-entropy, GPU).
    Reads `loss_chunk_size` where the config has it (hfllm's configs), else 1,024 tokens."""
    if training_args.use_liger_kernel:
        return False
    return use_chunked_loss(model, getattr(training_args, "loss_chunk_size", 1024))
