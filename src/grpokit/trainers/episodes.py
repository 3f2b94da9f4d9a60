"""Multi-turn episodes: a language model acting in a text environment, turn after turn, token in and token out.

One step's rollouts, for B dataset rows and G episodes each::

    for each row g: G environment instances, env.reset(row, seed_g)      the same start state for the group
    opening ids = template(opening messages, tools=schemas)              ChatRenderer.opening
    while episodes are live:                                            one batched sampler call per turn
        turn ids = sampler.continue_from_ids(prefixes of live episodes)  kept exactly as sampled
        tool calls?  -> the tools run (deadline, failure policy)         tool messages, reward 0
        otherwise    -> env.step(turn)                                   messages, reward, end of episode
        between-turn ids = template(new messages)                        ChatRenderer.between_turns, not trained
    -> RolloutBatch: completion = every turn and every message after the opening; loss_mask 1 on sampled ids
    -> RewardScores: the episode's return (outcome), or each turn's reward at its last token (process)

The trainer's loss and KL then run on ``loss_mask`` only: the environment's and tools' tokens are attended to
and never trained on.

Choices, numbered:

1. Token in, token out: the ids a turn sampled are appended as they are, and only the environment's messages
   are rendered (``grpokit.agents.chat``). The text the environment and the tools see is the decoded turn,
   but no decoded text is ever encoded back into the training sequence.
2. One environment instance per episode, made by the factory, so a tool (a method bound to it) knows which
   episode called it; the G episodes of a row share the reset seed, hence the start state (``same_start``).
3. Seeds come from (run seed, generation round, row index): the reset seed of row g is
   ``derive_seed(seed, round, 3, g)``, whatever the number of processes; with ``generation.per_group_seed``
   the sampler is also reseeded per row and each row's episodes are sampled on their own (a data-parallel run
   then equals a one-process run), otherwise every live episode of the step shares one sampler call per turn.
4. A turn that reaches ``generation.max_new_tokens`` without a stop token, an episode at ``env.max_turns``
   turns, or one whose next turn would not fit in ``env.max_total_tokens`` is truncated (``truncated`` is set;
   its turns so far are trained on with the rewards they got).
5. A turn that calls tools gets their results and reward 0; it does not go to ``env.step``. Malformed calls
   are answered with an ``error: ...`` tool message. A turn without tool calls goes to ``env.step``.
6. Groups: ``env.grouping`` names a grouping of :mod:`grpokit.rl.grouping` (the one module for classic RL and
   language models); ``same_start`` (default) groups the G episodes of a row.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from grpokit.agents.chat import ChatRenderer
from grpokit.agents.environment import EnvStep, Message, TextEnvironment, tool_callables
from grpokit.agents.registry import environment_class, environment_factory, load_tools
from grpokit.agents.tool_calls import get_tool_call_parser, message_tool_calls
from grpokit.agents.tools import ToolExecutor, ToolStats, tool_schema
from grpokit.config import EnvConfig
from grpokit.engine.parallel import derive_seed, shard_bounds
from grpokit.rewards import RewardScores
from grpokit.rl.grouping import group_ids_from_keys, make_grouping
from grpokit.rl.rollout import StartState
from grpokit.rollout.batch import RolloutBatch

__all__ = ["EnvironmentSetup", "EpisodeRunner", "EpisodeStarts", "Trajectory"]

RESET_SEED_STREAM = 3  # the derive_seed key of reset seeds (0, 1: the sampler's per-group and per-rank seeds)


@dataclass
class Trajectory:
    """One episode in flight: its token sequence, what the policy sampled of it, and its turns."""

    row: int  # global row index (the group of same_start)
    env: Any
    tools: ToolExecutor | None
    renderer: ChatRenderer
    reset_seed: int
    reset_info: dict[str, Any]
    opening: list[Message]
    prompt_ids: list[int]
    temperature: float
    completion_ids: list[int] = field(default_factory=list)
    sampled: list[float] = field(default_factory=list)  # 1 on sampled ids, 0 on rendered ones
    logprobs: list[float] = field(default_factory=list)
    conversation: list[Message] = field(default_factory=list)
    turn_ends: list[int] = field(default_factory=list)  # completion index of each turn's last token
    turn_rewards: list[float] = field(default_factory=list)
    done: bool = False
    truncated: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    tool_calls: int = 0
    tool_failures: int = 0

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.completion_ids)

    def end(self, *, truncated: bool) -> None:
        self.done, self.truncated = True, truncated

    def cut(self) -> None:
        """End the episode at a limit of the trainer's; an environment's ``truncation_reward()`` scores it."""
        self.end(truncated=True)
        score = getattr(self.env, "truncation_reward", None)
        if score is not None:
            reward = float(score())
            if not math.isfinite(reward):
                raise ValueError(f"{type(self.env).__name__}.truncation_reward returned {reward} (row {self.row})")
            if self.turn_rewards:  # on the last turn's last token, where its reward sits
                self.turn_rewards[-1] += reward
                last = next(m for m in reversed(self.conversation) if m["role"] == "assistant")
                last["reward"] = self.turn_rewards[-1]


@dataclass
class EpisodeStarts:
    """How each episode of a batch started, in the form the groupings of :mod:`grpokit.rl.grouping` read."""

    starts: list[StartState]
    reset_infos: list[dict[str, Any]]

    @property
    def num_episodes(self) -> int:
        return len(self.starts)

    @property
    def start_observations(self) -> torch.Tensor:
        """(N, F) the environments' ``reset_info["features"]`` (what ``similarity`` clusters and key functions
        see as ``start_observation``); (N, 0) when no environment reports features."""
        if not any("features" in info for info in self.reset_infos):
            return torch.zeros((len(self.starts), 0), dtype=torch.float64)
        missing = [i for i, info in enumerate(self.reset_infos) if "features" not in info]
        if missing:
            raise ValueError(
                f"episode {missing[0]}'s environment set no reset_info['features'] while others did: every "
                "episode needs the same features (set self.reset_info = {'features': [...]} in reset)"
            )
        return torch.tensor(np.asarray([info["features"] for info in self.reset_infos], dtype=np.float64))


@dataclass
class EnvironmentSetup:
    """The ``env`` section resolved before any model loads: the environment factory (one instance was made
    to check it), its class, and the extra tools."""

    config: EnvConfig
    make_env: Callable[[], TextEnvironment]
    env_class: Any
    extra_tools: list[Callable[..., Any]]

    @classmethod
    def from_config(cls, config: Any) -> EnvironmentSetup:
        env = config.env
        if env.name is None:
            raise ValueError("env.name is unset")
        make_env = environment_factory(
            env.name, env.kwargs, adapter=env.adapter, prompt_column=config.data.prompt_column
        )
        return cls(env, make_env, environment_class(env.name), load_tools(env.tools))

    def make_rows(self, n: int, seed: int) -> list[dict[str, Any]]:
        """``n`` training rows from the environment class's ``make_rows(n, seed, "train")``.

        Raises:
            ValueError: the class has no ``make_rows`` (the rows must then come from ``data.path``).
        """
        make_rows = getattr(self.env_class, "make_rows", None)
        if make_rows is None:
            raise ValueError(
                f"env.name {self.config.name!r}: the environment makes no rows of its own (no make_rows "
                "classmethod); set data.path to a dataset whose rows its reset reads"
            )
        rows = list(make_rows(n, seed=seed, split="train"))
        if not rows:
            raise ValueError(f"env.name {self.config.name!r}: make_rows returned no rows")
        return rows

    def runner(self, tokenizer: Any, sampler: Any, *, max_new_tokens: int, temperatures: torch.Tensor) -> EpisodeRunner:
        return EpisodeRunner(
            self.make_env, tokenizer, sampler, self.config, max_new_tokens=max_new_tokens,
            temperatures=temperatures, extra_tools=self.extra_tools,
        )  # fmt: skip


class EpisodeRunner:
    """Plays G episodes per dataset row with the sampler and turns them into a batch and its scores.

    Args:
        make_env: a new environment instance per call (``grpokit.agents.registry.environment_factory``).
        tokenizer: the policy's tokenizer, with a chat template.
        sampler: the step's sampler (:class:`~grpokit.trainers.sharding.ShardedSampler`): its wrapped sampler
            continues prefixes (``continue_from_ids``); its process group, seed and round counter (saved in
            checkpoints) seed the episodes.
        env: the ``env`` config section.
        max_new_tokens: tokens per turn at most.
        temperatures: (G,) temperature of each episode of a group.
        extra_tools: tools every episode gets besides its environment's own.
    """

    def __init__(
        self,
        make_env: Callable[[], TextEnvironment],
        tokenizer: Any,
        sampler: Any,
        env: EnvConfig,
        *,
        max_new_tokens: int,
        temperatures: torch.Tensor,
        extra_tools: Sequence[Callable[..., Any]] = (),
    ):
        self.make_env = make_env
        self.tokenizer = tokenizer
        self.sharded = sampler
        self.config = env
        self.max_new_tokens = int(max_new_tokens)
        self.temperatures = [float(t) for t in temperatures]
        self.extra_tools = list(extra_tools)
        self.parse = get_tool_call_parser(env.tool_call_parser)
        self.grouping = None if env.grouping == "same_start" else make_grouping(env.grouping, **env.grouping_kwargs)
        if env.grouping not in ("same_start", "batch") and sampler.parallel.is_distributed:
            # Group ids are compared across processes (trainers/sharding.py); these groupings number each
            # process's episodes on their own.
            raise ValueError(
                f"env.grouping '{env.grouping}' groups each process's episodes on their own; with several "
                "processes use same_start or batch"
            )
        self.stop_ids = list(self.turn_sampler.stop_ids)
        self.tool_stats = ToolStats()  # one per run: each tool's first failure is logged once, not per episode
        self._renderers: dict[tuple[str, ...], ChatRenderer] = {}

    @property
    def turn_sampler(self) -> Any:
        """The sampler that continues prefixes (inside the data-parallel wrapper)."""
        return getattr(self.sharded, "sampler", self.sharded)

    # -- one step -----------------------------------------------------------------------------------------

    def run(self, rows: list[dict[str, Any]], num_generations: int) -> tuple[RolloutBatch, RewardScores]:
        """This process's episodes of the B global ``rows`` (G = ``num_generations`` each): the batch (group
        ids are the global row indices with ``same_start``) and its scores."""
        sharded, G = self.sharded, num_generations
        parallel = sharded.parallel
        B, rank, W = len(rows), parallel.rank, parallel.world_size
        start, stop = shard_bounds(B, rank, W)
        round_index = sharded.rounds
        sharded.rounds += 1
        model = getattr(self.turn_sampler, "model", None)
        context = parallel.generation(model) if model is not None else nullcontext()
        episodes: list[Trajectory] = []
        with context:
            if sharded.per_group_seed:
                for g in range(start, stop):
                    self.turn_sampler.set_seed(derive_seed(sharded.seed, round_index, 0, g))
                    episodes += self._play(rows, [g], G, round_index)
            else:
                if W > 1:
                    self.turn_sampler.set_seed(derive_seed(sharded.seed, round_index, 1, rank))
                episodes = self._play(rows, list(range(start, stop)), G, round_index)
        for ep in episodes:  # an environment holding resources (a gymnasium env, a sandbox) releases them
            close = getattr(ep.env, "close", None)
            if callable(close):
                close()
        return self._batch(episodes, rows), self._scores(episodes)

    def _play(self, rows: list[dict[str, Any]], groups: list[int], G: int, round_index: int) -> list[Trajectory]:
        episodes = [
            self._reset(rows[g], g, k, derive_seed(self.sharded.seed, round_index, RESET_SEED_STREAM, g))
            for g in groups
            for k in range(G)
        ]
        for turn in range(self.config.max_turns):
            live = [ep for ep in episodes if not ep.done]
            if not live:
                break
            limits = [self._turn_limit(ep) for ep in live]
            for ep, limit in zip(live, limits):
                if limit < 1:  # not one more token fits in the context budget
                    ep.cut()
            live = [ep for ep, limit in zip(live, limits) if limit >= 1]
            limits = [limit for limit in limits if limit >= 1]
            if not live:
                break
            turns = self.turn_sampler.continue_from_ids(
                [ep.prompt_ids + ep.completion_ids for ep in live], [ep.temperature for ep in live], max(limits)
            )
            for ep, limit, sampled in zip(live, limits, turns):
                ids, logprobs, stopped = sampled.token_ids[:limit], sampled.logprobs[:limit], sampled.stopped
                stopped = stopped and len(sampled.token_ids) <= limit
                self._take_turn(ep, ids, logprobs, stopped, last_turn=turn == self.config.max_turns - 1)
        for ep in episodes:
            if not ep.done:
                ep.cut()
        return episodes

    def _turn_limit(self, ep: Trajectory) -> int:
        if self.config.max_total_tokens is None:
            return self.max_new_tokens
        return min(self.max_new_tokens, self.config.max_total_tokens - ep.length)

    def _reset(self, row: dict[str, Any], g: int, k: int, seed: int) -> Trajectory:
        env = self.make_env()
        opening = env.reset(dict(row), seed)
        if not isinstance(opening, list) or not all(
            isinstance(m, dict) and "role" in m and "content" in m for m in opening
        ):
            raise TypeError(
                f"{type(env).__name__}.reset(row {g}) returned {opening!r:.200}; it must return the opening "
                'messages, a list of {"role": ..., "content": ...} dicts'
            )
        tools = tool_callables(env) + self.extra_tools
        renderer = self._renderer(tools)
        executor = None
        if tools:
            executor = ToolExecutor(
                tools, timeout_s=self.config.tool_timeout_s, failure=self.config.tool_failure, stats=self.tool_stats
            )
        prompt_ids = renderer.opening(opening)
        return Trajectory(
            row=g,
            env=env,
            tools=executor,
            renderer=renderer,
            reset_seed=seed,
            reset_info=dict(getattr(env, "reset_info", None) or {}),
            opening=opening,
            prompt_ids=prompt_ids,
            temperature=self.temperatures[k % len(self.temperatures)],
        )

    def _renderer(self, tools: list[Callable[..., Any]]) -> ChatRenderer:
        key = tuple(getattr(tool, "__name__", repr(tool)) for tool in tools)
        renderer = self._renderers.get(key)
        if renderer is None:
            schemas = [tool_schema(tool) for tool in tools]
            renderer = ChatRenderer(
                self.tokenizer, self.stop_ids, tools=schemas, chat_template_kwargs=self.config.chat_template_kwargs
            )
            self._renderers[key] = renderer
        return renderer

    def _take_turn(
        self, ep: Trajectory, ids: list[int], logprobs: list[float], stopped: bool, *, last_turn: bool
    ) -> None:
        ep.completion_ids += ids
        ep.sampled += [1.0] * len(ids)
        ep.logprobs += logprobs
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        message: Message = {"role": "assistant", "content": text}
        ep.conversation.append(message)
        ep.turn_ends.append(len(ep.completion_ids) - 1)
        if not stopped:  # cut at the per-turn or context limit: an unfinished message goes nowhere
            ep.turn_rewards.append(0.0)
            ep.cut()
            return
        parsed = self.parse(text)
        if ep.tools is not None and (parsed.tool_calls or parsed.errors):
            message["tool_calls"] = message_tool_calls(parsed.tool_calls)
            replies = self._run_tools(ep, parsed)
            reward, ended, truncated = 0.0, False, False
        else:
            answer: Message = {"role": "assistant", "content": parsed.content if ep.tools is not None else text}
            step = ep.env.step(answer)
            if not isinstance(step, EnvStep):
                raise TypeError(
                    f"{type(ep.env).__name__}.step (row {ep.row}) returned {step!r:.200}; it must return a "
                    "grpokit.agents.EnvStep(messages, reward, terminated, truncated, info)"
                )
            replies, reward = list(step.messages), float(step.reward)
            if not math.isfinite(reward):
                raise ValueError(
                    f"{type(ep.env).__name__}.step returned the reward {reward} (row {ep.row}): rewards must be "
                    "finite"
                )
            ended, truncated = bool(step.terminated or step.truncated), bool(step.truncated)
            ep.info.update(step.info)
        message["reward"] = reward
        ep.turn_rewards.append(reward)
        ep.conversation += replies
        if ended:
            ep.end(truncated=truncated)
            return
        if last_turn:
            ep.cut()
            return
        if not replies:
            raise ValueError(
                f"{type(ep.env).__name__}.step returned no messages for an episode that goes on (row {ep.row}): "
                "answer the turn or end the episode (terminated=True)"
            )
        between = ep.renderer.between_turns(replies)
        limit = self.config.max_total_tokens
        if limit is not None and ep.length + len(between) >= limit:  # no room for the next turn
            ep.cut()
            return
        ep.completion_ids += between
        ep.sampled += [0.0] * len(between)
        ep.logprobs += [0.0] * len(between)

    def _run_tools(self, ep: Trajectory, parsed: Any) -> list[Message]:
        assert ep.tools is not None
        where = f"row {ep.row}, reset seed {ep.reset_seed}"
        replies: list[Message] = []
        for call in parsed.tool_calls:
            result = ep.tools.call(call, episode=where)
            ep.tool_calls += 1
            ep.tool_failures += int(result.failed)
            reply: Message = {"role": "tool", "name": call.name, "content": result.content}
            if result.failed:
                reply["failed"] = True
            replies.append(reply)
        for error in parsed.errors:
            ep.tool_failures += 1
            replies.append({"role": "tool", "name": "error", "content": f"error: {error}", "failed": True})
        return replies

    # -- the batch and its scores -----------------------------------------------------------------------------

    def _batch(self, episodes: list[Trajectory], rows: list[dict[str, Any]]) -> RolloutBatch:
        pad = int(self.tokenizer.pad_token_id)
        N = len(episodes)
        P = max(len(ep.prompt_ids) for ep in episodes)
        T = max(1, max(len(ep.completion_ids) for ep in episodes))
        prompt_ids = torch.full((N, P), pad, dtype=torch.long)
        prompt_mask = torch.zeros((N, P), dtype=torch.long)
        completion_ids = torch.full((N, T), pad, dtype=torch.long)
        completion_mask = torch.zeros((N, T))
        loss_mask = torch.zeros((N, T))
        logprobs = torch.zeros((N, T))
        for i, ep in enumerate(episodes):
            p, t = len(ep.prompt_ids), len(ep.completion_ids)
            prompt_ids[i, P - p :] = torch.tensor(ep.prompt_ids)
            prompt_mask[i, P - p :] = 1
            completion_ids[i, :t] = torch.tensor(ep.completion_ids, dtype=torch.long)
            completion_mask[i, :t] = 1.0
            loss_mask[i, :t] = torch.tensor(ep.sampled)
            logprobs[i, :t] = torch.tensor(ep.logprobs)
        keys = dict.fromkeys(key for row in rows for key in row)  # every column, in first-seen order
        columns = {key: [rows[ep.row].get(key) for ep in episodes] for key in keys}
        return RolloutBatch(
            prompt_ids=prompt_ids,
            prompt_mask=prompt_mask,
            completion_ids=completion_ids,
            completion_mask=completion_mask,
            group_ids=self._group_ids(episodes),
            temperatures=torch.tensor([ep.temperature for ep in episodes], dtype=torch.float32),
            truncated=torch.tensor([ep.truncated for ep in episodes], dtype=torch.bool),
            prompts=[ep.opening for ep in episodes],
            completions=[
                self.tokenizer.decode(ep.completion_ids, skip_special_tokens=True) for ep in episodes
            ],
            columns=columns,
            sampler_logprobs=logprobs,
            loss_mask=loss_mask,
            conversations=[ep.conversation for ep in episodes],
        )

    def _group_ids(self, episodes: list[Trajectory]) -> torch.Tensor:
        if self.grouping is None:  # same_start: the global row index, shared across processes
            return torch.tensor([ep.row for ep in episodes], dtype=torch.long)
        starts = EpisodeStarts(
            starts=[StartState(seed=ep.reset_seed) for ep in episodes],
            reset_infos=[{**ep.reset_info} for ep in episodes],
        )
        return group_ids_from_keys(self.grouping(starts).tolist())  # type: ignore[arg-type]

    def _scores(self, episodes: list[Trajectory]) -> RewardScores:
        returns = torch.tensor([sum(ep.turn_rewards) for ep in episodes], dtype=torch.float32)  # (N,)
        metrics: dict[str, float] = {
            "env/return_mean": returns.mean().item(),
            "env/turns_mean": float(np.mean([len(ep.turn_rewards) for ep in episodes])),
            "env/truncated_fraction": float(np.mean([ep.truncated for ep in episodes])),
            "env/tool_calls_mean": float(np.mean([ep.tool_calls for ep in episodes])),
            "env/tool_failures": float(sum(ep.tool_failures for ep in episodes)),
        }
        for key in sorted({k for ep in episodes for k in ep.info}):
            values = [ep.info[key] for ep in episodes if isinstance(ep.info.get(key), (int, float, bool))]
            if values:
                metrics[f"env/{key}"] = float(np.mean(values))
        step_rewards = step_ends = None
        if self.config.reward_mode == "process":
            S = max(len(ep.turn_rewards) for ep in episodes)
            step_rewards = torch.zeros((len(episodes), S))
            step_ends = torch.full((len(episodes), S), -1, dtype=torch.long)
            for i, ep in enumerate(episodes):
                step_rewards[i, : len(ep.turn_rewards)] = torch.tensor(ep.turn_rewards)
                step_ends[i, : len(ep.turn_ends)] = torch.tensor(ep.turn_ends, dtype=torch.long)
        return RewardScores(
            rewards=returns,
            scored=torch.ones(len(episodes), dtype=torch.bool),
            per_function={"env": returns.tolist()},
            metrics=metrics,
            step_rewards=step_rewards,
            step_ends=step_ends,
        )
