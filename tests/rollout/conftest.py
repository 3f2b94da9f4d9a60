import pytest

from grpokit.models import build_char_tokenizer, build_tiny_model


@pytest.fixture(scope="session")
def tok():
    return build_char_tokenizer("0123456789+=")


@pytest.fixture(scope="session")
def model(tok):
    # A large init range makes the random model's next-token distributions peaked and varied, so greedy
    # outputs differ between prompts and EOS is sampled now and then.
    return build_tiny_model(tok, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                            intermediate_size=64, seed=0, initializer_range=0.3).eval()
