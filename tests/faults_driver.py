"""The faults the resume drivers inject, for any Trainer-based stage: a callback (and, for a kill in
the middle of a save, a patch of the Trainer) chosen by `mode` and a step."""

from __future__ import annotations

import os
import signal

from transformers import Trainer, TrainerCallback


class KillAtStep(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class TermAtStep(TrainerCallback):
    """SIGTERM to this process at the end of `step`, as a scheduler sends it (only on `rank`, if given)."""

    def __init__(self, step: int, rank: int | None = None):
        self.step, self.rank = step, rank

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step and self.rank in (None, args.process_index):
            os.kill(os.getpid(), signal.SIGTERM)


def kill_in_the_middle_of_saving(step: int) -> None:
    """SIGKILL once the weights and optimizer of checkpoint-`step` are written, before its RNG and
    trainer state are."""
    save_rng_state = Trainer._save_rng_state

    def dying_save(self, output_dir):
        if self.state.global_step == step:
            os.kill(os.getpid(), signal.SIGKILL)
        return save_rng_state(self, output_dir)

    Trainer._save_rng_state = dying_save


def fail_at(mode: str, step: int) -> list[TrainerCallback]:
    """The callbacks for `mode` (none, step, save, term, term@RANK) at `step`."""
    if mode == "none":
        return []
    if mode == "step":
        return [KillAtStep(step)]
    if mode == "save":
        kill_in_the_middle_of_saving(step)
        return []
    if mode.startswith("term"):
        rank = int(mode.split("@")[1]) if "@" in mode else None
        return [TermAtStep(step, rank)]
    raise ValueError(f"unknown fault mode {mode!r}")
