"""Reward-model stage (TRL's RewardTrainer).

Usage:
    python recipes/reward.py --config recipes/configs/demo/reward.yaml
    accelerate launch recipes/reward.py --config recipes/configs/demo/reward.yaml --use_peft --lora_r 16

Re-running the same command after a kill resumes from the newest complete checkpoint.
"""

from trl import ModelConfig, RewardConfig

from hfllm.alignment.reward import RewardScriptArguments
from hfllm.configs import parse_args
from hfllm.errors import exit_on_error
from hfllm.pipeline import STAGES, execute_stage


def main(script_args: RewardScriptArguments, training_args: RewardConfig, model_args: ModelConfig) -> None:
    manifest = execute_stage(STAGES["reward"], (script_args, training_args, model_args))
    m = manifest["metrics"]
    print(f"reward model saved to {training_args.output_dir}; held-out pairwise accuracy {m.get('heldout_accuracy')}")


@exit_on_error
def cli(args=None) -> None:
    main(*parse_args((RewardScriptArguments, RewardConfig, ModelConfig), args))


if __name__ == "__main__":
    cli()
