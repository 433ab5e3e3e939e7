"""Malicious and broken input files (issue 10, "Lose nothing"): hand-crafted regressions, then
property-based fuzzing (hypothesis) of every user-file loader and of config YAML.

The property everywhere: a loader either returns a valid :class:`TensorDataset` (finite float32 in
the documented range, a spec that matches the tensors) or raises its documented error with a
non-empty one-line message (:class:`InvalidDataError` for data, :class:`CheckpointError` for YAML);
never another exception type, a traceback's worth of text, or a huge allocation from a header.
"""

from __future__ import annotations

import io
import math
import os
import struct
import tempfile
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as npst
from PIL import Image

from genlab import load_dataset
from genlab.checkpoint import CheckpointError, read_yaml
from genlab.data import files as F
from genlab.data.base import SPLITS, InvalidDataError, TensorDataset
from genlab.data.files import load_array_file, load_image_folder, load_path
from genlab.data.text import load_text_file

#: Multiplies every test's number of examples, for a longer soak: GENLAB_FUZZ_SCALE=20 pytest -m slow ...
_SCALE = float(os.environ.get("GENLAB_FUZZ_SCALE", "1"))


def _fuzz(max_examples: int) -> settings:
    """Hypothesis settings sized so the whole file runs in well under a minute on two cores; no
    example database is written into the working tree."""
    return settings(
        max_examples=max(1, round(max_examples * _SCALE)),
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def _one_line(e: BaseException) -> str:
    msg = str(e)
    assert msg and msg.strip() and "\n" not in msg and "\r" not in msg, f"not one line: {msg!r}"
    return msg


def _outcome(load: Callable[[], Any], errors: tuple[type[BaseException], ...] = (InvalidDataError,)) -> Any:
    """The loader's result, or None after checking it raised a documented one-line error."""
    try:
        return load()
    except errors as e:
        _one_line(e)
        return None


def _check_dataset(ds: Any) -> None:
    """A valid data set: tensors and spec agree, values finite and in the documented range."""
    assert isinstance(ds, TensorDataset)
    x, spec = ds.tensors["x"], ds.spec
    assert len(ds) >= 1 and tuple(x.shape[1:]) == spec.shape
    for k, v in ds.tensors.items():
        assert len(v) == len(x), k
    if spec.kind == "tokens":
        assert x.dtype == torch.int64 and spec.vocab is not None and spec.levels == len(spec.vocab)
        assert int(x.min()) >= 0 and int(x.max()) < spec.levels
        return
    assert x.dtype == torch.float32 and torch.isfinite(x).all()
    if spec.value_range is not None:
        lo, hi = spec.value_range
        assert float(x.min()) >= lo and float(x.max()) <= hi
    if spec.levels is not None:
        assert 2 <= spec.levels <= F.MAX_LEVELS
        ids = torch.round(x * (spec.levels - 1))  # as models read levels back (float32)
        assert torch.equal(ids / (spec.levels - 1), x)
    if spec.kind == "image":
        assert x.ndim == 4 and x.shape[1] in (1, 2, 3, 4)
    if "y" in ds.tensors:
        y = ds.tensors["y"]
        assert y.dtype == torch.int64 and int(y.min()) >= 0 and int(y.max()) < spec.num_classes
        if spec.class_names is not None:
            assert len(spec.class_names) == spec.num_classes
    if "factors" in ds.tensors:
        f = ds.tensors["factors"]
        assert f.dtype == torch.int64 and f.shape[1] == len(spec.factor_sizes) == len(spec.factor_names)
        assert (f >= 0).all() and (f < torch.tensor(spec.factor_sizes)).all()


# --- hand-crafted headers: a huge declared shape is one line, never an allocation -------------------


def _npy_header(shape: tuple[int, ...], descr: str = "<f8", version: tuple[int, int] = (1, 0)) -> bytes:
    """The bytes of a .npy header (magic, version, length, dict text padded to 64), written by hand."""
    text = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape!r}, }}"
    length_fmt = "<H" if version == (1, 0) else "<I"
    prefix = 6 + 2 + struct.calcsize(length_fmt)
    text += " " * (-(prefix + len(text) + 1) % 64) + "\n"
    raw = text.encode("latin1" if version < (3, 0) else "utf8")
    return b"\x93NUMPY" + bytes(version) + struct.pack(length_fmt, len(raw)) + raw


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_npy_declaring_a_huge_shape_is_one_line(tmp_path, version) -> None:
    p = tmp_path / "huge.npy"
    p.write_bytes(_npy_header((10**12,), version=version) + bytes(64))
    size = p.stat().st_size
    with pytest.raises(InvalidDataError) as e:
        load_dataset(str(p), "train")
    msg = _one_line(e.value)
    assert "huge.npy" in msg and "8,000,000,000,000 bytes" in msg and f"{size:,} bytes in all" in msg
    # Smaller than memory but more than the file holds: the same message, not "not a valid file".
    p.write_bytes(_npy_header((1000, 100), descr="|u1", version=version) + bytes(10))
    with pytest.raises(InvalidDataError, match=r"declares shape \(1000, 100\) of uint8 \(100,000 bytes\)"):
        load_dataset(str(p), "train")


def test_npy_header_cases_are_one_line(tmp_path) -> None:
    p = tmp_path / "h.npy"
    cases = {
        "negative dimension": _npy_header((-5, 2)) + bytes(80),
        "Python objects": _npy_header((5, 2), descr="|O") + bytes(80),
        "zero-size elements": _npy_header((10**30, 2), descr="|V0"),
        "format version 9.0": b"\x93NUMPY\x09\x00" + bytes(60),
        "corrupt .npy header (": b"\x93NUMPY\x01\x00" + struct.pack("<H", 30) + b"{" * 29 + b"\n",
        "EOF: reading array header": b"\x93NUMPY\x02\x00\x10\x00\x00\x00{'descr'",
        "header is cut off": b"\x93NUMPY\x03\x00\x10\x00\x00\x00{'descr'",
    }
    for expected, raw in cases.items():
        p.write_bytes(raw)
        with pytest.raises(InvalidDataError) as e:
            load_dataset(str(p), "all")
        assert expected in _one_line(e.value) and "h.npy" in str(e.value), expected
    # A deeply nested header (recursion in the parser) is a corrupt header too.
    text = ("-" * 5000 + "1").encode()
    p.write_bytes(b"\x93NUMPY\x03\x00" + struct.pack("<I", len(text)) + text)
    with pytest.raises(InvalidDataError, match="corrupt .npy header"):
        load_dataset(str(p), "all")


def _zip(path: Path, entries: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> None:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)


def test_npz_entry_declaring_a_huge_shape_is_one_line(tmp_path) -> None:
    p = tmp_path / "huge.npz"
    y = io.BytesIO()
    np.save(y, np.arange(4))
    _zip(p, {"x.npy": _npy_header((10**12, 3)) + bytes(64), "y.npy": y.getvalue()}, zipfile.ZIP_DEFLATED)
    with pytest.raises(InvalidDataError) as e:
        load_dataset(str(p), "train")
    msg = _one_line(e.value)
    assert "'x'" in msg and "huge.npz" in msg and "24,000,000,000,000 bytes" in msg
    assert f"{len(_npy_header((1,))) + 64:,} bytes in all" in msg  # the entry's uncompressed size
    # Labels are checked the same way.
    x = io.BytesIO()
    np.save(x, np.zeros((4, 2)))
    _zip(p, {"x.npy": x.getvalue(), "y.npy": _npy_header((2**40,), descr="<i8")})
    with pytest.raises(InvalidDataError, match=r"array 'y' in .*huge.npz' declares shape \(1099511627776,\) of int64"):
        load_dataset(str(p), "train")


def test_array_larger_than_memory_is_refused_before_reading(tmp_path, monkeypatch) -> None:
    np.savez_compressed(tmp_path / "a.npz", x=np.zeros((1000, 10), dtype=np.float32))
    np.save(tmp_path / "a.npy", np.zeros((1000, 10), dtype=np.float32))
    monkeypatch.setattr(F, "_memory_bytes", lambda: 1000)
    for name in ("a.npz", "a.npy"):
        with pytest.raises(
            InvalidDataError, match=r"\(40,000 bytes\), more than this machine's memory \(1,000 bytes\)"
        ):
            load_dataset(str(tmp_path / name), "train")


def test_npz_quirks_are_one_line(tmp_path) -> None:
    p = tmp_path / "q.npz"
    x = io.BytesIO()
    np.save(x, np.zeros((10, 2)))
    for entries, expected in (
        ({"x.npy": b"not an array"}, "corrupt .npy header"),
        ({"x.npy": x.getvalue(), "x": x.getvalue()}, "2 entries for 'x'"),
        ({f"k{i}.npy": b"" for i in range(30)}, "and 20 more"),
    ):
        _zip(p, entries)
        with pytest.raises(InvalidDataError) as e:
            load_dataset(str(p), "all")
        assert expected in _one_line(e.value)
    np.savez(p, x=np.zeros((10, 2)))
    raw = bytearray(p.read_bytes())
    raw[-30:-20] = bytes(10)  # break the central directory
    p.write_bytes(bytes(raw))
    with pytest.raises(InvalidDataError, match="corrupt or truncated"):
        load_dataset(str(p), "all")


def test_huge_shape_exits_2_in_the_cli(tmp_path, capsys) -> None:
    from genlab.cli import main

    p = tmp_path / "huge.npy"
    p.write_bytes(_npy_header((10**12,)) + bytes(64))
    assert main(["train", "vae", "--data", str(p), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "huge.npy" in err and "8,000,000,000,000 bytes" in err


def test_values_beyond_float32_and_too_many_levels_are_refused() -> None:
    from genlab.data.files import dataset_from_arrays

    x = np.zeros((10, 2))
    x[3, 1] = 1e300  # finite in float64, inf in float32
    with pytest.raises(InvalidDataError, match=r"1 value\(s\) beyond float32's range .* at index \(3, 1\)"):
        dataset_from_arrays(x)
    big = np.full((10, 2), 2**24, dtype=np.int64)
    with pytest.raises(InvalidDataError, match="at most 16,777,216 levels"):
        dataset_from_arrays(big)
    ok = dataset_from_arrays(big - 1, split="all")
    assert ok.spec.levels == 2**24 and torch.equal(
        (ok.tensors["x"].double() * (2**24 - 1)).round().long(), torch.from_numpy(big - 1)
    )
    huge = np.full((10, 2), 2**63 + 5, dtype=np.uint64)  # used to wrap to negative through int64
    with pytest.raises(InvalidDataError, match="values up to 9223372036854775813"):
        dataset_from_arrays(huge)
    with pytest.raises(InvalidDataError, match="expected ids below 2"):
        dataset_from_arrays(np.zeros((10, 2)), y=np.full(10, 2**64 - 1, dtype=np.uint64))


# --- image folders: symlinks ---------------------------------------------------------------------


def _png(path: Path, value: int = 0, size: tuple[int, int] = (4, 4), mode: str = "L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)


def test_image_folder_symlink_loops_and_links_outside_are_not_followed(tmp_path) -> None:
    root, outside = tmp_path / "imgs", tmp_path / "outside"
    for i in range(5):
        _png(root / "cat" / f"{i}.png", 10 * i)
        _png(root / "dog" / "sub" / f"{i}.png", 100 + 10 * i)
        _png(outside / "fox" / f"{i}.png", 250)
    _png(root / ".store" / "bird" / "0.png", 7)  # hidden: reached only through a link
    (root / "again").symlink_to(root, target_is_directory=True)  # loop: a class of duplicates before
    (root / "cat" / "up").symlink_to("..", target_is_directory=True)  # loop back to the top
    (root / "dog" / "sub" / "self").symlink_to(".", target_is_directory=True)  # loop onto itself
    (root / "kitten").symlink_to("cat", target_is_directory=True)  # duplicate of a class
    (root / "fox").symlink_to(outside / "fox", target_is_directory=True)  # leads outside
    (root / "cat" / "stray.png").symlink_to(outside / "fox" / "0.png")  # a file outside
    (root / "cat" / "twin.png").symlink_to(root / "cat" / "0.png")  # a file already read
    (root / "bird").symlink_to(".store/bird", target_is_directory=True)  # inside, not reached: followed
    (root / "dangling.png").symlink_to(tmp_path / "missing.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_dataset(str(root), "all")
    assert ds.spec.class_names == ("bird", "cat", "dog") and len(ds) == 11
    assert torch.bincount(ds.tensors["y"]).tolist() == [1, 5, 5]
    assert not (ds.tensors["x"] == 250 / 255).any()  # nothing from outside
    msgs = [str(w.message) for w in caught if "symlink" in str(w.message)]
    assert len(msgs) == 1 and "skipped 7 symlink(s)" in msgs[0] and "\n" not in msgs[0]
    # A folder reached through a symlink (the path the user gave) is walked as usual.
    (tmp_path / "alias").symlink_to(root, target_is_directory=True)
    with pytest.warns(UserWarning, match="skipped 7 symlink"):
        assert len(load_image_folder(str(tmp_path / "alias"), "all")) == 11


def test_image_folder_through_links_only_inside(tmp_path) -> None:
    root = tmp_path / "flat"
    for i in range(4):
        _png(tmp_path / "elsewhere" / f"{i}.png", 200)
        _png(root / f"{i}.png", i)
        (root / f"link{i}.png").symlink_to(tmp_path / "elsewhere" / f"{i}.png")
    with pytest.warns(UserWarning, match="skipped 4 symlink"):
        ds = load_path(str(root), "all")
    assert len(ds) == 4 and "y" not in ds.tensors and float(ds.tensors["x"].max()) == pytest.approx(3 / 255)


# --- property-based fuzzing ----------------------------------------------------------------------

_SPLIT = st.sampled_from(SPLITS)
_SHAPES = npst.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=5)
_NUMERIC = st.one_of(
    npst.boolean_dtypes(),
    npst.integer_dtypes(),
    npst.unsigned_integer_dtypes(),
    npst.floating_dtypes(),
    npst.floating_dtypes(sizes=(64,)),
)
_EXOTIC = st.one_of(
    npst.complex_number_dtypes(),
    npst.datetime64_dtypes(),
    npst.byte_string_dtypes(max_len=4),
    npst.unicode_string_dtypes(max_len=4),
    npst.array_dtypes(npst.scalar_dtypes(), max_size=3),  # structured
)
_DTYPES = st.one_of(_NUMERIC, _NUMERIC, _EXOTIC)


def _mutate(draw, raw: bytearray, kinds: list[str]) -> bytes:
    """1-4 random byte flips, cuts (truncation) or insertions of ``raw``; ``kinds`` weights them."""
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(kinds))
        at = draw(st.integers(0, max(len(raw) - 1, 0)))
        if kind == "flip" and raw:
            raw[at] = draw(st.integers(0, 255))
        elif kind == "cut":
            del raw[at:]
        else:
            raw[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(raw)


@st.composite
def _arrays(draw: st.DrawFn, min_dims: int = 0) -> np.ndarray:
    """Arrays of many dtypes and shapes (zero-size included) with NaN/inf/extreme values, or object arrays."""
    shape = draw(
        st.one_of(  # half of them shaped like data, the rest any shape (zero-size included)
            npst.array_shapes(min_dims=2, max_dims=4, min_side=1, max_side=5),
            npst.array_shapes(min_dims=min_dims, max_dims=5, min_side=0, max_side=5),
        )
    )
    if draw(st.integers(0, 9)) == 0:
        a = np.empty(shape, dtype=object)
        for i in np.ndindex(shape):
            a[i] = draw(st.sampled_from([None, 1, "s", (2,)]))
        return a
    dtype = draw(_DTYPES)
    if draw(st.booleans()) and dtype.kind in "iu" and shape and math.prod(shape):
        # Small non-negative integers: the levels loaders accept.
        return draw(npst.arrays(dtype, shape, elements=st.integers(0, 20)))
    if dtype.kind == "f" and shape and math.prod(shape):
        width = min(dtype.itemsize * 8, 64)
        choices = [st.floats(0, 1, width=width), st.floats(width=width, allow_nan=False, allow_infinity=False)]
        if width == 64:  # finite in float64, but beyond float32 (what models see) or subnormal
            choices.append(st.sampled_from([0.0, 1.0, -2.5, 3.5e38, -1e300, 5e-324]))
        return draw(npst.arrays(dtype, shape, elements=draw(st.none() | st.sampled_from(choices))))
    return draw(npst.arrays(dtype, shape))


def _should_load(x: np.ndarray) -> bool:
    """Whether ``x`` alone is data the array loader documents as valid (so it must load)."""
    if x.dtype.kind not in "biuf" or x.ndim not in (2, 3, 4) or 0 in x.shape:
        return False
    if x.ndim == 4 and x.shape[1] > 4 and x.shape[3] > 4:
        return False
    if x.dtype.kind == "f":
        if not np.isfinite(x).all() or (np.abs(x) > np.finfo(np.float32).max).any():
            return False
        return x.ndim == 2 or (x.min() >= 0 and x.max() <= 1)
    return int(x.min()) >= 0 and int(x.max()) < F.MAX_LEVELS


def _options(draw: st.DrawFn, opts: dict[str, st.SearchStrategy]) -> dict[str, Any]:
    return {k: draw(v) for k, v in opts.items() if draw(st.integers(0, 3)) == 0}


_ODD = st.one_of(st.none(), st.booleans(), st.integers(-3, 300), st.floats(allow_nan=True), st.text(max_size=3))


@pytest.mark.filterwarnings("ignore:Stored array in format 3.0")
@pytest.mark.slow
@_fuzz(300)
@given(x=_arrays(), split=_SPLIT, data=st.data())
def test_fuzz_npy(x: np.ndarray, split: str, data: st.DataObject) -> None:
    opts = _options(data.draw, {"levels": _ODD, "seed": _ODD})
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "a.npy")
        np.save(p, x, allow_pickle=x.dtype.hasobject)
        ds = _outcome(lambda: load_dataset(p, split, **opts))
        if ds is not None:
            _check_dataset(ds)
        if _should_load(x):  # documented as valid: must load, with the values it holds
            ds = _outcome(lambda: load_dataset(p, "all"))
            assert ds is not None, f"valid {x.dtype} {x.shape} refused"
            _check_dataset(ds)
            want = x.astype(np.float64)
            if x.dtype.kind != "f":
                want = want / (ds.spec.levels - 1)
            if x.ndim == 3:
                want = want[:, None]
            elif x.ndim == 4 and x.shape[1] > 4:
                want = want.transpose(0, 3, 1, 2)
            assert np.allclose(ds.tensors["x"].double().numpy(), want.astype(np.float32), rtol=1e-6, atol=0)


@pytest.mark.filterwarnings("ignore:Stored array in format 3.0")
@pytest.mark.slow
@_fuzz(200)
@given(
    x=_arrays(min_dims=1),
    y=st.none() | _arrays(min_dims=1),
    factors=st.none() | _arrays(min_dims=1),
    extra=st.dictionaries(st.text(min_size=1, max_size=4), _arrays(), max_size=2),
    compressed=st.booleans(),
    split=_SPLIT,
)
def test_fuzz_npz(x, y, factors, extra, compressed, split) -> None:
    arrays = {k: v for k, v in extra.items() if k not in ("x", "y", "factors", "file") and "/" not in k}
    arrays["x"] = x
    if y is not None:
        arrays["y"] = y.reshape(-1)[: len(x)] if y.size and not y.dtype.hasobject else y
    if factors is not None:
        arrays["factors"] = factors
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "a.npz")
        (np.savez_compressed if compressed else np.savez)(p, allow_pickle=True, **arrays)
        ds = _outcome(lambda: load_dataset(p, split))
        if ds is not None:
            _check_dataset(ds)


def _file_bytes(suffix: str, x: np.ndarray, compressed: bool) -> bytes:
    buf = io.BytesIO()
    if suffix == ".npy":
        np.save(buf, x)
    else:
        (np.savez_compressed if compressed else np.savez)(buf, x=x, y=np.arange(len(x)) % 3)
    return buf.getvalue()


@st.composite
def _corrupted(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid .npy/.npz file with bytes overwritten, cut off or inserted; or random bytes."""
    suffix = draw(st.sampled_from([".npy", ".npz"]))
    if draw(st.integers(0, 4)) == 0:
        prefix = draw(st.sampled_from([b"", b"\x93NUMPY", b"\x93NUMPY\x01\x00", b"\x93NUMPY\x03\x00", b"PK\x03\x04"]))
        return suffix, prefix + draw(st.binary(max_size=300))
    x = draw(npst.arrays(st.sampled_from([np.uint8, np.float32, np.int16]), (draw(st.integers(1, 12)), 3)))
    raw = bytearray(_file_bytes(suffix, x, draw(st.booleans())))
    return suffix, _mutate(draw, raw, ["flip", "cut", "insert"])


@pytest.mark.slow
@_fuzz(500)
@given(case=_corrupted(), split=_SPLIT)
def test_fuzz_corrupt_array_files(case: tuple[str, bytes], split: str) -> None:
    suffix, raw = case
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "c" + suffix)
        Path(p).write_bytes(raw)
        ds = _outcome(lambda: load_array_file(p, split))
        if ds is not None:
            _check_dataset(ds)


# Modes each format writes; every one must load (converted to gray or RGB).
_SAVE_MODES = {
    ".png": ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"],
    ".jpg": ["L", "RGB", "CMYK"],
    ".bmp": ["1", "L", "P", "RGB"],
    ".gif": ["L", "P"],
}
_FORMAT = {".png": "PNG", ".jpg": "JPEG", ".bmp": "BMP", ".gif": "GIF"}


def _encode(rgba: Image.Image, ext: str, mode: str) -> tuple[bytes, np.ndarray | None]:
    """An RGBA picture saved as ``ext`` in ``mode``, and the 8-bit RGB [H, W, 3] the loader must
    return for it where that is exact (lossless formats, modes that keep the gray or RGB values)."""
    gray = rgba.convert("L")
    if mode == "I;16":  # 16-bit gray: each 8-bit level v stored as v * 257
        im = Image.fromarray(np.asarray(gray).astype(np.uint16) * 257)
    else:
        im = rgba.convert(mode)
    buf = io.BytesIO()
    im.save(buf, format=_FORMAT[ext])
    exact = None
    if ext in (".png", ".bmp"):
        if mode in ("L", "LA", "I;16"):
            exact = np.repeat(np.asarray(gray)[..., None], 3, axis=2)
        elif mode in ("RGB", "RGBA"):
            exact = np.asarray(rgba.convert("RGB"))
    return buf.getvalue(), exact


@st.composite
def _image_file(draw: st.DrawFn, size: tuple[int, int]) -> tuple[bytes, str, bool, np.ndarray | None]:
    """(bytes, extension, whether it is a complete valid image of ``size``, its exact RGB or None)."""
    ext = draw(st.sampled_from(sorted(_SAVE_MODES)))
    kind = draw(st.sampled_from(["valid", "valid", "valid", "truncated", "random", "empty"]))
    if kind == "empty":
        return b"", ext, False, None
    if kind == "random":
        return draw(st.binary(max_size=200)), ext, False, None
    mode = draw(st.sampled_from(_SAVE_MODES[ext]))
    pixels = draw(st.binary(min_size=size[0] * size[1] * 4, max_size=size[0] * size[1] * 4))
    raw, exact = _encode(Image.frombytes("RGBA", size, pixels), ext, mode)
    if kind == "truncated":
        return raw[: draw(st.integers(0, len(raw) - 1))], ext, False, None
    return raw, ext, True, exact


@st.composite
def _image_folders(draw: st.DrawFn) -> tuple[dict[str, bytes], bool, list[np.ndarray | None]]:
    """{relative path: bytes} of an image folder (flat or with class folders); whether every file
    is a valid image of one size (so it must load); the exact RGB of each, in the loader's order."""
    same = draw(st.booleans())
    base = (draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    classes = draw(st.sampled_from([None, ["a"], ["a", "b"], ["a", "b", "c"]]))
    files, exact, all_valid = {}, {}, True
    for i in range(draw(st.integers(1, 6))):
        size = base if same else (draw(st.integers(1, 6)), draw(st.integers(1, 6)))
        raw, ext, valid, rgb = draw(_image_file(size))
        folder = "" if classes is None else draw(st.sampled_from(classes)) + "/"
        files[f"{folder}{i}{ext}"] = raw
        exact[f"{folder}{i}{ext}"] = rgb
        all_valid &= valid and size == base
    return files, all_valid, [exact[k] for k in sorted(files)]


@pytest.mark.slow
@_fuzz(150)
@given(
    folder=_image_folders(),
    size=st.none() | st.integers(1, 5) | st.tuples(st.integers(1, 5), st.integers(1, 5)) | _ODD,
    grayscale=st.sampled_from([None, True, False, "yes", 2]),
    split=_SPLIT,
)
def test_fuzz_image_folder(folder, size, grayscale, split: str) -> None:
    files, all_valid, exact = folder
    with tempfile.TemporaryDirectory() as d:
        for rel, raw in files.items():
            Path(d, rel).parent.mkdir(parents=True, exist_ok=True)
            Path(d, rel).write_bytes(raw)
        ds = _outcome(lambda: load_dataset(d, split, size=size, grayscale=grayscale))
        if ds is not None:
            _check_dataset(ds)
            assert ds.spec.kind == "image" and ds.spec.levels == 256 and ds.spec.shape[0] in (1, 3)
        if all_valid and split == "all" and size is None and grayscale is None:
            assert ds is not None and len(ds) == len(files), "valid images refused"
            got = (ds.tensors["x"].double() * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
            for i, rgb in enumerate(exact):
                if rgb is not None:  # gray data sets keep one channel: compare it with R (= G = B)
                    assert np.array_equal(got[i], rgb[..., : got.shape[-1]]), sorted(files)[i]


@pytest.mark.slow
@_fuzz(100)
@given(
    size=st.tuples(st.integers(1, 6), st.integers(1, 6)),
    classes=st.sampled_from([None, ["a"], ["a", "b"]]),
    data=st.data(),
)
def test_fuzz_valid_image_folder_loads_exactly(size, classes, data: st.DataObject) -> None:
    """Valid images of one size in any format and mode load, with the values they hold."""
    files, exact = {}, {}
    for i in range(data.draw(st.integers(1, 5))):
        ext = data.draw(st.sampled_from(sorted(_SAVE_MODES)))
        mode = data.draw(st.sampled_from(_SAVE_MODES[ext]))
        gray = data.draw(st.booleans())
        pixels = data.draw(st.binary(min_size=size[0] * size[1] * 4, max_size=size[0] * size[1] * 4))
        rgba = Image.frombytes("RGBA", size, pixels)
        folder = "" if classes is None else data.draw(st.sampled_from(classes)) + "/"
        name = f"{folder}{i}{ext}"
        files[name], exact[name] = _encode(rgba.convert("L").convert("RGBA") if gray else rgba, ext, mode)
    with tempfile.TemporaryDirectory() as d:
        for rel, raw in files.items():
            Path(d, rel).parent.mkdir(parents=True, exist_ok=True)
            Path(d, rel).write_bytes(raw)
        ds = load_dataset(d, "all")
    _check_dataset(ds)
    assert len(ds) == len(files) and ds.spec.shape[1:] == (size[1], size[0])
    got = (ds.tensors["x"].double() * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for i, name in enumerate(sorted(files)):
        if exact[name] is not None:  # a gray data set keeps one channel: compare it with R (= G = B)
            assert np.array_equal(got[i], exact[name][..., : got.shape[-1]]), name


def test_16_bit_png_is_scaled_not_clipped(tmp_path) -> None:
    levels = np.array([[0, 1, 128], [200, 254, 255]], dtype=np.uint16)
    Image.fromarray(levels * 257).save(tmp_path / "a.png")
    near = np.minimum(levels[::-1].astype(np.int64) * 257 + 100, 65535).astype(np.uint16)
    Image.fromarray(near).save(tmp_path / "b.png")  # rounds to the same levels
    ds = load_dataset(str(tmp_path), "all")
    assert ds.spec.shape == (1, 2, 3)
    got = (ds.tensors["x"] * 255).round().long()
    assert got[0, 0].tolist() == levels.tolist() and got[1, 0].tolist() == levels[::-1].tolist()


def test_image_header_over_the_pixel_limit_is_refused_before_decoding(tmp_path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, format="PNG")
    raw = bytearray(buf.getvalue())
    for w, h in ((10_000, 9_500), (30_000, 30_000)):  # Pillow warns over 89 M pixels, refuses over 179 M
        ihdr = struct.pack(">II", w, h) + bytes(raw[24:29])
        raw[16:29] = ihdr
        raw[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
        (tmp_path / "bomb.png").write_bytes(bytes(raw))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(InvalidDataError, match=r"bomb.png' cannot be read \(Image size"):
                load_dataset(str(tmp_path), "all")


@st.composite
def _broken_image(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid image file of any format and mode with bytes overwritten, cut off or inserted."""
    ext = draw(st.sampled_from(sorted(_SAVE_MODES)))
    w, h = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    pixels = draw(st.binary(min_size=w * h * 4, max_size=w * h * 4))
    raw = bytearray(_encode(Image.frombytes("RGBA", (w, h), pixels), ext, draw(st.sampled_from(_SAVE_MODES[ext])))[0])
    return ext, _mutate(draw, raw, ["flip", "flip", "cut", "insert"])


@pytest.mark.slow
@_fuzz(500)
@given(case=_broken_image(), grayscale=st.sampled_from([None, True, False]), size=st.none() | st.integers(1, 4))
def test_fuzz_corrupt_image_files(case: tuple[str, bytes], grayscale, size) -> None:
    ext, raw = case
    with tempfile.TemporaryDirectory() as d:
        Path(d, "img" + ext).write_bytes(raw)
        ds = _outcome(lambda: load_image_folder(d, "all", size=size, grayscale=grayscale))
        if ds is not None:
            _check_dataset(ds)
            assert len(ds) == 1


@pytest.mark.slow
@_fuzz(300)
@given(
    content=st.one_of(
        st.binary(max_size=300),
        st.text(max_size=300).map(lambda s: s.encode("utf-8", "surrogatepass")),
        st.sampled_from([b"", b" \n\t\r ", "\ufeff".encode(), b"\xff\xfe", b"\xed\xa0\x80", b"\x00" * 9]),
    ),
    tokenizer=st.sampled_from(["char", "word"]),
    block_size=st.integers(1, 20) | _ODD,
    split=_SPLIT,
)
def test_fuzz_text_file(content: bytes, tokenizer: str, block_size, split: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "t.txt")
        Path(p).write_bytes(content)
        ds = _outcome(lambda: load_dataset(p, split, tokenizer=tokenizer, block_size=block_size))
        if ds is not None:
            _check_dataset(ds)
        try:
            text = content.decode("utf-8-sig")
        except UnicodeDecodeError:
            return
        if text.strip() and split == "all" and block_size == 1 and type(block_size) is int:
            assert ds is not None and len(ds) == len(load_text_file(p, "all", tokenizer, 1).tensors["x"])


# read_yaml (genlab/checkpoint.py) lets UnicodeDecodeError, RecursionError and ValueError out; the
# fix (open the file in binary so PyYAML reports bad bytes as a YAMLError; catch RecursionError and
# ValueError as CheckpointError) is outside genlab/data. Remove these markers with it: strict, so
# the fixed tests then fail until they are.


@pytest.mark.parametrize(
    "content",
    [
        b"a: \x80\x81",  # not UTF-8
        b"model: caf\xe9",  # Latin-1
        b"[" * 2000 + b"]" * 2000,  # nesting deeper than the parser's recursion
        b"- " * 2000 + b"x",
        b"when: 2001-13-45",  # a timestamp that is no date
    ],
)
def test_read_yaml_bad_files_are_one_line_checkpoint_errors(tmp_path, content: bytes) -> None:
    p = tmp_path / "config.yaml"
    p.write_bytes(content)
    with pytest.raises(CheckpointError) as e:
        read_yaml(p)
    assert "config.yaml" in _one_line(e.value)


@pytest.mark.slow
@_fuzz(300)
@given(
    content=st.one_of(
        st.binary(max_size=200),
        st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass")),
        st.lists(
            st.sampled_from(["a: ", "- ", "[", "]", "{", "}", "&x ", "*x ", "!!binary ", "2001-13-45", "\n", "  "]),
            max_size=30,
        ).map(lambda parts: "".join(parts).encode()),
    )
)
def test_fuzz_read_yaml(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "config.yaml")
        Path(p).write_bytes(content)
        _outcome(lambda: read_yaml(p), errors=(CheckpointError,))
