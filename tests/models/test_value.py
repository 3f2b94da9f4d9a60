"""The value model: V(s_t) lines up with the policy's log-probs, separate vs shared bodies, no RNG draw."""

import pytest
import torch

from grpokit.models.tiny import build_char_tokenizer, build_tiny_model
from grpokit.models.value import ValueModel, build_value_model


@pytest.fixture(scope="module")
def policy():
    tokenizer = build_char_tokenizer("abcdef")
    return build_tiny_model(
        tokenizer, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, seed=0
    )


def randomise_head(value_model: ValueModel, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        value_model.head.weight.copy_(torch.randn(value_model.head.weight.shape, generator=generator))
        value_model.head.bias.fill_(0.3)


def test_head_is_zero_initialised_and_padding_is_zero(policy):
    value_model = build_value_model(policy)
    prompt_ids = torch.tensor([[4, 5, 6]])
    completion_ids = torch.tensor([[7, 8, 0]])
    values = value_model(
        prompt_ids, torch.ones_like(prompt_ids), completion_ids, torch.tensor([[1.0, 1.0, 0.0]])
    )
    assert values.shape == (1, 3) and values.dtype == torch.float32
    assert torch.equal(values, torch.zeros(1, 3))


def test_value_of_token_t_reads_the_state_before_it(policy):
    # V(s_t) must come from the hidden state at position P-1+t of prompt+completion: the position whose
    # logits predict completion token t (compute_logits_for_completion uses the same one).
    value_model = build_value_model(policy)
    randomise_head(value_model)
    prompt_ids = torch.tensor([[4, 5, 6]])  # P = 3
    completion_ids = torch.tensor([[7, 8, 9]])  # T = 3
    values = value_model(prompt_ids, torch.ones_like(prompt_ids), completion_ids, torch.ones(1, 3))
    full = torch.cat([prompt_ids, completion_ids], dim=1)  # (1, 6)
    with torch.no_grad():
        hidden = value_model.body(input_ids=full).last_hidden_state  # (1, 6, H)
        expected = value_model.head(hidden[:, 2:5]).squeeze(-1)  # positions P-1 .. P+T-2
    torch.testing.assert_close(values, expected, rtol=1e-5, atol=1e-6)


def test_values_do_not_depend_on_left_padding(policy):
    value_model = build_value_model(policy)
    randomise_head(value_model)
    alone = value_model(torch.tensor([[4, 5]]), torch.ones(1, 2), torch.tensor([[6, 7]]), torch.ones(1, 2))
    padded = value_model(
        torch.tensor([[0, 0, 4, 5], [4, 5, 6, 7]]),
        torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]]),
        torch.tensor([[6, 7], [8, 9]]),
        torch.ones(2, 2),
    )
    torch.testing.assert_close(padded[0], alone[0], rtol=1e-5, atol=1e-6)


def test_separate_value_model_copies_the_body(policy):
    value_model = build_value_model(policy)
    assert value_model.owned is value_model
    policy_params = {id(p) for p in policy.parameters()}
    assert not policy_params & {id(p) for p in value_model.parameters()}
    # Same weights at the start ("often the same size as the policy"): a copy, not a fresh network.
    for (name, a), b in zip(policy.base_model.named_parameters(), value_model.body.parameters()):
        assert torch.equal(a, b), name
    assert sum(p.numel() for p in value_model.parameters()) == sum(
        p.numel() for p in policy.base_model.parameters()
    ) + (policy.config.hidden_size + 1)


def test_shared_value_model_owns_only_the_head(policy):
    value_model = build_value_model(policy, shared=True)
    assert value_model.body is policy.base_model
    assert value_model.owned is value_model.head
    assert sum(p.numel() for p in value_model.owned.parameters()) == policy.config.hidden_size + 1


def test_building_draws_nothing_from_the_global_rng(policy):
    state = torch.get_rng_state()
    build_value_model(policy)
    build_value_model(policy, shared=True)
    assert torch.equal(torch.get_rng_state(), state)


def test_a_model_without_a_body_is_refused():
    with pytest.raises(ValueError, match="exposes no transformer body"):
        build_value_model(torch.nn.Linear(2, 2))


@pytest.mark.parametrize(
    ("prompt_ids", "completion_ids", "completion_mask", "message"),
    [
        (torch.tensor([4, 5]), torch.tensor([[6]]), torch.ones(1, 1), "must be 2-D"),
        (
            torch.tensor([[4, 5]]),
            torch.tensor([[6], [7]]),
            torch.ones(2, 1),
            "1 rows but completion_ids has 2",
        ),
        (torch.tensor([[4, 5]]), torch.tensor([[6, 7]]), torch.ones(1, 3), "completion_mask shape"),
        (torch.tensor([[4, 5]]), torch.zeros(1, 0, dtype=torch.long), torch.ones(1, 0), r"T = 0"),
    ],
)
def test_bad_inputs_are_named(policy, prompt_ids, completion_ids, completion_mask, message):
    value_model = build_value_model(policy)
    with pytest.raises(ValueError, match=message):
        value_model(prompt_ids, torch.ones_like(prompt_ids), completion_ids, completion_mask)
