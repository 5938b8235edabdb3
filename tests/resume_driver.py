"""Runs the pretraining stage like recipes/pretrain.py, but fails at a chosen point:

    python resume_driver.py step N <recipe args…>   — SIGKILLed right after optimizer step N
    python resume_driver.py save N <recipe args…>   — SIGKILLed in the middle of saving checkpoint-N
                                                      (model and optimizer written, trainer_state not)
    python resume_driver.py term N <recipe args…>   — sent SIGTERM (pre-emption) at the end of step N
    python resume_driver.py term@R N <recipe args…> — the same, only to the process of rank R

The kill and the signal come from a callback that runs before the stage's own callbacks. Every
process also appends the hash of each block it trains on to `<output_dir>/blocks_rank<R>.jsonl`
(the stage's own trace is the main process's), so that the ranks' batches can be put together.
"""

import json
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from faults_driver import fail_at  # noqa: E402

from hfllm.configs import parse_args  # noqa: E402
from hfllm.errors import exit_on_error  # noqa: E402
from hfllm.pipeline import STAGES, execute_stage  # noqa: E402
from hfllm.pretrain import (  # noqa: E402
    PretrainConfig,
    PretrainModelArguments,
    PretrainScriptArguments,
    PretrainTrainer,
    batch_hash,
)

mode, step, rest = sys.argv[1], int(sys.argv[2]), sys.argv[3:]


training_step = PretrainTrainer.training_step


def traced_training_step(self, model, inputs, num_items_in_batch=None):
    row = {"step": self.state.global_step + 1, "blocks": [batch_hash(ids) for ids in inputs["input_ids"]]}
    with (Path(self.args.output_dir) / f"blocks_rank{self.args.process_index}.jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")
    return training_step(self, model, inputs, num_items_in_batch)


@exit_on_error
def main():
    PretrainTrainer.training_step = traced_training_step
    args = parse_args((PretrainScriptArguments, PretrainConfig, PretrainModelArguments), rest)
    execute_stage(STAGES["pretrain"], args, extra={"callbacks": fail_at(mode, step)})


if __name__ == "__main__":
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL and os.environ.get("OMP_NUM_THREADS") == "1"
    main()
