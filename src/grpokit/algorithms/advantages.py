"""Group-relative advantages: outcome supervision (one reward per response) and process supervision.

GRPO (Shao et al., DeepSeekMath, arXiv 2402.03300, sec. 4.1.2) samples a group of G responses
per prompt and replaces PPO's learned value baseline with the group's own reward statistics:

    A_i = (r_i - mean(r_1..r_G)) / std(r_1..r_G)          (outcome supervision, every token of o_i)

Shapes: N responses in the batch (N = B*G when every prompt has G responses); groups are given by
``group_ids`` (N,) and may have any ids, any order and different sizes. Everything is vectorised
with ``index_add``/``scatter_reduce`` and one sort; there is no Python loop over groups.

Deviations from the papers, all deliberate:

1. A group whose rewards are all equal (or a group of one) gets advantage exactly 0 for every
   estimator, enforced explicitly: ``r - mean`` is not exactly 0 in floating point (three copies of
   0.1 average to 0.10000000000000002), and dividing that by ``std + eps`` would give a spurious
   1e-11 advantage instead of the "no signal" the paper intends.
2. ``std`` is the sample (unbiased, n - 1) standard deviation, as ``torch.std`` in DeepSeekMath's
   released code and TRL; the paper does not say which. ``eps`` (default 1e-6, as verl; TRL uses
   1e-4) is added to the std, not the variance, so a tiny spread cannot explode the advantage.
3. ``grpo_batch_norm`` (the "normalise over the batch" reading of GRPO in the seed notes, also
   REINFORCE++-baseline) divides the group-centred rewards by their batch std without subtracting
   the batch mean: that mean is already exactly 0 in exact arithmetic (each group sums to 0), so
   subtracting its rounded value would only add noise.
4. ``process_advantages`` uses the same sample std over the group's steps and the same rule 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from grpokit.algorithms._checks import check_finite, check_float, check_same_shape, check_tensor
from grpokit.algorithms.registry import lookup, register


@dataclass(frozen=True)
class GroupIndex:
    """Which response belongs to which group, computed once per batch from ``group_ids``.

    M is the number of distinct groups; groups are numbered 0..M-1 in ascending order of their id.
    """

    ids: torch.Tensor  # (M,) the distinct group ids, ascending
    inverse: torch.Tensor  # (N,) long, group number (0..M-1) of each response
    counts: torch.Tensor  # (M,) long, responses per group

    @classmethod
    def from_ids(cls, group_ids: torch.Tensor) -> GroupIndex:
        group_ids = check_tensor("group_ids", group_ids, ndim=1)
        if group_ids.is_floating_point() or group_ids.is_complex():
            raise ValueError(f"group_ids must be an integer (or bool) tensor, got dtype {group_ids.dtype}")
        ids, inverse, counts = torch.unique(group_ids, return_inverse=True, return_counts=True)
        return cls(ids=ids, inverse=inverse, counts=counts)

    @property
    def num_groups(self) -> int:
        return int(self.ids.numel())

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Per-group sum of ``values`` (N,) -> (M,)."""
        out = values.new_zeros(self.num_groups)
        return out.index_add(0, self.inverse, values)

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """Per-group mean of ``values`` (N,) -> (M,)."""
        return self.sum(values) / self.counts.to(values.dtype)

    def std(self, values: torch.Tensor) -> torch.Tensor:
        """Per-group sample std (n - 1) of ``values`` (N,) -> (M,); 0 for groups of one."""
        centred = values - self.mean(values)[self.inverse]  # (N,)
        dof = (self.counts - 1).clamp(min=1).to(values.dtype)  # (M,)
        return (self.sum(centred * centred) / dof).sqrt()

    def is_constant(self, values: torch.Tensor) -> torch.Tensor:
        """(M,) bool: True where every value of the group is identical (always for groups of one)."""
        hi = values.new_full((self.num_groups,), float("-inf")).scatter_reduce(
            0, self.inverse, values, "amax"
        )
        lo = values.new_full((self.num_groups,), float("inf")).scatter_reduce(0, self.inverse, values, "amin")
        return hi == lo


def _check_rewards(rewards: object, group_ids: object) -> tuple[torch.Tensor, GroupIndex]:
    rewards = check_tensor("rewards", rewards, ndim=1)
    group_ids = check_tensor("group_ids", group_ids, ndim=1)
    check_same_shape("group_ids", group_ids, "rewards", rewards)
    if rewards.numel() == 0:
        raise ValueError("rewards is empty: there are no responses to compute advantages for")
    if not rewards.is_floating_point():
        # 0/1 correctness rewards often arrive as ints; the advantage is a real number.
        rewards = rewards.to(torch.get_default_dtype())
    check_finite("rewards", rewards)
    return rewards, GroupIndex.from_ids(group_ids.to(rewards.device))


# ---------------------------------------------------------------------------------------------
# Outcome-supervision estimators: fn(rewards (N,), groups: GroupIndex, eps: float) -> (N,)
# ---------------------------------------------------------------------------------------------


@register("advantage", "grpo")
def grpo_advantage(rewards: torch.Tensor, groups: GroupIndex, eps: float) -> torch.Tensor:
    """GRPO outcome advantage, DeepSeekMath (arXiv 2402.03300) sec. 4.1.2.

    ``A_i = (r_i - mean_g(r)) / (std_g(r) + eps)`` with the sample (n - 1) std of response i's group g.

    Args:
        rewards: (N,) one scalar reward per response.
        groups: the group index of the batch.
        eps: added to the std.

    Returns:
        (N,) advantages, in ``rewards``' dtype.
    """
    mean = groups.mean(rewards)[groups.inverse]  # (N,)
    std = groups.std(rewards)[groups.inverse]  # (N,)
    return (rewards - mean) / (std + eps)


@register("advantage", "grpo_batch_norm")
def grpo_batch_norm_advantage(rewards: torch.Tensor, groups: GroupIndex, eps: float) -> torch.Tensor:
    """Group-centred rewards scaled to unit variance over the whole batch.

    ``c_i = r_i - mean_g(r)``, then ``A_i = c_i / (std_batch(c) + eps)`` (sample std over all N).
    The batch mean of ``c`` is 0 by construction, so ``A`` has zero mean and unit variance over the
    batch (up to ``eps``). Centring per group keeps the baseline local while one shared scale stops
    near-constant groups (tiny std) from getting huge advantages (Dr. GRPO, arXiv 2503.20783,
    on the question-level difficulty bias of the per-group std).

    Args:
        rewards: (N,); groups: the group index; eps: added to the batch std.

    Returns:
        (N,) advantages.
    """
    centred = rewards - groups.mean(rewards)[groups.inverse]  # (N,)
    if centred.numel() < 2:
        return torch.zeros_like(centred)
    return centred / (centred.std() + eps)


@register("advantage", "dr_grpo")
def dr_grpo_advantage(rewards: torch.Tensor, groups: GroupIndex, eps: float) -> torch.Tensor:
    """Dr. GRPO advantage (Liu et al., "Understanding R1-Zero-Like Training", arXiv 2503.20783).

    ``A_i = r_i - mean_g(r)``: no division by the group std, which removes the bias toward questions
    that are too easy or too hard (small std). ``eps`` is unused; the signature is shared.

    Args:
        rewards: (N,); groups: the group index.

    Returns:
        (N,) advantages.
    """
    return rewards - groups.mean(rewards)[groups.inverse]


@register("advantage", "rloo")
def rloo_advantage(rewards: torch.Tensor, groups: GroupIndex, eps: float) -> torch.Tensor:
    """REINFORCE leave-one-out (Ahmadian et al., "Back to Basics", arXiv 2402.14740).

    ``A_i = r_i - 1/(n_g - 1) * sum_{j != i in g} r_j``, equivalently ``n_g/(n_g - 1) * (r_i - mean_g)``:
    the baseline of each response is the mean of the other members of its group, so it does not
    depend on the response itself. A group of one has no other member to form a baseline: its
    response gets 0 ("no signal", like a constant group) instead of an error, so a prompt left with
    a single scored completion, or a returns-to-go cell where one episode is still running, simply
    contributes nothing. ``eps`` is unused.

    Args:
        rewards: (N,); groups: the group index.

    Returns:
        (N,) advantages; 0 for the members of groups of one.
    """
    total = groups.sum(rewards)[groups.inverse]  # (N,)
    count = groups.counts[groups.inverse]  # (N,)
    others = (count - 1).clamp(min=1).to(rewards.dtype)  # (N,)
    advantages = rewards - (total - rewards) / others  # (N,)
    return torch.where(count > 1, advantages, torch.zeros_like(advantages))


@register("advantage", "rank")
def rank_advantage(rewards: torch.Tensor, groups: GroupIndex, eps: float) -> torch.Tensor:
    """Centred within-group ranks scaled to [-1, 1] (the "relative rankings" reading of GRPO, seed 003).

    With ``rho_i`` in 1..n_g the rank of ``r_i`` in its group (ties get the average of the ranks
    they span, like ``scipy.stats.rankdata(method="average")``):

        ``A_i = (2 * rho_i - n_g - 1) / (n_g - 1)``

    so the lowest reward gets -1, the highest +1, the median 0, and equal gaps in rank give equal
    gaps in advantage whatever the reward scale. Groups of one get 0. ``eps`` is unused.

    Args:
        rewards: (N,); groups: the group index.

    Returns:
        (N,) advantages in [-1, 1].
    """
    # Sort by the composite key (group, dense reward rank); then for each response the number of
    # group members strictly below it (lt) and at or below it (le) are two binary searches, and the
    # average rank is (lt + le + 1) / 2, so 2*rho - n - 1 = lt + le - n.
    _, dense = torch.unique(rewards, return_inverse=True)  # (N,) 0..U-1
    num_values = int(dense.max().item()) + 1
    key = groups.inverse * num_values + dense  # (N,) int64
    sorted_key, _ = torch.sort(key)
    group_start = torch.searchsorted(sorted_key, groups.inverse * num_values)  # (N,)
    lt = torch.searchsorted(sorted_key, key) - group_start  # (N,)
    le = torch.searchsorted(sorted_key, key, right=True) - group_start  # (N,)
    n = groups.counts[groups.inverse]  # (N,)
    return (lt + le - n).to(rewards.dtype) / (n - 1).clamp(min=1).to(rewards.dtype)


def group_advantages(
    rewards: torch.Tensor, group_ids: torch.Tensor, estimator: str = "grpo", eps: float = 1e-6
) -> torch.Tensor:
    """One advantage per response from the rewards of its group (outcome supervision).

    Built-in estimators (``grpokit.algorithms.available("advantage")``), with g the group of i and
    n_g its size:

    - ``"grpo"``: ``(r_i - mean_g) / (std_g + eps)``, sample std (n - 1) (DeepSeekMath 2402.03300).
    - ``"grpo_batch_norm"``: ``c_i = r_i - mean_g``, then ``c_i / (std_batch(c) + eps)``.
    - ``"dr_grpo"``: ``r_i - mean_g`` (Dr. GRPO 2503.20783).
    - ``"rank"``: ``(2*rank_i - n_g - 1) / (n_g - 1)``, average rank for ties, in [-1, 1].
    - ``"rloo"``: ``r_i - mean of the other n_g - 1 rewards`` (RLOO 2402.14740).

    A group whose rewards are all equal, and a group of one response, gets exactly 0 (never NaN,
    inf or an error) whatever the estimator: there is nothing in the group to compare against.
    The trainer broadcasts the (N,) result over each response's tokens.

    Args:
        rewards: (N,) scalar reward per response; integer rewards are cast to the default float
            dtype. Must be finite.
        group_ids: (N,) integer id of each response's prompt group; any values, any order, groups of
            different sizes allowed.
        estimator: a registered ``"advantage"`` name.
        eps: numerical floor added to the std where an estimator divides by one.

    Returns:
        (N,) advantages in ``rewards``' (floating) dtype, on its device.

    Raises:
        ValueError: mismatched or empty inputs, a non-finite reward (its index is named), an unknown
            estimator (the valid names are listed).
    """
    fn = lookup("advantage", estimator, argument="estimator")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    rewards, groups = _check_rewards(rewards, group_ids)
    advantages = fn(rewards, groups, eps)  # (N,)
    constant = groups.is_constant(rewards)[groups.inverse]  # (N,)
    return torch.where(constant, torch.zeros_like(advantages), advantages)


def multi_reward_advantages(
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    weights: torch.Tensor | None = None,
    estimator: str = "grpo",
    eps: float = 1e-4,
) -> torch.Tensor:
    """GDPO advantages from K reward functions: normalise each reward in its group, then combine.

    GDPO ("Group reward-Decoupled Normalization Policy Optimization for Multi-reward RL
    Optimization", Liu et al., NVIDIA, arXiv 2601.05242): summing K rewards before the group
    normalisation collapses distinct reward combinations into the same advantage, so each reward
    column k is normalised within its group first, the results are summed with the weights, and
    the sum is normalised over the batch so its scale does not grow with K:

        ``A_k = est(r_{:,k}; groups)``  (the group estimator, column by column)
        ``S_i = sum_k w_k A_{i,k}``
        ``A_i = (S_i - mean_batch(S)) / (std_batch(S) + eps)``   (sample std, as the paper's batch-wise step)

    ``r_{i,k}`` may be NaN for "response i was not scored by reward function k" (e.g. a function
    that only applies to some prompts): such an entry takes no part in column k's group statistics
    and contributes 0 to ``S_i`` (TRL's ``nansum`` convention). A response with no score at all gets
    advantage exactly 0 and is left out of the batch statistics. A group of one, a column constant
    in a group, and a batch whose ``S`` is constant give exactly 0, as in ``group_advantages``.

    Args:
        rewards: (N, K) rewards, finite or NaN; integer rewards are cast to the default float dtype.
        group_ids: (N,) integer group id of each response.
        weights: (K,) weight of each reward; None means all 1.
        estimator: a registered ``"advantage"`` name used for every column (``"grpo"`` in the paper).
        eps: added to the std by the column estimator and by the batch normalisation (1e-4, as TRL).

    Returns:
        (N,) advantages in ``rewards``' floating dtype.

    Raises:
        ValueError: shapes, an infinite reward, a non-finite weight, an empty batch, an unknown
            estimator, a negative eps (the argument is named).
    """
    lookup("advantage", estimator, argument="estimator")
    rewards = check_tensor("rewards", rewards, ndim=2)
    if not rewards.is_floating_point():
        rewards = rewards.to(torch.get_default_dtype())
    N, K = rewards.shape
    if N == 0 or K == 0:
        raise ValueError(
            f"rewards is empty (shape {tuple(rewards.shape)}): nothing to compute advantages for"
        )
    group_ids = check_tensor("group_ids", group_ids, ndim=1)
    if group_ids.shape[0] != N:
        raise ValueError(
            f"group_ids has {group_ids.shape[0]} entries but rewards has {N} rows; they must match"
        )
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    check_finite("rewards (NaN marks 'not scored')", torch.where(rewards.isnan(), 0.0, rewards))
    if weights is None:
        weights = rewards.new_ones(K)
    else:
        weights = check_float("weights", check_tensor("weights", weights, ndim=1))
        if weights.shape[0] != K:
            raise ValueError(
                f"weights has {weights.shape[0]} entries but rewards has {K} columns; they must match"
            )
        check_finite("weights", weights)
        weights = weights.to(device=rewards.device, dtype=rewards.dtype)

    scored = ~rewards.isnan()  # (N, K)
    combined = rewards.new_zeros(N)  # (N,)
    for k in range(K):  # K reward functions, a handful; the groups are vectorised
        rows = scored[:, k]  # (N,)
        if rows.any():
            column = rewards.new_zeros(N)
            column[rows] = group_advantages(rewards[rows, k], group_ids[rows], estimator, eps)
            combined = combined + weights[k] * column

    any_score = scored.any(1)  # (N,)
    batch = combined[any_score]  # (N',)
    if batch.numel() < 2 or bool((batch == batch[0]).all()):
        return torch.zeros_like(combined)
    normalised = (combined - batch.mean()) / (batch.std() + eps)  # (N,)
    return torch.where(any_score, normalised, torch.zeros_like(normalised))


def group_reward_stats(rewards: torch.Tensor, group_ids: torch.Tensor) -> dict[str, float]:
    """Summary of how much signal the groups carry, for logging (python floats).

    Keys:
        ``num_groups``: number of distinct group ids.
        ``zero_std_group_fraction``: fraction of groups whose rewards are all equal (these get zero
            advantage, so a high value means most prompts are too easy or too hard; DAPO's dynamic
            sampling, arXiv 2503.14476 sec. 3.2, filters them out).
        ``reward_std_within_group_mean``: mean over groups of the sample std within the group.
        ``reward_mean``, ``reward_std``: over the whole batch (sample std; 0 when N == 1).
        ``group_size_min``, ``group_size_max``.

    Args:
        rewards: (N,) finite rewards; group_ids: (N,) integer ids.
    """
    rewards, groups = _check_rewards(rewards, group_ids)
    with torch.no_grad():
        values = torch.stack(
            [
                groups.is_constant(rewards).to(rewards.dtype).mean(),
                groups.std(rewards).mean(),
                rewards.mean(),
                rewards.std() if rewards.numel() > 1 else rewards.new_zeros(()),
            ]
        ).tolist()
    return {
        "num_groups": float(groups.num_groups),
        "zero_std_group_fraction": values[0],
        "reward_std_within_group_mean": values[1],
        "reward_mean": values[2],
        "reward_std": values[3],
        "group_size_min": float(groups.counts.min().item()),
        "group_size_max": float(groups.counts.max().item()),
    }


# ---------------------------------------------------------------------------------------------
# Process supervision
# ---------------------------------------------------------------------------------------------


def process_advantages(
    step_rewards: torch.Tensor,
    step_ends: torch.Tensor,
    mask: torch.Tensor,
    group_ids: torch.Tensor,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Per-token advantages from per-step rewards, DeepSeekMath (arXiv 2402.03300) sec. 4.1.3.

    Response i has steps j = 1..K_i ending at token ``index(j)``, each with a reward ``r_i^j``.
    The rewards are normalised over ALL steps of ALL responses of the group, R:

        ``r~_i^j = (r_i^j - mean(R)) / (std(R) + eps)``

    and the advantage of token t is the sum of the normalised rewards of the steps that end at or
    after it:

        ``A_{i,t} = sum_{index(j) >= t} r~_i^{index(j)}``

    Outcome supervision is the special case of one step per response at its last real token, where
    this equals ``group_advantages(rewards, group_ids, "grpo")`` on every real token.

    Args:
        step_rewards: (N, S) float reward of each step, S the largest number of steps; values of
            padding steps are ignored.
        step_ends: (N, S) long, token index (0..T-1) of the last token of each step, -1 for a padding
            step. Each real step must end on a real token; steps need not be sorted.
        mask: (N, T) bool or float, 1 on real completion tokens.
        group_ids: (N,) integer group id of each response.
        eps: added to the group std.

    Returns:
        (N, T) advantages in ``step_rewards``' dtype; padding tokens and tokens after a response's
        last step are 0. A group whose step rewards are all equal gets 0 everywhere.

    Raises:
        ValueError: mismatched shapes, a non-finite reward on a real step, a step end outside
            [-1, T-1] or on a padding token (the row is named).
    """
    step_rewards = check_float("step_rewards", check_tensor("step_rewards", step_rewards, ndim=2))
    step_ends = check_tensor("step_ends", step_ends, ndim=2)
    check_same_shape("step_ends", step_ends, "step_rewards", step_rewards)
    if step_ends.is_floating_point():
        raise ValueError(f"step_ends must be an integer tensor of token indices, got dtype {step_ends.dtype}")
    mask = check_tensor("mask", mask, ndim=2)
    N, T = mask.shape
    if step_rewards.shape[0] != N:
        raise ValueError(f"step_rewards has {step_rewards.shape[0]} rows but mask has {N}; they must match")
    group_ids = check_tensor("group_ids", group_ids, ndim=1)
    if group_ids.shape[0] != N:
        raise ValueError(f"group_ids has {group_ids.shape[0]} entries but mask has {N} rows; they must match")
    if N == 0:
        raise ValueError("mask is empty: there are no responses to compute advantages for")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    mask = mask.to(step_rewards.dtype)

    real = step_ends >= 0  # (N, S)
    if (step_ends < -1).any() or (step_ends >= T).any():
        row = int(((step_ends < -1) | (step_ends >= T)).any(1).nonzero()[0].item())
        raise ValueError(
            f"step_ends row {row} has an index outside [-1, {T - 1}] (T = {T} completion tokens)"
        )
    ends = step_ends.clamp(min=0)  # (N, S), padding steps point at token 0 and are zeroed below
    on_padding = real & (mask.gather(1, ends) <= 0)  # (N, S)
    if on_padding.any():
        row = int(on_padding.any(1).nonzero()[0].item())
        raise ValueError(f"step_ends row {row} has a step ending on a padding token (mask is 0 there)")
    check_finite("step_rewards (real steps)", torch.where(real, step_rewards, 0.0))

    # Flatten the real steps into one (K,) list tagged with their response's group.
    groups = GroupIndex.from_ids(group_ids.to(step_rewards.device))
    row_of_step = torch.arange(N, device=step_rewards.device).unsqueeze(1).expand_as(step_ends)  # (N, S)
    flat_rewards = step_rewards[real]  # (K,)
    step_groups = GroupIndex.from_ids(groups.inverse[row_of_step[real]])  # groups that have steps
    normalised = (flat_rewards - step_groups.mean(flat_rewards)[step_groups.inverse]) / (
        step_groups.std(flat_rewards)[step_groups.inverse] + eps
    )  # (K,)
    constant = step_groups.is_constant(flat_rewards)[step_groups.inverse]  # (K,)
    normalised = torch.where(constant, torch.zeros_like(normalised), normalised)

    # Place each normalised reward at its step's end token, then sum from the right: the token at t
    # collects every step ending at an index >= t.
    at_end = step_rewards.new_zeros(N, T)  # (N, T)
    at_end = at_end.index_put((row_of_step[real], ends[real]), normalised, accumulate=True)
    advantages = at_end.flip(1).cumsum(1).flip(1)  # (N, T)
    return torch.where(mask > 0, advantages, torch.zeros_like(advantages))


def outcome_as_process(rewards: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Express outcome rewards (N,) as one step per response ending at its last real token.

    Returns ``(step_rewards (N, 1), step_ends (N, 1))`` for ``process_advantages``; a response with
    no real token gets a padding step (-1).
    """
    rewards = check_tensor("rewards", rewards, ndim=1)
    mask = check_tensor("mask", mask, ndim=2)
    if mask.shape[0] != rewards.shape[0]:
        raise ValueError(f"rewards has {rewards.shape[0]} entries but mask has {mask.shape[0]} rows")
    T = mask.shape[1]
    positions = torch.arange(T, device=mask.device).expand_as(mask)  # (N, T)
    last = torch.where(mask.bool(), positions, -1).amax(1, keepdim=True)  # (N, 1)
    return rewards.unsqueeze(1), last
