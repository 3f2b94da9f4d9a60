import pytest
import torch

from grpokit.rollout.batch import RolloutBatch


def _batch(prompts, completions, columns=None, completion_ids=None, completion_mask=None, group_size=None):
    n = len(completions)
    if completion_ids is None:
        completion_ids = torch.ones(n, 4, dtype=torch.long)
        completion_mask = torch.ones(n, 4)
    group_size = group_size or n
    return RolloutBatch(
        prompt_ids=torch.ones(n, 2, dtype=torch.long),
        prompt_mask=torch.ones(n, 2, dtype=torch.long),
        completion_ids=completion_ids,
        completion_mask=completion_mask,
        group_ids=torch.arange(n) // group_size,
        temperatures=torch.ones(n),
        truncated=torch.zeros(n, dtype=torch.bool),
        prompts=list(prompts),
        completions=list(completions),
        columns=columns or {},
    )


@pytest.fixture
def make_batch():
    return _batch
