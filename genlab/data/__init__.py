"""Built-in data sets (procedural or shipped inside a dependency; nothing is downloaded) and
loaders for user files. ``load_dataset(name_or_path, split)`` returns a :class:`TensorDataset`."""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable
from typing import Any

from .base import InvalidDataError, TensorDataset, split_indices
from .spec import DataSpec

TOY_NAMES = ("moons", "circles", "8gaussians", "checkerboard", "pinwheel", "2spirals", "rings")

#: Built-in data sets: name -> (module in this package, loader function, description). Modules are
#: imported on first use; the loader's keyword parameters other than ``split`` (and a toy's
#: ``name``) are the options ``--data-opt`` accepts.
_BUILTIN: dict[str, tuple[str, str, str]] = {
    "digits": (
        "digits",
        "load_digits",
        "scikit-learn 8x8 digits: 1x8x8 images, 17 levels, 10 classes; 1000/350/447 split",
    ),
    **{
        t: ("toy2d", "load_toy", f"2-D toy '{t}' (FFJORD generator and scaling), continuous vectors") for t in TOY_NAMES
    },
    "shapes": (
        "shapes",
        "load_shapes",
        "dSprites regenerator: 1x64x64 binary images with 5 factors (737,280 combinations)",
    ),
    "shapes-captions": (
        "shapes",
        "load_shapes_captions",
        "3x32x32 coloured shapes with an English caption per image ('text' tokens); captions parse back to factors",
    ),
    "shapes-summary": (
        "summary",
        "load_shapes_summary",
        "shapes-captions for summarization: an image, a caption with some factors withheld ('text'), and a "
        "summary ('summary', e.g. 'red heart, top left') whose facts are in the text, the image or both",
    ),
    "shapes-av": (
        "shapes_av",
        "load_shapes_av",
        "shapes-captions plus a 0.25 s 8-bit mu-law clip ('audio') whose pitch, timbre, loudness and envelope "
        "encode colour, shape, size and horizontal position",
    ),
    "tones": (
        "audio",
        "load_tones",
        "procedural melodies: 1,024-sample clips at 4 kHz, 8-bit mu-law audio in [-1, 1]; 2000/200/200",
    ),
}
_NOT_OPTIONS = ("split", "name")
#: Options whose default has changed, with their earlier value: a run saved before config.yaml kept
#: every data option (config version 1) reloads its data with these (see genlab.runs.saved_data_opts).
LEGACY_OPTIONS: dict[str, dict[str, Any]] = {"shapes-av": {"phase": "random"}}


def _loader(name: str) -> Callable[..., TensorDataset]:
    module, func, _ = _BUILTIN[name]
    return getattr(importlib.import_module(f".{module}", __name__), func)


def dataset_options(name: str) -> dict[str, Any]:
    """The options (keyword arguments) a built-in data set takes, mapped to their defaults."""
    if name not in _BUILTIN:
        raise InvalidDataError(f"unknown data set {name!r}; expected a built-in name ({', '.join(_BUILTIN)})")
    params = inspect.signature(_loader(name)).parameters.values()
    return {
        p.name: p.default
        for p in params
        if p.name not in _NOT_OPTIONS and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def _check_options(name: str, opts: dict[str, Any]) -> None:
    allowed = dataset_options(name)
    unknown = [k for k in opts if k not in allowed]
    if not unknown:
        return
    bad = ", ".join(repr(k) for k in unknown)
    what = f"option {bad}" if len(unknown) == 1 else f"options {bad}"
    if not allowed:
        raise InvalidDataError(f"data set {name!r} takes no options; got {what}")
    listed = ", ".join(f"{k}={v!r}" for k, v in allowed.items())
    raise InvalidDataError(f"data set {name!r} has no {what}; its options: {listed}")


def list_datasets() -> dict[str, str]:
    """Built-in data set names mapped to a one-line description."""
    return {k: v[2] for k, v in _BUILTIN.items()}


def load_dataset(name_or_path: str, split: str = "train", **opts: Any) -> TensorDataset:
    """Load a built-in data set by name, or a user file/folder by path, as one split.

    ``split`` is ``"train"``, ``"val"``, ``"test"`` or ``"all"``; splits are deterministic. User
    paths: a folder of PNG/JPEG images (labels from sub-folder names), a folder of image-caption
    pairs (``captions.csv``/``captions.jsonl``, optional WAV audio; see :mod:`.pairs`), a
    ``.npy``/``.npz`` array file, or a UTF-8 ``.txt`` file (``tokenizer="char"|"word"``). Bad input raises
    :class:`InvalidDataError` with a one-line message; so does an option the data set does not
    take (built-ins: see :func:`dataset_options`; paths: checked by :func:`.files.load_path`).
    """
    if name_or_path in _BUILTIN:
        _check_options(name_or_path, opts)
        load = _loader(name_or_path)
        return (
            load(name_or_path, split, **opts) if "name" in inspect.signature(load).parameters else load(split, **opts)
        )
    if os.path.exists(name_or_path):
        from .files import load_path

        return load_path(name_or_path, split, **opts)
    looks_like_path = os.sep in name_or_path or "." in os.path.basename(name_or_path)
    if looks_like_path:
        raise InvalidDataError(f"data path {name_or_path!r} does not exist")
    raise InvalidDataError(
        f"unknown data set {name_or_path!r}; expected a built-in name ({', '.join(_BUILTIN)}) or an existing path"
    )


__all__ = [
    "DataSpec",
    "TensorDataset",
    "InvalidDataError",
    "load_dataset",
    "list_datasets",
    "dataset_options",
    "split_indices",
    "TOY_NAMES",
]
