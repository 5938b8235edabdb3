"""The pipeline runner's convention: entries with ids and inputs, wiring, validation, fingerprints,
one parser for recipes and runner, the precision rule, and where a recipe run alone writes."""

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO

from hfllm.configs import parse_args, parse_config, to_dict
from hfllm.errors import ConfigError
from hfllm.pipeline import (
    STAGES,
    StageSpec,
    _default_inputs,
    execute_stage,
    input_fingerprint,
    load_pipeline,
    run_pipeline,
    stage_fingerprint,
)

TINY = REPO / "recipes" / "configs" / "tiny"


def profile_copy(tmp_path: Path, pipeline: str) -> Path:
    """The tiny profile's YAML files beside a new pipeline file; returns the pipeline's path."""
    for f in TINY.glob("*.yaml"):
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "pipeline.yaml").write_text(pipeline)
    return tmp_path / "pipeline.yaml"


HEAD = """name: t
stages:
  - {stage: data, config: data.yaml}
  - {stage: tokenizer, config: tokenizer.yaml}
  - {stage: pretrain, config: pretrain.yaml}
"""


def test_defaults_take_the_latest_earlier_entry_of_the_first_type_present():
    spec = StageSpec("x", "X", "m", (), "r", inputs={"model_name_or_path": ("sft", "pretrain"),
                                                      "models": ("pretrain", "sft", "dpo")})
    fields = {"model_name_or_path": str, "models": list[str] | None}
    earlier = [("data", "data"), ("pretrain", "pretrain"), ("dpo_a", "dpo")]
    assert _default_inputs(spec, fields, earlier) == {"model_name_or_path": "pretrain",
                                                      "models": ["pretrain", "dpo_a"]}
    earlier += [("sft", "sft"), ("sft_long", "sft")]
    assert _default_inputs(spec, fields, earlier)["model_name_or_path"] == "sft_long"  # sft before pretrain
    assert _default_inputs(spec, fields, earlier)["models"] == ["pretrain", "dpo_a", "sft", "sft_long"]


def test_two_eval_entries_with_explicit_inputs(tmp_path):
    pipeline = profile_copy(tmp_path, HEAD + """
  - {id: eval_pretrain, stage: eval, config: evaluation.yaml}
  - {id: eval_second, stage: eval, config: evaluation.yaml,
     inputs: {model_name_or_path: pretrain, dataset_name: data, models: [pretrain, pretrain]}}
""")
    p = load_pipeline(pipeline, run_dir=tmp_path / "run")
    assert p.ids == ["data", "tokenizer", "pretrain", "eval_pretrain", "eval_second"]
    first, second = p.entries[3], p.entries[4]
    assert first.inputs == {"model_name_or_path": "pretrain", "dataset_name": "data", "models": ["pretrain"]}
    assert second.args[0].models == [str(tmp_path / "run" / "pretrain")] * 2
    assert (first.args[0].output_dir, second.args[0].output_dir) == (str(tmp_path / "run" / "eval_pretrain"),
                                                                     str(tmp_path / "run" / "eval_second"))


def test_two_eval_entries_run_and_report_apart(tiny_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    (tmp_path / "quick.yaml").write_text("max_eval_docs: 4\nbigram_baseline: false\nlm_eval_check: false\n"
                                         "model_name_or_path: x\ndataset_name: x\n")
    pipeline = profile_copy(tmp_path, HEAD + """
  - {id: eval_a, stage: eval, config: quick.yaml}
  - {id: eval_b, stage: eval, config: quick.yaml, inputs: {models: [pretrain]}}
""")
    status = run_pipeline(pipeline, run_dir=run_dir)
    assert status == {"data": "skipped", "tokenizer": "skipped", "pretrain": "skipped", "eval_a": "ran",
                      "eval_b": "ran"}
    a = json.loads((run_dir / "eval_a" / "manifest.json").read_text())
    b = json.loads((run_dir / "eval_b" / "manifest.json").read_text())
    assert (a["id"], b["id"], a["stage"]) == ("eval_a", "eval_b", "eval")
    assert a["metrics"]["bits_per_byte"] == b["metrics"]["models"]["pretrain"]
    report = (run_dir / "report.md").read_text()
    assert "## Evaluation (eval_a)" in report and "## Evaluation (eval_b)" in report
    assert "| eval_a | eval |" in report and "| eval_b | eval |" in report
    # --only and --from take entry ids
    assert run_pipeline(pipeline, run_dir=run_dir, only="eval_b") == {"eval_b": "skipped"}
    assert run_pipeline(pipeline, run_dir=run_dir, start_from="eval_a") == {"eval_a": "skipped", "eval_b": "skipped"}
    with pytest.raises(ConfigError, match="'eval' is not an entry"):
        run_pipeline(pipeline, run_dir=run_dir, only="eval")


@pytest.mark.parametrize("entry,field,message", [
    ("{id: e, stage: eval, config: evaluation.yaml, inputs: {model_name_or_path: sft}}",
     "inputs.model_name_or_path", "unknown entry id 'sft'"),
    ("{id: e, stage: eval, config: evaluation.yaml, inputs: {model_name_or_path: later}}",
     "inputs.model_name_or_path", "not an earlier entry"),
    ("{id: e, stage: eval, config: evaluation.yaml, inputs: {model_name_or_path: e}}",
     "inputs.model_name_or_path", "no cycles"),
    ("{id: e, stage: eval, config: evaluation.yaml, inputs: {learning_rate: pretrain}}",
     "inputs.learning_rate", "not a config field"),
    ("{id: e, stage: eval, config: evaluation.yaml, inputs: {dataset_name: [data, data]}}",
     "inputs.dataset_name", "not a list"),
    ("{id: pretrain, stage: eval, config: evaluation.yaml}", "id", "used twice"),
    ("{id: e, stage: eval, config: evaluation.yaml, input: {}}", "input", "unknown key"),
    ("{id: e, stage: evaluate}", "stage", "unknown stage"),
])
def test_a_mistake_names_the_entry_and_field(tmp_path, entry, field, message):
    pipeline = profile_copy(tmp_path, HEAD + f"  - {entry}\n  - {{id: later, stage: eval, config: evaluation.yaml}}\n")
    with pytest.raises(ConfigError) as err:
        load_pipeline(pipeline, run_dir=tmp_path / "run")
    assert err.value.field == field and message in err.value.message
    assert "stages[3]" in err.value.where and str(pipeline) in err.value.where
    assert not (tmp_path / "run").exists()


def test_hfllm_run_names_entry_and_field_on_one_line(tmp_path):
    pipeline = profile_copy(tmp_path, HEAD + "  - {id: eval_x, stage: eval, config: evaluation.yaml, "
                                             "inputs: {model_name_or_path: sft}}\n")
    proc = subprocess.run([str(Path(sys.executable).with_name("hfllm")), "run", str(pipeline)], capture_output=True,
                          text=True, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("hfllm: error:") and "(eval_x)" in proc.stderr
    assert "inputs.model_name_or_path" in proc.stderr


def test_null_input_keeps_the_yaml_value_and_wired_values_follow_upstream(tmp_path):
    _, run_dir, entries = (lambda p: (p.name, p.run_dir, p.entries))(
        load_pipeline(REPO / "recipes/configs/llama-125m/pipeline.yaml", run_dir=tmp_path / "r"))
    script, training, _ = next(e for e in entries if e.id == "pretrain").args
    data = next(e for e in entries if e.id == "data").args[0]
    assert script.dataset_name == "HuggingFaceFW/fineweb-edu" and script.dataset_streaming
    assert script.eval_dataset_name == str(run_dir / "data") and training.eval_strategy == "steps"
    assert script.exclude_held_out_fraction == data.test_fraction == 0.005  # wired, not copied
    tiny = load_pipeline(TINY / "pipeline.yaml", run_dir=tmp_path / "t")
    # reading the data stage's own train split, there is nothing held out to skip
    assert next(e for e in tiny.entries if e.id == "pretrain").args[0].exclude_held_out_fraction is None


def test_every_profile_parses_and_is_wired(tmp_path):
    for profile in ("tiny", "demo", "llama-125m"):
        p = load_pipeline(REPO / "recipes/configs" / profile / "pipeline.yaml", run_dir=tmp_path / profile)
        assert p.name == profile and p.ids[:3] == ["data", "tokenizer", "pretrain"]
        script, training, _ = p.entries[2].args
        assert script.tokenizer_name == str(tmp_path / profile / "tokenizer")
        assert training.output_dir == str(tmp_path / profile / "pretrain")


@pytest.mark.parametrize("profile", ["tiny", "demo", "llama-125m"])
def test_runner_and_recipe_parse_alike(profile, tmp_path):
    """One parser: every stage YAML of a profile builds the same config through the recipe's path as
    through the runner's, apart from the fields the runner wires."""
    p = load_pipeline(REPO / "recipes/configs" / profile / "pipeline.yaml", run_dir=tmp_path)
    for entry in p.entries:
        types, _ = entry.spec.load()
        recipe = to_dict(*parse_args(types, ["--config", str(entry.config_path)]))
        runner = to_dict(*entry.args)
        wired = set(entry.inputs) | {"output_dir", "logging_dir"} | {w.field for w in entry.spec.values}
        assert {k: v for k, v in recipe.items() if k not in wired} == {k: v for k, v in runner.items()
                                                                        if k not in wired}, entry.id


def test_a_config_refused_by_one_is_refused_by_the_other(tmp_path):
    bad = tmp_path / "evaluation.yaml"
    bad.write_text((TINY / "evaluation.yaml").read_text() + "require_below_bigram: 1.5\n")
    types, _ = STAGES["eval"].load()
    with pytest.raises(ConfigError) as recipe:
        parse_args(types, ["--config", str(bad)])
    pipeline = profile_copy(tmp_path, HEAD + "  - {stage: eval, config: evaluation.yaml}\n")
    bad.write_text((TINY / "evaluation.yaml").read_text() + "require_below_bigram: 1.5\n")
    with pytest.raises(ConfigError) as runner:
        load_pipeline(pipeline, run_dir=tmp_path / "run")
    assert recipe.value.one_line() == runner.value.one_line()
    assert "require_below_bigram must be below 1" in runner.value.one_line()


def test_command_line_errors_are_one_line_naming_the_source(tmp_path):
    types, _ = STAGES["pretrain"].load()
    cfg = tmp_path / "p.yaml"
    cfg.write_text("dataset_name: d\ntokenizer_name: t\noutput_dir: o\n")
    with pytest.raises(ConfigError) as err:
        parse_args(types, ["--config", str(cfg), "--num_layers", "two"])
    assert err.value.where == "command line" and "--num_layers" in err.value.message
    with pytest.raises(ConfigError) as err:
        parse_args(types, ["--config", str(cfg), "--no_such_flag", "1"])
    assert "no_such_flag" in err.value.one_line()


def test_fingerprint_ignores_where_and_how_often_it_logs(tmp_path):
    types, _ = STAGES["pretrain"].load()
    cfg = tmp_path / "p.yaml"
    base = "dataset_name: d\ntokenizer_name: t\noutput_dir: o\nlearning_rate: 1.0e-3\n"

    def fingerprint(extra: str) -> str:
        cfg.write_text(base + extra)
        return stage_fingerprint(STAGES["pretrain"], parse_config(types, cfg))[0]

    same = fingerprint("")
    for harmless in ("push_to_hub: true\nhub_model_id: me/model\n", "logging_steps: 3\n", "report_to: trackio\n",
                     "run_name: another\n", "output_dir: elsewhere\n"):
        assert fingerprint(harmless) == same, harmless
    for changing in ("learning_rate: 2.0e-3\n", "max_steps: 7\n", "num_layers: 3\n"):
        assert fingerprint(changing) != same, changing


def test_trl_config_gets_the_precision_rule_unless_the_user_said(tmp_path):
    from trl import SFTConfig

    from hfllm.precision import auto_precision

    cfg = tmp_path / "sft.yaml"
    cfg.write_text("output_dir: o\n")
    (args,) = parse_config((SFTConfig,), cfg)  # TRL alone raises "doesn't support bf16/gpu" here
    assert args.bf16 == (auto_precision() == "bf16") and args._hfllm_precision_chosen_by == "auto"
    cfg.write_text("output_dir: o\nbf16: true\n")
    (args,) = parse_config((SFTConfig,), cfg)
    assert args.bf16 and args.use_cpu  # an explicit bf16 wins; on a CPU it runs there
    assert not hasattr(args, "_hfllm_precision_chosen_by")
    (args,) = parse_config((SFTConfig,), cfg, ["--bf16", "false"])
    assert not args.bf16 and not args.fp16


def test_pretraining_explicit_bf16_wins_over_auto(tmp_path):
    types, _ = STAGES["pretrain"].load()
    cfg = tmp_path / "p.yaml"
    cfg.write_text("dataset_name: d\ntokenizer_name: t\noutput_dir: o\nprecision: auto\nbf16: true\n")
    _, training, _ = parse_config(types, cfg)
    assert training.bf16 and not training.fp16
    cfg.write_text("dataset_name: d\ntokenizer_name: t\noutput_dir: o\nprecision: fp32\nbf16: true\n")
    with pytest.raises(ConfigError, match="keep one"):
        parse_config(types, cfg)


def test_recipe_alone_keeps_report_and_manifest_in_its_output_dir(tmp_path):
    out = tmp_path / "mydata"
    proc = subprocess.run([sys.executable, str(REPO / "recipes" / "data.py"), "--corpus_sources", "pydoc_topics",
                           "--test_fraction", "0.2", "--output_dir", str(out)], capture_output=True, text=True,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "manifest.json").exists() and (out / "report.md").exists()
    assert "## Data" in (out / "report.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mydata"]  # nothing beside it


def test_library_defaults_name_no_profile():
    for spec in STAGES.values():
        types, _ = spec.load()
        for dtype in types:
            for f in dtype.__dataclass_fields__.values():
                assert "runs/" not in str(f.default), (dtype.__name__, f.name)


def test_post_training_chain_wires_each_stage_to_the_one_before(tmp_path):
    """The tiny profile's post-training configs as pipeline entries: SFT on the synthetic data from
    the pretrained model, feedback sampled from SFT, reward model and DPO on those pairs, a control
    SFT on the chosen replies, task evaluation of every model — each input from its entry's dir."""
    pipeline = profile_copy(tmp_path, HEAD + """
  - {stage: synthetic, config: synthetic.yaml}
  - {stage: sft, config: sft.yaml}
  - {stage: feedback, config: feedback.yaml}
  - {stage: reward, config: reward.yaml}
  - {stage: dpo, config: dpo.yaml}
  - {id: sft_chosen, stage: sft, config: sft_chosen.yaml, inputs: {model_name_or_path: sft, dataset_name: feedback}}
  - {stage: task_eval, config: task_eval.yaml, inputs: {plateau_model: sft}}
""")
    run = tmp_path / "run"
    p = load_pipeline(pipeline, run_dir=run)
    wired = {e.id: e.inputs for e in p.entries}
    assert wired["synthetic"] == {"tokenizer_name": "tokenizer"}
    assert wired["sft"] == {"model_name_or_path": "pretrain", "dataset_name": "synthetic"}
    assert wired["feedback"] == {"model_name_or_path": "sft", "dataset_name": "synthetic"}
    assert wired["reward"] == wired["dpo"] == {"model_name_or_path": "sft", "dataset_name": "feedback"}
    assert wired["sft_chosen"] == {"model_name_or_path": "sft", "dataset_name": "feedback"}
    assert wired["task_eval"] == {"models": ["pretrain", "sft", "dpo", "sft_chosen"],
                                  "train_datasets": ["synthetic", "feedback"], "plateau_model": "sft",
                                  "reward_model": "reward", "reward_pairs": "feedback"}
    dpo = p.entries[p.ids.index("dpo")].args
    assert (dpo[0].dataset_name, dpo[2].model_name_or_path) == (str(run / "feedback"), str(run / "sft"))
    assert dpo[1].output_dir == str(run / "dpo")


@dataclass
class CompilingStageArgs:
    output_dir: str = "compiling"


def compiling_stage(args: CompilingStageArgs, *, context) -> dict:
    """A stage whose Trainer compiled its model (as pretraining with `torch_compile: true` does)."""
    from accelerate import Accelerator

    Accelerator(cpu=True, dynamo_backend="inductor")
    return {}


def test_a_stage_does_not_hand_its_compile_setting_to_the_next(tmp_path):
    """Accelerate keeps one AcceleratorState per process: without the runner dropping it, every stage
    after a compiled pretraining compiled its model too (the demo's SFT, reward and DPO: ≈ 170 s)."""
    from accelerate import Accelerator
    from accelerate.utils import DynamoBackend

    spec = StageSpec("compiling", "Compiling", "test_pipeline", ("CompilingStageArgs",), "compiling_stage")
    execute_stage(spec, (CompilingStageArgs(output_dir=str(tmp_path / "compiling")),))
    assert Accelerator(cpu=True).state.dynamo_plugin.backend == DynamoBackend.NO


def test_a_local_dataset_keeps_its_fingerprint_when_datasets_caches_beside_it(tmp_path):
    import datasets

    path = tmp_path / "pairs"
    datasets.DatasetDict({"train": datasets.Dataset.from_list([{"text": "a"}, {"text": "b"}])}).save_to_disk(path)
    before = input_fingerprint(str(path))
    train = datasets.load_from_disk(str(path))["train"]
    train.map(lambda row: {"n": len(row["text"])})  # writes cache-<hash>.arrow into pairs/train
    assert list((path / "train").glob("cache-*.arrow"))
    assert input_fingerprint(str(path)) == before
    datasets.DatasetDict({"train": datasets.Dataset.from_list([{"text": "c"}])}).save_to_disk(tmp_path / "other")
    shutil.rmtree(path)
    (tmp_path / "other").rename(path)
    assert input_fingerprint(str(path)) != before


def test_hfllm_run_killed_mid_stage_resumes_there_and_skips_finished_entries(tiny_run, tmp_path):
    """`hfllm run` SIGKILLed while SFT trains, after the entries before it finished: the same command
    skips those, and SFT continues from its newest checkpoint instead of starting over."""
    import os
    import signal
    import time

    run = tmp_path / "run"
    for done in ("data", "tokenizer", "pretrain"):
        shutil.copytree(tiny_run / done, run / done)
    pipeline = profile_copy(tmp_path, HEAD + """
  - {stage: synthetic, config: synthetic.yaml}
  - {stage: sft, config: sft.yaml}
""")
    sft_yaml = (tmp_path / "sft.yaml").read_text()
    for old, new in [("max_steps: 60", "max_steps: 40"), ("save_steps: 20", "save_steps: 4"),
                     ("per_device_train_batch_size: 32", "per_device_train_batch_size: 8")]:
        sft_yaml = sft_yaml.replace(old, new)
    (tmp_path / "sft.yaml").write_text(sft_yaml)
    command = [str(Path(sys.executable).parent / "hfllm"), "run", str(pipeline), "--run_dir", str(run)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    deadline = time.monotonic() + 600
    while not (run / "sft" / "checkpoint-8" / "trainer_state.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "SFT ended before it could be killed"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    synthetic_started = json.loads((run / "synthetic" / "manifest.json").read_text())["started_at"]
    assert not (run / "sft" / "manifest.json").exists()

    again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    for entry in ("data", "tokenizer", "pretrain", "synthetic"):
        assert f"[hfllm] {entry}: unchanged, skipped" in again.stdout
    assert "[hfllm] sft: running sft" in again.stdout
    assert json.loads((run / "synthetic" / "manifest.json").read_text())["started_at"] == synthetic_started
    sft = json.loads((run / "sft" / "manifest.json").read_text())["metrics"]
    assert sft["steps"] == 40 and int(sft["resumed_from"].split("-")[1]) >= 8
