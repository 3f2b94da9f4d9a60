import pytest

from grpokit.rollout import encode_prompts


def test_text_prompts_and_truncation(tok):
    assert encode_prompts(tok, ["1+2=", "12="]) == [tok("1+2=")["input_ids"], tok("12=")["input_ids"]]
    assert encode_prompts(tok, ["123+456="], max_prompt_length=3, truncation="left") == [tok("56=")["input_ids"]]
    with pytest.raises(ValueError, match="prompt 1 has 8 tokens, more than max_prompt_length=3"):
        encode_prompts(tok, ["1=", "123+456="], max_prompt_length=3)


@pytest.mark.parametrize(
    ("prompts", "message"),
    [
        (["1+1=", ""], "prompt 1 is an empty string"),
        (["1", 7], "prompt 1 must be a string or a list of chat messages"),
        ([[]], "prompt 0 is an empty list"),
        ([[{"role": "user"}]], "prompt 0, message 0"),
        ("1+1=", "must be a list of prompts"),
    ],
)
def test_bad_prompts_name_the_index(tok, prompts, message):
    with pytest.raises(ValueError, match=message):
        encode_prompts(tok, prompts)


def test_chat_prompts_need_a_template(tok):
    chat = [{"role": "user", "content": "1+2"}]
    with pytest.raises(ValueError, match="no chat template"):
        encode_prompts(tok, [chat])
    # A copy, so that the session-wide fixture keeps having no template.
    tok_copy = type(tok)(tokenizer_object=tok.backend_tokenizer, pad_token="<pad>", eos_token="<eos>")
    tok_copy.chat_template = "{% for m in messages %}{{ m['content'] }}={% endfor %}"
    assert encode_prompts(tok_copy, [chat]) == [tok("1+2=")["input_ids"]]


def test_bad_truncation(tok):
    with pytest.raises(ValueError, match="truncation must be one of"):
        encode_prompts(tok, ["1"], truncation="right")
