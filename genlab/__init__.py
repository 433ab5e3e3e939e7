"""genlab: deep generative models across modalities with one protocol, trainer, evaluation and CLI.

The public names are imported on first use (PEP 562 ``__getattr__``): ``import genlab.cli``, what the
``genlab`` command runs first, imports no torch, so a Ctrl-C in the slow first seconds reaches the
command's handler (one line, exit 130) instead of printing a traceback from inside torch's import.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name -> the genlab module that defines it.
_EXPORTS = {
    "Capabilities": "protocol",
    "DataSpec": "data.spec",
    "GenerativeModel": "protocol",
    "TrainConfig": "train",
    "Trainer": "train",
    "build_model": "registry",
    "evaluate": "evaluate",
    "list_datasets": "data",
    "list_models": "registry",
    "load_dataset": "data",
    "load_run": "runs",
    "register": "registry",
}

if TYPE_CHECKING:  # what type checkers and IDEs see; never executed
    from .data import list_datasets, load_dataset
    from .data.spec import DataSpec
    from .evaluate import evaluate
    from .protocol import Capabilities, GenerativeModel
    from .registry import build_model, list_models, register
    from .runs import load_run
    from .train import TrainConfig, Trainer

__all__ = [
    "Capabilities",
    "DataSpec",
    "GenerativeModel",
    "TrainConfig",
    "Trainer",
    "build_model",
    "evaluate",
    "list_datasets",
    "list_models",
    "load_dataset",
    "load_run",
    "register",
]


class _Package(types.ModuleType):
    """genlab's module type. Importing a submodule binds it as an attribute of its package, and
    ``genlab.evaluate`` names both a submodule and the function it defines: the function stays the
    attribute (as an eager ``from .evaluate import evaluate`` would leave it)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == name:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    elif name.isidentifier() and not name.startswith("__") and importlib.util.find_spec(f"{__name__}.{name}"):
        # a submodule used as an attribute (genlab.metrics), as after an eager import
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
