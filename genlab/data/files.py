"""User data from disk: a folder of images, a ``.npy``/``.npz`` array file, or a UTF-8 ``.txt`` file
(and the dispatch to ``pairs.py`` for folders of image-caption pairs).

Every loader validates its input and raises a one-line :class:`InvalidDataError` naming the path (or
file) and what was expected. Arrays and images are split deterministically 80/10/10 with
:func:`split_indices` (seeded; ``seed=`` option), text contiguously 90/5/5 (see ``text.py``).
Nothing is ever unpickled (``allow_pickle=False``), no array is allocated from its header alone (the
declared size is checked against the bytes present), and no symlink is followed out of an image
folder or into a loop.
"""

from __future__ import annotations

import ast
import math
import os
import struct
import tokenize
import warnings
import zipfile
import zlib
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
_TEXT_OPTS = {"tokenizer", "block_size", "vocab", "canaries", "repeats", "canary_seed", "canary_digits"}
#: Integer data may have at most this many levels: level / (L - 1) round-trips exactly in float32.
MAX_LEVELS = 2**24


def load_path(path: str, split: str = "train", **opts: Any) -> TensorDataset:
    """Load a user path as one split, dispatching on what it is.

    A directory holding ``captions.csv`` or ``captions.jsonl``: image-caption(-audio) pairs (see
    :func:`.pairs.load_pairs_folder`; a ``.csv``/``.jsonl`` path loads the pairs it lists, relative
    to its folder). Another directory: images (PNG/JPEG/BMP/GIF), labelled by sub-folder name when
    they sit in sub-folders (options ``size``, ``grayscale``, ``seed``). ``.npy``: one array [N, ...];
    ``.npz``: key ``"x"`` plus optional ``"y"`` labels [N] and ``"factors"`` [N, K] (options
    ``levels``, ``seed``). ``.txt``: token blocks (options ``tokenizer``, ``block_size``, ``vocab``; ``canaries``,
    ``repeats``, ``canary_seed``, ``canary_digits`` insert secrets into the training part, for ``genlab audit``).
    """
    check_split(split)
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InvalidDataError(f"data path {path!r} does not exist")
    from .pairs import CAPTION_EXTENSIONS, PAIR_OPTIONS, find_captions_file, load_pairs_folder

    if os.path.isdir(path):
        if find_captions_file(path) is not None or "captions" in opts:
            _check_opts(path, opts, PAIR_OPTIONS)
            return load_pairs_folder(path, split, **opts)
        _check_opts(path, opts, _FOLDER_OPTS)
        return load_image_folder(path, split, **opts)
    ext = os.path.splitext(path)[1].lower()
    if ext in CAPTION_EXTENSIONS:
        _check_opts(path, opts, PAIR_OPTIONS - {"captions"})
        return load_pairs_folder(os.path.dirname(path) or ".", split, captions=os.path.basename(path), **opts)
    if ext in (".npy", ".npz"):
        _check_opts(path, opts, _ARRAY_OPTS)
        return load_array_file(path, split, **opts)
    if ext == ".txt":
        _check_opts(path, opts, _TEXT_OPTS)
        return load_text_file(path, split, **opts)
    raise InvalidDataError(
        f"data file {path!r} has unsupported extension {ext or '(none)'!r}; "
        "expected a folder of images (or of image-caption pairs), .npy, .npz, .txt, or a captions .csv/.jsonl"
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
    see :func:`dataset_from_arrays` for how the array is interpreted.

    Every array's header is checked before anything is allocated: its declared size must fit in the
    bytes the file (or the archive entry, uncompressed) holds and in this machine's memory. Nothing
    is unpickled: object arrays are refused."""
    is_npz = path.lower().endswith(".npz")
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            start = fh.read(len(_NPY_MAGIC))
    except OSError as e:
        raise InvalidDataError(f"array file {path!r} cannot be read ({_reason(e)})") from None
    if size == 0:
        raise InvalidDataError(f"array file {path!r} is empty (0 bytes)")
    if start.startswith(_ZIP_MAGICS):  # what np.load calls an archive, whatever the extension
        arrays = _read_npz(path)
    elif start.startswith(_NPY_MAGIC):
        if is_npz:
            raise InvalidDataError(f"array file {path!r} is a single .npy array, not an .npz archive")
        try:
            with open(path, "rb") as fh:
                arrays = {"x": _read_npy(fh, size, f"array file {path!r}")}
        except OSError as e:
            raise InvalidDataError(f"array file {path!r} cannot be read ({_reason(e)})") from None
    else:
        raise InvalidDataError(f"array file {path!r} is not a valid {'.npz' if is_npz else '.npy'} file")
    return dataset_from_arrays(
        arrays["x"],
        arrays.get("y"),
        arrays.get("factors"),
        name=_name(path),
        split=split,
        levels=levels,
        seed=seed,
        where=path,
    )


_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
_NPZ_KEYS = ("x", "y", "factors")
_MAX_HEADER = 10_000  # bytes of .npy header text, as np.load allows by default
# Failures of a corrupt archive or entry: bad structure, CRC or deflate stream, an unsupported
# compression method or encryption, truncation.
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    OSError,
    EOFError,
    zlib.error,
    NotImplementedError,
    RuntimeError,
    struct.error,
    ValueError,
    UnicodeDecodeError,
)


# Failures of parsing a corrupt header text: ast.literal_eval (also numpy's Python 2 fallback through
# tokenize) and np.dtype on whatever literal it holds.
_HEADER_ERRORS = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    SyntaxError,
    RecursionError,
    MemoryError,
    OverflowError,
    tokenize.TokenError,
)


def _reason(e: BaseException, limit: int = 120) -> str:
    """The first line of an exception's message, shortened, or its type name."""
    lines = str(e).strip().splitlines()
    text = lines[0] if lines else type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short(value: Any, limit: int = 80) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _memory_bytes() -> int | None:
    """Physical memory of this machine in bytes, or None where the OS does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def _read_npz(path: str) -> dict[str, np.ndarray]:
    """The ``"x"``, ``"y"`` and ``"factors"`` entries of an ``.npz`` archive (read with zipfile
    directly, each entry's header checked against its uncompressed size before it is read)."""
    try:
        with zipfile.ZipFile(path) as zf:
            entries: dict[str, list[zipfile.ZipInfo]] = {}
            for info in zf.infolist():
                key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                entries.setdefault(key, []).append(info)
            if "x" not in entries:
                keys = sorted(entries)
                listed = ", ".join(keys[:10]) + (f" and {len(keys) - 10} more" if len(keys) > 10 else "")
                raise InvalidDataError(
                    f"archive {path!r} has no 'x' array (keys: {_short(listed, 200) or 'none'}); "
                    "expected 'x' and optional 'y', 'factors'"
                )
            out = {}
            for key in _NPZ_KEYS:
                if key not in entries:
                    continue
                if len(entries[key]) > 1:
                    names = ", ".join(repr(i.filename) for i in entries[key])
                    raise InvalidDataError(f"archive {path!r} has {len(entries[key])} entries for {key!r} ({names})")
                info = entries[key][0]
                what = f"array {key!r} in {path!r}"
                try:
                    with zf.open(info) as fh:
                        out[key] = _read_npy(fh, info.file_size, what)
                except InvalidDataError:
                    raise
                except _ZIP_ERRORS as e:
                    raise InvalidDataError(f"{what} is corrupt or truncated ({_reason(e)})") from None
            return out
    except InvalidDataError:
        raise
    except _ZIP_ERRORS as e:
        raise InvalidDataError(f"array file {path!r} is corrupt or truncated ({_reason(e)})") from None


def _read_npy(fh: Any, size: int, what: str) -> np.ndarray:
    """The array in an open ``.npy`` stream of ``size`` bytes. The header is read and checked
    first (object dtype, declared size against ``size`` and memory); only then is data read."""
    shape, dtype = _npy_header(fh, size, what)
    fh.seek(0)
    try:
        return np.lib.format.read_array(fh, allow_pickle=False)
    except MemoryError:
        raise InvalidDataError(f"{what} (shape {_short(shape)} of {_short(dtype)}) does not fit in memory") from None
    except (ValueError, OverflowError, EOFError, OSError, zlib.error, zipfile.BadZipFile) as e:
        raise InvalidDataError(f"{what} is corrupt or truncated ({_reason(e)})") from None


def _npy_header(fh: Any, size: int, what: str) -> tuple[tuple[int, ...], np.dtype]:
    """Parse and check a ``.npy`` header (any format version) without reading the data."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fh)
        with warnings.catch_warnings():  # literal_eval on a corrupt header: "invalid escape sequence"
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", SyntaxWarning)
            if version == (1, 0):
                shape, _, dtype = fmt.read_array_header_1_0(fh, max_header_size=_MAX_HEADER)
            elif version == (2, 0):
                shape, _, dtype = fmt.read_array_header_2_0(fh, max_header_size=_MAX_HEADER)
            elif version == (3, 0):
                shape, dtype = _npy_header_3_0(fh)
            else:
                raise InvalidDataError(
                    f"{what} has .npy format version {version[0]}.{version[1]}; expected 1.0, 2.0 or 3.0"
                )
        header_end = fh.tell()
    except InvalidDataError:
        raise
    except _HEADER_ERRORS as e:
        raise InvalidDataError(f"{what} has a corrupt .npy header ({_reason(e)})") from None
    except (EOFError, OSError, struct.error, zlib.error, zipfile.BadZipFile) as e:
        raise InvalidDataError(f"{what} is corrupt or truncated ({_reason(e)})") from None
    if dtype.hasobject:
        raise InvalidDataError(f"{what} holds Python objects (dtype={_short(dtype)}); expected a numeric array")
    if any(s < 0 for s in shape):
        raise InvalidDataError(f"{what} declares a negative dimension (shape {_short(shape)}); its header is corrupt")
    if dtype.itemsize == 0:
        raise InvalidDataError(f"{what} has zero-size elements (dtype {_short(dtype)}); expected a numeric array")
    declared = math.prod(shape) * dtype.itemsize
    held = size - header_end
    if declared > held:
        raise InvalidDataError(
            f"{what} declares shape {_short(shape)} of {_short(dtype)} ({declared:,} bytes) but holds only "
            f"{max(held, 0):,} bytes of array data ({size:,} bytes in all); it is truncated or its header is corrupt"
        )
    memory = _memory_bytes()
    if memory is not None and declared > memory:
        raise InvalidDataError(
            f"{what} declares shape {_short(shape)} of {_short(dtype)} ({declared:,} bytes), "
            f"more than this machine's memory ({memory:,} bytes)"
        )
    return shape, dtype


def _npy_header_3_0(fh: Any) -> tuple[tuple[int, ...], np.dtype]:
    """Format 3.0 (a UTF-8 header; numpy has no public reader for it): shape and dtype."""
    raw = fh.read(4)
    if len(raw) < 4:
        raise EOFError("the header length is cut off")
    (length,) = struct.unpack("<I", raw)
    if length > _MAX_HEADER:
        raise ValueError(f"the header is {length:,} bytes, more than {_MAX_HEADER:,}")
    text = fh.read(length)
    if len(text) < length:
        raise EOFError("the header is cut off")
    d = ast.literal_eval(text.decode("utf-8"))
    if not isinstance(d, dict) or set(d) != {"descr", "fortran_order", "shape"}:
        raise ValueError("the header is not a dict of descr, fortran_order and shape")
    shape = d["shape"]
    if not isinstance(shape, tuple) or not all(type(s) is int for s in shape):
        raise ValueError(f"shape {_short(shape)} is not a tuple of integers")
    if not isinstance(d["fortran_order"], bool):
        raise ValueError("fortran_order is not a bool")
    return shape, np.lib.format.descr_to_dtype(d["descr"])


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
        if x.dtype.itemsize > 4:  # models see float32: a finite float64 beyond its range would become inf
            big = np.abs(x) > np.finfo(np.float32).max
            if big.any():
                first = tuple(int(i) for i in np.argwhere(big)[0])
                raise InvalidDataError(
                    f"data {src!r} has {int(big.sum())} value(s) beyond float32's range (+-3.4e38); "
                    f"the first is {float(x[first]):g} at index {first}"
                )
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
        lo, hi = int(x.min()), int(x.max())  # Python ints: no wrap-around for uint64
        if lo < 0:
            raise InvalidDataError(f"integer data {src!r} has negative values (min {lo}); expected levels 0..L-1")
        if levels is None:
            if hi >= MAX_LEVELS:
                raise InvalidDataError(
                    f"integer data {src!r} has values up to {hi}; at most {MAX_LEVELS:,} levels (0..2**24-1) "
                    "are exact in float32: rescale it or save it as float"
                )
            spec_levels = 256 if x.dtype == np.uint8 else max(hi + 1, 2)
        else:
            if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or not 2 <= levels <= MAX_LEVELS:
                raise InvalidDataError(f"levels={levels!r} is invalid; expected an integer in 2..{MAX_LEVELS:,}")
            if hi >= levels:
                raise InvalidDataError(f"levels={levels} is too small for data {src!r}: its values go up to {hi}")
            spec_levels = int(levels)
        data = discrete_to_float(x, spec_levels)
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
    if a.size and int(a.min()) < 0:
        raise InvalidDataError(f"{what} of {src!r} have negative values (min {int(a.min())}); expected ids >= 0")
    if a.size and int(a.max()) > np.iinfo(np.int64).max:  # uint64 beyond int64 would wrap to negative
        raise InvalidDataError(f"{what} of {src!r} have values up to {int(a.max())}; expected ids below 2**63")
    return a.astype(np.int64)


# --- image folders --------------------------------------------------------------------------------


def _is_image(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _list(folder: str) -> list[str]:
    """The visible entries of a folder, sorted; one-line error if it cannot be listed."""
    try:
        return sorted(e for e in os.listdir(folder) if not e.startswith("."))
    except OSError as e:
        raise InvalidDataError(f"folder {folder!r} cannot be listed ({_reason(e)})") from None


def _scan_image_folder(path: str) -> tuple[list[str], dict[str, list[str]]]:
    """The images of a folder: (those at its top level, {sub-folder name: images anywhere below it}).

    Real files and folders are walked first, in sorted order (files of a folder, then each
    sub-folder in turn). Symlinks are followed only afterwards, and only to a file or folder inside
    ``path`` that the walk has not reached yet: a link leading outside the folder, into a loop (to
    itself or a parent) or to images already read is skipped, with one warning. So no image is read
    twice and nothing outside the folder is read."""
    real_root = os.path.realpath(path)
    seen = {real_root}  # real paths of every folder and image taken so far
    links: list[tuple[str | None, str]] = []  # (class folder or None for the top level, link path)
    top: list[str] = []
    classes: dict[str, list[str]] = {}

    def walk(folder: str, real: str, cls: str) -> None:
        stack = [(folder, real)]
        while stack:
            d, rd = stack.pop()
            subdirs = []
            for e in _list(d):
                full, rfull = os.path.join(d, e), os.path.join(rd, e)
                if os.path.islink(full):
                    links.append((cls, full))
                elif os.path.isdir(full):
                    seen.add(rfull)
                    subdirs.append((full, rfull))
                elif _is_image(e) and os.path.isfile(full):
                    seen.add(rfull)
                    classes[cls].append(full)
            stack.extend(reversed(subdirs))

    def take_dir(name: str, full: str, real: str) -> None:
        seen.add(real)
        classes.setdefault(name, [])
        walk(full, real, name)

    for e in _list(path):
        full = os.path.join(path, e)
        if os.path.islink(full):
            links.append((None, full))
        elif os.path.isdir(full):
            take_dir(e, full, os.path.join(real_root, e))
        elif _is_image(e) and os.path.isfile(full):
            seen.add(os.path.join(real_root, e))
            top.append(full)
    skipped = []
    for cls, full in links:  # grows while linked folders are walked
        real = os.path.realpath(full)
        if not os.path.exists(real):
            continue  # a dangling link, as if absent
        if os.path.commonpath([real, real_root]) != real_root or real in seen:
            skipped.append(full)
        elif os.path.isdir(real):
            take_dir(cls or os.path.basename(full), full, real)
        elif _is_image(os.path.basename(full)) and os.path.isfile(real):
            seen.add(real)
            (top if cls is None else classes[cls]).append(full)
    if skipped:
        warnings.warn(
            f"image folder {path!r}: skipped {len(skipped)} symlink(s) that lead outside it, into a loop or to "
            f"images already read (first: {os.path.relpath(skipped[0], path)!r})",
            stacklevel=3,
        )
    top.sort()
    return top, classes


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
    None picks 1 channel when every image is gray (R = G = B). Alpha is dropped; 16-bit gray images
    are scaled to 8 bits. Symlinks are followed only to places inside ``path`` not reached otherwise
    (see :func:`_scan_image_folder`)."""
    check_split(split)
    hw = _parse_size(size)
    if grayscale is not None and not isinstance(grayscale, (bool, np.bool_)):
        raise InvalidDataError(f"grayscale={grayscale!r} is invalid; expected true, false or none (automatic)")
    top_images, class_files = _scan_image_folder(path)
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

    x = read_images(files, path, hw, grayscale)
    return _with_name(
        dataset_from_arrays(x, labels, name=_name(path), split=split, levels=256, seed=seed, where=path),
        class_names,
    )


def read_images(
    files: Sequence[str],
    root: str,
    hw: tuple[int, int] | None,
    grayscale: bool | None,
    where: Sequence[str] | None = None,
) -> np.ndarray:
    """Image files -> uint8 [N, C, H, W], as :func:`load_image_folder` reads them: resized to ``hw``
    (else all must share one size), 1 channel if ``grayscale`` (or, when None, if every image is
    gray), else 3. ``root`` names the folder in errors; ``where[i]``, if given, prefixes the error
    about file ``i`` (e.g. the captions-file line that names it)."""
    arrays = []
    for i, f in enumerate(files):
        try:
            arrays.append(_read_image(f, hw, grayscale))
        except InvalidDataError as e:
            if where is None:
                raise
            raise InvalidDataError(f"{where[i]}: {e}") from None
    if hw is None:
        first = arrays[0].shape[:2]
        for f, a in zip(files, arrays):
            if a.shape[:2] != first:
                raise InvalidDataError(
                    f"images in {root!r} differ in size: "
                    f"{os.path.relpath(files[0], root)!r} is {first[0]}x{first[1]} but "
                    f"{os.path.relpath(f, root)!r} is {a.shape[0]}x{a.shape[1]} (HxW); pass size= to resize"
                )
    stack = np.stack(arrays)  # [N, H, W, 3] or [N, H, W, 1] uint8
    if grayscale is None and stack.shape[-1] == 3 and (stack[..., :1] == stack).all():
        stack = stack[..., :1]
    return np.ascontiguousarray(stack.transpose(0, 3, 1, 2))


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
        with warnings.catch_warnings():
            # Over Pillow's pixel limit (89 M pixels) is an error, not a warning: a corrupt header
            # must not make it allocate gigabytes before the data turn out to be missing.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(file) as im:
                im.load()  # decode now, so truncated or corrupt data fails here, naming this file
                if im.mode.startswith("I"):  # 16-bit gray (PNG): scale to 8 bits; convert() would clip at 255
                    wide = np.clip(np.asarray(im).astype(np.int64), 0, 65535)
                    im = Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8))
                if im.mode == "P" and "transparency" in im.info:
                    im = im.convert("RGBA")  # the same colours, without Pillow's warning; alpha is dropped next
                im = im.convert("L" if grayscale else "RGB")
                if hw is not None and im.size != (hw[1], hw[0]):
                    im = im.resize((hw[1], hw[0]), Image.Resampling.LANCZOS)
                a = np.asarray(im, dtype=np.uint8)
    except MemoryError:
        raise InvalidDataError(f"image {file!r} is too large to decode") from None
    except (
        UnidentifiedImageError,
        OSError,
        EOFError,
        SyntaxError,
        ValueError,
        TypeError,
        struct.error,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as e:
        raise InvalidDataError(f"image {file!r} cannot be read ({_reason(e)})") from None
    return a[..., None] if a.ndim == 2 else a


def read_image_as(path: str, spec: Any) -> Any:
    """One image file as a run's data would hold it: float tensor [C, H, W], resized to ``spec``'s
    image size (Lanczos), 1 or 3 channels as ``spec`` has, values on its levels (a binary run sees 0
    or 1); a one-line InvalidDataError for a missing or unreadable file. ``genlab translate --image``
    and the demo's uploads read images this way."""
    import torch

    c, h, w = spec.shape
    arr = read_images([path], os.path.dirname(path) or ".", (int(h), int(w)), grayscale=int(c) == 1)[0]
    x = torch.from_numpy(arr.astype("float32") / 255.0)
    if spec.levels and spec.levels != 256:
        x = torch.round(x * (spec.levels - 1)) / (spec.levels - 1)
    return x
