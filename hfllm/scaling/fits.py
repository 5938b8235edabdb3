"""The two fits of Hoffmann et al. 2022 (Chinchilla), on a sweep's final losses, and bootstrap
intervals on their constants.

Approach 2 (a parabola in log N through each IsoFLOP profile; its vertex is that budget's optimal
N; power laws through the vertices) needs no functional form for the loss but only says where the
optimum lies. Approach 3 (L(N, D) = E + A/N^α + B/D^β, Huber loss on log-loss, L-BFGS from a grid
of starts) predicts the loss of any (N, D), which sizing a run before it is trained needs — and its
constants trade off against one another over a small sweep (E against A and α, B against β), so
every one gets a bootstrap interval. numpy and scipy only.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from hfllm.planner import LAW_CONSTANTS, Law

# ---------------------------------------------------------------------------------------------
# Approach 3: the parametric law, fitted on log-loss with a Huber loss from a grid of starts

HUBER_DELTA = 1e-3  # Hoffmann et al. 2022, §D.2: robust to the outliers of a few unstable runs
# Their grid of initialisations (α, β over 0…2, e over −1…1, a and b over 0…25): 4,500 starts.
INIT_GRID = np.array(list(itertools.product(
    np.arange(0.0, 26.0, 5.0), np.arange(0.0, 26.0, 5.0), np.arange(-1.0, 1.01, 0.5),
    np.arange(0.0, 2.01, 0.5), np.arange(0.0, 2.01, 0.5))))  # columns: a = log A, b = log B, e = log E, α, β
# L-BFGS runs from the grid's best starts only. Measured on the `make scaling` sweep's points with 2 %
# noise, 20 seeds: from the best 8 every fit reached the objective of the best of all 4,500 runs (to
# 1e-9), at 0.1 s a fit instead of 40 s — the 4,500 runs end in a handful of distinct minima.
LBFGS_STARTS = 8
# Bounds on (log A, log B, log E, α, β): wide around the grid, but finite, so that a resample whose
# points cannot separate the terms ends at a bound instead of at A = e^800.
BOUNDS = [(-20.0, 60.0), (-20.0, 60.0), (-20.0, 5.0), (0.0, 4.0), (0.0, 4.0)]


def _logsumexp(terms: np.ndarray) -> np.ndarray:
    """log Σ exp over the first axis (scipy.special.logsumexp measured 360 µs a call on 3 × 12 values,
    this 24 µs: the fit calls it ~3,000 times)."""
    top = terms.max(axis=0)
    return top + np.log(np.exp(terms - top).sum(axis=0))


def _log_law(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log L(N, D) = LSE(a − α log N, b − β log D, e), and each term's share of L (the softmax):
    the parameterisation Hoffmann et al. fit, in which every start is a finite point."""
    a, b, e, alpha, beta = theta
    terms = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])
    log_loss = _logsumexp(terms)
    return log_loss, np.exp(terms - log_loss)


def huber_objective(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_loss: np.ndarray,
                    delta: float = HUBER_DELTA) -> tuple[float, np.ndarray]:
    """Σ Huber_δ(log L̂ − log L) over the points, in units of δ² (so that L-BFGS's relative stopping
    rule sees numbers near 1, not 1e-6: Besiroglu et al. 2024 traced the published fit's narrow
    intervals to an optimizer that stopped early on the unscaled sum), and its gradient."""
    predicted, shares = _log_law(theta, log_n, log_d)
    r = (predicted - log_loss) / delta
    small = np.abs(r) <= 1.0
    value = np.where(small, 0.5 * r * r, np.abs(r) - 0.5).sum()
    dr = np.where(small, r, np.sign(r)) / delta  # d value / d predicted
    grad = np.array([
        np.sum(dr * shares[0]), np.sum(dr * shares[1]), np.sum(dr * shares[2]),
        -np.sum(dr * shares[0] * log_n), -np.sum(dr * shares[1] * log_d),
    ])
    return float(value), grad


def _grid_values(log_n: np.ndarray, log_d: np.ndarray, log_loss: np.ndarray, delta: float) -> np.ndarray:
    a, b, e, alpha, beta = (INIT_GRID[:, i, None] for i in range(5))
    predicted = _logsumexp(np.stack(np.broadcast_arrays(a - alpha * log_n, b - beta * log_d, e)))
    r = np.abs(predicted - log_loss) / delta
    return np.where(r <= 1.0, 0.5 * r * r, r - 0.5).sum(axis=1)


def fit_law(params: Sequence[float], tokens: Sequence[float], losses: Sequence[float], *, name: str = "fitted",
            delta: float = HUBER_DELTA, starts: int = LBFGS_STARTS,
            extra_starts: Sequence[np.ndarray] = ()) -> Law:
    """Hoffmann et al.'s approach 3: minimise the Huber loss between log L(N, D) and the measured
    log-loss with L-BFGS, from the best `starts` points of their grid of initialisations (plus
    `extra_starts`, e.g. the full-data fit for a bootstrap resample); the lowest minimum wins."""
    log_n, log_d, log_loss = np.log(params), np.log(tokens), np.log(losses)
    order = np.argsort(_grid_values(log_n, log_d, log_loss, delta))[:starts]
    best = None
    # One BLAS thread: L-BFGS-B's steps are BLAS calls on 5-vectors, and OpenBLAS's 2 threads made each
    # 2.9 ms instead of 0.27 ms (measured on the 2-core machine; 11 ms while other work loaded it).
    with threadpool_limits(1):
        for theta0 in [*INIT_GRID[order], *extra_starts]:
            result = minimize(huber_objective, theta0, args=(log_n, log_d, log_loss, delta), jac=True,
                              bounds=BOUNDS, method="L-BFGS-B", options={"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-9})
            if best is None or result.fun < best.fun:
                best = result
    a, b, e, alpha, beta = best.x
    return Law(name=name, E=math.exp(e), A=math.exp(a), B=math.exp(b), alpha=float(alpha), beta=float(beta),
               source="hfllm.scaling.fit_law (approach 3)")


def law_theta(law: Law) -> np.ndarray:
    """A law as the fit's parameter vector (log A, log B, log E, α, β)."""
    return np.array([math.log(law.A), math.log(law.B), math.log(law.E), law.alpha, law.beta])


# ---------------------------------------------------------------------------------------------
# Approach 2: IsoFLOP profiles, a parabola in log N each, and power laws through their minima


@dataclass(frozen=True)
class IsoflopMinimum:
    """The bottom of one budget's IsoFLOP profile: the parabola's vertex in log N."""

    budget: float
    params: float
    tokens: float
    loss: float
    inside: bool  # the vertex lies between the budget's smallest and largest model


def isoflop_minimum(budget: float, params: Sequence[float], losses: Sequence[float]) -> IsoflopMinimum | None:
    """Fit L = c₀ + c₁·x + c₂·x², x = log N, through one budget's runs (Hoffmann et al. 2022, §3.2);
    the vertex x* = −c₁ / (2c₂) is the optimal N. None when the profile has no minimum (c₂ ≤ 0, or
    fewer than 3 distinct sizes)."""
    x = np.log(np.asarray(params, dtype=float))
    if len(np.unique(x)) < 3:
        return None
    c2, c1, c0 = np.polyfit(x, np.asarray(losses, dtype=float), 2)
    if c2 <= 0:
        return None
    x_best = -c1 / (2 * c2)
    n_best = math.exp(x_best)
    return IsoflopMinimum(budget, n_best, budget / (6 * n_best), float(c0 - c1 * c1 / (4 * c2)),
                          bool(x.min() <= x_best <= x.max()))


@dataclass(frozen=True)
class PowerLaw:
    """y = k · C^exponent, fitted in log-log space."""

    coefficient: float
    exponent: float

    def __call__(self, flops: float) -> float:
        return self.coefficient * flops**self.exponent


def fit_power_law(flops: Sequence[float], values: Sequence[float]) -> PowerLaw:
    exponent, log_k = np.polyfit(np.log(flops), np.log(values), 1)
    return PowerLaw(float(math.exp(log_k)), float(exponent))


@dataclass(frozen=True)
class IsoflopFit:
    """Approach 2: each budget's minimum, and N_opt ∝ C^a, D_opt ∝ C^b through them (b = 1 − a,
    since D = C / 6N)."""

    minima: list[IsoflopMinimum]
    params: PowerLaw
    tokens: PowerLaw


def isoflop_minima(points: Sequence[SweepPoint]) -> list[IsoflopMinimum]:
    """Each budget's parabola vertex, where its profile has one (inside its sizes or not)."""
    minima = []
    for budget, group in group_by_budget(points).items():
        minimum = isoflop_minimum(budget, [p.params for p in group], [p.loss for p in group])
        if minimum is not None:
            minima.append(minimum)
    return minima


def fit_isoflop(points: Sequence[SweepPoint]) -> IsoflopFit | None:
    """Approach 2 over the sweep's budgets: power laws through the vertices that lie inside their
    profile's sizes; None unless at least two do. A profile that does not bracket its minimum puts
    the vertex anywhere (measured on `make scaling`'s first sweep: a nearly straight profile's at
    N = 1e-46), so an extrapolated vertex is reported (`isoflop_minima`), never fitted."""
    minima = [m for m in isoflop_minima(points) if m.inside]
    if len(minima) < 2:
        return None
    flops = [m.budget for m in minima]
    return IsoflopFit(minima, fit_power_law(flops, [m.params for m in minima]),
                      fit_power_law(flops, [m.tokens for m in minima]))


# ---------------------------------------------------------------------------------------------
# Points, and bootstrap intervals on every constant


@dataclass(frozen=True)
class SweepPoint:
    """One finished run of the sweep: its IsoFLOP budget, N (every parameter; the embedding is tied,
    so the LM head is counted once), D, and final held-out loss (nats per token)."""

    budget: float
    params: float
    tokens: float
    loss: float
    id: str = ""
    params_non_embedding: float = 0.0


def group_by_budget(points: Sequence[SweepPoint]) -> dict[float, list[SweepPoint]]:
    groups: dict[float, list[SweepPoint]] = {}
    for p in sorted(points, key=lambda p: (p.budget, p.params)):
        groups.setdefault(p.budget, []).append(p)
    return groups


def fit_points(points: Sequence[SweepPoint], **kwargs) -> Law:
    return fit_law([p.params for p in points], [p.tokens for p in points], [p.loss for p in points], **kwargs)


@dataclass
class Bootstrap:
    """Refits on resampled sweeps: per budget, its runs drawn with replacement (the design's
    budgets kept, as in the sweep). Approach 2 uses the resamples whose every budget still has a
    minimum; `approach2_used` says how many."""

    laws: list[Law] = field(default_factory=list)
    isoflop: list[IsoflopFit] = field(default_factory=list)

    def interval(self, values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
        low, high = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
        return float(low), float(high)

    def law_intervals(self) -> dict[str, tuple[float, float]]:
        return {k: self.interval([getattr(law, k) for law in self.laws]) for k in LAW_CONSTANTS}

    def prediction_interval(self, fn: Callable[[Law], float]) -> tuple[float, float]:
        return self.interval([fn(law) for law in self.laws])

    @property
    def approach2_used(self) -> int:
        return len(self.isoflop)


def bootstrap(points: Sequence[SweepPoint], samples: int, seed: int, full_fit: Law | None = None) -> Bootstrap:
    rng = np.random.default_rng(seed)
    groups = list(group_by_budget(points).values())
    out = Bootstrap()
    extra = [law_theta(full_fit)] if full_fit is not None else []
    for _ in range(samples):
        resample = [g[i] for g in groups for i in rng.integers(0, len(g), len(g))]
        out.laws.append(fit_points(resample, starts=2, extra_starts=extra))
        isoflop = fit_isoflop(resample)
        if isoflop is not None and len(isoflop.minima) == len(groups):
            out.isoflop.append(isoflop)
    return out
