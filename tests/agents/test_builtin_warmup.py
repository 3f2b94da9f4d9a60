"""The demo's chat template and the multi-turn warm-up's token layout and loss."""

import pytest
import torch

from grpokit.agents.builtin import (
    ALPHABET,
    CalculatorEnv,
    CalculatorTeacher,
    GuessNumberEnv,
    GuessNumberTeacher,
)
from grpokit.agents.chat import ChatRenderer
from grpokit.models.tiny import CHAR_CHAT_TEMPLATE, build_char_tokenizer, build_tiny_model
from grpokit.trainers.sft import SupervisedTrainer, TokenExample, conversation_example


@pytest.fixture(scope="module")
def tokenizer():
    tokenizer = build_char_tokenizer(ALPHABET)
    tokenizer.chat_template = CHAR_CHAT_TEMPLATE
    return tokenizer


def _ids(tokenizer, messages, **kwargs):
    return list(tokenizer.apply_chat_template(messages, tokenize=True, **kwargs)["input_ids"])


def _conversations():
    calculator, guess = CalculatorTeacher(tool_rate=0.5), GuessNumberTeacher()
    calc_rows, guess_rows = CalculatorEnv.make_rows(20, seed=0), GuessNumberEnv.make_rows(20, seed=0)
    return [calculator.episode(r, i).messages for i, r in enumerate(calc_rows)] + [
        guess.episode(r, i).messages for i, r in enumerate(guess_rows)
    ]


def test_the_template_writes_contents_with_newlines_and_assistant_turns_with_eos(tokenizer):
    messages = [
        {"role": "user", "content": "347*26="},
        {
            "role": "assistant",
            "content": '[calc(x="347*26")]',
            "tool_calls": [{"function": {"name": "calc"}}],
        },
        {"role": "tool", "name": "calc", "content": "9022"},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == '347*26=\n[calc(x="347*26")]<eos>9022\n'
    ids = _ids(tokenizer, messages[:2])
    assert ids[-1] == tokenizer.eos_token_id and tokenizer.unk_token_id not in ids


@pytest.mark.parametrize(
    "new", [[{"role": "tool", "name": "calc", "content": "9022"}], [{"role": "user", "content": "higher"}]]
)
def test_a_rendered_turn_is_a_prefix_of_the_rendering_with_new_messages(tokenizer, new):
    history = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
    before = _ids(tokenizer, history)
    after = _ids(tokenizer, history + new, add_generation_prompt=True)
    assert before[-1] == tokenizer.eos_token_id
    assert after[: len(before)] == before and len(after) > len(before)
    content = tokenizer(new[0]["content"], add_special_tokens=False)["input_ids"]
    assert after[len(before) :] == content + tokenizer("\n", add_special_tokens=False)["input_ids"]


def test_the_template_survives_saving(tokenizer, tmp_path):
    from transformers import AutoTokenizer

    tokenizer.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path).chat_template == CHAR_CHAT_TEMPLATE


def test_a_conversation_is_laid_out_as_its_rendering_with_only_assistant_turns_trained(tokenizer):
    renderer = ChatRenderer(tokenizer, [tokenizer.eos_token_id])
    eos = tokenizer.eos_token_id
    for messages in _conversations():
        example = conversation_example(renderer, tokenizer, messages, eos)
        # With this template the episode's tokens are the whole conversation's rendering...
        assert example.prompt_ids + example.completion_ids == _ids(tokenizer, messages)
        assert example.prompt_ids == _ids(tokenizer, messages[:1], add_generation_prompt=True)
        # ...and the trained tokens are exactly the assistant turns, each with its EOS.
        trained = [t for t, m in zip(example.completion_ids, example.loss_mask) if m]
        turns = [m["content"] for m in messages if m["role"] == "assistant"]
        assert tokenizer.decode(trained) == "<eos>".join(turns) + "<eos>"
        assert trained.count(eos) == len(turns)
        untrained = [t for t, m in zip(example.completion_ids, example.loss_mask) if not m]
        others = [m["content"] + "\n" for m in messages[1:] if m["role"] != "assistant"]
        assert tokenizer.decode(untrained) == "".join(others)


def test_a_conversation_without_an_assistant_turn_is_refused(tokenizer):
    with pytest.raises(ValueError, match="without an assistant turn"):
        conversation_example(ChatRenderer(tokenizer, [2]), tokenizer, [{"role": "user", "content": "1"}], 2)


@pytest.mark.parametrize("reduction", ["sequence_mean", "token_mean"])
def test_the_warm_up_loss_is_the_mean_log_likelihood_of_the_trained_tokens_only(tokenizer, reduction):
    from grpokit.models.logprobs import completion_logprobs

    model = build_tiny_model(tokenizer, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)
    # Two examples, env tokens (mask 0) in the middle of the first; 2 and 3 trained tokens.
    examples = [
        TokenExample([5, 6], [7, 8, 9, 2], [1, 0, 0, 1]),
        TokenExample([6], [9, 9, 9, 2], [0, 1, 1, 1]),
    ]
    trainer = SupervisedTrainer(
        model, tokenizer, examples, learning_rate=1e-3, batch_size=2, seed=0, loss_reduction=reduction
    )
    rows = torch.randint(2, (2,), generator=torch.Generator().manual_seed(0)).tolist()
    assert sorted(rows) == [0, 1]  # one of each, so that the two reductions differ
    sums, counts = [], []
    with torch.no_grad():
        for i in rows:
            e = examples[i]
            logprobs, _ = completion_logprobs(
                model, torch.tensor([e.prompt_ids]), torch.ones(1, len(e.prompt_ids)),
                torch.tensor([e.completion_ids]), torch.ones(1, len(e.completion_ids)),
            )  # fmt: skip
            mask = torch.tensor(e.loss_mask, dtype=torch.float)
            sums.append(-(logprobs[0] * mask).sum())
            counts.append(mask.sum())
            assert not torch.isclose(-logprobs[0].mean(), sums[-1] / counts[-1])  # the mask matters here
    sequence_mean = torch.stack([s / c for s, c in zip(sums, counts)]).mean().item()
    token_mean = (sum(sums) / sum(counts)).item()
    assert sequence_mean != pytest.approx(token_mean, rel=1e-3)
    expected = token_mean if reduction == "token_mean" else sequence_mean
    assert trainer.step() == pytest.approx(expected, rel=1e-5)


def test_token_examples_are_checked_and_not_mixed_with_text_pairs(tokenizer):
    with pytest.raises(ValueError, match="loss_mask"):
        TokenExample([1], [2, 3], [1])
    with pytest.raises(ValueError, match="trains no token"):
        TokenExample([1], [2, 3], [0, 0])
    with pytest.raises(ValueError, match="mixes"):
        SupervisedTrainer(
            None, tokenizer, [TokenExample([1], [2], [1]), ("a", "b")], learning_rate=1.0, batch_size=1
        )


def test_imitating_conversations_raises_the_likelihood_of_the_teacher_turns(tokenizer):
    renderer = ChatRenderer(tokenizer, [tokenizer.eos_token_id])
    teacher = CalculatorTeacher(tool_rate=1.0)
    examples = [
        conversation_example(renderer, tokenizer, teacher.episode(row, i).messages, tokenizer.eos_token_id)
        for i, row in enumerate(CalculatorEnv.make_rows(16, seed=0))
    ]
    model = build_tiny_model(tokenizer, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    trainer = SupervisedTrainer(model, tokenizer, examples, learning_rate=1e-2, batch_size=16, seed=0)
    losses = [trainer.step() for _ in range(40)]
    assert losses[-1] < 0.5 * losses[0]


class _Replay:
    """A turn sampler that writes the given turns, one per call (one episode at a time)."""

    def __init__(self, tokenizer, turns):
        self.tokenizer, self.turns, self.stop_ids = tokenizer, list(turns), [tokenizer.eos_token_id]

    def continue_from_ids(self, prefixes, temperatures, max_new_tokens=None):
        from grpokit.rollout.base import Continuation

        ids = self.tokenizer(self.turns.pop(0), add_special_tokens=False)["input_ids"] + self.stop_ids
        return [Continuation(ids, [-1.0] * len(ids), True)]

    def set_seed(self, seed):
        pass


@pytest.mark.parametrize("env_name", ["calculator", "guess_number"])
def test_the_warm_up_layout_is_the_episode_runners_for_the_same_turns(tokenizer, env_name):
    """The teacher's conversations, replayed by the trainer's episode runner in the real environment, give
    the same tokens, loss mask and conversation as the warm-up's layout of them."""
    from grpokit.agents.registry import environment_factory
    from grpokit.config import EnvConfig
    from grpokit.engine.parallel import DataParallel
    from grpokit.trainers.episodes import EpisodeRunner
    from grpokit.trainers.sharding import ShardedSampler

    env_cls, teacher = (
        (CalculatorEnv, CalculatorTeacher(tool_rate=0.5))
        if env_name == "calculator"
        else (GuessNumberEnv, GuessNumberTeacher())
    )
    renderer = ChatRenderer(tokenizer, [tokenizer.eos_token_id])
    for i, row in enumerate(env_cls.make_rows(12, seed=0)):
        messages = teacher.episode(row, seed=i).messages
        turns = [m["content"] for m in messages if m["role"] == "assistant"]
        config = EnvConfig(name=env_name, tool_call_parser="pythonic")
        runner = EpisodeRunner(
            environment_factory(env_name, {}), tokenizer, ShardedSampler(_Replay(tokenizer, turns), DataParallel(), seed=0),
            config, max_new_tokens=32, temperatures=torch.ones(1),
        )  # fmt: skip
        batch, scores = runner.run([row], 1)
        example = conversation_example(renderer, tokenizer, messages, tokenizer.eos_token_id)
        n = int(batch.completion_mask[0].sum())
        assert batch.prompt_ids[0][batch.prompt_mask[0] > 0].tolist() == example.prompt_ids
        assert batch.completion_ids[0, :n].tolist() == example.completion_ids
        assert batch.loss_mask[0, :n].tolist() == example.loss_mask
        played = [{k: v for k, v in m.items() if k != "reward"} for m in batch.conversations[0]]
        assert played == messages[1:]
        assert scores.rewards.tolist() == [teacher.episode(row, seed=i).reward]
