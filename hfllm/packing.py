"""Packing documents into training blocks: `bos doc eos bos doc eos …` cut every `block_size`.

Two forms of the same packing:
- `pack_documents`: a map-style `datasets.Dataset` (batched `map`, `num_proc`), for data that fits
  on disk; the Trainer's seeded sampler shuffles it and resumes by skipping batches.
- `PackedStream`: a streamed dataset (e.g. FineWeb-Edu from the Hub), packed on the fly and
  shuffled within windows of blocks, whose position can be saved and restored. Each block
  carries its index; the trainer records the position *after the last block it trained on*
  (the data loader reads ahead, so the stream's own position would be too far), and a resumed
  run restarts the stream at the start of that block's window — the source's `state_dict()`
  plus the tokens left over from the document being cut — re-cuts the window, and skips the
  blocks already trained on, instead of re-reading everything before it.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import torch

from hfllm.errors import ConfigError, DataError


def _document_ids(tokenizer) -> tuple[list[int], int]:
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    if eos is None:
        raise ConfigError("tokenizer has no eos token, needed between packed documents", field="tokenizer_name")
    return ([bos] if bos is not None else []), eos


def check_tokenizer_yields_tokens(tokenizer, texts: list[str], field: str = "tokenizer_name") -> None:
    """The tokenizer turns these documents into tokens: one that fails on a row, or yields no token for
    any of them (a vocabulary without the text's symbols, no unknown token), is a config error — else
    every block would be only the document markers."""
    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    for row, text in enumerate(texts):
        try:
            ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        except Exception as err:  # noqa: BLE001 — tokenizers' own errors (e.g. WordLevel without an unknown token)
            reason = (str(err).splitlines() or [type(err).__name__])[0]
            raise ConfigError(f"the tokenizer fails on document {row}: {reason}", field=field) from None
        if ids:
            return
    if texts:
        raise ConfigError(f"the tokenizer yields no tokens for the first {len(texts)} documents", field=field)


def pack_documents(ds, tokenizer, text_field: str, block_size: int, num_proc: int | None = None):
    """Tokenize and pack a map-style dataset into `block_size` blocks (no padding).

    Each map batch (1000 documents) is packed on its own; its tail that does not fill a block is
    dropped, which costs under one block per thousand documents.
    """
    prefix, eos = _document_ids(tokenizer)
    check_tokenizer_yields_tokens(tokenizer, ds[:100][text_field] if len(ds) else [])

    def pack(batch: dict[str, list]) -> dict[str, list]:
        stream: list[int] = []
        for ids in tokenizer(batch[text_field], add_special_tokens=False, verbose=False)["input_ids"]:
            stream += prefix + ids + [eos]
        n = len(stream) // block_size * block_size
        return {"input_ids": [stream[i : i + block_size] for i in range(0, n, block_size)]}

    packed = ds.map(pack, batched=True, batch_size=1000, remove_columns=ds.column_names,
                    num_proc=num_proc, keep_in_memory=True, desc="packing")
    if "input_ids" not in packed.column_names:  # no rows to map: the column must still be there
        import datasets

        packed = datasets.Dataset.from_dict({"input_ids": []}, features=datasets.Features(
            {"input_ids": datasets.Sequence(datasets.Value("int32"))}))
    return packed


class PackedStream(torch.utils.data.IterableDataset):
    """Pack a streamed `datasets.IterableDataset` on the fly, resumable from a saved position.

    Blocks are cut in stream order, then shuffled within windows of `shuffle_blocks` consecutive
    blocks (a seeded permutation per window, like a shuffle buffer, but one a resumed run can
    replay exactly — `datasets`' own `shuffle(buffer_size=…)` refills its buffer on resume, so
    the resumed order would differ); `shuffle_blocks=1` keeps stream order. Without it, the
    blocks of one long document would sit side by side in a batch.

    A position is `{"source": <source.state_dict()>, "carry": [token ids], "packed": n,
    "taken": k, "blocks": m}`: the source and the tokens not yet in a block at the start of the
    current window, the `n` blocks cut before that window, the `k` blocks of the window already
    trained on, and `m` blocks trained on in all. Needs `dataloader_num_workers=0` (one reader,
    one position).
    """

    def __init__(self, source, tokenizer, text_field: str, block_size: int,
                 position: dict[str, Any] | None = None, read_batch: int = 64,
                 shuffle_blocks: int = 1, seed: int = 0, where: str | None = None):
        if shuffle_blocks < 1:
            raise ConfigError(f"shuffle window must be at least 1 block, got {shuffle_blocks}",
                              field="stream_shuffle_blocks")
        self.source = source
        self.tokenizer = tokenizer
        self.text_field = text_field
        self.block_size = block_size
        self.start = position
        self.read_batch = read_batch
        self.shuffle_blocks = shuffle_blocks
        self.seed = seed
        self.where = where  # the dataset's name, for errors about its rows
        self.positions: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._beginning = source.state_dict()  # a loaded state sticks to the source: undo it per pass
        self.prefix, self.eos = _document_ids(tokenizer)

    def position_after(self, block_index: int) -> dict[str, Any] | None:
        """The position to resume from once block `block_index` has been trained on — by this process
        and every other one: called by all processes at each micro-step, it resumes after the highest
        block any of them trained on. Accelerate hands an iterable dataset's global batch out in
        process order (the main process reads it and sends each its slice, or each reads it and
        keeps its slice), so the main process's own blocks are the first of each batch, never the
        last. None on a process that never read the stream (only the main one's position is saved)."""
        block_index = _max_over_processes(block_index)
        pos = self.positions.get(block_index)
        if pos is None:
            return None
        while self.positions and next(iter(self.positions)) < block_index:
            self.positions.popitem(last=False)  # older positions are never asked for again
        return pos

    def _rows(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(text, the source's state right after this row); a row without a text is an error."""
        for n, row in enumerate(self.source):
            text = row.get(self.text_field)
            if not isinstance(text, str):
                what = ("no such column" if self.text_field not in row
                        else f"text is {type(text).__name__}, not a string")
                raise DataError(f"row {n} of this pass over the stream: {what}", where=self.where,
                                field=self.text_field)
            yield text, self.source.state_dict()

    def _windows(self, start: dict[str, Any]) -> Iterator[tuple[list[list[int]], dict[str, Any]]]:
        """Windows of up to `shuffle_blocks` blocks in stream order, each with the position after it."""
        self.source.load_state_dict(start["source"])
        carry, packed, window = list(start["carry"]), start["packed"], []
        state = start["source"]
        rows = self._rows()
        pending: list[tuple[str, dict[str, Any]]] = []
        while True:
            # Cut first: a window may end inside a long document, and the carried tokens can hold full
            # blocks (at the end of the stream there is no next row to cut them after).
            while len(carry) >= self.block_size:
                window.append(carry[: self.block_size])
                carry = carry[self.block_size :]
                packed += 1
                if len(window) == self.shuffle_blocks:
                    yield window, {"source": state, "carry": list(carry), "packed": packed}
                    window = []
            if not pending:
                pending = [r for _, r in zip(range(self.read_batch), rows)]
                if not pending:
                    break
                ids_list = iter(self.tokenizer([t for t, _ in pending], add_special_tokens=False,
                                               verbose=False)["input_ids"])
            (_, state), pending = pending[0], pending[1:]
            carry += self.prefix + next(ids_list) + [self.eos]
        if window:
            yield window, {"source": self.source.state_dict(), "carry": list(carry), "packed": packed}

    def _order(self, window_start: int, size: int) -> list[int]:
        """The window's permutation: fixed by the seed and where the window starts in the stream."""
        order = list(range(size))
        if size > 1:
            random.Random(self.seed * 2**40 + window_start).shuffle(order)
        return order

    def __iter__(self) -> Iterator[dict[str, Any]]:
        start, self.start = self.start, None  # a second pass (epoch) starts from the beginning
        self.positions.clear()  # a pass begins once the previous one was trained on to its end
        start = start or {"source": self._beginning, "carry": [], "packed": 0, "taken": 0, "blocks": 0}
        index, skip = start["blocks"], start.get("taken", 0)
        window_start = {k: start[k] for k in ("source", "carry")} | {"packed": start.get("packed", 0)}
        for window, after in self._windows(window_start):
            for taken, k in enumerate(self._order(window_start["packed"], len(window)), start=1):
                if taken <= skip:
                    continue  # trained on before the run was resumed
                index += 1
                done = taken == len(window)
                self.positions[index] = {**(after if done else window_start), "taken": 0 if done else taken,
                                         "blocks": index}
                yield {"input_ids": window[k], "block_index": index}
            skip, window_start = 0, after


def _max_over_processes(value: int) -> int:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    from accelerate import PartialState

    tensor = torch.tensor([value], dtype=torch.long, device=PartialState().device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())


def collate_blocks(features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack full blocks; labels are the inputs (the model shifts them)."""
    ids = torch.tensor([f["input_ids"] for f in features], dtype=torch.long)
    batch = {"input_ids": ids, "labels": ids}
    if "block_index" in features[0]:
        batch["block_index"] = torch.tensor([f["block_index"] for f in features], dtype=torch.long)
    return batch
