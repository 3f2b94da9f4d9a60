import os
import socket
import time

# One OpenMP thread: on small machines two threads stall whenever another process wants a core.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from grpokit.config import GRPOConfig, build_config  # noqa: E402

torch.set_num_threads(1)

# Shared by the trainer and engine tests: a tiny saved model and a GRPO config around it.
ALPHABET = "abcdefgh "
PROMPTS = ["ab", "cd", "ef", "gh", "ba", "dc", "fe", "hg"]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A 2-layer, hidden-32 Qwen2 with a character tokenizer, saved like any Hub checkpoint."""
    from grpokit.models.tiny import build_char_tokenizer, build_tiny_model

    path = tmp_path_factory.mktemp("tiny")
    tokenizer = build_char_tokenizer(ALPHABET)
    build_tiny_model(tokenizer, path, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, seed=0)
    return path


@pytest.fixture
def make_config(tiny_model_dir, tmp_path):
    def make(**sections) -> GRPOConfig:
        data = {
            "max_steps": 3,
            "model": {"name_or_path": str(tiny_model_dir), "device": "cpu"},
            "data": {"prompts_per_step": 2, "shuffle": False},
            "generation": {"max_new_tokens": 6},
            "optim": {"learning_rate": 3e-3},
            "algorithm": {"num_generations": 4},
            "logging": {
                "output_dir": str(tmp_path / "runs"),
                "run_name": "run",
                "quiet": True,
                "report_to": [],
                "report": False,
            },
        }
        for section, values in sections.items():
            if isinstance(values, dict):
                data.setdefault(section, {}).update(values)
            else:
                data[section] = values
        return build_config(GRPOConfig, data)

    return make


@pytest.fixture
def rows():
    return [{"prompt": p} for p in PROMPTS]


# -- several processes (gloo) ---------------------------------------------------------------------------------
# The processes are forked from the test process (no re-import: a launch costs about a second) and each one
# builds its ``accelerate.Accelerator`` from the usual launcher variables (RANK, WORLD_SIZE, MASTER_ADDR...),
# as under ``accelerate launch``.

WORLD_SIZE = 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _child(rank: int, fn, port: int, args: tuple) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD_SIZE), LOCAL_WORLD_SIZE=str(WORLD_SIZE),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1",
    )  # fmt: skip
    torch.set_num_threads(1)
    try:
        fn(rank, *args)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def launch_processes(fn, *args, timeout: float = 120.0) -> None:
    """Run ``fn(rank, *args)`` in WORLD_SIZE forked processes; fail (and kill them) on an error or a hang."""
    context = torch.multiprocessing.start_processes(
        _child, args=(fn, _free_port(), args), nprocs=WORLD_SIZE, join=False, start_method="fork"
    )
    deadline = time.monotonic() + timeout
    try:
        while not context.join(timeout=1.0):
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{WORLD_SIZE}-process run did not finish in {timeout:.0f} s (a collective out of step?)"
                )
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()


@pytest.fixture
def launch():
    """``launch(fn, *args, timeout=120)``: run ``fn(rank, *args)`` in 2 forked gloo processes."""
    return launch_processes
