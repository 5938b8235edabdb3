"""Model-based quality filter: a fast classifier trained in the data stage to tell a named
high-quality reference set from the raw pool (the seed's "train classifiers to select
high-quality data"), its score kept in a `quality` column.

The model is scikit-learn's: hashed word 1–2-grams (`HashingVectorizer`, no vocabulary to store)
and a logistic regression fitted by SGD (`SGDClassifier(loss="log_loss")`: a fraction of a second
where lbfgs took seconds on the same features). It is saved beside the dataset as `quality_classifier.json` (settings,
reference set, weights), enough to score any text again without scikit-learn's pickles.

Offline reference set (`python_reference`): the Python language reference's help() topics and the
standard library's module docstrings (hfllm.corpus), minus every document the held-out rule puts
in the test split — the held-out text shares no document with it, else a classifier would pick
the held-out text's look-alikes by construction. A real run names any dataset instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datatrove.data import Document

from hfllm.data.blocks import Block

FILE = "quality_classifier.json"
MAX_CHARS = 4000  # what the classifier reads of a document: its beginning


@dataclass
class QualityClassifier:
    reference: str
    n_features: int
    weights: np.ndarray
    bias: float

    def _vectorizer(self):
        from sklearn.feature_extraction.text import HashingVectorizer

        return HashingVectorizer(n_features=self.n_features, ngram_range=(1, 2), alternate_sign=False,
                                 norm="l2", lowercase=True)

    def score(self, texts: list[str]) -> np.ndarray:
        """P(reference-like) of each text, in [0, 1]."""
        features = self._vectorizer().transform([t[:MAX_CHARS] for t in texts])
        return 1 / (1 + np.exp(-(features @ self.weights + self.bias)))

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / FILE
        nonzero = np.flatnonzero(self.weights)
        path.write_text(json.dumps({"reference": self.reference, "n_features": self.n_features, "bias": self.bias,
                                    "features": nonzero.tolist(), "weights": self.weights[nonzero].tolist()}))
        return path

    @classmethod
    def load(cls, path: str | Path) -> QualityClassifier:
        data = json.loads(Path(path).read_text())
        weights = np.zeros(data["n_features"])
        weights[data["features"]] = data["weights"]
        return cls(data["reference"], data["n_features"], weights, data["bias"])


def train_quality_classifier(reference: list[str], pool: list[str], *, name: str, n_features: int = 2 ** 18,
                             max_docs: int = 4000, seed: int = 0) -> QualityClassifier:
    """Logistic regression, reference texts (label 1) against pool texts (label 0), each side at
    most `max_docs` documents drawn with `seed`, classes weighted to balance."""
    from sklearn.linear_model import SGDClassifier

    rng = np.random.default_rng(seed)
    reference = [reference[i] for i in sorted(rng.permutation(len(reference))[:max_docs])]
    pool = [pool[i] for i in sorted(rng.permutation(len(pool))[:max_docs])]
    model = QualityClassifier(name, n_features, np.zeros(n_features), 0.0)
    features = model._vectorizer().transform([t[:MAX_CHARS] for t in reference + pool])
    labels = np.r_[np.ones(len(reference)), np.zeros(len(pool))]
    fit = SGDClassifier(loss="log_loss", alpha=1e-5, class_weight="balanced", max_iter=50, tol=1e-4,
                        random_state=seed).fit(features, labels)
    model.weights = fit.coef_[0].astype(np.float64)
    model.bias = float(fit.intercept_[0])
    return model


class QualityFilter(Block):
    """Scores each document (`quality`); in `domains`, removes those scoring under `min_score`.
    Other domains (code, licences, lists) are scored but kept: a prose reference set says
    nothing about how good a source file is."""

    name = "quality"

    def __init__(self, classifier: QualityClassifier | None = None, min_score: float = 0.0,
                 domains: list[str] = ("prose", "reference"), classifier_file: str | None = None,
                 exclusion_writer=None, batch_size: int = 256):
        super().__init__(exclusion_writer, batch_size=batch_size)
        self.classifier = classifier
        self.classifier_file = classifier_file
        self.min_score = min_score
        self.domains = tuple(domains)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return self.filter_batch([doc])[0]

    def filter_batch(self, batch: list[Document]) -> list[bool | tuple[bool, str]]:
        if self.classifier is None:
            self.classifier = QualityClassifier.load(self.classifier_file)
        scores = self.classifier.score([d.text for d in batch])
        results: list[bool | tuple[bool, str]] = []
        for doc, score in zip(batch, scores):
            doc.metadata["quality"] = round(float(score), 6)
            judged = doc.metadata.get("domain") in self.domains
            results.append((False, "low_quality") if judged and score < self.min_score else True)
        return results
