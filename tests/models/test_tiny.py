import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from grpokit.models import build_char_tokenizer, build_tiny_model, qwen2_reference_config, train_bpe_tokenizer
from grpokit.models.tiny import SPECIAL_TOKENS


def test_char_tokenizer_roundtrip_and_special_ids():
    tok = build_char_tokenizer("0123456789+= \n")
    assert [tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id] == [0, 1, 2, 3]
    assert len(tok) == len(SPECIAL_TOKENS) + 14
    text = "12 + 3\n=45"
    ids = tok(text)["input_ids"]
    assert len(ids) == len(text)  # one token per character, no BOS added
    assert tok.decode(ids) == text
    assert tok.decode(ids + [tok.eos_token_id, tok.pad_token_id], skip_special_tokens=True) == text
    assert tok("x")["input_ids"] == [tok.unk_token_id]


def test_char_tokenizer_pads_left_and_reloads(tmp_path):
    tok = build_char_tokenizer("0123456789+=", path=tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again.padding_side == "left"
    batch = again(["1+2=", "12+34="], padding=True)
    assert batch["input_ids"][0] == [0, 0] + tok("1+2=")["input_ids"]
    assert batch["attention_mask"][0] == [0, 0, 1, 1, 1, 1]


def test_char_tokenizer_rejects_empty_alphabet():
    with pytest.raises(ValueError, match="alphabet"):
        build_char_tokenizer("")


def test_bpe_tokenizer_trains_offline_and_roundtrips(tmp_path):
    texts = [f"the number {i} plus {i * 7} is {i * 8}" for i in range(200)]
    tok = train_bpe_tokenizer(texts, vocab_size=300, path=tmp_path)
    assert len(tok) == 300
    assert tok.convert_ids_to_tokens([0, 1, 2, 3]) == list(SPECIAL_TOKENS)
    text = "the number 12 plus 84 is 96, é!"  # unseen characters still encode (byte level)
    assert tok.decode(tok(text)["input_ids"]) == text
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(text)["input_ids"] == tok(text)["input_ids"]
    # Merges were learnt: a frequent word (with its leading space) is one token.
    assert len(tok(" number")["input_ids"]) == 1


def test_bpe_tokenizer_rejects_too_small_vocab():
    with pytest.raises(ValueError, match="vocab_size"):
        train_bpe_tokenizer(["abc"], vocab_size=100)


@pytest.mark.parametrize("architecture", ["qwen2", "llama"])
def test_tiny_model_is_seeded_and_saves_safetensors(tmp_path, architecture):
    tok = build_char_tokenizer("0123456789")
    state = torch.random.get_rng_state()
    model = build_tiny_model(tok, tmp_path, architecture=architecture, hidden_size=32, num_layers=1,
                             num_heads=2, intermediate_size=64, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is untouched
    same = build_tiny_model(tok, architecture=architecture, hidden_size=32, num_layers=1, num_heads=2,
                            intermediate_size=64, seed=3)
    other = build_tiny_model(tok, architecture=architecture, hidden_size=32, num_layers=1, num_heads=2,
                             intermediate_size=64, seed=4)
    weight = model.get_input_embeddings().weight
    assert torch.equal(weight, same.get_input_embeddings().weight)
    assert not torch.equal(weight, other.get_input_embeddings().weight)
    assert model.config.model_type == architecture
    assert model.config.vocab_size == len(tok) and model.config.pad_token_id == tok.pad_token_id
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "tokenizer.json").is_file()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, use_safetensors=True)
    assert torch.equal(loaded.get_input_embeddings().weight, weight)


def test_tiny_model_argument_errors():
    tok = build_char_tokenizer("01")
    with pytest.raises(ValueError, match="architecture"):
        build_tiny_model(tok, architecture="gpt2")
    with pytest.raises(ValueError, match="num_kv_heads"):
        build_tiny_model(tok, hidden_size=32, num_heads=4, num_kv_heads=3)


def test_reference_config_matches_the_benchmark_model():
    config = qwen2_reference_config()
    assert (config.model_type, config.hidden_size, config.num_hidden_layers) == ("qwen2", 256, 4)
    assert (config.num_attention_heads, config.num_key_value_heads, config.intermediate_size) == (4, 2, 688)
    assert config.tie_word_embeddings and config.vocab_size == 512
    tok = build_char_tokenizer("abc")
    model = build_tiny_model(tok, config=config)
    assert model.config.vocab_size == len(tok) and model.config.hidden_size == 256
