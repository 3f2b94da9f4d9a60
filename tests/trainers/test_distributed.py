"""Data-parallel GRPO with 2 CPU processes (gloo), against the same run in 1 process.

The processes are forked from the test process (no re-import: a launch costs about a second) and each one
builds its ``accelerate.Accelerator`` from the usual launcher variables (RANK, WORLD_SIZE, MASTER_ADDR...),
as under ``accelerate launch``.
"""

from __future__ import annotations

import json
import os
import socket
import time

import pytest
import torch
from safetensors.torch import load_file

from grpokit.algorithms import group_advantages
from grpokit.tracking import read_metrics
from grpokit.trainers.distributed import DataParallel, gather_group_advantages
from grpokit.trainers.grpo import GRPOTrainer

WORLD = 2
ESTIMATORS = ("grpo", "grpo_batch_norm", "dr_grpo", "rloo", "rank")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _child(rank: int, fn, port: int, args: tuple) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_WORLD_SIZE=str(WORLD),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1",
    )  # fmt: skip
    torch.set_num_threads(1)
    try:
        fn(rank, *args)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def launch(fn, *args, timeout: float = 120.0) -> None:
    """Run ``fn(rank, *args)`` in WORLD forked processes; fail (and kill them) on an error or a hang."""
    context = torch.multiprocessing.start_processes(
        _child, args=(fn, _free_port(), args), nprocs=WORLD, join=False, start_method="fork"
    )
    deadline = time.monotonic() + timeout
    try:
        while not context.join(timeout=1.0):
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{WORLD}-process run did not finish in {timeout:.0f} s (a collective out of step?)"
                )
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()


# ---------------------------------------------------------------------------------------------------------
# Advantages of a group that spans both processes
# ---------------------------------------------------------------------------------------------------------

# 8 responses in 3 groups; rank 0 holds rows 0..2, rank 1 rows 3..7, so group 1 is split 1 + 3.
REWARDS = torch.tensor([1.0, 0.0, 0.5, 2.0, 0.25, 1.0, 3.0, 3.0])
GROUP_IDS = torch.tensor([0, 0, 1, 1, 1, 1, 2, 2])
SPLIT = 3


def _advantages_worker(rank: int, out_dir: str) -> None:
    from accelerate import Accelerator

    parallel = DataParallel(Accelerator(cpu=True))
    rows = slice(0, SPLIT) if rank == 0 else slice(SPLIT, None)
    result = {
        name: gather_group_advantages(REWARDS[rows], GROUP_IDS[rows], name, 1e-6, parallel=parallel).tolist()
        for name in ESTIMATORS
    }
    with open(os.path.join(out_dir, f"advantages-{rank}.json"), "w") as f:
        json.dump(result, f)


def test_a_group_split_across_processes_gets_its_one_process_advantages(tmp_path):
    launch(_advantages_worker, str(tmp_path))
    parts = [json.loads((tmp_path / f"advantages-{r}.json").read_text()) for r in range(WORLD)]
    for name in ESTIMATORS:
        gathered = torch.tensor(parts[0][name] + parts[1][name])  # rank order = global row order
        # The same estimator on the same 8 rewards: bit-identical, including the split group 1.
        assert torch.equal(gathered, group_advantages(REWARDS, GROUP_IDS, name, 1e-6)), name
    # Sanity of the split group: 4 members, mean 0.9375, so 0.5 < mean < 1.0 gives -, +, -, + signs.
    assert [v > 0 for v in parts[0]["grpo"][2:] + parts[1]["grpo"][:3]] == [False, True, False, True]


# ---------------------------------------------------------------------------------------------------------
# Training: 2 processes equal 1, and the checkpoint resumes on another number of processes
# ---------------------------------------------------------------------------------------------------------


def fraction_of_a(prompts, completions, **columns):
    return [c.count("a") / max(len(c), 1) for c in completions]


def _sections(output_dir: str, run_name: str, aggregation: str, resume: str | None = None) -> dict:
    return {
        "max_steps": 3,
        "data": {"prompts_per_step": 4, "shuffle": True},
        "generation": {"max_new_tokens": 6, "per_group_seed": True},
        "algorithm": {"num_generations": 4, "loss_aggregation": aggregation, "beta": 0.05},
        "optim": {"learning_rate": 3e-3, "gradient_accumulation_steps": 2},
        "checkpoint": {"save_steps": 1, "save_total_limit": None, "resume": resume},
        "logging": {
            "output_dir": output_dir,
            "run_name": run_name,
            "quiet": True,
            "report_to": [],
            "report": False,
        },
    }


def _train_worker(rank: int, config, rows) -> None:
    GRPOTrainer(config, reward_funcs=[fraction_of_a], dataset=rows).train()


def _weights(directory) -> dict[str, torch.Tensor]:
    return load_file(str(directory / "model.safetensors"))


def _assert_same_weights(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        # Equal up to float32 summation order (different micro-batch shapes and DDP's averaging): Adam's
        # normalised steps of 3e-3 leave differences of a few 1e-7; a different sample or a missing
        # factor of 2 in the loss moves weights by ~1e-3.
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=2e-5, msg=name)


@pytest.mark.parametrize("aggregation", ["token_mean", "sequence_mean"])
def test_two_processes_train_like_one_and_resume_on_one(make_config, rows, tmp_path, aggregation):
    out = str(tmp_path / "runs")
    two = make_config(**_sections(out, "two", aggregation))
    launch(_train_worker, two, rows)
    one = GRPOTrainer(
        make_config(**_sections(out, "one", aggregation)), reward_funcs=[fraction_of_a], dataset=rows
    )
    one_run = one.train().run_dir
    two_run = tmp_path / "runs" / "two"

    # Rank 0 alone wrote the logs: one row per step, with the rewards of all 16 completions (same samples).
    one_rows, two_rows = read_metrics(one_run), read_metrics(two_run)
    assert [r["step"] for r in two_rows] == [1, 2, 3]
    for a, b in zip(one_rows, two_rows):
        assert b["reward/mean"] == pytest.approx(a["reward/mean"], abs=1e-6)
        assert b["completions/mean_length"] == a["completions/mean_length"]
        assert b["kl"] == pytest.approx(a["kl"], rel=1e-4, abs=1e-7)
        # Adam is blind to the gradient's scale, the norm is not: DDP's mean must be the global gradient.
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
    _assert_same_weights(_weights(two_run / "final"), _weights(one_run / "final"))
    assert _weights(one_run / "final")  # the comparison above saw every parameter

    # The 2-process checkpoint of step 2 resumes on 1 process and finishes like the 1-process run.
    step_2 = str(two_run / "checkpoints" / "step-000002")
    resumed = GRPOTrainer(
        make_config(**_sections(out, "two", aggregation, resume=step_2)),
        reward_funcs=[fraction_of_a],
        dataset=rows,
    )
    assert resumed.start_step == 2
    resumed.train()
    _assert_same_weights(_weights(two_run / "final"), _weights(one_run / "final"))
