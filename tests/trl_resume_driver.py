"""Runs a TRL-trainer stage (sft, reward, dpo, grpo) like its recipe, but fails at a chosen point:

    python trl_resume_driver.py STAGE MODE N --config <yaml> [recipe flags…]

MODE is none, step (SIGKILL at the end of step N), save (SIGKILL in the middle of saving
checkpoint-N) or term (SIGTERM at the end of step N); see faults_driver.py. Every optimizer step
appends {step, loss, batch} to `<output_dir>/step_trace.jsonl`: the loss `Trainer.training_step`
returns and a hash of every tensor of the batch (the stages' collators name their columns
differently; all of them are hashed; GRPO's batch is hashed after it sampled its replies). A
resumed run appends the steps after its checkpoint again.
"""

import hashlib
import json
import os
import signal
import sys
from pathlib import Path

import torch
from transformers import Trainer

sys.path.insert(0, str(Path(__file__).parent))
from faults_driver import fail_at  # noqa: E402

from hfllm.configs import parse_args  # noqa: E402
from hfllm.errors import exit_on_error  # noqa: E402
from hfllm.pipeline import STAGES, execute_stage  # noqa: E402

TRACE = "step_trace.jsonl"
stage, mode, step, rest = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
training_step = Trainer.training_step


def batch_digest(inputs: dict) -> str:
    digest = hashlib.sha256()
    for key in sorted(inputs):
        if isinstance(inputs[key], torch.Tensor):
            digest.update(key.encode())
            digest.update(inputs[key].cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def traced_training_step(self, model, inputs, num_items_in_batch=None):
    loss = training_step(self, model, inputs, num_items_in_batch)
    prepared = getattr(self, "_traced_batch", None)  # GRPO: the prompts with their sampled replies
    row = {"step": self.state.global_step + 1, "loss": float(loss), "batch": prepared or batch_digest(inputs)}
    with (Path(self.args.output_dir) / TRACE).open("a") as f:
        f.write(json.dumps(row) + "\n")
    return loss


def trace_prepared_inputs(trainer_class) -> None:
    """GRPO generates its batch inside `_prepare_inputs`: hash what it returns (replies included)."""
    prepare = trainer_class._prepare_inputs

    def traced(self, batch):
        prepared = prepare(self, batch)
        self._traced_batch = batch_digest(prepared)
        return prepared

    trainer_class._prepare_inputs = traced


@exit_on_error
def main():
    spec = STAGES[stage]
    dataclass_types, _ = spec.load()
    args = parse_args(dataclass_types, rest)
    Trainer.training_step = traced_training_step
    if stage == "grpo":
        from trl import GRPOTrainer

        trace_prepared_inputs(GRPOTrainer)
    execute_stage(spec, args, extra={"callbacks": fail_at(mode, step)})


if __name__ == "__main__":
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL and os.environ.get("OMP_NUM_THREADS") == "1"
    main()
