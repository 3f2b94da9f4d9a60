"""Loading user code named in a config: ``package.module:attr`` or ``path/to/file.py:attr``.

Reward functions (``rewards.functions``), environments (``env.name``) and tools (``env.tools``) are all named
this way. A file is imported once per resolved path, as a module of its own (``grpokit_user_<digest>``), so
two specs naming the same file share its globals, like two imports of one module.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["load_object"]


def load_object(spec: str, what: str, *, builtins: Sequence[str] | None = None, noun: str = "name") -> Any:
    """The object named by ``spec``: ``package.module:attr`` or ``path/to/file.py:attr``, where ``attr`` may be
    an attribute path (``Outer.inner``).

    Args:
        spec: the config's text.
        what: what is being loaded, the first word of every error (``"reward"``, ``"environment"``, ``"tool"``).
        builtins: the registered names ``spec`` could also have been; listed when it is neither one of them
            nor of the ``module:attr`` form (``None``: the caller has no registry).
        noun: the word in the form shown in that error (``'module:function'``, ``'module:Class'``).

    Raises:
        ValueError: ``spec`` has no ``:``, the file does not exist, the module cannot be imported or lacks the
            attribute; the message starts with ``what`` and ``spec``.
        Exception: whatever executing the file raises (its own error, with the spec attached as a note on
            Python 3.11+), so a user's bug shows its own traceback.
    """
    module_part, sep, attr = spec.rpartition(":")
    if not sep or not module_part or not attr:
        forms = f"of the form 'module:{noun}' or 'path/to/file.py:{noun}'"
        if builtins is None:
            raise ValueError(f"{what} {spec!r} is not {forms}")
        names = ", ".join(builtins) or "none registered"
        raise ValueError(f"{what} {spec!r} is neither a built-in ({names}) nor {forms}")
    if module_part.endswith(".py"):
        module = _load_file(Path(module_part), spec, what)
    else:
        try:
            module = importlib.import_module(module_part)
        except ModuleNotFoundError as err:
            raise ValueError(f"{what} {spec!r}: cannot import module {module_part!r} ({err})") from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{what} {spec!r}: {module_part!r} has no attribute {attr!r}") from None
    return obj


def _load_file(path: Path, spec: str, what: str) -> ModuleType:
    """Import the Python file ``path`` once (per resolved path) and return its module."""
    if not path.is_file():
        raise ValueError(f"{what} {spec!r}: file {path} does not exist")
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:16]
    name = f"grpokit_user_{digest}"
    module = sys.modules.get(name)
    if module is not None:
        return module
    module_spec = importlib.util.spec_from_file_location(name, path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    # Registered before executing, as the import system does: dataclasses and pickling look the module up.
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException as err:
        del sys.modules[name]
        if hasattr(err, "add_note"):  # Python 3.11+
            err.add_note(f"while loading {what} {spec!r} from {path}")
        raise
    return module
