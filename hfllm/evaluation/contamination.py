"""Contamination: did an evaluation set leak into training? Two tests from the seed.

- `ngram_overlap`: word n-grams (lower-cased `\\w+` runs; n = 13 as in GPT-3's decontamination)
  shared between each training set and each evaluation set — per pair, the evaluation items that
  share at least one n-gram with the training text, and the share of the evaluation set's n-grams
  found there. It needs the training text, so it is the builder's test.
- `ordering_test` (Oren et al. 2023, "Proving test set contamination in black box language
  models"): needs only the model. Without contamination the examples of a test set are
  exchangeable — the model has no reason to prefer their published order to a shuffled one — so
  a model that gives the canonical order a higher log-likelihood than shuffled orders, shard
  after shard, has seen the set in that order. Per shard of consecutive examples: log p(canonical)
  minus the mean log p over random permutations; a one-sided t-test over shards gives the p-value
  (their sharded likelihood comparison test).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """The words n-grams are made of: runs of `\\w` characters, lower-cased."""
    return _WORD.findall(text.lower())


def count_words(text: str) -> int:
    return len(_WORD.findall(text))


def word_ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    """The set of word n-grams of `text` (a text shorter than n words has none)."""
    w = words(text)
    return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}


@dataclass(frozen=True)
class Overlap:
    """N-gram overlap of one evaluation set with one training set."""

    train: str
    eval: str
    n: int
    eval_items: int
    contaminated: tuple[int, ...]  # indices of the evaluation items sharing an n-gram with the training text
    eval_ngrams: int
    shared_ngrams: int

    @property
    def contaminated_items(self) -> int:
        return len(self.contaminated)

    @property
    def contaminated_fraction(self) -> float:
        return self.contaminated_items / self.eval_items if self.eval_items else 0.0

    @property
    def shared_ngram_fraction(self) -> float:
        return self.shared_ngrams / self.eval_ngrams if self.eval_ngrams else 0.0


def ngram_overlap(train_sets: Mapping[str, Iterable[str]], eval_sets: Mapping[str, Sequence[str]],
                  n: int = 13) -> list[Overlap]:
    """Overlap of every (training set, evaluation set) pair, training text read once per set.

    The evaluation sets' n-grams are indexed first (they are small); each training text is then
    only checked against that index, at the positions whose first word starts some indexed n-gram.
    """
    item_ngrams = {name: [word_ngrams(t, n) for t in items] for name, items in eval_sets.items()}
    index = set().union(*(g for grams in item_ngrams.values() for g in grams)) if item_ngrams else set()
    first_words = {g[0] for g in index}
    out = []
    for train_name, texts in train_sets.items():
        seen: set[tuple[str, ...]] = set()
        for text in texts:
            w = words(text)
            for i in range(len(w) - n + 1):
                if w[i] in first_words:
                    gram = tuple(w[i : i + n])
                    if gram in index:
                        seen.add(gram)
        for eval_name, grams in item_ngrams.items():
            all_grams = set().union(*grams) if grams else set()
            out.append(Overlap(train_name, eval_name, n, len(grams), tuple(i for i, g in enumerate(grams) if g & seen),
                               len(all_grams), len(all_grams & seen)))
    return out


def overlap_table(overlaps: list[Overlap]) -> tuple[list[str], list[list]]:
    """Headers and rows for a report table, one row per (training set, evaluation set) pair."""
    headers = ["training set", "evaluation set", "n", "items", "items sharing an n-gram", "n-grams shared"]
    return headers, [[o.train, o.eval, o.n, o.eval_items, f"{o.contaminated_items} ({o.contaminated_fraction:.1%})",
                      f"{o.shared_ngrams} ({o.shared_ngram_fraction:.1%})"] for o in overlaps]


@dataclass(frozen=True)
class OrderingTest:
    p_value: float
    t_statistic: float
    mean_difference: float  # nats per shard: log p(canonical) − mean log p(shuffled)
    shard_differences: tuple[float, ...]
    permutations: int


def ordering_test(model, tokenizer, examples: Sequence[str], *, shards: int = 10, permutations: int = 20,
                  seed: int = 0, separator: str = "\n\n", batch_size: int = 8) -> OrderingTest:
    """Oren et al.'s sharded test that `examples`, in this order, were in the model's training data.

    The examples are cut into `shards` runs of consecutive examples; each run is scored joined
    by `separator` in its canonical order and in `permutations` seeded shuffles of it (bits per
    byte's scorer: each text alone, from the prefix token). Small p: the canonical order is
    preferred — evidence of contamination.
    """
    from scipy.stats import ttest_1samp

    if shards < 2 or len(examples) < 2 * shards:
        raise ValueError(f"need ≥ 2 shards of ≥ 2 examples, got {len(examples)} examples in {shards} shards")
    rng = random.Random(seed)
    bounds = [round(i * len(examples) / shards) for i in range(shards + 1)]
    texts: list[str] = []
    for lo, hi in zip(bounds, bounds[1:]):
        shard = list(examples[lo:hi])
        texts.append(separator.join(shard))
        for _ in range(permutations):
            texts.append(separator.join(rng.sample(shard, len(shard))))
    from hfllm.evaluation.bpb import nll_per_text  # torch and lm-eval: only where a model is scored

    loglik = [-s.nll_nats for s in nll_per_text(model, tokenizer, texts, batch_size=batch_size)]
    per_shard = permutations + 1
    diffs = tuple(loglik[k * per_shard] - sum(loglik[k * per_shard + 1 : (k + 1) * per_shard]) / permutations
                  for k in range(shards))
    test = ttest_1samp(diffs, 0.0, alternative="greater")
    return OrderingTest(float(test.pvalue), float(test.statistic), sum(diffs) / shards, diffs, permutations)
