import random

import numpy as np
import pytest
import torch

from grpokit.engine import checkpoint as ckpt


class TinyModule(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 2)

    def save_pretrained(self, path, safe_serialization=True):
        import os

        from safetensors.torch import save_model

        os.makedirs(path, exist_ok=True)  # as transformers' save_pretrained does
        save_model(self, f"{path}/model.safetensors")


def test_rng_state_round_trips_through_a_weights_only_load(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    state = ckpt.capture_rng_state()
    torch.save(state, tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    ckpt.restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_save_rotates_and_leaves_no_temp_dirs(tmp_path):
    saver = ckpt.Checkpointer(tmp_path, save_steps=2, save_total_limit=2)
    assert [s for s in range(1, 7) if saver.should_save(s)] == [2, 4, 6]
    for step in (2, 4, 6):
        saver.save(step, TinyModule(), None, {"step": step})
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-000004", "step-000006"]
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))
    assert ckpt.load_trainer_state(tmp_path / "checkpoints" / "step-000006") == {"step": 6}


def test_reference_weights_are_saved_and_restored(tmp_path):
    reference = TinyModule()
    path = ckpt.Checkpointer(tmp_path).save(1, TinyModule(), None, {}, reference=reference)
    other = TinyModule()
    assert ckpt.load_reference(other, path)
    assert torch.equal(other.layer.weight, reference.layer.weight)
    assert not ckpt.load_reference(other, tmp_path)  # no file there


def test_find_checkpoint_accepts_run_checkpoint_and_latest(tmp_path):
    old, new = tmp_path / "runs" / "a", tmp_path / "runs" / "b"
    ckpt.Checkpointer(old).save(3, TinyModule(), None, {})
    ckpt.Checkpointer(new).save(1, TinyModule(), None, {})
    ckpt.Checkpointer(new).save(2, TinyModule(), None, {})
    (new / "checkpoints" / ".tmp-step-000009").mkdir()  # an interrupted save is never picked
    assert ckpt.find_checkpoint(str(new), tmp_path / "runs").name == "step-000002"
    assert ckpt.find_checkpoint(str(old / "checkpoints" / "step-000003"), "x").name == "step-000003"
    assert ckpt.find_checkpoint("latest", tmp_path / "runs") == new / "checkpoints" / "step-000002"
    assert ckpt.run_dir_of(new / "checkpoints" / "step-000002") == new


@pytest.mark.parametrize(
    ("resume", "message"),
    [("nowhere", "neither a run directory nor a checkpoint"), ("latest", "no run with a checkpoint")],
)
def test_find_checkpoint_errors(tmp_path, resume, message):
    with pytest.raises(ValueError, match=message):
        ckpt.find_checkpoint(resume, tmp_path)


def test_run_without_checkpoints_is_named(tmp_path):
    with pytest.raises(ValueError, match="has no checkpoint under checkpoints/step-"):
        ckpt.find_checkpoint(str(tmp_path), tmp_path)
