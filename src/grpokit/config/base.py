"""The base of every config section, and the helpers the sections share: the tree of dotted field paths,
renamed fields, and names checked against the ``grpokit.algorithms`` registries."""

from __future__ import annotations

import contextlib
import difflib
import importlib
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_validator


class ConfigError(ValueError):
    """A configuration is invalid; the message names every offending field by its dotted path."""


class Section(BaseModel):
    """Base of every config section: unknown keys are rejected with a suggestion, field docstrings are kept."""

    # allow_inf_nan=False: a NaN or inf in any float field (a weight, a rate) would poison training silently.
    model_config = ConfigDict(
        extra="forbid", use_attribute_docstrings=True, validate_assignment=True, allow_inf_nan=False
    )

    renamed_fields: ClassVar[dict[str, str]] = {}
    """Old field name -> its new dotted path, relative to the section's parent (``algorithm.value_clip`` ->
    ``algorithm.cliprange_value``): an old name fails with a message naming the new one."""

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        # pydantic's own extra="forbid" message ("Extra inputs are not permitted") gives no hint; typos in
        # a YAML file are the most common config error, so name the closest valid key.
        if isinstance(data, dict):
            known = set(cls.model_fields)
            for key in data:
                if key in cls.renamed_fields:
                    raise ValueError(f"{key} was renamed to {cls.renamed_fields[key]}")
                if key not in known:
                    raise ValueError(_unknown_key_message(cls, str(key)))
        return data


def _unknown_key_message(cls: type[BaseModel], key: str) -> str:
    candidates = list(cls.model_fields)
    # A key placed in the wrong section (``beta`` at the top level) is matched against the nested paths too.
    nested = {path.rsplit(".", 1)[-1]: path for path in field_paths(cls) if "." in path}
    if key in nested:
        return f"unknown field '{key}'; did you mean '{nested[key]}'?"
    close = difflib.get_close_matches(key, candidates + list(nested), n=1, cutoff=0.6)
    hint = ""
    if close:
        hint = f"; did you mean '{nested.get(close[0], close[0])}'?"
    return f"unknown field '{key}'{hint} (valid: {', '.join(candidates)})"


# Built-in losses of the "loss" registry: accepted even where ``grpokit.algorithms.objectives`` (which
# registers them) is not importable, so that configs naming them load before any torch import fails.
_BUILTIN_LOSSES = ("cispo", "grpo", "gspo", "ppo", "sapo")


def registered_names(kind: str) -> list[str]:
    """The names registered in ``grpokit.algorithms`` for ``kind``, looked up now (not at import time), so a
    name registered with ``grpokit.algorithms.register`` before the config is built is accepted."""

    import grpokit.algorithms  # noqa: F401  (its modules register the built-in names)
    from grpokit.algorithms import registry

    if kind == "loss":
        with contextlib.suppress(ImportError):
            importlib.import_module("grpokit.algorithms.objectives")
    if kind not in registry.KINDS:
        return sorted(_BUILTIN_LOSSES) if kind == "loss" else []
    names = registry.available(kind)
    if kind == "loss":
        names = sorted(set(names) | set(_BUILTIN_LOSSES))
    return names


def check_registered(kind: str, value: str, field: str) -> str:
    """``value`` if it is a registered ``kind`` name, else a ``ValueError`` listing the valid names."""
    names = registered_names(kind)
    if value not in names:
        raise ValueError(
            f"unknown {field} {value!r}; valid names: {', '.join(names)} (register your own with "
            f"grpokit.algorithms.register({kind!r}, name))"
        )
    return value


def field_paths(cls: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted paths of every leaf field of a config class, in declaration order."""
    paths = []
    for name, info in cls.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            paths += field_paths(ann, f"{prefix}{name}.")
        else:
            paths.append(prefix + name)
    return paths


def renamed_paths(cls: type[BaseModel], prefix: str = "") -> dict[str, str]:
    """Old dotted path -> new dotted path of every renamed field in a config class's tree."""
    parent = prefix.rsplit(".", 2)[0] + "." if prefix.count(".") > 1 else ""
    out = {prefix + old: parent + new for old, new in getattr(cls, "renamed_fields", {}).items()}
    for name, info in cls.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.update(renamed_paths(ann, f"{prefix}{name}."))
    return out
