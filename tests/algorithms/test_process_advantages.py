"""process_advantages: DeepSeekMath process supervision, by hand and against outcome supervision."""

import math

import pytest
import torch

from grpokit.algorithms import group_advantages, outcome_as_process, process_advantages

F64 = torch.float64


def f64(values):
    return torch.tensor(values, dtype=F64)


def test_process_advantages_by_hand():
    # One group of two responses, T = 4.
    #   response 0: steps ending at tokens 1 and 3, rewards 1.0 and 0.0
    #   response 1: one step ending at token 2, reward 0.2 (token 3 is padding; a padding step holds nan)
    # Group steps R = [1.0, 0.0, 0.2]: mean 0.4, deviations [0.6, -0.4, -0.2],
    # sample var = (0.36 + 0.16 + 0.04) / 2 = 0.28, std s = 0.5291503
    # Response 0: t = 0, 1 see both steps: (0.6 - 0.4) / s; t = 2, 3 see the last: -0.4 / s
    # Response 1: t = 0..2: -0.2 / s; t = 3 is padding: 0
    step_rewards = f64([[1.0, 0.0], [0.2, float("nan")]])
    step_ends = torch.tensor([[1, 3], [2, -1]])
    mask = f64([[1, 1, 1, 1], [1, 1, 1, 0]])
    adv = process_advantages(step_rewards, step_ends, mask, torch.tensor([0, 0]), eps=0.0)
    s = math.sqrt(0.28)
    expected = f64([[0.2 / s, 0.2 / s, -0.4 / s, -0.4 / s], [-0.2 / s, -0.2 / s, -0.2 / s, 0.0]])
    torch.testing.assert_close(adv, expected, rtol=1e-12, atol=1e-15)


def test_tokens_after_the_last_step_get_zero_and_steps_need_not_be_sorted():
    # Steps listed out of order: ends [2, 0] with rewards [1, 3]; a second response has one step.
    # R = [1, 3, 2]: mean 2, sample std 1 -> normalised [-1, 1, 0]
    # response 0: t = 0 sees both (-1 + 1 = 0), t = 1, 2 see the step ending at 2 (-1), t = 3 none (0)
    adv = process_advantages(
        f64([[1.0, 3.0], [2.0, 0.0]]),
        torch.tensor([[2, 0], [1, -1]]),
        torch.ones(2, 4),
        torch.tensor([5, 5]),
        eps=0.0,
    )
    torch.testing.assert_close(
        adv, f64([[0.0, -1.0, -1.0, 0.0], [0.0, 0.0, 0.0, 0.0]]), rtol=1e-12, atol=1e-15
    )


def test_groups_are_normalised_separately_and_constant_groups_are_zero():
    # group 0 (rows 0, 2): step rewards all 0.1 -> exactly 0; group 1 (rows 1, 3): [0, 1] -> -/+0.7071
    adv = process_advantages(
        f64([[0.1, 0.1], [0.0, 0.0], [0.1, 0.0], [1.0, 0.0]]),
        torch.tensor([[0, 1], [1, -1], [1, -1], [1, -1]]),
        torch.ones(4, 2, dtype=torch.bool),
        torch.tensor([0, 1, 0, 1]),
        eps=0.0,
    )
    assert torch.equal(adv[[0, 2]], torch.zeros(2, 2, dtype=F64))
    torch.testing.assert_close(adv[1], f64([-1, -1]) / math.sqrt(2), rtol=1e-12, atol=0)
    torch.testing.assert_close(adv[3], f64([1, 1]) / math.sqrt(2), rtol=1e-12, atol=0)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_outcome_supervision_equals_grpo_broadcast(seed):
    gen = torch.Generator().manual_seed(seed)
    num_groups, G, T = 5, 4, 7
    N = num_groups * G
    group_ids = torch.arange(num_groups).repeat_interleave(G)[torch.randperm(N, generator=gen)]
    rewards = torch.randint(0, 3, (N,), generator=gen).to(F64)
    lengths = torch.randint(1, T + 1, (N,), generator=gen)
    mask = torch.arange(T)[None, :] < lengths[:, None]  # (N, T) right-padded
    step_rewards, step_ends = outcome_as_process(rewards, mask)
    adv = process_advantages(step_rewards, step_ends, mask, group_ids)
    expected = group_advantages(rewards, group_ids, "grpo")[:, None] * mask  # (N, T)
    torch.testing.assert_close(adv, expected, rtol=1e-12, atol=1e-15)


def test_float32_is_kept():
    adv = process_advantages(
        torch.tensor([[1.0], [0.0]]), torch.tensor([[0], [0]]), torch.ones(2, 1), torch.tensor([0, 0])
    )
    assert adv.dtype == torch.float32
    torch.testing.assert_close(adv, torch.tensor([[0.70710677], [-0.70710677]]), rtol=1e-5, atol=0)


def test_bad_input():
    ok = (f64([[1.0], [0.0]]), torch.tensor([[0], [0]]), torch.ones(2, 2), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match=r"step_ends row 1 has an index outside \[-1, 1\]"):
        process_advantages(ok[0], torch.tensor([[0], [2]]), ok[2], ok[3])
    with pytest.raises(ValueError, match=r"step_ends row 0 has a step ending on a padding token"):
        process_advantages(ok[0], ok[1], f64([[0, 1], [1, 1]]), ok[3])
    with pytest.raises(ValueError, match=r"step_rewards \(real steps\) contains a non-finite value \(nan\)"):
        process_advantages(f64([[1.0], [float("nan")]]), ok[1], ok[2], ok[3])
    with pytest.raises(ValueError, match=r"step_ends has shape \(2, 2\) but step_rewards has shape \(2, 1\)"):
        process_advantages(ok[0], torch.tensor([[0, 1], [0, 1]]), ok[2], ok[3])
    with pytest.raises(ValueError, match=r"step_ends must be an integer tensor"):
        process_advantages(ok[0], ok[1].to(F64), ok[2], ok[3])
    with pytest.raises(ValueError, match=r"group_ids has 3 entries but mask has 2 rows"):
        process_advantages(*ok[:3], torch.tensor([0, 0, 0]))
    with pytest.raises(ValueError, match=r"step_rewards has 2 rows but mask has 3"):
        process_advantages(ok[0], ok[1], torch.ones(3, 2), torch.tensor([0, 0, 0]))
