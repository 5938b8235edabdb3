"""Bits per byte: hand-computed cases, the bigram floor, and agreement with lm-eval."""

import json
import math
import subprocess
import sys

import pytest
import torch
from conftest import REPO
from transformers import AutoModelForCausalLM, AutoTokenizer

from hfllm.evaluation import BigramModel, lm_eval_bits_per_byte, score_texts
from hfllm.evaluation.bpb import rolling_windows
from hfllm.evaluation.stage import write_heldout_task
from hfllm.modeling import llama_config


def test_rolling_windows_predict_every_token_once():
    tokens = list(range(10, 310))
    windows = rolling_windows(tokens, prefix=1, max_length=64)
    predicted = [t for _, cont in windows for t in cont]
    assert predicted == tokens
    assert all(len((ctx + cont)[:-1]) <= 64 for ctx, cont in windows)
    assert windows[0][0] == [1]  # the first token is predicted from the prefix token alone


def test_uniform_model_bits_per_byte_by_hand(tiny_tokenizer):
    torch.manual_seed(0)
    vocab = 300 if len(tiny_tokenizer) <= 300 else len(tiny_tokenizer)
    config = llama_config(1, 32, 2, 16, vocab, tie_word_embeddings=False)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        model.lm_head.weight.zero_()  # every logit 0: P(token) = 1/V everywhere
    texts = ["A short line.", "A longer document that needs several rolling windows of sixteen tokens " * 4]
    score = score_texts(model, tiny_tokenizer, texts, batch_size=2)
    n_tokens = sum(len(tiny_tokenizer(t)["input_ids"]) for t in texts)
    n_bytes = sum(len(t.encode()) for t in texts)
    assert score.tokens == n_tokens and score.bytes == n_bytes
    assert score.bits_per_byte == pytest.approx(n_tokens * math.log2(config.vocab_size) / n_bytes, rel=1e-6)
    assert score.perplexity == pytest.approx(config.vocab_size, rel=1e-5)


def test_bigram_by_hand():
    # docs [1 2] and [2 1] as bos=0 … eos=3: pairs 01 12 23 02 21 13; counts of 0, 1, 2 as context: 2 each.
    bigram = BigramModel(vocab_size=4, k=1.0).fit([[1, 2], [2, 1]], bos=0, eos=3)
    # P(1|0) = (1+1)/(2+4) = 1/3 ; P(2|1) = (1+1)/(2+4) = 1/3
    assert bigram.nll(0, [1, 2]) == pytest.approx(2 * math.log(3))
    # P(3|0) = (0+1)/(2+4) = 1/6
    assert bigram.nll(0, [3]) == pytest.approx(math.log(6))


def test_tiny_model_matches_lm_eval(tiny_run, tmp_path):
    m = json.loads((tiny_run / "eval" / "manifest.json").read_text())["metrics"]
    assert m["lm_eval_abs_diff"] < 1e-3
    # And once more here, on three held-out documents scored both ways.
    model = AutoModelForCausalLM.from_pretrained(tiny_run / "pretrain")
    tok = AutoTokenizer.from_pretrained(tiny_run / "pretrain")
    heldout = (tiny_run / "tasks" / "hfllm_heldout_bpb.jsonl").read_text()
    rows = [json.loads(line) for line in heldout.splitlines()[:3]]
    three = write_heldout_task([r["text"] for r in rows], tmp_path / "tasks")
    ours = score_texts(model, tok, [r["text"] for r in rows]).bits_per_byte
    theirs = lm_eval_bits_per_byte(model, tok, three)
    assert abs(ours - theirs) < 1e-3
    assert sum(len(tok(r["text"])["input_ids"]) for r in rows) > 2 * model.config.max_position_embeddings


def assert_ten_percent_below_bigram(run_dir):
    m = json.loads((run_dir / "eval" / "manifest.json").read_text())["metrics"]
    data = json.loads((run_dir / "data" / "manifest.json").read_text())["metrics"]
    assert m["bigram_train_bytes"] == data["train_bytes"]  # the bigram saw all the training text
    assert m["bits_per_byte"] <= 0.9 * m["bigram_bits_per_byte"], m


def test_model_beats_bigram_floor_by_ten_percent(tiny_run):
    assert_ten_percent_below_bigram(tiny_run)


def evaluate_with_gate(run_dir, out, required: str) -> subprocess.CompletedProcess:
    """The evaluation recipe on the tiny run's model and five held-out documents, gated at `required`."""
    return subprocess.run(
        [sys.executable, str(REPO / "recipes" / "evaluation.py"), "--model_name_or_path", str(run_dir / "pretrain"),
         "--dataset_name", str(run_dir / "data"), "--max_eval_docs", "5", "--lm_eval_check", "false",
         "--require_below_bigram", required, "--output_dir", str(out)],
        capture_output=True, text=True, timeout=600,
    )


def test_quality_gate_fails_the_stage_with_one_line_and_keeps_the_numbers(tiny_run, tmp_path):
    out = tmp_path / "eval"
    ok = evaluate_with_gate(tiny_run, out, "0.1")  # the tiny model clears a 10 % gate on these documents
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert (out / "manifest.json").exists()
    passed = json.loads((out / "results.json").read_text())

    proc = evaluate_with_gate(tiny_run, out, "0.99")  # another config: the passed run's output is set aside
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = proc.stderr.strip().splitlines()[-1]
    assert err.startswith("hfllm: error:") and "require_below_bigram" in err and "99%" in err, err
    results = json.loads((out / "results.json").read_text())
    assert f"{-results['bpb_vs_bigram']:.1%}" in err  # the margin it measured, as results.json has it
    assert results["bits_per_byte"] == passed["bits_per_byte"]  # same model and documents
    # The failed run's output stays (not the earlier run's put back), without a manifest: a
    # re-run evaluates again instead of skipping a stage that failed its gate.
    assert not (out / "manifest.json").exists()
    assert not (tmp_path / "eval.previous").exists()


def test_quality_gate_needs_the_bigram_baseline():
    from hfllm.configs import parse_args
    from hfllm.errors import ConfigError
    from hfllm.evaluation.stage import EvalArguments

    with pytest.raises(ConfigError, match="require_below_bigram.*bigram_baseline"):
        parse_args((EvalArguments,), ["--model_name_or_path", "m", "--dataset_name", "d", "--bigram_baseline", "false",
                                  "--require_below_bigram", "0.1"])


def test_stages_table_joins_task_eval_scores_without_recomputing(tiny_run, tmp_path):
    """`stages.json`: every model's held-out bits per byte, and task_eval's accuracy read from its
    scores.json with the binomial standard error (0.5 on 100 prompts: 0.05)."""
    from hfllm.evaluation.stage import EvalArguments, run_eval_stage
    from hfllm.report import Section, StageContext

    task_eval = tmp_path / "task_eval"
    task_eval.mkdir()
    (task_eval / "scores.json").write_text(json.dumps({
        "pretrain": {"accuracy": 0.5, "ci_low": 0.4038, "ci_high": 0.5962, "n": 100},
        "sft": {"accuracy": 0.9, "ci_low": 0.8256, "ci_high": 0.9448, "n": 100}}))
    args = EvalArguments(model_name_or_path=str(tiny_run / "pretrain"), dataset_name=str(tiny_run / "data"),
                         models=[str(tiny_run / "pretrain")], task_scores=str(task_eval), max_eval_docs=4,
                         bigram_baseline=False, lm_eval_check=False, output_dir=str(tmp_path / "eval"))
    ctx = StageContext(entry_id="eval", run_dir=tmp_path, section=Section("eval", "Evaluation"))
    metrics = run_eval_stage(args, context=ctx)
    table = json.loads((tmp_path / "eval" / "stages.json").read_text())
    assert table["pretrain"]["hfllm_heldout_bpb"]["bits_per_byte"] == metrics["models"]["pretrain"]
    assert table["pretrain"]["task_eval"]["stderr"] == pytest.approx(0.05)
    assert table["sft"]["task_eval"] == {"accuracy": 0.9, "stderr": pytest.approx(0.03), "ci_low": 0.8256,
                                         "ci_high": 0.9448, "n": 100}
    assert "hfllm_heldout_bpb" not in table["sft"]  # only the models this entry scored have a bpb

    args.task_scores = str(tmp_path / "nowhere")
    from hfllm.errors import DataError

    with pytest.raises(DataError, match="task scores") as err:
        run_eval_stage(args, context=ctx)
    assert err.value.field == "task_scores" and "nowhere/scores.json" in err.value.one_line()
