"""Loading a config: YAML files, command-line overrides (with a "did you mean"), renamed fields, saving,
and the field reference."""

from __future__ import annotations

import difflib
import os
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, overload

import yaml
from pydantic import BaseModel, ValidationError

from grpokit.config.base import ConfigError, field_paths, renamed_paths
from grpokit.config.demo import DEMO_CONFIGS
from grpokit.config.trainers import TRAINER_CONFIGS, GRPOConfig, PPOConfig, TrainConfig

C = TypeVar("C", bound=BaseModel)
"""A config class: ``build_config`` and ``load_config`` return an instance of the class they are given."""


def _check_renamed(cls: type[BaseModel], data: dict[str, Any], source: str) -> None:
    renamed = renamed_paths(cls)

    def walk(node: dict[str, Any], prefix: str) -> None:
        for key, value in node.items():
            path = f"{prefix}{key}"
            if path in renamed:
                raise ConfigError(f"invalid {source}:\n  {path} was renamed to {renamed[path]}")
            if isinstance(value, dict):
                walk(value, path + ".")

    walk(data, "")


def field_help(cls: type[BaseModel]) -> list[tuple[str, str, str]]:
    """``(dotted path, default as YAML, description)`` for every leaf field: the config reference."""
    rows = []
    default = cls.model_construct()  # defaults without the cross-field checks (a demo config needs a task)
    for path in field_paths(cls):
        section: Any = cls
        value: Any = default
        for part in path.split("."):
            info = section.model_fields[part]
            value = getattr(value, part)
            section = info.annotation
        text = " ".join((info.description or "").split())
        shown = yaml.safe_dump(_to_plain(value), default_flow_style=True).replace("\n...\n", "").strip()
        rows.append((path, shown, text))
    return rows


def _to_plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, tuple):
        return list(value)
    return value


def apply_overrides(cls: type[BaseModel], data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set ``overrides`` (keys: a field name or its dotted path) into the nested dict ``data``.

    Values given as strings are parsed as YAML scalars/flow collections (``0.04``, ``true``, ``null``,
    ``[0.7, 1.0]``), so the command line and the file mean the same thing.
    """
    paths = field_paths(cls)
    by_name: dict[str, list[str]] = {}
    for path in paths:
        by_name.setdefault(path.rsplit(".", 1)[-1], []).append(path)
    out = _deep_copy(data)
    for key, raw in overrides.items():
        key = key.replace("-", "_")
        if key in paths:
            path = key
        elif key in by_name and len(by_name[key]) == 1:
            path = by_name[key][0]
        elif key in by_name:
            raise ConfigError(f"--{key} is ambiguous: use one of {', '.join('--' + p for p in by_name[key])}")
        elif renamed := [old for old in renamed_paths(cls) if key in (old, old.rsplit(".", 1)[-1])]:
            raise ConfigError(f"--{renamed[0]} was renamed to --{renamed_paths(cls)[renamed[0]]}")
        else:
            close = difflib.get_close_matches(key, paths + list(by_name), n=1, cutoff=0.6)
            hint = f"; did you mean --{close[0]}?" if close else ""
            raise ConfigError(f"unknown option --{key}{hint}")
        value = yaml.safe_load(raw) if isinstance(raw, str) else raw
        node = out
        *parents, leaf = path.split(".")
        for part in parents:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(
                    f"{part}: expected a mapping in the config file, got {type(child).__name__}"
                )
            node = child
        node[leaf] = value
    return out


def split_command_line(
    argv: Sequence[str],
    bool_fields: Collection[str],
    *,
    shorthands: Mapping[str, str] | None = None,
    options: Collection[str] = (),
) -> tuple[str | None, dict[str, Any], dict[str, Any]]:
    """Split a command's arguments into (config path, field overrides, flags): the one parser of every
    ``CONFIG.yaml --FIELD VALUE`` command.

    A field in ``bool_fields`` (dotted path or last part) may be given without a value (``true``); ``--config
    FILE`` equals the positional CONFIG; ``shorthands`` maps a flag to the field it stands for (``--model`` ->
    ``model.name_or_path``). Flags: ``help``, ``help_all``, ``print_config``, and each of ``options`` (its
    value, None when absent), which are not fields.

    Raises:
        ValueError: a stray positional argument, two config files, or a non-boolean field without a value.
    """
    shorthands = shorthands or {}
    config_path: str | None = None
    overrides: dict[str, Any] = {}
    flags: dict[str, Any] = {"help": False, "help_all": False, "print_config": False}
    flags.update({name: None for name in options})
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg in ("-h", "--help"):
            flags["help"] = True
        elif arg in ("--help-all", "--help_all"):
            flags["help"] = flags["help_all"] = True
        elif arg in ("--print-config", "--print_config"):
            flags["print_config"] = True
        elif arg.startswith("--") and len(arg) > 2:
            key, eq, value = arg[2:].partition("=")
            if not eq:
                if i < len(args) and not args[i].startswith("--"):
                    value = args[i]
                    i += 1
                elif key.replace("-", "_") in bool_fields:
                    value = "true"
                else:
                    raise ValueError(f"--{key} needs a value")
            if key == "config":
                if config_path is not None:
                    raise ValueError(f"two config files given: {config_path!r} and {value!r}")
                config_path = value
            elif key in options:
                flags[key] = value
            else:
                overrides[shorthands.get(key, key)] = value
        elif config_path is None and not arg.startswith("-"):
            config_path = arg
        else:
            raise ValueError(f"unexpected argument {arg!r} (one config file, then --FIELD VALUE pairs)")
    return config_path, overrides, flags


def _deep_copy(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in data.items()}


def build_config(cls: type[C], data: dict[str, Any], *, source: str = "config") -> C:
    """Validate ``data`` into ``cls``; every problem is reported as ``ConfigError`` naming its field path."""
    _check_renamed(cls, data, source)
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] not in ("value_error", "assertion_error") and "input" in e:
                msg += f" (got {e['input']!r})"
            lines.append(f"{loc}: {msg}")
        raise ConfigError(f"invalid {source}:\n  " + "\n  ".join(lines)) from None


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """The raw mapping of a YAML config file, not yet validated (an empty file is ``{}``).

    Raises ``ConfigError`` for a missing file, invalid YAML or a top level that is not a mapping.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of fields, got {type(loaded).__name__}")
    return loaded


def trainer_config_class(
    data: dict[str, Any], overrides: dict[str, Any] | None = None
) -> type[GRPOConfig] | type[PPOConfig]:
    """The config class named by the ``trainer`` field (an override wins over the file; default ``grpo``);
    its demo variant (:data:`~grpokit.config.demo.DEMO_CONFIGS`) when ``data`` has a ``demo`` section."""
    overrides = overrides or {}
    name = overrides.get("trainer", data.get("trainer", "grpo"))
    if name not in TRAINER_CONFIGS:
        raise ConfigError(f"trainer: unknown trainer {name!r}; valid: {', '.join(TRAINER_CONFIGS)}")
    return (DEMO_CONFIGS if "demo" in data else TRAINER_CONFIGS)[name]


PRESETS_DIR = Path(__file__).parent / "presets"
"""The YAML presets shipped with grpokit (``grpokit presets`` lists them)."""


def available_presets() -> list[str]:
    """Names of the shipped presets (``demo``...)."""
    return sorted(path.stem for path in PRESETS_DIR.glob("*.yaml"))


def preset_path(name: str) -> Path:
    """The YAML file of a shipped preset; copy it to start a config of your own."""
    path = PRESETS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown preset {name!r}; valid: {', '.join(available_presets())}")
    return path


def check_runnable(config: TrainConfig) -> None:
    """What a run from the command line needs besides a valid config: a model (or the demo preset), prompts
    and a reward. Raises ``ConfigError`` with one line naming the option to set."""
    if config.model.name_or_path is None and not hasattr(config, "demo"):
        raise ConfigError(
            "no model: set --model PATH (a local Hugging Face model directory), or run the built-in demo "
            "with --preset demo"
        )
    if config.env.name is not None:  # the environment scores; its rows come from make_rows or data.path
        return
    if config.data.path is None and config.data.task is None:
        raise ConfigError("no prompts: set --data.path FILE (.jsonl, .csv, .parquet) or --data.task NAME")
    rewards = config.rewards
    if not rewards.reward_funcs and rewards.reward_model is None and rewards.process_reward_func is None:
        raise ConfigError(
            "no reward: name one with --reward_funcs (e.g. --reward_funcs accuracy, or "
            "--reward_funcs my_rewards.py:score), or set --reward_model / --process_reward_func"
        )


@overload
def load_config(
    path: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None
) -> GRPOConfig: ...


@overload
def load_config(
    path: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None, *, cls: type[C]
) -> C: ...


@overload
def load_config(
    path: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None, *, cls: None
) -> GRPOConfig | PPOConfig: ...


def load_config(
    path: str | os.PathLike | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    cls: type[BaseModel] | None = GRPOConfig,
) -> BaseModel:
    """Read a YAML config (or start from the defaults), apply overrides, validate.

    Returns an instance of ``cls`` (any config class, :class:`GRPOConfig` by default); ``cls=None`` picks
    the class from the ``trainer`` field of the file or the overrides (:data:`TRAINER_CONFIGS`). Raises ``ConfigError`` for a missing or malformed file, unknown keys (with a
    suggestion) and invalid values, always naming the file and the field.
    """
    data: dict[str, Any] = {}
    source = "config"
    if path is not None:
        source = str(path)
        data = read_config_file(path)
    if cls is None:
        cls = trainer_config_class(data, overrides)
    if overrides:
        data = apply_overrides(cls, data, overrides)
    return build_config(cls, data, source=source)


def save_config(config: BaseModel, path: str | os.PathLike) -> None:
    """Write the fully resolved config (every field, defaults included) as YAML."""
    Path(path).write_text(
        yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, default_flow_style=None),
        encoding="utf-8",
    )
