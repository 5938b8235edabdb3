"""Mixture: sampling weights per domain (default: code and reference prose up, lists and licence
boilerplate down) and the small top-quality subset for pretraining's final phase.

A domain's weight multiplies its natural share of the training bytes: the sampling probability
of domain d is w_d · bytes_d / Σ_e w_e · bytes_e (a weight of 2 sees that domain's text twice as
often as its size alone would). The data stage writes these to `mixture.json`; pretraining samples
documents by them, and ends on the `final_phase` split (the judged domains' best documents by
quality score, `final_phase_fraction` of their bytes) while its learning rate decays.

Why a share of the bytes and not of the documents: pretraining spends a share of its *tokens* on
the final phase, so the split must hold a comparable share of the text, or the last steps repeat
a few short documents many times over (the top 10 % of documents by score held 2 % of the bytes).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import datasets
import numpy as np

DEFAULT_WEIGHTS = {"code": 2.0, "reference": 1.5, "prose": 1.0, "lists": 0.3, "licence": 0.1}
FILE = "mixture.json"


def domain_mixture(train: datasets.Dataset, weights: dict[str, float]) -> dict[str, Any]:
    docs: Counter[str] = Counter()
    nbytes: Counter[str] = Counter()
    for text, domain in zip(train["text"], train["domain"]):
        docs[domain] += 1
        nbytes[domain] += len(text.encode("utf-8"))
    mass = {d: weights.get(d, 1.0) * nbytes[d] for d in nbytes}
    total = sum(mass.values()) or 1.0
    return {
        "weights": {d: weights.get(d, 1.0) for d in sorted(nbytes)},
        "docs": dict(sorted(docs.items())),
        "bytes": dict(sorted(nbytes.items())),
        "probabilities": {d: round(mass[d] / total, 6) for d in sorted(nbytes)},
    }


def top_quality_subset(train: datasets.Dataset, fraction: float, domains: tuple[str, ...]) -> datasets.Dataset:
    """The training documents in `domains` with the highest quality scores, best first until they
    hold `fraction` of those domains' bytes (at least one document), in their original order."""
    judged = np.flatnonzero(np.isin(np.asarray(train["domain"], dtype=object), list(domains)))
    if not len(judged) or fraction <= 0:
        return train.select([])
    scores = np.nan_to_num(np.asarray(train["quality"], dtype=float)[judged], nan=-1.0)
    ranked = judged[np.argsort(-scores, kind="stable")]
    texts = train["text"]
    sizes = np.array([len(texts[int(i)].encode("utf-8")) for i in ranked])
    take = max(1, int(np.searchsorted(np.cumsum(sizes), fraction * sizes.sum(), side="right")))
    return train.select(np.sort(ranked[:take]))
