"""The evaluation stage across a run's models: held-out bits per byte, hfllm's MMLU-format task three
ways, lm-eval tasks, the contamination table — one `stages.json` — and `hfllm eval` on stage dirs."""

import json
import shutil

import pytest

from hfllm.cli import main
from hfllm.evaluation.mmlu import SCORINGS
from hfllm.evaluation.stage import HELDOUT_TASK, EvalArguments, harness_metrics, run_eval_stage
from hfllm.report import Section, StageContext


@pytest.fixture(scope="module")
def two_models(tiny_run, tmp_path_factory):
    """The tiny run's pretrained model, and a copy of it whose manifest says it came from SFT (a
    chat stage): the evaluation prompts that one through the chat template."""
    run = tmp_path_factory.mktemp("evalrun")
    for name in ("data", "pretrain"):
        shutil.copytree(tiny_run / name, run / name, ignore=shutil.ignore_patterns("checkpoint-*"))
    shutil.copytree(run / "pretrain", run / "sft")
    manifest = json.loads((run / "sft" / "manifest.json").read_text())
    (run / "sft" / "manifest.json").write_text(json.dumps({**manifest, "stage": "sft", "id": "sft"}))
    return run


def test_every_model_scored_three_ways_with_tasks_and_contamination(two_models):
    run = two_models
    args = EvalArguments(model_name_or_path=str(run / "pretrain"), models=[str(run / "pretrain"), str(run / "sft")],
                         dataset_name=str(run / "data"), max_eval_docs=3, bigram_baseline=False, lm_eval_check=False,
                         mmlu=True, mmlu_num_fewshot=1, mmlu_test_items=6, limit=3, tasks=[HELDOUT_TASK],
                         contamination=True, output_dir=str(run / "eval"))
    section = Section("eval", "Evaluation")
    metrics = run_eval_stage(args, context=StageContext(entry_id="eval", run_dir=run, section=section))

    table = json.loads((run / "eval" / "stages.json").read_text())
    assert list(table) == ["pretrain", "sft"]
    for entry in table:
        for group in SCORINGS.values():  # three subjects, at most `limit` items each
            assert table[entry][group]["n"] == 9 and 0 <= table[entry][group]["accuracy"] <= 1
        # lm-eval's own bits per byte on the held-out task (`tasks`) beside hfllm's, equal
        heldout = table[entry][HELDOUT_TASK]
        assert heldout["bits_per_byte"] == pytest.approx(metrics["models"][entry], abs=1e-6)
        assert (run / "eval" / "lm_eval" / entry / "mmlu" / "samples_hfllm_mmlu_python_builtins.jsonl").exists()
    assert "perplexity" in table["pretrain"][HELDOUT_TASK] and "perplexity" not in table["sft"][HELDOUT_TASK]
    # the chat model's prompts went through the chat template, the base model's did not
    sample = lambda e: json.loads((run / "eval" / "lm_eval" / e / "mmlu" /  # noqa: E731
                                   "samples_hfllm_mmlu_python_builtins.jsonl").read_text().splitlines()[0])
    assert "<|im_start|>" in sample("sft")["arguments"][0][0]
    assert "<|im_start|>" not in sample("pretrain")["arguments"][0][0]
    # the task is the run's copy, under <run>/tasks
    assert (run / "tasks" / "hfllm_mmlu" / "task.json").exists()
    pairs = {(row["train"], row["eval"]) for row in metrics["contamination"]}
    assert pairs == {("data (train)", "held-out text"), ("data (train)", "hfllm_mmlu test"),
                     ("data (train)", "hfllm_mmlu dev (few-shot)")}
    text = "\n".join(b if isinstance(b, str) else "" for b in section.blocks)
    assert "letter/text differ" in text and "items sharing an n-gram" in text and "Time by part" in text
    assert set(metrics["seconds"]) >= {"held-out bits per byte", "MMLU three ways", "lm-eval tasks", "contamination"}


def test_harness_metrics_name_filters_and_the_first_stderr():
    row = {"alias": "x", "acc,none": 0.5, "acc_stderr,none": 0.1, "acc_norm,none": 0.6, "acc_norm_stderr,none": "N/A",
           "exact_match,extract_letter": 0.25, "exact_match_stderr,extract_letter": 0.05}
    assert harness_metrics(row) == {"acc": 0.5, "acc_stderr": 0.1, "acc_norm": 0.6, "exact_match,extract_letter": 0.25,
                                    "exact_match_stderr,extract_letter": 0.05, "stderr": 0.1}


def test_without_a_dataset_only_tasks_run_and_the_gate_needs_one():
    args = EvalArguments(model_name_or_path="m", mmlu=True)
    assert not args.bigram_baseline and not args.lm_eval_check
    with pytest.raises(ValueError, match="need dataset_name"):
        EvalArguments(model_name_or_path="m", require_below_bigram=0.1)
    with pytest.raises(ValueError, match="apply_chat_template"):
        EvalArguments(model_name_or_path="m", dataset_name="d", apply_chat_template="yes")


def test_hfllm_eval_cli_on_stage_dirs(two_models, capsys):
    run = two_models
    assert main(["eval", str(run / "pretrain"), str(run / "sft"), "--mmlu", "--mmlu_num_fewshot", "0",
                 "--limit", "2", "--max_eval_docs", "2"]) == 0
    out = capsys.readouterr().out
    assert "pretrain: hfllm_heldout_bpb bits_per_byte" in out and "sft: " in out and "hfllm_mmlu_gen accuracy" in out
    table = json.loads((run / "eval_cli" / "stages.json").read_text())  # beside the stages, by default
    assert table["sft"]["hfllm_mmlu"]["n"] == 6
    assert json.loads((run / "eval_cli" / "manifest.json").read_text())["stage"] == "eval"


@pytest.mark.parametrize("argv, names", [
    (["--tasks", "no_such_task"], "no_such_task"),
    (["--apply_chat_template", "auto", "--dataset", "/nowhere/data"], "/nowhere/data"),
])
def test_hfllm_eval_bad_input_is_one_line(two_models, capsys, argv, names):
    assert main(["eval", str(two_models / "pretrain"), "--output_dir", str(two_models / "bad")] + argv) == 2
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if x.startswith("hfllm: error:")]
    assert names in line and "Traceback" not in err


def test_hfllm_eval_on_a_directory_without_weights(two_models, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["eval", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if x.startswith("hfllm: error:")]
    assert str(tmp_path / "empty") in line and "Traceback" not in err

