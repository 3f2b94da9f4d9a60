"""Whole losses behind one signature: the ``"loss"`` registry.

Every entry is ``fn(inputs: LossInputs, settings: LossSettings) -> (loss, metrics)``: ``inputs``
holds the tensors of one micro-batch (n rows x T tokens), ``settings`` the hyper-parameters, so a
trainer swaps GRPO for GSPO, CISPO, SAPO or PPO by name without special cases::

    loss, metrics = compute_loss("cispo", LossInputs(logprobs, old_logprobs, advantages, mask),
                                 LossSettings(epsilon_high=4.0))

Built-in entries (r the ratio, A the advantage, w the optional importance weights, sg stop-gradient,
``agg`` the chosen aggregation, KL the chosen estimator, H the token entropy):

- ``"grpo"``: ``agg(-w min(r A, clip(r, 1-eps_low, 1+eps_high) A)) + beta agg(KL) - c_H agg(H)``,
  i.e. ``policy_loss`` (DeepSeekMath arXiv 2402.03300 eq. 3; PPO arXiv 1707.06347 eq. 7); the
  ratio per ``settings.ratio_level``.
- ``"gspo"``: the same with GSPO's sequence ratio ``s_i = exp(mean_t log r_{i,t})`` (arXiv
  2507.18071), whatever ``settings.ratio_level`` says. Only ``aggregation="sequence_mean"`` gives
  GSPO's gradient.
- ``"cispo"``: ``agg(-w sg(clip(r, 1-eps_low, 1+eps_high)) A log pi_theta) + beta agg(KL) - c_H agg(H)``
  (MiniMax-M1, arXiv 2506.13585, eq. 4): the importance weight is clipped and detached, but every
  token keeps a gradient (no token is dropped by the clip, unlike PPO).
- ``"sapo"``: ``agg(-w f(r) A) + beta agg(KL) - c_H agg(H)`` with the soft gate
  ``f(r) = sigmoid(tau (r - 1)) * 4 / tau``, ``tau = tau_pos`` where ``A > 0`` and ``tau_neg``
  otherwise (SAPO, Qwen, arXiv 2511.20347, eqs. for f_{i,t} and J_SAPO; defaults tau_pos = 1.0,
  tau_neg = 1.05 as the paper recommends, tau_neg > tau_pos). Its gradient is
  ``4 p (1 - p) r A grad log pi`` with ``p = sigmoid(tau (r - 1))``: weight 1 at r = 1, decaying
  smoothly as the ratio leaves 1, instead of PPO's hard cut.
- ``"ppo"``: ``"grpo"`` + ``vf_coef * value_loss(values, old_values, returns, mask,
  cliprange_value, aggregation)`` (PPO eq. 9, ``L = -L_clip + c_v L_V - c_H H``).

Metrics always include ``loss`` (the returned scalar's value) and the policy metrics of
``policy_loss`` (``policy_loss``, ``ratio_*``, clip fractions, ``kl``, ``entropy``); ``"ppo"`` adds
``value_loss``, ``value_clip_fraction``, ``explained_variance``, ``value_mean``. For ``"cispo"`` the
clip fractions count the tokens whose weight was truncated (their gradient is kept); for
``"sapo"`` they count the tokens outside ``[1-eps_low, 1+eps_high]``, for comparison with a clip.

The entropy bonus uses ``inputs.logits`` (categorical policies) or, when that is None,
``inputs.entropy`` (e.g. a Gaussian policy's entropy), aggregated like the loss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from grpokit.algorithms._checks import check_positive
from grpokit.algorithms.policy_loss import _policy_objective
from grpokit.algorithms.ppo import value_loss
from grpokit.algorithms.registry import lookup, register


@dataclass
class LossInputs:
    """The tensors of one micro-batch; shapes n rows x T tokens (V vocabulary)."""

    logprobs: torch.Tensor  # (n, T) log pi_theta of the sampled tokens, with grad
    old_logprobs: torch.Tensor  # (n, T) log pi_old, detached
    advantages: torch.Tensor  # (n,) or (n, T), detached
    mask: torch.Tensor  # (n, T) float, 1 on tokens that enter the loss
    ref_logprobs: torch.Tensor | None = None  # (n, T) log pi_ref; needed when beta > 0
    logits: torch.Tensor | None = None  # (n, T, V) for the entropy (categorical policies)
    entropy: torch.Tensor | None = None  # (n, T) with grad: entropy of non-categorical policies
    importance_weights: torch.Tensor | None = None  # (n, T) detached, e.g. truncated IS vs the sampler
    values: torch.Tensor | None = None  # (n, T) V(s_t) with grad (PPO)
    old_values: torch.Tensor | None = None  # (n, T) rollout-time values (PPO)
    returns: torch.Tensor | None = None  # (n, T) value targets (PPO)


@dataclass(frozen=True)
class LossSettings:
    """Hyper-parameters of the losses; each entry reads the fields it needs.

    ``beta``, ``kl_estimator``: KL term (``beta > 0`` needs ``inputs.ref_logprobs`` and an estimator
    with a non-zero loss gradient, see ``kl_loss_gradient``). ``epsilon_low``/``epsilon_high``: clip
    range (None: symmetric); for ``"cispo"`` the range of the truncated weight (MiniMax-M1 uses no
    lower bound in practice, i.e. ``epsilon_low=1``, and a large ``epsilon_high``).
    ``ratio_level``, ``aggregation``, ``max_length``: see ``policy_loss``. ``entropy_coef``: c_H.
    ``vf_coef``, ``cliprange_value``: PPO's value term (None: unclipped value loss).
    ``sapo_tau_pos``, ``sapo_tau_neg``: SAPO's gate temperatures (paper defaults 1.0 and 1.05).
    """

    beta: float = 0.0
    kl_estimator: str = "k3"
    epsilon_low: float = 0.2
    epsilon_high: float | None = None
    ratio_level: str = "token"
    aggregation: str = "sequence_mean"
    max_length: int | None = None
    entropy_coef: float = 0.0
    vf_coef: float = 0.1
    cliprange_value: float | None = 0.2
    sapo_tau_pos: float = 1.0
    sapo_tau_neg: float = 1.05

    def __post_init__(self) -> None:
        check_positive("beta", self.beta, allow_zero=True)
        check_positive("entropy_coef", self.entropy_coef, allow_zero=True)
        check_positive("vf_coef", self.vf_coef, allow_zero=True)
        check_positive("sapo_tau_pos", self.sapo_tau_pos)
        check_positive("sapo_tau_neg", self.sapo_tau_neg)
        if not 0 <= self.epsilon_low <= 1:
            raise ValueError(f"epsilon_low must be in [0, 1], got {self.epsilon_low}")
        if self.epsilon_high is not None:
            check_positive("epsilon_high", self.epsilon_high, allow_zero=True)
        if self.cliprange_value is not None:
            check_positive("cliprange_value", self.cliprange_value)
        lookup("kl", self.kl_estimator, argument="kl_estimator")
        lookup("ratio", self.ratio_level, argument="ratio_level")
        lookup("aggregation", self.aggregation, argument="aggregation")


def _policy(
    inputs: LossInputs, settings: LossSettings, surrogate: str, ratio_level: str | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    return _policy_objective(
        inputs.logprobs, inputs.old_logprobs, inputs.advantages, inputs.mask,
        ref_logprobs=inputs.ref_logprobs, beta=settings.beta, kl_estimator=settings.kl_estimator,
        epsilon_low=settings.epsilon_low, epsilon_high=settings.epsilon_high,
        ratio_level=ratio_level or settings.ratio_level, aggregation=settings.aggregation,
        max_length=settings.max_length, logits=inputs.logits, importance_weights=inputs.importance_weights,
        entropy_coef=settings.entropy_coef, entropy=inputs.entropy, surrogate=surrogate,
        sapo_tau_pos=settings.sapo_tau_pos, sapo_tau_neg=settings.sapo_tau_neg,
    )  # fmt: skip


def _with_loss(loss: torch.Tensor, metrics: dict[str, float]) -> tuple[torch.Tensor, dict[str, float]]:
    return loss, {"loss": float(loss.detach().item()), **metrics}


@register("loss", "grpo")
def grpo_loss(inputs: LossInputs, settings: LossSettings) -> tuple[torch.Tensor, dict[str, float]]:
    """GRPO / PPO clipped surrogate (DeepSeekMath arXiv 2402.03300 eq. 3), i.e. ``policy_loss``.

    ``l_{i,t} = -w min(r A, clip(r, 1 - eps_low, 1 + eps_high) A)``,
    ``loss = agg(l) + beta agg(KL) - c_H agg(H)``; r per ``settings.ratio_level``.
    Shapes: see ``LossInputs``; returns a scalar and python-float metrics.
    """
    return _with_loss(*_policy(inputs, settings, "clip"))


@register("loss", "gspo")
def gspo_loss(inputs: LossInputs, settings: LossSettings) -> tuple[torch.Tensor, dict[str, float]]:
    """GSPO (Zheng et al., arXiv 2507.18071): ``"grpo"`` with the sequence ratio.

    ``s_i = exp(1/|o_i| sum_t (log pi_theta - log pi_old))``,
    ``l_{i,t} = -w min(s_i A, clip(s_i, 1 - eps_low, 1 + eps_high) A)`` (GSPO-token form: value s_i,
    gradient ``sg[s_i] grad log pi_theta(o_{i,t})``). ``settings.ratio_level`` is ignored. Only
    ``aggregation="sequence_mean"`` reproduces GSPO's gradient; the paper's clip ranges are small
    (3e-4 / 4e-4).
    """
    return _with_loss(*_policy(inputs, settings, "clip", ratio_level="sequence"))


@register("loss", "cispo")
def cispo_loss(inputs: LossInputs, settings: LossSettings) -> tuple[torch.Tensor, dict[str, float]]:
    """CISPO (MiniMax-M1, arXiv 2506.13585, eq. 4): clipped, detached importance weights.

    ``l_{i,t} = -w sg(clip(r, 1 - eps_low, 1 + eps_high)) A log pi_theta(o_{i,t})``,
    ``loss = agg(l) + beta agg(KL) - c_H agg(H)``. The gradient of every token is
    ``-w clip(r) A grad log pi``: clipping bounds the weight but never drops a token's gradient.
    The paper aggregates with ``token_mean``; the default here is ``settings.aggregation``.
    """
    return _with_loss(*_policy(inputs, settings, "cispo"))


@register("loss", "sapo")
def sapo_loss(inputs: LossInputs, settings: LossSettings) -> tuple[torch.Tensor, dict[str, float]]:
    """SAPO (Soft Adaptive Policy Optimization, Qwen, arXiv 2511.20347): a soft gate instead of the clip.

    ``f(r) = sigmoid(tau (r - 1)) * 4 / tau`` with ``tau = sapo_tau_pos`` where ``A > 0`` and
    ``sapo_tau_neg`` otherwise; ``l_{i,t} = -w f(r_{i,t}) A``, ``loss = agg(l) + beta agg(KL) - c_H agg(H)``.
    ``grad f(r) = 4 p (1 - p) r grad log pi`` with ``p = sigmoid(tau (r - 1))``, so at r = 1 the
    gradient equals the plain policy gradient and it decays smoothly off-policy (faster for
    negative advantages, tau_neg > tau_pos). The epsilons are unused except in the clip-fraction
    metrics.
    """
    return _with_loss(*_policy(inputs, settings, "sapo"))


@register("loss", "ppo")
def ppo_loss(inputs: LossInputs, settings: LossSettings) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO (arXiv 1707.06347 eq. 9): ``"grpo"`` + ``vf_coef * L_V``.

    ``L_V = agg(0.5 max((V - R)^2, (clip(V, V_old - c, V_old + c) - R)^2))`` (``value_loss``, c =
    ``cliprange_value``, None for unclipped), aggregated with ``settings.aggregation``. Needs
    ``inputs.values`` (with grad), ``inputs.old_values`` and ``inputs.returns``, all (n, T).
    """
    values = _required_for_ppo(inputs.values, "values")
    old_values = _required_for_ppo(inputs.old_values, "old_values")
    returns = _required_for_ppo(inputs.returns, "returns")
    policy, metrics = _policy(inputs, settings, "clip")
    value, value_metrics = value_loss(
        values,
        old_values,
        returns,
        inputs.mask,
        settings.cliprange_value,
        settings.aggregation,
        max_length=settings.max_length,
    )
    return _with_loss(policy + settings.vf_coef * value, {**metrics, **value_metrics})


LossFn = Callable[[LossInputs, LossSettings], tuple[torch.Tensor, dict[str, float]]]
"""The signature of every ``"loss"`` registry entry."""


def _required_for_ppo(tensor: torch.Tensor | None, name: str) -> torch.Tensor:
    if tensor is None:
        raise ValueError(f"loss 'ppo' needs inputs.{name} (n, T); got None")
    return tensor


def compute_loss(
    name: str, inputs: LossInputs, settings: LossSettings | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """Look up the ``"loss"`` entry ``name`` and call it: ``fn(inputs, settings) -> (loss, metrics)``.

    Args:
        name: a registered ``"loss"`` name (``available("loss")``).
        inputs: the micro-batch tensors.
        settings: hyper-parameters; None means ``LossSettings()``.

    Returns:
        ``(loss, metrics)``: the scalar loss and python-float metrics, ``loss`` among them.

    Raises:
        ValueError: an unknown name (the valid names are listed), or bad inputs (named).
    """
    fn: LossFn = lookup("loss", name, argument="loss")
    if not isinstance(inputs, LossInputs):
        raise ValueError(f"inputs must be a LossInputs, got {type(inputs).__name__}")
    if settings is None:
        settings = LossSettings()
    elif not isinstance(settings, LossSettings):
        raise ValueError(f"settings must be a LossSettings, got {type(settings).__name__}")
    return fn(inputs, settings)
