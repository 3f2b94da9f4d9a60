"""Configuration of GRPO and PPO on gymnasium environments: one validated tree, like the LLM trainer's.

The sections reuse :class:`grpokit.config.Section` (unknown keys rejected with a suggestion, the
docstring under each field is its description) and the same loading rules: YAML file, then
``--field value`` overrides by field name or dotted path::

    RLConfig
      seed, max_steps, max_env_steps, max_wall_time     run length and reproducibility
      environment  EnvironmentConfig    which env, tasks, time limit, parallel copies
      policy       PolicyConfig         the built-in MLP policy (and PPO's value network)
      algorithm    RLAlgorithmConfig    GRPO/PPO, groups, advantages, clipped loss
      optim        RLOptimConfig        Adam, minibatches, gradient clipping
      evaluation   EvaluationConfig     periodic evaluation, the solved threshold, stopping there
      logging      LoggingConfig        run directory, TensorBoard (shared with the LLM trainer)
      checkpoint   CheckpointConfig     periodic saves and resume (shared with the LLM trainer)

Knob names follow the papers and the LLM config: ``num_generations`` (G), ``epsilon_low`` /
``epsilon_high``, ``beta``, ``num_iterations`` (mu), ``gamma``, ``gae_lambda``, ``entropy_coef``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from grpokit.config import (
    CheckpointConfig,
    LoggingConfig,
    LossConfig,
    Section,
    ValueLossConfig,
    check_registered,
)

__all__ = [
    "EnvironmentConfig",
    "EvaluationConfig",
    "PolicyConfig",
    "RLAlgorithmConfig",
    "RLConfig",
    "RLOptimConfig",
]


class EnvironmentConfig(Section):
    env: str = "CartPole-v1"
    """gymnasium environment id, made with ``gymnasium.make`` (``module:Env-v0`` imports ``module`` first).
    The built-in ``grpokit/CueTasks-v0`` is a multi-task env for comparing groupings."""

    env_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments passed to ``gymnasium.make`` for every environment."""

    tasks: list[dict[str, Any]] | None = None
    """Multi-task training over env variants: per-task kwargs merged over ``env_kwargs`` (e.g.
    ``[{g: 8.0}, {g: 12.0}]`` for Pendulum gravities). Each start state draws a task uniformly; the
    ``task`` grouping groups by it. ``None``: one task."""

    max_episode_steps: int | None = Field(None, ge=1)
    """Time limit per episode; ``None`` keeps the env's registered limit (an env without one is refused)."""

    num_envs: int = Field(16, ge=1)
    """Environment copies per task run side by side; their observations go through the policy in one batch."""

    reward_scale: float = Field(1.0, gt=0)
    """Rewards are multiplied by this before advantages and value targets (logged returns stay unscaled).
    GRPO with the ``grpo`` estimator is invariant to it; PPO's value network and ``dr_grpo`` are not."""


class PolicyConfig(Section):
    hidden_sizes: list[int] = Field(default_factory=lambda: [64, 64])
    """Hidden layer widths of the built-in MLP policy and value network."""

    activation: Literal["tanh", "relu", "gelu", "silu", "elu"] = "tanh"
    """Hidden activation of the built-in MLPs (tanh, as in the PPO paper's continuous-control nets)."""

    init_log_std: float = 0.0
    """Initial log standard deviation of the Gaussian policy (Box actions); 0 means std 1."""

    @field_validator("hidden_sizes")
    @classmethod
    def _positive_widths(cls, value: list[int]) -> list[int]:
        if any(h < 1 for h in value):
            raise ValueError(f"every hidden size must be >= 1, got {value}")
        return value


class RLAlgorithmConfig(ValueLossConfig, LossConfig):
    """The shared loss section (:class:`grpokit.config.LossConfig`, same names as the LLM trainers) plus
    the classic-RL choices: algorithm, start states, grouping and advantage granularity."""

    algorithm: Literal["grpo", "ppo"] = "grpo"
    """``grpo``: group-relative advantages, no value network. ``ppo``: a learned value network and GAE
    (the baseline the GRPO paper compares against)."""

    num_start_states: int = Field(8, ge=1)
    """B: distinct start states (reset seeds) per training step: the classic-RL "prompts"."""

    num_generations: int = Field(8, ge=1)
    """G: episodes run from each start state; N = B*G episodes per step. PPO ignores the repetition and
    runs N episodes from N distinct start states."""

    grouping: str = "same_start"
    """Which episodes share a baseline: ``same_start`` (the G episodes of one start state), ``task``,
    ``similarity`` (k-means on start observations), ``batch`` (one group), or a registered name."""

    grouping_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Options of the grouping, e.g. ``{num_clusters: 4, feature_indices: [0, 1]}`` for ``similarity``
    (its ``num_clusters`` defaults to num_start_states and its ``seed`` to ``seed``) or ``{key: level}``
    for ``task``."""

    advantage_mode: Literal["outcome", "returns_to_go", "process"] = "returns_to_go"
    """GRPO advantage granularity. ``outcome``: one advantage per episode from the group's returns, on every
    step (DeepSeekMath outcome supervision). ``returns_to_go``: per step, the discounted return-to-go
    compared with those of the group's other episodes at the same time step. ``process``: DeepSeekMath
    process supervision, each env step a "step": rewards normalised over the group, summed to the end."""

    advantage_estimator: str = "grpo"
    """Group advantage estimator from ``grpokit.algorithms``: ``grpo`` ((r - mean)/std), ``dr_grpo`` (no std),
    ``grpo_batch_norm``, ``rank``, ``rloo``, or a registered name."""

    advantage_eps: float = Field(1e-4, gt=0)
    """Added to the standard deviation when advantages are normalised."""

    gamma: float = Field(0.99, ge=0, le=1)
    """Discount factor: of the returns-to-go (``returns_to_go`` mode) and of PPO's GAE."""

    gae_lambda: float = Field(0.95, ge=0, le=1)
    """PPO only: GAE lambda (Schulman et al. 2015, arXiv 1506.02438)."""

    whiten_advantages: bool = True
    """PPO only: whiten the GAE advantages over the batch (cleanrl's ``norm_adv``)."""

    vf_coef: float = Field(0.5, ge=0)
    """PPO only: c_v, weight of the value loss in the total loss."""

    cliprange_value: float | None = Field(None, gt=0)
    """PPO only: clip the new value within this distance of the old (PPO2's clipped value loss); ``None``
    trains the value unclipped (returns on a large scale, e.g. Pendulum's, move further than any clip)."""

    epsilon_low: float = Field(0.2, gt=0, le=1)
    """Lower clip range: the ratio pi/pi_old is clipped at 1 - epsilon_low."""

    beta: float = Field(0.0, ge=0)
    """KL penalty coefficient against a frozen copy of the initial policy; 0 keeps no reference policy."""

    kl_estimator: str = "k3"
    """Per-step KL estimator for the beta term, a name registered in ``grpokit.algorithms`` (kind ``kl``;
    k3 is DeepSeekMath's). k1 is refused with ``beta > 0``: as a loss term its expected gradient is zero."""

    entropy_coef: float = Field(0.0, ge=0)
    """Entropy bonus coefficient (subtracted from the loss, aggregated like it)."""

    loss_aggregation: str = "token_mean"
    """How per-step losses become one number: ``token_mean`` weighs every env step equally (as PPO does);
    ``sequence_mean`` weighs every episode equally (the GRPO paper); ``constant`` divides by N times the
    time limit (Dr. GRPO)."""

    num_iterations: int = Field(4, ge=1)
    """mu: passes over each batch of episodes (PPO's update epochs)."""

    renamed_fields: ClassVar[dict[str, str]] = {
        "value_coef": "algorithm.vf_coef",
        "clip_range_value": "algorithm.cliprange_value",
        "normalize_advantages": "algorithm.whiten_advantages",
    }

    @field_validator("advantage_estimator")
    @classmethod
    def _known_estimator(cls, value: str) -> str:
        return check_registered("advantage", value, "advantage_estimator")

    @field_validator("grouping")
    @classmethod
    def _known_grouping(cls, value: str) -> str:
        from grpokit.rl.grouping import available_groupings

        if value not in available_groupings():
            raise ValueError(f"unknown grouping {value!r}; valid names: {available_groupings()}")
        return value


class RLOptimConfig(Section):
    learning_rate: float = Field(3e-3, gt=0)
    """Adam learning rate, shared by the policy and (PPO) the value network."""

    adam_epsilon: float = Field(1e-5, gt=0)
    """Adam epsilon (1e-5 as in the PPO reference implementations, not torch's 1e-8)."""

    max_grad_norm: float | None = Field(0.5, gt=0)
    """Clip the global gradient norm before each optimizer step (``None``: no clipping)."""

    num_minibatches: int = Field(4, ge=1)
    """Minibatches per pass: the N episodes are shuffled and split into this many (whole episodes each)."""

    max_consecutive_nonfinite: int = Field(3, ge=1)
    """An optimizer step whose loss or gradient norm is NaN/inf is skipped (weights and optimizer state
    unchanged) and counted in ``train/faults/nonfinite_skipped``; this many skipped in a row stop the run."""


class EvaluationConfig(Section):
    eval_steps: int = Field(2, ge=0)
    """Evaluate every this many training steps (0: only after training). Each evaluation is also the solved
    check (``target_return``), so a run stops at most ``eval_steps - 1`` steps after its policy gets there."""

    eval_episodes: int = Field(20, ge=1)
    """Episodes per evaluation, from fixed start states disjoint from training's."""

    eval_deterministic: bool = True
    """Evaluate the greedy policy (argmax action, Gaussian mean); ``False`` samples actions."""

    target_return: float | None = None
    """The evaluation mean return at which the env counts as solved. ``None``: the env's own
    ``spec.reward_threshold`` (475 for CartPole-v1), when it has one and the time limit is the registered
    one; an env without one (Pendulum-v1, ``grpokit/CueTasks-v0``) then has no target."""

    stop_when_solved: bool = True
    """Stop training at the first evaluation whose mean return reaches the target (``solved_step``); a solved
    env's groups soon all score the same, so further steps have no advantage and no gradient. ``False``
    (``--keep-going``) trains to the budget and still reports the first step that reached it."""


class RLConfig(Section):
    """Configuration of :class:`grpokit.rl.RLTrainer`."""

    seed: int = 0
    """Seeds the network initialisation, the start states and the action sampling: same seed, same run."""

    max_steps: int = Field(100, ge=1)
    """Training steps (one step = N episodes collected, their advantages and the updates on them)."""

    max_env_steps: int | None = Field(None, ge=1)
    """Stop after this many environment steps in total (training episodes only)."""

    max_wall_time: float | None = Field(None, gt=0)
    """Stop after this many seconds of training (evaluations included)."""

    environment: EnvironmentConfig = Field(default_factory=EnvironmentConfig)
    """The environment."""

    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    """The built-in networks (ignored when a policy module is passed to the trainer)."""

    algorithm: RLAlgorithmConfig = Field(default_factory=RLAlgorithmConfig)
    """GRPO or PPO and their loss."""

    optim: RLOptimConfig = Field(default_factory=RLOptimConfig)
    """Optimizer and minibatching."""

    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    """Evaluation and early stopping."""

    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    """Run directory and TensorBoard (``log_sample_groups`` is unused here)."""

    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    """Checkpoints and resume."""

    @property
    def num_episodes(self) -> int:
        """Derived: N = B*G episodes per training step."""
        return self.algorithm.num_start_states * self.algorithm.num_generations

    @model_validator(mode="after")
    def _check(self) -> RLConfig:
        alg = self.algorithm
        if alg.algorithm == "grpo" and alg.grouping == "same_start" and alg.num_generations < 2:
            raise ValueError(
                "algorithm.grouping='same_start' needs algorithm.num_generations >= 2: a start state run once "
                "is a group of one, whose advantage is always 0"
            )
        if self.optim.num_minibatches > self.num_episodes:
            raise ValueError(
                f"optim.num_minibatches ({self.optim.num_minibatches}) exceeds the N = num_start_states * "
                f"num_generations = {self.num_episodes} episodes of a step (a minibatch holds whole episodes)"
            )
        return self
