"""Data stage: a raw pool (the embedded offline one, a folder of HTML/WARC/JSONL, or any dataset) →
cleaned train/test/final_phase splits, report.json and quarantine.jsonl beside them.

Usage:
    python recipes/data.py --config recipes/configs/demo/data.yaml
    python recipes/data.py --dataset_name path/to/html_pages --output_dir runs/mine/data
    python recipes/data.py --dataset_name HuggingFaceFW/fineweb-edu --dataset_config sample-10BT \
        --dataset_streaming true --max_train_docs 200000 --output_dir runs/mine/data
"""

from hfllm.configs import parse_args
from hfllm.data import DataArguments
from hfllm.errors import exit_on_error
from hfllm.pipeline import STAGES, execute_stage


def main(data_args: DataArguments) -> None:
    manifest = execute_stage(STAGES["data"], (data_args,))
    m = manifest["metrics"]
    print(f"{m['raw_docs']} raw rows ({m['quarantined_docs']} quarantined) → {m['train_docs']} train / "
          f"{m['test_docs']} held-out / {m['final_phase_docs']} final-phase documents saved to {data_args.output_dir} "
          f"(per-block counts in report.json)")


@exit_on_error
def cli(args=None) -> None:
    main(*parse_args((DataArguments,), args))


if __name__ == "__main__":
    cli()
