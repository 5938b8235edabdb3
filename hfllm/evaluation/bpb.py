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
def nll_per_text(
    model, tokenizer, texts: Sequence[str], *, max_length: int | None = None, batch_size: int = 8
) -> list[TextScore]:
    """Each text's NLL under `model`, summed in float64 over its rolling windows."""
    max_length = max_length or model_max_length(model, tokenizer)
    prefix = prefix_token_id(tokenizer)
    windows: list[tuple[int, list[int], list[int]]] = []  # (text index, context, continuation)
    n_tokens, n_bytes = [], []
    for i, text in enumerate(texts):
        ids = tokenizer(text, verbose=False)["input_ids"]
        n_tokens.append(len(ids))
        n_bytes.append(len(text.encode("utf-8")))
        windows += [(i, ctx, cont) for ctx, cont in rolling_windows(ids, prefix, max_length)]
    device = next(model.parameters()).device
    model.eval()
    totals = [0.0] * len(texts)
    # Longest first: batches of similar lengths waste little on padding.
    windows.sort(key=lambda w: -(len(w[1]) + len(w[2])))
    for start in range(0, len(windows), batch_size):
        chunk = windows[start : start + batch_size]
        inputs = [(ctx + cont)[:-1] for _, ctx, cont in chunk]
        width = max(len(x) for x in inputs)
        ids = torch.zeros((len(chunk), width), dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, x in enumerate(inputs):
            ids[i, : len(x)] = torch.tensor(x)
            mask[i, : len(x)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        logprobs = torch.log_softmax(logits, dim=-1)
        for i, (text_index, _, cont) in enumerate(chunk):
            end = len(inputs[i])
            positions = torch.arange(end - len(cont), end, device=device)
            targets = torch.tensor(cont, device=device)
            totals[text_index] -= logprobs[i, positions, targets].double().sum().item()
    return [TextScore(nll_nats=t, tokens=k, bytes=b) for t, k, b in zip(totals, n_tokens, n_bytes)]


def score_texts(
    model, tokenizer, texts: Sequence[str], *, max_length: int | None = None, batch_size: int = 8
) -> TextScore:
    """Total NLL of `texts` under `model`, summed in float64 over rolling windows."""
    scores = nll_per_text(model, tokenizer, texts, max_length=max_length, batch_size=batch_size)
    return TextScore(nll_nats=sum(s.nll_nats for s in scores), tokens=sum(s.tokens for s in scores),
                     bytes=sum(s.bytes for s in scores))


PERPLEXITY_CAVEAT = (
    "Perplexity is per token, so it depends on the tokenizer and on the text scored: it compares models "
    "only with the same tokenizer on the same text, which is why bits per byte is the measure across stages. "
    "It is shown only for pretraining-style models: fine-tuned and preference-optimised models are no longer "
    "trained to model raw text, and a higher perplexity there does not mean a worse model."
)


def language_model_scores(model, tokenizer, texts: Sequence[str], *, pretraining_style: bool,
                          batch_size: int = 8) -> dict[str, float | int]:
    """Bits per byte of any language model on held-out `texts`; perplexity only if `pretraining_style`.

    Every language-model stage is scored on the same texts, so the numbers compare across stages
    (see `PERPLEXITY_CAVEAT` for why perplexity is left out of the others).
    """
    score = score_texts(model, tokenizer, texts, batch_size=batch_size)
    out: dict[str, float | int] = {"bits_per_byte": score.bits_per_byte, "heldout_bytes": score.bytes,
                                   "heldout_tokens": score.tokens}
    if pretraining_style:
        out["perplexity"] = score.perplexity
    return out


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
