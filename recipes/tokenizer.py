"""Tokenizer stage: train a byte-level BPE tokenizer (digits split, chat template) on a dataset.

Usage:
    python recipes/tokenizer.py --config recipes/configs/demo/tokenizer.yaml
    python recipes/tokenizer.py --dataset_name runs/demo/data --vocab_size 16384 --output_dir runs/mine/tokenizer
"""

from hfllm.configs import parse_args
from hfllm.errors import exit_on_error
from hfllm.pipeline import STAGES, execute_stage
from hfllm.tokenizer import TokenizerArguments


def main(tokenizer_args: TokenizerArguments) -> None:
    manifest = execute_stage(STAGES["tokenizer"], (tokenizer_args,))
    m = manifest["metrics"]
    print(f"{m['vocab_size']}-token tokenizer ({m['heldout_bytes_per_token']:.2f} bytes/token held out) "
          f"saved to {tokenizer_args.output_dir}")


@exit_on_error
def cli(args=None) -> None:
    main(*parse_args((TokenizerArguments,), args))


if __name__ == "__main__":
    cli()
