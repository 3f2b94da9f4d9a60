"""The clipped policy-gradient loss shared by GRPO and PPO, with its pluggable pieces.

GRPO objective, DeepSeekMath (arXiv 2402.03300) eq. 3, to be maximised:

    J(theta) = E[ 1/G sum_i 1/|o_i| sum_t { min(r_{i,t} A_{i,t}, clip(r_{i,t}, 1-eps, 1+eps) A_{i,t})
                                            - beta * KL_t(pi_theta || pi_ref) } ]

with the token ratio ``r_{i,t} = pi_theta(o_{i,t}) / pi_old(o_{i,t})`` (PPO, arXiv 1707.06347,
eq. 7) and the KL term added to the loss, outside the advantage. ``policy_loss`` returns the loss to
minimise, ``-J``, built from three registered pieces:

- ratio level (``"ratio"`` registry): ``"token"`` (PPO/GRPO) or ``"sequence"`` (GSPO, arXiv 2507.18071);
- aggregation (``"aggregation"`` registry): ``"sequence_mean"`` (the 1/G sum_i 1/|o_i| sum_t above),
  ``"token_mean"`` (DAPO, arXiv 2503.14476, sec. 3.3), ``"constant"`` (Dr. GRPO, arXiv 2503.20783);
- KL estimator (``"kl"`` registry): ``"k3"`` (DeepSeekMath eq. 4), ``"k2"``, ``"k3+"``; ``"k1"`` is
  refused with ``beta > 0`` (see deviation 7).

PPO reuses this function with per-token advantages (N, T) from ``gae``; the seed's total PPO loss
``L = -L_clip + c_v * L_V - c_H * H`` is composed by the trainer as
``policy_loss(..., logits=logits, entropy_coef=c_H)[0] + c_v * value_loss(...)[0]``.

Deviations and choices, numbered:

1. ``epsilon_high`` may differ from ``epsilon_low`` (DAPO's "clip-higher", sec. 3.1); None means
   the symmetric PPO clip.
2. The entropy bonus is aggregated with the same ``aggregation`` as the surrogate (as verl), so its
   length weighting matches the policy term; the logged ``entropy`` metric is the plain token mean.
3. ``importance_weights`` (truncated importance sampling between a rollout engine and the trainer,
   Yao et al. 2025) multiply the clipped surrogate only, not the KL or entropy terms, as in verl.
4. Clip fractions count only tokens whose gradient the clip actually removes (TRL's definition):
   low = ratio < 1 - eps_low with A < 0; high = ratio > 1 + eps_high with A > 0.
5. With ``beta == 0`` no KL is computed for the loss; if ``ref_logprobs`` is still given, the ``kl``
   metric is computed without gradient, for monitoring.
6. ``sequence_mean`` averages over responses that have at least one real token; an empty response
   adds nothing instead of a 0/0.
7. The KL term ``beta * KL`` is a loss term on tokens sampled from pi, so what it regularises is set
   by the estimator's expected GRADIENT, not by what its value estimates (``kl.kl_loss_gradient``):
   k2 and k3+ give grad KL(pi_theta || pi_ref), the reverse KL of the objective above; k3
   (DeepSeekMath's choice) gives grad KL(pi_ref || pi_theta), the forward KL; k1's expected gradient
   is zero, so ``beta > 0`` with k1 raises instead of silently not regularising.
8. GSPO: only ``aggregation="sequence_mean"`` reproduces GSPO's gradient with ``ratio_level="sequence"``
   (see ``sequence_ratio``); ``token_mean`` and ``constant`` weight each response's sequence term by
   its length.
"""

from __future__ import annotations

import torch

from grpokit.algorithms._checks import (
    as_mask,
    check_float,
    check_nonempty,
    check_positive,
    check_same_shape,
    check_tensor,
)
from grpokit.algorithms.kl import kl_divergence, kl_loss_gradient
from grpokit.algorithms.masked import entropy_from_logits, masked_mean, masked_sum
from grpokit.algorithms.registry import _AGGREGATION_COUNTS, lookup, register

# ---------------------------------------------------------------------------------------------
# Aggregations: fn(loss_tokens (N, T), mask (N, T) float, max_length: int | None) -> scalar
# ---------------------------------------------------------------------------------------------


def _count_nonempty_rows(mask: torch.Tensor) -> float:
    """Responses with at least one loss token: ``sequence_mean``'s normaliser."""
    return float((mask.sum(1) > 0).sum().item())


def _count_tokens(mask: torch.Tensor) -> float:
    """Loss tokens: ``token_mean``'s normaliser."""
    return float(mask.sum().item())


def _count_rows(mask: torch.Tensor) -> float:
    """Rows, empty ones included: ``constant``'s normaliser (times the fixed max_length)."""
    return float(mask.shape[0])


@register("aggregation", "sequence_mean", count=_count_nonempty_rows)
def aggregate_sequence_mean(
    loss_tokens: torch.Tensor, mask: torch.Tensor, max_length: int | None
) -> torch.Tensor:
    """``1/N' sum_i (1/|o_i| sum_t l_{i,t})`` over the N' responses with >= 1 token: original GRPO.

    Every response weighs the same, so each token of a long response weighs less (the length bias
    discussed by Dr. GRPO, arXiv 2503.20783).
    """
    lengths = mask.sum(1)  # (N,)
    per_response = masked_sum(loss_tokens, mask, dim=1) / lengths.clamp(min=1)  # (N,)
    nonempty = (lengths > 0).to(loss_tokens.dtype)  # (N,)
    return (per_response * nonempty).sum() / nonempty.sum().clamp(min=1)


@register("aggregation", "token_mean", count=_count_tokens)
def aggregate_token_mean(
    loss_tokens: torch.Tensor, mask: torch.Tensor, max_length: int | None
) -> torch.Tensor:
    """``sum_{i,t} l_{i,t} / sum_i |o_i|``: every token weighs the same (DAPO, arXiv 2503.14476, sec. 3.3)."""
    return masked_sum(loss_tokens, mask) / mask.sum().clamp(min=1)


@register("aggregation", "constant", count=_count_rows)
def aggregate_constant(loss_tokens: torch.Tensor, mask: torch.Tensor, max_length: int | None) -> torch.Tensor:
    """``sum_{i,t} l_{i,t} / (N * max_length)``: a constant normaliser (Dr. GRPO, arXiv 2503.20783).

    ``max_length`` is the generation budget (max completion tokens), the same for every batch, so
    the per-token weight does not depend on the lengths that happened to be sampled.
    """
    if max_length is None:
        raise ValueError("aggregation='constant' needs max_length (the maximum completion length); got None")
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length <= 0:
        raise ValueError(f"max_length must be a positive int, got {max_length!r}")
    longest = int((mask > 0).sum(1).max().item()) if mask.numel() else 0
    if longest > max_length:
        raise ValueError(
            f"max_length={max_length} is shorter than the longest response in mask ({longest} tokens); "
            "it must be the generation budget"
        )
    N = loss_tokens.shape[0]
    return masked_sum(loss_tokens, mask) / (N * max_length)


def aggregate(
    loss_tokens: torch.Tensor,
    mask: torch.Tensor,
    aggregation: str = "sequence_mean",
    max_length: int | None = None,
) -> torch.Tensor:
    """Reduce per-token losses to the scalar that is back-propagated.

    - ``"sequence_mean"``: ``1/N sum_i 1/|o_i| sum_t l_{i,t}`` (GRPO, DeepSeekMath eq. 3);
    - ``"token_mean"``: ``sum_{i,t} l_{i,t} / sum_i |o_i|`` (DAPO 2503.14476 sec. 3.3);
    - ``"constant"``: ``sum_{i,t} l_{i,t} / (N * max_length)`` (Dr. GRPO 2503.20783).

    Args:
        loss_tokens: (N, T) per-token loss; values under padding are ignored (even inf/NaN).
        mask: (N, T) bool or float, 1 on real tokens.
        aggregation: a registered ``"aggregation"`` name.
        max_length: the generation budget; required by ``"constant"``.

    Returns:
        A scalar tensor in ``loss_tokens``' dtype.
    """
    fn = lookup("aggregation", aggregation, argument="aggregation")
    loss_tokens = check_tensor("loss_tokens", loss_tokens, ndim=2)
    mask = as_mask("mask", mask, loss_tokens, "loss_tokens")
    return fn(loss_tokens, mask, max_length)


def aggregation_count(name: str, mask: torch.Tensor) -> float:
    """The count the aggregation ``name`` divides by, on ``mask``: its normaliser.

    - ``"token_mean"``: the number of loss tokens, ``sum_{i,t} m_{i,t}``;
    - ``"sequence_mean"``: the number of rows with at least one loss token;
    - ``"constant"``: the number of rows (the normaliser is ``N * max_length``; ``max_length`` is
      fixed, so it cancels).

    For a mini-batch mask m split into micro-batches m_1..m_K (rows):

        ``sum_k aggregate(l_k, m_k) * count(m_k) / count(m) = aggregate(l, m)``

    so gradient accumulation scales each micro-batch loss by ``count(m_k) / count(m)``, and data
    parallelism all-reduces the counts of its ranks to get ``count(m)``. A micro-batch whose count
    is 0 contributes 0.

    Args:
        name: a registered ``"aggregation"`` name.
        mask: (N, T) bool or float, 1 on the tokens that enter the loss.

    Returns:
        The count as a python float.

    Raises:
        ValueError: an unknown name, a mask that is not 2-D, or an aggregation registered without a
            count (``register("aggregation", name, count=fn)`` declares one).
    """
    lookup("aggregation", name, argument="aggregation")
    mask = check_tensor("mask", mask, ndim=2)
    count = _AGGREGATION_COUNTS.get(name)
    if count is None:
        raise ValueError(
            f"aggregation={name!r} was registered without a count, so it cannot be split into "
            f"micro-batches; register it with register('aggregation', {name!r}, count=fn)"
        )
    floating = mask.dtype if mask.is_floating_point() else torch.get_default_dtype()
    return float(count(mask.to(floating)))


# ---------------------------------------------------------------------------------------------
# Ratio levels: fn(log_ratio (N, T), mask (N, T) float) -> ratio (N, T)
# log_ratio = log pi_theta - log pi_old, already 0 under padding.
# ---------------------------------------------------------------------------------------------


@register("ratio", "token")
def token_ratio(log_ratio: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``r_{i,t} = exp(log pi_theta(o_{i,t}) - log pi_old(o_{i,t}))`` (PPO arXiv 1707.06347). (N, T) -> (N, T)."""
    return torch.exp(log_ratio)


@register("ratio", "sequence")
def sequence_ratio(log_ratio: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """GSPO's length-normalised sequence ratio (Zheng et al., arXiv 2507.18071).

    ``s_i = exp(1/|o_i| sum_t (log pi_theta - log pi_old))``, used for every token of response i.
    It is returned in the GSPO-token form ``s_{i,t} = sg[s_i] * pi_theta(o_{i,t}) / sg[pi_theta(o_{i,t})]``:
    its value is ``s_i`` (so the clip acts on the whole response at once) and its gradient is
    ``sg[s_i] * grad log pi_theta(o_{i,t})``. Only ``aggregation="sequence_mean"`` reproduces GSPO's
    gradient: it weights token t of response i by ``1/(N' |o_i|)``, so response i contributes
    ``sg[s_i] * 1/|o_i| sum_t grad log pi_theta(o_{i,t}) = grad s_i``, GSPO's sequence objective
    ``1/G sum_i min(s_i A_i, clip(s_i) A_i)``. ``token_mean`` (weight ``1/sum_j |o_j|``) and
    ``constant`` (``1/(N * max_length)``) instead give ``|o_i| * grad s_i`` up to a common factor:
    long responses weigh more, which is not GSPO. With per-token advantages it is GSPO-token.

    Shapes: log_ratio, mask (N, T) -> (N, T).
    """
    seq_log_ratio = masked_sum(log_ratio, mask, dim=1) / mask.sum(1).clamp(min=1)  # (N,)
    token_log_ratio = log_ratio - log_ratio.detach() + seq_log_ratio.detach().unsqueeze(1)  # (N, T)
    return torch.exp(token_log_ratio)


# ---------------------------------------------------------------------------------------------
# The loss
# ---------------------------------------------------------------------------------------------


def _checked_like(name: str, x: object, like: torch.Tensor) -> torch.Tensor:
    x = check_float(name, check_tensor(name, x, ndim=2))
    check_same_shape(name, x, "logprobs", like)
    return x.detach().to(like.dtype)


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    ref_logprobs: torch.Tensor | None = None,
    beta: float = 0.0,
    kl_estimator: str = "k3",
    epsilon_low: float = 0.2,
    epsilon_high: float | None = None,
    ratio_level: str = "token",
    aggregation: str = "sequence_mean",
    max_length: int | None = None,
    logits: torch.Tensor | None = None,
    importance_weights: torch.Tensor | None = None,
    entropy_coef: float = 0.0,
    entropy: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate loss with a KL penalty: minus the GRPO objective (DeepSeekMath eq. 3).

    Per token, with ``A`` the advantage and ``r`` the ratio chosen by ``ratio_level``:

        ``l_{i,t} = -w_{i,t} * min(r A, clip(r, 1 - epsilon_low, 1 + epsilon_high) A) + beta * KL_{i,t}``

    then ``loss = aggregate(l, mask, aggregation) - entropy_coef * aggregate(H, mask, aggregation)``,
    with ``w`` the optional ``importance_weights``, ``KL`` from ``kl_estimator`` and ``H`` the token
    entropy of ``logits``. References: PPO (arXiv 1707.06347 eq. 7), GRPO (2402.03300 eqs. 3-4),
    DAPO clip-higher and token mean (2503.14476), Dr. GRPO constant normaliser (2503.20783), GSPO
    sequence ratio (2507.18071; it uses much smaller clip ranges, e.g. 3e-4 / 4e-4, and only
    ``aggregation="sequence_mean"`` gives GSPO's gradient).

    The KL term's gradient (tokens sampled from pi) optimises ``KL(pi_theta || pi_ref)`` for
    ``kl_estimator`` k2 and k3+, ``KL(pi_ref || pi_theta)`` (the forward KL) for k3, and nothing for
    k1 (zero expected gradient; refused with ``beta > 0``). See ``grpokit.algorithms.kl``.

    Args:
        logprobs: (N, T) log pi_theta of the sampled tokens, with gradient.
        old_logprobs: (N, T) log pi_old of the same tokens (the sampling policy); detached.
        advantages: (N,) one per response (broadcast over its tokens) or (N, T) per token; detached.
        mask: (N, T) bool or float, 1 on real completion tokens.
        ref_logprobs: (N, T) log pi_ref; required when ``beta > 0``, optional otherwise (then only
            the ``kl`` metric uses it).
        beta: KL coefficient (>= 0); 0 computes no KL term.
        kl_estimator: a registered ``"kl"`` name whose loss gradient is not zero (not ``"k1"``) when
            ``beta > 0``; any name for the ``kl`` metric.
        epsilon_low: lower clip range, ratio floor ``1 - epsilon_low`` (in [0, 1]).
        epsilon_high: upper clip range, ceiling ``1 + epsilon_high``; None means ``epsilon_low``.
        ratio_level: a registered ``"ratio"`` name: ``"token"`` or ``"sequence"`` (GSPO).
        aggregation: a registered ``"aggregation"`` name.
        max_length: the generation budget, required by ``aggregation="constant"``.
        logits: (N, T, V) policy logits at the completion positions; enables the ``entropy`` metric
            and the entropy bonus.
        importance_weights: (N, T) detached multiplicative weights on the surrogate (e.g. from
            ``truncated_importance_weights``).
        entropy_coef: entropy bonus coefficient c_H (>= 0); needs ``logits`` or ``entropy`` when > 0.
        entropy: (N, T) per-token entropy with gradient, for policies that are not categorical over
            ``logits`` (e.g. Gaussian); used for the bonus and the metric when ``logits`` is None.

    Returns:
        ``(loss, metrics)``: the scalar loss in ``logprobs``' dtype, and python floats
        ``policy_loss`` (the aggregated surrogate, weights included), ``clip_fraction_low``,
        ``clip_fraction_high``, ``clip_fraction`` (of real tokens), ``ratio_mean``, ``ratio_min``,
        ``ratio_max`` (over real tokens), ``kl`` (token mean; when ``beta > 0`` or ``ref_logprobs``
        is given), ``entropy`` (token mean; when ``logits`` or ``entropy`` is given).

    Raises:
        ValueError: shape or dtype mismatch, no real tokens, an unknown registered name (the valid
            names are listed), ``beta > 0`` without ``ref_logprobs`` or with ``kl_estimator="k1"``,
            ``entropy_coef > 0`` without ``logits`` or ``entropy``, ``aggregation="constant"`` without
            ``max_length``.
    """
    return _policy_objective(
        logprobs, old_logprobs, advantages, mask, ref_logprobs=ref_logprobs, beta=beta,
        kl_estimator=kl_estimator, epsilon_low=epsilon_low, epsilon_high=epsilon_high,
        ratio_level=ratio_level, aggregation=aggregation, max_length=max_length, logits=logits,
        importance_weights=importance_weights, entropy_coef=entropy_coef, entropy=entropy,
    )  # fmt: skip


SURROGATES = ("clip", "cispo", "sapo")


def _policy_objective(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    ref_logprobs: torch.Tensor | None,
    beta: float,
    kl_estimator: str,
    epsilon_low: float,
    epsilon_high: float | None,
    ratio_level: str,
    aggregation: str,
    max_length: int | None,
    logits: torch.Tensor | None,
    importance_weights: torch.Tensor | None,
    entropy_coef: float,
    entropy: torch.Tensor | None,
    surrogate: str = "clip",
    sapo_tau_pos: float = 1.0,
    sapo_tau_neg: float = 1.05,
) -> tuple[torch.Tensor, dict[str, float]]:
    """``policy_loss`` with a choice of per-token surrogate (r the ratio, A the advantage, w the weights):

    - ``"clip"``: ``-w * min(r A, clip(r, 1 - eps_low, 1 + eps_high) A)`` (PPO/GRPO);
    - ``"cispo"``: ``-w * sg(clip(r, 1 - eps_low, 1 + eps_high)) * A * log pi_theta`` (CISPO);
    - ``"sapo"``: ``-w * f(r) * A`` with ``f(r) = sigmoid(tau (r - 1)) * 4 / tau``, tau = ``sapo_tau_pos``
      where A > 0 else ``sapo_tau_neg`` (SAPO).

    The KL and entropy terms and all checks are shared. See ``grpokit.algorithms.objectives``.
    """
    if surrogate not in SURROGATES:
        raise ValueError(f"surrogate={surrogate!r} is not one of {list(SURROGATES)}")
    ratio_fn = lookup("ratio", ratio_level, argument="ratio_level")
    aggregate_fn = lookup("aggregation", aggregation, argument="aggregation")
    lookup("kl", kl_estimator, argument="kl_estimator")
    if beta > 0 and kl_loss_gradient(kl_estimator) is None:
        raise ValueError(
            f"kl_estimator={kl_estimator!r} with beta>0 adds no regularisation: its expected gradient is "
            "zero; use k2, k3 or k3+"
        )
    logprobs = check_float("logprobs", check_tensor("logprobs", logprobs, ndim=2))
    old_logprobs = _checked_like("old_logprobs", old_logprobs, logprobs)
    mask = as_mask("mask", mask, logprobs, "logprobs")
    advantages = check_float("advantages", check_tensor("advantages", advantages))
    if advantages.shape not in (logprobs.shape, logprobs.shape[:1]):
        raise ValueError(
            f"advantages has shape {tuple(advantages.shape)}; expected (N,) = {tuple(logprobs.shape[:1])} "
            f"or (N, T) = {tuple(logprobs.shape)} like logprobs"
        )
    if epsilon_high is None:
        epsilon_high = epsilon_low
    if not 0 <= epsilon_low <= 1:
        raise ValueError(f"epsilon_low must be in [0, 1], got {epsilon_low}")
    check_positive("epsilon_high", epsilon_high, allow_zero=True)
    check_positive("beta", beta, allow_zero=True)
    check_positive("entropy_coef", entropy_coef, allow_zero=True)
    if beta > 0 and ref_logprobs is None:
        raise ValueError(f"beta={beta} > 0 needs ref_logprobs (the reference policy's log-probs); got None")
    if entropy_coef > 0 and logits is None and entropy is None:
        raise ValueError(
            f"entropy_coef={entropy_coef} > 0 needs logits (or entropy) to compute the entropy; got None"
        )
    if surrogate == "sapo":
        check_positive("sapo_tau_pos", sapo_tau_pos)
        check_positive("sapo_tau_neg", sapo_tau_neg)
    if ref_logprobs is not None:
        ref_logprobs = _checked_like("ref_logprobs", ref_logprobs, logprobs)
    if importance_weights is not None:
        importance_weights = _checked_like("importance_weights", importance_weights, logprobs)
    if logits is not None:
        logits = check_float("logits", check_tensor("logits", logits, ndim=3))
        if logits.shape[:2] != logprobs.shape:
            raise ValueError(
                f"logits has shape {tuple(logits.shape)}; its first two dimensions must be logprobs' "
                f"(N, T) = {tuple(logprobs.shape)}"
            )
    if entropy is not None:
        entropy = check_float("entropy", check_tensor("entropy", entropy, ndim=2))
        check_same_shape("entropy", entropy, "logprobs", logprobs)
    check_nonempty("mask", mask)

    real = mask > 0  # (N, T)
    zero = logprobs.new_zeros(())
    # Padding log-probs may be garbage; selecting them away before exp keeps both the loss and its
    # gradient finite (a where *after* exp would back-propagate 0 * inf = NaN).
    log_ratio = torch.where(real, logprobs - old_logprobs, zero)  # (N, T)
    ratio = ratio_fn(log_ratio, mask)  # (N, T)
    adv = advantages.detach().to(logprobs.dtype)
    adv = adv.unsqueeze(1).expand_as(ratio) if adv.dim() == 1 else adv  # (N, T)

    if surrogate == "clip":
        objective = torch.min(ratio * adv, torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high) * adv)
    elif surrogate == "cispo":
        weight = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high).detach()  # (N, T)
        objective = weight * adv * torch.where(real, logprobs, zero)
    else:  # sapo
        tau = torch.where(adv > 0, ratio.new_tensor(sapo_tau_pos), ratio.new_tensor(sapo_tau_neg))  # (N, T)
        objective = torch.sigmoid(tau * (ratio - 1)) * (4 / tau) * adv
    pg_tokens = -objective if importance_weights is None else -objective * importance_weights  # (N, T)
    pg_loss = aggregate_fn(pg_tokens, mask, max_length)
    loss = pg_loss

    kl_mean = None
    if beta > 0:
        assert ref_logprobs is not None  # checked above: beta > 0 needs ref_logprobs
        kl_tokens = kl_divergence(
            torch.where(real, logprobs, zero), torch.where(real, ref_logprobs, zero), kl_estimator
        )  # (N, T)
        loss = loss + beta * aggregate_fn(kl_tokens, mask, max_length)
        kl_mean = masked_mean(kl_tokens.detach(), mask)
    elif ref_logprobs is not None:
        with torch.no_grad():
            kl_tokens = kl_divergence(
                torch.where(real, logprobs, zero), torch.where(real, ref_logprobs, zero), kl_estimator
            )
            kl_mean = masked_mean(kl_tokens, mask)

    entropy_mean = None
    if logits is not None:
        with torch.set_grad_enabled(entropy_coef > 0 and torch.is_grad_enabled()):
            entropy = entropy_from_logits(logits).to(logprobs.dtype)  # (N, T)
    if entropy is not None:
        entropy = torch.where(real, entropy.to(logprobs.dtype), zero)  # (N, T)
        if entropy_coef > 0:
            loss = loss - entropy_coef * aggregate_fn(entropy, mask, max_length)
        entropy_mean = masked_mean(entropy.detach(), mask)

    with torch.no_grad():
        r = ratio.detach()
        if surrogate == "clip":
            low = real & (r < 1 - epsilon_low) & (adv < 0)  # (N, T) the clip removed the gradient
            high = real & (r > 1 + epsilon_high) & (adv > 0)  # (N, T)
        else:  # cispo: the weight was truncated (its gradient is kept); sapo: outside the would-be clip
            low = real & (r < 1 - epsilon_low)  # (N, T)
            high = real & (r > 1 + epsilon_high)  # (N, T)
        inf = torch.tensor(float("inf"), dtype=r.dtype, device=r.device)
        names = ["policy_loss", "clip_fraction_low", "clip_fraction_high", "clip_fraction",
                 "ratio_mean", "ratio_min", "ratio_max"]  # fmt: skip
        values = [
            pg_loss.detach(),
            masked_mean(low.to(r.dtype), mask),
            masked_mean(high.to(r.dtype), mask),
            masked_mean((low | high).to(r.dtype), mask),
            masked_mean(r, mask),
            torch.where(real, r, inf).min(),
            torch.where(real, r, -inf).max(),
        ]
        for name, value in (("kl", kl_mean), ("entropy", entropy_mean)):
            if value is not None:
                names.append(name)
                values.append(value)
        # One device->host transfer for all metrics instead of one sync per .item().
        metrics = dict(zip(names, torch.stack(values).tolist()))
    return loss, metrics
