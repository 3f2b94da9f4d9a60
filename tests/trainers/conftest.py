import pytest

from grpokit.config import GRPOConfig, build_config

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
                "report_to": [], "report": False,
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
