"""Bad config input: one clear line naming the file and field, exit ≠ 0, nothing damaged."""

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from hfllm.configs import check_config, parse_args, parse_config
from hfllm.errors import ConfigError
from hfllm.pipeline import run_pipeline
from hfllm.pretrain import PretrainConfig, PretrainModelArguments, PretrainScriptArguments

PRETRAIN = (PretrainScriptArguments, PretrainConfig, PretrainModelArguments)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_missing_required_field_names_the_file(tmp_path):
    cfg = write(tmp_path / "p.yaml", "max_length: 64\n")
    with pytest.raises(ConfigError) as err:
        parse_config(PRETRAIN, cfg)
    assert err.value.where == str(cfg) and "--dataset_name" in err.value.message


def test_unknown_key_names_file_and_field(tmp_path):
    cfg = write(tmp_path / "p.yaml", "max_length: 64\nlearning_rat: 0.1\n")
    with pytest.raises(ConfigError) as err:
        parse_config(PRETRAIN, cfg)
    line = err.value.one_line()
    assert str(cfg) in line and "'learning_rat'" in line and "unknown key" in line and "learning_rate" in line


@pytest.mark.parametrize("text,field", [("max_length: sixty\n", "max_length"), ("bf16: maybe\n", "bf16"),
                                        ("num_layers: 2.5\n", "num_layers"), ("precision: fp8\n", None)])
def test_wrong_type_names_field(tmp_path, text, field):
    cfg = write(tmp_path / "p.yaml", "dataset_name: d\ntokenizer_name: t\n" + text)
    with pytest.raises(ConfigError) as err:
        parse_config(PRETRAIN, cfg)
    assert str(cfg) in err.value.one_line()
    if field:
        assert err.value.field == field


def test_yaml_scientific_notation_without_dot_is_a_float(tmp_path):
    # YAML 1.1 reads `3e-4` as a string; a float field takes it as 3e-4.
    cfg = write(tmp_path / "p.yaml", "learning_rate: 3e-4\ndataset_name: d\ntokenizer_name: t\noutput_dir: "
                + str(tmp_path / "o") + "\n")
    _, training_args, _ = parse_config(PRETRAIN, cfg)
    assert training_args.learning_rate == 3e-4


def test_cli_overrides_config(tmp_path):
    cfg = write(tmp_path / "p.yaml", "max_length: 64\nnum_layers: 3\ndataset_name: d\ntokenizer_name: t\n")
    script, training, model = parse_args(PRETRAIN, ["--config", str(cfg), "--num_layers", "5",
                                                    "--output_dir", str(tmp_path)])
    assert (training.max_length, model.num_layers) == (64, 5)


def test_check_config_accepts_env_key():
    assert check_config({"env": {"A": "1"}}, PRETRAIN, "x.yaml") == {"env": {"A": "1"}}


def test_recipe_exits_2_with_one_line(tmp_path):
    cfg = write(tmp_path / "p.yaml", "dataset_name: nowhere\nwarmup_step: 3\n")
    proc = subprocess.run([sys.executable, str(REPO / "recipes" / "pretrain.py"), "--config", str(cfg)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("hfllm: error:") and str(cfg) in lines[0] and "warmup_step" in lines[0]
    assert not (tmp_path / "runs").exists()


def test_bad_stage_config_fails_before_anything_runs(tmp_path):
    tiny = REPO / "recipes" / "configs" / "tiny"
    for name in ("data.yaml", "tokenizer.yaml", "evaluation.yaml"):
        (tmp_path / name).write_text((tiny / name).read_text())
    write(tmp_path / "pretrain.yaml", (tiny / "pretrain.yaml").read_text() + "hidden_sise: 3\n")
    write(tmp_path / "pipeline.yaml", (tiny / "pipeline.yaml").read_text())
    run_dir = tmp_path / "run"
    (run_dir / "data").mkdir(parents=True)
    (run_dir / "data" / "keep.txt").write_text("earlier output")
    with pytest.raises(ConfigError, match="hidden_sise"):
        run_pipeline(tmp_path / "pipeline.yaml", run_dir=run_dir)
    assert (run_dir / "data" / "keep.txt").read_text() == "earlier output"
    assert sorted(p.name for p in run_dir.rglob("*")) == ["data", "keep.txt"]


def test_stage_before_its_inputs_exist_is_one_clear_error(tmp_path):
    from hfllm.errors import DataError

    with pytest.raises(DataError) as err:
        run_pipeline(REPO / "recipes/configs/tiny/pipeline.yaml", run_dir=tmp_path / "r", only="tokenizer")
    assert str(tmp_path / "r" / "data") in err.value.one_line() and "has its stage run" in err.value.one_line()


def test_missing_tokenizer_names_the_field(tmp_path):
    from hfllm.modeling import load_tokenizer

    with pytest.raises(ConfigError) as err:
        load_tokenizer(str(tmp_path / "nothing"), field="tokenizer_name")
    assert err.value.field == "tokenizer_name"


def test_a_token_in_a_config_or_command_line_is_refused(tmp_path):
    cfg = write(tmp_path / "p.yaml", "dataset_name: d\ntokenizer_name: t\nhub_token: hf_secret\n")
    with pytest.raises(ConfigError) as err:
        parse_config(PRETRAIN, cfg)
    assert err.value.field == "hub_token" and "hf_secret" not in err.value.one_line()
    cfg = write(tmp_path / "p.yaml", "dataset_name: d\ntokenizer_name: t\n")
    with pytest.raises(ConfigError, match="HF_TOKEN"):
        parse_args(PRETRAIN, ["--config", str(cfg), "--hub_token", "hf_secret"])
