"""Planner and model sizing, against values computed by hand."""

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
