"""Scaling laws measured on the user's own data, tokenizer and recipe: an IsoFLOP sweep run through
the pretraining stage itself (`sweep`, `stage`), the two fits of Hoffmann et al. 2022 (`fits`), and a
prediction of a larger run that is then trained and compared.

Why measure rather than take a published law: a law's constants belong to its data, tokenizer,
model family and recipe (the loss is in nats per token of *its* tokenizer), and the two published
fits of the same Chinchilla runs disagree on the optimal split by 5× in tokens per parameter
(README, "Scaling laws"). The published laws and the planner that uses any law are in
`hfllm.planner`.
"""

from hfllm.scaling.fits import (
    Bootstrap,
    IsoflopFit,
    IsoflopMinimum,
    PowerLaw,
    SweepPoint,
    bootstrap,
    fit_isoflop,
    fit_law,
    fit_points,
    huber_objective,
    isoflop_minimum,
)

__all__ = ["Bootstrap", "IsoflopFit", "IsoflopMinimum", "PowerLaw", "SweepPoint", "bootstrap", "fit_isoflop",
           "fit_law", "fit_points", "huber_objective", "isoflop_minimum"]
