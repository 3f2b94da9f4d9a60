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
from grpokit.models.tiny import CHAR_CHAT_TEMPLATE, build_char_tokenizer, build_tiny_model
from grpokit.trainers.sft import SupervisedTrainer, TokenExample, conversation_example


@pytest.fixture(scope="module")
def tokenizer():
    tokenizer = build_char_tokenizer(ALPHABET)
    tokenizer.chat_template = CHAR_CHAT_TEMPLATE
    return tokenizer


def _ids(tokenizer, messages, **kwargs):
    return list(tokenizer.apply_chat_template(messages, tokenize=True, **kwargs)["input_ids"])


class _Renderer:
    """Rendering differences through the chat template, as the episode runner computes them."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def opening(self, messages):
        return _ids(self.tokenizer, messages, add_generation_prompt=True)

    def between_turns(self, messages):
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        before = _ids(self.tokenizer, messages[: last + 1])
        after = _ids(self.tokenizer, messages, add_generation_prompt=True)
        assert after[: len(before)] == before
        return after[len(before) :]


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
    renderer = _Renderer(tokenizer)
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
        conversation_example(_Renderer(tokenizer), tokenizer, [{"role": "user", "content": "1"}], 2)


def test_the_warm_up_loss_is_the_mean_log_likelihood_of_the_trained_tokens_only(tokenizer):
    from grpokit.models.logprobs import completion_logprobs

    model = build_tiny_model(tokenizer, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)
    # Two examples, env tokens (mask 0) in the middle of each completion.
    examples = [TokenExample([5, 6], [7, 8, 9, 2], [1, 0, 0, 1]), TokenExample([6], [9, 9, 2], [0, 1, 1])]
    trainer = SupervisedTrainer(model, tokenizer, examples, learning_rate=1e-3, batch_size=2, seed=0)
    rows = torch.randint(2, (2,), generator=torch.Generator().manual_seed(0)).tolist()
    expected = []
    with torch.no_grad():
        for i in rows:
            e = examples[i]
            logprobs, _ = completion_logprobs(
                model, torch.tensor([e.prompt_ids]), torch.ones(1, len(e.prompt_ids)),
                torch.tensor([e.completion_ids]), torch.ones(1, len(e.completion_ids)),
            )  # fmt: skip
            mask = torch.tensor(e.loss_mask, dtype=torch.float)
            expected.append(-(logprobs[0] * mask).sum() / mask.sum())
            everything = -logprobs[0].mean()
            assert not torch.isclose(everything, expected[-1])  # the mask matters here
    assert trainer.step() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-5)


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
    renderer = _Renderer(tokenizer)
    teacher = CalculatorTeacher(tool_rate=1.0)
    examples = [
        conversation_example(renderer, tokenizer, teacher.episode(row, i).messages, tokenizer.eos_token_id)
        for i, row in enumerate(CalculatorEnv.make_rows(16, seed=0))
    ]
    model = build_tiny_model(tokenizer, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    trainer = SupervisedTrainer(model, tokenizer, examples, learning_rate=1e-2, batch_size=16, seed=0)
    losses = [trainer.step() for _ in range(40)]
    assert losses[-1] < 0.5 * losses[0]
