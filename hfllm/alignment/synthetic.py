"""Synthetic data for post-training: instructions (SFT conversations and prompts) and feedback
(preference pairs the SFT policy sampled and a judge ranked).

Instructions (`run_synthetic_stage`): a generator proposes prompts from seed tasks and a teacher
answers them —
- `templates` (offline): the tasks' own templates, answered by a noisy teacher that makes each
  task's typical mistake on a share `teacher_error_rate` of the problems where it can (real
  synthetic data has a share of wrong answers; SFT imitates them, preference optimisation can
  learn past them);
- `transformers` / `openai`: an instruction model (local, or any OpenAI-compatible endpoint) is
  shown seed prompts of a task, writes a new one, and answers it.
A filter keeps prompts that are valid (a task's verifier recognises them), new (not a duplicate)
and in length (`max_prompt_length` tokens with the chat template); each drop is counted by
reason. Output: a `DatasetDict` with `train` (`messages`, for SFT) and `prompts` (prompt-only
rows, conversational, for sampling feedback and for PPO), all from the tasks' training side.

Feedback (`run_feedback_stage`): k replies per prompt sampled from the SFT policy (seeded), scored
by a judge (`hfllm.judge`; the verifier by default), best against worst written as
`prompt`/`chosen`/`rejected` with both scores and the judge's name; prompts whose samples all
score alike give no pair (counted). Near misses (`near_misses_per_prompt`): on the training
prompts, the best sample against the task's replies one slip away from the right one
(`Task.near_misses`), ranked by the same judge — hard negatives the policy's samples rarely show
(measured on the demo: without them the reward model learned only the forgotten carry, and PPO
against it wrote carries where none belong). They join the train split only (column `source`), so
the reward model's held-out accuracy stays that on the policy's own replies. A second judge can be
measured against the first.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets

from hfllm.alignment.chat_data import load_split, prompt_text
from hfllm.alignment.generation import chat_prompt_ids, generate_replies, require_chat_template
from hfllm.alignment.tasks import TASKS, sample_problems, task_for_prompt, verify
from hfllm.errors import ConfigError, DataError
from hfllm.judge import VerifierJudge, agreement, build_judge
from hfllm.modeling import load_causal_lm, load_tokenizer
from hfllm.report import StageContext

GENERATORS = ("templates", "transformers", "openai")


@dataclass
class SyntheticArguments:
    tokenizer_name: str = field(metadata={"help": "Tokenizer for the length filter (the tokenizer stage's dir)."})
    tasks: list[str] = field(
        default_factory=lambda: ["addition"], metadata={"help": f"Seed tasks ({', '.join(TASKS)})."})
    generator: str = field(default="templates", metadata={"help": "templates (offline), transformers or openai."})
    generator_model: str | None = field(
        default=None, metadata={"help": "Instruction model dir/id, or the endpoint's model name."})
    api_base: str | None = field(
        default=None, metadata={"help": "OpenAI-compatible endpoint, e.g. http://host:8000/v1."})
    api_key_env: str = field(default="OPENAI_API_KEY", metadata={"help": "Environment variable holding the API key."})
    num_conversations: int = field(default=16000, metadata={"help": "SFT conversations to keep."})
    num_prompts: int = field(default=2000, metadata={"help": "Prompt-only rows to keep (feedback, PPO)."})
    teacher_error_rate: float = field(
        default=0.6, metadata={"help": "templates: share of problems the teacher gets wrong where it can."})
    max_prompt_length: int = field(
        default=64, metadata={"help": "Longest prompt kept, in tokens with the chat template."})
    seed: int = field(default=0, metadata={"help": "Sampling seed."})
    output_dir: str = field(default="synthetic", metadata={"help": "Where the DatasetDict is saved."})

    def __post_init__(self):
        if self.generator not in GENERATORS:
            raise ValueError(f"generator must be one of {', '.join(GENERATORS)}, got {self.generator!r}")
        if not 0 <= self.teacher_error_rate <= 1:
            raise ValueError(f"teacher_error_rate must be within [0, 1], got {self.teacher_error_rate}")
        for name in self.tasks:
            if name not in TASKS:
                raise ValueError(f"unknown task {name!r} (known: {', '.join(TASKS)})")


class PromptFilter:
    """Keeps valid, new, in-length prompts; counts every drop by reason."""

    def __init__(self, tokenizer, tasks: list[str], max_prompt_length: int):
        self.tokenizer, self.tasks, self.max_prompt_length = tokenizer, tasks, max_prompt_length
        self.seen: set[str] = set()
        self.dropped: Counter = Counter()

    def keep(self, prompt: str) -> bool:
        prompt = prompt.strip()
        if task_for_prompt(prompt, self.tasks) is None:
            self.dropped["invalid (no task verifies it)"] += 1
        elif (task := task_for_prompt(prompt, self.tasks)).split_of(task.key_of(prompt)) != "train":
            self.dropped["held-out problem"] += 1
        elif prompt in self.seen:
            self.dropped["duplicate"] += 1
        elif len(chat_prompt_ids(self.tokenizer, [prompt])[0]) > self.max_prompt_length:
            self.dropped["longer than max_prompt_length"] += 1
        else:
            self.seen.add(prompt)
            return True
        return False


def _llm_proposals(args: SyntheticArguments, n: int, rng: random.Random) -> list[str]:
    """Prompts an instruction model writes when shown three seed prompts of a task."""
    from hfllm.judge import OpenAIChat, TransformersChat

    if not args.generator_model:
        raise ConfigError(f"generator {args.generator} needs generator_model", field="generator_model")
    if args.generator == "openai":
        if not args.api_base:
            raise ConfigError("generator openai needs api_base", field="api_base")
        backend = OpenAIChat(args.api_base, args.generator_model, args.api_key_env, max_tokens=48)
    else:
        backend = TransformersChat(args.generator_model, max_new_tokens=48, field="generator_model")
    requests = []
    for i in range(n):
        seeds = sample_problems([args.tasks[i % len(args.tasks)]], 3, seed=rng.randrange(1 << 30))
        shown = "\n".join(f"- {p.prompt}" for p in seeds)
        requests.append([{"role": "user", "content": f"Here are example questions:\n{shown}\n"
                          "Write one new question of the same kind. Reply with the question only."}])
    return [reply.strip().splitlines()[0] if reply.strip() else "" for reply in backend.chat(requests)]


def _llm_answers(args: SyntheticArguments, prompts: list[str]) -> list[str]:
    from hfllm.judge import OpenAIChat, TransformersChat

    if args.generator == "openai":
        backend = OpenAIChat(args.api_base, args.generator_model, args.api_key_env, max_tokens=64)
    else:
        backend = TransformersChat(args.generator_model, max_new_tokens=64, field="generator_model")
    return backend.chat([[{"role": "user", "content": p}] for p in prompts])


def run_synthetic_stage(args: SyntheticArguments, *, context: StageContext) -> dict[str, Any]:
    tokenizer = load_tokenizer(args.tokenizer_name, field="tokenizer_name")
    require_chat_template(tokenizer, None, field="tokenizer_name")
    keep = PromptFilter(tokenizer, args.tasks, args.max_prompt_length)
    wanted = args.num_conversations + args.num_prompts
    rng = random.Random(args.seed)
    prompts: list[str] = []
    attempts, limit = 0, 3 * wanted + 32  # a generator that keeps failing the filter is stopped
    while len(prompts) < wanted and attempts < limit:
        batch = max(wanted - len(prompts), 8)
        if args.generator == "templates":
            proposed = [p.prompt for p in sample_problems(args.tasks, batch, seed=rng.randrange(1 << 30))]
        else:
            proposed = _llm_proposals(args, batch, rng)
        for proposal in proposed:
            attempts += 1
            if keep.keep(proposal):
                prompts.append(proposal.strip())
            if len(prompts) == wanted:
                break
    if len(prompts) < wanted:
        raise DataError(f"the generator gave {len(prompts)} usable prompts of {wanted} after {attempts} proposals "
                        f"(dropped: {dict(keep.dropped)})", where=args.generator_model or "templates")
    rng.shuffle(prompts)
    sft_prompts, only_prompts = prompts[: args.num_conversations], prompts[args.num_conversations:]

    if args.generator == "templates":
        replies = [task_for_prompt(p, args.tasks).teacher_answer(p, rng, args.teacher_error_rate) for p in sft_prompts]
    else:
        replies = _llm_answers(args, sft_prompts)
    correct = [task_for_prompt(p, args.tasks).verify(p, r) for p, r in zip(sft_prompts, replies)]

    def rows_for(ps: list[str], with_replies: list[str] | None):
        out = []
        for i, p in enumerate(ps):
            task = task_for_prompt(p, args.tasks)
            row = {"task": task.name, "answer": task.solve(p)}
            if with_replies is None:
                row["prompt"] = [{"role": "user", "content": p}]
            else:
                row["messages"] = [{"role": "user", "content": p}, {"role": "assistant", "content": with_replies[i]}]
                row["teacher_correct"] = correct[i]
            out.append(row)
        return out

    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_list(rows_for(sft_prompts, replies)),
        "prompts": datasets.Dataset.from_list(rows_for(only_prompts, None)),
    })
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    dd.save_to_disk(args.output_dir)

    metrics = {
        "conversations": len(sft_prompts),
        "prompts": len(only_prompts),
        "proposed": attempts,
        "dropped": dict(keep.dropped),
        "teacher_accuracy": sum(correct) / len(correct),
        "generator": args.generator if args.generator == "templates" else f"{args.generator}:{args.generator_model}",
    }
    if context.is_main_process:
        section = context.section
        section.text(
            f"{len(sft_prompts):,} SFT conversations and {len(only_prompts):,} prompts for tasks "
            f"{', '.join(args.tasks)} from the `{args.generator}` generator; the teacher's replies are right on "
            f"{metrics['teacher_accuracy']:.1%} of them (verifier). All problems are from the tasks' training side."
        )
        if keep.dropped:
            section.table(["proposals dropped", "count"], [[r, n] for r, n in sorted(keep.dropped.items())])
    return metrics


# --- feedback --------------------------------------------------------------------------------------

@dataclass
class FeedbackArguments:
    model_name_or_path: str = field(
        metadata={"help": "Policy to sample from (the SFT model)."})
    dataset_name: str = field(metadata={"help": "Dataset with prompt-only rows."})
    dataset_prompt_split: str = field(default="prompts", metadata={"help": "Split holding the prompts."})
    num_prompts: int | None = field(default=None, metadata={"help": "Use at most this many prompts."})
    num_samples: int = field(default=4, metadata={"help": "Replies sampled per prompt (k)."})
    pairs_per_prompt: int = field(
        default=1, metadata={"help": "Pairs kept per prompt (distinct best × worst replies)."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling."})
    min_p: float = field(default=0.0, metadata={"help": "Min-p sampling: leave out tokens less likely than min_p "
                                                "times the likeliest (0: off)."})
    max_new_tokens: int = field(default=32, metadata={"help": "Longest sampled reply."})
    batch_size: int = field(default=256, metadata={"help": "Prompts per generate call."})
    judge: str = field(
        default="verifier", metadata={"help":
            "verifier, verifier:steps (worked replies' steps checked too), reward_model:<dir>, llm:<dir>[:score], "
            "openai:<model>[:score]."})
    agreement_judge: str | None = field(default=None, metadata={"help": "A second judge measured against the first."})
    agreement_pairs: int = field(default=128, metadata={"help": "Pairs the second judge is measured on."})
    api_base: str | None = field(default=None, metadata={"help": "Endpoint for openai: judges."})
    api_key_env: str = field(default="OPENAI_API_KEY", metadata={"help": "Environment variable holding the API key."})
    tasks: list[str] | None = field(default=None, metadata={"help": "Tasks the verifier knows (default: all)."})
    test_fraction: float = field(default=0.1, metadata={"help": "Share of prompts whose pairs form the test split."})
    near_misses_per_prompt: int = field(
        default=0, metadata={"help": "Training pairs per prompt of its best sample against a near miss of the task's "
                             "right reply, ranked by the judge (0: none)."})
    seed: int = field(default=0, metadata={"help": "Sampling seed."})
    output_dir: str = field(default="feedback", metadata={"help": "Where the pairs are saved."})


def _pair(prompt: str, chosen: str, rejected: str, score_chosen: float, score_rejected: float, judge: str,
          source: str) -> dict[str, Any]:
    return {"prompt": [{"role": "user", "content": prompt}], "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}], "score_chosen": score_chosen,
            "score_rejected": score_rejected, "judge": judge, "source": source}


def near_miss_pairs(args: FeedbackArguments, judge, prompts: list[str], samples: list[list[str]],
                    flat_scores: list[float], test_prompts: set[str], rng: random.Random,
                    dropped: Counter) -> list[dict[str, Any]]:
    """Up to `near_misses_per_prompt` pairs per training prompt: its best sample against near
    misses of the task's right reply that the judge scores below it (drops counted by reason)."""
    if args.near_misses_per_prompt <= 0:
        return []
    candidates: list[tuple[int, str]] = []
    for i, prompt in enumerate(prompts):
        if prompt in test_prompts:
            continue
        task = task_for_prompt(prompt, args.tasks)
        misses = task.near_misses(prompt) if task is not None else []
        if not misses:
            dropped["no near miss for the prompt's task"] += 1
            continue
        candidates += [(i, miss) for miss in rng.sample(misses, min(args.near_misses_per_prompt, len(misses)))]
    miss_scores = judge.score([prompts[i] for i, _ in candidates], [miss for _, miss in candidates])
    pairs = []
    for (i, miss), miss_score in zip(candidates, miss_scores):
        scores = flat_scores[i * args.num_samples:(i + 1) * args.num_samples]
        best = max(scores)
        chosen = next((r for r, s in zip(samples[i], scores) if s == best and r.strip()), None)
        if chosen is None or miss_score >= best:
            dropped["near miss not ranked below the best sample"] += 1
            continue
        pairs.append(_pair(prompts[i], chosen, miss, best, miss_score, judge.name, "near miss"))
    return pairs


def run_feedback_stage(args: FeedbackArguments, *, context: StageContext) -> dict[str, Any]:
    tokenizer = load_tokenizer(args.model_name_or_path, field="model_name_or_path")
    require_chat_template(tokenizer, None, field="model_name_or_path")
    policy = load_causal_lm(args.model_name_or_path, field="model_name_or_path")
    judge = build_judge(args.judge, tasks=args.tasks, policy_tokenizer=tokenizer, api_base=args.api_base,
                        api_key_env=args.api_key_env)
    ds = load_split(args.dataset_name, args.dataset_prompt_split)
    if "prompt" not in ds.column_names:
        raise DataError(f"column not found (columns: {', '.join(ds.column_names)})", where=args.dataset_name,
                        field="prompt")
    if args.num_prompts is not None:
        ds = ds.select(range(min(args.num_prompts, len(ds))))
    prompts = [prompt_text(p) for p in ds["prompt"]]

    samples = generate_replies(policy, tokenizer, prompts, max_new_tokens=args.max_new_tokens,
                               batch_size=args.batch_size, num_samples=args.num_samples,
                               temperature=args.temperature, top_p=args.top_p, min_p=args.min_p, seed=args.seed)
    flat_prompts = [p for p, s in zip(prompts, samples) for _ in s]
    flat_replies = [r for s in samples for r in s]
    flat_scores = judge.score(flat_prompts, flat_replies)
    rng = random.Random(args.seed)
    rows, dropped = [], Counter()
    for i, (prompt, replies) in enumerate(zip(prompts, samples)):
        scores = flat_scores[i * args.num_samples:(i + 1) * args.num_samples]
        best, worst = max(scores), min(scores)
        if best == worst:
            dropped["samples all scored alike"] += 1
            continue
        # Best against worst: distinct texts on each side, paired at random, up to pairs_per_prompt.
        best_replies = list(dict.fromkeys(r for r, s in zip(replies, scores) if s == best and r.strip()))
        worst_replies = list(dict.fromkeys(r for r, s in zip(replies, scores) if s == worst and r.strip()))
        if not best_replies or not worst_replies:
            dropped["empty completion"] += 1
            continue
        combos = [(c, r) for c in best_replies for r in worst_replies]
        rng.shuffle(combos)
        for chosen, rejected in combos[: args.pairs_per_prompt]:
            rows.append(_pair(prompt, chosen, rejected, best, worst, judge.name, "sampled"))
    if not rows:
        raise DataError(f"no preference pair: {dict(dropped)}", where=args.dataset_name)
    # The test split takes whole prompts (all their pairs), so held-out pairs never share a prompt with training.
    paired_prompts = list(dict.fromkeys(prompt_text(r["prompt"]) for r in rows))
    test_prompts = set(paired_prompts[: max(1, round(args.test_fraction * len(paired_prompts)))])
    is_test = [prompt_text(r["prompt"]) in test_prompts for r in rows]
    near = near_miss_pairs(args, judge, prompts, samples, flat_scores, test_prompts, rng, dropped)
    train = [r for r, t in zip(rows, is_test) if not t] + near
    pairs = datasets.Dataset.from_list(train + [r for r, t in zip(rows, is_test) if t])
    dd = datasets.DatasetDict({"train": pairs.select(range(len(train))),
                               "test": pairs.select(range(len(train), len(pairs)))})
    n_test = len(dd["test"])
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    dd.save_to_disk(args.output_dir)

    # Sample accuracy is the answers' (task_eval's measure), whether or not the judge checks steps.
    flat_ok = ([verify(p, r, args.tasks) for p, r in zip(flat_prompts, flat_replies)]
               if isinstance(judge, VerifierJudge) else None)
    metrics: dict[str, Any] = {
        "prompts": len(prompts), "samples_per_prompt": args.num_samples, "pairs_train": len(train),
        "pairs_test": n_test, "pairs_near_miss": len(near), "dropped": dict(dropped), "judge": judge.name,
    }
    if flat_ok is not None:
        metrics["sample_accuracy"] = sum(flat_ok) / len(flat_ok)
        metrics["pass_at_k"] = sum(any(flat_ok[i * args.num_samples:(i + 1) * args.num_samples])
                                   for i in range(len(prompts))) / len(prompts)
    if args.agreement_judge:
        other = build_judge(args.agreement_judge, tasks=args.tasks, policy_tokenizer=tokenizer, api_base=args.api_base,
                            api_key_env=args.api_key_env, field="agreement_judge")
        sample = rows[: args.agreement_pairs]
        measured = agreement(other, [prompt_text(r["prompt"]) for r in sample],
                             [r["chosen"][0]["content"] for r in sample],
                             [r["rejected"][0]["content"] for r in sample])
        metrics["agreement_judge"] = other.name
        metrics.update({f"agreement_{k}": v for k, v in measured.items()})
    if context.is_main_process:
        section = context.section
        section.text(
            f"{args.num_samples} replies sampled (temperature {args.temperature}) from "
            f"`{args.model_name_or_path}` for "
            f"{len(prompts):,} prompts, ranked by the `{judge.name}` judge: {len(rows):,} chosen/rejected pairs"
            + (f", and {len(near):,} training pairs of a best sample against a near miss of the right reply "
               "(hard negatives: the reward model's held-out pairs are sampled ones only)." if near else ".")
        )
        if args.agreement_judge:
            section.text(f"Judge `{metrics['agreement_judge']}` against `{judge.name}` on "
                         f"{metrics['agreement_pairs']} "
                         f"pairs (both orders): agreement {metrics['agreement_agreement']:.1%}.")
    return metrics
