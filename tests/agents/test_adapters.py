import gymnasium
import pytest

from grpokit.agents.adapters import GymTextEnvironment, TRLEnvironment, adapt_environment
from grpokit.agents.environment import Environment, EnvStep, TextEnvironment
from grpokit.agents.tool_calls import ToolCall
from grpokit.agents.tools import ToolExecutor, tool_schema


class Wordle:
    """Written to TRL's environment_factory contract: reset(**row), public methods are tools, get_reward()."""

    def __init__(self):
        self.target = None
        self.guesses = []

    def reset(self, **row):
        self.target = row["answer"]
        self.guesses = []
        return f" (the word has {len(self.target)} letters)"

    def guess(self, word: str) -> str:
        """Guess the word.

        Args:
            word: the guess.
        """
        self.guesses.append(word)
        return "correct" if word == self.target else "wrong"

    def get_reward(self) -> float:
        return 1.0 if self.target in self.guesses else 0.0

    def _helper(self):
        return "private"

    @property
    def solved(self):
        raise AssertionError("properties must not be evaluated when looking for tools")


class Silent:
    def reset(self, **row):
        return None

    def look(self) -> str:
        """Look around."""
        return "a room"


def test_trl_tools_reset_observation_and_reward():
    env = TRLEnvironment(Wordle())
    assert [tool.__name__ for tool in env.tools] == ["guess"]
    row = {
        "prompt": [{"role": "system", "content": "Play."}, {"role": "user", "content": "Guess"}],
        "answer": "cat",
    }
    messages = env.reset(row, seed=0)
    assert messages == [
        {"role": "system", "content": "Play."},
        {"role": "user", "content": "Guess (the word has 3 letters)"},
    ]
    assert row["prompt"][1]["content"] == "Guess"  # the row is not mutated
    executor = ToolExecutor(env.tools, timeout_s=5)
    assert executor.call(ToolCall("guess", {"word": "dog"}), "e0").content == "wrong"
    assert env.step({"role": "assistant", "content": "I give up"}) == EnvStep(reward=0.0, terminated=True)
    executor.call(ToolCall("guess", {"word": "cat"}), "e0")
    assert env.step({"role": "assistant", "content": "cat"}) == EnvStep(reward=1.0, terminated=True)
    assert tool_schema(env.tools[0])["function"]["parameters"]["required"] == ["word"]


def test_trl_string_prompt_missing_prompt_and_no_reward():
    env = TRLEnvironment(Silent(), prompt_column="question")
    assert env.reset({"question": "Where am I?"}, seed=1) == [{"role": "user", "content": "Where am I?"}]
    assert env.reset({}, seed=1) == [{"role": "user", "content": ""}]
    assert env.reset_info == {}
    assert env.step({"role": "assistant", "content": "here"}) == EnvStep(reward=0.0, terminated=True)


def test_trl_reset_info_comes_from_the_instance():
    class Tasks(Silent):
        def reset(self, **row):
            self.reset_info = {"task": row["kind"]}

    env = TRLEnvironment(Tasks())
    env.reset({"prompt": "p", "kind": "math"}, seed=0)
    assert env.reset_info == {"task": "math"}


def test_trl_observation_without_user_message_becomes_one():
    env = TRLEnvironment(Wordle())
    messages = env.reset({"prompt": [{"role": "system", "content": "Play."}], "answer": "ab"}, seed=0)
    assert messages[-1] == {"role": "user", "content": " (the word has 2 letters)"}


def test_trl_async_reward_and_bad_observation():
    class AsyncReward(Silent):
        async def get_reward(self):
            return 0.5

    assert TRLEnvironment(AsyncReward()).step({"role": "assistant", "content": ""}).reward == 0.5

    class Numbers(Silent):
        def reset(self, **row):
            return 3

    with pytest.raises(TypeError, match="Numbers.reset returned a int"):
        TRLEnvironment(Numbers()).reset({"prompt": "x"}, seed=0)


class EchoText(gymnasium.Env):
    """A gymnasium env with text spaces: repeat the secret word within 2 tries."""

    observation_space = gymnasium.spaces.Text(64)
    action_space = gymnasium.spaces.Text(64)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.word = (options or {}).get("word", "x")
        self.tries = 0
        return f"Say {self.word}", {"task": "echo", "features": [len(self.word)]}

    def step(self, action):
        self.tries += 1
        if action.strip() == self.word:
            return "well done", 1, True, False, {"tries": self.tries}
        if self.tries >= 2:
            return "", 0, False, True, {"tries": self.tries}
        return "try again", -0.5, False, False, {}


def test_gymnasium_wrapper_reset_step_and_end():
    env = GymTextEnvironment(EchoText())
    assert env.reset({"word": "hi"}, seed=3) == [{"role": "user", "content": "Say hi"}]
    assert env.reset_info == {"task": "echo", "features": [2]}
    step = env.step({"role": "assistant", "content": "ho"})
    assert step == EnvStep([{"role": "user", "content": "try again"}], -0.5, False, False, {})
    step = env.step({"role": "assistant", "content": " hi "})
    assert step.messages == [] and step.terminated and not step.truncated
    assert step.reward == 1.0 and isinstance(step.reward, float)
    assert step.info == {"tries": 2, "final_observation": "well done"}


def test_gymnasium_truncation_and_non_text_observation():
    env = GymTextEnvironment(EchoText())
    env.reset({"word": "a"}, seed=0)
    env.step({"role": "assistant", "content": "b"})
    step = env.step({"role": "assistant", "content": "c"})
    assert (
        step.truncated
        and not step.terminated
        and step.messages == []
        and "final_observation" not in step.info
    )

    class Numeric(EchoText):
        def reset(self, *, seed=None, options=None):
            return 0, {}

    with pytest.raises(TypeError, match="Numeric.reset returned a int observation"):
        GymTextEnvironment(Numeric()).reset({}, seed=0)


class Native(Environment):
    def reset(self, row, seed):
        return [{"role": "user", "content": row["q"]}]

    def step(self, message):
        return EnvStep(reward=1.0, terminated=True)


class SpacesOnly:
    observation_space = None
    action_space = None

    def reset(self, *, seed=None, options=None):
        return "obs", {}

    def step(self, action):
        return "", 0.0, True, False, {}


def test_auto_detection():
    native = Native()
    assert adapt_environment(native) is native
    assert isinstance(adapt_environment(native), TextEnvironment)
    assert isinstance(adapt_environment(Wordle()), TRLEnvironment)
    assert isinstance(adapt_environment(EchoText()), GymTextEnvironment)
    assert isinstance(adapt_environment(SpacesOnly()), GymTextEnvironment)


def test_explicit_adapters_and_errors():
    assert isinstance(adapt_environment(Native(), "trl"), TRLEnvironment)
    assert isinstance(adapt_environment(SpacesOnly(), "gymnasium"), GymTextEnvironment)
    with pytest.raises(TypeError, match="Wordle has no step method, which the native adapter calls"):
        adapt_environment(Wordle(), "native")
    with pytest.raises(TypeError, match="Nothing is not an environment: it has no reset method"):

        class Nothing:
            def step(self, message):
                return EnvStep()

        adapt_environment(Nothing())
    with pytest.raises(
        ValueError, match="unknown environment adapter 'gym'; valid: auto, native, trl, gymnasium"
    ):
        adapt_environment(Native(), "gym")
