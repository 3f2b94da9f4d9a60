import math

import pytest
import torch
from gymnasium import spaces
from torch import nn

from grpokit.rl.policies import (
    CategoricalPolicy,
    GaussianPolicy,
    ValueNetwork,
    make_policy,
    make_value_network,
    mlp,
)


def test_categorical_log_probs_match_log_softmax():
    policy = CategoricalPolicy(nn.Linear(3, 4), num_actions=4)
    obs = torch.randn(5, 3)
    actions, log_probs = policy.act(obs, generator=torch.Generator().manual_seed(0))
    assert actions.shape == (5,) and actions.dtype == torch.long
    expected = torch.log_softmax(policy.net(obs), -1).gather(1, actions[:, None]).squeeze(1)
    torch.testing.assert_close(log_probs, expected.detach(), rtol=1e-6, atol=1e-6)
    greedy, _ = policy.act(obs, deterministic=True)
    assert torch.equal(greedy, policy.net(obs).argmax(-1))


def test_sampling_uses_only_the_generator():
    policy = CategoricalPolicy(nn.Linear(3, 4), num_actions=4)
    obs = torch.randn(200, 3)
    a, _ = policy.act(obs, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(123)  # the global RNG must not matter
    b, _ = policy.act(obs, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_categorical_sampling_frequencies():
    # Logits log(0.1), log(0.2), log(0.7): 20000 draws land within 4 sigma of the probabilities.
    net = nn.Linear(1, 3, bias=True)
    with torch.no_grad():
        net.weight.zero_()
        net.bias.copy_(torch.tensor([0.1, 0.2, 0.7]).log())
    actions, _ = CategoricalPolicy(net, 3).act(
        torch.zeros(20000, 1), generator=torch.Generator().manual_seed(0)
    )
    freq = torch.bincount(actions, minlength=3).float() / 20000
    sigma = (torch.tensor([0.1, 0.2, 0.7]) * torch.tensor([0.9, 0.8, 0.3]) / 20000).sqrt()
    assert ((freq - torch.tensor([0.1, 0.2, 0.7])).abs() < 4 * sigma).all()


def test_gaussian_log_prob_and_entropy():
    policy = GaussianPolicy(nn.Linear(2, 3), action_dim=3, init_log_std=math.log(0.5))
    obs = torch.randn(4, 2)
    actions, log_probs = policy.act(obs, generator=torch.Generator().manual_seed(0))
    assert actions.shape == (4, 3)
    mean = policy.net(obs).detach()
    # Sum over 3 independent N(mean, 0.5^2) densities.
    expected = (-((actions - mean) ** 2) / (2 * 0.25) - math.log(0.5) - 0.5 * math.log(2 * math.pi)).sum(1)
    torch.testing.assert_close(log_probs, expected, rtol=1e-5, atol=1e-5)
    entropy = policy.distribution(obs).entropy()
    torch.testing.assert_close(
        entropy, torch.full((4,), 3 * (0.5 + 0.5 * math.log(2 * math.pi) + math.log(0.5)))
    )
    greedy, _ = policy.act(obs, deterministic=True)
    torch.testing.assert_close(greedy, mean)


def test_gaussian_samples_have_the_learned_std():
    policy = GaussianPolicy(nn.Linear(1, 1, bias=False), action_dim=1, init_log_std=math.log(2.0))
    nn.init.zeros_(policy.net.weight)
    actions, _ = policy.act(torch.zeros(20000, 1), generator=torch.Generator().manual_seed(0))
    # std of the sample std for n = 20000 is about 2 / sqrt(2n) = 0.01.
    assert abs(actions.std().item() - 2.0) < 0.04
    assert abs(actions.mean().item()) < 0.06  # 4 sigma of the mean: 4 * 2 / sqrt(20000)


def test_make_policy_for_gymnasium_spaces():
    box = spaces.Box(-1, 1, (3,))
    assert isinstance(make_policy(box, spaces.Discrete(2)), CategoricalPolicy)
    gaussian = make_policy(box, spaces.Box(-2, 2, (2,)), init_log_std=-1.0)
    assert isinstance(gaussian, GaussianPolicy)
    torch.testing.assert_close(gaussian.log_std.detach(), torch.tensor([-1.0, -1.0]))
    # Discrete observations are one-hot encoded.
    tabular = make_policy(spaces.Discrete(5), spaces.Discrete(3), (8,))
    dist = tabular.distribution(torch.tensor([0.0, 4.0]))
    assert dist.logits.shape == (2, 3)
    with pytest.raises(ValueError, match="action space .* is not supported"):
        make_policy(box, spaces.MultiBinary(3))
    with pytest.raises(ValueError, match="observation space .* is not supported"):
        make_policy(spaces.MultiBinary(3), spaces.Discrete(2))


def test_initial_policy_is_near_uniform():
    # Output gain 0.01 (cleanrl): the first policy barely prefers any action.
    torch.manual_seed(0)
    policy = make_policy(spaces.Box(-1, 1, (4,)), spaces.Discrete(2))
    probs = policy.distribution(torch.randn(64, 4)).probs
    assert (probs - 0.5).abs().max() < 0.02


def test_mlp_widths_and_validation():
    net = mlp(4, 2, (8, 16), activation="relu")
    assert [m.out_features for m in net if isinstance(m, nn.Linear)] == [8, 16, 2]
    assert all(m.bias.abs().sum() == 0 for m in net if isinstance(m, nn.Linear))
    with pytest.raises(ValueError, match="activation='swish' is not supported"):
        mlp(4, 2, activation="swish")
    with pytest.raises(ValueError, match="layer widths must be >= 1"):
        mlp(4, 2, (0,))


def test_value_network_shapes():
    value = make_value_network(spaces.Box(-1, 1, (3,)), (8,))
    assert value(torch.randn(5, 3)).shape == (5,)
    assert ValueNetwork(nn.Linear(3, 1))(torch.randn(2, 3)).shape == (2,)
    with pytest.raises(ValueError, match=r"value net must return \(M,\) or \(M, 1\)"):
        ValueNetwork(nn.Linear(3, 2))(torch.randn(2, 3))


def test_wrong_net_output_shapes_are_named():
    with pytest.raises(ValueError, match=r"logits of shape \(M, 3\), got \(2, 4\)"):
        CategoricalPolicy(nn.Linear(2, 4), 3).distribution(torch.randn(2, 2))
    with pytest.raises(ValueError, match=r"means of shape \(M, 1\), got \(2, 4\)"):
        GaussianPolicy(nn.Linear(2, 4), 1).distribution(torch.randn(2, 2))
    with pytest.raises(ValueError, match="net must be a torch.nn.Module"):
        CategoricalPolicy(lambda x: x, 2)


def test_a_policy_names_a_distribution_it_did_not_build():
    categorical = CategoricalPolicy(nn.Linear(3, 4), num_actions=4)
    gaussian = GaussianPolicy(nn.Linear(3, 2), action_dim=2)
    obs = torch.randn(5, 3)
    with pytest.raises(TypeError, match="CategoricalPolicy samples from the Categorical .* got Independent"):
        categorical.sample(gaussian.distribution(obs))
    with pytest.raises(TypeError, match="GaussianPolicy samples from the Independent .* got Categorical"):
        gaussian.mode(categorical.distribution(obs))
