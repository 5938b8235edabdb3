"""`attn_implementation="blocked_causal"`: causal self-attention that skips the masked half.

Eager attention scores every query against every key and then masks the upper triangle away, so
half of its QKᵀ and AV work and half of its softmax produce zeros. Here the queries go in blocks
of `BLOCK` rows; block i scores only keys [0, end of block i), and its mask is computed inside the
fused softmax from indices (and, for packed sequences, per-token document ids), never read from a
materialised (batch, 1, seq, seq) tensor. Same result as eager attention: fp32 softmax, output in
the input dtype.

Why it exists: on the CPU, eager attention beats the CPU SDPA kernel at short sequences (the
profiles use it), but its cost grows with seq². Also, under `torch.compile` transformers cannot
tell whether `position_ids` describe packed sequences, so it always builds a packed-sequence
mask, which inductor recomputes per score with gathers. Here document boundaries come from
`position_ids` directly (transformers' `find_packed_sequence_indices`: a step other than +1
starts a new document), one small (batch, seq) tensor. Measured on 2 Zen 4 cores, compiled bf16
training steps against eager attention in the same process: the 12 × 768 model at seq 1,024,
13 % less time a step; the benchmark's 4 × 256 model at seq 256, batch 16, the same time
(−0.7 %), batch 8 slower (+4 to +13 % median) — hence the profiles, at 128–256 tokens, keep eager.
On a GPU use `sdpa` or flash attention: their fused kernels already skip masked blocks.

Where the mask is not plain causal over whole blocks — a padding mask, a sliding window, decoding
with a KV cache, attention dropout, a non-causal module, or a model type not listed in
`PLAIN_CAUSAL_MODEL_TYPES` (whose masks may add bidirectional parts) — the mask is transformers'
SDPA mask and the attention its SDPA path.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, find_packed_sequence_indices, sdpa_mask

NAME = "blocked_causal"
BLOCK = 128
# Decoder-only text models whose mask is causal ∧ padding ∧ packing (∧ a sliding window, passed as
# `local_size`): nothing that attends forwards, so skipping the upper blocks is exact.
PLAIN_CAUSAL_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})


def blocked_causal_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scaling: float,
                             documents: torch.Tensor | None = None, block: int = BLOCK) -> torch.Tensor:
    """Causal softmax(q·kᵀ·scaling)·v over (batch, heads, seq, head_dim) tensors, query block by
    query block; with `documents` (batch or 1, seq), a token also sees only its own document.
    Returns (batch, heads, seq, head_dim)."""
    seq = query.shape[-2]
    outputs = []
    for start in range(0, seq, block):
        end = min(start + block, seq)
        scores = torch.matmul(query[:, :, start:end], key[:, :, :end].transpose(2, 3)) * scaling
        rows = torch.arange(start, end, device=query.device).unsqueeze(1)
        hidden = torch.arange(end, device=query.device) > rows  # (rows, keys): key after the query
        if documents is not None:  # (batch, 1, rows, keys): key in another document
            hidden = hidden | (documents[:, None, start:end, None] != documents[:, None, None, :end])
        scores = scores.masked_fill(hidden, float("-inf"))
        probs = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
        outputs.append(torch.matmul(probs, value[:, :, :end]))
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)


def blocked_causal_attention_forward(module: nn.Module, query: torch.Tensor, key: torch.Tensor,
                                     value: torch.Tensor, attention_mask: torch.Tensor | None,
                                     scaling: float | None = None, dropout: float = 0.0, **kwargs):
    """transformers' attention-function signature (see `AttentionInterface`); returns
    (output as batch, seq, heads, head_dim; no attention weights)."""
    plain_causal = (attention_mask is None and query.shape[-2] == key.shape[-2] > 1
                    and getattr(module, "is_causal", True) and not (dropout and module.training)
                    and kwargs.get("sliding_window") is None)
    if not plain_causal:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    position_ids = kwargs.get("position_ids")
    # transformers' own packed-sequence rule; None when each row is one document (outside tracing)
    documents = None if position_ids is None else find_packed_sequence_indices(position_ids)
    output = blocked_causal_attention(query, key, value, scaling, documents)
    return output.transpose(1, 2).contiguous(), None


def blocked_causal_mask(batch_size: int, q_length: int, kv_length: int, q_offset: int = 0, kv_offset: int = 0,
                        attention_mask: torch.Tensor | None = None, local_size: int | None = None,
                        config=None, **kwargs) -> torch.Tensor | None:
    """No mask where the attention above applies it itself: a whole block attending to itself
    (no cache offset, no padding mask, no window) in a plain causal model; packed sequences
    included, since the attention reads their boundaries from `position_ids`. Elsewhere SDPA's."""
    if (attention_mask is None and local_size is None and q_length == kv_length
            and isinstance(q_offset, int) and q_offset == 0 and isinstance(kv_offset, int) and kv_offset == 0
            and getattr(config, "model_type", None) in PLAIN_CAUSAL_MODEL_TYPES):
        return None
    return sdpa_mask(batch_size=batch_size, q_length=q_length, kv_length=kv_length, q_offset=q_offset,
                     kv_offset=kv_offset, attention_mask=attention_mask, local_size=local_size, config=config,
                     **kwargs)


AttentionInterface.register(NAME, blocked_causal_attention_forward)
ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, blocked_causal_mask)
