"""Iterative RL (DeepSeekMath, Shao et al. 2024, arXiv 2402.03300, section 4.2 and Algorithm 1): the reward model
keeps learning from the policy's own samples while RL optimises against it.

The paper generates new reward-model training data from the current policy's samples, retrains the reward model
"using a replay mechanism that incorporates 10% of historical data", and continues RL against it. After every
training step of a trainer configured with ``rewards.iterative_rm.gold_func``::

    gold     = gold_func(prompts, completions, **columns)                 (N,) oracle scores of the step's samples
    pending += (best, worst) by gold in each group, if gold differs       at most pairs_per_update, newest kept
    every K = every_steps steps:
        train    = pending + replay_fraction of the pool (seeded draw)
        r_phi   <- rm_steps Bradley-Terry steps on train (AdamW, state kept across retrainings)
        pool    += pending; pending = []

Logged (``iterative_rm/...``): the gold reward's mean on the step's samples; at a retraining, the reward model's
pairwise agreement with gold on the new pairs *before* retraining (how far the policy's samples had drifted from
what the model knew), its loss and agreement after, and the pool's size.

Deviations, numbered:

1. Labels come from a gold function the user provides; the paper's come from its reward-model data pipeline.
2. The reward normalisation saved with the model (``reward_center`` / ``reward_scale``) is kept as loaded, not
   recomputed after a retraining (group-relative advantages do not see the reward's offset).
3. One process: the reward model is retrained outside the policy's process group.
4. The retrained weights, the optimizer's state, the pool, the pending pairs and the sampler of the draws are in
   every checkpoint, so a resumed run continues as the uninterrupted one would.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch

from grpokit.config import GRPOConfig, OptimConfig, PPOConfig
from grpokit.data import PreferencePair, load_preference_pairs
from grpokit.engine.optimization import build_optimizer
from grpokit.engine.parallel import DataParallel
from grpokit.rewards import RewardPipeline
from grpokit.rewards.base import resolve_reward
from grpokit.rewards.reward_model import RewardModel
from grpokit.rollout.batch import RolloutBatch
from grpokit.trainers.reward_model import EncodedPairs, encode_pairs, pair_update, score_pairs

__all__ = ["IterativeRewardModel", "best_vs_worst"]


def best_vs_worst(
    prompts: list[Any], completions: list[str], group_ids: torch.Tensor, gold: list[float | None]
) -> list[PreferencePair]:
    """One pair per group: its completion with the highest gold score (chosen) against the lowest (rejected).

    Args:
        prompts, completions: the N samples (a group's prompts are all the same).
        group_ids: (N,) equal ids = same prompt.
        gold: (N,) gold scores; ``None`` (not applicable) samples are left out.

    Returns:
        Pairs in the order of the groups' first samples; a group with fewer than two scored samples or no
        strict difference gives none.
    """
    pairs = []
    for group in dict.fromkeys(group_ids.tolist()):
        members = [i for i, g in enumerate(group_ids.tolist()) if g == group and gold[i] is not None]
        if len(members) < 2:
            continue
        best = max(members, key=lambda i: float(gold[i]))  # type: ignore[arg-type]
        worst = min(members, key=lambda i: float(gold[i]))  # type: ignore[arg-type]
        if float(gold[best]) > float(gold[worst]):  # type: ignore[arg-type]
            pairs.append(PreferencePair(completions[best], completions[worst], prompts[best]))
    return pairs


class IterativeRewardModel:
    """Retrains the reward model of a :class:`~grpokit.rewards.RewardPipeline` on gold-labelled pairs of the
    policy's samples; see the module docstring.

    Args:
        reward_model: the pipeline's reward model, retrained in place (so the next step scores with it).
        gold: the gold function.
        config: the trainer's config (``rewards.iterative_rm``, ``seed``, ``optim``'s clipping and token budget).
    """

    def __init__(self, reward_model: RewardModel, gold: Callable, config: GRPOConfig | PPOConfig):
        self.settings = settings = config.rewards.iterative_rm
        self.reward_model, self.gold = reward_model, gold
        self.model = reward_model.model
        self.model.requires_grad_(True)  # scoring stays under no_grad; retraining needs the gradients
        self.optim = OptimConfig(
            learning_rate=settings.rm_learning_rate, max_grad_norm=config.optim.max_grad_norm,
            micro_batch_tokens=config.optim.micro_batch_tokens,
        )  # fmt: skip
        self.optimizer = build_optimizer(self.model, self.optim)
        self.generator = torch.Generator().manual_seed(config.seed)  # replay draws and batches
        self.pool: list[PreferencePair] = []
        if settings.initial_pairs is not None:
            self.pool = load_preference_pairs(settings.initial_pairs)
        self.pending: list[PreferencePair] = []
        self.updates = 0

    @classmethod
    def from_config(
        cls, config: GRPOConfig | PPOConfig, rewards: RewardPipeline, parallel: DataParallel
    ) -> IterativeRewardModel | None:
        """The retrainer ``rewards.iterative_rm`` configures, or None when its ``gold_func`` is unset."""
        settings = config.rewards.iterative_rm
        if settings.gold_func is None:
            return None
        if parallel.is_distributed:
            raise ValueError(
                "rewards.iterative_rm runs in one process (the reward model is retrained locally)"
            )
        models = [f for f in rewards.functions if isinstance(f, RewardModel)]
        if len(models) != 1:
            raise ValueError("rewards.iterative_rm needs rewards.reward_model (the model it retrains)")
        return cls(models[0], resolve_reward(settings.gold_func), config)

    # -- after each training step -----------------------------------------------------------------------------

    def after_step(self, step: int, batch: RolloutBatch) -> dict[str, float]:
        """Label the step's samples with gold; every ``every_steps`` steps retrain. Returns the step's metrics."""
        settings = self.settings
        gold = self._gold(batch)
        scored = [g for g in gold if g is not None]
        pairs = best_vs_worst(batch.prompts, batch.completions, batch.group_ids.cpu(), gold)
        self.pending = (self.pending + pairs)[-settings.pairs_per_update :]
        metrics = {"iterative_rm/gold_mean": sum(scored) / len(scored) if scored else math.nan}
        if step % settings.every_steps == 0 and self.pending:
            metrics |= self.retrain()
        metrics |= {
            "iterative_rm/pending_pairs": float(len(self.pending)),
            "iterative_rm/pool_pairs": float(len(self.pool)),
            "iterative_rm/updates": float(self.updates),
        }
        return metrics

    def _gold(self, batch: RolloutBatch) -> list[float | None]:
        values = self.gold(batch.prompts, batch.completions, **batch.columns)
        name = self.settings.gold_func
        if not isinstance(values, (list, tuple)) or len(values) != len(batch.completions):
            raise ValueError(
                f"rewards.iterative_rm.gold_func {name!r} must return a list of {len(batch.completions)} scores, "
                f"got {type(values).__name__}{'' if not hasattr(values, '__len__') else f' of {len(values)}'}"
            )
        out: list[float | None] = []
        for i, value in enumerate(values):
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise ValueError(
                    f"rewards.iterative_rm.gold_func {name!r}: score {i} is {value!r}, not a number"
                )
            out.append(None if value is None else float(value))
        return out

    def retrain(self) -> dict[str, float]:
        """``rm_steps`` Bradley–Terry steps on the pending pairs and a replayed fraction of the pool."""
        settings, tokenizer = self.settings, self.reward_model.tokenizer
        pad_id, device = int(tokenizer.pad_token_id), self.reward_model.device
        replay_count = round(settings.replay_fraction * len(self.pool))
        replay = torch.randperm(len(self.pool), generator=self.generator)[:replay_count].tolist()
        new = encode_pairs(tokenizer, self.pending)
        train = encode_pairs(tokenizer, self.pending + [self.pool[i] for i in sorted(replay)])
        batch = score_pairs(self.model, new, pad_id=pad_id, device=device, batch_size=32)
        metrics = {"iterative_rm/agreement_before": float((batch[0] > batch[1]).float().mean())}
        loss = math.nan
        for _ in range(settings.rm_steps):
            rows = torch.randperm(len(train), generator=self.generator)[: settings.rm_batch_size].tolist()
            pairs = EncodedPairs(
                [train.chosen[i] for i in rows], [train.rejected[i] for i in rows], train.margins[rows]
            )
            stats, _, _ = pair_update(
                self.model, self.optimizer, pairs, self.optim, pad_id=pad_id, device=device,
                generator=self.generator,
            )  # fmt: skip
            loss = stats.metrics.get("loss", math.nan)
        chosen, rejected = score_pairs(self.model, new, pad_id=pad_id, device=device, batch_size=32)
        metrics |= {
            "iterative_rm/loss": loss,
            "iterative_rm/agreement_after": float((chosen > rejected).float().mean()),
            "iterative_rm/retrained_pairs": float(len(train)),
        }
        self.pool += self.pending
        self.pending = []
        self.updates += 1
        return metrics

    # -- checkpoints ---------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The retrained weights, the optimizer, the pool and pending pairs, the draws' sampler (note 4)."""
        return {
            "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "pool": [asdict(p) for p in self.pool],
            "pending": [asdict(p) for p in self.pending],
            "updates": self.updates,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.pool = [PreferencePair(**p) for p in state["pool"]]
        self.pending = [PreferencePair(**p) for p in state["pending"]]
        self.updates = int(state["updates"])
        self.generator.set_state(state["generator"])
