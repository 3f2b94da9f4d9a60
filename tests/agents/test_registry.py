import re
import sys
import textwrap

import pytest

from grpokit.agents import registry
from grpokit.agents.adapters import GymTextEnvironment, TRLEnvironment
from grpokit.agents.environment import Environment, EnvStep
from grpokit.agents.registry import (
    available_environments,
    environment_class,
    environment_factory,
    load_tools,
    register_environment,
)


@pytest.fixture
def clean_registry(monkeypatch):
    """The registry as it is, restored after the test."""
    monkeypatch.setattr(registry, "_ENVIRONMENTS", dict(registry._ENVIRONMENTS))
    return registry._ENVIRONMENTS


class Counting(Environment):
    made = 0

    def __init__(self, start=0, log=None):
        Counting.made += 1
        self.value = start
        self.log = log if log is not None else []
        self.log.append("made")  # mutates its argument: the factory must hand each instance a copy

    def reset(self, row, seed):
        return [{"role": "user", "content": str(self.value)}]

    def step(self, message):
        return EnvStep(terminated=True)


def test_register_by_name_and_factory_makes_one_instance_per_call(clean_registry):
    register_environment("counting_test")(Counting)
    assert "counting_test" in available_environments()
    assert environment_class("counting_test") is Counting
    Counting.made = 0
    factory = environment_factory("counting_test", {"start": 5, "log": []})
    assert Counting.made == 1  # validated at construction
    first, second = factory(), factory()
    assert Counting.made == 2  # the validating instance served the first episode
    assert first is not second and isinstance(first, Counting)
    assert first.reset({}, 0) == [{"role": "user", "content": "5"}]
    assert first.log == ["made"] and second.log == ["made"]  # kwargs are copied per instance
    assert factory.kwargs == {"start": 5, "log": []}


def test_register_refuses_taken_names_and_non_classes(clean_registry):
    register_environment("taken_test")(Counting)
    with pytest.raises(ValueError, match="environment 'taken_test' is already registered"):
        register_environment("taken_test")(Counting)
    with pytest.raises(TypeError, match="decorates a class"):
        register_environment("fn_test")(lambda: None)
    with pytest.raises(ValueError, match="without ':'"):
        register_environment("a:b")


def write_env_file(tmp_path, name="my_env.py"):
    path = tmp_path / name
    path.write_text(
        textwrap.dedent(
            """
            class Guess:
                def __init__(self, secret=3):
                    self.secret = secret

                def reset(self, **row):
                    return None

                def guess(self, n: int) -> str:
                    '''Guess.

                    Args:
                        n: the number.
                    '''
                    return "yes" if n == self.secret else "no"

            class Broken:
                def __init__(self):
                    raise RuntimeError("no GPU here")

            class Inert:
                pass

            NOT_A_CLASS = 3
            """
        )
    )
    return path


def test_file_class_spec_with_adapter(tmp_path):
    path = write_env_file(tmp_path)
    factory = environment_factory(f"{path}:Guess", {"secret": 7}, prompt_column="question")
    env = factory()
    assert isinstance(env, TRLEnvironment) and env.prompt_column == "question"
    assert env.tools[0](7) == "yes"
    assert factory.cls is environment_class(f"{path}:Guess")


def test_module_class_spec(monkeypatch, tmp_path):
    write_env_file(tmp_path, "registry_test_envs_mod.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        factory = environment_factory("registry_test_envs_mod:Guess", {}, adapter="trl")
        assert isinstance(factory(), TRLEnvironment)
    finally:
        sys.modules.pop("registry_test_envs_mod", None)


def test_errors_name_the_spec(tmp_path):
    path = write_env_file(tmp_path)
    builtins = re.escape(", ".join(available_environments()) or "none registered")
    with pytest.raises(ValueError, match=rf"environment 'nosuch' is neither a built-in \({builtins}\) nor"):
        environment_class("nosuch")
    with pytest.raises(ValueError, match="environment 'gone.py:X': file gone.py does not exist"):
        environment_class("gone.py:X")
    with pytest.raises(ValueError, match="has no attribute 'Missing'"):
        environment_class(f"{path}:Missing")
    with pytest.raises(ValueError, match="is not a class"):
        environment_class(f"{path}:NOT_A_CLASS")
    with pytest.raises(
        ValueError, match=r"environment '.*:Broken': Broken\(\*\*\{\}\) failed: RuntimeError: no GPU"
    ):
        environment_factory(f"{path}:Broken", {})
    with pytest.raises(ValueError, match=r"Guess\(\*\*\{'colour': 1\}\) failed: TypeError"):
        environment_factory(f"{path}:Guess", {"colour": 1})
    with pytest.raises(TypeError, match="environment '.*:Inert': Inert is not an environment"):
        environment_factory(f"{path}:Inert", {})
    with pytest.raises(TypeError, match="Guess has no step method"):
        environment_factory(f"{path}:Guess", {}, adapter="native")


def test_builtins_are_imported_lazily_once(clean_registry, monkeypatch, tmp_path):
    (tmp_path / "registry_test_builtin.py").write_text(
        "from grpokit.agents.registry import register_environment\n"
        "from grpokit.agents.environment import Environment\n"
        "@register_environment('lazy_builtin_test')\n"
        "class Lazy(Environment):\n"
        "    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_BUILTIN_MODULE", "registry_test_builtin")
    monkeypatch.setattr(registry, "_builtins_loaded", False)
    try:
        assert "lazy_builtin_test" not in clean_registry
        assert "lazy_builtin_test" in available_environments()
        assert registry._builtins_loaded
        assert "lazy_builtin_test" in available_environments()
    finally:
        sys.modules.pop("registry_test_builtin", None)


def test_missing_builtin_module_means_none_but_its_own_import_errors_propagate(
    clean_registry, monkeypatch, tmp_path
):
    monkeypatch.setattr(registry, "_BUILTIN_MODULE", "registry_test_absent_builtin")
    monkeypatch.setattr(registry, "_builtins_loaded", False)
    available_environments()  # no error: there are no built-ins
    (tmp_path / "registry_test_broken_builtin.py").write_text("import registry_test_missing_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_BUILTIN_MODULE", "registry_test_broken_builtin")
    monkeypatch.setattr(registry, "_builtins_loaded", False)
    with pytest.raises(ImportError, match="registry_test_missing_dependency"):
        available_environments()


class TextGame:
    observation_space = action_space = None

    def reset(self, *, seed=None, options=None):
        return "start", {"task": "t"}

    def step(self, action):
        return "", 1.0, True, False, {}


def test_factory_adapts_gymnasium_style_classes(clean_registry):
    register_environment("text_game_test")(TextGame)
    env = environment_factory("text_game_test", {})()
    assert isinstance(env, GymTextEnvironment)
    env.reset({}, 0)
    assert env.reset_info == {"task": "t"}


def test_load_tools(tmp_path):
    path = tmp_path / "my_tools.py"
    path.write_text(
        textwrap.dedent(
            """
            def lookup(key: str) -> str:
                '''Look a key up.

                Args:
                    key: the key.
                '''
                return key

            def undocumented(key: str) -> str:
                return key

            VALUE = 1
            """
        )
    )
    tools = load_tools([f"{path}:lookup"])
    assert [t.__name__ for t in tools] == ["lookup"] and tools[0]("k") == "k"
    assert load_tools([]) == []
    with pytest.raises(
        ValueError, match=r"tool '.*:undocumented': tool undocumented: cannot build its JSON schema"
    ):
        load_tools([f"{path}:undocumented"])
    with pytest.raises(ValueError, match="is not callable"):
        load_tools([f"{path}:VALUE"])
    with pytest.raises(ValueError, match="are both named 'lookup'"):
        load_tools([f"{path}:lookup", f"{path}:lookup"])
    with pytest.raises(ValueError, match=r"tool 'lookup' is not of the form 'module:function'"):
        load_tools(["lookup"])
