"""Policies for classic RL: an observation batch in, a batch of action distributions out.

A :class:`Policy` wraps any ``torch.nn.Module`` body. Two ready heads cover gymnasium's two common
action spaces:

- :class:`CategoricalPolicy` for ``Discrete(A)``: the body returns logits (M, A);
- :class:`GaussianPolicy` for ``Box`` actions of shape (A,): the body returns the mean (M, A) and a
  state-independent log standard deviation is learned beside it (the PPO continuous-control setup of
  Schulman et al. 2017, arXiv 1707.06347, and cleanrl's ``ppo_continuous_action.py``).

Shape letters: M observations in a flat batch (M = the real steps of N episodes), A action
dimensions (or actions, for a categorical policy).

Sampling takes a ``torch.Generator`` instead of using torch's global RNG, so that a rollout is a
pure function of (weights, start seeds, generator state): the env-seeding tests and checkpoint
resume rely on it.

Deviations from the reference implementations:

1. The Gaussian policy samples from the unbounded normal and the rollout clips the action to the
   ``Box`` bounds only when passing it to the environment; the log-probability is that of the
   unclipped sample (as cleanrl and Stable-Baselines3 do), so the ratio in the loss stays exact.
2. :func:`mlp` uses orthogonal initialisation with gain sqrt(2) on hidden layers and a small gain on
   the output layer (0.01 for policy heads, 1.0 for value heads): "implementation detail" 2 of the
   cleanrl PPO docs (Huang et al. 2022, "The 37 Implementation Details of PPO").
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TypeVar

import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, Normal

_D = TypeVar("_D", bound=Distribution)

_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "elu": nn.ELU}


class Policy(nn.Module, ABC):
    """pi_theta(a | s): maps observations (M, *obs_shape) to a distribution with batch shape (M,).

    Subclasses implement :meth:`distribution`, :meth:`sample` and :meth:`mode`; everything else
    (log-probabilities, entropies) comes from the ``torch.distributions`` object, whose
    ``log_prob`` and ``entropy`` return (M,) for every built-in policy (multi-dimensional actions are
    wrapped in ``Independent`` so that they sum over the action dimensions).
    """

    #: True when actions are integers (``Discrete``), False for real vectors (``Box``).
    discrete: bool

    @abstractmethod
    def distribution(self, obs: torch.Tensor) -> Distribution:
        """The action distribution for observations (M, *obs_shape); batch shape (M,)."""

    @abstractmethod
    def sample(self, dist: Distribution, generator: torch.Generator | None = None) -> torch.Tensor:
        """One action per row drawn with ``generator``: (M,) long or (M, A) float."""

    @abstractmethod
    def mode(self, dist: Distribution) -> torch.Tensor:
        """The most likely action per row (greedy evaluation): (M,) long or (M, A) float."""

    def forward(self, obs: torch.Tensor) -> Distribution:
        return self.distribution(obs)

    @torch.no_grad()
    def act(
        self, obs: torch.Tensor, *, deterministic: bool = False, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Actions and their log-probabilities for observations (M, *obs_shape), without gradients.

        Returns:
            ``(actions, log_probs)``: actions (M,) long or (M, A) float; log_probs (M,). With
            ``deterministic=True`` the actions are :meth:`mode` and the log-probs are theirs.
        """
        dist = self.distribution(obs)
        actions = self.mode(dist) if deterministic else self.sample(dist, generator)
        return actions, dist.log_prob(actions)


def _own(dist: Distribution, kind: type[_D], policy: Policy) -> _D:
    """``dist`` as the ``kind`` of distribution that ``policy.distribution`` builds, or a TypeError."""
    if not isinstance(dist, kind):
        raise TypeError(
            f"{type(policy).__name__} samples from the {kind.__name__} its distribution() returns, "
            f"got {type(dist).__name__}"
        )
    return dist


class CategoricalPolicy(Policy):
    """A categorical policy over ``num_actions`` actions: softmax over the logits of ``net``.

    Args:
        net: any module mapping observations (M, *obs_shape) to logits (M, num_actions).
        num_actions: A; checked against the logits' last dimension on every call.
    """

    discrete = True

    def __init__(self, net: nn.Module, num_actions: int):
        super().__init__()
        if not isinstance(net, nn.Module):
            raise ValueError(f"net must be a torch.nn.Module, got {type(net).__name__}")
        if num_actions < 1:
            raise ValueError(f"num_actions must be >= 1, got {num_actions}")
        self.net = net
        self.num_actions = num_actions

    def distribution(self, obs: torch.Tensor) -> Categorical:
        logits = self.net(obs)  # (M, A)
        if logits.dim() != 2 or logits.shape[1] != self.num_actions:
            raise ValueError(
                f"net must return logits of shape (M, {self.num_actions}), got {tuple(logits.shape)}"
            )
        return Categorical(logits=logits)

    def sample(self, dist: Distribution, generator: torch.Generator | None = None) -> torch.Tensor:
        probs = _own(dist, Categorical, self).probs  # (M, A)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)  # (M,)

    def mode(self, dist: Distribution) -> torch.Tensor:
        return _own(dist, Categorical, self).logits.argmax(-1)  # (M,)


class GaussianPolicy(Policy):
    """A diagonal Gaussian policy: ``a ~ N(mu_theta(s), diag(exp(log_std)^2))``.

    The log standard deviation is one learned vector (A,) shared by all states, initialised to
    ``init_log_std``; the mean comes from ``net``.

    Args:
        net: any module mapping observations (M, *obs_shape) to means (M, action_dim).
        action_dim: A.
        init_log_std: initial log standard deviation (0.0 gives std 1, cleanrl's default).
    """

    discrete = False

    def __init__(self, net: nn.Module, action_dim: int, init_log_std: float = 0.0):
        super().__init__()
        if not isinstance(net, nn.Module):
            raise ValueError(f"net must be a torch.nn.Module, got {type(net).__name__}")
        if action_dim < 1:
            raise ValueError(f"action_dim must be >= 1, got {action_dim}")
        if not math.isfinite(init_log_std):
            raise ValueError(f"init_log_std must be finite, got {init_log_std}")
        self.net = net
        self.action_dim = action_dim
        self.log_std = nn.Parameter(torch.full((action_dim,), float(init_log_std)))

    def distribution(self, obs: torch.Tensor) -> Independent:
        mean = self.net(obs)  # (M, A)
        if mean.dim() != 2 or mean.shape[1] != self.action_dim:
            raise ValueError(
                f"net must return means of shape (M, {self.action_dim}), got {tuple(mean.shape)}"
            )
        std = self.log_std.exp().expand_as(mean)  # (M, A)
        return Independent(Normal(mean, std), 1)  # batch shape (M,), event shape (A,)

    def sample(self, dist: Distribution, generator: torch.Generator | None = None) -> torch.Tensor:
        normal = self._normal(dist)
        noise = torch.randn(normal.loc.shape, generator=generator, dtype=normal.loc.dtype)  # (M, A)
        return normal.loc + normal.scale * noise

    def mode(self, dist: Distribution) -> torch.Tensor:
        return self._normal(dist).loc  # (M, A)

    def _normal(self, dist: Distribution) -> Normal:
        """The per-dimension normal under the ``Independent`` that :meth:`distribution` returns."""
        return _own(_own(dist, Independent, self).base_dist, Normal, self)


class ValueNetwork(nn.Module):
    """V_phi(s) for PPO: wraps a module mapping observations (M, *obs_shape) to (M, 1) or (M,)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        if not isinstance(net, nn.Module):
            raise ValueError(f"net must be a torch.nn.Module, got {type(net).__name__}")
        self.net = net

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        values = self.net(obs)
        if values.dim() == 2 and values.shape[1] == 1:
            values = values.squeeze(1)
        if values.dim() != 1:
            raise ValueError(f"value net must return (M,) or (M, 1), got {tuple(values.shape)}")
        return values  # (M,)


class OneHot(nn.Module):
    """Integer observations (M,) (a ``Discrete(n)`` space, stored as floats) to one-hot rows (M, n)."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(obs.long().reshape(-1), self.n).float()  # (M, n)


def mlp(
    in_dim: int,
    out_dim: int,
    hidden_sizes: Sequence[int] = (64, 64),
    activation: str = "tanh",
    output_gain: float = 1.0,
) -> nn.Sequential:
    """A multilayer perceptron (M, in_dim) -> (M, out_dim), orthogonally initialised, zero biases.

    Args:
        in_dim, out_dim: input and output widths.
        hidden_sizes: width of each hidden layer; empty for a linear map.
        activation: one of ``tanh``, ``relu``, ``gelu``, ``silu``, ``elu``.
        output_gain: orthogonal gain of the last layer (0.01 for a policy head, so the initial policy
            is near uniform / near zero-mean; 1.0 for a value head).
    """
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation={activation!r} is not supported; valid names: {sorted(_ACTIVATIONS)}")
    if in_dim < 1 or out_dim < 1 or any(h < 1 for h in hidden_sizes):
        raise ValueError(
            f"layer widths must be >= 1, got in_dim={in_dim}, out_dim={out_dim}, hidden_sizes={list(hidden_sizes)}"
        )
    layers: list[nn.Module] = []
    width = in_dim
    for hidden in hidden_sizes:
        layers += [_init(nn.Linear(width, hidden), math.sqrt(2)), _ACTIVATIONS[activation]()]
        width = hidden
    layers.append(_init(nn.Linear(width, out_dim), output_gain))
    return nn.Sequential(*layers)


def _init(layer: nn.Linear, gain: float) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


def _input_layer(observation_space) -> tuple[nn.Module, int]:
    """A module that turns raw observations into flat features (M, F), and F."""
    from gymnasium import spaces

    if isinstance(observation_space, spaces.Discrete):
        return OneHot(int(observation_space.n)), int(observation_space.n)
    if isinstance(observation_space, spaces.Box):
        return nn.Flatten(start_dim=1), int(math.prod(observation_space.shape))
    raise ValueError(
        f"observation space {observation_space} is not supported by the built-in MLP policies "
        "(Box or Discrete only); pass your own policy= module"
    )


def make_policy(
    observation_space,
    action_space,
    hidden_sizes: Sequence[int] = (64, 64),
    activation: str = "tanh",
    init_log_std: float = 0.0,
) -> Policy:
    """An MLP policy for gymnasium spaces: categorical for ``Discrete``, Gaussian for 1-D ``Box``.

    Observations may be ``Box`` (flattened) or ``Discrete`` (one-hot encoded).
    """
    from gymnasium import spaces

    inputs, features = _input_layer(observation_space)
    if isinstance(action_space, spaces.Discrete):
        net = nn.Sequential(inputs, mlp(features, int(action_space.n), hidden_sizes, activation, 0.01))
        return CategoricalPolicy(net, int(action_space.n))
    if isinstance(action_space, spaces.Box) and len(action_space.shape) == 1:
        action_dim = int(action_space.shape[0])
        net = nn.Sequential(inputs, mlp(features, action_dim, hidden_sizes, activation, 0.01))
        return GaussianPolicy(net, action_dim, init_log_std)
    raise ValueError(
        f"action space {action_space} is not supported by the built-in policies "
        "(Discrete or 1-D Box only); pass your own policy= module"
    )


def make_value_network(
    observation_space, hidden_sizes: Sequence[int] = (64, 64), activation: str = "tanh"
) -> ValueNetwork:
    """An MLP state-value network V(s) for the observation space (PPO's critic)."""
    inputs, features = _input_layer(observation_space)
    return ValueNetwork(nn.Sequential(inputs, mlp(features, 1, hidden_sizes, activation, 1.0)))
