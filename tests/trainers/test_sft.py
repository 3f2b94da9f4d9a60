import copy

import pytest
import torch

from grpokit.trainers.sft import SupervisedTrainer, supervised_finetune


def test_warmup_learns_the_demonstrations(tmp_path):
    from grpokit.models.logprobs import completion_logprobs
    from grpokit.models.tiny import build_char_tokenizer, build_tiny_model

    tokenizer = build_char_tokenizer("abc=")
    model = build_tiny_model(tokenizer, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    examples = [("a=", "bb"), ("b=", "cc")]
    losses = supervised_finetune(model, tokenizer, examples, steps=60, learning_rate=1e-2, batch_size=4)
    assert losses[-1] < 0.1 < losses[0]
    # The completion (with EOS) is now the likely continuation of its prompt.
    ids = tokenizer("a=")["input_ids"]
    completion = tokenizer("bb", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    with torch.no_grad():
        logprobs, _ = completion_logprobs(
            model,
            torch.tensor([ids]),
            torch.ones(1, len(ids)),
            torch.tensor([completion]),
            torch.ones(1, len(completion)),
        )
    assert logprobs.sum().exp() > 0.8


def test_warmup_rejects_empty_data():
    with pytest.raises(ValueError, match="at least one"):
        supervised_finetune(None, None, [], steps=1, learning_rate=1.0, batch_size=1)


def _tiny(seed=0):
    from grpokit.models.tiny import build_char_tokenizer, build_tiny_model

    tokenizer = build_char_tokenizer("abc=")
    model = build_tiny_model(
        tokenizer, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, seed=seed
    )
    return model, tokenizer


EXAMPLES = [("a=", "bb"), ("b=", "cc"), ("c=", "a")]


def test_learning_rate_is_constant_without_total_steps_and_decays_with_them():
    model, tokenizer = _tiny()
    constant = SupervisedTrainer(model, tokenizer, EXAMPLES, learning_rate=1e-3, batch_size=2)
    decaying = SupervisedTrainer(model, tokenizer, EXAMPLES, learning_rate=1e-3, batch_size=2, total_steps=4)
    rates = []
    for _ in range(3):
        constant.step()
        decaying.step()
        rates.append((constant.optimizer.param_groups[0]["lr"], decaying.optimizer.param_groups[0]["lr"]))
    # linear decay 1 - s/4 after s steps: 0.75, 0.5, 0.25 of 1e-3
    assert rates == [(1e-3, 7.5e-4), (1e-3, 5e-4), (1e-3, 2.5e-4)]


def test_state_dict_round_trip_gives_the_same_next_steps():
    model, tokenizer = _tiny()
    trainer = SupervisedTrainer(model, tokenizer, EXAMPLES, learning_rate=1e-2, batch_size=2, seed=3)
    for _ in range(3):
        trainer.step()
    state = copy.deepcopy(trainer.state_dict())
    weights = copy.deepcopy(model.state_dict())
    expected = [trainer.step() for _ in range(3)]

    model.load_state_dict(weights)
    resumed = SupervisedTrainer(model, tokenizer, EXAMPLES, learning_rate=1e-2, batch_size=2, seed=99)
    resumed.load_state_dict(state)
    assert resumed.steps_done == 3
    assert [resumed.step() for _ in range(3)] == expected


def test_continue_from_keeps_the_moments_and_rng_but_not_the_rate():
    model, tokenizer = _tiny()
    first = SupervisedTrainer(model, tokenizer, EXAMPLES, learning_rate=1e-2, batch_size=2, total_steps=3)
    for _ in range(3):
        first.step()
    assert first.optimizer.param_groups[0]["lr"] == 0.0  # decayed to 0
    state = first.state_dict()
    second = SupervisedTrainer(model, tokenizer, EXAMPLES, learning_rate=5e-3, batch_size=2, seed=7)
    second.continue_from(state)
    group = second.optimizer.param_groups[0]
    assert (group["lr"], group["initial_lr"]) == (5e-3, 5e-3) and second.steps_done == 0
    param = next(model.parameters())
    assert torch.equal(second.optimizer.state[param]["exp_avg"], first.optimizer.state[param]["exp_avg"])
    assert torch.equal(second.generator.get_state(), first.generator.get_state())
    second.step()
    assert second.optimizer.state[param]["step"] == 4  # Adam's bias correction continues from step 3


def test_bad_arguments_name_themselves():
    model, tokenizer = _tiny()
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        SupervisedTrainer(model, tokenizer, EXAMPLES, learning_rate=1e-3, batch_size=0)
    with pytest.raises(ValueError, match="learning_rate must be > 0"):
        SupervisedTrainer(model, tokenizer, EXAMPLES, learning_rate=0.0, batch_size=1)
    with pytest.raises(ValueError, match="total_steps must be >= 0"):
        SupervisedTrainer(model, tokenizer, EXAMPLES, learning_rate=1e-3, batch_size=1, total_steps=-1)
    with pytest.raises(ValueError, match="steps must be >= 0"):
        supervised_finetune(model, tokenizer, EXAMPLES, steps=-1, learning_rate=1e-3, batch_size=1)
