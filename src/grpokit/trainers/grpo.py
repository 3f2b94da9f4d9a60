"""GRPO for Hugging Face causal LMs: Group Relative Policy Optimization (Shao et al., DeepSeekMath, 2024,
arXiv 2402.03300), with the DAPO (arXiv 2503.14476) and Dr. GRPO (arXiv 2503.20783) options.

One training step, as :meth:`GRPOTrainer.train` reads::

    rows            = next(prompts)                          B prompts
    batch           = generate_rollouts(sampler, rows, G)    N = B*G completions from pi_old = pi_theta
    scores          = score(rewards, batch)                  (N,) rewards, or (N, S) step rewards
    advantages      = compute_advantages(batch, scores)      (N,) group-relative, or (N, T) per token
    update          = update_policy(...)                     the engine: mu passes of minibatch steps
    sync_policy(...)                                         reference refresh, weights to a vLLM sampler
    log(...); end_step(...)                                  metrics.jsonl, samples.jsonl; checkpoints

The phases are :mod:`grpokit.trainers.phases`, the loss :mod:`grpokit.trainers.objective`, the update and the
run around the loop :mod:`grpokit.engine`.

Choices and deviations from the paper, numbered:

1. pi_old is the policy that generated the batch. When the batch gets one optimizer step the old log-probs
   are the current log-probs detached (ratio exactly 1, no extra forward); when it gets more
   (``num_iterations > 1`` or ``mini_batch_size < N``) they are computed once, without grad, before the
   first step (``engine/update.py``). The sampler's own log-probs are not used as pi_old (KV-cached
   decoding differs from a full forward by rounding); their gap is logged as ``logprobs/sampler_mismatch``.
2. The policy stays in eval mode (no dropout) during the update, so the ratio is 1 before the first step.
3. The reference model exists only when ``beta > 0``: a frozen copy of the initial policy, re-synced every
   ``ref_model_sync_steps`` steps when set; the paper's iterative GRPO also retrains the reward model, which
   ``rewards.iterative_rm`` does (``trainers/iterative_rm.py``).
4. A sample no reward function applies to (all ``None``) is left out of its group's baseline and masked out
   of the loss; DAPO's overlong filtering masks truncated completions out of the loss but keeps them in the
   baseline.
5. Dynamic sampling (DAPO) keeps only groups whose scored rewards differ, drawing new prompts for at most
   ``max_dynamic_sampling_rounds`` extra rounds; a step that cannot fill B groups trains on those it has.
6. The learning-rate schedule advances once per training step, not per optimizer step, so warmup is
   counted in generation batches whatever the minibatching.
7. Faults (``docs/reliability.md``): an optimizer step with a non-finite loss or gradient norm is skipped
   and counted; SIGTERM/SIGINT finish the step, checkpoint it and stop; an out-of-memory error checkpoints
   the last completed step when no weight has changed since. A resumed run is the uninterrupted run: the
   checkpoint holds every RNG, the data position and the counters, and log rows after it are dropped.
8. ``generation.backend: vllm`` samples with a vLLM engine on a copy of the weights, pushed into it after
   every step, and weights the surrogate by truncated importance weights ``min(pi_old / pi_rollout, C)``
   against the engine's log-probs (``trainers/rollout_engine.py``, ``docs/vllm.md``).
9. ``generation.async_rollouts`` samples the batches of the next ``max_staleness`` steps in a rollout worker
   process while the trainer updates, with weights at most that many versions old, corrected by the same
   truncated importance weights (``trainers/async_rollouts.py``, ``docs/async.md``).
"""

from __future__ import annotations

from typing import Any

import torch

from grpokit.config import GRPOConfig
from grpokit.engine.update import UpdateStats
from grpokit.rewards import RewardScores
from grpokit.rollout.async_worker import RolloutWorkerError
from grpokit.rollout.batch import RolloutBatch
from grpokit.rollout.transformers_sampler import group_temperatures, schedule_for_spacing
from grpokit.tracking.timing import PhaseTimer
from grpokit.trainers.async_rollouts import AsyncRollouts, RolloutWorkerAbort, build_async_rollouts
from grpokit.trainers.episodes import EpisodeRunner
from grpokit.trainers.language_model import LanguageModelTrainer, TrainResult
from grpokit.trainers.objective import update_policy
from grpokit.trainers.phases import (
    compute_advantages,
    generate_rollouts,
    informative_groups,
    score,
    select_scores,
)
from grpokit.trainers.step_log import Generation

__all__ = ["GRPOTrainer", "TrainResult", "train"]


class GRPOTrainer(LanguageModelTrainer[GRPOConfig]):
    """Trains ``config.model.name_or_path`` with GRPO; see the module docstring for the step.

    The loop, models, data, checkpoints and the run are :class:`~grpokit.trainers.language_model.
    LanguageModelTrainer`'s; GRPO gives its three phases: groups of G completions (with DAPO's dynamic
    sampling), group-relative advantages, and the clipped-surrogate update.
    """

    run_prefix = "grpo"
    async_rollouts: AsyncRollouts | None = None
    """With ``generation.async_rollouts``: the pipeline whose rollout worker samples ahead (started by train)."""
    episodes: EpisodeRunner | None = None
    """With ``env.name``: plays the multi-turn episodes of each step (``trainers/episodes.py``)."""

    def __init__(self, config: GRPOConfig, **kwargs: Any):
        super().__init__(config, **kwargs)
        if self.config.generation.async_rollouts:
            self.async_rollouts = build_async_rollouts(self)
        if self.environment is not None:
            gen = self.config.generation
            temperatures = group_temperatures(
                gen.temperature,
                schedule_for_spacing(
                    gen.temperature_schedule, self.config.algorithm.num_generations, gen.temperature_schedule_spacing
                ),
                self.config.algorithm.num_generations,
            )
            self.episodes = self.environment.runner(
                self.tokenizer, self.sampler, max_new_tokens=gen.max_new_tokens, temperatures=temperatures
            )

    def train(self) -> TrainResult:
        """The loop (:meth:`LanguageModelTrainer.train`); with async rollouts, inside the worker's lifetime."""
        if self.async_rollouts is None:
            return super().train()
        try:
            try:
                self.async_rollouts.start()
            except RolloutWorkerError as error:
                raise RolloutWorkerAbort(f"{error}; no step was run") from error
            return super().train()
        finally:
            self.async_rollouts.close()  # on every exit path: no orphan worker

    def compute_advantages(
        self, batch: RolloutBatch, scores: RewardScores
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`compute_advantages` with this trainer's algorithm (PPO's trainer overrides it with GAE)."""
        weights = None if self.rewards is None else self.rewards.weights
        return compute_advantages(batch, scores, self.config.algorithm, self.parallel, weights)

    @property
    def sampled_tokens_budget(self) -> int:
        """The most tokens a row's policy can sample: ``max_new_tokens``, times ``env.max_turns`` for episodes
        (Dr. GRPO's constant normaliser, ``loss_aggregation: constant``)."""
        gen, env = self.config.generation, self.config.env
        return gen.max_new_tokens if self.episodes is None else gen.max_new_tokens * env.max_turns

    def update_policy(
        self, batch: RolloutBatch, advantages: torch.Tensor, loss_mask: torch.Tensor
    ) -> UpdateStats:
        """:func:`update_policy` with this trainer's model, optimizer and reference; then the schedule steps."""
        cfg = self.config
        update = update_policy(
            self.train_model, self.train_optimizer, batch, advantages, loss_mask, algorithm=cfg.algorithm,
            optim=cfg.optim, max_new_tokens=self.sampled_tokens_budget, reference=self.reference,
            parallel=self.parallel, rollout_importance=self.rollout_importance, policy=self.model,
        )  # fmt: skip
        update.metrics["lr"] = float(self.scheduler.get_last_lr()[0])  # the rate this step's updates used
        self.scheduler.step()
        return update

    def collect_rollouts(self, timer: PhaseTimer) -> tuple[RolloutBatch, RewardScores, Generation]:
        """Generate and score B groups; with dynamic sampling keep drawing until B informative groups.

        Returns the training batch, its scores, and everything generated this step (for reward statistics,
        which must not be biased by the filter).
        """
        cfg, algo = self.config, self.config.algorithm
        if self.async_rollouts is not None:  # sampled ahead by the worker (trainers/async_rollouts.py)
            with timer.phase("rollout_wait"):
                batch = self.next_async_batch()
            assert self.rewards is not None
            with timer.phase("score"):
                scores = score(self.rewards, batch, cfg.rewards, cfg.generation.max_new_tokens)
            return batch, scores, Generation(batch, scores)
        B, G = cfg.data.prompts_per_step, algo.num_generations
        batches, all_scores, kept_rows = [], [], []
        kept_groups = 0
        rounds = 0
        while True:
            rows = next(self.prompt_iter)
            if self.episodes is not None:  # multi-turn: the environment scores each turn as it is played
                with timer.phase("generate"):
                    batch, scores = self.episodes.run(rows, G)
            else:
                assert self.rewards is not None
                with timer.phase("generate"):
                    batch = generate_rollouts(self.sampler, rows, G, cfg.data.prompt_column)
                with timer.phase("score"):
                    scores = score(self.rewards, batch, cfg.rewards, cfg.generation.max_new_tokens)
            batches.append(batch)
            all_scores.append(scores)
            if not algo.dynamic_sampling:
                return batch, scores, Generation(batch, scores)
            keep = informative_groups(scores, batch.group_ids)  # (N,)
            kept_rows.append(keep)
            kept_groups += int(batch.group_ids.cpu()[keep].unique().numel())
            rounds += 1
            if kept_groups >= B or rounds > algo.max_dynamic_sampling_rounds:
                break
        pad_id = self.tokenizer.pad_token_id
        everything = RolloutBatch.concat(batches, pad_id)
        everything_scores = RewardScores.concat(all_scores)
        keep = torch.cat(kept_rows)  # (N_all,)
        generated = Generation(everything, everything_scores, rounds=rounds, kept_groups=min(kept_groups, B))
        if not keep.any():  # nothing informative: train on the first round (zero advantages; KL still acts)
            return batches[0], all_scores[0], generated
        group_ids = everything.group_ids.cpu()
        chosen = group_ids[keep].unique(sorted=False)
        order = torch.stack([(group_ids == g).nonzero()[0, 0] for g in chosen]).argsort()
        chosen = chosen[order][:B]  # first B informative groups in generation order
        kept = torch.isin(group_ids, chosen).nonzero().squeeze(1)
        return everything.select(kept), select_scores(everything_scores, kept), generated

    # -- asynchronous rollouts ------------------------------------------------------------------------

    def next_async_batch(self) -> RolloutBatch:
        """The next step's batch from the pipeline; a failed worker checkpoints the last completed step (no
        weight of this step has moved yet) and raises :class:`RolloutWorkerAbort`."""
        assert self.async_rollouts is not None
        try:
            return self.async_rollouts.next_batch()
        except RolloutWorkerError as error:
            completed = self.async_rollouts.step
            if completed > 0 and self.harness.writes and self.harness.saved_step() != completed:
                self.save_checkpoint(completed)
            saved = self.harness.last_saved
            where = f"step {completed} is saved in {saved}" if saved else "no checkpoint was written"
            raise RolloutWorkerAbort(
                f"{error}\n{where}; continue with: grpokit train --resume {self.run_dir}"
            ) from error

    def sync_policy(self, step: int, timer: PhaseTimer) -> dict[str, float]:
        """The reference refresh; with async rollouts, the new weights published to the worker as version
        ``step`` and the step's ``async/*`` metrics."""
        if self.async_rollouts is None:
            return super().sync_policy(step, timer)
        if self.reference is not None:
            self.reference.maybe_sync(self.model, step)
        # Not the sampler's own push: a vLLM server gets the weights from the pipeline, once the requests of
        # older versions are answered (trainers/async_rollouts.py, note 5).
        with timer.phase("weight_sync"):
            return self.async_rollouts.publish(step, self.model)

    def state_dict(self, step: int) -> dict[str, Any]:
        """The shared trainer state; with async rollouts, the batches requested for later steps too."""
        state = super().state_dict(step)
        if self.async_rollouts is not None:
            state["async_rollouts"] = self.async_rollouts.state_dict(step)
        return state


def train(config: GRPOConfig, **kwargs: Any) -> TrainResult:
    """Run GRPO as configured (``model.name_or_path`` must be set; the demo is ``grpokit.apps.demo``)."""
    return GRPOTrainer(config, **kwargs).train()
