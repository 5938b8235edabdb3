"""DPO stage (TRL's DPOTrainer).

Usage:
    python recipes/dpo.py --config recipes/configs/demo/dpo.yaml
    accelerate launch recipes/dpo.py --config recipes/configs/demo/dpo.yaml --use_peft --lora_r 16

Re-running the same command after a kill resumes from the newest complete checkpoint.
"""

from trl import DPOConfig, ModelConfig

from hfllm.alignment.dpo import DPOScriptArguments
from hfllm.configs import parse_args
from hfllm.errors import exit_on_error
from hfllm.pipeline import STAGES, execute_stage


def main(script_args: DPOScriptArguments, training_args: DPOConfig, model_args: ModelConfig) -> None:
    manifest = execute_stage(STAGES["dpo"], (script_args, training_args, model_args))
    m = manifest["metrics"]
    print(f"DPO model ({m['steps']} steps) saved to {training_args.output_dir}")


@exit_on_error
def cli(args=None) -> None:
    main(*parse_args((DPOScriptArguments, DPOConfig, ModelConfig), args))


if __name__ == "__main__":
    cli()
