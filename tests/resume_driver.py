"""Runs the pretraining stage like recipes/pretrain.py, but SIGKILLs itself at a chosen point.

    python resume_driver.py step N <recipe args…>   — killed right after optimizer step N
    python resume_driver.py save N <recipe args…>   — killed in the middle of saving checkpoint-N
                                                      (model and optimizer written, trainer_state not)
"""

import os
import signal
import sys

from transformers import Trainer, TrainerCallback

from hfllm.configs import parse_args
from hfllm.pipeline import STAGES, execute_stage
from hfllm.pretrain import PretrainConfig, PretrainModelArguments, PretrainScriptArguments

mode, step, rest = sys.argv[1], int(sys.argv[2]), sys.argv[3:]


class KillAtStep(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == step:
            os.kill(os.getpid(), signal.SIGKILL)


callbacks = [KillAtStep()] if mode == "step" else []
if mode == "save":
    save_rng_state = Trainer._save_rng_state

    def dying_save(self, output_dir):
        if self.state.global_step == step:
            os.kill(os.getpid(), signal.SIGKILL)
        return save_rng_state(self, output_dir)

    Trainer._save_rng_state = dying_save

args = parse_args((PretrainScriptArguments, PretrainConfig, PretrainModelArguments), rest)
execute_stage(STAGES["pretrain"], args, extra={"callbacks": callbacks})
