"""Bits per byte and perplexity on held-out text, pinned down so that they match lm-eval.

    bits_per_byte = (Σ over documents of the token NLL in nats) / ln 2 / (Σ UTF-8 bytes)
    perplexity    = exp(mean token NLL in nats)       — token-level, so tokenizer-dependent

Each document is scored alone, exactly like lm-eval's `loglikelihood_rolling`: tokens from
`tokenizer(text)`, the first predicted from the prefix token (bos, else eos), longer documents
in disjoint rolling windows of the model's context length (`lm_eval.utils` makes the windows).
Bits per byte does not depend on the tokenizer, which is why runs with different vocabularies
(and the bigram baseline below) compare on it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from lm_eval.models.utils import resolve_max_length
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

LN2 = math.log(2.0)


@dataclass(frozen=True)
class TextScore:
    nll_nats: float  # total negative log-likelihood
    tokens: int
    bytes: int

    @property
    def bits_per_byte(self) -> float:
        return self.nll_nats / LN2 / self.bytes

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll_nats / self.tokens)

    @property
    def bits_per_token(self) -> float:
        return self.nll_nats / LN2 / self.tokens


def prefix_token_id(tokenizer) -> int:
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


def rolling_windows(token_ids: list[int], prefix: int, max_length: int) -> list[tuple[list[int], list[int]]]:
    return [make_disjoint_window(w) for w in get_rolling_token_windows(token_ids, prefix, max_length, 1)]


def model_max_length(model, tokenizer=None) -> int:
    """The context length lm-eval's HFLM uses for this model (its own rule, called, not copied)."""
    return resolve_max_length(model.config, tokenizer)


@torch.no_grad()
def score_texts(
    model, tokenizer, texts: Sequence[str], *, max_length: int | None = None, batch_size: int = 8
) -> TextScore:
    """Total NLL of `texts` under `model`, summed in float64 over rolling windows."""
    max_length = max_length or model_max_length(model, tokenizer)
    prefix = prefix_token_id(tokenizer)
    windows: list[tuple[list[int], list[int]]] = []
    n_tokens = n_bytes = 0
    for text in texts:
        ids = tokenizer(text, verbose=False)["input_ids"]
        n_tokens += len(ids)
        n_bytes += len(text.encode("utf-8"))
        windows += rolling_windows(ids, prefix, max_length)
    device = next(model.parameters()).device
    model.eval()
    total = 0.0
    # Longest first: batches of similar lengths waste little on padding.
    windows.sort(key=lambda w: -(len(w[0]) + len(w[1])))
    for start in range(0, len(windows), batch_size):
        chunk = windows[start : start + batch_size]
        inputs = [(ctx + cont)[:-1] for ctx, cont in chunk]
        width = max(len(x) for x in inputs)
        ids = torch.zeros((len(chunk), width), dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, x in enumerate(inputs):
            ids[i, : len(x)] = torch.tensor(x)
            mask[i, : len(x)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        logprobs = torch.log_softmax(logits, dim=-1)
        for i, (_, cont) in enumerate(chunk):
            end = len(inputs[i])
            positions = torch.arange(end - len(cont), end, device=device)
            targets = torch.tensor(cont, device=device)
            total -= logprobs[i, positions, targets].double().sum().item()
    return TextScore(nll_nats=total, tokens=n_tokens, bytes=n_bytes)


class BigramModel:
    """Add-k smoothed token bigram model: P(b | a) = (c(a, b) + k) / (c(a) + k·V).

    Fitted on the same training tokens as the model (documents as `bos … eos`), scored on the
    same held-out tokens with the same prefix rule, so its bits per byte is a fair floor to beat.
    """

    def __init__(self, vocab_size: int, k: float = 0.1):
        self.vocab_size = vocab_size
        self.k = k
        self.pairs: Counter[tuple[int, int]] = Counter()
        self.firsts: Counter[int] = Counter()

    def fit(self, documents: Iterable[list[int]], bos: int | None, eos: int) -> BigramModel:
        for ids in documents:
            seq = ([bos] if bos is not None else []) + list(ids) + [eos]
            self.pairs.update(zip(seq[:-1], seq[1:]))
            self.firsts.update(seq[:-1])
        return self

    def nll(self, prefix: int, ids: list[int], k: float | None = None) -> float:
        k = self.k if k is None else k
        context = [prefix] + ids[:-1]
        total = 0.0
        for a, b in zip(context, ids):
            total -= math.log((self.pairs[(a, b)] + k) / (self.firsts[a] + k * self.vocab_size))
        return total

    def score(self, tokenizer, texts: Sequence[str], k: float | None = None) -> TextScore:
        prefix = prefix_token_id(tokenizer)
        nll = n_tokens = n_bytes = 0
        for text in texts:
            ids = tokenizer(text, verbose=False)["input_ids"]
            nll += self.nll(prefix, ids, k)
            n_tokens += len(ids)
            n_bytes += len(text.encode("utf-8"))
        return TextScore(nll_nats=nll, tokens=n_tokens, bytes=n_bytes)


def best_bigram(tokenizer, train_texts: Sequence[str], test_texts: Sequence[str],
                ks: Sequence[float] = (1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001)) -> tuple[float, TextScore]:
    """Fit the bigram on `train_texts`; return the k (of `ks`) with the lowest held-out bpb.

    Choosing k on the held-out text flatters the baseline, which makes beating it harder.
    """
    docs = tokenizer(list(train_texts), add_special_tokens=False, verbose=False)["input_ids"]
    bigram = BigramModel(len(tokenizer)).fit(docs, tokenizer.bos_token_id, tokenizer.eos_token_id)
    scores = {k: bigram.score(tokenizer, test_texts, k) for k in ks}
    best = min(scores, key=lambda k: scores[k].bits_per_byte)
    return best, scores[best]
