"""Deduplication: exact (same text after lower-casing and collapsing whitespace) and near
(MinHash over word n-gram shingles, locality-sensitive hashing in bands × rows). One document
is kept per cluster: the one with the lowest id (its place in the raw pool), whichever process
or task saw it, so that the data stage and datatrove's executors keep the same documents.

The MinHash maths are datatrove's (its `MinhashConfig`, text normalisation `simplify_text`,
and the same permutation parameters from the seed). Shingles are made from the normalised text
split on spaces instead of datatrove's spaCy tokenizer (the text is already stripped of
punctuation, so the words are the same; the tokenizer was most of the time), and a shingle's
64-bit hash is a polynomial in its words' xxhash64 values rather than the xxhash64 of the joined
shingle (one hash per word instead of one per shingle, the polynomial in numpy). Clusters are
connected components of the band-collision graph (scipy), so time and memory grow with documents
and collisions, not with pairs of documents.

Locally, `find_duplicates` runs on signatures computed with `datasets.map`; under datatrove's
executors `DedupSignatures` (each task) → `DedupClusters` (one task) → `DropDuplicates` (each task).
"""

from __future__ import annotations

import dataclasses
import json
import unicodedata

import numpy as np
import regex
import xxhash
from datatrove.data import Document, DocumentsPipeline
from datatrove.io import DataFolderLike, get_datafolder
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup.minhash import MinhashConfig
from datatrove.utils.text import DEF_TEXT_NORM_CONFIG, TextNormConfig, simplify_text

from hfllm.data.blocks import Block

_MERSENNE_PRIME = np.uint64((1 << 61) - 1)
EXACT = "exact_duplicate"
NEAR = "near_duplicate"
_KEY_MASK = (1 << 63) - 1  # keys fit an int64 column


_NGRAM_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
_COMBINING_MARKS = regex.compile(r"\p{Mn}+")


def normalized_words(text: str, config: TextNormConfig = DEF_TEXT_NORM_CONFIG) -> list[str]:
    """`simplify_text(text, config).split()`: datatrove's normalisation (lower case, no
    punctuation, numbers folded, diacritics removed), its diacritics pass (a Python loop over every
    character, a third of the hashing time) done by one regular expression, and skipped on ASCII."""
    text = simplify_text(text, dataclasses.replace(config, norm_unicode_diacritics=False))
    if config.norm_unicode_diacritics and not text.isascii():
        text = _COMBINING_MARKS.sub("", unicodedata.normalize("NFD", text))
    return text.split()


def word_ngram_hashes(words: list[str], n: int) -> np.ndarray:
    """A 64-bit hash of each n-gram of `words`: a polynomial in its words' xxhash64 values."""
    if len(words) < n:
        return np.zeros(0, dtype=np.uint64)
    hashes = np.fromiter(map(xxhash.xxh64_intdigest, map(str.encode, words)), dtype=np.uint64, count=len(words))
    grams = np.zeros(len(words) - n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):
            grams = grams * _NGRAM_MULTIPLIER + hashes[k:len(words) - n + 1 + k]
    return grams


def threshold(bands: int, rows: int) -> float:
    """The Jaccard similarity at which a pair is caught with probability ≈ 1/2: (1/b)^(1/r)."""
    return (1 / bands) ** (1 / rows)


class MinHasher:
    """Exact key and MinHash band keys of a text. `bands=14, rows=11`: threshold ≈ 0.79."""

    def __init__(self, n_grams: int = 5, bands: int = 14, rows: int = 11, seed: int = 1):
        self.config = MinhashConfig(n_grams=n_grams, num_buckets=bands, hashes_per_bucket=rows, seed=seed)
        gen = np.random.RandomState(seed)  # as datatrove's MinhashDedupSignature.parameters
        num_hashes = bands * rows
        self.a = gen.randint(1, _MERSENNE_PRIME, dtype=np.uint64, size=(1, num_hashes))
        self.b = gen.randint(0, _MERSENNE_PRIME, dtype=np.uint64, size=(1, num_hashes))

    @staticmethod
    def exact_key(text: str) -> int:
        return xxhash.xxh64_intdigest(" ".join(text.lower().split()).encode()) & _KEY_MASK

    def shingles(self, text: str) -> np.ndarray:
        return word_ngram_hashes(normalized_words(text, self.config.norm_config), self.config.n_grams).reshape(-1, 1)

    def band_keys(self, text: str) -> np.ndarray | None:
        """One 64-bit key per band, or None for a text shorter than one shingle."""
        shingles = self.shingles(text)
        if shingles.size == 0:
            return None
        signature = np.min((shingles * self.a + self.b) % _MERSENNE_PRIME, axis=0)
        rows = signature.reshape(self.config.num_buckets, self.config.hashes_per_bucket)
        return np.array([xxhash.xxh64_intdigest(row.tobytes()) & _KEY_MASK for row in rows], dtype=np.int64)


def signature_batch(batch: dict[str, list], *, hasher: MinHasher) -> dict[str, list]:
    """`datasets.map` function: exact key and band keys (empty for short texts) of each row."""
    bands = [hasher.band_keys(t) for t in batch["text"]]
    return {"_exact": [hasher.exact_key(t) for t in batch["text"]],
            "_bands": [[] if b is None else b.tolist() for b in bands]}


def find_duplicates(ids: np.ndarray, exact: np.ndarray, bands: list[np.ndarray | None]) -> dict[int, str]:
    """{id: reason} for every document that is not the lowest id of its exact or near cluster."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    ids = np.asarray(ids, dtype=np.int64)
    order = np.argsort(ids, kind="stable")  # positions in id order: the lowest position is the lowest id
    ids, exact = ids[order], np.asarray(exact, dtype=np.int64)[order]
    bands = [bands[i] for i in order]
    n = len(ids)
    removed: dict[int, str] = {}
    by_key = np.lexsort((np.arange(n), exact))
    repeat = np.zeros(n, dtype=bool)
    repeat[by_key[1:]] = exact[by_key[1:]] == exact[by_key[:-1]]
    for i in np.flatnonzero(repeat):
        removed[int(ids[i])] = EXACT
    with_bands = np.array([i for i in range(n) if not repeat[i] and bands[i] is not None and len(bands[i])],
                          dtype=np.int64)
    if len(with_bands) < 2:
        return removed
    keys = np.stack([np.asarray(bands[i], dtype=np.int64) for i in with_bands])
    left, right = [], []
    for j in range(keys.shape[1]):
        by_band = np.lexsort((with_bands, keys[:, j]))
        same = keys[by_band[1:], j] == keys[by_band[:-1], j]
        left.append(with_bands[by_band[:-1][same]])
        right.append(with_bands[by_band[1:][same]])
    left, right = np.concatenate(left), np.concatenate(right)
    if len(left) == 0:
        return removed
    graph = coo_matrix((np.ones(len(left), dtype=np.int8), (left, right)), shape=(n, n)).tocsr()
    _, labels = connected_components(graph, directed=False)
    lowest = np.full(labels.max() + 1, n, dtype=np.int64)
    np.minimum.at(lowest, labels[with_bands], with_bands)
    for i in with_bands[lowest[labels[with_bands]] != with_bands]:
        removed[int(ids[i])] = NEAR
    return removed


class DropDuplicates(Block):
    """Removes the documents `find_duplicates` named, with its reason (exact or near)."""

    name = "dedup"

    def __init__(self, duplicates: dict[int, str] | None = None, duplicates_file: DataFolderLike | None = None,
                 exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.duplicates = duplicates
        self.duplicates_file = duplicates_file

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if self.duplicates is None:  # under datatrove: read what DedupClusters wrote, once per task
            folder = get_datafolder(self.duplicates_file)
            with folder.open("duplicates.json", "rt") as f:
                self.duplicates = {int(k): v for k, v in json.load(f).items()}
        reason = self.duplicates.get(int(doc.id))
        return (False, reason) if reason else True


class DedupSignatures(PipelineStep):
    """datatrove step (every task): passes documents on and writes their ids and keys."""

    type = "🫂 - DEDUP"
    name = "hfllm dedup signatures"

    def __init__(self, output_folder: DataFolderLike, hasher: MinHasher):
        super().__init__()
        self.output_folder = get_datafolder(output_folder)
        self.hasher = hasher

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        rows = []
        for doc in data:
            bands = self.hasher.band_keys(doc.text)
            rows.append({"id": int(doc.id), "exact": self.hasher.exact_key(doc.text),
                         "bands": [] if bands is None else bands.tolist()})
            self.stat_update("signatures")
            yield doc
        with self.output_folder.open(f"{rank:05d}.signatures.json", "wt") as f:
            json.dump(rows, f)


class DedupClusters(PipelineStep):
    """datatrove step (one task): reads every task's signatures, writes duplicates.json."""

    type = "🫂 - DEDUP"
    name = "hfllm dedup clusters"

    def __init__(self, signatures_folder: DataFolderLike, output_folder: DataFolderLike):
        super().__init__()
        self.signatures_folder = get_datafolder(signatures_folder)
        self.output_folder = get_datafolder(output_folder)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        rows = []
        for name in sorted(self.signatures_folder.list_files(glob_pattern="*.signatures.json")):
            with self.signatures_folder.open(name, "rt") as f:
                rows += json.load(f)
        duplicates = find_duplicates(np.array([r["id"] for r in rows], dtype=np.int64),
                                     np.array([r["exact"] for r in rows], dtype=np.int64),
                                     [np.array(r["bands"], dtype=np.int64) for r in rows])
        self.stat_update("duplicates", value=len(duplicates))
        with self.output_folder.open("duplicates.json", "wt") as f:
            json.dump({str(k): v for k, v in sorted(duplicates.items())}, f)
        yield from data or ()
