"""Synthetic instructions (templates and an LLM over the loopback endpoint) and synthetic feedback."""

from pathlib import Path

import datasets
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from hfllm.alignment.synthetic import FeedbackArguments, SyntheticArguments, run_feedback_stage, run_synthetic_stage
from hfllm.alignment.tasks import TASKS, task_for_prompt
from hfllm.errors import DataError
from hfllm.judge import ChatCompletionsServer
from hfllm.modeling import llama_config
from hfllm.report import Section, StageContext


@pytest.fixture(scope="session")
def tiny_dir(tiny_run) -> Path:
    return tiny_run


def context(tmp_path, name):
    return StageContext(entry_id=name, run_dir=tmp_path, section=Section(name, name))


@pytest.fixture(scope="module")
def instructions(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic") / "synthetic"
    metrics = run_synthetic_stage(
        SyntheticArguments(tasks=["addition", "reverse"], num_conversations=3000, num_prompts=400,
                           teacher_error_rate=0.6,
                           max_prompt_length=24, tokenizer_name=str(tiny_dir / "tokenizer"), output_dir=str(out)),
        context=context(out.parent, "synthetic"))
    return out, metrics


def test_template_instructions(instructions):
    out, metrics = instructions
    dd = datasets.load_from_disk(str(out))
    assert len(dd["train"]) == 3000 and len(dd["prompts"]) == 400 == metrics["prompts"]
    prompts = [m[0]["content"] for m in dd["train"]["messages"]] + [p[0]["content"] for p in dd["prompts"]["prompt"]]
    assert len(set(prompts)) == len(prompts)  # no duplicate, across both splits
    for p in prompts:
        task = task_for_prompt(p)
        assert task.split_of(task.key_of(p)) == "train"
    # Every drop is counted: duplicates (the template space repeats) and over-long prompts (24 tokens).
    assert metrics["dropped"]["duplicate"] > 0 and metrics["dropped"]["longer than max_prompt_length"] > 0
    assert metrics["proposed"] == 3400 + sum(metrics["dropped"].values())
    # The teacher is wrong where it can be, 60 % of the time: ≈ 45 % of additions, ≈ 1/3 of reversals.
    assert 0.7 < metrics["teacher_accuracy"] < 0.88
    correct = dd["train"]["teacher_correct"]
    assert all(TASKS[t].verify(m[0]["content"], m[1]["content"]) == c
               for t, m, c in zip(dd["train"]["task"], dd["train"]["messages"], correct))


def test_llm_generator_over_the_endpoint_filters_what_it_writes(tiny_dir, tmp_path):
    # The tiny pretrained model cannot write arithmetic questions: every proposal is dropped as
    # invalid, and the stage says so with the counts instead of writing an empty dataset.
    with ChatCompletionsServer(str(tiny_dir / "pretrain")) as url:
        args = SyntheticArguments(tasks=["addition"], generator="openai", generator_model="tiny", api_base=url,
                                  api_key_env="HFLLM_TEST_NO_KEY", num_conversations=8, num_prompts=0,
                                  tokenizer_name=str(tiny_dir / "tokenizer"), output_dir=str(tmp_path / "s"))
        with pytest.raises(DataError, match=r"invalid \(no task verifies it\)"):
            run_synthetic_stage(args, context=context(tmp_path, "synthetic"))


def _random_reward_model(directory: Path, tokenizer) -> str:
    config = llama_config(1, 32, 2, 128, len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    config.num_labels = 1
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def test_feedback_pairs_ranked_by_a_judge(instructions, tiny_dir, tmp_path):
    out, _ = instructions
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir / "tokenizer")
    rm = _random_reward_model(tmp_path / "rm", tokenizer)
    args = FeedbackArguments(model_name_or_path=str(tiny_dir / "pretrain"), dataset_name=str(out), num_prompts=40,
                             num_samples=3, pairs_per_prompt=2, max_new_tokens=8, judge=f"reward_model:{rm}",
                             agreement_judge="verifier", test_fraction=0.25, output_dir=str(tmp_path / "feedback"))
    metrics = run_feedback_stage(args, context=context(tmp_path, "feedback"))
    dd = datasets.load_from_disk(str(tmp_path / "feedback"))
    prompts = {split: [p[0]["content"] for p in dd[split]["prompt"]] for split in ("train", "test")}
    paired = len(set(prompts["train"]) | set(prompts["test"]))
    assert paired + sum(metrics["dropped"].values()) == 40
    # A scoring judge with distinct scores has one best and one worst reply: one pair a prompt.
    assert metrics["pairs_train"] + metrics["pairs_test"] == paired
    assert not set(prompts["train"]) & set(prompts["test"])  # whole prompts are held out
    assert len(dd["test"]) == metrics["pairs_test"] > 0
    row = dd["train"][0]
    assert row["prompt"][0]["role"] == "user" and row["chosen"][0]["role"] == "assistant"
    assert row["judge"] == "reward_model:rm"
    assert all(c > r for c, r in zip(dd["train"]["score_chosen"], dd["train"]["score_rejected"]))
    assert metrics["agreement_judge"] == "verifier" and 0 <= metrics["agreement_agreement"] <= 1
    # Sampling is seeded: the same call gives the same pairs.
    again = run_feedback_stage(FeedbackArguments(**{**args.__dict__, "output_dir": str(tmp_path / "again")}),
                               context=context(tmp_path, "again"))
    assert again["pairs_train"] == metrics["pairs_train"]
    assert datasets.load_from_disk(str(tmp_path / "again"))["train"]["chosen"] == dd["train"]["chosen"]


def test_near_misses_join_the_training_pairs_only(instructions, tiny_dir, tmp_path):
    out, _ = instructions
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir / "tokenizer")
    rm = _random_reward_model(tmp_path / "rm", tokenizer)
    args = FeedbackArguments(model_name_or_path=str(tiny_dir / "pretrain"), dataset_name=str(out), num_prompts=40,
                             num_samples=2, max_new_tokens=8, judge=f"reward_model:{rm}", near_misses_per_prompt=2,
                             test_fraction=0.25, output_dir=str(tmp_path / "feedback"))
    metrics = run_feedback_stage(args, context=context(tmp_path, "feedback"))
    dd = datasets.load_from_disk(str(tmp_path / "feedback"))
    near = [r for r in dd["train"] if r["source"] == "near miss"]
    assert len(near) == metrics["pairs_near_miss"] > 0
    assert set(dd["test"]["source"]) == {"sampled"}  # the held-out pairs stay the policy's own replies
    test_prompts = {p[0]["content"] for p in dd["test"]["prompt"]}
    for row in near:
        prompt, rejected = row["prompt"][0]["content"], row["rejected"][0]["content"]
        assert prompt not in test_prompts
        task = task_for_prompt(prompt)
        assert rejected in task.near_misses(prompt) and not task.verify(prompt, rejected)
        assert row["score_rejected"] < row["score_chosen"]
    # Every near miss drawn is a pair or a counted drop; a prompt whose task has none is counted too.
    prompts = [p[0]["content"] for p in datasets.load_from_disk(str(out))["prompts"]["prompt"][:40]]
    train_side = [p for p in prompts if p not in test_prompts]
    misses = [len(task_for_prompt(p).near_misses(p)) for p in train_side]
    dropped = metrics["dropped"]
    assert len(near) + dropped.get("near miss not ranked below the best sample", 0) == sum(min(2, n) for n in misses)
    assert dropped.get("no near miss for the prompt's task", 0) == misses.count(0) > 0  # short reversals


def test_feedback_without_any_pair_is_an_error(instructions, tiny_dir, tmp_path):
    out, _ = instructions  # the pretrained model never solves a problem: every verifier score is 0
    args = FeedbackArguments(model_name_or_path=str(tiny_dir / "pretrain"), dataset_name=str(out), num_prompts=10,
                             num_samples=2, max_new_tokens=4, output_dir=str(tmp_path / "feedback"))
    with pytest.raises(DataError, match="no preference pair.*samples all scored alike"):
        run_feedback_stage(args, context=context(tmp_path, "feedback"))
    with pytest.raises(DataError, match="column not found"):
        run_feedback_stage(FeedbackArguments(**{**args.__dict__, "dataset_prompt_split": "train"}),
                           context=context(tmp_path, "feedback"))
