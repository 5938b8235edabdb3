"""hfllm's PPO trainer and stage on tiny models built from configs, with a tokenizer trained on local
text: prompt formats, the stop token, the stage's model directory and report, resume after a
kill, LoRA, and one-line errors for bad input. (Parity with TRL: test_ppo_parity.py.)"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import datasets
import ppo_models
import pytest
import torch
from tokenizers import Tokenizer, models
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    HfArgumentParser,
    PreTrainedTokenizerFast,
    TrainerCallback,
)
from trl import ModelConfig

from hfllm.alignment.ppo import (
    PPOConfig,
    PPOScriptArguments,
    PPOTrainer,
    chat_turn_end_ids,
    run_ppo_stage,
    tokenize_prompts,
)
from hfllm.alignment.reward import reply_scores
from hfllm.errors import ConfigError, DataError
from hfllm.report import Section, StageContext
from hfllm.tokenizer import CHAT_TEMPLATE, EOS, IM_END, train_bpe

HERE = Path(__file__).parent


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    with ppo_models.one_thread():
        yield


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("ppo")
    tokenizer = ppo_models.tokenizer()
    paths = ppo_models.save_models(root, tokenizer)
    prompts = ppo_models.prompt_dataset(root / "prompts")
    return root, tokenizer, paths, prompts


def context(tmp_path: Path) -> StageContext:
    return StageContext(entry_id="ppo", run_dir=tmp_path, section=Section("ppo", "PPO"))


def update_rows(log_history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "eps"} for row in log_history if "objective/scores" in row]


# ------------------------------------------------------------------------------------- prompts

def test_prompt_formats_become_token_ids(artefacts):
    tok = artefacts[1]
    question = [{"role": "user", "content": "What does a list comprehension return?"}]
    chat_ids = tok.apply_chat_template(question, add_generation_prompt=True, tokenize=True)["input_ids"]
    assert tok.decode(chat_ids).endswith(f"{IM_END}\n<|im_start|>assistant\n")
    answered = question + [{"role": "assistant", "content": "A list."}]
    cases = {
        "prompt": (["def f(x):"], [tok("def f(x):")["input_ids"]]),
        "messages": ([answered], [chat_ids]),
        "input_ids": ([[5, 6, 7]], [[5, 6, 7]]),
    }
    for column, (rows, expected) in cases.items():
        out = tokenize_prompts(datasets.Dataset.from_dict({column: rows}), tok)
        assert out.column_names == ["input_ids"] and out["input_ids"] == expected, column
    conversational = tokenize_prompts(datasets.Dataset.from_dict({"prompt": [question]}), tok)
    assert conversational["input_ids"] == [chat_ids]


def test_the_prompt_column_can_be_named(artefacts):
    """UltraFeedback-style rows: a plain-text `prompt` and the conversation in `messages`. Unset, the
    text is used as is; `dataset_prompt_column: messages` prompts through the chat template."""
    from hfllm.alignment.ppo import only_prompt_column

    tok = artefacts[1]
    question = [{"role": "user", "content": "What does a list comprehension return?"}]
    rows = datasets.Dataset.from_dict({"prompt": [question[0]["content"]], "score": [1.0],
                                       "messages": [question + [{"role": "assistant", "content": "A list."}]]})
    chat_ids = tok.apply_chat_template(question, add_generation_prompt=True, tokenize=True)["input_ids"]
    text_ids = tok(question[0]["content"])["input_ids"]
    assert tokenize_prompts(only_prompt_column(rows, None, "uf"), tok)["input_ids"] == [text_ids]
    assert tokenize_prompts(only_prompt_column(rows, "messages", "uf"), tok)["input_ids"] == [chat_ids]
    renamed = only_prompt_column(rows.rename_column("prompt", "question"), "question", "uf")
    assert renamed.column_names == ["prompt"]
    with pytest.raises(DataError) as err:
        only_prompt_column(rows, "conversation", "uf")
    assert err.value.field == "dataset_prompt_column" and "columns: prompt, score, messages" in str(err.value)


def test_prompt_errors_name_the_column_and_row(artefacts):
    tok = artefacts[1]
    with pytest.raises(DataError) as err:
        tokenize_prompts(datasets.Dataset.from_dict({"text": ["hello"]}), tok, where="p.jsonl")
    assert err.value.field == "prompt" and err.value.where == "p.jsonl" and "columns: text" in str(err.value)
    long = datasets.Dataset.from_dict({"prompt": ["short", "a much longer prompt " * 10]})
    with pytest.raises(DataError, match=r"row 1: prompt is \d+ tokens, more than max_prompt_length=8"):
        tokenize_prompts(long, tok, max_prompt_length=8)
    with pytest.raises(DataError, match="row 0: empty prompt"):
        tokenize_prompts(datasets.Dataset.from_dict({"prompt": [""]}), tok)


def test_stop_token_chat_default_eos_and_id(artefacts):
    tok = artefacts[1]
    im_end = tok.convert_tokens_to_ids(IM_END)
    stop = PPOTrainer._stop_token_id
    assert stop(PPOConfig(output_dir="x", bf16=False), tok) == im_end  # hfllm's chat default
    assert stop(PPOConfig(output_dir="x", bf16=False, stop_token="eos"), tok) == tok.convert_tokens_to_ids(EOS)
    assert stop(PPOConfig(output_dir="x", bf16=False, stop_token_id=7), tok) == 7
    words = Tokenizer(models.WordLevel({"a": 0, "<pad>": 1, "</s>": 2}, unk_token=None))
    no_chat = PreTrainedTokenizerFast(tokenizer_object=words, pad_token="<pad>", eos_token="</s>")
    assert stop(PPOConfig(output_dir="x", bf16=False), no_chat) is None  # TRL's default: no stop token
    with pytest.raises(ValueError, match="not both"):
        PPOTrainer(PPOConfig(output_dir="x", bf16=False, stop_token="eos", stop_token_id=7), tok,
                   *[None] * 5)


def test_replies_are_scored_where_the_reward_model_was_trained(artefacts):
    """The reward stage scores a conversation at the end of its chat template (`reply_scores`, as
    TRL's RewardTrainer trains it): past `<|im_end|>`, its newline. PPO reads its score there too;
    with `score_turn_end` off, at the stop token, as TRL 1.12 did — another score."""
    _, tok, paths, _ = artefacts
    im_end = tok.convert_tokens_to_ids(IM_END)
    newline = tok("\n", add_special_tokens=False)["input_ids"]
    assert chat_turn_end_ids(tok, im_end) == newline and chat_turn_end_ids(tok, None) == []
    reward = AutoModelForSequenceClassification.from_pretrained(paths["reward"], dtype=torch.float32).eval()
    question, answer = [{"role": "user", "content": "What is two and two?"}], "It is four."
    query = torch.tensor([tok.apply_chat_template(question, add_generation_prompt=True, tokenize=True)["input_ids"]])
    reply = tok(answer + IM_END, add_special_tokens=False)["input_ids"]
    replies, last = torch.tensor([reply + [tok.pad_token_id] * 2]), torch.tensor([len(reply) - 1])
    expected = reply_scores(reward, tok, [question], [[{"role": "assistant", "content": answer}]])[0]
    trainer = SimpleNamespace(processing_class=tok, stop_token_id=im_end, reward_model=reward, turn_end_ids=newline)
    with torch.no_grad():
        assert PPOTrainer.score(trainer, query, replies, last).item() == pytest.approx(expected, abs=1e-5)
        trainer.turn_end_ids = []  # score_turn_end: false
        assert abs(PPOTrainer.score(trainer, query, replies, last).item() - expected) > 1e-3


# --------------------------------------------------------------------------------------- stage

@pytest.fixture(scope="module")
def uninterrupted(artefacts, tmp_path_factory):
    """Four updates of the stage, checkpoints every second update."""
    root, _, paths, prompts = artefacts
    out = tmp_path_factory.mktemp("uninterrupted") / "ppo"
    ctx = context(out.parent)
    metrics = run_ppo_stage(*ppo_models.stage_args(paths, prompts, out), context=ctx)
    return out, metrics, ctx


def test_stage_writes_a_model_dir_value_model_and_report(artefacts, uninterrupted, tmp_path):
    _, tok, paths, _ = artefacts
    out, metrics, ctx = uninterrupted
    assert metrics["updates"] == 4 and metrics["episodes"] == 16 and metrics["stop_token"] == IM_END
    assert metrics["resumed_from"] is None and not metrics["peft"]
    for key in ("objective/scores", "objective/kl", "completions/mean_length", "policy/clipfrac_avg"):
        assert math.isfinite(metrics[key]), key

    policy = AutoModelForCausalLM.from_pretrained(out)
    before = AutoModelForCausalLM.from_pretrained(paths["policy"])
    assert any(not torch.equal(a, b) for a, b in zip(policy.state_dict().values(), before.state_dict().values()))
    saved_tok = AutoTokenizer.from_pretrained(out)
    assert saved_tok.chat_template == CHAT_TEMPLATE
    stops = json.loads((out / "generation_config.json").read_text())["eos_token_id"]
    assert stops == [tok.convert_tokens_to_ids(IM_END), tok.eos_token_id]
    value = AutoModelForSequenceClassification.from_pretrained(out / "value_model")
    assert value.config.num_labels == 1
    assert (out / "model.safetensors").exists() and not list(out.glob("*.bin"))
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert (out / "checkpoint-2" / "value_model" / "model.safetensors").exists()
    samples = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    assert {s["update"] for s in samples} == {1, 3, 4} and all(isinstance(s["score"], float) for s in samples)

    ctx.section.save(tmp_path, tmp_path)
    blocks = json.loads((tmp_path / "report_section.json").read_text())["blocks"]
    assert any("plots/ppo_curves.png" in b for b in blocks)
    assert (tmp_path / "plots" / "ppo_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert any(b.startswith("| prompt | reply | score |") for b in blocks)


def test_resume_after_kill_repeats_the_same_updates(artefacts, uninterrupted, tmp_path):
    root, _, paths, prompts = artefacts
    out = tmp_path / "ppo"
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"paths": {k: str(v) for k, v in paths.items()}, "prompts": str(prompts),
                                "output_dir": str(out)}))
    proc = subprocess.run([sys.executable, str(HERE / "ppo_resume_driver.py"), "step", "3", str(spec)],
                          capture_output=True, text=True, check=False, env={**os.environ, **ppo_models.ONE_THREAD_ENV})
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    assert not (out / "model.safetensors").exists()

    metrics = run_ppo_stage(*ppo_models.stage_args(paths, prompts, out), context=context(tmp_path))
    assert metrics["resumed_from"] == "checkpoint-2" and metrics["updates"] == 4
    resumed = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())["log_history"]
    reference = json.loads((uninterrupted[0] / "checkpoint-4" / "trainer_state.json").read_text())["log_history"]
    resumed, reference = update_rows(resumed), update_rows(reference)
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    for mine, theirs in zip(resumed, reference):
        assert mine.keys() == theirs.keys()
        for key in mine:
            assert mine[key] == pytest.approx(theirs[key], abs=1e-6, nan_ok=True), (mine["step"], key)
    final = AutoModelForCausalLM.from_pretrained(out).state_dict()
    expected = AutoModelForCausalLM.from_pretrained(uninterrupted[0]).state_dict()
    assert max((final[k] - expected[k]).abs().max().item() for k in final) <= 1e-6


class StopAfter(TrainerCallback):
    def __init__(self, update: int):
        self.update = update

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.update:
            control.should_training_stop = True


def test_lora_policy_reference_is_the_base_and_resumes(artefacts, tmp_path):
    _, _, paths, prompts = artefacts
    lora = {"use_peft": True, "lora_r": 4, "lora_alpha": 8, "lora_target_modules": ["q_proj", "v_proj"]}
    settings = dict(model=lora, total_episodes=8, save_steps=1, learning_rate=5e-3)
    whole = run_ppo_stage(*ppo_models.stage_args(paths, prompts, tmp_path / "whole", **settings),
                          context=context(tmp_path))
    assert whole["peft"] and whole["updates"] == 2
    history = update_rows(json.loads((tmp_path / "whole" / "checkpoint-2" / "trainer_state.json").read_text())
                          ["log_history"])
    assert history[0]["objective/kl"] == 0.0  # fresh adapters: policy = base = reference
    assert history[1]["objective/kl"] != 0.0  # the adapters moved; the reference (adapters off) did not
    assert (tmp_path / "whole" / "checkpoint-1" / "adapter_model.safetensors").exists()
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "whole").state_dict()
    base = AutoModelForCausalLM.from_pretrained(paths["policy"]).state_dict()
    assert set(merged) == set(base) and not list((tmp_path / "whole").glob("adapter_*"))
    changed = {k for k in base if not torch.equal(base[k], merged[k])}
    assert changed and all(".q_proj." in k or ".v_proj." in k for k in changed)

    run_ppo_stage(*ppo_models.stage_args(paths, prompts, tmp_path / "split", **settings),
                  context=context(tmp_path), callbacks=[StopAfter(1)])
    resumed = run_ppo_stage(*ppo_models.stage_args(paths, prompts, tmp_path / "split", **settings),
                            context=context(tmp_path))
    assert resumed["resumed_from"] == "checkpoint-1"
    again = update_rows(json.loads((tmp_path / "split" / "checkpoint-2" / "trainer_state.json").read_text())
                        ["log_history"])
    for mine, theirs in zip(again, history):
        for key in mine:
            assert mine[key] == pytest.approx(theirs[key], abs=1e-6, nan_ok=True), (mine["step"], key)


# ----------------------------------------------------------------------------------- bad input

def test_bad_input_is_one_error_naming_the_field(artefacts, tmp_path):
    root, tok, paths, prompts = artefacts
    other = train_bpe(iter(ppo_models.texts()[40:]), 400)
    foreign = tmp_path / "foreign_reward"
    ppo_models.scorer(other).save_pretrained(foreign)
    other.save_pretrained(foreign)
    untokenized = tmp_path / "reward_without_tokenizer"
    ppo_models.scorer(tok, vocab=576).save_pretrained(untokenized)
    no_prompt = tmp_path / "no_prompt.jsonl"
    no_prompt.write_text("".join(json.dumps({"text": s}) + "\n" for s in ppo_models.sentences(8)))
    out = tmp_path / "ppo"
    cases = [
        (ConfigError, "reward_model_path", "differs from the policy's", {"reward_model_path": str(foreign)}, {}),
        (ConfigError, "reward_model_path", "no tokenizer to compare", {"reward_model_path": str(untokenized)}, {}),
        (ConfigError, "reward_model_path", "not a reward model", {"reward_model_path": str(paths["policy"])}, {}),
        (ConfigError, "reward_model_path", "cannot load", {"reward_model_path": str(tmp_path / "none")}, {}),
        (ConfigError, "value_model_path", "cannot load", {}, {"value_model_path": str(tmp_path / "none")}),
        (DataError, "prompt", "needs a 'prompt', 'messages' or 'input_ids' column", {},
         {"dataset_name": str(no_prompt), "dataset_test_split": None}),
        (DataError, "messages", "row 0: prompt is", {}, {"max_prompt_length": 4}),
        (ConfigError, "response_length", "exceed the policy's context", {"response_length": 200}, {}),
        (ConfigError, "dataset_streaming", "cannot stream", {}, {"dataset_streaming": True}),
    ]
    for error, field, message, config, script in cases:
        with pytest.raises(error) as err:
            run_ppo_stage(*ppo_models.stage_args(paths, prompts, out, script=script, **config),
                          context=context(tmp_path))
        assert err.value.field == field and message in err.value.message, (field, str(err.value))
        if error is DataError:
            assert err.value.where in (str(no_prompt), str(prompts))
        assert not out.exists()  # refused before anything is written


def test_trl_ppo_script_flags_parse():
    """The command line of TRL 1.12's examples/scripts/ppo/ppo.py, as a config, parses into the
    stage's dataclasses unchanged (bf16 off: this CPU has none)."""
    flags = {
        "dataset_name": "trl-internal-testing/descriptiveness-sentiment-trl-style",
        "dataset_train_split": "descriptiveness", "output_dir": "pythia-1b-deduped-ppo", "num_ppo_epochs": 1,
        "num_mini_batches": 1, "per_device_train_batch_size": 1, "gradient_accumulation_steps": 16,
        "total_episodes": 10000, "model_name_or_path": "EleutherAI/pythia-1b-deduped",
        "sft_model_path": "EleutherAI/pythia-1b-deduped", "reward_model_path": "EleutherAI/pythia-1b-deduped",
        "local_rollout_forward_batch_size": 1, "missing_eos_penalty": 1.0, "bf16": False,
    }
    script, config, model = HfArgumentParser((PPOScriptArguments, PPOConfig, ModelConfig)).parse_dict(flags)
    assert (script.dataset_train_split, config.gradient_accumulation_steps, config.missing_eos_penalty) == (
        "descriptiveness", 16, 1.0)
    assert (model.model_name_or_path, config.sft_model_path) == ("EleutherAI/pythia-1b-deduped",) * 2
    assert (config.learning_rate, config.kl_coef, config.response_length) == (3e-6, 0.05, 53)  # TRL's defaults


def test_task_verifier_checks_replies_against_the_recomputed_answer():
    from hfllm.alignment.ppo import task_verifier

    conversations = datasets.Dataset.from_list([
        {"task": "addition", "prompt": [{"role": "user", "content": "What is 27+15?"}]},
        {"task": "not_a_task", "prompt": [{"role": "user", "content": "What is 1+1?"}]},
    ])
    verify = task_verifier(conversations)
    assert [verify(0, "7+5=12, 1+2+1=4, answer 42"), verify(0, "7+5=12, 2+1=3, answer 32"),
            verify(1, "2")] == [True, False, None]
    assert task_verifier(datasets.Dataset.from_list([{"task": "addition", "prompt": "What is 27+15?"}]))(0, "42")
    assert task_verifier(datasets.Dataset.from_list([{"prompt": "What is 27+15?"}])) is None

    # An update's accuracy: of the replies the verifier can check (rows 0, 0; not row 1), one is right.
    trainer = SimpleNamespace(
        processing_class=SimpleNamespace(batch_decode=lambda ids, **kw: ["answer 42", "answer 32", "2"]),
        rollout_prompts=lambda update: [0, 0, 1], reply_verifier=verify,
        accelerator=SimpleNamespace(device="cpu", gather_for_metrics=lambda x: x))
    rollout = SimpleNamespace(postprocessed=torch.zeros(3, 2, dtype=torch.long))
    assert PPOTrainer.verifier_accuracy(trainer, 1, rollout) == 0.5


def test_verifiable_prompts_log_the_replies_verifier_accuracy(artefacts, tmp_path):
    """The stage wires the prompts' verifier in: the tiny policy never answers an addition right."""
    _, _, paths, _ = artefacts
    prompts = tmp_path / "prompts"
    rows = [{"task": "addition", "prompt": [{"role": "user", "content": f"What is {a}+{a + 3}?"}]}
            for a in range(10, 30)]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:16]),
                          "test": datasets.Dataset.from_list(rows[16:])}).save_to_disk(str(prompts))
    metrics = run_ppo_stage(*ppo_models.stage_args(paths, prompts, tmp_path / "out", total_episodes=8,
                                                   save_steps=100, num_sample_generations=0),
                            context=context(tmp_path))
    assert metrics["first_verifier_accuracy"] == metrics["verifier_accuracy"] == 0.0
