"""Supervised warm-up: maximise the log-likelihood of demonstration completions given their prompts.

    L(theta) = - 1/|b| sum_{(x, y) in b} 1/|y| sum_t log pi_theta(y_t | x, y_<t)

over batches ``b`` of ``(prompt x, completion y)`` pairs drawn uniformly with replacement (seeded).

Prompts are encoded exactly as the sampler encodes them (:func:`grpokit.rollout.encode_prompts`) and every
completion ends with EOS, so the warmed-up policy has seen the same token layout it will generate in. The
loss uses :func:`grpokit.models.logprobs.completion_logprobs`, the function GRPO uses for its ratios.

:class:`SupervisedTrainer` takes one step at a time, so a caller can stop on a validation metric (the
demo stops its warm-up on held-out accuracy) or continue later from its :meth:`~SupervisedTrainer.state_dict`
(the demo's control run continues the warm-up); :func:`supervised_finetune` runs a fixed number of steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["SupervisedTrainer", "supervised_finetune"]


def _pad(rows: list[list[int]], pad_id: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        span = slice(width - len(r), width) if left else slice(0, len(r))
        ids[i, span] = torch.tensor(r, dtype=torch.long)
        mask[i, span] = 1
    return ids, mask


class SupervisedTrainer:
    """AdamW on the demonstration log-likelihood, one batch per :meth:`step`.

    Args:
        model: the policy, trained in place (kept in eval mode: no dropout, as in the RL phase).
        tokenizer: its tokenizer (pad and EOS tokens required).
        examples: ``(prompt, completion)`` pairs; prompts may be text or chat messages.
        learning_rate: AdamW learning rate.
        batch_size: examples per step, drawn uniformly with replacement.
        seed: seed of the batch draws.
        total_steps: when given, the learning rate decays linearly to 0 over this many steps; ``None``
            keeps it constant (for runs stopped on a validation metric, whose length is not known ahead).
        weight_decay: AdamW decoupled weight decay.
        max_grad_norm: the global gradient norm is clipped to this before each step.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        examples: Sequence[tuple[Any, str]],
        *,
        learning_rate: float,
        batch_size: int,
        seed: int = 0,
        total_steps: int | None = None,
        weight_decay: float = 0.0,
        max_grad_norm: float = 1.0,
    ):
        from grpokit.rollout import encode_prompts

        if not examples:
            raise ValueError("supervised warm-up needs at least one (prompt, completion) example")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
        if total_steps is not None and total_steps < 0:
            raise ValueError(f"total_steps must be >= 0 or None, got {total_steps}")
        if tokenizer.eos_token_id is None or tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer needs an EOS and a pad token")
        self.model = model
        self.batch_size = batch_size
        self.max_grad_norm = max_grad_norm
        self.pad_id = tokenizer.pad_token_id
        eos = tokenizer.eos_token_id
        self.prompt_ids = encode_prompts(tokenizer, [p for p, _ in examples])
        self.completion_ids = [
            tokenizer(c, add_special_tokens=False)["input_ids"] + [eos] for _, c in examples
        ]
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
        decay = (lambda s: 1.0 - s / max(total_steps, 1)) if total_steps is not None else (lambda s: 1.0)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, decay)
        self.generator = torch.Generator().manual_seed(seed)
        self.steps_done = 0

    def step(self) -> float:
        """One AdamW step on a random batch; returns its loss (NLL per completion token, sequence mean)."""
        from grpokit.models.logprobs import completion_logprobs

        device = next(self.model.parameters()).device
        rows = torch.randint(len(self.prompt_ids), (self.batch_size,), generator=self.generator).tolist()
        p_ids, p_mask = _pad([self.prompt_ids[i] for i in rows], self.pad_id, left=True)  # (b, P) each
        c_ids, c_mask = _pad([self.completion_ids[i] for i in rows], self.pad_id, left=False)  # (b, T) each
        self.model.eval()  # no dropout, as in the RL phase
        logprobs, _ = completion_logprobs(
            self.model, p_ids.to(device), p_mask.to(device), c_ids.to(device), c_mask.to(device)
        )  # (b, T)
        c_mask = c_mask.to(device).float()
        loss = -((logprobs * c_mask).sum(1) / c_mask.sum(1)).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        self.optimizer.step()
        self.schedule.step()
        self.steps_done += 1
        return loss.item()

    def state_dict(self) -> dict[str, Any]:
        """Optimizer, schedule, batch-draw RNG and step count (the weights are saved with the model)."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "generator": self.generator.get_state(),
            "steps_done": self.steps_done,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.generator.set_state(state["generator"])
        self.steps_done = int(state["steps_done"])

    def continue_from(self, state: dict[str, Any]) -> None:
        """Take over the Adam moments and batch RNG of an earlier run's :meth:`state_dict`, keeping this
        trainer's learning rate and schedule (its step count starts at 0).

        Fresh Adam moments after a warm-up would make the first steps much larger than the warm-up's last
        ones; the demo's control continues the warm-up, so it keeps them.
        """
        rates = [(group["lr"], group["initial_lr"]) for group in self.optimizer.param_groups]
        self.optimizer.load_state_dict(state["optimizer"])
        for group, (lr, initial_lr) in zip(self.optimizer.param_groups, rates):
            group["lr"], group["initial_lr"] = lr, initial_lr
        self.generator.set_state(state["generator"])


def supervised_finetune(
    model: torch.nn.Module,
    tokenizer: Any,
    examples: Sequence[tuple[Any, str]],
    *,
    steps: int,
    learning_rate: float,
    batch_size: int,
    seed: int = 0,
    weight_decay: float = 0.0,
    max_grad_norm: float = 1.0,
) -> list[float]:
    """Train ``model`` in place on ``(prompt, completion)`` pairs for ``steps`` AdamW steps.

    Batches are drawn uniformly at random (seeded); the learning rate decays linearly to 0.

    Returns:
        The loss (mean negative log-likelihood per completion token, sequence-averaged) of every step.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    trainer = SupervisedTrainer(
        model, tokenizer, examples, learning_rate=learning_rate, batch_size=batch_size, seed=seed,
        total_steps=steps, weight_decay=weight_decay, max_grad_norm=max_grad_norm,
    )  # fmt: skip
    return [trainer.step() for _ in range(steps)]
