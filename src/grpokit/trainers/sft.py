"""Supervised warm-up: maximise the log-likelihood of demonstration completions given their prompts.

    L(theta) = - 1/|b| sum_{(x, y, m) in b} 1/|m| sum_t m_t log pi_theta(y_t | x, y_<t)

over batches ``b`` of ``(prompt x, completion y, loss mask m)`` drawn uniformly with replacement (seeded);
``|m|`` is the number of trained tokens. With ``loss_reduction="token_mean"`` the batch's trained tokens
are averaged together instead, ``L = - sum_b sum_t m_t log pi / sum_b |m|``: the log-likelihood of whole
demonstrations, which is what imitation of demonstrations of different lengths needs. The per-sequence mean
weighs each token by ``1/|m|``, so a choice that leads to a long demonstration is learned as less likely
than the teacher makes it (a teacher calling a tool on 30% of problems, with 25 trained tokens after a call
and 6 after a guess, is imitated as calling on 8%). Both are the same when every completion has the same
length.

Prompts are encoded exactly as the sampler encodes them (:func:`grpokit.rollout.encode_prompts`) and every
completion ends with EOS, so the warmed-up policy has seen the same token layout it will generate in. The
loss uses :func:`grpokit.models.logprobs.completion_logprobs`, the function GRPO uses for its ratios.

Multi-turn demonstrations (whole conversations with an environment) come pre-tokenized as
:class:`TokenExample`: :func:`conversation_example` lays a conversation out exactly as the episode runner
does (the opening prompt; each assistant turn's tokens and its stop token, trained, ``m = 1``; the tokens of
the environment's and tools' messages between turns, attended to but not trained, ``m = 0``).

:class:`SupervisedTrainer` takes one step at a time, so a caller can stop on a validation metric (the
demo stops its warm-up on held-out accuracy) or continue later from its :meth:`~SupervisedTrainer.state_dict`
(the demo's control run continues the warm-up); :func:`supervised_finetune` runs a fixed number of steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch

__all__ = [
    "ConversationRenderer",
    "SupervisedTrainer",
    "TokenExample",
    "conversation_example",
    "supervised_finetune",
]


@dataclass(frozen=True)
class TokenExample:
    """A pre-tokenized demonstration: the prompt, the completion after it and which completion tokens are
    trained (``loss_mask[t] == 1``; the others are context only). ``completion_ids`` and ``loss_mask`` have
    the same length."""

    prompt_ids: list[int]
    completion_ids: list[int]
    loss_mask: list[int]

    def __post_init__(self) -> None:
        if len(self.completion_ids) != len(self.loss_mask):
            raise ValueError(
                f"completion_ids has {len(self.completion_ids)} tokens but loss_mask {len(self.loss_mask)}"
            )
        if not self.prompt_ids:
            raise ValueError("prompt_ids is empty: a completion continues at least one prompt token")
        if not any(self.loss_mask):
            raise ValueError("loss_mask trains no token")


class ConversationRenderer(Protocol):
    """The token layout of an episode (:class:`grpokit.agents.chat.ChatRenderer`)."""

    def opening(self, messages: list[dict[str, Any]]) -> list[int]:
        """The opening messages rendered with the generation prompt: the episode's prompt tokens."""
        ...

    def between_turns(self, messages: list[dict[str, Any]]) -> list[int]:
        """The tokens after an assistant turn's stop token for the messages answering it (tool results,
        feedback), up to where the next assistant turn starts."""
        ...


def conversation_example(
    renderer: ConversationRenderer, tokenizer: Any, messages: Sequence[dict[str, Any]], stop_id: int
) -> TokenExample:
    """A whole conversation (opening messages, then assistant turns and the messages answering them) laid
    out as the episode runner (:mod:`grpokit.trainers.episodes`) lays out a sampled episode.

    ``prompt_ids`` are the opening messages (everything before the first assistant turn) rendered with the
    generation prompt. The completion is, turn after turn, the assistant's text encoded without special
    tokens plus ``stop_id`` (trained), then the messages answering it as ``renderer.between_turns`` renders
    them (not trained). Messages after the last assistant turn are left out: no turn follows them.

    Raises:
        ValueError: the conversation has no assistant turn (naming its first message).
    """
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if not turns:
        head = messages[0] if messages else None
        raise ValueError(f"a demonstration without an assistant turn (first message: {head!r})")
    completion: list[int] = []
    mask: list[int] = []
    for previous, i in zip([None, *turns], turns):
        replies = [] if previous is None else list(messages[previous + 1 : i])
        if replies:
            between = renderer.between_turns(replies)
            completion += between
            mask += [0] * len(between)
        turn = tokenizer(messages[i]["content"], add_special_tokens=False)["input_ids"] + [stop_id]
        completion += turn
        mask += [1] * len(turn)
    return TokenExample(renderer.opening(list(messages[: turns[0]])), completion, mask)


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
        examples: ``(prompt, completion)`` pairs (prompts may be text or chat messages; every completion
            token is trained), or :class:`TokenExample` (pre-tokenized; only its ``loss_mask`` tokens are
            trained). One kind or the other, not both.
        learning_rate: AdamW learning rate.
        batch_size: examples per step, drawn uniformly with replacement.
        seed: seed of the batch draws.
        total_steps: when given, the learning rate decays linearly to 0 over this many steps; ``None``
            keeps it constant (for runs stopped on a validation metric, whose length is not known ahead).
        weight_decay: AdamW decoupled weight decay.
        max_grad_norm: the global gradient norm is clipped to this before each step.
        loss_reduction: ``"sequence_mean"`` (each example's mean over its trained tokens, then the batch
            mean) or ``"token_mean"`` (the mean over all trained tokens of the batch); see the module.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        examples: Sequence[tuple[Any, str]] | Sequence[TokenExample],
        *,
        learning_rate: float,
        batch_size: int,
        seed: int = 0,
        total_steps: int | None = None,
        weight_decay: float = 0.0,
        max_grad_norm: float = 1.0,
        loss_reduction: Literal["sequence_mean", "token_mean"] = "sequence_mean",
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
        if loss_reduction not in ("sequence_mean", "token_mean"):
            raise ValueError(
                f"loss_reduction must be 'sequence_mean' or 'token_mean', got {loss_reduction!r}"
            )
        self.loss_reduction = loss_reduction
        self.model = model
        self.batch_size = batch_size
        self.max_grad_norm = max_grad_norm
        self.pad_id = tokenizer.pad_token_id
        tokenized = [e for e in examples if isinstance(e, TokenExample)]
        if tokenized and len(tokenized) != len(examples):
            raise ValueError("examples mixes TokenExample and (prompt, completion) pairs: give one kind")
        if tokenized:
            self.prompt_ids = [list(e.prompt_ids) for e in tokenized]
            self.completion_ids = [list(e.completion_ids) for e in tokenized]
            self.loss_masks = [list(e.loss_mask) for e in tokenized]
        else:
            eos = tokenizer.eos_token_id
            pairs: Sequence[tuple[Any, str]] = examples  # type: ignore[assignment]
            self.prompt_ids = encode_prompts(tokenizer, [p for p, _ in pairs])
            self.completion_ids = [
                tokenizer(c, add_special_tokens=False)["input_ids"] + [eos] for _, c in pairs
            ]
            self.loss_masks = [[1] * len(ids) for ids in self.completion_ids]
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
        decay = (lambda s: 1.0 - s / max(total_steps, 1)) if total_steps is not None else (lambda s: 1.0)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, decay)
        self.generator = torch.Generator().manual_seed(seed)
        self.steps_done = 0

    def step(self) -> float:
        """One AdamW step on a random batch; returns its loss (NLL per trained token, reduced as
        ``loss_reduction`` says)."""
        from grpokit.models.logprobs import completion_logprobs

        device = next(self.model.parameters()).device
        rows = torch.randint(len(self.prompt_ids), (self.batch_size,), generator=self.generator).tolist()
        p_ids, p_mask = _pad([self.prompt_ids[i] for i in rows], self.pad_id, left=True)  # (b, P) each
        c_ids, c_mask = _pad([self.completion_ids[i] for i in rows], self.pad_id, left=False)  # (b, T) each
        trained, _ = _pad([self.loss_masks[i] for i in rows], 0, left=False)  # (b, T), 0 on padding too
        self.model.eval()  # no dropout, as in the RL phase
        logprobs, _ = completion_logprobs(
            self.model, p_ids.to(device), p_mask.to(device), c_ids.to(device), c_mask.to(device)
        )  # (b, T)
        trained = trained.to(device).float()
        if self.loss_reduction == "token_mean":
            loss = -(logprobs * trained).sum() / trained.sum()
        else:
            loss = -((logprobs * trained).sum(1) / trained.sum(1)).mean()
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
    examples: Sequence[tuple[Any, str]] | Sequence[TokenExample],
    *,
    steps: int,
    learning_rate: float,
    batch_size: int,
    seed: int = 0,
    weight_decay: float = 0.0,
    max_grad_norm: float = 1.0,
) -> list[float]:
    """Train ``model`` in place on ``(prompt, completion)`` pairs (or :class:`TokenExample`) for ``steps``
    AdamW steps.

    Batches are drawn uniformly at random (seeded); the learning rate decays linearly to 0.

    Returns:
        The loss (mean negative log-likelihood per trained token, sequence-averaged) of every step.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    trainer = SupervisedTrainer(
        model, tokenizer, examples, learning_rate=learning_rate, batch_size=batch_size, seed=seed,
        total_steps=steps, weight_decay=weight_decay, max_grad_norm=max_grad_norm,
    )  # fmt: skip
    return [trainer.step() for _ in range(steps)]
