"""Data stage: the embedded offline corpus (or any dataset) → train/test splits on disk.

Usage:
    python recipes/data.py --config recipes/configs/demo/data.yaml
    python recipes/data.py --dataset_name HuggingFaceFW/fineweb-edu --dataset_config sample-10BT \
        --output_dir runs/mine/data
"""

from hfllm.configs import parse_args
from hfllm.data import DataArguments
from hfllm.errors import exit_on_error
from hfllm.pipeline import STAGES, execute_stage


def main(data_args: DataArguments) -> None:
    manifest = execute_stage(STAGES["data"], (data_args,))
    m = manifest["metrics"]
    print(f"{m['train_docs']} train / {m['test_docs']} held-out documents saved to {data_args.output_dir}")


@exit_on_error
def cli(args=None) -> None:
    main(*parse_args((DataArguments,), args))


if __name__ == "__main__":
    cli()
