"""User data from disk: a folder of images, a ``.npy``/``.npz`` array file, or a UTF-8 ``.txt`` file.

Every loader validates its input and raises a one-line :class:`InvalidDataError` naming the path (or
file) and what was expected. Arrays and images are split deterministically 80/10/10 with
:func:`split_indices` (seeded; ``seed=`` option), text contiguously 90/5/5 (see ``text.py``).
Nothing is ever unpickled: ``np.load(..., allow_pickle=False)``.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .base import InvalidDataError, TensorDataset, check_split, discrete_to_float, split_indices
from .spec import DataSpec
from .text import load_text_file

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
_FOLDER_OPTS = {"size", "grayscale", "seed"}
_ARRAY_OPTS = {"levels", "seed"}
_TEXT_OPTS = {"tokenizer", "block_size", "vocab"}


def load_path(path: str, split: str = "train", **opts: Any) -> TensorDataset:
    """Load a user path as one split, dispatching on what it is.

    A directory: images (PNG/JPEG/BMP/GIF), labelled by sub-folder name when they sit in
    sub-folders (options ``size``, ``grayscale``, ``seed``). ``.npy``: one array [N, ...];
    ``.npz``: key ``"x"`` plus optional ``"y"`` labels [N] and ``"factors"`` [N, K] (options
    ``levels``, ``seed``). ``.txt``: token blocks (options ``tokenizer``, ``block_size``, ``vocab``).
    """
    check_split(split)
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InvalidDataError(f"data path {path!r} does not exist")
    if os.path.isdir(path):
        _check_opts(path, opts, _FOLDER_OPTS)
        return load_image_folder(path, split, **opts)
    ext = os.path.splitext(path)[1].lower()
    if ext in (".npy", ".npz"):
        _check_opts(path, opts, _ARRAY_OPTS)
        return load_array_file(path, split, **opts)
    if ext == ".txt":
        _check_opts(path, opts, _TEXT_OPTS)
        return load_text_file(path, split, **opts)
    raise InvalidDataError(
        f"data file {path!r} has unsupported extension {ext or '(none)'!r}; "
        "expected a folder of images, .npy, .npz or .txt"
    )


def _check_opts(path: str, opts: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(opts) - allowed)
    if unknown:
        raise InvalidDataError(
            f"option(s) {', '.join(unknown)} do not apply to {path!r}; expected some of {', '.join(sorted(allowed))}"
        )


def _name(path: str) -> str:
    return os.path.basename(os.path.normpath(path))


# --- arrays ---------------------------------------------------------------------------------------


def load_array_file(path: str, split: str = "train", levels: int | None = None, seed: int = 0) -> TensorDataset:
    """A ``.npy`` array or ``.npz`` archive (``"x"``, optional ``"y"``, ``"factors"``) as one split;
    see :func:`dataset_from_arrays` for how the array is interpreted."""
    if os.path.getsize(path) == 0:
        raise InvalidDataError(f"array file {path!r} is empty (0 bytes)")
    is_npz = path.lower().endswith(".npz")
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as e:
        if "Object arrays" in str(e):
            raise InvalidDataError(
                f"array file {path!r} holds Python objects (dtype=object); expected a numeric array"
            ) from None
        raise InvalidDataError(f"array file {path!r} is not a valid {'.npz' if is_npz else '.npy'} file") from None
    except (OSError, EOFError, zipfile.BadZipFile):
        raise InvalidDataError(f"array file {path!r} is corrupt or truncated") from None
    y = factors = None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            keys = list(loaded.keys())
            if "x" not in keys:
                raise InvalidDataError(
                    f"archive {path!r} has no 'x' array (keys: {', '.join(keys) or 'none'}); "
                    "expected 'x' and optional 'y', 'factors'"
                )
            x = _read_npz_key(loaded, "x", path)
            y = _read_npz_key(loaded, "y", path) if "y" in keys else None
            factors = _read_npz_key(loaded, "factors", path) if "factors" in keys else None
    else:
        if is_npz:
            raise InvalidDataError(f"array file {path!r} is a single .npy array, not an .npz archive")
        x = loaded
    return dataset_from_arrays(x, y, factors, name=_name(path), split=split, levels=levels, seed=seed, where=path)


def _read_npz_key(archive: Any, key: str, path: str) -> np.ndarray:
    try:
        return archive[key]
    except ValueError:
        raise InvalidDataError(
            f"array {key!r} in {path!r} holds Python objects (dtype=object); expected a numeric array"
        ) from None
    except (OSError, EOFError, zipfile.BadZipFile):
        raise InvalidDataError(f"array {key!r} in {path!r} is corrupt or truncated") from None


def dataset_from_arrays(
    x: np.ndarray,
    y: np.ndarray | None = None,
    factors: np.ndarray | None = None,
    *,
    name: str = "arrays",
    split: str = "train",
    levels: int | None = None,
    seed: int = 0,
    where: str | None = None,
) -> TensorDataset:
    """In-memory arrays as one split (80/10/10, seeded). ``x`` [N, D] float -> continuous vectors;
    [N, D] integer -> discrete vectors; [N, H, W] -> 1-channel images; [N, C, H, W] or [N, H, W, C]
    (C <= 4) -> images. Integer data carry ``levels`` (default 256 for uint8, else max + 1) and are
    handed to models as floats level / (levels - 1) in [0, 1]; float images must lie in [0, 1].
    ``y`` [N] integer labels, ``factors`` [N, K] integer factors. ``where`` names the source in errors."""
    check_split(split)
    src = where or name
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise InvalidDataError(f"data {src!r} has dtype {x.dtype}; expected an integer, boolean or float array")
    if x.ndim not in (2, 3, 4):
        raise InvalidDataError(
            f"data {src!r} has {x.ndim} dims (shape {x.shape}); "
            "expected [N, D] vectors, [N, H, W] or [N, C, H, W]/[N, H, W, C] images"
        )
    if x.shape[0] == 0:
        raise InvalidDataError(f"data {src!r} has zero rows (shape {x.shape}); expected at least one example")
    if 0 in x.shape:
        raise InvalidDataError(f"data {src!r} has an empty dimension (shape {x.shape}); expected every dimension >= 1")
    if x.dtype.kind == "f":
        # Checked before any transpose so the reported index is in the caller's layout.
        bad = ~np.isfinite(x)
        n_bad = int(bad.sum())
        if n_bad:
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise InvalidDataError(f"data {src!r} has {n_bad} NaN/inf value(s); the first is at index {first}")
    if x.ndim == 4:
        if x.shape[1] <= 4:
            pass  # [N, C, H, W]
        elif x.shape[3] <= 4:
            x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # [N, H, W, C] -> [N, C, H, W]
        else:
            raise InvalidDataError(
                f"data {src!r} has shape {x.shape}: neither axis 1 nor axis 3 looks like 1-4 channels; "
                "expected [N, C, H, W] or [N, H, W, C]"
            )
    elif x.ndim == 3:
        x = x[:, None]
    kind = "vector" if x.ndim == 2 else "image"
    n = len(x)

    if x.dtype.kind == "f":
        if levels is not None:
            raise InvalidDataError(
                f"levels={levels!r} was given but data {src!r} is float; levels apply to integer arrays"
            )
        if kind == "image" and (x.min() < 0 or x.max() > 1):
            raise InvalidDataError(
                f"float images in {src!r} span [{float(x.min()):g}, {float(x.max()):g}]; "
                "expected values in [0, 1] (or integer levels)"
            )
        data = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        spec_levels, value_range = None, ((0.0, 1.0) if kind == "image" else None)
    else:
        xi = x.astype(np.int64)
        lo, hi = int(xi.min()), int(xi.max())
        if lo < 0:
            raise InvalidDataError(f"integer data {src!r} has negative values (min {lo}); expected levels 0..L-1")
        if levels is None:
            spec_levels = 256 if x.dtype == np.uint8 else max(hi + 1, 2)
        else:
            if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or levels < 2:
                raise InvalidDataError(f"levels={levels!r} is invalid; expected an integer >= 2")
            if hi >= levels:
                raise InvalidDataError(f"levels={levels} is too small for data {src!r}: its values go up to {hi}")
            spec_levels = int(levels)
        data = discrete_to_float(xi, spec_levels)
        value_range = (0.0, 1.0)

    tensors: dict[str, torch.Tensor] = {"x": data}
    num_classes = factor_sizes = factor_names = None
    if y is not None:
        yi = _integer_column(np.asarray(y), n, "labels 'y'", src, ndim=1)
        num_classes = int(yi.max()) + 1
        tensors["y"] = torch.from_numpy(yi)
    if factors is not None:
        fi = _integer_column(np.asarray(factors), n, "factors", src, ndim=2)
        factor_sizes = tuple(int(s) + 1 for s in fi.max(axis=0))
        factor_names = tuple(f"factor{k}" for k in range(fi.shape[1]))
        tensors["factors"] = torch.from_numpy(fi)

    idx = split_indices(n, split, seed=seed)
    if len(idx) == 0:
        raise InvalidDataError(f"split {split!r} of {src!r} is empty: {n} examples are too few for an 80/10/10 split")
    spec = DataSpec(
        name=name,
        kind=kind,  # type: ignore[arg-type]
        shape=tuple(int(s) for s in data.shape[1:]),
        value_range=value_range,
        levels=spec_levels,
        num_classes=num_classes,
        factor_names=factor_names,
        factor_sizes=factor_sizes,
    )
    index = torch.from_numpy(idx)
    return TensorDataset({k: v[index] for k, v in tensors.items()}, spec, split)


def _integer_column(a: np.ndarray, n: int, what: str, src: str, ndim: int) -> np.ndarray:
    if a.ndim != ndim:
        want = "[N]" if ndim == 1 else "[N, K]"
        raise InvalidDataError(f"{what} of {src!r} have shape {a.shape}; expected {want}")
    if len(a) != n:
        raise InvalidDataError(f"{what} of {src!r} have {len(a)} rows but 'x' has {n}; expected one per example")
    if a.dtype.kind not in "biu":
        raise InvalidDataError(f"{what} of {src!r} have dtype {a.dtype}; expected integers")
    a = a.astype(np.int64)
    if a.size and a.min() < 0:
        raise InvalidDataError(f"{what} of {src!r} have negative values (min {int(a.min())}); expected ids >= 0")
    return a


# --- image folders --------------------------------------------------------------------------------


def _is_image(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _images_under(folder: str) -> list[str]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(root, f) for f in sorted(files) if _is_image(f)]
    return found


def _parse_size(size: Any) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        hw = (int(size), int(size))
    elif isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(s, (int, np.integer)) for s in size):
        hw = (int(size[0]), int(size[1]))
    else:
        raise InvalidDataError(f"image size={size!r} is invalid; expected an integer or (height, width)")
    if min(hw) < 1:
        raise InvalidDataError(f"image size={size!r} is invalid; expected positive sides")
    return hw


def load_image_folder(
    path: str,
    split: str = "train",
    size: int | Sequence[int] | None = None,
    grayscale: bool | None = None,
    seed: int = 0,
) -> TensorDataset:
    """A folder of images as ``"x"`` float32 [N, C, H, W] in [0, 1] (256 levels), plus ``"y"``
    labels when the images sit in sub-folders (one class per sub-folder, sorted by name; images
    anywhere below a class folder belong to it). ``size`` (int or (H, W)) resizes every image;
    without it all images must share one size. ``grayscale`` True/False forces 1 or 3 channels;
    None picks 1 channel when every image is gray (R = G = B). Alpha is dropped."""
    check_split(split)
    hw = _parse_size(size)
    entries = sorted(e for e in os.listdir(path) if not e.startswith("."))
    subdirs = [e for e in entries if os.path.isdir(os.path.join(path, e))]
    top_images = [os.path.join(path, e) for e in entries if os.path.isfile(os.path.join(path, e)) and _is_image(e)]
    class_files = {d: _images_under(os.path.join(path, d)) for d in subdirs}
    class_files = {d: fs for d, fs in class_files.items() if fs}
    if top_images and class_files:
        raise InvalidDataError(
            f"image folder {path!r} mixes images at its top level with class sub-folders ({', '.join(class_files)}); "
            "expected one or the other"
        )
    if class_files:
        class_names: tuple[str, ...] | None = tuple(sorted(class_files))
        files = [f for c in class_names for f in class_files[c]]
        labels: np.ndarray | None = np.concatenate([np.full(len(class_files[c]), k) for k, c in enumerate(class_names)])
    else:
        class_names, files, labels = None, top_images, None
    if not files:
        raise InvalidDataError(f"image folder {path!r} has no images; expected {', '.join(IMAGE_EXTENSIONS)} files")

    arrays = [_read_image(f, hw, grayscale) for f in files]
    if hw is None:
        first = arrays[0].shape[:2]
        for f, a in zip(files, arrays):
            if a.shape[:2] != first:
                raise InvalidDataError(
                    f"images in {path!r} differ in size: "
                    f"{os.path.relpath(files[0], path)!r} is {first[0]}x{first[1]} but "
                    f"{os.path.relpath(f, path)!r} is {a.shape[0]}x{a.shape[1]} (HxW); pass size= to resize"
                )
    stack = np.stack(arrays)  # [N, H, W, 3] or [N, H, W, 1] uint8
    if grayscale is None and stack.shape[-1] == 3 and (stack[..., :1] == stack).all():
        stack = stack[..., :1]
    x = np.ascontiguousarray(stack.transpose(0, 3, 1, 2))
    return _with_name(
        dataset_from_arrays(x, labels, name=_name(path), split=split, levels=256, seed=seed, where=path),
        class_names,
    )


def _with_name(ds: TensorDataset, class_names: tuple[str, ...] | None) -> TensorDataset:
    if class_names is None:
        return ds
    import dataclasses

    spec = dataclasses.replace(ds.spec, num_classes=len(class_names), class_names=class_names)
    return TensorDataset(ds.tensors, spec, ds.split)


def _read_image(file: str, hw: tuple[int, int] | None, grayscale: bool | None) -> np.ndarray:
    """One image file -> uint8 [H, W, C] (C = 1 if ``grayscale`` else 3), resized to ``hw``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as im:
            im.load()  # decode now, so truncated or corrupt data fails here, naming this file
            im = im.convert("L" if grayscale else "RGB")
            if hw is not None and im.size != (hw[1], hw[0]):
                im = im.resize((hw[1], hw[0]), Image.Resampling.LANCZOS)
            a = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InvalidDataError(f"image {file!r} cannot be read ({reason})") from None
    return a[..., None] if a.ndim == 2 else a
