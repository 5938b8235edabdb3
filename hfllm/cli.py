"""`hfllm run <pipeline.yaml>`, `hfllm eval <stage dir> …`, `hfllm plan`, `hfllm scaling …` and `hfllm push`."""

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
    if args.flops is not None:
        _plan_flops(args)
        return
    if args.params is None and args.layers is None:
        raise HfllmError("give --flops C (e.g. 5.76e23), --params N (e.g. 124M, 70B) or a shape "
                         "(--layers --width --heads --seq --vocab)", where="hfllm plan")
    if args.tokens is not None and args.tokens_per_param is not None:
        raise HfllmError("give --tokens or --tokens_per_param, not both", where="hfllm plan")
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
        if args.tokens_per_param is not None:
            tokens = params * _positive_ratio(args.tokens_per_param)
        p = planner.plan(params, tokens, gpu=args.gpu, num_gpus=args.num_gpus, mfu=args.mfu,
                         price_per_gpu_hour=args.price)
    except ValueError as err:
        raise HfllmError(str(err), where="hfllm plan") from None
    print("\n".join(p.lines()))
    if args.law is not None:
        law = planner.load_law(args.law)
        print(f"loss ({law.name})   {law.loss(p.params, p.tokens):.4g} nats/token  ({law.formula()})")


def _positive_ratio(ratio: float) -> float:
    if not ratio > 0:
        raise ValueError(f"--tokens_per_param must be positive, got {ratio:g}")
    return ratio


def _plan_flops(args: argparse.Namespace) -> None:
    """A FLOP budget: compute-optimal N and D under a law, beside the 20:1 rule (and the ratio
    asked for), then what the budget costs on the GPUs given."""
    from hfllm import planner

    if args.params is not None or args.tokens is not None or args.layers is not None:
        raise HfllmError("--flops sets N and D itself: leave out --params, --tokens and the shape", where="hfllm plan")
    law = planner.load_law(args.law or planner.DEFAULT_LAW)
    try:
        flops = planner.parse_count(args.flops)
        splits = planner.plan_flops(flops, law, args.tokens_per_param)
        best = splits[0]
        p = planner.plan(best.params, best.tokens, gpu=args.gpu, num_gpus=args.num_gpus, mfu=args.mfu,
                         price_per_gpu_hour=args.price)
    except ValueError as err:
        raise HfllmError(str(err), where="hfllm plan") from None
    print(f"budget            {flops:.3g} FLOPs (6 · N · D)")
    print(f"law               {law.name}: {law.formula()}  [{law.source}; N: {law.parameters}]")
    for split in splits:
        print(f"{split.label:<34} N {split.params:.3g}  D {split.tokens:.3g}  ({split.tokens / split.params:.1f} "
              f"per parameter)  loss {split.loss:.4f}")
    print("\n".join(p.lines()[3:]))  # GPU-hours, days and cost: the same for every split of one budget


def _scaling_plan(args: argparse.Namespace) -> None:
    """The sweep's runs as the stage would plan them, before anything is trained."""
    from hfllm.configs import parse_config
    from hfllm.errors import ConfigError
    from hfllm.scaling.stage import _tokenizer_vocab, batch_tokens, check_scaling_args, pretrain_args
    from hfllm.scaling.sweep import ScalingArguments, plan_sweep

    (scaling_args,) = parse_config((ScalingArguments,), args.config)
    vocab = args.vocab_size or scaling_args.vocab_size or _tokenizer_vocab(scaling_args.tokenizer_name)
    if vocab is None:
        raise ConfigError(f"the tokenizer {scaling_args.tokenizer_name} is not trained yet: give --vocab_size",
                          where=args.config)
    try:
        check_scaling_args(scaling_args)
        _, training_args, _ = pretrain_args(scaling_args)
        points = plan_sweep(scaling_args, vocab, training_args.max_length, batch_tokens(training_args))
    except HfllmError as err:
        err.where = err.where or args.config
        raise
    print(f"{'run':<18} {'shape':>6} {'N':>11} {'N w/o emb.':>11} {'D':>12} {'D/N':>6} {'steps':>6} {'6ND':>9}")
    for p in points:
        print(f"{p.id:<18} {p.shape.name:>6} {p.params:>11,} {p.shape.params_non_embedding:>11,} {p.tokens:>12,} "
              f"{p.tokens / p.params:>6.1f} {p.steps:>6} {p.flops:>9.3g}")
    print(f"sweep: {len(points)} runs, {sum(p.tokens for p in points):,} tokens, {sum(p.flops for p in points):.3g} "
          f"FLOPs; then the prediction run at {scaling_args.prediction_budget:.3g} FLOPs, sized by the fit "
          f"(vocabulary {vocab}, runs in {scaling_args.runs_dir})")


def _scaling_show(args: argparse.Namespace) -> None:
    from hfllm.errors import ConfigError
    from hfllm.planner import load_law
    from hfllm.scaling.report import summary_lines
    from hfllm.scaling.stage import LAW_FILE

    path = Path(args.law)
    path = path / LAW_FILE if path.is_dir() else path
    load_law(str(path))  # a missing or damaged file is one line
    record = json.loads(path.read_text())
    if "law" not in record:
        raise ConfigError("not a law.json written by the scaling stage", where=str(path))
    print("\n".join(summary_lines(record)))


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
    plan.add_argument("--flops", help="a training budget in FLOPs, e.g. 5.76e23: compute-optimal N and D under --law")
    plan.add_argument("--law", help="hoffmann2022, besiroglu2024 (the default with --flops) or a law.json that "
                                    "`hfllm scaling` fitted")
    plan.add_argument("--tokens_per_param", type=float,
                      help="tokens per parameter instead of 20 (e.g. 150 when inference dominates)")
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

    scaling = sub.add_parser("scaling", help="scaling laws: the sweep's plan, and a fitted law's constants")
    scaling_sub = scaling.add_subparsers(dest="scaling_command", required=True)
    sp = scaling_sub.add_parser("plan", help="the sweep's runs (shapes, N, D, steps, FLOPs) before any is trained; "
                                             "run them with `hfllm run` on a pipeline holding the scaling stage")
    sp.add_argument("config", help="e.g. recipes/configs/scaling/scaling.yaml")
    sp.add_argument("--vocab_size", type=int, help="the tokenizer's vocabulary, when it is not trained yet")
    sp.set_defaults(func=_scaling_plan)
    ss = scaling_sub.add_parser("show", help="a fitted law: constants with intervals, both fits, the prediction")
    ss.add_argument("law", help="law.json, or the scaling stage's directory (e.g. runs/scaling/scaling)")
    ss.set_defaults(func=_scaling_show)

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
