import pytest
import torch

from grpokit.trainers.sft import supervised_finetune


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
