"""The launch configs in recipes/accelerate/ are what accelerate's own launcher reads, and the README's
launch lines are the ones they hold. (They run on GPUs; what runs here is tests/test_distributed.py.)"""

import re

import pytest
from conftest import REPO

CONFIGS = REPO / "recipes" / "accelerate"
EXPECTED = {  # file: (how accelerate launches it, processes, machines)
    "cpu.yaml": ("one process", 1, 1),
    "single_gpu.yaml": ("one process", 1, 1),
    "ddp.yaml": ("multi_gpu", 8, 1),
    "fsdp2.yaml": ("fsdp", 8, 1),
    "zero3.yaml": ("deepspeed", 8, 1),
    "multi_node.yaml": ("multi_gpu", 16, 2),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_accelerate_launch_reads_the_config(name):
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    args = launch_command_parser().parse_args(["--config_file", str(CONFIGS / name), "recipes/pretrain.py"])
    args, _, _ = _validate_launch_command(args)  # unknown keys and contradictions raise here
    kind = ("deepspeed" if args.use_deepspeed else "fsdp" if args.use_fsdp else "multi_gpu" if args.multi_gpu
            else "one process")
    assert (kind, args.num_processes, args.num_machines) == EXPECTED[name]
    if name == "fsdp2.yaml":
        from accelerate.utils.launch import prepare_multi_gpu_env

        env = prepare_multi_gpu_env(args)
        assert (env["FSDP_VERSION"], env["FSDP_STATE_DICT_TYPE"]) == ("2", "FULL_STATE_DICT")
    if name == "zero3.yaml":
        assert args.zero_stage == 3 and str(args.zero3_save_16bit_model).lower() == "true"


def test_every_config_has_its_launch_line_in_the_readme():
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("**Scaling out**"):readme.index("**Pre-emption and damaged checkpoints**")]
    launched = set(re.findall(r"accelerate launch --config_file recipes/accelerate/(\w+\.yaml)", section))
    assert launched == set(EXPECTED) - {"cpu.yaml"}
    for name in launched:  # each line as the config's own header comment gives it
        header = (CONFIGS / name).read_text()
        assert f"--config_file recipes/accelerate/{name}" in header
    assert [section.count(f"--machine_rank {r} --main_process_ip") for r in (0, 1)] == [1, 1]
