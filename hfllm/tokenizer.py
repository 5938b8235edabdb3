"""The tokenizer stage: byte-level BPE trained with `tokenizers`, saved as a transformers tokenizer
that every later stage loads with `AutoTokenizer`.

Why these choices: digits split one by one before BPE, so numbers tokenize uniformly (as in Llama
3-era tokenizers) — the arithmetic tasks of post-training depend on it; byte-level, so any UTF-8
text round-trips; a separate `<|pad|>`, so padding never teaches the model to stop; ChatML turns
with `{% generation %}` markers around assistant replies, which TRL's `assistant_only_loss`
needs; and no post-processor, so `tokenizer(text)` adds no special tokens, as lm-eval's rolling
log-likelihood and the packing both expect.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from hfllm.data.loading import check_texts, load_text_dataset
from hfllm.errors import ConfigError
from hfllm.report import StageContext

BOS, EOS, PAD = "<|begin_of_text|>", "<|end_of_text|>", "<|pad|>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [PAD, BOS, EOS, IM_START, IM_END]

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\\n' }}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{ '\\n' }}"
    "{%- else %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}"
)


@dataclass
class TokenizerArguments:
    dataset_name: str = field(metadata={"help": "Text to train on (data stage dir or any dataset)."})
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset config name."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train the tokenizer on."})
    dataset_test_split: str = field(default="test", metadata={"help": "Split to measure bytes per token on."})
    dataset_text_field: str = field(default="text", metadata={"help": "Column holding the text."})
    vocab_size: int = field(default=8192, metadata={"help": "Vocabulary size, special tokens included."})
    min_frequency: int = field(default=2, metadata={"help": "Least count of a pair to be merged."})
    max_train_bytes: int | None = field(default=None, metadata={"help": "Train on at most this many bytes of text."})
    model_max_length: int = field(default=2048, metadata={"help": "Saved as the tokenizer's model_max_length."})
    output_dir: str = field(default="hfllm-tokenizer", metadata={"help": "Where the tokenizer is saved."})


def _texts(ds, text_field: str, max_bytes: int | None) -> Iterator[str]:
    used = 0
    for text in ds[text_field] if hasattr(ds, "__len__") else (row[text_field] for row in ds):
        yield text
        used += len(text.encode("utf-8"))
        if max_bytes is not None and used >= max_bytes:
            return


def train_bpe(texts: Iterator[str], vocab_size: int, min_frequency: int = 2,
              model_max_length: int = 2048) -> PreTrainedTokenizerFast:
    """Train byte-level BPE on `texts` and wrap it with its special tokens and chat template."""
    if vocab_size < 256 + len(SPECIAL_TOKENS) + 1:
        raise ConfigError(f"must be at least {256 + len(SPECIAL_TOKENS) + 1} (256 bytes + special tokens)",
                          field="vocab_size")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True),
         pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=[IM_START, IM_END],
        chat_template=CHAT_TEMPLATE,
        model_max_length=model_max_length,
    )


def bytes_per_token(tokenizer, texts: list[str]) -> float:
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    n_tokens = sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"])
    return n_bytes / max(n_tokens, 1)


def run_tokenizer_stage(args: TokenizerArguments, *, context: StageContext) -> dict[str, Any]:
    train = load_text_dataset(args.dataset_name, args.dataset_train_split, text_field=args.dataset_text_field,
                              config=args.dataset_config)
    check_texts(train, args.dataset_text_field, args.dataset_name)
    tokenizer = train_bpe(_texts(train, args.dataset_text_field, args.max_train_bytes), args.vocab_size,
                          args.min_frequency, args.model_max_length)
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(args.output_dir)

    test = load_text_dataset(args.dataset_name, args.dataset_test_split, text_field=args.dataset_text_field,
                             config=args.dataset_config)
    metrics = {
        "vocab_size": len(tokenizer),
        "train_bytes_per_token": bytes_per_token(tokenizer, list(_texts(train, args.dataset_text_field, 2_000_000))),
        "heldout_bytes_per_token": bytes_per_token(tokenizer, list(test[args.dataset_text_field])),
    }
    context.section.text(
        f"Byte-level BPE, digits split, {len(tokenizer)} tokens "
        f"(special: {', '.join(f'`{t}`' for t in SPECIAL_TOKENS)}); ChatML chat template with generation markers."
    )
    return metrics
