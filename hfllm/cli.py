"""`hfllm run <pipeline.yaml>`, `hfllm eval <stage dir> …`, `hfllm plan` and `hfllm push`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hfllm.errors import HfllmError


def _plan(args: argparse.Namespace) -> None:
    from hfllm import planner

    if args.table:
        print(f"{'params':>8} {'tokens':>9} {'FLOPs (6ND)':>12}")
        for n, d, flops in planner.seed_table():
            print(f"{n:>8.3g} {d:>9.3g} {flops:>12.3g}")
        return
    if args.params is None and args.layers is None:
        raise HfllmError("give --params N (e.g. 124M, 70B) or a shape (--layers --width --heads --seq --vocab)",
                         where="hfllm plan")
    try:
        if args.layers is not None:
            from hfllm.modeling import count_parameters, llama_config

            shape = [args.layers, args.width, args.heads, args.seq, args.vocab]
            if None in shape:
                raise ValueError("a shape needs all of --layers --width --heads --seq --vocab")
            config = llama_config(*shape)
            params = float(count_parameters(config))
            print(f"Llama config {args.layers}L × {args.width}d × {args.heads}h, seq {args.seq}, vocab {args.vocab}: "
                  f"{params:,.0f} parameters")
        else:
            params = planner.parse_count(args.params)
        tokens = planner.parse_count(args.tokens) if args.tokens is not None else None
        p = planner.plan(params, tokens, gpu=args.gpu, num_gpus=args.num_gpus, mfu=args.mfu,
                         price_per_gpu_hour=args.price)
    except ValueError as err:
        raise HfllmError(str(err), where="hfllm plan") from None
    print("\n".join(p.lines()))


def _run(args: argparse.Namespace) -> None:
    from hfllm.pipeline import run_pipeline

    run_pipeline(args.pipeline, run_dir=args.run_dir, only=args.only, start_from=args.start_from, force=args.force)


def _eval(args: argparse.Namespace) -> None:
    """The evaluation stage on stage directories outside a pipeline: the held-out text and the
    MMLU-format task of the run they belong to (their parent directory) when it has them."""
    from hfllm.errors import ConfigError
    from hfllm.evaluation.stage import STAGES_TABLE, TASKS_DIR, EvalArguments
    from hfllm.pipeline import STAGES, execute_stage

    run_dir = Path(args.stage_dirs[0]).parent
    dataset = args.dataset or (str(run_dir / "data") if (run_dir / "data" / "dataset_dict.json").exists() else None)
    output_dir = args.output_dir or str(run_dir / "eval_cli")
    try:
        eval_args = EvalArguments(
            model_name_or_path=args.stage_dirs[0], models=list(args.stage_dirs), dataset_name=dataset,
            max_eval_docs=args.max_eval_docs, bigram_baseline=False, lm_eval_check=False, mmlu=args.mmlu,
            mmlu_num_fewshot=args.mmlu_num_fewshot, tasks=list(args.tasks), num_fewshot=args.num_fewshot,
            limit=args.limit, per_device_eval_batch_size=args.batch_size, apply_chat_template=args.apply_chat_template,
            tasks_dir=args.tasks_dir or (str(run_dir / TASKS_DIR) if (run_dir / TASKS_DIR).is_dir() else None),
            output_dir=output_dir)
    except ValueError as err:
        raise ConfigError(str(err), where="hfllm eval") from None
    execute_stage(STAGES["eval"], (eval_args,))
    table = json.loads((Path(output_dir) / STAGES_TABLE).read_text())
    for entry, tasks in table.items():
        cells = []
        for task, values in tasks.items():
            metric = next(k for k in values if "stderr" not in k)
            cells.append(f"{task} {metric} {values[metric]:.4g}")
        print(f"{entry}: " + ", ".join(cells))
    print(f"results, per-item samples and the report section: {output_dir}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hfllm",
                                     description="Build a language model end to end with Hugging Face libraries.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a pipeline file (entries in order, unchanged ones skipped)")
    run.add_argument("pipeline", help="e.g. recipes/configs/demo/pipeline.yaml")
    run.add_argument("--only", metavar="ID", help="run just this entry")
    run.add_argument("--from", dest="start_from", metavar="ID", help="run this entry and the ones after it")
    run.add_argument("--run_dir", help="write entries here instead of runs/<name>")
    run.add_argument("--force", action="store_true", help="re-run selected entries even if unchanged")
    run.set_defaults(func=_run)

    ev = sub.add_parser("eval", help="evaluate stage directories: held-out bits per byte, MMLU three ways, "
                                     "lm-eval tasks; one table across them")
    ev.add_argument("stage_dirs", nargs="+", metavar="stage_dir", help="e.g. runs/demo/pretrain runs/demo/sft")
    ev.add_argument("--tasks", nargs="*", default=[], help="lm-eval tasks (the run's tasks/ directory included)")
    ev.add_argument("--mmlu", action="store_true", help="hfllm's MMLU-format task scored three ways")
    ev.add_argument("--mmlu_num_fewshot", type=int, default=5)
    ev.add_argument("--num_fewshot", type=int, help="few-shot examples for --tasks (default: each task's own)")
    ev.add_argument("--limit", type=int, help="at most this many items per task (and MMLU subject)")
    ev.add_argument("--dataset", help="held-out text for bits per byte (default: the run's data/ when there is one)")
    ev.add_argument("--max_eval_docs", type=int, help="score at most this many held-out documents")
    ev.add_argument("--batch_size", type=int, default=8)
    ev.add_argument("--apply_chat_template", default="auto", choices=("auto", "always", "never"),
                    help="auto: for models whose manifest names a chat stage (sft, dpo, ppo)")
    ev.add_argument("--tasks_dir", help="lm-eval task directory (default: the run's tasks/)")
    ev.add_argument("--output_dir", help="where results go (default: <run>/eval_cli)")
    ev.set_defaults(func=_eval)

    plan = sub.add_parser("plan", help="tokens, FLOPs, GPU-hours, days and cost of a training run")
    plan.add_argument("--params", help="parameters, e.g. 124M, 7B, 405B")
    plan.add_argument("--tokens", help="training tokens (default: 20 per parameter)")
    plan.add_argument("--layers", type=int, help="or give a Llama shape: layers …")
    plan.add_argument("--width", type=int)
    plan.add_argument("--heads", type=int)
    plan.add_argument("--seq", type=int)
    plan.add_argument("--vocab", type=int)
    plan.add_argument("--gpu", default="H100", help="H100, H200, B200, A100, L40S, A10G, V100")
    plan.add_argument("--num_gpus", type=int, default=1)
    plan.add_argument("--mfu", type=float, default=0.4, help="model FLOPs utilisation, 0–1")
    plan.add_argument("--price", type=float, default=2.0, help="dollars per GPU-hour")
    plan.add_argument("--table", action="store_true", help="print the seed's reference runs")
    plan.set_defaults(func=_plan)

    from hfllm.hub import add_push_command

    add_push_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except HfllmError as err:
        print(f"hfllm: error: {err.one_line()}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
