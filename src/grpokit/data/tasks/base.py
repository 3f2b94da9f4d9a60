"""The task interface and the registry of tasks by name (the tasks themselves live beside it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["SPLITS", "Task", "get_task", "list_tasks", "register_task"]

SPLITS: tuple[str, ...] = ("train", "test")

_TASKS: dict[str, Callable[[], Task]] = {}


def register_task(name: str) -> Callable[[Callable[[], Task]], Callable[[], Task]]:
    """Decorator: register a task factory (a Task subclass, or a function returning a Task) under ``name``.

    Registering a name twice is an error.
    """

    def decorator(factory: Callable[[], Task]) -> Callable[[], Task]:
        if name in _TASKS:
            raise ValueError(f"task {name!r} is already registered")
        _TASKS[name] = factory
        return factory

    return decorator


def get_task(name: str) -> Task:
    """The task registered as ``name``; an unknown name lists the known ones."""
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}; available tasks: {sorted(_TASKS)}")
    return _TASKS[name]()


def list_tasks() -> list[str]:
    return sorted(_TASKS)


class Task:
    """Interface of a built-in task (see the module docstring)."""

    name: str
    alphabet: str  # every character of prompts and completions (for the character tokenizer)
    teacher_error_rate: float  # exact fraction of problems the teacher gets wrong (uniform problems)
    teacher_flaw: str  # one line for summaries: what the teacher gets wrong
    max_completion_tokens: int  # longest right answer in characters (EOS not counted)

    def make_problems(self, n: int, seed: int = 0, split: str = "train") -> list[dict[str, Any]]:
        raise NotImplementedError

    def teacher_completion(self, row: dict[str, Any]) -> str:
        raise NotImplementedError

    def teacher_is_wrong(self, row: dict[str, Any]) -> bool:
        return not self.check(row.get("prompt"), self.teacher_completion(row), row["answer"])

    def check(self, prompt: Any, completion: str, answer: str) -> bool:
        """Exact final-answer match: the completion (special tokens already stripped), without
        surrounding whitespace, equals the answer."""
        return completion.strip() == str(answer).strip()

    def reward(
        self, prompts: list[Any], completions: list[str], answer: list[str], **columns: Any
    ) -> list[float]:
        """The reward-function form of :meth:`check`: 1.0 when right, else 0.0."""
        return [float(self.check(p, c, a)) for p, c, a in zip(prompts, completions, answer)]
