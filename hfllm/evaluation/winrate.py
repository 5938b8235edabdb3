"""Win-rates of model A over model B from pairwise judgements: raw and length-controlled, with
bootstrap intervals.

Judges prefer the answer shown first (position bias) and the longer answer (length bias). Each
prompt is judged in both orders and the two verdicts averaged, which cancels a position bias that
does not depend on the answers. Length bias is what AlpacaEval 2's length-controlled win-rate
removes (Dubois et al. 2024, "Length-Controlled AlpacaEval"): a logistic regression (GLM) of the
judge's preference on the standardized length difference, `tanh((len_a - len_b) / sd)`, whose
prediction at equal lengths is the length-controlled win-rate.

The `alpaca-eval` package (0.6.6) pip-installs beside the pinned stack but does not import
(`alpaca_eval.utils` imports `pkg_resources`, which setuptools ≥ 81 no longer ships) and its GLM
downloads AlpacaEval's own per-instruction difficulties from the Hub on every call, so the model
is written here, small:

- the formula is AlpacaEval's `length_controlled_minimal` (length term + intercept); its
  `instruction_difficulty` term is a per-instruction constant estimated from AlpacaEval's 805
  instructions judged against many models, which two models on our own prompts cannot estimate;
- the fit is maximum likelihood on soft labels (a tie or a split verdict is 0.5) by Newton's
  method, with a weak Gaussian prior on the length coefficient only (`LENGTH_PRIOR`); AlpacaEval
  instead L1-penalises both coefficients with a cross-validated strength. The prior matters only
  when length alone separates the judgements (every verdict goes to the longer answer): then no
  finite maximum-likelihood fit exists, the intercept — and so the length-controlled win-rate — is
  not identified by the data, and `WinRates.length_explains_all` says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from hfllm.errors import DataError

# Weak Gaussian prior on the length coefficient (penalty LENGTH_PRIOR * coef**2 / 2 on the summed
# log-likelihood): keeps the fit finite when length separates the verdicts; otherwise it moves the
# win-rate by well under 0.1 point on a few hundred prompts.
LENGTH_PRIOR = 1e-3


def judge_both_orders(
    prefers_first: Callable[[str, str, str], float],
    prompts: Sequence[str],
    answers_a: Sequence[str],
    answers_b: Sequence[str],
) -> np.ndarray:
    """A's preference per prompt in [0, 1], from `prefers_first(prompt, first, second)` (the
    probability, or 0/0.5/1 verdict, that the first answer is better) asked with A first and
    with B first, averaged."""
    if not len(prompts) == len(answers_a) == len(answers_b):
        raise DataError(f"{len(prompts)} prompts, {len(answers_a)} answers of A, {len(answers_b)} of B: need one each")
    a_first = np.array([prefers_first(p, a, b) for p, a, b in zip(prompts, answers_a, answers_b)], dtype=float)
    b_first = np.array([prefers_first(p, b, a) for p, a, b in zip(prompts, answers_a, answers_b)], dtype=float)
    return (a_first + (1.0 - b_first)) / 2.0


@dataclass(frozen=True)
class LengthGLM:
    """P(A preferred) = sigmoid(length_coef * tanh((len_a - len_b) / length_sd) + intercept)."""

    length_coef: float
    intercept: float
    length_sd: float

    @property
    def lc_win_rate(self) -> float:
        """Predicted win-rate (%) at equal lengths: every prompt's length term is then 0."""
        return float(100.0 * _sigmoid(self.intercept))


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=float)))


def length_feature(lengths_a: np.ndarray, lengths_b: np.ndarray) -> tuple[np.ndarray, float]:
    """AlpacaEval 2's length term: tanh of the length difference over its standard deviation."""
    delta = np.asarray(lengths_a, dtype=float) - np.asarray(lengths_b, dtype=float)
    sd = float(delta.std(ddof=1)) if delta.size > 1 else 0.0
    return (np.tanh(delta / sd) if sd > 0 else np.zeros_like(delta)), sd


def _penalised_loglik(w: np.ndarray, x: np.ndarray, y: np.ndarray, prior: float) -> float:
    z = w[0] * x + w[1]
    # y*log σ(z) + (1-y)*log(1-σ(z)) = y*z - log(1+e^z), written stably
    return float(np.sum(y * z - np.logaddexp(0.0, z)) - 0.5 * prior * w[0] ** 2)


def fit_length_glm(preference, lengths_a, lengths_b, *, prior: float = LENGTH_PRIOR,
                   start: tuple[float, float] = (0.0, 0.0)) -> LengthGLM:
    """Maximum a posteriori fit by Newton's method with step halving (two parameters)."""
    y = np.asarray(preference, dtype=float)
    x, sd = length_feature(lengths_a, lengths_b)
    design = np.column_stack([x, np.ones_like(x)])
    ridge = np.diag([prior, 0.0])
    w = np.array(start, dtype=float)
    objective = _penalised_loglik(w, x, y, prior)
    for _ in range(200):
        p = _sigmoid(design @ w)
        gradient = design.T @ (y - p) - ridge @ w
        hessian = (design * (p * (1 - p))[:, None]).T @ design + ridge + 1e-12 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        scale = 1.0
        while scale > 1e-8:
            candidate = _penalised_loglik(w + scale * step, x, y, prior)
            if candidate >= objective - 1e-12:
                break
            scale /= 2
        w = w + scale * step
        improvement, objective = candidate - objective, candidate
        if np.abs(scale * step).max() < 1e-10 or abs(improvement) < 1e-13:
            break
    return LengthGLM(length_coef=float(w[0]), intercept=float(w[1]), length_sd=sd)


@dataclass(frozen=True)
class WinRates:
    """Win-rates in percent with (low, high) percentile-bootstrap intervals over prompts."""

    n: int
    win_rate: float
    win_rate_ci: tuple[float, float]
    lc_win_rate: float
    lc_win_rate_ci: tuple[float, float]
    length_coef: float
    mean_length_a: float
    mean_length_b: float
    length_explains_all: bool  # every non-tied verdict went to the longer answer: LC not identified
    confidence: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_inputs(preference, lengths_a, lengths_b) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = np.asarray(preference, dtype=float)
    la = np.asarray(lengths_a, dtype=float)
    lb = np.asarray(lengths_b, dtype=float)
    if not (y.ndim == la.ndim == lb.ndim == 1 and len(y) == len(la) == len(lb)):
        raise DataError(f"need one preference and two lengths per prompt; got {y.shape}, {la.shape}, {lb.shape}")
    if len(y) < 2:
        raise DataError(f"need at least 2 judged prompts for a win-rate with an interval, got {len(y)}")
    bad = np.flatnonzero(~np.isfinite(y) | (y < 0) | (y > 1))
    if bad.size:
        raise DataError(f"row {bad[0]}: preference {y[bad[0]]} is not in [0, 1] (1 = A preferred, 0.5 = tie)")
    bad = np.flatnonzero(~np.isfinite(la) | ~np.isfinite(lb) | (la < 0) | (lb < 0))
    if bad.size:
        raise DataError(f"row {bad[0]}: answer lengths {la[bad[0]]}, {lb[bad[0]]} must be finite and ≥ 0")
    return y, la, lb


def win_rates(preference, lengths_a, lengths_b, *, n_bootstrap: int = 1000, confidence: float = 0.95,
              seed: int = 0, prior: float = LENGTH_PRIOR) -> WinRates:
    """Raw win-rate (mean preference, ties count half) and length-controlled win-rate of A over B,
    each with a percentile-bootstrap interval (prompts resampled with replacement, the GLM refitted
    on each resample)."""
    y, la, lb = check_inputs(preference, lengths_a, lengths_b)
    fit = fit_length_glm(y, la, lb, prior=prior)
    rng = np.random.default_rng(seed)
    raw_samples, lc_samples = np.empty(n_bootstrap), np.empty(n_bootstrap)
    for i in range(n_bootstrap):
        idx = rng.integers(0, len(y), len(y))
        raw_samples[i] = 100.0 * y[idx].mean()
        lc_samples[i] = fit_length_glm(y[idx], la[idx], lb[idx], prior=prior,
                                       start=(fit.length_coef, fit.intercept)).lc_win_rate
    tail = 100.0 * (1 - confidence) / 2
    delta = la - lb
    decided = y != 0.5
    explains_all = bool(decided.any() and np.all(np.sign(delta[decided]) == np.sign(y[decided] - 0.5)))
    return WinRates(
        n=len(y),
        win_rate=100.0 * float(y.mean()),
        win_rate_ci=tuple(float(v) for v in np.percentile(raw_samples, [tail, 100 - tail])),
        lc_win_rate=float(fit.lc_win_rate),
        lc_win_rate_ci=tuple(float(v) for v in np.percentile(lc_samples, [tail, 100 - tail])),
        length_coef=fit.length_coef,
        mean_length_a=float(la.mean()),
        mean_length_b=float(lb.mean()),
        length_explains_all=explains_all,
        confidence=confidence,
    )
