"""The one explicit model registry: a name -> ``"module:Class"`` line per built-in family, plus
:func:`register` for user plugins.

Built-in families are imported on first use (``importlib``), so listing names, ``--help`` and
commands that need one model never import every family, and no family module imports this one.
Adding a family = one model file in ``genlab/models/`` + one line in :data:`BUILTIN`.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from .config import ConfigError, check_options, constructor_hints
from .data.spec import DataSpec
from .protocol import GenerativeModel

#: Built-in model name -> "module:Class" (imported lazily by :func:`get_model_class`).
BUILTIN: dict[str, str] = {
    "dcgan": "genlab.models.gan:DCGAN",
    "glow": "genlab.models.flows.glow:Glow",
    "made": "genlab.models.made:MADE",
    "maf": "genlab.models.flows.maf:MAF",
    "nsf": "genlab.models.flows.nsf:NSF",
    "pixelcnn": "genlab.models.pixelcnn:PixelCNN",
    "realnvp": "genlab.models.flows.realnvp:RealNVP",
    "transformer": "genlab.models.transformer:TransformerLM",
    "vae": "genlab.models.vae:VAE",
    "wavenet": "genlab.models.wavenet:WaveNet",
    "wgan_gp": "genlab.models.gan:WGANGP",
}

#: Classes loaded so far: built-ins on first use, user plugins at :func:`register`.
_LOADED: dict[str, type[GenerativeModel]] = {}


def register(name: str) -> Callable[[type[GenerativeModel]], type[GenerativeModel]]:
    """Class decorator for user models: make ``cls`` buildable as ``build_model(name, spec, **kwargs)``
    (and loadable from run folders). A name already taken by another class is an error."""

    def deco(cls: type[GenerativeModel]) -> type[GenerativeModel]:
        if not (isinstance(cls, type) and issubclass(cls, GenerativeModel)):
            raise TypeError(f"register({name!r}) expects a GenerativeModel subclass; got {cls!r}")
        taken = _LOADED.get(name)
        if (taken is not None and taken is not cls) or (taken is None and name in BUILTIN):
            owner = taken.__name__ if taken is not None else BUILTIN[name]
            raise ValueError(f"model name {name!r} is already registered to {owner}")
        cls.registry_name = name
        _LOADED[name] = cls
        return cls

    return deco


def model_names() -> list[str]:
    """Every registered model name, sorted, without importing any family."""
    return sorted({*BUILTIN, *_LOADED})


def get_model_class(name: str) -> type[GenerativeModel]:
    """The class registered as ``name`` (a built-in family is imported now if it was not yet)."""
    if name in _LOADED:
        return _LOADED[name]
    if name not in BUILTIN:
        raise ValueError(f"unknown model {name!r}; expected one of: {', '.join(model_names())}")
    module, _, attr = BUILTIN[name].partition(":")
    cls = getattr(importlib.import_module(module), attr)
    cls.registry_name = name
    _LOADED[name] = cls
    return cls


def list_models() -> dict[str, type[GenerativeModel]]:
    """Registered model names mapped to their classes, sorted by name (imports every family)."""
    return {name: get_model_class(name) for name in model_names()}


def model_kwargs(name: str) -> dict[str, inspect.Parameter]:
    """The constructor parameters (the config) of model ``name``, excluding ``spec``."""
    params = inspect.signature(get_model_class(name).__init__).parameters
    return {k: p for k, p in params.items() if k not in ("self", "spec")}


def build_model(name: str, data_spec: DataSpec, **config: Any) -> GenerativeModel:
    """Build registered model ``name`` sized from ``data_spec``; ``config`` sets constructor keys.

    Unknown keys, and values that do not fit the constructor's type hints, raise a one-line
    ``ValueError`` that lists the valid options (or the expected type), so a typo in
    ``--set z_dim=16`` never silently trains the default model.
    """
    cls = get_model_class(name)
    valid = model_kwargs(name)
    bad = [k for k in config if k not in valid]
    if bad:
        raise ConfigError(f"model {name!r} has no option {bad[0]!r}; valid options: {', '.join(valid)}")
    check_options(config, constructor_hints(cls), f"model {name!r} option")
    model = cls(data_spec, **config)
    model.init_kwargs = dict(config)  # stored in checkpoints to rebuild the model
    return model
