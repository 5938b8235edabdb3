"""PPO stage: the SFT policy against a reward model with a KL penalty to the reference — hfllm's
PPOTrainer, TRL 1.12's fields and defaults (TRL deleted its own after 1.12.0).

Usage:
    accelerate launch recipes/ppo.py --config recipes/configs/demo/ppo.yaml
    python recipes/ppo.py --dataset_name prompts.jsonl --sft_model_path runs/demo/sft \
        --reward_model_path runs/demo/reward --output_dir runs/mine/ppo

Re-running the same command after a kill resumes at the next PPO update with the same rollouts.
"""

from hfllm.alignment.ppo import ModelConfig, PPOConfig, PPOScriptArguments
from hfllm.configs import parse_args
from hfllm.errors import exit_on_error
from hfllm.pipeline import STAGES, execute_stage


def main(script_args: PPOScriptArguments, ppo_config: PPOConfig, model_args: ModelConfig) -> None:
    manifest = execute_stage(STAGES["ppo"], (script_args, ppo_config, model_args))
    m = manifest["metrics"]
    print(f"PPO: {m.get('updates')} updates, saved to {ppo_config.output_dir}")


@exit_on_error
def cli(args=None) -> None:
    main(*parse_args((PPOScriptArguments, PPOConfig, ModelConfig), args))


if __name__ == "__main__":
    cli()
