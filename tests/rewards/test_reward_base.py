import sys

import pytest

from grpokit.rewards import load_callable, resolve_reward


def test_load_from_file_path(tmp_path):
    path = tmp_path / "my_rewards.py"
    path.write_text(
        "def count_a(prompts, completions, **kw):\n    return [c.count('a') for c in completions]\n"
    )
    fn = resolve_reward(f"{path}:count_a")
    assert fn(["p", "p"], ["aa", "b"]) == [2, 0]


def test_load_from_module_with_options(tmp_path, monkeypatch):
    (tmp_path / "mod_rewards_x.py").write_text(
        "def bonus(prompts, completions, scale=1.0, **kw):\n    return [scale * len(c) for c in completions]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    fn = resolve_reward("mod_rewards_x:bonus", {"scale": 2.0})
    assert fn(["p"], ["abc"]) == [6.0]
    sys.modules.pop("mod_rewards_x", None)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("accurracy", "neither a built-in .* nor of the form 'module:function'"),
        ("no_such_module_zz:f", "cannot import module 'no_such_module_zz'"),
        ("grpokit.rewards.builtin:nope", "has no attribute 'nope'"),
        ("grpokit.rewards.builtin:re", "is not callable"),
        ("missing_file.py:f", "file missing_file.py does not exist"),
    ],
)
def test_bad_specs_are_named(spec, message):
    with pytest.raises(ValueError, match=message):
        load_callable(spec)
