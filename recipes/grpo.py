"""GRPO stage (TRL's GRPOTrainer) beside PPO: the same prompts, the reward model and/or the task verifier.

Usage:
    python recipes/grpo.py --config recipes/configs/tiny/grpo.yaml
    accelerate launch recipes/grpo.py --config recipes/configs/tiny/grpo.yaml --num_generations 8

Re-running the same command after a kill resumes from the newest complete checkpoint.
"""

from trl import GRPOConfig, ModelConfig

from hfllm.alignment.grpo import GRPOScriptArguments
from hfllm.configs import parse_args
from hfllm.errors import exit_on_error
from hfllm.pipeline import STAGES, execute_stage


def main(script_args: GRPOScriptArguments, training_args: GRPOConfig, model_args: ModelConfig) -> None:
    manifest = execute_stage(STAGES["grpo"], (script_args, training_args, model_args))
    m = manifest["metrics"]
    print(f"GRPO model ({m['steps']} steps, reward {m['first_reward']} → {m['reward']}) saved to "
          f"{training_args.output_dir}")


@exit_on_error
def cli(args=None) -> None:
    main(*parse_args((GRPOScriptArguments, GRPOConfig, ModelConfig), args))


if __name__ == "__main__":
    cli()
