"""``grpokit vllm-serve``'s argument checks, which run before vLLM is imported (the serving itself is tested on
vLLM's CPU build in tests/rollout/test_vllm_server.py)."""

import re

import pytest

from grpokit.apps.vllm_serve import parse_args
from grpokit.cli import main


def test_defaults_and_flags():
    args = parse_args(["--model", "m", "--port", "9000", "--dtype", "bfloat16", "--tensor-parallel-size", "2"])
    assert (args.model, args.host, args.port, args.dtype, args.tensor_parallel_size) == ("m", "0.0.0.0", 9000,
                                                                                          "bfloat16", 2)  # fmt: skip
    assert args.gpu_memory_utilization == 0.9 and args.max_model_len is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "0"], "--port must be >= 1"),
        (["--gpu-memory-utilization", "1.5"], r"--gpu-memory-utilization must be in \(0, 1\]"),
        (["--request-timeout-s", "0"], "--request-timeout-s must be > 0"),
        (["--dtype", "float64"], "invalid choice"),
    ],
)
def test_bad_arguments_are_refused_naming_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--model", "m", *argv])
    assert re.search(message, capsys.readouterr().err)


def test_a_model_path_without_config_is_an_error_before_vllm(tmp_path, capsys):
    assert main(["vllm-serve", "--model", str(tmp_path)]) == 2
    assert f"--model '{tmp_path}' is not a model directory (no config.json)" in capsys.readouterr().err
