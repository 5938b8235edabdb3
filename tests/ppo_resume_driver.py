"""Runs the PPO stage on the arguments in a JSON file, optionally failing at update N, and appends each
update's rollout batch hash to `<output_dir>/batch_trace.jsonl`:

    python ppo_resume_driver.py MODE N args.json

It runs the stage as a recipe does (`execute_stage`: manifest and report in the output directory).

MODE is none, step (SIGKILL at the end of update N, after its metrics are logged, before its
checkpoint would be written), save (SIGKILL in the middle of saving checkpoint-N) or term (SIGTERM
at the end of update N); see faults_driver.py.
"""

import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import ppo_models  # noqa: E402
from faults_driver import fail_at  # noqa: E402

from hfllm.alignment.ppo import PPOTrainer  # noqa: E402
from hfllm.errors import exit_on_error  # noqa: E402
from hfllm.pipeline import STAGES, execute_stage  # noqa: E402

BATCH_TRACE = "batch_trace.jsonl"

mode, step, spec = sys.argv[1], int(sys.argv[2]), json.loads(Path(sys.argv[3]).read_text())
output_dir = Path(spec["output_dir"])
rollout = PPOTrainer.rollout


def traced_rollout(self, update):
    """The rollout, and a hash of its prompts and replies (the update's batch)."""
    r = rollout(self, update)
    digest = hashlib.sha256(r.query_responses.cpu().numpy().astype("int64").tobytes()).hexdigest()[:16]
    with (output_dir / BATCH_TRACE).open("a") as f:
        f.write(json.dumps({"step": update, "batch": digest}) + "\n")
    return r


@exit_on_error
def main():
    PPOTrainer.rollout = traced_rollout
    paths = {k: Path(v) for k, v in spec["paths"].items()}
    args = ppo_models.stage_args(paths, Path(spec["prompts"]), output_dir, **spec.get("overrides", {}))
    output_dir.mkdir(parents=True, exist_ok=True)
    execute_stage(STAGES["ppo"], args, extra={"callbacks": fail_at(mode, step)})


if __name__ == "__main__":
    main()
