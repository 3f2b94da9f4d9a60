import pytest
import torch

from grpokit.rl.rollout import EpisodeBatch, StartState


def episode_batch(rewards, *, starts=None, reset_infos=None, start_obs=None, truncated=None):
    """A hand-made EpisodeBatch: ``rewards`` is a list of per-episode reward lists (ragged)."""
    N, T = len(rewards), max(len(r) for r in rewards)
    r = torch.zeros(N, T)
    mask = torch.zeros(N, T)
    for i, row in enumerate(rewards):
        r[i, : len(row)] = torch.tensor(row, dtype=torch.float32)
        mask[i, : len(row)] = 1
    obs = torch.zeros(N, T, 2)
    if start_obs is not None:
        obs[:, 0] = torch.as_tensor(start_obs, dtype=torch.float32)
    return EpisodeBatch(
        observations=obs,
        actions=torch.zeros(N, T, dtype=torch.long),
        log_probs=torch.zeros(N, T),
        rewards=r,
        mask=mask,
        terminated=torch.ones(N, dtype=torch.bool) if truncated is None else ~torch.as_tensor(truncated),
        truncated=torch.zeros(N, dtype=torch.bool) if truncated is None else torch.as_tensor(truncated),
        final_observations=torch.zeros(N, 2),
        starts=starts if starts is not None else [StartState(i) for i in range(N)],
        reset_infos=reset_infos if reset_infos is not None else [{} for _ in range(N)],
    )


@pytest.fixture
def make_batch():
    return episode_batch
