"""Reward-model training: the Bradley–Terry loss on preference pairs, on the shared engine and run harness.

One training step, for P = ``data.pairs_per_step`` pairs (x, y_c, y_r, m)::

    rows          = next(pairs)                                  P pair indices (seeded, epoch after epoch)
    r_c, r_r      = r_theta(x + y_c), r_theta(x + y_r)           one forward of both sides per micro-batch
    loss          = 1/P sum -log sigma(r_c - r_r - m)            algorithms.bradley_terry_loss
    update        = run_update(PairObjective)                    the engine: accumulation, clipping, DP, guard
    log           loss, accuracy, reward mean/std, grad norm, lr; eval/accuracy every eval_steps

The model is ``AutoModelForSequenceClassification(num_labels=1)`` on a causal LM's body
(:mod:`grpokit.models.sequence_classifier`), its reward the logit of the last non-pad token. Texts are built
by :func:`grpokit.rewards.reward_model.reward_text`, the function that scores completions in GRPO, so the
model is trained on exactly the layout it is later asked to score.

Choices, numbered:

1. The engine's ``pi_old`` is meaningless here (no ratio): :meth:`PairObjective.pi_old` returns zeros and the
   loss never reads it. Each pair is one "token" of the loss mask (``token_mean``), so accumulation and data
   parallelism weight pairs equally.
2. The model stays in eval mode (no dropout), like the policy in the RL trainers: a pair's reward does not
   depend on the step's random state, which also makes a resumed run the uninterrupted one.
3. With W processes every process draws the same P pairs and scores its contiguous P/W of them; the logged
   metrics come from every process's rewards, gathered.
4. After training, the rewards of a reference set (the training pairs' both sides, or
   ``normalization.reference_file``) give ``reward_center`` (mean) and ``reward_scale`` (standard deviation),
   written into ``final/config.json``; :class:`grpokit.rewards.reward_model.RewardModel` applies them.
5. A LoRA run's checkpoints hold its adapters and head (exact resume); ``final`` holds the merged model, which
   plain transformers and ``rewards.reward_model`` load.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch

from grpokit.algorithms import bradley_terry_loss
from grpokit.config import OptimConfig, RewardModelConfig, build_config
from grpokit.data import PreferencePair, PromptIterator, load_preference_pairs
from grpokit.engine import checkpoint as ckpt
from grpokit.engine.harness import RunHarness
from grpokit.engine.optimization import build_optimizer, build_scheduler
from grpokit.engine.parallel import DataParallel, shard_bounds
from grpokit.engine.runs import resolve_device, seed_everything
from grpokit.engine.update import MicroLoss, OptimizerSlot, UpdateSchedule, UpdateStats, run_update
from grpokit.rewards.reward_model import reward_text

__all__ = [
    "EncodedPairs",
    "PairObjective",
    "RewardModelResult",
    "RewardModelTrainer",
    "encode_pairs",
    "pair_update",
    "score_pairs",
    "train_reward_model",
]


@dataclass
class EncodedPairs:
    """Token ids of both sides of P pairs (no padding) and their margins (P,)."""

    chosen: list[list[int]]
    rejected: list[list[int]]
    margins: torch.Tensor  # (P,) float32

    def __len__(self) -> int:
        return len(self.chosen)

    def row_tokens(self) -> torch.Tensor:
        """(P,) tokens of each pair's forward (both sides), for the engine's token budget."""
        return torch.tensor([len(c) + len(r) for c, r in zip(self.chosen, self.rejected)])


def encode_pairs(tokenizer: Any, pairs: Sequence[PreferencePair]) -> EncodedPairs:
    """Tokenise both sides of every pair as the reward function will (:func:`reward_text`)."""

    def ids(prompt: Any, response: Any) -> list[int]:
        return list(tokenizer(reward_text(tokenizer, prompt, response))["input_ids"])

    return EncodedPairs(
        chosen=[ids(p.prompt, p.chosen) for p in pairs],
        rejected=[ids(p.prompt, p.rejected) for p in pairs],
        margins=torch.tensor([p.margin for p in pairs], dtype=torch.float32),
    )


def _pad_right(rows: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, L) ids and attention mask, right-padded (the head reads the last non-pad token)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


def _rewards(
    model: torch.nn.Module, rows: Sequence[list[int]], pad_id: int, device: torch.device
) -> torch.Tensor:
    """(n,) float32 rewards of ``rows`` (with gradient when enabled)."""
    ids, mask = _pad_right(rows, pad_id)  # (n, L) each
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits  # (n, 1)
    return logits[:, 0].float()


class PairObjective:
    """The micro-batch Bradley–Terry loss of a batch of pairs (the engine's ``Objective``).

    Records every pair's rewards as it scores them (``chosen`` / ``rejected``, (N,)), for the step's metrics.
    """

    def __init__(self, model: torch.nn.Module, pairs: EncodedPairs, pad_id: int, device: torch.device):
        self.model, self.pairs, self.pad_id, self.device = model, pairs, pad_id, device
        N = len(pairs)
        self.chosen = torch.zeros(N)
        self.rejected = torch.zeros(N)

    def pi_old(self) -> torch.Tensor:
        """Zeros (N, 1): the loss has no ratio, so there is no pi_old to freeze (module docstring, note 1)."""
        return torch.zeros(len(self.pairs), 1)

    def micro_loss(self, rows: torch.Tensor, pi_old: torch.Tensor | None) -> MicroLoss:
        index = rows.tolist()
        n = len(index)
        sides = [self.pairs.chosen[i] for i in index] + [self.pairs.rejected[i] for i in index]
        rewards = _rewards(self.model, sides, self.pad_id, self.device)  # (2n,): chosen, then rejected
        chosen, rejected = rewards[:n], rewards[n:]
        loss, metrics = bradley_terry_loss(chosen, rejected, self.pairs.margins[rows].to(self.device))
        self.chosen[rows] = chosen.detach().cpu()
        self.rejected[rows] = rejected.detach().cpu()
        return MicroLoss(loss, metrics, sum(len(s) for s in sides))


def pair_update(
    train_model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    pairs: EncodedPairs,
    optim: OptimConfig,
    *,
    pad_id: int,
    device: torch.device,
    parallel: DataParallel | None = None,
    generator: torch.Generator | None = None,
) -> tuple[UpdateStats, torch.Tensor, torch.Tensor]:
    """The engine's update on this process's ``pairs``; returns its stats and the (N,) chosen and rejected
    rewards the loss saw."""
    parallel = parallel if parallel is not None else DataParallel()
    objective = PairObjective(train_model, pairs, pad_id, device)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    train_model.eval()  # note 2
    stats = run_update(
        objective,
        torch.ones(len(pairs), 1),  # one loss "token" per pair (note 1)
        aggregation="token_mean",
        optimizers=[OptimizerSlot(optimizer, params, optim.max_grad_norm)],
        schedule=UpdateSchedule(
            mini_batch_size=optim.mini_batch_size,
            gradient_accumulation_steps=optim.gradient_accumulation_steps,
            shuffle=optim.shuffle_minibatches,
            micro_batch_tokens=optim.micro_batch_tokens,
        ),
        models=[train_model],
        parallel=parallel,
        generator=generator,
        row_tokens=pairs.row_tokens(),
    )
    return stats, objective.chosen, objective.rejected


@torch.no_grad()
def score_pairs(
    model: torch.nn.Module, pairs: EncodedPairs, *, pad_id: int, device: torch.device, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(P,) chosen and (P,) rejected rewards, without gradient, ``batch_size`` pairs per forward."""
    model.eval()
    chosen, rejected = [], []
    for start in range(0, len(pairs), batch_size):
        stop = min(start + batch_size, len(pairs))
        chosen.append(_rewards(model, pairs.chosen[start:stop], pad_id, device).cpu())
        rejected.append(_rewards(model, pairs.rejected[start:stop], pad_id, device).cpu())
    if not chosen:
        return torch.zeros(0), torch.zeros(0)
    return torch.cat(chosen), torch.cat(rejected)


def pair_metrics(
    chosen: torch.Tensor, rejected: torch.Tensor, margins: torch.Tensor, prefix: str
) -> dict[str, float]:
    """Loss, pairwise accuracy and reward statistics of scored pairs, keys under ``prefix/``."""
    loss, metrics = bradley_terry_loss(chosen.double(), rejected.double(), margins.double())
    rewards = torch.cat([chosen, rejected]).double()  # (2P,)
    out = {"loss": float(loss), **metrics, "reward_mean": float(rewards.mean())}
    out["reward_std"] = float(rewards.std()) if len(rewards) > 1 else 0.0
    return {f"{prefix}/{k}": v for k, v in out.items()}


@dataclass
class RewardModelResult:
    """Where a finished reward-model run lives, its last logged metrics and the saved normalisation."""

    run_dir: Path
    final_dir: Path
    last_metrics: dict[str, Any] = field(default_factory=dict)
    reward_center: float | None = None
    reward_scale: float | None = None


def _share(pairs: EncodedPairs, parallel: DataParallel) -> EncodedPairs:
    """This process's contiguous share of ``pairs`` for a no-grad pass (shares may differ by one pair)."""
    W, rank = parallel.world_size, parallel.rank
    lo, hi = len(pairs) * rank // W, len(pairs) * (rank + 1) // W
    return EncodedPairs(pairs.chosen[lo:hi], pairs.rejected[lo:hi], pairs.margins[lo:hi])


class _PairParallel(DataParallel):
    """The process group of a reward-model run: a step's pairs must split evenly over the processes."""

    def check_config(self, config: Any) -> None:
        if self.engine not in ("multi_cpu", "multi_gpu", "single", "no"):
            raise ValueError(f"grpokit rm runs on one process or DDP; {self.engine} is not supported")
        shard_bounds(config.data.pairs_per_step, 0, self.world_size, what="data.pairs_per_step")


class RewardModelTrainer:
    """Trains a scalar reward model on preference pairs; see the module docstring for the step.

    Args:
        config: the run's :class:`~grpokit.config.RewardModelConfig`.
        dataset: pair rows (dicts with the configured columns) to train on instead of ``data.train_file``.
    """

    run_prefix = "rm"

    def __init__(self, config: RewardModelConfig, *, dataset: Sequence[dict[str, Any]] | None = None):
        # Everything that can fail on user input is checked before the model loads, the config first.
        config = build_config(RewardModelConfig, config.model_dump())
        self.config = cfg = config
        if cfg.model.name_or_path is None:
            raise ValueError("model.name_or_path is unset: set --model PATH (the body of the reward model)")
        self.harness = RunHarness(
            cfg, prefix=self.run_prefix, max_consecutive_nonfinite=cfg.optim.max_consecutive_nonfinite,
            desc="rm", progress_keys=("train/accuracy", "eval/accuracy"),  # the bar shows "train=, eval="
        )  # fmt: skip
        resume_from = self.harness.resume_from
        self.train_pairs, self.eval_pairs = self._load_pairs(dataset)
        self.reference_pairs = None
        if cfg.normalization.enabled and cfg.normalization.reference_file is not None:
            self.reference_pairs = self._read(cfg.normalization.reference_file)

        seed_everything(cfg.seed)  # the head's initialisation
        self.parallel = _PairParallel.from_config(cast(Any, cfg))
        self.device = self.parallel.device or resolve_device(cfg.model.device)
        from grpokit.models.loading import load_tokenizer
        from grpokit.models.sequence_classifier import load_reward_model

        self.tokenizer = load_tokenizer(cfg.model.tokenizer_name_or_path or cfg.model.name_or_path)
        self.pad_id = int(self.tokenizer.pad_token_id)
        self.train_encoded = encode_pairs(self.tokenizer, self.train_pairs)
        self.eval_encoded = encode_pairs(self.tokenizer, self.eval_pairs) if self.eval_pairs else None
        self.model = load_reward_model(cfg.model, self.pad_id, resume_from, device=self.device)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, cfg.max_steps)
        self.pair_iter = PromptIterator(
            range(len(self.train_pairs)), cfg.data.pairs_per_step, seed=cfg.seed, shuffle=cfg.data.shuffle
        )
        self.generator = torch.Generator().manual_seed(cfg.seed)  # minibatch shuffles
        self.train_model, self.train_optimizer = self.parallel.prepare(self.model, self.optimizer)
        self.start_step = 0
        self.cpu_offset = 0.0
        if resume_from is not None:
            self._restore(resume_from)
        self.step = self.start_step
        self.harness.parallel = self.parallel
        self.run_dir = self.harness.open(self.start_step)

    # -- data ------------------------------------------------------------------------------------------------

    def _read(self, source: Any) -> list[PreferencePair]:
        data = self.config.data
        return load_preference_pairs(
            source, chosen_column=data.chosen_column, rejected_column=data.rejected_column,
            prompt_column=data.prompt_column, margin_column=data.margin_column,
        )  # fmt: skip

    def _load_pairs(
        self, dataset: Sequence[dict[str, Any]] | None
    ) -> tuple[list[PreferencePair], list[PreferencePair]]:
        """Training and held-out pairs (``eval_file``, or a seeded ``eval_fraction`` of the training file)."""
        data = self.config.data
        if dataset is None and data.train_file is None:
            raise ValueError("data.train_file is unset: set --train_file PAIRS (.jsonl, .csv, .parquet)")
        pairs = self._read(dataset if dataset is not None else data.train_file)
        held_out: list[PreferencePair] = []
        if data.eval_file is not None:
            held_out = self._read(data.eval_file)
        elif data.eval_fraction > 0:
            order = torch.randperm(
                len(pairs), generator=torch.Generator().manual_seed(self.config.seed)
            ).tolist()
            count = max(1, round(data.eval_fraction * len(pairs)))
            held_out = [pairs[i] for i in sorted(order[:count])]
            pairs = [pairs[i] for i in sorted(order[count:])]
        if len(pairs) < data.pairs_per_step:
            raise ValueError(
                f"data.pairs_per_step ({data.pairs_per_step}) is larger than the {len(pairs)} training pairs"
            )
        return pairs, held_out

    # -- the loop --------------------------------------------------------------------------------------------

    def train(self) -> RewardModelResult:
        """Run steps ``start_step + 1 .. max_steps``, evaluate, then save ``RUN_DIR/final`` (normalised)."""
        cfg = self.config
        metrics: dict[str, Any] = {}
        self._cpu_start = time.process_time() - self.cpu_offset
        with self.harness.running(save=self.save_checkpoint) as run:
            for step in run.steps():
                # 1. This step's pairs; this process scores its share of them.
                rows = next(self.pair_iter)
                lo, hi = shard_bounds(len(rows), self.parallel.rank, self.parallel.world_size)
                local = self._select(rows[lo:hi])
                # 2. The engine's update on the Bradley–Terry loss; the schedule steps once per step.
                lr = float(self.scheduler.get_last_lr()[0])
                update, chosen, rejected = pair_update(
                    self.train_model, self.train_optimizer, local, cfg.optim, pad_id=self.pad_id,
                    device=self.device, parallel=self.parallel, generator=self.generator,
                )  # fmt: skip
                self.scheduler.step()
                # 3. Metrics over every process's pairs; held-out accuracy every eval_steps.
                metrics = self._step_metrics(update, chosen, rejected, local.margins, lr)
                if cfg.evaluation.eval_steps and step % cfg.evaluation.eval_steps == 0:
                    metrics |= self.evaluate()
                run.log(step, metrics)
                self.step = step
                # 4. Stop on a non-finite streak; periodic checkpoint.
                run.end_step(step, update)
            if self.eval_encoded is not None and "eval/accuracy" not in metrics:
                final_eval = self.evaluate()
                run.log(self.step, final_eval, progress=False)
                metrics |= final_eval
            final_dir, center, scale = self.save_final()
        self.train_model, self.train_optimizer = self.model, self.optimizer
        self.parallel.close()
        return RewardModelResult(self.harness.directory, final_dir, metrics, center, scale)

    def _select(self, rows: Sequence[int]) -> EncodedPairs:
        enc = self.train_encoded
        return EncodedPairs(
            [enc.chosen[i] for i in rows], [enc.rejected[i] for i in rows], enc.margins[list(rows)]
        )

    def _step_metrics(
        self,
        update: UpdateStats,
        chosen: torch.Tensor,
        rejected: torch.Tensor,
        margins: torch.Tensor,
        lr: float,
    ) -> dict[str, Any]:
        gather = self.parallel.all_gather
        metrics = pair_metrics(gather(chosen), gather(rejected), gather(margins), "train")
        metrics |= {
            "train/grad_norm": update.grad_norms.get("grad_norm", 0.0),
            "train/lr": lr,
            "train/optimizer_steps": float(update.optimizer_steps),
            "train/faults/nonfinite_skipped": float(update.nonfinite_skipped),
            "time/process_cpu_seconds": time.process_time() - self._cpu_start,
        }
        return metrics

    def evaluate(self) -> dict[str, float]:
        """Pairwise accuracy, loss and reward statistics on the held-out pairs (``eval/...``)."""
        if self.eval_encoded is None:
            return {}
        pairs = self.eval_encoded
        local = _share(pairs, self.parallel)
        chosen, rejected = score_pairs(
            self.model, local, pad_id=self.pad_id, device=self.device,
            batch_size=self.config.evaluation.eval_batch_size,
        )  # fmt: skip
        gather = self.parallel.all_gather
        return pair_metrics(gather(chosen), gather(rejected), gather(local.margins), "eval")

    # -- checkpoints and the final model ---------------------------------------------------------------------

    def save_checkpoint(self, step: int) -> Path:
        """``RUN_DIR/checkpoints/step-XXXXXX``: the model (LoRA: adapters and head), optimizer, schedule, RNG,
        the pair order and the harness counters."""
        state = {
            "step": step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": ckpt.capture_rng_state(),
            "data": self.pair_iter.state_dict(),
            "generator": self.generator.get_state(),
            "cpu_time": time.process_time() - self._cpu_start,
            **self.harness.state_dict(),
        }
        checkpointer = self.harness.checkpointer
        if checkpointer is None:
            raise RuntimeError("save_checkpoint before the run directory is open")
        saved = self.parallel.on_main(lambda: checkpointer.save(step, self.model, self.tokenizer, state))
        checkpointer.mark_saved(saved)
        return saved

    def _restore(self, checkpoint: Path) -> None:
        state = ckpt.load_trainer_state(checkpoint)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        ckpt.restore_rng_state(state["rng"])
        self.pair_iter.load_state_dict(state["data"])
        self.generator.set_state(state["generator"])
        self.cpu_offset = float(state["cpu_time"])
        self.harness.load_state_dict(state)
        self.start_step = int(state["step"])

    def normalization_texts(self) -> EncodedPairs:
        """The reference set of the reward statistics: ``reference_file``'s pairs, else the training pairs."""
        if self.reference_pairs is not None:
            return encode_pairs(self.tokenizer, self.reference_pairs)
        return self.train_encoded

    def reward_statistics(self) -> tuple[float, float]:
        """(mean, standard deviation) of the model's rewards on both sides of the reference pairs (note 4)."""
        pairs = self.normalization_texts()
        local = _share(pairs, self.parallel)
        chosen, rejected = score_pairs(
            self.model, local, pad_id=self.pad_id, device=self.device,
            batch_size=self.config.evaluation.eval_batch_size,
        )  # fmt: skip
        rewards = self.parallel.all_gather(torch.cat([chosen, rejected])).double()  # (2P,)
        std = float(rewards.std()) if len(rewards) > 1 else 0.0
        return float(rewards.mean()), std

    def save_final(self) -> tuple[Path, float | None, float | None]:
        """The reward model in ``RUN_DIR/final`` (sequence-classification layout, LoRA merged), with
        ``reward_center`` / ``reward_scale`` in its config.json; returns the directory and the two values."""
        from grpokit.models.sequence_classifier import merged_reward_model

        center = scale = None
        if self.config.normalization.enabled:
            center, scale = self.reward_statistics()
            if not (math.isfinite(scale) and scale > 1e-8):
                raise ValueError(
                    f"reward normalisation: the rewards of the reference set have standard deviation {scale}; "
                    "the model gives every text the same reward (set normalization.enabled: false to save it "
                    "anyway)"
                )
        final = self.harness.directory / "final"

        def save() -> None:
            model = merged_reward_model(self.model)
            if center is not None:  # absent (not null) when normalisation is off: raw logits
                model.config.reward_center, model.config.reward_scale = center, scale
            with ckpt.atomic_directory(final) as tmp:
                ckpt.save_pretrained(model, self.tokenizer, tmp)

        self.parallel.on_main(save)
        return final, center, scale


def train_reward_model(config: RewardModelConfig, **kwargs: Any) -> RewardModelResult:
    """Build a :class:`RewardModelTrainer` (``kwargs`` as its constructor's) and run it."""
    return RewardModelTrainer(config, **kwargs).train()
