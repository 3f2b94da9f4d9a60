import pytest
import torch

from grpokit.models import build_char_tokenizer, build_tiny_model, load_model, load_tokenizer, resolve_dtype


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    tok = build_char_tokenizer("0123456789+=")
    build_tiny_model(tok, path, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    return path


def test_load_model_and_dtype(model_dir):
    model = load_model(model_dir)
    assert next(model.parameters()).dtype == torch.float32
    bf16 = load_model(model_dir, dtype="bfloat16")
    assert next(bf16.parameters()).dtype == torch.bfloat16


def test_resolve_dtype():
    assert resolve_dtype("float32") is torch.float32
    assert resolve_dtype("bf16") is torch.bfloat16
    assert resolve_dtype("auto") == "auto"
    with pytest.raises(ValueError, match="dtype must be one of"):
        resolve_dtype("float64")


def test_load_model_errors_name_the_path(tmp_path, model_dir):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="nope"):
        load_model(missing)
    with pytest.raises(ValueError, match="no config.json"):
        load_model(tmp_path)
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((model_dir / "config.json").read_text())
    (no_weights / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(ValueError, match=r"no \*\.safetensors.*pytorch_model\.bin"):
        load_model(no_weights)


def test_load_tokenizer_sets_left_padding_and_falls_back_to_eos(tmp_path):
    tok = build_char_tokenizer("ab")
    tok.padding_side = "right"
    tok.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded.padding_side == "left" and loaded.pad_token_id == 0

    tok._pad_token = None
    tok.pad_token = None
    tok.save_pretrained(tmp_path / "nopad")
    loaded = load_tokenizer(tmp_path / "nopad")
    assert loaded.pad_token == "<eos>"


def test_load_tokenizer_missing_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        load_tokenizer(tmp_path / "missing")
