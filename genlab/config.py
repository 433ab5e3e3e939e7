"""Settings as users write them: ``--set key=value`` / ``--data-opt key=value`` parsing, YAML config
files, the split of flat settings into training keys and model options, and the check of an option
value against the type hint of the constructor argument it sets.

Every error is a one-line :class:`ConfigError` (a ``ValueError``) that names the bad value. This
module knows no model family and no trainer: callers pass the key sets to route settings to.
"""

from __future__ import annotations

import collections.abc
import os
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml


class ConfigError(ValueError):
    """A bad setting, option or config file: printed by the CLI as one line."""


# --- key=value settings -----------------------------------------------------------------------------


def parse_assignments(items: Sequence[str], flag: str) -> dict[str, Any]:
    """``["steps=500", "hidden=[64, 64]"]`` -> ``{"steps": 500, "hidden": [64, 64]}``.

    Values are read as YAML (numbers, booleans, lists, null); ``2e-3`` (which YAML 1.1 leaves a
    string) is a float; anything else stays a string. ``flag`` names the option in errors.
    """
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item or not item.split("=", 1)[0]:
            raise ConfigError(f"{flag} expects key=value; got {item!r}")
        k, v = item.split("=", 1)
        try:
            val = yaml.safe_load(v) if v != "" else ""
        except yaml.YAMLError:
            val = v
        if isinstance(val, str):  # YAML 1.1 reads 2e-3 (no dot) as a string; a number was meant
            try:
                val = float(val)
            except ValueError:
                pass
        out[k.strip()] = val
    return out


def split_settings(
    settings: Mapping[str, Any], *, train_keys: Iterable[str], model_keys: Iterable[str], model: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Route flat ``key=value`` settings to the trainer (``train_keys``) or the constructor of model
    ``model`` (``model_keys``): returns ``(train, model_kwargs)``. A key in neither is an error
    that lists both sets."""
    train_keys, model_keys = set(train_keys), set(model_keys)
    train: dict[str, Any] = {}
    mk: dict[str, Any] = {}
    for k, v in settings.items():
        if k in train_keys:
            train[k] = v
        elif k in model_keys:
            mk[k] = v
        else:
            raise ConfigError(
                f"unknown setting {k!r}: not a training key ({', '.join(sorted(train_keys))})"
                f" nor an option of model {model!r} ({', '.join(sorted(model_keys))})"
            )
    return train, mk


def read_config_file(path: str | os.PathLike | None) -> dict[str, Any]:
    """The settings of a YAML config file (flat keys, or ``model:``/``train:``/``data_opts:``
    sections); ``{}`` for no path or an empty file. Anything but a mapping is an error."""
    if path is None:
        return {}
    from .checkpoint import read_yaml

    cfg = read_yaml(path)
    if cfg is None:
        return {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of settings; got {type(cfg).__name__}")
    return cfg


# --- option values against type hints ---------------------------------------------------------------


def constructor_hints(cls: type) -> dict[str, Any]:
    """The resolved type hints of ``cls.__init__`` ({} when they cannot be resolved, so that an
    exotic annotation never blocks building the model)."""
    try:
        return typing.get_type_hints(cls.__init__)
    except Exception:  # unresolvable annotations: skip the check rather than block the model
        return {}


def check_options(options: Mapping[str, Any], hints: Mapping[str, Any], what: str) -> None:
    """Raise a one-line :class:`ConfigError` for the first option whose value does not fit its type
    hint: ``"{what} {key}={value!r}: expected {type}"`` (options without a hint pass)."""
    for k, v in options.items():
        if k in hints and not value_matches(v, hints[k]):
            raise ConfigError(f"{what} {k}={v!r}: expected {describe_type(hints[k])}")


def value_matches(value: Any, hint: Any) -> bool:
    """Whether a config value (as YAML gives it: int, float, bool, str, list, dict, None) fits a
    type hint; unknown hints accept anything."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(value_matches(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is typing.Literal:
        return value in args
    if origin in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(value_matches(v, a) for v, a in zip(value, args))
        return not args or all(value_matches(v, args[0]) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return True


def describe_type(hint: Any) -> str:
    """A type hint in words for error messages: ``int or null``, ``a list of int (e.g. [256, 256])``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe_type(a) for a in args)
    if hint is type(None):
        return "null"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, tuple, collections.abc.Sequence):
        inner = describe_type(args[0]) if args else "value"
        return f"a list of {inner} (e.g. [256, 256])" if inner in ("int", "float") else f"a list of {inner}"
    return getattr(hint, "__name__", str(hint))
