"""Length-controlled win-rate (AlpacaEval 2's GLM) as an `evaluate` module:
`evaluate.load("<path>/lc_win_rate")`, no Hub needed. The maths lives in
`hfllm.evaluation.winrate`; this module only adapts it to `evaluate`'s interface."""

import datasets
import evaluate

from hfllm.evaluation.winrate import win_rates

_DESCRIPTION = """Raw and length-controlled win-rate of model A over model B, in percent, with percentile-bootstrap
intervals. The length-controlled win-rate is a logistic regression of the judge's preference on
tanh(standardized length difference) evaluated at equal lengths (AlpacaEval 2)."""

_CITATION = """@article{dubois2024length,
  title={Length-Controlled AlpacaEval: A Simple Way to Debias Automatic Evaluators},
  author={Dubois, Yann and Galambosi, Bal{\\'a}zs and Liang, Percy and Hashimoto, Tatsunori B},
  journal={arXiv preprint arXiv:2404.04475},
  year={2024}
}"""

_INPUTS = """
Args:
    preferences: per prompt, A's preference in [0, 1] averaged over both presentation orders
        (1 = A preferred, 0 = B preferred, 0.5 = tie or split verdict).
    lengths_a, lengths_b: the two answers' lengths (characters), per prompt.
    n_bootstrap (int, default 1000), confidence (float, default 0.95), seed (int, default 0).
Returns:
    win_rate, win_rate_ci_low, win_rate_ci_high, lc_win_rate, lc_win_rate_ci_low, lc_win_rate_ci_high
    (percent), length_coef, length_explains_all, n.
Example:
    >>> lc = evaluate.load("hfllm/evaluation/metrics/lc_win_rate")
    >>> lc.compute(preferences=[1, 0.5, 0], lengths_a=[900, 40, 30], lengths_b=[100, 45, 60])
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _INPUTS)
class LcWinRate(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_INPUTS,
            features=datasets.Features({
                "preferences": datasets.Value("float64"),
                "lengths_a": datasets.Value("float64"),
                "lengths_b": datasets.Value("float64"),
            }),
            reference_urls=["https://arxiv.org/abs/2404.04475"],
        )

    def _compute(self, preferences, lengths_a, lengths_b, n_bootstrap=1000, confidence=0.95, seed=0):
        r = win_rates(preferences, lengths_a, lengths_b, n_bootstrap=n_bootstrap, confidence=confidence, seed=seed)
        return {
            "win_rate": r.win_rate,
            "win_rate_ci_low": r.win_rate_ci[0],
            "win_rate_ci_high": r.win_rate_ci[1],
            "lc_win_rate": r.lc_win_rate,
            "lc_win_rate_ci_low": r.lc_win_rate_ci[0],
            "lc_win_rate_ci_high": r.lc_win_rate_ci[1],
            "length_coef": r.length_coef,
            "length_explains_all": r.length_explains_all,
            "n": r.n,
        }
