"""Decontamination: a training document that shares a 13-gram of words with any evaluation text
the project knows (the held-out split, the data behind the evaluation tasks, any configured set)
is removed, counted by the set it overlaps.

Words are datatrove's normalised text (`simplify_text`: lower case, no punctuation, numbers
folded) split on spaces, so formatting differences do not hide an overlap; an n-gram's hash is the
dedup block's (`word_ngram_hashes`). The index is the sorted 64-bit hashes of every evaluation
13-gram with the set each came from; a document is checked with one `np.searchsorted`. As in
GPT-3's decontamination, an evaluation n-gram found in more than `max_train_docs` training
documents is boilerplate (a licence's sentences, a file header, a README template), not a leak,
and is left out of the index (`NGramIndex.without_frequent`). The data stage counts those
documents before dedup: after it, each licence is left once and its sentences no longer look
frequent (counted after dedup, one held-out licence or source file removed dozens of training
files sharing its header).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from datatrove.data import Document

from hfllm.data.blocks import Block
from hfllm.data.dedup import normalized_words, word_ngram_hashes

N = 13


def ngram_hashes(text: str, n: int = N) -> np.ndarray:
    """The text's word n-gram hashes, as int64 (63 bits)."""
    return (word_ngram_hashes(normalized_words(text), n) & np.uint64((1 << 63) - 1)).astype(np.int64)


class NGramIndex:
    """Sorted n-gram hashes of named evaluation sets."""

    def __init__(self, hashes: np.ndarray, set_ids: np.ndarray, names: list[str], n: int = N):
        order = np.argsort(hashes, kind="stable")
        self.hashes, self.set_ids, self.names, self.n = hashes[order], set_ids[order], names, n

    @classmethod
    def build(cls, sets: dict[str, list[str]], n: int = N) -> NGramIndex:
        names = list(sets)
        parts = [(ngram_hashes(t, n), i) for i, name in enumerate(names) for t in sets[name]]
        hashes = np.concatenate([h for h, _ in parts] or [np.zeros(0, np.int64)])
        set_ids = np.concatenate([np.full(len(h), i, np.int32) for h, i in parts] or [np.zeros(0, np.int32)])
        return cls(hashes, set_ids, names, n)

    def hits(self, text: str) -> np.ndarray:
        """The index positions of `text`'s n-grams found in the index (sorted, unique)."""
        if not len(self.hashes):
            return np.zeros(0, np.int64)
        grams = ngram_hashes(text, self.n)
        where = np.clip(np.searchsorted(self.hashes, grams), 0, len(self.hashes) - 1)
        return np.unique(where[self.hashes[where] == grams])

    def without_frequent(self, train_texts, max_train_docs: int) -> NGramIndex:
        """The index less the n-grams that occur in more than `max_train_docs` training texts."""
        doc_frequency = np.zeros(len(self.hashes), np.int64)
        for text in train_texts:
            doc_frequency[self.hits(text)] += 1
        frequent = np.unique(self.hashes[doc_frequency > max_train_docs])
        keep = ~np.isin(self.hashes, frequent)
        return NGramIndex(self.hashes[keep], self.set_ids[keep], self.names, self.n)

    def match(self, text: str) -> str | None:
        """The name of the first set (in index order) sharing an n-gram with `text`, or None."""
        if not len(self.hashes):
            return None
        grams = ngram_hashes(text, self.n)
        where = np.clip(np.searchsorted(self.hashes, grams), 0, len(self.hashes) - 1)
        hit = self.hashes[where] == grams
        return self.names[int(self.set_ids[where[hit]].min())] if hit.any() else None

    def save(self, path: str | Path) -> None:
        np.savez(path, hashes=self.hashes, set_ids=self.set_ids, names=json.dumps(self.names), n=self.n)

    @classmethod
    def load(cls, path: str | Path) -> NGramIndex:
        data = np.load(path)
        return cls(data["hashes"], data["set_ids"], json.loads(str(data["names"])), int(data["n"]))


class Decontaminate(Block):
    name = "decontaminate"

    def __init__(self, index: NGramIndex | None = None, index_file: str | None = None, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.index = index
        self.index_file = index_file

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if self.index is None:
            self.index = NGramIndex.load(self.index_file)
        name = self.index.match(doc.text)
        return (False, f"{self.index.n}gram_in_{name}") if name else True
