import os

# One OpenMP thread: on small machines two threads stall whenever another process wants a core.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from grpokit.config import GRPOConfig, build_config  # noqa: E402

torch.set_num_threads(1)

# Shared by the trainer and engine tests: a tiny saved model and a GRPO config around it.
ALPHABET = "abcdefgh "
PROMPTS = ["ab", "cd", "ef", "gh", "ba", "dc", "fe", "hg"]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A 2-layer, hidden-32 Qwen2 with a character tokenizer, saved like any Hub checkpoint."""
    from grpokit.models.tiny import build_char_tokenizer, build_tiny_model

    path = tmp_path_factory.mktemp("tiny")
    tokenizer = build_char_tokenizer(ALPHABET)
    build_tiny_model(tokenizer, path, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, seed=0)
    return path


@pytest.fixture
def make_config(tiny_model_dir, tmp_path):
    def make(**sections) -> GRPOConfig:
        data = {
            "max_steps": 3,
            "model": {"name_or_path": str(tiny_model_dir), "device": "cpu"},
            "data": {"prompts_per_step": 2, "shuffle": False},
            "generation": {"max_new_tokens": 6},
            "optim": {"learning_rate": 3e-3},
            "algorithm": {"num_generations": 4},
            "logging": {
                "output_dir": str(tmp_path / "runs"),
                "run_name": "run",
                "quiet": True,
                "report_to": [],
                "report": False,
            },
        }
        for section, values in sections.items():
            if isinstance(values, dict):
                data.setdefault(section, {}).update(values)
            else:
                data[section] = values
        return build_config(GRPOConfig, data)

    return make


@pytest.fixture
def rows():
    return [{"prompt": p} for p in PROMPTS]
