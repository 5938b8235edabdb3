"""The datasets post-training reads, in TRL's column conventions, checked and filtered before a
trainer sees them.

- SFT: conversational `messages` (a list of `{role, content}`), or `prompt`/`completion` (strings
  or message lists).
- Preferences (reward model, DPO): `prompt`/`chosen`/`rejected`, conversational or plain, or
  `chosen`/`rejected` alone as whole conversations.

A missing column is one `DataError` naming the dataset and the column. Rows that cannot teach
anything are dropped and counted by reason, never silently: an empty completion, identical
chosen and rejected, a prompt that alone fills `max_length`. If every row goes, that is a
`DataError` naming the dataset.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import datasets

from hfllm.data import loading
from hfllm.errors import DataError


def load_split(name: str, split: str, config: str | None = None) -> datasets.Dataset:
    """One split of a stage dir (`save_to_disk`), a json/jsonl/parquet/csv file, or a Hub dataset;
    errors name the dataset, and for a local file the first line that cannot be read."""
    return loading.load_split(name, split, config=config, file_types=(".json", ".jsonl", ".parquet", ".csv"))


def _require(ds: datasets.Dataset, columns: list[str], where: str) -> None:
    for column in columns:
        if column not in ds.column_names:
            raise DataError(f"column not found (columns: {', '.join(ds.column_names)})", where=where, field=column)


def _text_of(value: Any) -> str:
    """The text of a completion: a string, or the contents of a message list."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(str(m.get("content", "")) for m in value if isinstance(m, dict))
    return ""


def sft_format(ds: datasets.Dataset, where: str, text_field: str = "text") -> str:
    """`messages`, `prompt_completion` or `text` (language modelling); else a DataError naming `messages`."""
    if "messages" in ds.column_names:
        return "messages"
    if "prompt" in ds.column_names or "completion" in ds.column_names:
        _require(ds, ["prompt", "completion"], where)
        return "prompt_completion"
    if text_field in ds.column_names:
        return "text"
    raise DataError(f"column not found: SFT needs 'messages', or 'prompt' and 'completion' "
                    f"(columns: {', '.join(ds.column_names)})", where=where, field="messages")


def _keep(ds: datasets.Dataset, reasons: list[str | None], dropped: Counter, where: str) -> datasets.Dataset:
    for reason in reasons:
        if reason is not None:
            dropped[reason] += 1
    kept = [i for i, r in enumerate(reasons) if r is None]
    if not kept:
        counts = ", ".join(f"{n} {r}" for r, n in sorted(dropped.items()))
        raise DataError(f"every row was dropped ({counts})", where=where)
    return ds if len(kept) == len(ds) else ds.select(kept)


def prepare_sft_dataset(ds: datasets.Dataset, tokenizer, max_length: int | None, where: str,
                        text_field: str = "text") -> tuple[datasets.Dataset, Counter]:
    """Check the columns and drop rows without an assistant reply or whose prompt fills `max_length`."""
    kind = sft_format(ds, where, text_field)
    dropped: Counter = Counter()
    reasons: list[str | None] = []
    for row in ds:
        if kind == "messages":
            messages = row["messages"]
            replies = [m for m in messages or [] if m.get("role") == "assistant"]
            if not replies or not any(_text_of(m.get("content")).strip() for m in replies):
                reasons.append("empty completion")
                continue
            prompt = messages[: messages.index(replies[0])]
        elif kind == "prompt_completion":
            if not _text_of(row["completion"]).strip():
                reasons.append("empty completion")
                continue
            prompt = row["prompt"]
        else:
            reasons.append(None if isinstance(row[text_field], str) and row[text_field].strip() else "empty text")
            continue
        reasons.append("prompt longer than max_length" if _too_long(tokenizer, prompt, max_length) else None)
    return _keep(ds, reasons, dropped, where), dropped


def _prompt_length(tokenizer, prompt: Any) -> int:
    if isinstance(prompt, list):
        return len(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=False))
    return len(tokenizer(prompt, add_special_tokens=False)["input_ids"])


def _too_long(tokenizer, prompt: Any, max_length: int | None) -> bool:
    # A prompt that leaves no room for one completion token teaches nothing once truncated.
    return max_length is not None and bool(prompt) and _prompt_length(tokenizer, prompt) >= max_length


def prepare_preference_dataset(ds: datasets.Dataset, tokenizer, max_length: int | None,
                               where: str) -> tuple[datasets.Dataset, Counter]:
    """Check `chosen`/`rejected` (and `prompt` when present); drop identical pairs, empty
    completions and prompts that fill `max_length`, counting each."""
    _require(ds, ["chosen", "rejected"], where)
    has_prompt = "prompt" in ds.column_names
    dropped: Counter = Counter()
    reasons: list[str | None] = []
    for row in ds.select_columns([c for c in ("prompt", "chosen", "rejected") if c in ds.column_names]):
        chosen, rejected = _text_of(row["chosen"]), _text_of(row["rejected"])
        if not chosen.strip() or not rejected.strip():
            reasons.append("empty completion")
        elif row["chosen"] == row["rejected"]:
            reasons.append("identical chosen and rejected")
        elif has_prompt and _too_long(tokenizer, row["prompt"], max_length):
            reasons.append("prompt longer than max_length")
        else:
            reasons.append(None)
    return _keep(ds, reasons, dropped, where), dropped


def prompt_text(prompt: Any) -> str:
    """The user's text of a prompt (a string, or the last user message of a conversation)."""
    if isinstance(prompt, str):
        return prompt
    users = [m for m in prompt if m.get("role") == "user"]
    return _text_of([users[-1]]) if users else _text_of(prompt)
