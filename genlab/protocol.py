"""The protocol every genlab model follows, and the one explicit model registry.

A model is a ``torch.nn.Module`` subclass of :class:`GenerativeModel`. Its typed constructor
arguments *are* its config: :func:`build_model` passes the data set's :class:`~genlab.data.DataSpec`
plus user keyword arguments, and checkpoints store ``{name, kwargs, weights}`` so the model can be
rebuilt without pickle.
"""

from __future__ import annotations

import collections.abc
import inspect
import types
import typing
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from .data.spec import DataSpec

Modalities = "Tensor | dict[str, Tensor]"


class GenerativeModel(nn.Module):
    """Base class: one generative model of p(x) or p(x | c).

    Subclasses implement :meth:`loss` and whichever of :meth:`log_prob`, :meth:`sample` and
    :meth:`encode` they support; the unsupported ones raise ``NotImplementedError`` with a reason.
    ``likelihood`` says what ``log_prob`` returns: ``"exact"`` log-likelihood, a lower ``"bound"``
    (ELBO / IWAE), or ``"none"``. ``discrete`` says whether ``log_prob`` is a log probability *mass*
    on the data's levels (True) or a log *density* of the dequantized data in [0, 1] (False); the
    bits-per-dimension helper needs it to make the two comparable.
    """

    likelihood: ClassVar[Literal["exact", "bound", "none"]] = "none"
    #: Human-readable list of what the model supports, shown by ``genlab models``.
    capabilities: ClassVar[tuple[str, ...]] = ()
    #: Call ``loss(batch)`` afresh before stepping each loss key after the first (alternating
    #: updates, e.g. a GAN's generator against the just-updated discriminator).
    recompute_loss_per_group: ClassVar[bool] = False
    #: Name under which the class is registered (set by :func:`register`).
    registry_name: ClassVar[str] = ""
    #: Training settings this family needs to train in about a minute on a CPU (e.g. a smaller
    #: batch for sequence models); ``genlab train`` applies them under the user's settings.
    train_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, spec: DataSpec) -> None:
        super().__init__()
        self.spec = spec
        self.conditional = False
        self.discrete = False
        #: The batch key holding what the model models ("x"; a language model on captions: "text").
        self.data_key = "x"

    # --- the protocol -------------------------------------------------------------------------
    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Training objective(s) for one batch: ``{"loss": scalar}`` for one optimizer, or one key
        per parameter group (see :meth:`parameter_groups`). Extra keys are logged only."""
        raise NotImplementedError(f"{type(self).__name__} does not define a training loss")

    def log_prob(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """[B] log-likelihood of each example in nats (exact, or a lower bound; see ``likelihood``)."""
        raise NotImplementedError(f"{type(self).__name__} has no likelihood (likelihood='none')")

    def sample(self, n: int, cond: Tensor | None = None, *, generator: torch.Generator | None = None) -> Tensor:
        """[n, *data_shape] samples in the same space and range as the training data."""
        raise NotImplementedError(f"{type(self).__name__} cannot sample")

    def encode(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """[B, z_dim] representation of each example."""
        raise NotImplementedError(f"{type(self).__name__} has no encoder")

    def validation_metrics(self, data: Any) -> dict[str, float] | None:
        """Optional validation for models without a likelihood: metrics on ``data`` (a validation
        split), the first of which the trainer minimizes to select the best weights. Default None:
        the trainer falls back to the mean training loss."""
        return None

    # --- helpers shared by the trainer and the CLI ----------------------------------------------
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters stepped by each loss key. Default: every parameter under ``"loss"``."""
        return {"loss": [p for p in self.parameters() if p.requires_grad]}

    def optimizer_settings(self) -> dict[str, dict[str, Any]]:
        """Per loss key AdamW settings that differ from the training config, e.g. a GAN's
        ``{"generator": {"lr": 2e-4, "betas": (0.5, 0.999)}}``; the schedule scales each ``lr``."""
        return {}

    def condition(self, batch: dict[str, Tensor]) -> Tensor | None:
        """What this model conditions on in ``batch`` (``"cond"``, else class ids ``"y"``), or None."""
        if not self.conditional:
            return None
        if "cond" in batch:
            return batch["cond"]
        if "y" in batch:
            return batch["y"]
        raise KeyError("conditional model needs 'cond' or 'y' in the batch; the data set has neither")

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")


_REGISTRY: dict[str, type[GenerativeModel]] = {}


def register(name: str) -> Callable[[type[GenerativeModel]], type[GenerativeModel]]:
    """Class decorator: make ``cls`` buildable as ``build_model(name, spec, **kwargs)``."""

    def deco(cls: type[GenerativeModel]) -> type[GenerativeModel]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"model name {name!r} is already registered to {_REGISTRY[name].__name__}")
        cls.registry_name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def _ensure_models_imported() -> None:
    # Importing the package registers every built-in family exactly once.
    from . import models  # noqa: F401


def list_models() -> dict[str, type[GenerativeModel]]:
    """Registered model names mapped to their classes, sorted by name."""
    _ensure_models_imported()
    return dict(sorted(_REGISTRY.items()))


def model_kwargs(name: str) -> dict[str, inspect.Parameter]:
    """The constructor parameters (the config) of model ``name``, excluding ``spec``."""
    cls = get_model_class(name)
    params = inspect.signature(cls.__init__).parameters
    return {k: p for k, p in params.items() if k not in ("self", "spec")}


def get_model_class(name: str) -> type[GenerativeModel]:
    _ensure_models_imported()
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; expected one of: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def build_model(name: str, data_spec: DataSpec, **config: Any) -> GenerativeModel:
    """Build registered model ``name`` sized from ``data_spec``; ``config`` sets constructor keys.

    Unknown keys raise a one-line ``ValueError`` that lists the valid ones, so a typo in
    ``--set z_dim=16`` never silently trains the default model.
    """
    cls = get_model_class(name)
    valid = model_kwargs(name)
    bad = [k for k in config if k not in valid]
    if bad:
        raise ValueError(f"model {name!r} has no option {bad[0]!r}; valid options: {', '.join(valid)}")
    hints = _constructor_hints(cls)
    for k, v in config.items():
        if k in hints and not value_matches(v, hints[k]):
            raise ValueError(f"model {name!r} option {k}={v!r}: expected {describe_type(hints[k])}")
    model = cls(data_spec, **config)
    model.init_kwargs = dict(config)  # stored in checkpoints to rebuild the model
    return model


# --- checking option values against the constructor's type hints ------------------------------


def _constructor_hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls.__init__)
    except Exception:  # unresolvable annotations: skip the check rather than block the model
        return {}


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
