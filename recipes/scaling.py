"""Scaling laws on your own data: an IsoFLOP sweep through the pretraining stage, Chinchilla's two
fits with bootstrap intervals, and a larger run predicted by the fit, trained, and compared.

Usage:
    python recipes/scaling.py --config recipes/configs/scaling/scaling.yaml
    hfllm run recipes/configs/scaling/pipeline.yaml      # data → tokenizer → this (what `make scaling` runs)

Running the same command again skips finished runs and resumes a killed one from its checkpoint.
"""

from hfllm.configs import parse_args
from hfllm.errors import exit_on_error
from hfllm.pipeline import STAGES, execute_stage
from hfllm.scaling.sweep import ScalingArguments


def main(args: ScalingArguments) -> None:
    manifest = execute_stage(STAGES["scaling"], (args,))
    m = manifest["metrics"]
    print(f"L(N, D) = {m['E']:.4g} + {m['A']:.4g}/N^{m['alpha']:.4g} + {m['B']:.4g}/D^{m['beta']:.4g}; "
          f"prediction {m['prediction_run']}: predicted {m['predicted_loss']:.4f}, measured {m['measured_loss']:.4f}; "
          f"law and intervals: {args.output_dir}/law.json")


@exit_on_error
def cli(args=None) -> None:
    main(*parse_args((ScalingArguments,), args))


if __name__ == "__main__":
    cli()
