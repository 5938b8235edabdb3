"""Pretraining throughput: hfllm's recipe against the Trainer scripts a user writes first.

Same model (Llama, hidden 256, 4 layers, 4 heads, seq 256, the corpus's own 8k BPE), same
corpus (the embedded one), same optimizer hyper-parameters, one process, one after another:

  a  plain   — one document per example, truncated/padded to max_length, fp32, `Trainer` defaults
  b  packed  — documents packed into full blocks (no padding), fp32
  c  hfllm   — the recipe's defaults on this machine: packed, precision auto (bf16 where the
               hardware multiplies bf16), fused AdamW, the loss computed in chunks (hfllm.loss),
               and on the CPU freed host memory kept for the next step (hfllm.memory)
  d  hfllm+compile — c with `torch_compile=True` (compile time excluded: warm-up steps)
  e  hfllm+compile max-autotune — d with `torch_compile_mode="max-autotune-no-cudagraphs"`

c–e use eager attention on the CPU, as the CPU profiles do: at seq 256 it measured faster than the
CPU SDPA kernel (12.7k vs 11.4k tok/s compiled); on a GPU they use SDPA. `--attn` sets c–e's
attention instead, e.g. hfllm's `blocked_causal` (hfllm.attention) for longer sequences on the CPU.
a and b keep the library default (SDPA).

Throughput is real (non-pad) tokens per second after warm-up steps: the best window of `--window`
timed steps (the median window printed beside it). Best, like the ceiling's best of 5, because
the machine's cores are shared and a neighbour's burst slows whichever window it lands in.
Variants run in the order a–e: the recipe's host-memory setting lasts for the rest of the
process, so the baselines run before it.
Model FLOP/s uses the PaLM formula (hfllm.modeling.flops_per_token): 6·N + 12·L·d·T per token,
N = matmul weights incl. the output projection, T = seq; it is printed as a fraction of this
machine's measured matmul ceiling in the run's precision (a large square matmul, best of 5).
The ceiling is measured between the timed windows (outside their time), and each window's
FLOP/s is divided by the higher of the ceilings right before and right after it; the fraction
printed is the median window's (the best beside it). Why: the shared cores' speed drifts by
10–20 % over minutes, and a ceiling taken once per variant credited or blamed each run for the
drift (the same recipe read 62–77 % across one afternoon).

`--profile N` runs N more steps of each variant under torch.profiler (after the timed windows, not
in them) and splits the step: the time in matmul kernels (aten mm/addmm/bmm/baddbmm, FLOPs as
torch's profiler counts them; attention inside an SDPA kernel is not among them) against everything else,
and the matmuls' own FLOP/s as a fraction of the ceiling probed right after. The fraction of the
ceiling is about (matmul share of the step) × (matmuls' fraction of the ceiling where they run)
× (model FLOPs / matmul FLOPs), which says which of the two a goal needs moved. Both times are
taken under the profiler, so the share is its view of the step (recording adds a few %).

Usage:  python benchmarks/pretrain_throughput.py [--steps 40] [--warmup 8] [--only a,c,d] [--profile 4]
        python benchmarks/pretrain_throughput.py --model 110m --seq 1024 --batch 2 --attn blocked_causal --only d
        python benchmarks/pretrain_throughput.py --model 110m --seq 1024 --batch 16   # on a GPU,
        beside ../shared/anchors/gpu_pretrain_anchor.py (same Llama 12×768 shape, seq 1024)
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from transformers import DataCollatorForLanguageModeling, Trainer, TrainerCallback

from hfllm import corpus
from hfllm.loss import use_chunked_loss_unless_liger
from hfllm.memory import keep_freed_memory_on_cpu
from hfllm.modeling import flops_per_token
from hfllm.planner import GPU_PEAK_TFLOPS
from hfllm.precision import auto_precision
from hfllm.pretrain import PretrainConfig, PretrainModelArguments, build_model, collate_blocks, pack_documents
from hfllm.tokenizer import train_bpe

MODELS = {  # name: (layers, width, heads, vocab)
    "small": (4, 256, 4, 8192),
    "110m": (12, 768, 12, 32000),
}


def matmul_ceiling(dtype: torch.dtype, reps: int = 10) -> float:
    """Best-of-5 FLOP/s of a large square matmul (2048 on CPU, 8192 on GPU, as the anchors do),
    written into one preallocated output so that allocating it is not part of the time."""
    cuda = torch.cuda.is_available()
    n = 8192 if cuda else 2048
    a = torch.randn(n, n, dtype=dtype, device="cuda" if cuda else "cpu")
    b, out = torch.randn_like(a), torch.empty_like(a)
    best = float("inf")
    for _ in range(5):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.matmul(a, b, out=out)
        if cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 * reps / best


def spec_peak() -> float | None:
    """The GPU's dense bf16 peak from hfllm's planner table (FLOP/s), matched by name."""
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((tflops * 1e12 for gpu, tflops in GPU_PEAK_TFLOPS.items() if gpu in name), None)


def synced_now() -> float:
    """perf_counter once the GPU's queued kernels are done (on a GPU a step's end is its kernels' end)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


class Clock(TrainerCallback):
    """Times windows of `window` steps after `warmup` steps and probes the matmul ceiling between
    windows (`probe`, not timed), so that each window's FLOP/s is compared with the ceiling the
    machine had within seconds of it: the shared cores' speed drifts over minutes."""

    def __init__(self, warmup: int, window: int, probe=None):
        self.warmup, self.window, self.probe = warmup, window, probe
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.ceilings: list[float] = []  # probe before window i: ceilings[i]; after it: ceilings[i + 1]

    def _mark_start(self):
        if self.probe is not None:
            self.ceilings.append(self.probe())
        self.starts.append(time.perf_counter())

    def on_step_end(self, args, state, control, **kwargs):
        now = synced_now()
        done = state.global_step - self.warmup
        if done == 0:
            self._mark_start()
        elif done > 0 and done % self.window == 0:
            self.ends.append(now)
            self._mark_start()


MATMULS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"}


def matmul_totals(events, device: bool) -> tuple[float, float]:
    """(seconds, FLOPs) of the matmul kernels in a `with_flops` profile's `key_averages()` (torch
    counts 2 FLOPs per multiply-add from the shapes); self time, so a matmul inside another op
    is counted once."""
    seconds = flops = 0.0
    for e in events:
        if e.key in MATMULS:
            seconds += (e.self_device_time_total if device else e.self_cpu_time_total) / 1e6
            flops += e.flops
    return seconds, flops


class Profile(TrainerCallback):
    """Profiles the `steps` training steps after step `start` (with torch's FLOP counts) and keeps
    their wall time; synchronizes on a GPU so both ends are the kernels' ends."""

    def __init__(self, start: int, steps: int):
        self.start, self.steps = start, steps
        self.prof, self.wall = None, 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.start:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self.prof = torch.profiler.profile(activities=activities, with_flops=True)
            self.prof.start()
            self.t0 = synced_now()

    def on_step_end(self, args, state, control, **kwargs):
        if self.prof is not None and state.global_step == self.start + self.steps:
            self.wall = synced_now() - self.t0
            self.prof.stop()

    def split(self) -> dict:
        """Per step: wall seconds, matmul seconds and matmul FLOPs."""
        seconds, flops = matmul_totals(self.prof.key_averages(), torch.cuda.is_available())
        return {"step_s": self.wall / self.steps, "matmul_s": seconds / self.steps, "matmul_flops": flops / self.steps}


class CountingTrainer(Trainer):
    real_tokens: list[int]

    def training_step(self, model, inputs, num_items_in_batch=None):
        mask = inputs.get("attention_mask")
        self.real_tokens.append(int(mask.sum()) if mask is not None else inputs["input_ids"].numel())
        return super().training_step(model, inputs, num_items_in_batch)


def run(name, train, collator, tokenizer, precision, optim, compile_, attn, opts, out: Path, recipe: bool,
        ceiling_dtype: torch.dtype):
    torch.manual_seed(0)
    layers, width, heads, _ = MODELS[opts.model]
    args = PretrainConfig(
        output_dir=str(out / name), max_length=opts.seq, per_device_train_batch_size=opts.batch,
        max_steps=opts.warmup + opts.steps + opts.profile, learning_rate=1e-3, precision=precision, optim=optim,
        torch_compile=bool(compile_), torch_compile_mode=compile_ if isinstance(compile_, str) else None,
        save_strategy="no", logging_steps=10**6, report_to="none",
        disable_tqdm=True, dataloader_num_workers=0, seed=0,
    )
    model_args = PretrainModelArguments(num_layers=layers, hidden_size=width, num_heads=heads,
                                        attn_implementation=attn)
    model = build_model(model_args, tokenizer, opts.seq)
    if recipe:  # what the pretrain stage does to the model it built, and on the CPU to the process
        use_chunked_loss_unless_liger(model, args)
        keep_freed_memory_on_cpu(args)
    clock = Clock(opts.warmup, opts.window, probe=lambda: matmul_ceiling(ceiling_dtype))
    callbacks = [clock]
    if opts.profile:
        profile = Profile(start=opts.warmup + opts.steps, steps=opts.profile)
        callbacks.append(profile)
    trainer = CountingTrainer(model=model, args=args, train_dataset=train, data_collator=collator, callbacks=callbacks)
    trainer.real_tokens = []
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    windows = []  # (tokens/s, ceiling FLOP/s around it) of each timed window
    timed = zip(clock.starts[:opts.steps // opts.window], clock.ends)  # not the profiled steps
    for i, (start, end) in enumerate(timed):
        first = opts.warmup + i * opts.window
        tokens = sum(trainer.real_tokens[first:first + opts.window])
        windows.append((tokens / (end - start), max(clock.ceilings[i], clock.ceilings[i + 1])))
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    split = None
    if opts.profile:
        split = profile.split() | {"ceiling_flops": matmul_ceiling(ceiling_dtype),
                                   "tokens": sum(trainer.real_tokens[-opts.profile:]) / opts.profile}
    return windows, model.config, peak, split


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--window", type=int, default=10, help="timed steps per measurement window")
    parser.add_argument("--only", default="a,b,c,d,e")
    parser.add_argument("--model", choices=list(MODELS), default="small")
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--attn", help="attn_implementation of c–e (default: sdpa on a GPU, eager on the CPU)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="profile N more steps per variant: matmul time and FLOP/s against the rest of the step")
    parser.add_argument("--json", help="also write the results here")
    opts = parser.parse_args()

    rows = list(corpus.iter_documents(["pydoc_topics", "stdlib_docstrings", "package_metadata"],
                                      max_bytes_per_source=1_000_000))
    texts = [r["text"] for r in rows]
    tokenizer = train_bpe(iter(texts), vocab_size=MODELS[opts.model][3])
    import datasets

    docs = datasets.Dataset.from_dict({"text": texts})
    packed = pack_documents(docs, tokenizer, "text", opts.seq)
    # The first script: each document one example, cut or padded to max_length, pad masked in labels.
    plain = docs.map(lambda b: tokenizer(b["text"], truncation=True, max_length=opts.seq, padding="max_length"),
                     batched=True, remove_columns=["text"])
    plain_collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)

    auto = auto_precision()
    ceilings = {"fp32": matmul_ceiling(torch.float32), "bf16": matmul_ceiling(torch.bfloat16)}
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True  # what a GPU user's fp32 gets, as in the anchors
    print(f"device: {'cuda ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}; precision auto → {auto}")
    print(f"matmul ceiling: fp32 {ceilings['fp32'] / 1e9:.1f} GFLOP/s, bf16 {ceilings['bf16'] / 1e9:.1f} GFLOP/s")
    real = sum(sum(m) for m in plain["attention_mask"]) / (len(plain) * opts.seq)
    print(f"plain script: {real:.1%} of its tokens are real")

    recipe_attn = opts.attn or ("sdpa" if torch.cuda.is_available() else "eager")
    variants = {
        "a": ("plain fp32 (pad to max_length)", plain, plain_collator, "fp32", "adamw_torch", False, "sdpa"),
        "b": ("packed fp32", packed, collate_blocks, "fp32", "adamw_torch", False, "sdpa"),
        "c": (f"hfllm recipe ({auto}, fused AdamW, {recipe_attn})", packed, collate_blocks, auto,
              "adamw_torch_fused", False, recipe_attn),
        "d": ("hfllm recipe + torch.compile", packed, collate_blocks, auto, "adamw_torch_fused", True, recipe_attn),
        "e": ("hfllm recipe + compile max-autotune", packed, collate_blocks, auto, "adamw_torch_fused",
              "max-autotune-no-cudagraphs", recipe_attn),
    }
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key in sorted(opts.only.split(",")):  # baselines first (see the module doc)
            label, ds, collator, precision, optim, compile_, attn = variants[key]
            chosen = auto if precision == "auto" else precision  # the run's matmul precision
            dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[chosen]
            t0 = time.perf_counter()
            windows, config, peak, split = run(key, ds, collator, tokenizer, precision, optim, compile_, attn, opts,
                                        Path(tmp), recipe=key not in ("a", "b"), ceiling_dtype=dtype)
            wall = time.perf_counter() - t0
            per_token = flops_per_token(config, opts.seq)
            rates = sorted(rate for rate, _ in windows)
            fractions = sorted(rate * per_token / ceiling for rate, ceiling in windows)
            tps, median = rates[-1], rates[len(rates) // 2]
            flops, fraction = tps * per_token, fractions[len(fractions) // 2]
            lo, hi = min(c for _, c in windows), max(c for _, c in windows)
            results[key] = {"label": label, "tokens_per_s": tps, "tokens_per_s_median": median, "model_flops": flops,
                            "fraction_of_ceiling": fraction, "fraction_of_ceiling_best": fractions[-1],
                            "windows": [{"tokens_per_s": r, "ceiling_flops": c} for r, c in windows],
                            "peak_memory_gib": peak, "wall_s": wall}
            spec = spec_peak()
            if spec:  # on a GPU also as MFU against the card's dense bf16 spec, as the anchors print
                results[key]["mfu_spec"] = flops / spec
            print(f"{key}  {label:<40} {tps:>9.0f} real tok/s (median {median:.0f})  {flops / 1e9:6.1f} GFLOP/s  "
                  f"{fraction:5.1%} of the {chosen} ceiling (median window; best {fractions[-1]:.1%}; "
                  f"ceiling {lo / 1e9:.0f}–{hi / 1e9:.0f})"
                  + (f", {flops / spec:5.1%} of the {spec / 1e12:.0f} TFLOP/s spec" if spec else "")
                  + (f"  peak {peak:.1f} GiB" if peak is not None else "") + f"  (run {wall:.0f} s)", flush=True)
            if split:
                results[key]["profile"] = split
                share = split["matmul_s"] / split["step_s"]
                efficiency = split["matmul_flops"] / split["matmul_s"] / split["ceiling_flops"]
                print(f"   profiled: matmuls {split['matmul_s'] * 1e3:.0f} of {split['step_s'] * 1e3:.0f} ms a step "
                      f"({share:.0%}), at {efficiency:.0%} of the ceiling where they run "
                      f"({split['ceiling_flops'] / 1e9:.0f} GFLOP/s); "
                      f"the rest {(split['step_s'] - split['matmul_s']) * 1e3:.0f} ms; model/matmul FLOPs "
                      f"{per_token * split['tokens'] / split['matmul_flops']:.2f}", flush=True)
    if "a" in results:
        for key, r in results.items():
            r["ratio_vs_plain"] = r["tokens_per_s"] / results["a"]["tokens_per_s"]
            print(f"ratio {key}/a = {r['ratio_vs_plain']:.2f}×")
    if opts.json:
        Path(opts.json).write_text(json.dumps({"ceilings": ceilings, "results": results}, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
