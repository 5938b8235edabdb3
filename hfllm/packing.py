"""Packing documents into training blocks: `bos doc eos bos doc eos …` cut every `block_size`.

Two forms of the same packing:
- `pack_documents`: a map-style `datasets.Dataset` (batched `map`, `num_proc`), for data that fits
  on disk; the Trainer's seeded sampler shuffles it and resumes by skipping batches.
- `PackedStream`: a streamed dataset (e.g. FineWeb-Edu from the Hub), packed on the fly, whose
  position can be saved and restored. Each block carries its index; the trainer records the
  position *after the last block it trained on* (the data loader reads ahead, so the stream's
  own position would be too far), and a resumed run restarts the stream there — the source's
  `state_dict()` plus the tokens left over from the document being cut — instead of re-reading
  and re-tokenizing everything before it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Iterator

import torch

from hfllm.errors import ConfigError


def _document_ids(tokenizer) -> tuple[list[int], int]:
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    if eos is None:
        raise ConfigError("tokenizer has no eos token, needed between packed documents", field="tokenizer_name")
    return ([bos] if bos is not None else []), eos


def pack_documents(ds, tokenizer, text_field: str, block_size: int, num_proc: int | None = None):
    """Tokenize and pack a map-style dataset into `block_size` blocks (no padding).

    Each map batch (1000 documents) is packed on its own; its tail that does not fill a block is
    dropped, which costs under one block per thousand documents.
    """
    prefix, eos = _document_ids(tokenizer)

    def pack(batch: dict[str, list]) -> dict[str, list]:
        stream: list[int] = []
        for ids in tokenizer(batch[text_field], add_special_tokens=False, verbose=False)["input_ids"]:
            stream += prefix + ids + [eos]
        n = len(stream) // block_size * block_size
        return {"input_ids": [stream[i : i + block_size] for i in range(0, n, block_size)]}

    return ds.map(pack, batched=True, batch_size=1000, remove_columns=ds.column_names,
                  num_proc=num_proc, keep_in_memory=True, desc="packing")


class PackedStream(torch.utils.data.IterableDataset):
    """Pack a streamed `datasets.IterableDataset` on the fly, resumable from a saved position.

    A position is `{"source": <source.state_dict()>, "carry": [token ids], "blocks": n}`: the
    source positioned after the last document read, the tokens of it not yet in a block, and
    how many blocks came before. Needs `dataloader_num_workers=0` (one reader, one position).
    """

    def __init__(self, source, tokenizer, text_field: str, block_size: int,
                 position: dict[str, Any] | None = None, read_batch: int = 64):
        self.source = source
        self.tokenizer = tokenizer
        self.text_field = text_field
        self.block_size = block_size
        self.start = position
        self.read_batch = read_batch
        self.positions: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._beginning = source.state_dict()  # a loaded state sticks to the source: undo it per pass
        self.prefix, self.eos = _document_ids(tokenizer)

    def position_after(self, block_index: int) -> dict[str, Any]:
        """The position to resume from once block `block_index` has been trained on."""
        pos = self.positions[block_index]
        while self.positions and next(iter(self.positions)) < block_index:
            self.positions.popitem(last=False)  # older positions are never asked for again
        return pos

    def _rows(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(text, the source's state right after this row)."""
        for row in self.source:
            yield row[self.text_field], self.source.state_dict()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        start, self.start = self.start, None  # a second pass (epoch) starts from the beginning
        self.source.load_state_dict(start["source"] if start is not None else self._beginning)
        carry: list[int] = list(start["carry"]) if start else []
        index = start["blocks"] if start else 0
        rows = self._rows()
        while True:
            pending = [r for _, r in zip(range(self.read_batch), rows)]
            if not pending:
                return
            ids_list = self.tokenizer([t for t, _ in pending], add_special_tokens=False, verbose=False)["input_ids"]
            for ids, (_, state) in zip(ids_list, pending):
                carry += self.prefix + ids + [self.eos]
                while len(carry) >= self.block_size:
                    block, carry = carry[: self.block_size], carry[self.block_size :]
                    index += 1
                    self.positions[index] = {"source": state, "carry": list(carry), "blocks": index}
                    yield {"input_ids": block, "block_index": index}


def collate_blocks(features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack full blocks; labels are the inputs (the model shifts them)."""
    ids = torch.tensor([f["input_ids"] for f in features], dtype=torch.long)
    batch = {"input_ids": ids, "labels": ids}
    if "block_index" in features[0]:
        batch["block_index"] = torch.tensor([f["block_index"] for f in features], dtype=torch.long)
    return batch
