import sys

import pytest

from grpokit.config import load_object


def test_file_and_attribute_path(tmp_path):
    path = tmp_path / "user_things.py"
    path.write_text("class Outer:\n    class Inner:\n        value = 3\n\nCOUNT = [0]\n")
    assert load_object(f"{path}:Outer.Inner", "thing").value == 3
    # The same file is one module: a second spec naming it sees the same globals.
    first = load_object(f"{path}:COUNT", "thing")
    first.append(1)
    assert load_object(f"{path}:COUNT", "other thing") == [0, 1]


def test_module_spec(tmp_path, monkeypatch):
    (tmp_path / "user_code_mod_x.py").write_text("VALUE = 'v'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert load_object("user_code_mod_x:VALUE", "thing") == "v"
    finally:
        sys.modules.pop("user_code_mod_x", None)


@pytest.mark.parametrize(
    ("spec", "kwargs", "message"),
    [
        ("plain", {}, r"^tool 'plain' is not of the form 'module:name' or 'path/to/file.py:name'$"),
        (
            "plain",
            {"builtins": ["a", "b"], "noun": "Class"},
            r"neither a built-in \(a, b\) nor of the form 'module:Class'",
        ),
        ("plain", {"builtins": []}, r"neither a built-in \(none registered\)"),
        (":x", {}, "is not of the form"),
        ("no_such_module_q:f", {}, "tool 'no_such_module_q:f': cannot import module 'no_such_module_q'"),
        ("os:nope_attr", {}, "tool 'os:nope_attr': 'os' has no attribute 'nope_attr'"),
        ("nowhere.py:f", {}, "tool 'nowhere.py:f': file nowhere.py does not exist"),
    ],
)
def test_errors_name_what_and_spec(spec, kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_object(spec, "tool", **kwargs)


def test_a_failing_file_raises_its_own_error_and_can_be_retried(tmp_path):
    path = tmp_path / "user_broken.py"
    path.write_text("raise KeyError('setting')\n")
    with pytest.raises(KeyError, match="setting") as info:
        load_object(f"{path}:f", "environment")
    if sys.version_info >= (3, 11):
        assert any("while loading environment" in note for note in info.value.__notes__)
    path.write_text("def f():\n    return 1\n")
    assert load_object(f"{path}:f", "environment")() == 1
