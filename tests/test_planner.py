"""Planner and model sizing, against values computed by hand."""

import json

import pytest
from transformers import AutoModelForCausalLM

from hfllm import planner
from hfllm.cli import main as cli_main
from hfllm.modeling import count_parameters, flops_per_token, llama_config


def test_seed_flops():
    assert planner.training_flops(70e9, 1.4e12) == pytest.approx(5.88e23)
    assert planner.training_flops(175e9, 300e9) == pytest.approx(3.15e23)
    assert planner.training_flops(405e9, 15.6e12) == pytest.approx(3.7908e25)


def test_405b_plan_on_h100s():
    p = planner.plan(405e9, 15.6e12, gpu="H100", num_gpus=16_000, mfu=0.4, price_per_gpu_hour=2.0)
    # 3.7908e25 / (989e12 · 0.4) / 3600 = 26.62M GPU-hours; /16k /24 = 69.3 days; ×$2 = $53.2M
    assert p.gpu_hours == pytest.approx(3.7908e25 / (989e12 * 0.4) / 3600)
    assert 25e6 < p.gpu_hours < 27e6
    assert p.days == pytest.approx(p.gpu_hours / 16_000 / 24)
    assert 68 < p.days < 71
    assert 52e6 <= p.cost <= 54e6


def test_chinchilla_default_and_seed_table_corrections():
    p = planner.plan(1e9)
    assert p.tokens == 20e9
    table = {n: flops for n, _, flops in planner.seed_table()}
    assert table[1e9] == pytest.approx(1.2e20)  # the seed's table said 1.2e21
    assert table[1e12] == pytest.approx(1.2e26)  # and 1.2e25 here


@pytest.mark.parametrize("text,value", [("70B", 70e9), ("1.4T", 1.4e12), ("124M", 124e6), ("3e9", 3e9),
                                        ("15.6t", 15.6e12)])
def test_parse_count(text, value):
    assert planner.parse_count(text) == pytest.approx(value)


@pytest.mark.parametrize("kwargs", [dict(params=-1), dict(params=1e9, tokens=0), dict(params=1e9, gpu="TPU"),
                                    dict(params=1e9, mfu=1.5), dict(params=1e9, num_gpus=0)])
def test_plan_rejects_bad_input(kwargs):
    params = kwargs.pop("params")
    with pytest.raises(ValueError):
        planner.plan(params, **kwargs)


def test_cli_plan_prints_seed_check(capsys):
    assert cli_main(["plan", "--params", "405B", "--tokens", "15.6T", "--num_gpus", "16000"]) == 0
    out = capsys.readouterr().out
    assert "3.79e+25" in out and "2.66e+07" in out and "69.3" in out


def test_cli_plan_bad_count_is_one_line(capsys):
    assert cli_main(["plan", "--params", "lots"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hfllm: error:") and "lots" in err[0]


@pytest.mark.parametrize("shape", [(2, 64, 4, 128, 1000, None, True), (3, 96, 6, 64, 500, 2, False)])
def test_parameter_count_matches_model(shape):
    layers, width, heads, seq, vocab, kv, tie = shape
    config = llama_config(layers, width, heads, seq, vocab, num_kv_heads=kv, tie_word_embeddings=tie)
    model = AutoModelForCausalLM.from_config(config)
    assert count_parameters(config) == sum(p.numel() for p in model.parameters())


def test_flops_per_token_by_hand():
    config = llama_config(2, 64, 4, 128, 1000)  # ffn = round_up(170.67, 64) = 192
    assert config.intermediate_size == 192
    per_layer_matmul = 4 * 64 * 64 + 3 * 64 * 192
    n = 2 * per_layer_matmul + 1000 * 64  # + output projection
    assert flops_per_token(config) == 6 * n + 12 * 2 * 64 * 128


def test_llama_config_rejects_bad_shape():
    with pytest.raises(ValueError, match="divisible"):
        llama_config(2, 100, 3, 128, 1000)
    with pytest.raises(ValueError, match="positive"):
        llama_config(0, 64, 4, 128, 1000)


def test_planner_from_shape(capsys):
    assert cli_main(["plan", "--layers", "2", "--width", "64", "--heads", "4", "--seq", "128", "--vocab", "1000"]) == 0
    expected = count_parameters(llama_config(2, 64, 4, 128, 1000))
    assert f"{expected:,}" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# --flops under a scaling law


def test_hoffmann2022_splits_gophers_budget():
    """G = (αA / βB)^(1/(α+β)) = (0.34·406.4 / 0.28·410.7)^(1/0.62) = 1.3448; N = G·(C/6)^(0.28/0.62):
    5.76e23 FLOPs → 3.22e10 parameters on 2.98e12 tokens (≈ 32B on ≈ 3T, 92.6 per parameter)."""
    params, tokens = planner.PUBLISHED_LAWS["hoffmann2022"].compute_optimal(5.76e23)
    assert params == pytest.approx(1.3448 * (5.76e23 / 6) ** (0.28 / 0.62), rel=1e-3)
    assert params == pytest.approx(3.219e10, rel=1e-3) and tokens == pytest.approx(2.982e12, rel=1e-3)


def test_besiroglu2024_splits_gophers_budget():
    """G = (0.3478·482.01 / 0.3658·2085.43)^(1/0.7136) = 0.11964: 5.76e23 → 7.22e10 on 1.33e12 (≈ 72B on
    ≈ 1.33T, 18.4 per parameter: the 20:1 rule's neighbourhood)."""
    params, tokens = planner.PUBLISHED_LAWS["besiroglu2024"].compute_optimal(5.76e23)
    assert params == pytest.approx(0.11964 * (5.76e23 / 6) ** (0.3658 / 0.7136), rel=1e-3)
    assert params == pytest.approx(7.225e10, rel=1e-3) and tokens == pytest.approx(1.329e12, rel=1e-3)
    assert 18 < tokens / params < 19


def test_cli_plan_flops_defaults_to_besiroglu2024_and_shows_the_20_to_1_split(capsys):
    assert cli_main(["plan", "--flops", "5.76e23"]) == 0
    out = capsys.readouterr().out
    assert "besiroglu2024" in out and "N 7.22e+10  D 1.33e+12  (18.4 per parameter)" in out
    # 20:1 — N = sqrt(5.76e23 / 120) = 6.93e10, D = 1.39e12
    assert "20 tokens per parameter" in out and "N 6.93e+10  D 1.39e+12" in out
    assert "GPU-hours" in out


def test_cli_plan_flops_hoffmann2022_and_an_inference_heavy_ratio(capsys):
    assert cli_main(["plan", "--flops", "5.76e23", "--law", "hoffmann2022", "--tokens_per_param", "150"]) == 0
    out = capsys.readouterr().out
    assert "N 3.22e+10  D 2.98e+12  (92.6 per parameter)" in out
    # 150:1 — N = sqrt(5.76e23 / 900) = 2.53e10, D = 3.79e12
    assert "150 tokens per parameter" in out and "N 2.53e+10  D 3.79e+12" in out


def test_cli_plan_params_keeps_its_behaviour_with_a_ratio(capsys):
    assert cli_main(["plan", "--params", "1B", "--tokens_per_param", "150"]) == 0
    out = capsys.readouterr().out
    assert "1.5e+11  (150.0 per parameter)" in out and "9e+20" in out  # 6 · 1e9 · 1.5e11


@pytest.mark.parametrize("content,expected", [
    (None, "no such law file"),
    ("not json", "not a JSON law file"),
    ('{"E": 1.7, "A": 406.4, "B": 410.7, "alpha": 0.34}', "field 'beta': missing or not a number"),
    ('{"E": 1.7, "A": -1, "B": 410.7, "alpha": 0.34, "beta": 0.28}', "field 'A': must be positive"),
    ("[1, 2]", "a JSON object of constants"),
])
def test_cli_plan_bad_law_file_is_one_line(tmp_path, capsys, content, expected):
    law = tmp_path / "law.json"
    if content is not None:
        law.write_text(content)
    assert cli_main(["plan", "--flops", "1e21", "--law", str(law)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hfllm: error:") and expected in err[0], err


def test_cli_plan_flops_with_params_is_one_line(capsys):
    assert cli_main(["plan", "--flops", "1e21", "--params", "1B"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--flops sets N and D itself" in err[0]


def test_a_fitted_law_file_plans_like_a_published_one(tmp_path):
    """law.json as the scaling stage writes it (constants, intervals, and more) loads as a Law."""
    record = {"law": "L(N, D) = E + A / N^alpha + B / D^beta", "E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34,
              "beta": 0.28, "intervals": {"alpha": [0.3, 0.38]}, "parameters": "every parameter", "sweep": []}
    (tmp_path / "law.json").write_text(json.dumps(record))
    law = planner.load_law(str(tmp_path / "law.json"))
    published = planner.PUBLISHED_LAWS["hoffmann2022"]
    assert law.compute_optimal(5.76e23) == pytest.approx(published.compute_optimal(5.76e23))
    assert law.intervals == {"alpha": (0.3, 0.38)}
