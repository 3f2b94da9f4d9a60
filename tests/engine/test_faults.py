"""Faults during training: non-finite updates, out of memory, crashes and a full disk while saving, stop
signals, failing rewards, long prompts; and the pieces that handle them."""

import errno
import json
import math
import os
import signal

import pytest
import torch

from grpokit.engine import checkpoint as ckpt
from grpokit.engine import faults
from grpokit.engine.harness import rewind_run_dir
from grpokit.tracking import read_metrics
from grpokit.trainers.grpo import GRPOTrainer

MACHINE_KEYS = ("time/", "throughput/", "memory/")


def fraction_of_a(prompts, completions, **columns):
    return [c.count("a") / max(len(c), 1) for c in completions]


def comparable(run_dir):
    return [{k: v for k, v in m.items() if not k.startswith(MACHINE_KEYS)} for m in read_metrics(run_dir)]


def weights(run_dir):
    return (run_dir / "final" / "model.safetensors").read_bytes()


def with_resume(config, run_dir):
    return config.model_copy(
        update={"checkpoint": config.checkpoint.model_copy(update={"resume": str(run_dir)})}
    )


def wrap_policy_loss(monkeypatch, on_call):
    """Replace the loss the trainer calls; ``on_call(index, loss)`` may change the loss or raise."""
    from grpokit.trainers import objective

    real = objective.compute_loss
    count = [0]

    def wrapped(*args, **kwargs):
        count[0] += 1
        loss, metrics = real(*args, **kwargs)
        return on_call(count[0], loss), metrics

    monkeypatch.setattr(objective, "compute_loss", wrapped)


@pytest.fixture
def reference_run(make_config, rows, tmp_path):
    """An uninterrupted 4-step run (beta > 0, so the reference model is checkpointed too)."""

    def run(**sections):
        config = make_config(
            max_steps=4, algorithm={"beta": 0.1}, logging={"run_name": "reference"}, **sections
        )
        return GRPOTrainer(config, reward_funcs=[fraction_of_a], dataset=rows).train().run_dir

    return run


# ---------------------------------------------------------------------------------------------------------
# Non-finite loss or gradients
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["loss", "gradient"])
def test_a_non_finite_update_is_skipped_counted_and_training_continues(make_config, rows, monkeypatch, where):
    trainer = GRPOTrainer(make_config(max_steps=3), reward_funcs=[fraction_of_a], dataset=rows)
    poison = [False]
    for p in trainer.model.parameters():
        p.register_hook(lambda grad: grad * math.inf if poison[0] else grad)
    snapshots = {}

    def on_call(index, loss):  # one loss call per step here: index == step
        snapshots[index] = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        poison[0] = index == 2 and where == "gradient"
        return loss * math.nan if index == 2 and where == "loss" else loss

    wrap_policy_loss(monkeypatch, on_call)
    metrics = read_metrics(trainer.train().run_dir)
    assert [m["faults/nonfinite_skipped"] for m in metrics] == [0.0, 1.0, 0.0]
    assert [m["optimizer_steps"] for m in metrics] == [1.0, 0.0, 1.0]
    # Step 2 changed nothing: the weights entering step 3 are those entering step 2 ...
    assert all(torch.equal(snapshots[2][k], snapshots[3][k]) for k in snapshots[2])
    # ... and Adam counted two steps, not three.
    assert all(state["step"] == 2 for state in trainer.optimizer.state.values())
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_consecutive_non_finite_updates_stop_with_the_last_good_checkpoint(make_config, rows, monkeypatch):
    config = make_config(max_steps=5, optim={"max_consecutive_nonfinite": 2}, checkpoint={"save_steps": 1})
    trainer = GRPOTrainer(config, reward_funcs=[fraction_of_a], dataset=rows)
    wrap_policy_loss(monkeypatch, lambda index, loss: loss * math.nan if index >= 2 else loss)
    with pytest.raises(faults.NonFiniteUpdatesError) as info:
        trainer.train()
    run = trainer.run_dir
    message = str(info.value)
    assert "2 optimizer steps in a row had a non-finite loss or gradient norm (the last at step 3" in message
    assert f"the last checkpoint is {run / 'checkpoints' / 'step-000002'}" in message
    assert [m["step"] for m in read_metrics(run)] == [1, 2, 3]  # the failing step is logged (NaN loss shows)
    assert math.isnan(read_metrics(run)[-1]["loss"])
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step-000001", "step-000002"]  # none of step 3
    assert not (run / "final").exists()


def test_non_finite_streak_survives_a_resume():
    tracker = faults.NonFiniteTracker(3)
    tracker.update(skipped=2, applied=0)
    restored = faults.NonFiniteTracker(3)
    restored.load_state_dict(tracker.state_dict())
    restored.update(skipped=1, applied=0)
    with pytest.raises(faults.NonFiniteUpdatesError, match="3 optimizer steps in a row"):
        restored.check(step=7, last_checkpoint=None)
    restored.update(skipped=0, applied=1)  # a good update ends the streak
    restored.check(step=8, last_checkpoint=None)
    assert restored.total == 3


# ---------------------------------------------------------------------------------------------------------
# Out of memory
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        MemoryError(),
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: not enough memory: out of memory"
        ),
    ],
    ids=["torch", "python", "runtime-error"],
)
def test_every_way_of_running_out_of_memory_is_recognised(error):
    assert faults.is_out_of_memory(error)


def test_other_errors_are_not_out_of_memory():
    assert not faults.is_out_of_memory(RuntimeError("shape mismatch"))
    assert not faults.is_out_of_memory(ValueError("out of memory"))  # not an allocation failure


def test_out_of_memory_in_generation_checkpoints_the_last_step_and_resumes_exactly(
    make_config, rows, reference_run
):
    reference = reference_run()
    config = make_config(max_steps=4, algorithm={"beta": 0.1})  # save_steps=0: no periodic checkpoint
    trainer = GRPOTrainer(config, reward_funcs=[fraction_of_a], dataset=rows)
    real_generate = trainer.sampler.generate
    calls = [0]

    def generate(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_generate(*args, **kwargs)

    trainer.sampler.generate = generate
    with pytest.raises(faults.OutOfMemoryAbort) as info:
        trainer.train()
    run = trainer.run_dir
    message = str(info.value)
    assert message.startswith(
        "out of memory during generate at step 3 (OutOfMemoryError: CUDA out of memory."
    )
    for knob in ("data.prompts_per_step=2", "algorithm.num_generations=4", "generation.max_new_tokens=6"):
        assert knob in message
    assert f"{run / 'checkpoints' / 'step-000002'} holds the last completed step" in message
    assert f"grpokit train --resume {run}" in message
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step-000002"]

    GRPOTrainer(with_resume(config, run), reward_funcs=[fraction_of_a], dataset=rows).train()
    assert comparable(run) == comparable(reference)
    assert weights(run) == weights(reference)


def test_out_of_memory_after_an_optimizer_step_names_the_older_checkpoint(make_config, rows, monkeypatch):
    # Two optimizer steps per step (mini_batch_size 4 of N = 8); the 6th loss call is step 3's second one.
    config = make_config(max_steps=4, optim={"mini_batch_size": 4}, checkpoint={"save_steps": 2})
    trainer = GRPOTrainer(config, reward_funcs=[fraction_of_a], dataset=rows)

    def on_call(index, loss):
        if index == 6:
            raise RuntimeError("CUDA error: out of memory")
        return loss

    wrap_policy_loss(monkeypatch, on_call)
    with pytest.raises(faults.OutOfMemoryAbort) as info:
        trainer.train()
    message = str(info.value)
    assert message.startswith(
        "out of memory during update at step 3 (RuntimeError: CUDA error: out of memory)"
    )
    for knob in (
        "optim.gradient_accumulation_steps=1",
        "optim.gradient_checkpointing=False",
        "optim.mini_batch_size=4",
    ):
        assert knob in message
    assert "the update had already changed the weights, so step 2 cannot be saved" in message
    assert f"the newest checkpoint is {trainer.run_dir / 'checkpoints' / 'step-000002'}" in message
    assert [p.name for p in ckpt.list_checkpoints(trainer.run_dir)] == ["step-000002"]


def test_out_of_memory_in_the_first_step_says_nothing_completed(make_config, rows):
    trainer = GRPOTrainer(make_config(max_steps=2), reward_funcs=[fraction_of_a], dataset=rows)

    def generate(*args, **kwargs):
        raise MemoryError()

    trainer.sampler.generate = generate
    with pytest.raises(faults.OutOfMemoryAbort, match="no training step had completed"):
        trainer.train()
    assert ckpt.list_checkpoints(trainer.run_dir) == []


# ---------------------------------------------------------------------------------------------------------
# Crashes and a full disk while saving
# ---------------------------------------------------------------------------------------------------------


def half_written_save(monkeypatch, fail_at_save, error):
    """Make the ``fail_at_save``-th ``torch.save`` of trainer state write half its bytes, then raise."""
    real = torch.save
    count = [0]

    def save(obj, path, *args, **kwargs):
        count[0] += 1
        if count[0] == fail_at_save:
            real(obj, path, *args, **kwargs)
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 2)
            raise error
        return real(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)


def test_crash_mid_save_leaves_the_previous_checkpoint_to_resume_from(
    make_config, rows, reference_run, monkeypatch
):
    reference = reference_run()
    config = make_config(max_steps=4, algorithm={"beta": 0.1}, checkpoint={"save_steps": 1})
    trainer = GRPOTrainer(config, reward_funcs=[fraction_of_a], dataset=rows)
    half_written_save(monkeypatch, 2, KeyboardInterrupt())  # the process dies while writing step 2
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    monkeypatch.undo()
    run = trainer.run_dir
    # What a SIGKILL at that moment leaves (no cleanup runs): a half-written temporary.
    stale = run / "checkpoints" / ".tmp-step-000002"
    stale.mkdir()
    (stale / "trainer_state.pt").write_bytes(b"PK\x03\x04 half a zip")
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step-000001"]
    assert ckpt.load_trainer_state(run / "checkpoints" / "step-000001")["step"] == 1

    resumed = GRPOTrainer(with_resume(config, run), reward_funcs=[fraction_of_a], dataset=rows)
    assert resumed.start_step == 1
    resumed.train()
    assert comparable(run) == comparable(reference)
    assert weights(run) == weights(reference)
    assert not stale.exists()


def test_disk_full_while_saving_is_a_clear_error_and_keeps_the_last_checkpoint(
    make_config, rows, monkeypatch
):
    config = make_config(max_steps=3, checkpoint={"save_steps": 1})
    trainer = GRPOTrainer(config, reward_funcs=[fraction_of_a], dataset=rows)
    half_written_save(monkeypatch, 2, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(faults.CheckpointWriteError) as info:
        trainer.train()
    monkeypatch.undo()
    root = trainer.run_dir / "checkpoints"
    assert str(info.value) == (
        f"could not write checkpoint {root / 'step-000002'}: No space left on device (errno {errno.ENOSPC}); "
        f"the newest complete checkpoint is {root / 'step-000001'}. Free space (or fix permissions) in the "
        "output directory and resume from it."
    )
    assert sorted(p.name for p in root.iterdir()) == ["step-000001"]  # the temporary is gone
    assert ckpt.find_checkpoint(str(trainer.run_dir), "unused").name == "step-000001"
    assert ckpt.load_trainer_state(root / "step-000001")["step"] == 1


class Linear(torch.nn.Linear):
    def save_pretrained(self, path, safe_serialization=True):
        from safetensors.torch import save_model

        os.makedirs(path, exist_ok=True)
        save_model(self, os.path.join(path, "model.safetensors"))


def test_next_save_cleans_what_a_kill_mid_save_left(tmp_path):
    root = tmp_path / "checkpoints"
    # Killed between the two renames of a re-save of step 3: the old one aside, the new one not in place.
    (root / ".old-step-000003").mkdir(parents=True)
    torch.save({"step": 3}, root / ".old-step-000003" / ckpt.STATE_FILE)
    (root / ".tmp-step-000003").mkdir()
    # Killed while writing step 5 (a later run saves on another schedule, so step 5 is never written again).
    (root / ".tmp-step-000005").mkdir()
    ckpt.Checkpointer(tmp_path).save(4, Linear(1, 1), None, {"step": 4})
    assert sorted(p.name for p in root.iterdir()) == ["step-000003", "step-000004"]
    assert ckpt.load_trainer_state(root / "step-000003") == {"step": 3}


def test_a_directory_without_trainer_state_is_not_a_checkpoint(tmp_path):
    """A step directory copied by hand and cut short (no trainer_state.pt) is never resumed from."""
    good = tmp_path / "checkpoints" / "step-000002"
    good.mkdir(parents=True)
    torch.save({"step": 2}, good / ckpt.STATE_FILE)
    (tmp_path / "checkpoints" / "step-000004").mkdir()
    assert ckpt.list_checkpoints(tmp_path) == [good]
    assert ckpt.find_checkpoint(str(tmp_path), "unused") == good


def test_atomic_directory_replaces_an_existing_one_and_cleans_up_on_error(tmp_path):
    final = tmp_path / "final"
    with ckpt.atomic_directory(final) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(OSError), ckpt.atomic_directory(final) as tmp:
        (tmp / "a").write_text("2")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert (final / "a").read_text() == "1"  # untouched by the failed write
    with ckpt.atomic_directory(final) as tmp:
        (tmp / "b").write_text("3")
    assert [p.name for p in tmp_path.iterdir()] == ["final"]  # no .tmp-final or .old-final left
    assert [p.name for p in final.iterdir()] == ["b"]


def test_corrupt_trainer_state_names_the_checkpoint(tmp_path):
    path = tmp_path / "step-000004"
    path.mkdir()
    (path / ckpt.STATE_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(
        ValueError, match=r"step-000004/trainer_state.pt cannot be read .*resume from an earlier"
    ):
        ckpt.load_trainer_state(path)


# ---------------------------------------------------------------------------------------------------------
# Resume bookkeeping
# ---------------------------------------------------------------------------------------------------------


def test_rewind_drops_rows_after_the_checkpoint_and_a_cut_line(tmp_path):
    lines = [json.dumps({"step": s, "loss": s / 10}) for s in (1, 2, 3, 4)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 5, "lo')  # killed mid-write
    (tmp_path / "samples.jsonl").write_text("".join(json.dumps({"step": s}) + "\n" for s in (1, 1, 2, 3)))
    for step in (2, 4, 6):
        (tmp_path / "checkpoints" / f"step-{step:06d}").mkdir(parents=True)
        torch.save({"step": step}, tmp_path / "checkpoints" / f"step-{step:06d}" / ckpt.STATE_FILE)
    dropped = rewind_run_dir(tmp_path, 2)
    assert dropped == {"metrics.jsonl": 3, "samples.jsonl": 1, "checkpoints_set_aside": 2}
    assert (tmp_path / "metrics.jsonl").read_text() == "\n".join(lines[:2]) + "\n"
    assert [json.loads(x)["step"] for x in (tmp_path / "samples.jsonl").read_text().splitlines()] == [1, 1, 2]
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["abandoned-step-000004", "abandoned-step-000006", "step-000002"]
    assert ckpt.find_checkpoint(str(tmp_path), "unused").name == "step-000002"
    assert rewind_run_dir(tmp_path, 2) == {
        "metrics.jsonl": 0,
        "samples.jsonl": 0,
        "checkpoints_set_aside": 0,
    }


# ---------------------------------------------------------------------------------------------------------
# Stop signals
# ---------------------------------------------------------------------------------------------------------


def test_first_signal_is_recorded_second_one_stops_at_once():
    # A job started in the background by a non-interactive shell inherits SIGINT ignored; this test is about
    # Python's own Ctrl-C handler, so it installs that one for its duration.
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with faults.StopSignals() as stop:
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.requested == signal.SIGTERM and stop.name == "SIGTERM"
            with pytest.raises(KeyboardInterrupt):  # the second signal goes to the previous handler
                os.kill(os.getpid(), signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGINT, outer)


def test_a_second_signal_stays_ignored_where_it_was_ignored():
    outer = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with faults.StopSignals() as stop:
            os.kill(os.getpid(), signal.SIGINT)
            assert stop.requested == signal.SIGINT
            os.kill(os.getpid(), signal.SIGINT)  # back to the previous disposition: ignored, no exception
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, outer)


def test_sigterm_during_a_step_saves_it_and_raises(make_config, rows):
    trainer = GRPOTrainer(make_config(max_steps=4), reward_funcs=[fraction_of_a], dataset=rows)
    real_generate = trainer.sampler.generate
    calls = [0]

    def generate(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives in the middle of step 2
        return real_generate(*args, **kwargs)

    trainer.sampler.generate = generate
    with pytest.raises(faults.TrainingInterrupted) as info:
        trainer.train()
    assert info.value.exit_code == 143
    assert [m["step"] for m in read_metrics(trainer.run_dir)] == [1, 2]  # step 2 was finished
    assert [p.name for p in ckpt.list_checkpoints(trainer.run_dir)] == ["step-000002"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored


# ---------------------------------------------------------------------------------------------------------
# Rewards and prompts in a real run
# ---------------------------------------------------------------------------------------------------------


def test_reward_failure_policy_in_a_run(make_config, rows, caplog):
    calls = [0]

    def flaky(prompts, completions, **columns):
        calls[0] += 1
        if calls[0] == 2:
            raise ConnectionError("grader unreachable")
        return [1.0] * len(completions)

    raising = make_config(max_steps=2)
    with pytest.raises(
        ValueError, match="reward function 'flaky' raised ConnectionError: grader unreachable"
    ):
        GRPOTrainer(raising, reward_funcs=[flaky], dataset=rows).train()

    calls[0] = 0
    fallback = make_config(
        max_steps=3, rewards={"reward_failure": "fallback", "reward_fallback_value": -1.0},
        logging={"run_name": "fallback"},
    )  # fmt: skip
    metrics = read_metrics(GRPOTrainer(fallback, reward_funcs=[flaky], dataset=rows).train().run_dir)
    assert [m["rewards/flaky/failures"] for m in metrics] == [0.0, 8.0, 0.0]
    assert [m["reward/mean"] for m in metrics] == [1.0, -1.0, 1.0]


@pytest.mark.parametrize(
    ("policy", "key", "count", "kept"), [("left", "truncated", 2, 8), ("skip", "skipped", 2, 6)]
)
def test_long_prompts_are_counted_and_truncated_or_skipped(make_config, policy, key, count, kept):
    rows = [{"prompt": p} for p in ["ab", "cd", "ef", "gh", "ba", "dc", "abcdefgh", "hgfedcba"]]
    config = make_config(max_steps=1, generation={"max_prompt_length": 4, "prompt_truncation": policy})
    trainer = GRPOTrainer(config, reward_funcs=[fraction_of_a], dataset=rows)
    assert len(trainer.dataset) == kept
    assert read_metrics(trainer.train().run_dir)[0][f"data/{key}_prompts"] == count


def test_a_long_prompt_under_error_is_named_before_the_model_loads(make_config, monkeypatch):
    import grpokit.models.loading

    def forbidden(*args, **kwargs):
        raise AssertionError("the model was loaded before the prompts were checked")

    monkeypatch.setattr(grpokit.models.loading, "load_model", forbidden)
    rows = [{"prompt": "ab"}, {"prompt": "abcdefgh"}]
    config = make_config(generation={"max_prompt_length": 4, "prompt_truncation": "error"})
    with pytest.raises(
        ValueError, match=r"row 1 has a prompt of \d+ tokens, more than generation.max_prompt_length=4"
    ):
        GRPOTrainer(config, reward_funcs=[fraction_of_a], dataset=rows)
