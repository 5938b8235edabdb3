"""Pretraining stage: pack documents into blocks and train a Llama-style model with `Trainer`.

Usage:
    python recipes/pretrain.py --config recipes/configs/demo/pretrain.yaml
    accelerate launch --config_file recipes/accelerate/ddp.yaml recipes/pretrain.py \
        --config recipes/configs/llama-125m/pretrain.yaml

Re-running the same command after a kill resumes from the newest complete checkpoint.
"""

from hfllm.configs import parse_args
from hfllm.errors import exit_on_error
from hfllm.pipeline import STAGES, execute_stage
from hfllm.pretrain import PretrainConfig, PretrainModelArguments, PretrainScriptArguments


def main(script_args: PretrainScriptArguments, training_args: PretrainConfig,
         model_args: PretrainModelArguments) -> None:
    manifest = execute_stage(STAGES["pretrain"], (script_args, training_args, model_args))
    m = manifest["metrics"]
    print(f"{m['parameters']:,}-parameter model trained for {m['steps']} steps, saved to {training_args.output_dir}")


@exit_on_error
def cli(args=None) -> None:
    main(*parse_args((PretrainScriptArguments, PretrainConfig, PretrainModelArguments), args))


if __name__ == "__main__":
    cli()
