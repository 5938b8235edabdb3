"""Llama-style model configs by size, their parameter counts and training FLOPs per token."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

from hfllm.errors import ConfigError


def _round_up(x: float, multiple: int) -> int:
    return int(-(-x // multiple) * multiple)


def llama_config(
    num_layers: int,
    hidden_size: int,
    num_heads: int,
    seq_len: int,
    vocab_size: int,
    *,
    num_kv_heads: int | None = None,
    intermediate_size: int | None = None,
    tie_word_embeddings: bool = True,
    rope_theta: float = 10000.0,
    **token_ids: int | None,
) -> LlamaConfig:
    """A Llama config from (layers, width, heads, seq, vocab); FFN width 8/3·d rounded to 64.

    `token_ids` are bos/eos/pad ids, passed to the config so that generation knows them.
    """
    for name, value in [("num_layers", num_layers), ("hidden_size", hidden_size), ("num_heads", num_heads),
                        ("seq_len", seq_len), ("vocab_size", vocab_size)]:
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")
    if hidden_size % num_heads:
        raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
    num_kv_heads = num_kv_heads or num_heads
    if num_heads % num_kv_heads:
        raise ValueError(f"num_heads {num_heads} is not divisible by num_kv_heads {num_kv_heads}")
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or _round_up(8 * hidden_size / 3, 64),
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=seq_len,
        tie_word_embeddings=tie_word_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": rope_theta},
        **{k: v for k, v in token_ids.items() if v is not None},
    )


def count_parameters(config: LlamaConfig, *, embeddings: bool = True) -> int:
    """Parameters of a Llama model, counted from its config (equals `model.num_parameters()`)."""
    d, v, layers = config.hidden_size, config.vocab_size, config.num_hidden_layers
    head_dim = getattr(config, "head_dim", None) or d // config.num_attention_heads
    q = d * config.num_attention_heads * head_dim
    kv = 2 * d * config.num_key_value_heads * head_dim
    o = config.num_attention_heads * head_dim * d
    mlp = 3 * d * config.intermediate_size
    per_layer = q + kv + o + mlp + 2 * d  # two RMSNorm weights
    total = layers * per_layer + d  # final norm
    if embeddings:
        total += v * d * (1 if config.tie_word_embeddings else 2)
    return total


def flops_per_token(config: LlamaConfig, seq_len: int | None = None) -> float:
    """Training FLOPs per token, PaLM-style (Chowdhery et al. 2022, appendix B):

        6·N + 12·L·d·T

    N counts the weights used in matmuls — every parameter except the input embedding table,
    with the output projection counted (even when tied); 6 = 2 (multiply-add) × 3 (forward +
    backward). 12·L·d·T is attention's QKᵀ and AV over a full (non-causal) T×T map.
    """
    seq_len = seq_len or config.max_position_embeddings
    norms = (2 * config.num_hidden_layers + 1) * config.hidden_size
    n_matmul = count_parameters(config, embeddings=False) - norms + config.vocab_size * config.hidden_size
    return 6 * n_matmul + 12 * config.num_hidden_layers * config.hidden_size * seq_len


def load_tokenizer(name: str, *, field: str, trust_remote_code: bool = False):
    """`AutoTokenizer.from_pretrained`, with a missing/unreadable one reported as a config error."""
    try:
        return AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot load a tokenizer from {name!r} ({str(err).splitlines()[0]})", field=field) from None


PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")


def check_weights_files(name: str, *, field: str, allow_pickle: bool = False) -> None:
    """A local model directory's weights: safetensors, each whole (a zero-byte or truncated file is an
    error naming it, not a traceback from the loader); pickle weights only with `allow_pickle`."""
    from hfllm.faults import safetensors_problem

    folder = Path(name)
    if not folder.is_dir():
        return  # a Hub id: transformers fetches safetensors (use_safetensors=True)
    safetensors = sorted(folder.glob("*.safetensors"))
    pickles = [f for f in PICKLE_WEIGHTS if (folder / f).exists()]
    if not safetensors and pickles and not allow_pickle:
        raise ConfigError(f"{folder / pickles[0]} is pickle weights (code could run on load): hfllm loads "
                          "safetensors only; convert them (save_pretrained writes safetensors) or opt in with "
                          "allow_pickle", field=field)
    for path in safetensors:
        if problem := safetensors_problem(path):
            raise ConfigError(f"cannot load weights from {folder}: {problem}", field=field)


def attention_kwargs(model_args) -> dict:
    """`from_pretrained`'s `attn_implementation` from a TRL `ModelConfig`, where one is set."""
    return {"attn_implementation": model_args.attn_implementation} if model_args.attn_implementation else {}


def load_causal_lm(name: str, *, field: str, trust_remote_code: bool = False, allow_pickle: bool = False,
                   **kwargs):
    """`AutoModelForCausalLM.from_pretrained` in fp32, safetensors only unless `allow_pickle`, with load
    failures as config errors."""
    check_weights_files(name, field=field, allow_pickle=allow_pickle)
    try:
        return AutoModelForCausalLM.from_pretrained(name, trust_remote_code=trust_remote_code, dtype=torch.float32,
                                                    use_safetensors=None if allow_pickle else True, **kwargs)
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot load a causal LM from {name!r} ({str(err).splitlines()[0]})", field=field) from None


def load_sequence_classifier(name: str, *, field: str, trust_remote_code: bool = False, allow_pickle: bool = False,
                             **kwargs):
    """`AutoModelForSequenceClassification.from_pretrained` (reward and value models, judges) in fp32
    under the same rules as `load_causal_lm`: safetensors only unless `allow_pickle`, damaged weights
    and load failures as config errors naming `field`."""
    from transformers import AutoModelForSequenceClassification

    check_weights_files(name, field=field, allow_pickle=allow_pickle)
    try:
        return AutoModelForSequenceClassification.from_pretrained(
            name, trust_remote_code=trust_remote_code, dtype=torch.float32,
            use_safetensors=None if allow_pickle else True, **kwargs)
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot load {name!r} as a reward model ({str(err).splitlines()[0]})",
                          field=field) from None


def check_vocab(model, tokenizer, model_name: str, *, field: str) -> None:
    """Every token id the tokenizer can produce must have an embedding row."""
    if model.config.vocab_size < len(tokenizer):
        raise ConfigError(
            f"tokenizer has {len(tokenizer)} tokens but model {model_name} has vocab_size {model.config.vocab_size}: "
            "train the tokenizer and model together, or resize",
            field=field,
        )
