"""The scaling stage's report section and plot, and the summary `hfllm scaling show` prints."""

from __future__ import annotations

import math
from typing import Any

from hfllm.planner import LAW_CONSTANTS, Law
from hfllm.scaling.fits import Bootstrap, IsoflopFit, SweepPoint, group_by_budget, isoflop_minima


def constant_rows(law: Law) -> list[list[Any]]:
    return [[k, getattr(law, k), "—" if k not in law.intervals else
             f"{law.intervals[k][0]:.4g} – {law.intervals[k][1]:.4g}"] for k in LAW_CONSTANTS]


def describe(section, args, law: Law, isoflop: IsoflopFit | None, boot: Bootstrap, points: list[SweepPoint],
             planned, prediction, unique_tokens: int) -> None:
    """Fill the stage's report section: the runs, both fits with their intervals, the prediction
    against its measurement, and the plot."""
    section.text(
        f"IsoFLOP sweep through the pretraining stage: {len(args.budgets)} budgets × {len(args.tokens_per_param)} "
        f"sizes, each run with its own schedule ending at its token budget, reading each block of the "
        f"{unique_tokens:,}-token training split at most once; then one run at {args.prediction_multiplier:g}× the "
        f"largest budget, sized and predicted by the fit before it was trained. Runs: `{args.runs_dir}`.")
    losses = {p.id: p.loss for p in points} | {prediction.id: prediction.measured}
    section.table(["run", "budget (FLOPs)", "shape", "N", "N without embedding", "D (tokens)", "D/N",
                   "6ND", "FLOPs with attention", "held-out loss"],
                  [[p.id, f"{p.budget:.3g}", p.shape.name, f"{p.params:,}", f"{p.shape.params_non_embedding:,}",
                    f"{p.tokens:,}", f"{p.tokens / p.params:.1f}", f"{p.flops:.3g}",
                    f"{p.shape.flops_per_token * p.tokens:.3g}", f"{losses[p.id]:.4f}"] for p in planned])
    section.text(f"**Approach 3** (Hoffmann et al. 2022): {law.formula()}; 95 % intervals from {len(boot.laws)} "
                 "bootstrap resamples of the runs, each budget's runs drawn with replacement.")
    section.table(["constant", "fit", "95 % interval"], constant_rows(law))
    a = law.beta / (law.alpha + law.beta)
    a_interval = boot.interval([fit.beta / (fit.alpha + fit.beta) for fit in boot.laws])
    lines = [f"Compute-optimal N ∝ C^{a:.3f} (95 % {a_interval[0]:.3f} – {a_interval[1]:.3f}) by approach 3"]
    if isoflop is None:
        vertices = ", ".join(f"{m.budget:.3g}: N {m.params:.3g} ({'inside' if m.inside else 'outside'} its sizes)"
                             for m in isoflop_minima(points)) or "none"
        section.text("**Approach 2** (a parabola in log N through each budget's runs) needs at least two profiles "
                     f"whose vertex lies inside their sizes; this sweep's vertices — {vertices}. Where a budget's "
                     "best run is its smallest or largest model, its profile does not bracket the minimum: the "
                     "sizes (tokens_per_param) or budgets must move for approach 2.")
    if isoflop is not None:
        section.text("**Approach 2**: a parabola in log N through each budget's runs; its vertex is the budget's "
                     "optimal N.")
        section.table(["budget (FLOPs)", "optimal N", "optimal D", "loss at the vertex", "vertex inside the sizes"],
                      [[f"{m.budget:.3g}", f"{m.params:,.0f}", f"{m.tokens:,.0f}", f"{m.loss:.4f}",
                        "yes" if m.inside else "no (extrapolated)"] for m in isoflop.minima])
        line = f"N ∝ C^{isoflop.params.exponent:.3f}"
        if boot.isoflop:
            low, high = boot.interval([f.params.exponent for f in boot.isoflop])
            line += f" (95 % {low:.3f} – {high:.3f}, {boot.approach2_used} resamples with every vertex)"
        lines.append(line + " by approach 2")
    section.text("; ".join(lines) + " (Chinchilla: 0.50 and 0.49; its approach 3 as published: 0.45).")
    if prediction.tokens < prediction.optimal_tokens / 1.5:
        section.text(f"The law's compute-optimal split of {prediction.budget:.3g} FLOPs is N "
                     f"{prediction.optimal_params:,.0f} on {prediction.optimal_tokens:,.0f} tokens, more than the "
                     f"{unique_tokens:,} the training split holds: the prediction run is the smallest model whose "
                     "tokens fit, each block read once (its loss is still the law's to predict).")
    verdict = ("met" if prediction.goal_met else
               f"missed: the error is {prediction.error / prediction.drop:.2f} of the drop" if prediction.drop > 0 else
               "missed: the larger run did not improve on the sweep")
    section.table(["prediction run", "budget", "N", "D", "predicted loss (95 %)", "measured", "error",
                   "drop from the largest budget's best", "goal: error ≤ drop / 3"],
                  [[prediction.id, f"{prediction.budget:.3g}", f"{prediction.params:,.0f}",
                    f"{prediction.tokens:,.0f}",
                    f"{prediction.predicted:.4f} ({prediction.interval[0]:.4f} – {prediction.interval[1]:.4f})",
                    f"{prediction.measured:.4f}", f"{prediction.error:.4f}", f"{prediction.drop:.4f}", verdict]])
    if not prediction.goal_met:
        section.text(miss_reasons(law, points, prediction))
    section.plot(isoflop_plot(points, law, isoflop, prediction), "isoflop",
                 "IsoFLOP profiles with approach 3's curves, the compute-optimal frontier, predicted and measured run")


def miss_reasons(law: Law, points: list[SweepPoint], prediction) -> str:
    """What the sweep itself says about a missed prediction: where the run lies against the interval,
    how far past the sweep's N and D it reached, which profiles hold no minimum, and which runs the
    fit misses most."""
    low, high = prediction.interval
    where = ("inside" if low <= prediction.measured <= high else
             "below" if prediction.measured < low else "above")
    reasons = [f"Why the prediction missed, from the sweep: the measured loss lies {where} the fit's 95 % interval"]
    for name, value, largest in (("D", prediction.tokens, max(p.tokens for p in points)),
                                 ("N", prediction.params, max(p.params for p in points))):
        if value > largest:
            reasons.append(f"its {name} is {value / largest:.1f}× the sweep's largest, an extrapolation")
    bracketed = {m.budget for m in isoflop_minima(points) if m.inside}
    unbracketed = [f"{budget:.3g}" for budget in group_by_budget(points) if budget not in bracketed]
    if unbracketed:
        reasons.append(f"the IsoFLOP profiles of {', '.join(unbracketed)} FLOPs hold no minimum inside their sizes "
                       "(the law's terms are not pinned there)")
    worst = sorted(points, key=lambda q: -abs(math.log(law.loss(q.params, q.tokens) / q.loss)))[:2]
    reasons.append("the fit misses most on " + " and ".join(
        f"{q.id} ({law.loss(q.params, q.tokens):.3f} against {q.loss:.3f})" for q in worst))
    return "; ".join(reasons) + "."


def isoflop_plot(points: list[SweepPoint], law: Law, isoflop: IsoflopFit | None, prediction):
    """Left: loss against N for each budget (the runs, approach 2's parabola, approach 3's curve) and the
    prediction run, predicted (open) and measured (filled). Right: optimal N against C — approach 2's
    vertices and power law, approach 3's frontier — with the prediction run's N."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    budgets = sorted(group_by_budget(points))
    colours = plt.cm.viridis(np.linspace(0, 0.85, len(budgets) + 1))
    for colour, (budget, group) in zip(colours, group_by_budget(points).items()):
        n = np.array([p.params for p in group])
        left.plot(n, [p.loss for p in group], "o", color=colour, label=f"{budget:.2g} FLOPs")
        grid = np.geomspace(n.min() / 1.5, n.max() * 1.5, 100)
        left.plot(grid, [law.loss(x, budget / (6 * x)) for x in grid], "-", color=colour, alpha=0.7)
        if len(n) >= 3:
            c = np.polyfit(np.log(n), [p.loss for p in group], 2)
            left.plot(grid, np.polyval(c, np.log(grid)), ":", color=colour)
    pred_colour = colours[-1]
    grid = np.geomspace(prediction.params / 4, prediction.params * 4, 100)
    left.plot(grid, [law.loss(x, prediction.budget / (6 * x)) for x in grid], "-", color=pred_colour, alpha=0.7)
    left.plot([prediction.params], [prediction.predicted], "o", mfc="none", color="crimson", ms=9,
              label=f"predicted {prediction.predicted:.3f}")
    left.plot([prediction.params], [prediction.measured], "o", color="crimson",
              label=f"measured {prediction.measured:.3f}")
    left.set_xscale("log")
    left.set_xlabel("parameters N")
    left.set_ylabel("held-out loss (nats/token)")
    left.set_title("IsoFLOP profiles (— approach 3, ··· parabolas)")
    left.legend(fontsize=8)
    left.grid(alpha=0.3, which="both")

    flops = np.geomspace(min(budgets) / 2, prediction.budget * 2, 50)
    right.plot(flops, [law.compute_optimal(c)[0] for c in flops], "-", color="k", label="approach 3 frontier")
    if isoflop is not None:
        right.plot([m.budget for m in isoflop.minima], [m.params for m in isoflop.minima], "s", color="tab:blue",
                   label="approach 2 vertices")
        right.plot(flops, [isoflop.params(c) for c in flops], "--", color="tab:blue",
                   label=f"approach 2: N ∝ C^{isoflop.params.exponent:.2f}")
    right.plot([p.budget for p in points], [p.params for p in points], ".", color="grey", label="runs")
    right.plot([prediction.budget], [prediction.params], "o", color="crimson", label="prediction run")
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("FLOPs C (6ND)")
    right.set_ylabel("compute-optimal N")
    right.set_title("Compute-optimal frontier")
    right.legend(fontsize=8)
    right.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig


def summary_lines(record: dict[str, Any]) -> list[str]:
    """What `hfllm scaling show` prints from a `law.json`: the constants with their intervals, both
    fits' exponents, the prediction against its measurement, and where the plot is."""
    intervals = record.get("intervals", {})
    lines = [f"law      {record['law']}  ({record.get('bootstrap_samples', 0)} bootstrap resamples, 95 % intervals)"]
    for k in LAW_CONSTANTS:
        low, high = intervals.get(k, (math.nan, math.nan))
        lines.append(f"  {k:<6} {record[k]:>10.4g}   [{low:.4g}, {high:.4g}]")
    a3 = record["beta"] / (record["alpha"] + record["beta"])
    line = f"optimal N ∝ C^{a3:.3f} (approach 3)"
    if record.get("approach2"):
        line += f", C^{record['approach2']['params_exponent']:.3f} (approach 2)"
    lines.append(line)
    p = record.get("prediction")
    if p:
        verdict = "goal met" if p["goal_met"] else "goal missed"
        lines.append(f"prediction {p['id']}: N {p['params']:,.0f}, D {p['tokens']:,.0f}: predicted "
                     f"{p['predicted']:.4f} [{p['interval'][0]:.4f}, {p['interval'][1]:.4f}], measured "
                     f"{p['measured']:.4f}; error {p['error']:.4f} against a drop of {p['drop']:.4f} "
                     f"({verdict}: error ≤ drop / 3)")
    if record.get("plot"):
        lines.append(f"plot     {record['plot']}")
    return lines
