"""A training run calls transformers and torch the way their current versions expect: no warnings from them.

Deprecation warnings (e.g. transformers 5.x's ``past_key_values is deprecated ... Use cache instead``) are
printed on every run otherwise, and turn into errors when the old name is removed.
"""

import inspect
import warnings

import pytest
import torch
from transformers import AutoModelForCausalLM

from grpokit.trainers.grpo import GRPOTrainer

LIBRARIES = ("transformers", "torch", "peft", "accelerate", "tokenizers", "safetensors")
# Warnings that one library's call into another raises, which grpokit cannot avoid by calling differently, are
# filtered where grpokit makes that call (peft's get_peft_model in models/lora.py), so none is expected here.
NOT_OURS: tuple[str, ...] = ()


def fraction_of_a(prompts, completions, **columns):
    return [c.count("a") / max(len(c), 1) for c in completions]


def library_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    """The warnings whose source file is inside one of LIBRARIES (shown as ``file:line: Category: message``)."""
    found = []
    for w in caught:
        parts = w.filename.replace("\\", "/").split("/")
        if any(name in parts for name in LIBRARIES) and not any(text in str(w.message) for text in NOT_OURS):
            found.append(f"{w.filename}:{w.lineno}: {w.category.__name__}: {w.message}")
    return found


@pytest.mark.parametrize("lora", [0, 4], ids=["full", "lora"])
def test_training_run_raises_no_library_warning(make_config, rows, lora):
    """Full fine-tuning samples with the lean decoder (its prefill is the model's forward); LoRA's PEFT wrapper
    samples with the model's own forward at every step."""
    config = make_config(max_steps=2, model={"lora": {"r": lora}})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = GRPOTrainer(config, reward_funcs=[fraction_of_a], dataset=rows)
        trainer.train()
    assert library_warnings(caught) == []


@pytest.mark.parametrize("decoder", ["transformers", "fast"])
def test_sampler_raises_no_library_warning(tiny_model_dir, decoder):
    from grpokit.models.loading import load_tokenizer
    from grpokit.rollout.transformers_sampler import TransformersSampler

    tokenizer = load_tokenizer(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    sampler = TransformersSampler(model, tokenizer, max_new_tokens=6, decoder=decoder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sampler.generate(["ab", "cdef"], num_generations=3)
    assert library_warnings(caught) == []


def test_the_check_sees_a_library_warning(tiny_model_dir):
    """The filter above catches the deprecated call it guards against (so an empty list means none)."""
    from transformers import DynamicCache

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    if "past_key_values" in inspect.signature(type(model).forward).parameters:
        pytest.skip("this transformers still takes past_key_values without a warning")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model(
            input_ids=torch.tensor([[1, 2]]),
            past_key_values=DynamicCache(config=model.config),
            use_cache=True,
        )
    assert any("past_key_values" in line for line in library_warnings(caught))
