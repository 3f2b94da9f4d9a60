import pytest
import torch

from grpokit.config import RewardConfig
from grpokit.rewards import RewardPipeline
from grpokit.rewards.reward_model import RewardModel


@pytest.fixture(scope="module")
def reward_model_dir(tmp_path_factory):
    from transformers import AutoModelForSequenceClassification, Qwen2Config

    from grpokit.models.tiny import build_char_tokenizer

    path = tmp_path_factory.mktemp("rm")
    tokenizer = build_char_tokenizer("abc0123456789+= ", path)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=32,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(path)
    return path


def test_score_is_logit_zero_and_independent_of_batch(reward_model_dir):
    rm = RewardModel(reward_model_dir, batch_size=8)
    prompts, completions = ["1+1=", "12+30=", "a"], ["2", "42 ", "bcbcbc"]
    batched = rm(prompts, completions)
    alone = [rm([p], [c])[0] for p, c in zip(prompts, completions)]
    torch.testing.assert_close(torch.tensor(batched), torch.tensor(alone), rtol=1e-5, atol=1e-6)
    enc = rm.tokenizer(["1+1=2"], return_tensors="pt")
    with torch.no_grad():
        direct = rm.model(**enc).logits[0, 0].item()
    assert batched[0] == pytest.approx(direct, rel=1e-5)
    assert len(set(batched)) == 3  # distinct inputs give distinct scores: the model is really consulted


def test_reward_model_from_config_is_added_after_functions(reward_model_dir, make_batch):
    pipeline = RewardPipeline.from_config(
        RewardConfig(
            reward_funcs=["length_penalty"], reward_model=str(reward_model_dir), reward_weights=[0.0, 2.0]
        )
    )
    assert pipeline.names == ["length_penalty", "reward_model"]
    batch = make_batch(["1+1="], ["2"])
    expected = 2.0 * pipeline.functions[1](["1+1="], ["2"])[0]
    assert pipeline.score(batch).rewards.item() == pytest.approx(expected, rel=1e-6)


def test_missing_reward_model_dir_is_named(tmp_path):
    with pytest.raises(ValueError, match="reward_model .*nope.* is not a local model directory"):
        RewardModel(tmp_path / "nope")


def test_reward_center_and_scale_in_the_config_normalise_every_score(reward_model_dir, tmp_path, make_batch):
    import json
    import shutil

    normalised = tmp_path / "normalised"
    shutil.copytree(reward_model_dir, normalised)
    config = json.loads((normalised / "config.json").read_text())
    config |= {"reward_center": 0.25, "reward_scale": 4.0}
    (normalised / "config.json").write_text(json.dumps(config))
    prompts, completions = ["1+1=", "12+30="], ["2", "42 "]
    raw = RewardModel(reward_model_dir)(prompts, completions)
    rm = RewardModel(normalised)
    assert rm.normalization == (0.25, 4.0)
    assert rm(prompts, completions) == pytest.approx([(r - 0.25) / 4.0 for r in raw], rel=1e-6)
    # The pipeline GRPO and PPO score with sees the normalised value.
    pipeline = RewardPipeline.from_config(RewardConfig(reward_model=str(normalised)))
    score = pipeline.score(make_batch(["1+1="], ["2"])).rewards.item()
    assert score == pytest.approx((raw[0] - 0.25) / 4.0, rel=1e-6)


def test_reward_text_is_one_layout_for_text_and_chat():
    from grpokit.rewards.reward_model import reward_text

    class Template:
        def apply_chat_template(self, messages, tokenize):
            assert tokenize is False
            return "|".join(f"{m['role']}:{m['content']}" for m in messages)

    user = [{"role": "user", "content": "q"}]
    assert reward_text(Template(), None, "whole text") == "whole text"
    assert reward_text(Template(), "q ", "a") == "q a"
    assert reward_text(Template(), user, "a") == "user:q|assistant:a"
    assert reward_text(Template(), None, [*user, {"role": "assistant", "content": "a"}]) == "user:q|assistant:a"
    with pytest.raises(ValueError, match="text prompt cannot be followed by chat messages"):
        reward_text(Template(), "q", user)
