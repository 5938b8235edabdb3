"""SFT stage (TRL's SFTTrainer).

Usage:
    python recipes/sft.py --config recipes/configs/demo/sft.yaml
    accelerate launch recipes/sft.py --config recipes/configs/demo/sft.yaml --use_peft --lora_r 16

Re-running the same command after a kill resumes from the newest complete checkpoint.
"""

from trl import ModelConfig, SFTConfig

from hfllm.alignment.sft import SFTScriptArguments
from hfllm.configs import parse_args
from hfllm.errors import exit_on_error
from hfllm.pipeline import STAGES, execute_stage


def main(script_args: SFTScriptArguments, training_args: SFTConfig, model_args: ModelConfig) -> None:
    manifest = execute_stage(STAGES["sft"], (script_args, training_args, model_args))
    m = manifest["metrics"]
    print(f"SFT model ({m['steps']} steps) saved to {training_args.output_dir}")


@exit_on_error
def cli(args=None) -> None:
    main(*parse_args((SFTScriptArguments, SFTConfig, ModelConfig), args))


if __name__ == "__main__":
    cli()
