"""Win-rate maths: both orders, raw and length-controlled win-rates (AlpacaEval 2's GLM) with
bootstrap intervals, against hand-computed values and judges whose bias is known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hfllm.errors import DataError
from hfllm.evaluation.winrate import fit_length_glm, judge_both_orders, win_rates

METRIC_DIR = Path(__file__).resolve().parents[1] / "hfllm" / "evaluation" / "metrics" / "lc_win_rate"


@pytest.fixture(scope="module")
def text() -> str:
    """Real English text to cut answers from: Python's own help pages."""
    from hfllm.corpus import iter_documents

    return "\n\n".join(d["text"] for d in iter_documents(sources=("pydoc_topics",)))


def answers_of_lengths(text: str, lengths, rng) -> list[str]:
    starts = rng.integers(0, len(text) - int(max(lengths)) - 1, len(lengths))
    return [text[s:s + int(n)] for s, n in zip(starts, lengths)]


def prompts_from(text: str, n: int) -> list[str]:
    lines = [line.strip() for line in text.splitlines() if len(line.strip()) > 20]
    return [f"Explain: {lines[i % len(lines)][:80]}" for i in range(n)]


def test_both_orders_cancel_a_judge_that_only_prefers_the_first_answer(text):
    rng = np.random.default_rng(0)
    n = 50
    answers_a = answers_of_lengths(text, rng.integers(100, 900, n), rng)
    answers_b = answers_of_lengths(text, rng.integers(100, 900, n), rng)
    pref = judge_both_orders(lambda prompt, first, second: 1.0, prompts_from(text, n), answers_a, answers_b)
    assert np.all(pref == 0.5)  # one order alone would give A 100 %
    r = win_rates(pref, [len(a) for a in answers_a], [len(b) for b in answers_b], n_bootstrap=50)
    assert r.win_rate == 50.0
    assert r.lc_win_rate == pytest.approx(50.0, abs=1e-9)
    assert r.win_rate_ci == (50.0, 50.0)


def test_length_controlled_win_rate_by_hand():
    # 100 prompts where A's answer is longer (Δ = +200 chars): A wins 80 outright, 20 are split (0.5) → 0.9.
    # 100 prompts where A's answer is shorter (Δ = -200): A wins 50, loses 50 → 0.5.
    # Two length values, two parameters: the fit is exact, σ(b + θt) = 0.9 and σ(b − θt) = 0.5, so
    # b = (logit 0.9 + logit 0.5) / 2 = ln(9) / 2 and the win-rate at equal lengths is σ(b) = 3/4.
    pref = np.r_[np.ones(80), np.full(20, 0.5), np.ones(50), np.zeros(50)]
    len_a = np.r_[np.full(100, 300), np.full(100, 100)]
    len_b = np.r_[np.full(100, 100), np.full(100, 300)]
    exact = fit_length_glm(pref, len_a, len_b, prior=0.0)
    assert exact.intercept == pytest.approx(np.log(9) / 2, abs=1e-9)
    assert exact.lc_win_rate == pytest.approx(75.0, abs=1e-7)
    t = np.tanh(200 / np.std(len_a - len_b, ddof=1))
    assert exact.length_coef * t == pytest.approx(np.log(9) / 2, abs=1e-9)  # (logit 0.9 − logit 0.5) / 2
    r = win_rates(pref, len_a, len_b, n_bootstrap=200)
    assert r.win_rate == pytest.approx(70.0)
    assert r.lc_win_rate == pytest.approx(75.0, abs=0.01)  # the weak prior on the length term barely moves it
    assert not r.length_explains_all
    assert r.win_rate_ci[0] < 70.0 < r.win_rate_ci[1] and r.lc_win_rate_ci[0] < 75.0 < r.lc_win_rate_ci[1]


def test_swapping_the_models_mirrors_both_win_rates():
    rng = np.random.default_rng(1)
    len_a, len_b = rng.integers(50, 1500, 300), rng.integers(50, 1500, 300)
    pref = rng.choice([0.0, 0.5, 1.0], 300, p=[0.3, 0.2, 0.5])
    ab = win_rates(pref, len_a, len_b, n_bootstrap=100)
    ba = win_rates(1 - pref, len_b, len_a, n_bootstrap=100)
    assert ab.win_rate + ba.win_rate == pytest.approx(100.0)
    assert ab.lc_win_rate + ba.lc_win_rate == pytest.approx(100.0, abs=1e-6)
    assert ab.length_coef == pytest.approx(ba.length_coef, abs=1e-6)


def test_a_judge_that_only_prefers_the_longer_answer(text):
    """The issue's sanity check: raw ≥ 95 %, length-controlled 50 ± 5 %.

    The judge sees only the two lengths and picks the longer answer with probability
    σ(10·tanh(Δ/300 chars)), sampled per verdict. 94 % of prompts are open questions where A
    answers about 7× longer; 6 % are closed questions that both answer in a line (≈ 60 chars),
    which is where the GLM learns what happens at equal length. Across 30 seeds of this set-up the
    length-controlled win-rate stayed within 3.4 points of 50 (sd 1.0; raw ≥ 96.7 %); the test uses
    seed 0."""
    rng = np.random.default_rng(0)
    n = 20_000
    closed = rng.random(n) < 0.06
    len_a = np.where(closed, rng.normal(60, 15, n), rng.lognormal(np.log(1000), 0.4, n)).clip(5).round()
    len_b = np.where(closed, rng.normal(60, 15, n), rng.lognormal(np.log(150), 0.4, n)).clip(5).round()
    answers_a, answers_b = answers_of_lengths(text, len_a, rng), answers_of_lengths(text, len_b, rng)

    def length_judge(prompt: str, first: str, second: str) -> float:
        p_first = 1 / (1 + np.exp(-10 * np.tanh((len(first) - len(second)) / 300)))
        return float(rng.random() < p_first)

    pref = judge_both_orders(length_judge, prompts_from(text, n), answers_a, answers_b)
    r = win_rates(pref, [len(a) for a in answers_a], [len(b) for b in answers_b], n_bootstrap=200)
    assert r.win_rate >= 95.0
    assert r.win_rate_ci[0] > 90.0
    assert abs(r.lc_win_rate - 50.0) <= 5.0, r
    assert r.lc_win_rate_ci[0] <= 50.0 <= r.lc_win_rate_ci[1], r
    assert r.length_coef > 5  # the fit put the preference on length, not on the model


def test_a_judge_decided_by_length_alone_is_flagged(text):
    """Every verdict to the longer answer: length separates the data, the MLE does not exist and
    the length-controlled win-rate is not identified; the result says so."""
    rng = np.random.default_rng(2)
    len_a, len_b = rng.integers(400, 1500, 400), rng.integers(50, 600, 400)
    pref = np.where(len_a > len_b, 1.0, np.where(len_a < len_b, 0.0, 0.5))
    r = win_rates(pref, len_a, len_b, n_bootstrap=100)
    assert r.length_explains_all
    assert np.isfinite(r.lc_win_rate) and np.isfinite(r.length_coef)
    flipped = pref.copy()
    flipped[np.argmax(len_a - len_b)] = 0.0  # one verdict against length: no longer separable
    assert not win_rates(flipped, len_a, len_b, n_bootstrap=10).length_explains_all


def test_bootstrap_interval_of_the_raw_win_rate_matches_the_normal_approximation():
    rng = np.random.default_rng(3)
    n = 2000
    pref = rng.choice([0.0, 0.5, 1.0], n, p=[0.35, 0.1, 0.55])
    r = win_rates(pref, rng.integers(50, 900, n), rng.integers(50, 900, n), n_bootstrap=2000)
    half_width = 1.959964 * 100 * pref.std(ddof=1) / np.sqrt(n)
    assert (r.win_rate_ci[1] - r.win_rate_ci[0]) / 2 == pytest.approx(half_width, rel=0.1)
    assert r.win_rate_ci[0] < r.win_rate < r.win_rate_ci[1]
    assert r.lc_win_rate_ci[0] < r.lc_win_rate < r.lc_win_rate_ci[1]


@pytest.mark.parametrize(
    "pref, len_a, len_b, message",
    [
        ([1.0, 1.5], [10, 20], [10, 20], "row 1: preference 1.5 is not in [0, 1]"),
        ([1.0, 0.0, 0.5], [10, 20], [10, 20, 30], "need one preference and two lengths per prompt"),
        ([1.0, 0.0], [10, -1], [10, 20], "row 1: answer lengths"),
        ([1.0], [10], [20], "at least 2 judged prompts"),
    ],
)
def test_bad_input_is_one_data_error(pref, len_a, len_b, message):
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("]", r"\]")):
        win_rates(pref, len_a, len_b, n_bootstrap=10)


def test_judge_both_orders_needs_one_answer_each():
    with pytest.raises(DataError, match="2 prompts, 2 answers of A, 1 of B"):
        judge_both_orders(lambda p, a, b: 1.0, ["p", "q"], ["a", "b"], ["c"])


def test_evaluate_module_loads_from_a_local_path_and_agrees():
    import evaluate

    rng = np.random.default_rng(4)
    len_a, len_b = rng.integers(50, 1500, 200), rng.integers(50, 1500, 200)
    pref = rng.choice([0.0, 0.5, 1.0], 200)
    metric = evaluate.load(str(METRIC_DIR))
    out = metric.compute(preferences=pref.tolist(), lengths_a=len_a.tolist(), lengths_b=len_b.tolist(),
                         n_bootstrap=100, seed=7)
    direct = win_rates(pref, len_a, len_b, n_bootstrap=100, seed=7)
    assert out["win_rate"] == pytest.approx(direct.win_rate)
    assert out["lc_win_rate"] == pytest.approx(direct.lc_win_rate)
    assert (out["lc_win_rate_ci_low"], out["lc_win_rate_ci_high"]) == pytest.approx(direct.lc_win_rate_ci)
    assert out["n"] == 200
