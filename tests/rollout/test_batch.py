import io
import pickle

import pytest
import torch

from grpokit.rollout.batch import RolloutBatch


def make_batch() -> RolloutBatch:
    return RolloutBatch(
        prompt_ids=torch.tensor([[0, 5, 6], [7, 8, 9]]),
        prompt_mask=torch.tensor([[0, 1, 1], [1, 1, 1]]),
        completion_ids=torch.tensor([[3, 4], [5, 0]]),
        completion_mask=torch.tensor([[1.0, 1.0], [1.0, 0.0]]),
        group_ids=torch.tensor([0, 1]),
        temperatures=torch.tensor([1.0, 0.7]),
        truncated=torch.tensor([True, False]),
        prompts=["1+2=", [{"role": "user", "content": "3+4="}]],
        completions=["03", "7"],
        columns={"answer": ["3", "7"]},
        sampler_logprobs=torch.tensor([[-0.1, -0.2], [-0.3, 0.0]]),
        policy_version=torch.tensor([2, 2]),
    )


def test_bytes_round_trip_keeps_every_field():
    batch = make_batch()
    back = RolloutBatch.from_bytes(batch.to_bytes())
    for name, value in batch.state_dict().items():
        other = getattr(back, name)
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, other), name
        else:
            assert value == other, name


class _Payload:
    def __reduce__(self):
        return (print, ("ran",))


def test_bytes_that_would_run_code_are_refused():
    buffer = io.BytesIO()
    torch.save({"prompt_ids": _Payload()}, buffer)
    with pytest.raises(ValueError, match="cannot cross processes safely") as raised:
        RolloutBatch.from_bytes(buffer.getvalue())
    assert isinstance(raised.value.__cause__, pickle.UnpicklingError)
