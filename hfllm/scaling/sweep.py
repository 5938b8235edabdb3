"""The sweep's plan: IsoFLOP budgets × sizes → Llama shapes (`hfllm.modeling`), tokens and steps,
all checked before anything is trained.

A size is given as tokens per parameter r, so that each budget C gets N = sqrt(C / 6r) and
D = C / 6N: the same spread of r in every profile keeps each profile's minimum inside it as the
optimum moves with C (Hoffmann et al. 2022 chose their sizes per budget the same way). N counts
every parameter, as Chinchilla's does; the embedding is tied, so the LM head — a matmul every token
pays for — is counted once (Porian et al. 2024 traced much of the Kaplan–Chinchilla disagreement
to leaving the head's compute out at small sizes, where it is most of the model).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hfllm.errors import ConfigError

# A size may miss its target by this factor at the ends of the shape family (between shapes it is
# always nearer: neighbouring shapes differ by well under 1.6× in N).
SIZE_SLACK = 1.25


@dataclass(frozen=True)
class ModelShape:
    num_layers: int
    hidden_size: int
    num_heads: int
    params: int  # every parameter (the tied embedding counted once)
    params_non_embedding: int
    flops_per_token: float  # training FLOPs per token with attention (`hfllm.modeling.flops_per_token`)

    @property
    def name(self) -> str:
        return f"{self.num_layers}x{self.hidden_size}"


def padded_vocab(vocab_size: int) -> int:
    """The embedding rows pretraining gives a tokenizer of this size (`hfllm.pretrain.build_model`
    pads to a multiple of 64)."""
    return -(-vocab_size // 64) * 64


def model_shapes(vocab_size: int, max_length: int, *, head_dim: int, layers: tuple[int, int],
                 aspect_ratio: tuple[float, float]) -> list[ModelShape]:
    """The Llama shapes a sweep may use, smallest first: width a multiple of `head_dim` (heads of
    that size), `layers` = (fewest, most), width / layers within `aspect_ratio`. Kaplan et al. 2020
    (fig. 5) found the loss nearly flat in the aspect ratio over a wide band, so shape is not what
    the sweep measures; but one-layer models fall off the others' curve (their fig. 6): at least 2."""
    from hfllm.modeling import count_parameters, flops_per_token, llama_config

    shapes = []
    for layers in range(layers[0], layers[1] + 1):
        for width in range(head_dim, int(aspect_ratio[1] * layers) + 1, head_dim):
            if width < aspect_ratio[0] * layers:
                continue
            config = llama_config(layers, width, width // head_dim, max_length, padded_vocab(vocab_size))
            shapes.append(ModelShape(layers, width, width // head_dim, count_parameters(config),
                                     count_parameters(config, embeddings=False), flops_per_token(config)))
    return sorted(shapes, key=lambda s: (s.params, s.num_layers))


def nearest_shape(target: float, shapes: Sequence[ModelShape]) -> ModelShape:
    """The shape whose N is nearest `target` in log space; at equal distance the more balanced one
    (width / layers nearest 64, the middle of the usual band)."""
    return min(shapes, key=lambda s: (round(abs(math.log(s.params / target)), 3),
                                      abs(math.log(s.hidden_size / s.num_layers / 64))))


@dataclass(frozen=True)
class PlannedPoint:
    """One run of the sweep: a shape trained for `steps` optimizer steps of `batch_tokens` tokens,
    so that 6·N·D is its budget to within half a step."""

    id: str
    budget: float
    shape: ModelShape
    steps: int
    batch_tokens: int

    @property
    def params(self) -> int:
        return self.shape.params

    @property
    def tokens(self) -> int:
        return self.steps * self.batch_tokens

    @property
    def flops(self) -> float:
        return 6.0 * self.params * self.tokens


def _short(x: float) -> str:
    return f"{x:.2g}".replace("e+", "e")


def plan_point(budget: float, shape: ModelShape, batch_tokens: int, prefix: str = "c") -> PlannedPoint:
    steps = max(1, round(budget / (6.0 * shape.params * batch_tokens)))
    return PlannedPoint(f"{prefix}{_short(budget)}_{shape.name}", budget, shape, steps, batch_tokens)


@dataclass
class ScalingArguments:
    """The sweep: IsoFLOP budgets, the sizes in each (as tokens per parameter), the prediction run,
    and the fits' bootstrap. Every run's recipe is `pretrain_config`, the pretraining stage's own
    YAML; the sweep sets only each run's shape, `max_steps`, `eval_steps` and `output_dir`."""

    pretrain_config: str = field(metadata={"help": "The pretraining YAML every run of the sweep uses."})
    dataset_name: str = field(metadata={"help": "Data stage dir (train and test splits)."})
    tokenizer_name: str = field(metadata={"help": "Tokenizer dir."})
    budgets: list[float] = field(metadata={"help": "FLOPs (6·N·D) of each IsoFLOP profile."})
    tokens_per_param: list[float] = field(
        default_factory=lambda: [60.0, 15.0, 4.0, 1.0],
        metadata={"help": "The sizes of each profile, as D/N (N = sqrt(C / 6r)): spread wide enough that the profile "
                          "has its minimum inside."})
    prediction_multiplier: float = field(
        default=4.0, metadata={"help": "The prediction run's budget as a multiple of the largest (at least 4)."})
    stream_tokens: float | None = field(
        default=None,
        metadata={"help": "A streamed training set's size in tokens (e.g. from its dataset card): the most one run "
                          "may read, each block once."})
    vocab_size: int | None = field(
        default=None,
        metadata={"help": "The tokenizer's vocabulary (the pipeline wires it; unset: read from the tokenizer)."})
    head_dim: int = field(default=32, metadata={"help": "Attention head width; model widths are multiples of it."})
    min_layers: int = field(default=2, metadata={"help": "Shallowest model (one-layer models fall off the curve)."})
    max_layers: int = field(default=12, metadata={"help": "Deepest model the sweep may use."})
    min_aspect_ratio: float = field(default=16.0, metadata={"help": "Least width / layers of a model."})
    max_aspect_ratio: float = field(default=128.0, metadata={"help": "Largest width / layers of a model."})
    min_steps: int = field(default=50, metadata={"help": "Fewest optimizer steps a run may get."})
    bootstrap_samples: int = field(default=200, metadata={"help": "Resamples for the 95 % intervals."})
    bootstrap_seed: int = field(default=0, metadata={"help": "Seed of the resamples."})
    require_useful_prediction: bool = field(
        default=True,
        metadata={"help": "Fail (exit 2) when the prediction's error is not below the loss drop it predicts."})
    sweep_dir: str | None = field(
        default=None, metadata={"help": "Where the runs go (default: `sweep/` beside output_dir)."})
    output_dir: str = field(default="hfllm-scaling", metadata={"help": "law.json, sweep.json and the report."})

    def __post_init__(self):  # a ValueError here is the parser's one-line ConfigError
        if not self.budgets or any(not b > 0 for b in self.budgets):
            raise ValueError("budgets: give positive FLOP budgets")
        if len(set(self.budgets)) < 2:
            raise ValueError("budgets: the exponents need at least two distinct budgets")
        if len(self.tokens_per_param) < 3 or any(not r > 0 for r in self.tokens_per_param):
            raise ValueError("tokens_per_param: a parabola through each profile needs at least 3 positive ratios")
        if self.prediction_multiplier < 4:
            raise ValueError("prediction_multiplier must be at least 4 (the prediction is checked 4× past the sweep)")
        if not 1 <= self.min_layers <= self.max_layers:
            raise ValueError("min_layers must be at least 1 and at most max_layers")
        if not 0 < self.min_aspect_ratio <= self.max_aspect_ratio:
            raise ValueError("min_aspect_ratio must be positive and at most max_aspect_ratio")

    @property
    def runs_dir(self) -> Path:
        return Path(self.sweep_dir) if self.sweep_dir else Path(self.output_dir).parent / "sweep"

    @property
    def prediction_budget(self) -> float:
        return self.prediction_multiplier * max(self.budgets)

    def shapes(self, vocab_size: int, max_length: int) -> list[ModelShape]:
        return model_shapes(vocab_size, max_length, head_dim=self.head_dim, layers=(self.min_layers, self.max_layers),
                            aspect_ratio=(self.min_aspect_ratio, self.max_aspect_ratio))


def shape_for(target: float, shapes: Sequence[ModelShape], what: str) -> ModelShape:
    """The shape nearest `target` parameters; one outside the family (beyond `SIZE_SLACK`) is a
    `ConfigError` that says what asked for it."""
    smallest, largest = shapes[0], shapes[-1]
    if target < smallest.params / SIZE_SLACK:
        raise ConfigError(f"{what} is smaller than the smallest model: it needs {target:,.0f} parameters, and the "
                          f"smallest model ({smallest.name}) has {smallest.params:,} — raise the budget or lower "
                          "tokens_per_param", field="budgets")
    if target > largest.params * SIZE_SLACK:
        raise ConfigError(f"{what} needs {target:,.0f} parameters, more than the largest model ({largest.name}: "
                          f"{largest.params:,}) — raise max_layers or max_aspect_ratio", field="budgets")
    return nearest_shape(target, shapes)


def plan_sweep(args: ScalingArguments, vocab_size: int, max_length: int, batch_tokens: int) -> list[PlannedPoint]:
    """Every run of the sweep, budget by budget, before any is trained: a budget whose sizes fall
    outside the shapes there are, that gives a run fewer than `min_steps` steps, or that maps two
    sizes onto one model is one `ConfigError` naming it."""
    shapes = args.shapes(vocab_size, max_length)
    points = []
    for budget in sorted(args.budgets):
        chosen = []
        for ratio in sorted(args.tokens_per_param, reverse=True):
            what = f"budget {budget:.3g} FLOPs at {ratio:g} tokens per parameter"
            chosen.append(plan_point(budget, shape_for(math.sqrt(budget / (6.0 * ratio)), shapes, what), batch_tokens))
        if len({p.shape for p in chosen}) < len(chosen):
            raise ConfigError(f"budget {budget:.3g} FLOPs: two sizes map to the same model "
                              f"({', '.join(p.shape.name for p in chosen)}) — spread tokens_per_param further apart",
                              field="tokens_per_param")
        for p in chosen:
            if p.steps < args.min_steps:
                raise ConfigError(f"budget {budget:.3g} FLOPs gives the {p.shape.name} model {p.steps} steps of "
                                  f"{batch_tokens:,} tokens, fewer than min_steps {args.min_steps} — raise the budget "
                                  "or lower the batch", field="budgets")
        points += chosen
    return points


def plan_prediction(args: ScalingArguments, optimal_params: float, vocab_size: int, max_length: int,
                    batch_tokens: int, unique_tokens: int | None = None) -> PlannedPoint:
    """The run the fit predicts: `prediction_multiplier` × the largest budget, at the shape nearest
    the law's compute-optimal N for it — or, when that N's tokens are more than the training split
    holds (`unique_tokens`), at the smallest shape whose tokens fit: the run nearest the optimum
    that still reads each block at most once."""
    budget = args.prediction_budget
    shapes = args.shapes(vocab_size, max_length)
    shape = shape_for(optimal_params, shapes,
                      f"the prediction run ({budget:.3g} FLOPs, compute-optimal N {optimal_params:,.0f})")
    point = plan_point(budget, shape, batch_tokens, prefix="predict_c")
    if unique_tokens is not None and point.tokens > unique_tokens:
        fitting = [s for s in shapes if plan_point(budget, s, batch_tokens).tokens <= unique_tokens]
        if fitting:  # none: check_single_pass names the shortfall
            point = plan_point(budget, fitting[0], batch_tokens, prefix="predict_c")
    return point
