"""The one explicit model registry: a name -> ``"module:Class"`` line per built-in family, plus
:func:`register` for user plugins.

Built-in families are imported on first use (``importlib``), so listing names, ``--help`` and
commands that need one model never import every family, and no family module imports this one.
Adding a family = one model file in ``genlab/models/`` + one line in :data:`BUILTIN`.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import os
import warnings
from collections.abc import Callable
from typing import Any

import torch

from .config import ConfigError, check_options, constructor_hints
from .data.spec import DataSpec
from .protocol import GenerativeModel

#: Built-in model name -> "module:Class" (imported lazily by :func:`get_model_class`).
BUILTIN: dict[str, str] = {
    "betatcvae": "genlab.models.tcvae:BetaTCVAE",
    "captioner": "genlab.models.captioner:RepresentationCaptioner",
    "dcgan": "genlab.models.gan:DCGAN",
    "ddpm": "genlab.models.ddpm:DDPM",
    "factorvae": "genlab.models.tcvae:FactorVAE",
    "frozen": "genlab.models.frozen:FrozenCaptioner",
    "glow": "genlab.models.flows.glow:Glow",
    "made": "genlab.models.made:MADE",
    "maf": "genlab.models.flows.maf:MAF",
    "mmvae": "genlab.models.multimodal:MMVAE",
    "mmvaeplus": "genlab.models.multimodal:MMVAEPlus",
    "mopoe": "genlab.models.multimodal:MoPoE",
    "mvae": "genlab.models.multimodal:MVAE",
    "nsf": "genlab.models.flows.nsf:NSF",
    "pixelcnn": "genlab.models.pixelcnn:PixelCNN",
    "pixelcnn_text": "genlab.models.text_pixelcnn:TextPixelCNN",
    "realnvp": "genlab.models.flows.realnvp:RealNVP",
    "sentencevae": "genlab.models.sentence_vae:SentenceVAE",
    "summarizer": "genlab.models.summarizer:Summarizer",
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
    ``--set z_dim=16`` never silently trains the default model. Sizes too large for this
    machine (``z_dim=10**9``) are refused the same way before any memory is allocated: the model
    is first built on PyTorch's ``meta`` device (shapes only) and its weights are weighed against
    the memory available (:func:`available_memory`).
    """
    cls = get_model_class(name)
    valid = model_kwargs(name)
    bad = [k for k in config if k not in valid]
    if bad:
        raise ConfigError(f"model {name!r} has no option {bad[0]!r}; valid options: {', '.join(valid)}")
    check_options(config, constructor_hints(cls), f"model {name!r} option")
    need, have = weights_bytes(cls, data_spec, config), available_memory()
    if need is not None and have is not None and need > have:
        opts = ", ".join(f"{k}={v!r}" for k, v in config.items()) or "its default options"
        raise ConfigError(
            f"model {name!r} with {opts} needs {format_bytes(need)} for its weights alone, more than the "
            f"{format_bytes(have)} of memory available; choose smaller sizes"
        )
    model = cls(data_spec, **config)
    model.init_kwargs = dict(config)  # stored in checkpoints to rebuild the model
    return model


# --- sizes against memory ----------------------------------------------------------------------
def weights_bytes(cls: type[GenerativeModel], spec: DataSpec, config: dict[str, Any]) -> int | None:
    """Bytes of the parameters and buffers that ``cls(spec, **config)`` allocates, found by building
    it on the ``meta`` device (shapes without storage: no memory, no random numbers drawn); None if
    the constructor cannot run there (it reads tensor values, or refuses the options: the real build
    then says why)."""
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the real build warns, once
            model = cls(spec, **config)
    except Exception:
        return None
    return sum(t.numel() * t.element_size() for t in itertools.chain(model.parameters(), model.buffers()))


def available_memory() -> int | None:
    """Bytes of memory this process can still get: the kernel's ``MemAvailable`` (Linux), capped by
    a cgroup (container) limit; else the free physical pages; None where none of these is known."""
    found: list[int] = []
    try:
        with open("/proc/meminfo") as f:
            found += [int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")]
    except (OSError, ValueError, IndexError):
        pass
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),  # v1
    ):
        try:
            with open(limit_file) as f:
                limit = f.read().strip()
            with open(usage_file) as f:
                usage = int(f.read().strip())
            if limit != "max":
                found.append(int(limit) - usage)
        except (OSError, ValueError):
            pass
    if not found:
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            pass
    return max(0, min(found)) if found else None


def format_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``: a byte count for a message."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"
