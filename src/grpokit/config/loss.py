"""The loss section shared by GRPO, PPO and classic RL (one set of names), and the algorithm sections of the
trainers of language models built on it."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from grpokit.config.base import Section, check_registered

REGISTRY_KINDS: dict[str, str] = {
    "loss_type": "loss",
    "kl_estimator": "kl",
    "ratio_level": "ratio",
    "loss_aggregation": "aggregation",
}
"""The registry each name-valued loss field is checked against (``grpokit.algorithms.register``)."""


class LossConfig(Section):
    """The loss section shared by every trainer (GRPO and PPO for language models, classic RL): one set of
    names for the clipped surrogate, its KL term, its aggregation and its passes over a batch."""

    loss_type: str = "grpo"
    """Policy objective, a name registered in ``grpokit.algorithms`` (kind ``loss``): ``grpo`` (the clipped
    surrogate), ``gspo``, ``cispo``, ``sapo``, ``ppo``, or your own."""

    beta: float = Field(0.0, ge=0)
    """KL penalty coefficient against the reference model; 0 never loads a reference model."""

    kl_estimator: str = "k3"
    """Per-token KL estimator, a name registered in ``grpokit.algorithms`` (kind ``kl``): Schulman's k1/k2/k3
    (k3 is DeepSeekMath's unbiased, non-negative one), ``k3+`` (k3's value with k2's gradient), or your own.
    As a loss term (``beta > 0`` in GRPO and classic RL) k1 is refused: its expected gradient is zero."""

    epsilon_low: float = Field(0.2, gt=0)
    """Lower clip range: the ratio is clipped at 1 - epsilon_low."""

    epsilon_high: float | None = Field(None, gt=0)
    """Upper clip range, 1 + epsilon_high (DAPO's clip-higher uses 0.28). ``None``: same as epsilon_low."""

    ratio_level: str = "token"
    """Importance ratio per token (PPO/GRPO) or per sequence (GSPO's length-normalised sequence ratio); a
    name registered in ``grpokit.algorithms`` (kind ``ratio``)."""

    loss_aggregation: str = "sequence_mean"
    """How token losses become one number, a name registered in ``grpokit.algorithms`` (kind
    ``aggregation``): mean per sequence then over sequences (``sequence_mean``, GRPO paper), mean over all
    tokens of the batch (``token_mean``, DAPO), or sum divided by a constant (``constant``, Dr. GRPO)."""

    num_iterations: int = Field(1, ge=1)
    """mu: passes over each generation batch. 1 = on-policy (old log-probs are the current ones, detached)."""

    entropy_coef: float = Field(0.0, ge=0)
    """Entropy bonus coefficient (subtracted from the loss)."""

    kl_in_reward: ClassVar[bool] = False
    """Whether the trainer puts the KL in the reward (PPO for language models) rather than in the loss."""

    @field_validator("loss_type", "kl_estimator", "ratio_level", "loss_aggregation")
    @classmethod
    def _registered(cls, value: str, info: ValidationInfo) -> str:
        field = str(info.field_name)
        return check_registered(REGISTRY_KINDS[field], value, field)

    @model_validator(mode="after")
    def _check_kl_term(self) -> LossConfig:
        if self.beta > 0 and self.kl_estimator == "k1" and not self.kl_in_reward:
            raise ValueError(
                f"kl_estimator 'k1' with beta {self.beta}: as a loss term k1 = log(pi / pi_ref) has zero "
                "expected gradient, so it adds no regularisation toward the reference; use k2, k3 or 'k3+'"
            )
        return self


class ValueLossConfig(Section):
    """The value-model fields shared by PPO for language models and PPO in classic RL."""

    gamma: float = Field(1.0, ge=0, le=1)
    """GAE discount per step; 1 (no discount) is usual for language models (one step = one token)."""

    gae_lambda: float = Field(0.95, ge=0, le=1)
    """GAE lambda: 1 gives Monte-Carlo returns (no value bias, high variance), 0 one-step TD targets."""

    whiten_advantages: bool = True
    """Normalise the advantages of each batch to mean 0 and variance 1 over its real steps."""

    vf_coef: float = Field(0.1, ge=0)
    """c_v: value-loss weight in ``L = -L_clip + c_v * L_V - c_H * H``."""

    cliprange_value: float | None = Field(0.2, gt=0)
    """Clip range of the value loss around the rollout-time values (PPO2); ``None``: unclipped."""


class PolicyLossConfig(LossConfig):
    """The shared loss plus what both trainers of language models have: a refreshable reference model,
    DAPO's overlong filtering and the correction for a separate rollout engine's log-probs."""

    ref_model_sync_steps: int = Field(0, ge=0)
    """Copy the policy into the reference model every this many steps (iterative GRPO); 0 never."""

    overlong_filtering: bool = False
    """DAPO: completions cut at max_new_tokens are masked out of the loss (still in the group baseline)."""

    rollout_importance_sampling: Literal["auto", "none", "token", "sequence"] = "auto"
    """Truncated importance sampling (Yao et al. 2025) against the rollout engine's log-probs: each token's
    surrogate is weighted by ``min(pi_trainer / pi_rollout, rollout_importance_cap)``, per token (``token``)
    or with the product over the response (``sequence``). ``auto``: ``token`` with ``generation.backend:
    vllm``, whose kernels compute other probabilities than the trainer's, ``none`` with ``transformers``,
    whose sampler is the policy itself. Logged as ``rollout_is/*``; see docs/vllm.md."""

    rollout_importance_cap: float = Field(2.0, gt=0)
    """C, the truncation of the rollout importance weights (2 in Yao et al. 2025)."""

    renamed_fields: ClassVar[dict[str, str]] = {
        "overlong_buffer_length": "rewards.overlong_buffer_length",
        "overlong_penalty": "rewards.overlong_penalty",
    }

    @model_validator(mode="after")
    def _check_reference(self) -> PolicyLossConfig:
        if self.ref_model_sync_steps > 0 and self.beta == 0:
            raise ValueError(
                "ref_model_sync_steps is set but beta is 0: there is no reference model to refresh "
                "(set beta > 0, or ref_model_sync_steps to 0)"
            )
        return self


class GRPOAlgorithmConfig(PolicyLossConfig):
    """The clipped loss plus what only GRPO has: groups, group advantages and dynamic sampling."""

    num_generations: int = Field(8, ge=2)
    """G: completions sampled per prompt (a group needs two to have a baseline)."""

    advantage_estimator: str = "grpo"
    """Group advantage, a name registered in ``grpokit.algorithms`` (kind ``advantage``): (r - mean)/std per
    group (``grpo``), std over the batch (``grpo_batch_norm``), no std (``dr_grpo``, Dr. GRPO), ranks
    (``rank``), leave-one-out mean (``rloo``), or your own."""

    @field_validator("advantage_estimator")
    @classmethod
    def _known_estimator(cls, value: str) -> str:
        return check_registered("advantage", value, "advantage_estimator")

    advantage_eps: float = Field(1e-4, gt=0)
    """Added to the standard deviation when advantages are normalised."""

    multi_objective_aggregation: Literal["sum_then_normalize", "normalize_then_sum"] = "sum_then_normalize"
    """With several reward functions: ``sum_then_normalize`` (GRPO) normalises their weighted sum within each
    group; ``normalize_then_sum`` (GDPO, arXiv 2601.05242) normalises each function's rewards within the group,
    sums them with ``rewards.reward_weights`` and normalises the sum over the batch, so distinct reward
    combinations keep distinct advantages. Outcome rewards only."""

    dynamic_sampling: bool = False
    """DAPO: drop groups whose rewards all equal (zero advantage) and draw more prompts to refill the batch."""

    max_dynamic_sampling_rounds: int = Field(3, ge=0)
    """Extra generation rounds dynamic sampling may use per step; the step goes on with fewer groups after."""


class PPOAlgorithmConfig(ValueLossConfig, PolicyLossConfig):
    """The clipped loss plus PPO's own parts: KL in the reward, a value model, GAE (the baseline to GRPO).

    Defaults that differ from the shared loss follow the usual PPO for language models (InstructGPT, TRL):
    a KL-penalised reward with the k1 estimator, token-mean losses and 4 epochs per batch.
    """

    loss_type: str = "ppo"
    """Policy objective, a name registered in ``grpokit.algorithms`` (kind ``loss``); ``ppo``: the clipped
    surrogate on GAE advantages."""

    beta: float = Field(0.05, ge=0)
    """Initial KL coefficient. PPO puts the KL *in the reward*: every token gets ``-beta * KL_t`` and the last
    also gets the score (not a loss term as in GRPO). Fixed, or adapted when ``adaptive_kl``; 0 never loads a
    reference model."""

    kl_estimator: str = "k1"
    """Per-token KL estimator in the reward (k1 = log pi_old - log pi_ref, as InstructGPT and TRL), a name
    registered in ``grpokit.algorithms`` (kind ``kl``)."""

    kl_in_reward: ClassVar[bool] = True

    loss_aggregation: str = "token_mean"
    """How token losses (policy and value) become one number; token mean is PPO's usual (see the GRPO
    ``loss_aggregation`` for the others)."""

    num_iterations: int = Field(4, ge=1)
    """PPO epochs: passes over each generation batch (4 in TRL and cleanrl). With 1 the old log-probs are the
    current ones, detached."""

    num_generations: int = Field(1, ge=1)
    """Completions sampled per prompt; 1 is classic PPO (the value model is the baseline, not a group)."""

    vf_coef: float = Field(0.1, ge=0)
    """c_v: value-loss weight in ``L = -L_clip + c_v * L_V - c_H * H`` (TRL 0.1; the seed's example 0.5)."""

    value_model: Literal["separate", "shared"] = "separate"
    """``separate``: a copy of the policy's body with a scalar head (as large as the policy); ``shared``: a
    scalar head on the policy's own body (only the head is new; the value loss also trains the body)."""

    value_learning_rate: float | None = Field(None, gt=0)
    """AdamW learning rate of the value model (same schedule as the policy); ``None``: ``learning_rate``."""

    adaptive_kl: bool = False
    """Adapt ``beta`` to keep the KL near ``kl_target`` (Ziegler et al. 2019); False keeps it fixed."""

    kl_target: float = Field(6.0, gt=0)
    """Target of the adaptive controller: KL per completion (sum over its tokens, in nats)."""

    kl_horizon: int = Field(10000, ge=1)
    """Completions over which the adaptive controller applies a full 20% correction of ``beta``."""

    renamed_fields: ClassVar[dict[str, str]] = {
        **PolicyLossConfig.renamed_fields,
        "value_clip": "algorithm.cliprange_value",
    }
