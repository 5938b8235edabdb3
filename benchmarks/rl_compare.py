"""PPO against GRPO on equal prompts and equal wall time, from one run's SFT and reward models.

    make demo                                                # sft, reward and synthetic in runs/demo
    python benchmarks/rl_compare.py --run runs/demo --seconds 180

Both start from the run's `sft` model, optimise the run's `reward` model's score with a KL penalty
of 0.05 to that SFT model, sample at T 0.7 from the same prompts (the run's synthetic `prompts`
split) with the same learning rate (constant), and stop after the same training wall time:
- PPO: hfllm's PPOTrainer with the demo's ppo.yaml (64 prompts an update, 4 epochs × 2 mini-batches,
  a value model started from the reward model);
- GRPO: TRL's GRPOTrainer, 16 prompts × 4 replies a step (64 replies, one PPO rollout's worth), its
  group-relative advantages instead of a value model, one gradient step per batch (TRL's default).

Each trained policy and the SFT model are then scored on task_eval's held-out problems: verifier
accuracy of greedy replies (with paired-bootstrap intervals against SFT and between the two), the
reward model's mean score of those replies, and the KL to SFT: for one reply sampled per problem at
T 0.7, Σ over its tokens of log π − log π_SFT (both at 0.7), averaged — an unbiased estimate of the
sequence-level KL(π‖π_SFT) that both methods were penalised with. Figures: benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import TrainerCallback
from trl import GRPOConfig, ModelConfig

from hfllm.alignment.generation import chat_prompt_ids, chat_stop_ids
from hfllm.alignment.grpo import GRPOScriptArguments, run_grpo_stage
from hfllm.alignment.ppo import PPOConfig, PPOScriptArguments, left_pad, response_logits, run_ppo_stage
from hfllm.alignment.reward import reply_scores
from hfllm.alignment.task_eval import TaskEvalArguments, paired_bootstrap, score_model, wilson_interval
from hfllm.alignment.tasks import distinct_problems
from hfllm.configs import parse_config
from hfllm.modeling import load_causal_lm, load_sequence_classifier, load_tokenizer
from hfllm.report import Section, StageContext

REPO = Path(__file__).resolve().parents[1]
TEMPERATURE, KL_COEF, LEARNING_RATE = 0.7, 0.05, 3.0e-5


class StopAfter(TrainerCallback):
    """Stop training once `seconds` of training (model loading excluded) have passed."""

    def __init__(self, seconds: float):
        self.seconds, self.start, self.elapsed = seconds, 0.0, 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.elapsed = time.perf_counter() - self.start
        if self.elapsed >= self.seconds:
            control.should_training_stop = True


def context(out: Path, name: str) -> StageContext:
    return StageContext(entry_id=name, run_dir=out, section=Section(name, name))


def train_ppo(run: Path, out: Path, seconds: float) -> dict:
    stop = StopAfter(seconds)
    script, config, model = parse_config(
        (PPOScriptArguments, PPOConfig, ModelConfig), REPO / "recipes/configs/demo/ppo.yaml",
        overrides=dict(dataset_name=str(run / "synthetic"), sft_model_path=str(run / "sft"),
                       reward_model_path=str(run / "reward"), output_dir=str(out / "ppo"),
                       total_episodes=64 * 10_000, lr_scheduler_type="constant", temperature=TEMPERATURE,
                       kl_coef=KL_COEF, learning_rate=LEARNING_RATE, report_to="none", disable_tqdm=True))
    metrics = run_ppo_stage(script, config, model, context=context(out, "ppo"), callbacks=[stop])
    return {"steps": metrics["updates"], "prompts_seen": metrics["episodes"], "train_seconds": stop.elapsed,
            "metrics": metrics}


def train_grpo(run: Path, out: Path, seconds: float) -> dict:
    stop = StopAfter(seconds)
    config = GRPOConfig(output_dir=str(out / "grpo"), num_generations=4, per_device_train_batch_size=64,
                        max_completion_length=32, temperature=TEMPERATURE, beta=KL_COEF, learning_rate=LEARNING_RATE,
                        lr_scheduler_type="constant", max_steps=10_000, save_strategy="no", logging_steps=1,
                        gradient_checkpointing=False, bf16=False, use_cpu=True, seed=42, report_to="none",
                        disable_tqdm=True)
    script = GRPOScriptArguments(dataset_name=str(run / "synthetic"), dataset_train_split="prompts",
                                 reward_model_path=str(run / "reward"))
    metrics = run_grpo_stage(script, config, ModelConfig(model_name_or_path=str(run / "sft")),
                             context=context(out, "grpo"), callbacks=[stop])
    return {"steps": metrics["steps"], "prompts_seen": metrics["steps"] * 64 // 4, "train_seconds": stop.elapsed,
            "metrics": metrics}


@torch.no_grad()
def sampled_kl(policy, reference, tokenizer, prompts: list[str], *, max_new_tokens: int = 32,
               batch_size: int = 100, seed: int = 0) -> float:
    """Mean over prompts of Σ_t log π(y_t) − log π_ref(y_t) for one reply y sampled from π, both
    policies at TEMPERATURE, the reply's tokens up to and including its stop token."""
    pad = tokenizer.pad_token_id
    stop = torch.tensor(chat_stop_ids(tokenizer))
    encoded = chat_prompt_ids(tokenizer, prompts)
    totals: list[float] = []
    for start in range(0, len(encoded), batch_size):
        queries = left_pad(encoded[start:start + batch_size], pad)
        torch.manual_seed(seed + start)
        out = policy.generate(input_ids=queries, attention_mask=queries != pad, max_new_tokens=max_new_tokens,
                              do_sample=True, temperature=TEMPERATURE, top_k=0, top_p=1.0,
                              eos_token_id=stop.tolist(), pad_token_id=pad)
        reply = out[:, queries.shape[1]:]
        is_stop = torch.isin(reply, stop).long()
        in_reply = (is_stop.cumsum(1) - is_stop) == 0  # up to and including the first stop token
        width = reply.shape[1]

        def logprobs(model):
            logits = response_logits(model, out, pad, width) / TEMPERATURE
            return torch.log_softmax(logits.float(), -1).gather(-1, reply.unsqueeze(-1)).squeeze(-1)

        totals += ((logprobs(policy) - logprobs(reference)) * in_reply).sum(1).tolist()
    return sum(totals) / len(totals)


def evaluate(run: Path, models: dict[str, Path], num_prompts: int) -> dict:
    problems = distinct_problems(["addition"], num_prompts, 0, split="test")  # task_eval's held-out set
    prompts = [p.prompt for p in problems]
    task_args = TaskEvalArguments(num_prompts=num_prompts)
    reward_tokenizer = load_tokenizer(str(run / "reward"), field="reward")
    reward_model = load_sequence_classifier(str(run / "reward"), field="reward")
    reference = load_causal_lm(str(run / "sft"), field="sft").eval()
    results, outcomes = {}, {}
    for name, model_dir in models.items():
        correct, replies = score_model(model_dir, prompts, ["addition"], task_args)
        outcomes[name] = correct
        scores = reply_scores(reward_model, reward_tokenizer, prompts,
                              [[{"role": "assistant", "content": r}] for r in replies])
        policy = load_causal_lm(str(model_dir), field=name).eval()
        kl = sampled_kl(policy, reference, load_tokenizer(str(model_dir), field=name), prompts)
        low, high = wilson_interval(sum(correct), len(correct))
        results[name] = {"accuracy": sum(correct) / len(correct), "ci_low": low, "ci_high": high,
                         "reward": sum(scores) / len(scores),
                         "kl_to_sft": kl}
    differences = {f"{a} - {b}": paired_bootstrap(outcomes[a], outcomes[b])
                   for a, b in (("ppo", "sft"), ("grpo", "sft"), ("grpo", "ppo"))}
    return {"models": results, "differences": differences, "prompts": len(prompts)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, default=REPO / "runs/demo", help="run dir with sft, reward, synthetic")
    parser.add_argument("--seconds", type=float, default=180, help="training wall time of each method")
    parser.add_argument("--num_prompts", type=int, default=400, help="held-out problems")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("/tmp/rl_compare"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for stage in ("sft", "reward", "synthetic"):
        if not (args.run / stage).is_dir():
            parser.error(f"{args.run / stage} not found: run make demo first")
    args.out.mkdir(parents=True, exist_ok=True)
    training = {"ppo": train_ppo(args.run, args.out, args.seconds),
                "grpo": train_grpo(args.run, args.out, args.seconds)}
    evaluation = evaluate(args.run, {"sft": args.run / "sft", "ppo": args.out / "ppo", "grpo": args.out / "grpo"},
                          args.num_prompts)
    result = {"seconds": args.seconds, "training": training, **evaluation}
    (args.out / "results.json").write_text(json.dumps(result, indent=1, default=str))

    print(f"{'model':6} {'steps':>5} {'prompts':>7} {'train s':>7} {'accuracy (95 % CI)':>22} {'reward':>7} "
          f"{'KL to SFT':>9}")
    for name, m in evaluation["models"].items():
        t = training.get(name, {})
        print(f"{name:6} {t.get('steps', ''):>5} {t.get('prompts_seen', ''):>7} "
              f"{t.get('train_seconds', 0):>7.0f} {m['accuracy']:>8.1%} ({m['ci_low']:.1%}–{m['ci_high']:.1%}) "
              f"{m['reward']:>7.3f} {m['kl_to_sft']:>9.3f}")
    for pair, d in evaluation["differences"].items():
        print(f"{pair}: {d['difference']:+.1%} (95 % CI {d['ci_low']:+.1%} to {d['ci_high']:+.1%})")
    gains = {k: evaluation["models"][k]["accuracy"] - evaluation["models"]["sft"]["accuracy"] for k in ("ppo", "grpo")}
    if gains["ppo"] > 0:
        print(f"ratio GRPO/PPO accuracy gain over SFT at equal wall time: {gains['grpo'] / gains['ppo']:.2f}")


if __name__ == "__main__":
    main()
