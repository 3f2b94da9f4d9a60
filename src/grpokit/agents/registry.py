"""Environments by name: the built-ins (registered with :func:`register_environment`), or user classes named
``path/to/my_env.py:MyEnv`` / ``package.module:MyEnv`` (``env.name``), and the extra tools of ``env.tools``.

The trainer asks :func:`environment_factory` for a callable making one adapted instance per episode. It makes
one instance up front, so a class that cannot be built or driven fails when the config is read, before any
model loads. The built-ins live in :mod:`grpokit.agents.builtin`, imported on first use of the registry (a
plain import of this module registers nothing).
"""

from __future__ import annotations

import copy
import importlib
import threading
from collections.abc import Callable
from typing import Any

from grpokit.agents.adapters import adapt_environment
from grpokit.agents.environment import TextEnvironment
from grpokit.agents.tools import tool_name, tool_schema
from grpokit.config.user_code import load_object

__all__ = [
    "EnvironmentFactory",
    "available_environments",
    "environment_class",
    "environment_factory",
    "load_tools",
    "register_environment",
]

_ENVIRONMENTS: dict[str, type] = {}
_BUILTIN_MODULE = "grpokit.agents.builtin"
_builtins_loaded = False
_builtins_lock = threading.RLock()


def register_environment(name: str) -> Callable[[type], type]:
    """Class decorator registering an environment under ``name`` (``env.name: NAME``, :func:`available_environments`).

    Raises:
        ValueError: the name is empty, contains ``:`` (the mark of ``module:Class``) or is taken.
        TypeError: the decorated object is not a class.
    """
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"an environment name is a non-empty string without ':', got {name!r}")

    def decorator(cls: type) -> type:
        if not isinstance(cls, type):
            raise TypeError(f"register_environment({name!r}) decorates a class, got {cls!r}")
        if name in _ENVIRONMENTS:
            raise ValueError(
                f"environment {name!r} is already registered ({_ENVIRONMENTS[name].__qualname__}); pick another name"
            )
        _ENVIRONMENTS[name] = cls
        return cls

    return decorator


def _load_builtins() -> None:
    """Import :mod:`grpokit.agents.builtin` once, registering the built-in environments (none if it is absent;
    an error inside it propagates)."""
    global _builtins_loaded
    with _builtins_lock:
        if _builtins_loaded:
            return
        try:
            # Imported by name: builtin imports this module to register, so a static import would be a cycle.
            importlib.import_module(_BUILTIN_MODULE)
        except ImportError as err:
            if err.name != _BUILTIN_MODULE:
                raise
        _builtins_loaded = True


def available_environments() -> list[str]:
    """Names of the registered environments, the built-ins included."""
    _load_builtins()
    return sorted(_ENVIRONMENTS)


def environment_class(spec: str) -> Callable[..., Any]:
    """The class (or factory callable) ``spec`` names: a registered name, ``file.py:Class`` or ``module:Class``.

    The trainer reads an optional ``make_rows(n, seed, split)`` class method from it.

    Raises:
        ValueError: ``spec`` is neither a registered name nor a loadable ``module:Class`` (the message lists
            the registered names), or names something not callable.
    """
    names = available_environments()
    if spec in _ENVIRONMENTS:
        return _ENVIRONMENTS[spec]
    obj = load_object(spec, "environment", builtins=names, noun="Class")
    if not callable(obj):
        raise ValueError(f"environment {spec!r} is not a class (got {type(obj).__name__})")
    return obj


class EnvironmentFactory:
    """Makes one adapted environment instance per call (one per episode).

    Attributes:
        spec: the ``env.name`` it was built from.
        cls: the environment class (or factory callable).
    """

    def __init__(
        self, spec: str, cls: Callable[..., Any], kwargs: dict[str, Any], adapter: str, prompt_column: str
    ) -> None:
        self.spec = spec
        self.cls = cls
        self.kwargs = dict(kwargs)
        self.adapter = adapter
        self.prompt_column = prompt_column
        # The instance made to validate the class serves the first episode (it has not been reset yet).
        self._spare: list[TextEnvironment] = [self._make()]

    def __call__(self) -> TextEnvironment:
        try:
            return self._spare.pop()
        except IndexError:
            return self._make()

    def _make(self) -> TextEnvironment:
        name = getattr(self.cls, "__qualname__", repr(self.cls))
        try:
            # A copy per instance: a constructor that mutates its arguments must not leak into the next episode.
            instance = self.cls(**copy.deepcopy(self.kwargs))
        except Exception as err:
            raise ValueError(
                f"environment {self.spec!r}: {name}(**{self.kwargs!r}) failed: {type(err).__name__}: {err}"
            ) from err
        try:
            return adapt_environment(instance, self.adapter, self.prompt_column)
        except TypeError as err:
            raise TypeError(f"environment {self.spec!r}: {err}") from err
        except ValueError as err:
            raise ValueError(f"environment {self.spec!r}: {err}") from err

    def __repr__(self) -> str:
        return f"EnvironmentFactory({self.spec!r}, kwargs={self.kwargs!r}, adapter={self.adapter!r})"


def environment_factory(
    spec: str, kwargs: dict[str, Any], *, adapter: str = "auto", prompt_column: str = "prompt"
) -> EnvironmentFactory:
    """A callable making a new adapted instance of the environment ``spec`` per call.

    Args:
        spec: ``env.name``: a registered name, ``file.py:Class`` or ``module:Class``.
        kwargs: ``env.kwargs``, the constructor's keyword arguments (deep-copied per instance).
        adapter: ``env.adapter`` (see :func:`~grpokit.agents.adapters.adapt_environment`).
        prompt_column: the prompt's column (for TRL-style environments).

    Raises:
        ValueError: ``spec`` cannot be resolved, or building the first instance failed (the message names
            the spec, the class and the exception).
        TypeError: the instance lacks the methods its adapter needs.
    """
    return EnvironmentFactory(spec, environment_class(spec), kwargs, adapter, prompt_column)


def load_tools(specs: list[str]) -> list[Callable[..., Any]]:
    """The functions of ``env.tools`` (``file.py:func`` / ``module:func``), checked now: each is callable,
    has a JSON schema (type hints and docstring), and no two share a name.

    Raises:
        ValueError: a spec cannot be loaded, is not callable, has no schema, or two tools share a name.
    """
    tools: list[Callable[..., Any]] = []
    seen: dict[str, str] = {}
    for spec in specs:
        fn = load_object(spec, "tool", noun="function")
        if not callable(fn):
            raise ValueError(f"tool {spec!r} is not callable (got {type(fn).__name__})")
        try:
            name = tool_name(fn)
            tool_schema(fn)
        except (TypeError, ValueError) as err:
            raise ValueError(f"tool {spec!r}: {err}") from None
        if name in seen:
            raise ValueError(f"tools {seen[name]!r} and {spec!r} are both named {name!r}; rename one")
        seen[name] = spec
        tools.append(fn)
    return tools
