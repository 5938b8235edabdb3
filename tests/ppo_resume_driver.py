"""Runs the PPO stage on the arguments in a JSON file, and SIGKILLs itself at the end of update N
(after its metrics are logged, before its checkpoint would be written):

    python ppo_resume_driver.py N args.json
"""

import json
import os
import signal
import sys
from pathlib import Path

from transformers import TrainerCallback

from hfllm.alignment.ppo import run_ppo_stage
from hfllm.report import Section, StageContext

sys.path.insert(0, str(Path(__file__).parent))
import ppo_models  # noqa: E402

kill_at, spec = int(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text())


class KillAtUpdate(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)


paths = {k: Path(v) for k, v in spec["paths"].items()}
args = ppo_models.stage_args(paths, Path(spec["prompts"]), Path(spec["output_dir"]), **spec.get("overrides", {}))
context = StageContext(entry_id="ppo", run_dir=Path(spec["output_dir"]).parent, section=Section("ppo", "PPO"))
run_ppo_stage(*args, context=context, callbacks=[KillAtUpdate()])
