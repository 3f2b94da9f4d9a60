"""Multi-turn episodes (trainers/episodes.py): token in, token out; the loss mask; tools; limits; grouping."""

from __future__ import annotations

import string
import time
from typing import Any

import pytest
import torch

from grpokit.agents import Environment, EnvStep
from grpokit.agents.chat import ChatRenderer, TemplateError
from grpokit.agents.tools import ToolCallError
from grpokit.config import EnvConfig
from grpokit.engine.parallel import DataParallel
from grpokit.rollout.base import Continuation
from grpokit.trainers.episodes import EpisodeRunner
from grpokit.trainers.phases import compute_advantages
from grpokit.trainers.sharding import ShardedSampler

# A compact chat template: user and tool messages on their own line, an assistant turn closed by EOS, and ">"
# as the generation prompt.
TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'assistant' %}{{ m['content'] }}{{ eos_token }}"
    "{% else %}{{ m['content'] }}\n{% endif %}{% endfor %}{% if add_generation_prompt %}>{% endif %}"
)
ALPHABET = string.ascii_letters + string.digits + string.punctuation + " \n"


@pytest.fixture(scope="module")
def tokenizer():
    from grpokit.models.tiny import build_char_tokenizer

    tok = build_char_tokenizer(ALPHABET)
    tok.chat_template = TEMPLATE
    return tok


class Echo(Environment):
    """Opens with the row's word; answers each turn with "more" twice, then ends; reward = 'a's in the turn."""

    def __init__(self, turns: int = 3):
        self.turns, self.seen = turns, 0

    def reset(self, row: dict[str, Any], seed: int) -> list[dict[str, Any]]:
        self.seen = 0
        self.reset_info = {"task": row["word"][0], "features": [float(len(row["word"]))]}
        return [{"role": "user", "content": row["word"]}]

    def step(self, message: dict[str, Any]) -> EnvStep:
        self.seen += 1
        reward = float(message["content"].count("a"))
        if self.seen >= self.turns:
            return EnvStep(reward=reward, terminated=True, info={"last": 1.0})
        return EnvStep(messages=[{"role": "user", "content": "more"}], reward=reward)


class Tooled(Echo):
    """Echo with a tool; the tool's behaviour is chosen by the row."""

    def __init__(self, mode: str = "ok"):
        super().__init__(turns=1)
        self.mode = mode
        self.tools = [self.add]

    def add(self, x: str) -> str:
        """Add one to a number.

        Args:
            x: the number, in digits.
        """
        if self.mode == "raise":
            raise RuntimeError("tool broke")
        if self.mode == "hang":
            time.sleep(5)
        return str(int(x) + 1)


class ScriptedSampler:
    """Returns scripted turns (text per call, per row) and records every prefix it was asked to continue."""

    def __init__(self, tokenizer, script: list[str]):
        self.tokenizer, self.script, self.calls = tokenizer, list(script), []
        self.stop_ids = [tokenizer.eos_token_id]

    def continue_from_ids(self, prefixes, temperatures, max_new_tokens=None):
        self.calls.append([list(p) for p in prefixes])
        text = self.script[min(len(self.calls) - 1, len(self.script) - 1)]
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
        out = [Continuation(ids[:max_new_tokens], [-0.5] * len(ids[:max_new_tokens]), len(ids) <= max_new_tokens)]
        return out * len(prefixes)

    def set_seed(self, seed):
        pass


def _runner(tokenizer, sampler, env_factory, max_new_tokens=16, **env) -> EpisodeRunner:
    env.setdefault("name", "test")
    sharded = ShardedSampler(sampler, DataParallel(), seed=0)
    return EpisodeRunner(
        env_factory, tokenizer, sharded, EnvConfig(**env), max_new_tokens=max_new_tokens, temperatures=torch.ones(2)
    )


def test_the_loss_mask_covers_exactly_the_sampled_tokens_across_turns(tokenizer):
    sampler = ScriptedSampler(tokenizer, ["aab", "ba", "a"])
    runner = _runner(tokenizer, sampler, Echo)
    batch, scores = runner.run([{"word": "ab"}, {"word": "cd"}], 2)
    renderer = ChatRenderer(tokenizer, [tokenizer.eos_token_id])
    eos = tokenizer.eos_token_id
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    more = renderer.between_turns([{"role": "user", "content": "more"}])
    expected = encode("aab") + [eos] + more + encode("ba") + [eos] + more + encode("a") + [eos]
    mask = [1] * 4 + [0] * len(more) + [1] * 3 + [0] * len(more) + [1] * 2
    for i in range(4):
        assert batch.completion_ids[i].tolist() == expected
        assert batch.loss_mask[i].tolist() == mask
        assert batch.completion_mask[i].tolist() == [1.0] * len(expected)
        assert batch.prompt_ids[i, -4:].tolist() == encode(["ab", "ab", "cd", "cd"][i] + "\n>")
    assert tokenizer.decode(more) == "more\n>"
    assert batch.group_ids.tolist() == [0, 0, 1, 1]
    assert scores.rewards.tolist() == [4.0] * 4  # 2 + 1 + 1 'a's over the three turns
    assert [m["role"] for m in batch.conversations[0]] == ["assistant", "user", "assistant", "user", "assistant"]
    assert batch.conversations[0][0] == {"role": "assistant", "content": "aab", "reward": 2.0}
    assert scores.metrics["env/turns_mean"] == 3 and scores.metrics["env/last"] == 1.0
    assert not batch.truncated.any()
    # The loss mask is what the trainer trains on: environment tokens get no loss and no KL.
    _, loss_mask = compute_advantages(batch, scores, _algorithm())
    assert torch.equal(loss_mask, batch.loss_mask)


def _algorithm():
    from grpokit.config import GRPOAlgorithmConfig

    return GRPOAlgorithmConfig(num_generations=2)


def test_token_ids_trained_on_are_the_sampled_ones_with_a_tokenizer_that_does_not_round_trip(tmp_path):
    """A real sampler on a BPE tokenizer: the batch holds the ids the sampler drew, although re-encoding
    their decoded text gives other ids."""
    from grpokit.models.tiny import build_tiny_model, train_bpe_tokenizer
    from grpokit.rollout import TransformersSampler

    corpus = ["more aab ab ba abba " * 20, "the quick brown fox " * 20, "hello world " * 20]
    tok = train_bpe_tokenizer(corpus, vocab_size=300)
    tok.chat_template = TEMPLATE
    model = build_tiny_model(tok, tmp_path, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
    recorded: list[tuple[list[int], list[int]]] = []  # (prefix, sampled ids) of every continuation

    class Recording(TransformersSampler):
        def continue_from_ids(self, prefixes, temperatures, max_new_tokens=None):
            turns = super().continue_from_ids(prefixes, temperatures, max_new_tokens)
            recorded.extend((list(p), t.token_ids) for p, t in zip(prefixes, turns))
            return turns

    sampler = Recording(model, tok, max_new_tokens=8, seed=3)
    runner = _runner(tok, sampler, lambda: Echo(turns=2))
    batch, _ = runner.run([{"word": "ab"}, {"word": "ba"}], 2)
    for i in range(4):
        prompt = batch.prompt_ids[i][batch.prompt_mask[i] > 0].tolist()
        completion = batch.completion_ids[i][batch.completion_mask[i] > 0].tolist()
        sequence = prompt + completion
        # The continuations sampled for this episode sit right after their prefixes, exactly as sampled...
        spans = [(len(p), ids) for p, ids in recorded if sequence[: len(p) + len(ids)] == p + ids]
        assert spans
        # ... and the loss mask is 1 on those positions and nowhere else.
        expected = torch.zeros(len(completion))
        for start, ids in spans:
            expected[start - len(prompt) : start - len(prompt) + len(ids)] = 1
        assert torch.equal(batch.loss_mask[i, : len(completion)], expected)
    turns = [ids for _, ids in recorded]
    # The sampled ids are kept although decode -> encode is not the identity on them.
    round_trip = [tok(tok.decode(ids), add_special_tokens=False)["input_ids"] for ids in turns]
    assert any(a != b for a, b in zip(round_trip, turns))
    # Log-probs of the sampled ids are where the ids are; 0 on environment tokens.
    assert torch.all(batch.sampler_logprobs[batch.loss_mask == 0] == 0)
    assert torch.all(batch.sampler_logprobs[batch.loss_mask > 0] < 0)


def test_tool_calls_run_and_their_results_are_context_not_loss(tokenizer):
    sampler = ScriptedSampler(tokenizer, ['[add(x="41")]', "42"])
    runner = _runner(tokenizer, sampler, Tooled, tool_call_parser="pythonic")
    batch, scores = runner.run([{"word": "ab"}], 2)
    conversation = batch.conversations[0]
    assert conversation[0]["tool_calls"] == [{"type": "function", "function": {"name": "add", "arguments": {"x": "41"}}}]
    assert conversation[0]["reward"] == 0.0
    assert conversation[1] == {"role": "tool", "name": "add", "content": "42"}
    assert conversation[2]["content"] == "42"
    text = tokenizer.decode(batch.completion_ids[0][batch.loss_mask[0] == 0].tolist())
    assert text == "42\n>"  # the tool's result and the next generation prompt, not trained on
    assert scores.metrics["env/tool_calls_mean"] == 1.0 and scores.metrics["env/tool_failures"] == 0.0


@pytest.mark.parametrize("mode", ["raise", "hang"])
def test_a_failing_tool_gets_the_fallback_and_the_episode_goes_on(tokenizer, mode):
    sampler = ScriptedSampler(tokenizer, ['[add(x="41")]', "a"])
    runner = _runner(tokenizer, sampler, lambda: Tooled(mode), tool_call_parser="pythonic", tool_timeout_s=0.5)
    batch, scores = runner.run([{"word": "ab"}], 2)
    reply = batch.conversations[0][1]
    assert reply["role"] == "tool" and reply["content"].startswith("error:") and reply["failed"]
    assert batch.conversations[0][2]["reward"] == 1.0  # the episode went on to its answer
    assert scores.rewards.tolist() == [1.0, 1.0]
    assert scores.metrics["env/tool_failures"] == 2.0


def test_a_failing_tool_stops_training_under_raise_naming_tool_and_episode(tokenizer):
    sampler = ScriptedSampler(tokenizer, ['[add(x="41")]'])
    runner = _runner(tokenizer, sampler, lambda: Tooled("raise"), tool_call_parser="pythonic", tool_failure="raise")
    with pytest.raises(ToolCallError, match=r"add.*41|41.*add") as info:
        runner.run([{"word": "ab"}], 2)
    assert "row 0" in str(info.value)


def test_limits_truncate_episodes(tokenizer):
    sampler = ScriptedSampler(tokenizer, ["ab"])
    batch, scores = _runner(tokenizer, sampler, lambda: Echo(turns=5), max_turns=2).run([{"word": "ab"}], 2)
    assert batch.truncated.all() and scores.metrics["env/turns_mean"] == 2
    # The context budget: the opening (3 tokens) and one turn (3) fit in 8, the next turn does not.
    sampler = ScriptedSampler(tokenizer, ["ab"])
    batch, _ = _runner(tokenizer, sampler, lambda: Echo(turns=5), max_total_tokens=8).run([{"word": "ab"}], 2)
    assert batch.truncated.all()
    assert int(batch.prompt_mask[0].sum() + batch.completion_mask[0].sum()) <= 8
    # A turn cut at max_new_tokens without a stop token ends its episode.
    sampler = ScriptedSampler(tokenizer, ["a" * 40])
    batch, scores = _runner(tokenizer, sampler, Echo).run([{"word": "ab"}], 2)
    assert batch.truncated.all() and scores.metrics["env/turns_mean"] == 1
    assert int(batch.loss_mask[0].sum()) == 16


def test_process_rewards_put_each_turns_reward_at_its_last_token(tokenizer):
    sampler = ScriptedSampler(tokenizer, ["aab", "b", "a"])
    batch, scores = _runner(tokenizer, sampler, Echo, reward_mode="process").run([{"word": "ab"}], 2)
    ends = scores.step_ends[0].tolist()
    assert scores.step_rewards[0].tolist() == [2.0, 0.0, 1.0]
    sampled = batch.loss_mask[0]
    eos = tokenizer.eos_token_id
    assert [batch.completion_ids[0, e].item() for e in ends] == [eos] * 3
    assert all(sampled[e] == 1 for e in ends)
    advantages, _ = compute_advantages(batch, scores, _algorithm())
    assert advantages.shape == batch.completion_ids.shape


def test_groupings_of_the_classic_rl_module(tokenizer):
    sampler = ScriptedSampler(tokenizer, ["a"])
    rows = [{"word": "ab"}, {"word": "ac"}, {"word": "ba"}]
    batch, _ = _runner(tokenizer, sampler, lambda: Echo(1), grouping="task").run(rows, 2)
    assert batch.group_ids.tolist() == [0, 0, 0, 0, 1, 1]  # task = the word's first letter
    batch, _ = _runner(tokenizer, sampler, lambda: Echo(1), grouping="batch").run(rows, 2)
    assert batch.group_ids.tolist() == [0] * 6


def test_a_template_that_cannot_render_a_turn_is_named(tokenizer):
    from grpokit.models.tiny import build_char_tokenizer

    tok = build_char_tokenizer(ALPHABET)
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(TemplateError, match="does not end an assistant turn with a stop token"):
        ChatRenderer(tok, [tok.eos_token_id]).between_turns([{"role": "user", "content": "x"}])
    tok.chat_template = TEMPLATE.replace("{% else %}", "{% elif m['role'] == 'tool' %}{{ raise_exception('no tools') }}{% else %}")
    with pytest.raises(TemplateError, match=r"cannot render the messages after a turn \(roles.*tool.*no tools"):
        ChatRenderer(tok, [tok.eos_token_id]).between_turns([{"role": "tool", "name": "f", "content": "x"}])
    plain = build_char_tokenizer(ALPHABET)
    with pytest.raises(TemplateError, match="has none"):
        ChatRenderer(plain, [plain.eos_token_id])


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"trainer": "ppo"}, "implemented for GRPO"),
        ({"rewards": {"reward_funcs": ["accuracy"]}}, "the environment gives the rewards"),
        ({"generation": {"async_rollouts": True}}, "async_rollouts does not run multi-turn"),
        ({"rewards": {"overlong_buffer_length": 4}}, "overlong_buffer_length"),
        ({"env": {"name": "x", "reward_mode": "process"}, "algorithm": {"advantage_estimator": "rloo"}}, "process"),
    ],
)
def test_what_multi_turn_episodes_do_not_run_with_is_refused_naming_the_field(sections, message):
    from grpokit.config import GRPOConfig, PPOConfig, build_config

    data = {"env": {"name": "x"}, **{k: v for k, v in sections.items() if k != "env"}}
    data["env"].update(sections.get("env", {}))
    cls = PPOConfig if sections.get("trainer") == "ppo" else GRPOConfig
    with pytest.raises(ValueError, match=message):
        build_config(cls, data)


def test_an_unknown_environment_fails_before_any_model_loads(make_config):
    from grpokit.trainers.grpo import GRPOTrainer

    with pytest.raises(ValueError, match="no_such_env"):
        GRPOTrainer(make_config(env={"name": "no_such_env"}, model={"name_or_path": "/does/not/exist"}))


class TRLStyle:
    """Written for TRL's environment_factory: reset(**row), public methods are tools, get_reward()."""

    def reset(self, **row):
        self.total = 0
        return " go"

    def add(self, x: int) -> str:
        """Add to the running total.

        Args:
            x: how much to add.
        """
        self.total += x
        return str(self.total)

    def get_reward(self) -> float:
        return float(self.total)


def test_a_trl_environment_class_runs_unchanged(tokenizer):
    from grpokit.agents.registry import environment_factory

    make_env = environment_factory(f"{__file__}:TRLStyle", {}, adapter="auto")
    sampler = ScriptedSampler(tokenizer, ['<tool_call>{"name": "add", "arguments": {"x": 2}}</tool_call>', "done"])
    batch, scores = _runner(tokenizer, sampler, make_env, max_new_tokens=80).run([{"prompt": "ab"}], 2)
    assert batch.prompts[0] == [{"role": "user", "content": "ab go"}]  # reset's text joins the prompt
    conversation = batch.conversations[0]
    assert conversation[1] == {"role": "tool", "name": "add", "content": "2"}
    assert scores.rewards.tolist() == [2.0, 2.0]  # get_reward() after the answer
    # An episode cut by a limit is scored by get_reward() too, as TRL scores every rollout.
    sampler = ScriptedSampler(tokenizer, ['<tool_call>{"name": "add", "arguments": {"x": 3}}</tool_call>'])
    batch, scores = _runner(tokenizer, sampler, make_env, max_new_tokens=80, max_turns=2).run([{"prompt": "ab"}], 2)
    assert batch.truncated.all() and scores.rewards.tolist() == [6.0, 6.0]
    assert batch.conversations[0][-2]["reward"] == 6.0


def test_similarity_and_key_groupings_read_the_reset_features(tokenizer):
    from grpokit.rl.grouping import key_grouping, register_grouping

    sampler = ScriptedSampler(tokenizer, ["a"])
    rows = [{"word": "ab"}, {"word": "abc"}, {"word": "abcd"}, {"word": "abcde"}]
    batch, _ = _runner(tokenizer, sampler, lambda: Echo(1), grouping="similarity",
                       grouping_kwargs={"num_clusters": 4}).run(rows, 2)  # fmt: skip
    assert batch.group_ids.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]  # features = the word's length
    register_grouping("test_long_words")(lambda: key_grouping(lambda e: bool(e.start_observation[0] > 3)))
    batch, _ = _runner(tokenizer, sampler, lambda: Echo(1), grouping="test_long_words").run(rows, 2)
    assert batch.group_ids.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]


def test_similarity_without_features_is_an_error(tokenizer):
    class Plain(Echo):
        def reset(self, row, seed):
            messages = super().reset(row, seed)
            self.reset_info = {}
            return messages

    sampler = ScriptedSampler(tokenizer, ["a"])
    with pytest.raises(ValueError, match="no features"):
        _runner(tokenizer, sampler, lambda: Plain(1), grouping="similarity").run([{"word": "ab"}], 2)


def test_an_environment_that_breaks_the_contract_is_named(tokenizer):
    class NoMessages(Echo):
        def reset(self, row, seed):
            return "just text"

    class NoStep(Echo):
        def step(self, message):
            return 1.0

    sampler = ScriptedSampler(tokenizer, ["a"])
    with pytest.raises(TypeError, match=r"NoMessages.reset\(row 0\) returned 'just text'; it must return"):
        _runner(tokenizer, sampler, NoMessages).run([{"word": "ab"}], 2)
    with pytest.raises(TypeError, match=r"NoStep.step \(row 0\) returned 1.0; it must return a grpokit.agents.EnvStep"):
        _runner(tokenizer, sampler, NoStep).run([{"word": "ab"}], 2)
