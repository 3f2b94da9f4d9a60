"""Per-token KL estimators, what their gradients optimise, and the KL-coefficient controllers.

The KL divergence KL(pi_theta || pi_ref) of a sampled response is estimated token by token from the
log-probabilities of the sampled tokens only (J. Schulman, "Approximating KL Divergence", 2020,
http://joschu.net/blog/kl-approx.html). With ``log_r = log pi_ref(o_t) - log pi_theta(o_t)`` and
tokens o_t sampled from pi_theta, the estimators' VALUES:

- ``k1 = -log_r``: unbiased for KL(pi_theta || pi_ref), high variance, can be negative.
- ``k2 = 0.5 * log_r**2``: biased (second-order accurate when the policies are close), low
  variance, always >= 0.
- ``k3 = exp(log_r) - log_r - 1``: unbiased for KL(pi_theta || pi_ref), low variance, always >= 0;
  DeepSeekMath (arXiv 2402.03300) eq. 4 uses it for GRPO's KL term.
- ``k3+``: the value of k3 with the gradient of k2 (a straight-through estimator, verl's ``"k3+"``):
  ``k2 + sg(k3 - k2)``.

As a LOSS TERM (``beta * mean(k)`` differentiated through log pi_theta on tokens sampled from pi,
which is how ``policy_loss`` uses them; the sampling distribution itself is not differentiated),
the expected gradients are different from the gradients of what the values estimate:

- k1: ``E_pi[grad log pi] = 0``: no regularisation at all in expectation (only noise).
- k2: ``E_pi[(log pi - log pi_ref) grad log pi] = grad KL(pi_theta || pi_ref)``: the reverse KL the
  GRPO objective names.
- k3: ``E_pi[(1 - pi_ref/pi) grad log pi] = -sum_x pi_ref(x) grad log pi(x) = grad KL(pi_ref || pi_theta)``:
  the FORWARD KL, although k3's value estimates the reverse one.
- k3+: k2's gradient, ``grad KL(pi_theta || pi_ref)``, while logging k3's unbiased value.

``kl_loss_gradient(name)`` returns this as a string, and ``policy_loss`` refuses ``beta > 0`` with
an estimator whose loss gradient is zero (k1). The KL *in the reward* (PPO, ``kl_penalized_rewards``)
uses only the values, so k1 is the usual, unbiased choice there.

Where the estimator's sampling assumption is off (tokens come from pi_old, not pi_theta, after the
first of several updates), the estimators are still used as is, as in DeepSeekMath, TRL and verl.

The controllers set the coefficient beta of a KL penalty. ``AdaptiveKLController`` is Ziegler et
al. 2019 ("Fine-Tuning Language Models from Human Preferences", arXiv 1909.08593):

    ``e = clip(KL / KL_target - 1, -0.2, 0.2)``,  ``beta <- beta * (1 + e * n_steps / horizon)``

No deviations from these references.
"""

from __future__ import annotations

from typing import Any

import torch

from grpokit.algorithms._checks import check_float, check_positive, check_same_shape, check_tensor
from grpokit.algorithms.registry import lookup, register

REVERSE_KL = "KL(pi||ref)"
FORWARD_KL = "KL(ref||pi)"

# What the expected gradient of each built-in estimator optimises when it is a loss term on samples
# from pi (see the module docstring); None: the expected gradient is zero.
_LOSS_GRADIENT: dict[str, str | None] = {"k1": None, "k2": REVERSE_KL, "k3": FORWARD_KL, "k3+": REVERSE_KL}


@register("kl", "k1")
def kl_k1(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """``k1 = log pi_theta - log pi_ref``. Shapes: (N, T) -> (N, T).

    Value: unbiased estimate of KL(pi_theta || pi_ref) (high variance, may be negative).
    Gradient as a loss term on samples from pi: ``E[grad log pi] = 0``, no regularisation.
    """
    return logprobs - ref_logprobs


@register("kl", "k2")
def kl_k2(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """``k2 = 0.5 * (log pi_theta - log pi_ref)**2``. Shapes: (N, T) -> (N, T).

    Value: biased, low-variance estimate of KL(pi_theta || pi_ref), always >= 0.
    Gradient as a loss term on samples from pi: ``grad KL(pi_theta || pi_ref)`` (the reverse KL).
    """
    return 0.5 * (logprobs - ref_logprobs) ** 2


@register("kl", "k3")
def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """``k3 = pi_ref/pi_theta - log(pi_ref/pi_theta) - 1`` (DeepSeekMath eq. 4). Shapes: (N, T) -> (N, T).

    Value: unbiased, low-variance estimate of KL(pi_theta || pi_ref), always >= 0.
    Gradient as a loss term on samples from pi:
    ``E[(1 - pi_ref/pi) grad log pi] = grad KL(pi_ref || pi_theta)``, the FORWARD KL, not the reverse
    KL its value estimates.
    """
    log_r = ref_logprobs - logprobs
    # expm1(x) - x keeps precision when the two policies are close (log_r ~ 0), where
    # exp(x) - x - 1 would cancel to rounding noise.
    return torch.expm1(log_r) - log_r


@register("kl", "k3+")
def kl_k3_plus(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Straight-through ``k3+ = k2 + sg(k3 - k2)`` (verl's ``"k3+"``). Shapes: (N, T) -> (N, T).

    Value: k3's (unbiased, >= 0 estimate of KL(pi_theta || pi_ref)).
    Gradient: k2's, so as a loss term on samples from pi it optimises ``grad KL(pi_theta || pi_ref)``,
    the reverse KL the GRPO objective names.
    """
    k2 = kl_k2(logprobs, ref_logprobs)
    return k2 + (kl_k3(logprobs, ref_logprobs) - k2).detach()


def kl_loss_gradient(estimator: str) -> str | None:
    """What the estimator's expected gradient optimises when ``beta * k`` is a loss term on samples from pi.

    Returns:
        ``"KL(pi||ref)"`` (k2, k3+), ``"KL(ref||pi)"`` (k3), None when the expected gradient is zero
        (k1), ``"unknown"`` for a user-registered estimator.

    Raises:
        ValueError: ``estimator`` is not a registered ``"kl"`` name (the valid names are listed).
    """
    lookup("kl", estimator, argument="estimator")
    return _LOSS_GRADIENT.get(estimator, "unknown")


def kl_divergence(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """Per-token estimate of KL(pi_theta || pi_ref) from sampled-token log-probabilities.

    ``k1 = log pi_theta - log pi_ref``; ``k2 = 0.5 * (log pi_theta - log pi_ref)**2``;
    ``k3 = exp(log pi_ref - log pi_theta) - (log pi_ref - log pi_theta) - 1`` (DeepSeekMath
    arXiv 2402.03300 eq. 4); ``k3+`` = k3's value with k2's gradient. See Schulman, "Approximating
    KL Divergence" (2020), and the module docstring for what each one's gradient optimises.

    Args:
        logprobs: (N, T) log pi_theta of the sampled tokens (any shape works, matched by ref).
        ref_logprobs: same shape, log pi_ref of the same tokens.
        estimator: a registered ``"kl"`` name.

    Returns:
        (N, T) per-token estimates; padding positions are not masked (the caller aggregates).
    """
    fn = lookup("kl", estimator, argument="estimator")
    check_float("logprobs", check_tensor("logprobs", logprobs))
    check_float("ref_logprobs", check_tensor("ref_logprobs", ref_logprobs))
    check_same_shape("ref_logprobs", ref_logprobs, "logprobs", logprobs)
    return fn(logprobs, ref_logprobs.to(logprobs.dtype))


class FixedKLController:
    """A constant KL coefficient; ``update`` is a no-op, so trainers treat both controllers alike."""

    def __init__(self, beta: float):
        check_positive("beta", beta, allow_zero=True)
        self.beta = float(beta)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Keep beta unchanged (the arguments are accepted for a shared interface)."""

    def state_dict(self) -> dict[str, Any]:
        return {"beta": self.beta}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        beta = float(state["beta"])
        check_positive("state['beta']", beta, allow_zero=True)
        self.beta = beta

    def __repr__(self) -> str:
        return f"FixedKLController(beta={self.beta})"


class AdaptiveKLController:
    """Adaptive KL coefficient (Ziegler et al. 2019, arXiv 1909.08593).

    ``e = clip(current_kl / target - 1, -0.2, 0.2)`` and ``beta <- beta * (1 + e * n_steps / horizon)``:
    beta grows while the measured KL is above ``target`` and shrinks while it is below, by at most
    20% per ``horizon`` samples.

    Args:
        init_beta: starting coefficient (>= 0).
        target: the KL the controller steers toward (> 0), in the same units as ``current_kl``
            (typically the per-sequence sum of per-token KL, as in Ziegler et al.).
        horizon: number of samples over which a full 20% correction is applied (> 0).
    """

    def __init__(self, init_beta: float, target: float, horizon: int):
        check_positive("init_beta", init_beta, allow_zero=True)
        check_positive("target", target)
        check_positive("horizon", horizon)
        self.beta = float(init_beta)
        self.target = float(target)
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        """Move beta toward keeping ``current_kl`` at ``target``; ``n_steps`` samples since the last update."""
        if not torch.isfinite(torch.tensor(float(current_kl))):
            raise ValueError(f"current_kl must be finite, got {current_kl}")
        check_positive("n_steps", n_steps, allow_zero=True)
        proportional_error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.beta *= 1.0 + proportional_error * n_steps / self.horizon

    def state_dict(self) -> dict[str, Any]:
        return {"beta": self.beta, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        beta, target, horizon = float(state["beta"]), float(state["target"]), state["horizon"]
        check_positive("state['beta']", beta, allow_zero=True)
        check_positive("state['target']", target)
        check_positive("state['horizon']", horizon)
        self.beta, self.target, self.horizon = beta, target, horizon

    def __repr__(self) -> str:
        return f"AdaptiveKLController(beta={self.beta}, target={self.target}, horizon={self.horizon})"
