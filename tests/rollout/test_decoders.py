import pytest
import torch
from transformers import AutoModelForCausalLM, Qwen3Config

from grpokit.models import build_tiny_model, completion_logprobs
from grpokit.rollout import TransformersSampler
from grpokit.rollout.decoders import fast_decoder_unsupported_reason

PROMPTS = ["12+34=", "1+2=", "123+456=", "9="]
SIZES = dict(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64, seed=1,
             initializer_range=0.3)


def qwen3(tok):
    # head_dim 16 != hidden/heads, to catch a decoder that derives it from the hidden size
    config = Qwen3Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         head_dim=16, intermediate_size=64, initializer_range=0.3, vocab_size=len(tok))
    with torch.random.fork_rng():
        torch.manual_seed(1)
        return AutoModelForCausalLM.from_config(config).eval()


@pytest.fixture(params=["qwen2", "llama", "qwen3"])
def arch_model(request, tok):
    if request.param == "qwen3":
        return qwen3(tok)
    return build_tiny_model(tok, architecture=request.param, **SIZES).eval()


def test_fast_decoder_matches_the_model_forward(arch_model, tok):
    assert fast_decoder_unsupported_reason(arch_model, 64) is None
    kwargs = dict(max_new_tokens=12, temperature=1.5, seed=5)
    fast = TransformersSampler(arch_model, tok, decoder="fast", **kwargs).generate(PROMPTS, 4)
    slow = TransformersSampler(arch_model, tok, decoder="transformers", **kwargs).generate(PROMPTS, 4)
    # Same seed, same distributions up to rounding -> the same samples.
    assert torch.equal(fast.completion_ids, slow.completion_ids)
    torch.testing.assert_close(fast.sampler_logprobs, slow.sampler_logprobs, rtol=0, atol=1e-5)
    recomputed, _ = completion_logprobs(arch_model, fast.prompt_ids, fast.prompt_mask, fast.completion_ids,
                                        fast.completion_mask, temperature=fast.temperatures)
    torch.testing.assert_close(fast.sampler_logprobs, recomputed, rtol=0, atol=1e-5)


def test_unsupported_models_fall_back(tok):
    from peft import LoraConfig, get_peft_model

    model = build_tiny_model(tok, **SIZES)
    lora = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    assert "not a plain" in fast_decoder_unsupported_reason(lora, 64)
    assert "LoRA" in fast_decoder_unsupported_reason(lora.base_model.model, 64)
    with pytest.raises(ValueError, match="decoder='fast' cannot decode this model"):
        TransformersSampler(lora, tok, decoder="fast", max_new_tokens=2).generate(["1="], 1)
    batch = TransformersSampler(lora, tok, max_new_tokens=3).generate(["1="], 2)  # "auto" falls back
    assert batch.completion_ids.shape[0] == 2

    model.config.hidden_act = "gelu"
    assert "hidden_act" in fast_decoder_unsupported_reason(model, 64)


def test_fast_decoder_under_autocast(arch_model, tok):
    sampler = TransformersSampler(arch_model, tok, decoder="fast", max_new_tokens=10, seed=5,
                                  autocast_dtype=torch.bfloat16)
    batch = sampler.generate(PROMPTS, 2)
    inputs = (batch.prompt_ids, batch.prompt_mask, batch.completion_ids, batch.completion_mask)
    with torch.no_grad():
        exact, _ = completion_logprobs(arch_model, *inputs)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed, _ = completion_logprobs(arch_model, *inputs)
    # The decode step really ran in bf16 (it differs from float32 by more than float32 rounding), and it is
    # within bf16 rounding of transformers' forward under the same autocast: at most twice as far as bf16
    # moves that forward from float32 (0.05-0.14 with these deliberately large random weights; the decoder
    # keeps attention in float32, transformers does not). A wrong RoPE, mask or cache is off by > 1.
    bf16_effect = (mixed - exact).abs().max()
    assert (batch.sampler_logprobs - exact).abs().max() > 1e-4
    assert (batch.sampler_logprobs - mixed).abs().max() <= 2 * bf16_effect
    with pytest.raises(ValueError, match="autocast_dtype must be a torch.dtype"):
        TransformersSampler(arch_model, tok, autocast_dtype="bf16")


def test_the_cache_goes_under_the_keyword_the_models_forward_declares(tok):
    import inspect

    from peft import LoraConfig, get_peft_model

    from grpokit.rollout.decoders import HFDecoder, cache_keyword

    model = build_tiny_model(tok, **SIZES)
    declared = "cache" if "cache" in inspect.signature(type(model).forward).parameters else "past_key_values"
    assert cache_keyword(model) == declared
    # A PEFT wrapper's forward takes **kwargs: the keyword is that of the model it wraps.
    assert cache_keyword(get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))) == declared

    class OlderModel(torch.nn.Module):  # a forward written for transformers before the rename
        def forward(self, input_ids=None, past_key_values=None, use_cache=None, **kwargs):
            return None

    assert cache_keyword(OlderModel()) == "past_key_values"
    assert HFDecoder(OlderModel()).cache_keyword == "past_key_values"
