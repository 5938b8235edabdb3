"""hfllm's metrics as `evaluate` modules, shipped as package data and loaded from a local path.

    import evaluate
    from hfllm.evaluation.metrics import metric_path
    bpb = evaluate.load(metric_path("bits_per_byte"))        # no Hub needed
    bpb.compute(predictions=texts, model=model, tokenizer=tokenizer)["bits_per_byte"]

Each module is a directory `<name>/<name>.py` (evaluate's layout for a local module) beside this
file: `bits_per_byte` (the evaluation stage scores held-out text through it) and `lc_win_rate`
(task_eval's win-rates go through it).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def metric_path(name: str) -> str:
    """The local directory of hfllm's `evaluate` module `name`, for `evaluate.load`."""
    path = Path(str(files("hfllm.evaluation.metrics") / name))
    if not (path / f"{name}.py").is_file():
        known = sorted(p.name for p in path.parent.iterdir() if (p / f"{p.name}.py").is_file())
        raise ValueError(f"hfllm has no evaluate module {name!r}; it has {', '.join(known)}")
    return str(path)
