"""Tests of the built-in data sets and user-file loaders against known facts (grid sizes, the
FFJORD toy geometry, the digits split) and against malformed input (one-line InvalidDataError)."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
import torch
from PIL import Image

from genlab.data import TOY_NAMES, DataSpec, InvalidDataError, load_dataset
from genlab.data import shapes as S
from genlab.data.files import load_path
from genlab.data.text import CharTokenizer, WordTokenizer, load_text_file, tokenizer_from_dict
from genlab.data.toy2d import load_toy, sample_toy, toy_entropy


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and msg
    return msg


# --- 2-D toys -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TOY_NAMES)
def test_toy_shape_determinism_and_splits(name: str) -> None:
    a = load_toy(name, "train", n=500, seed=0)
    b = load_dataset(name, "train", n=500, seed=0)
    assert a.tensors["x"].shape == (500, 2) and a.tensors["x"].dtype == torch.float32
    assert torch.equal(a.tensors["x"], b.tensors["x"])
    assert a.spec.kind == "vector" and a.spec.shape == (2,) and a.spec.levels is None and a.spec.value_range is None
    assert torch.isfinite(a.tensors["x"]).all() and a.tensors["x"].abs().max() < 10
    other_seed = load_toy(name, "train", n=500, seed=1).tensors["x"]
    val = load_toy(name, "val", n=500).tensors["x"]
    test = load_toy(name, "test", n=500).tensors["x"]
    for other in (other_seed, val, test):
        assert not torch.equal(a.tensors["x"], other)
    assert torch.equal(
        torch.from_numpy(sample_toy(name, 7, np.random.default_rng(3))),
        torch.from_numpy(sample_toy(name, 7, np.random.default_rng(3))),
    )


def test_toy_default_sizes_and_all() -> None:
    assert [len(load_toy("moons", s)) for s in ("train", "val", "test")] == [20000, 2000, 5000]
    allx = load_toy("moons", "all").tensors["x"]
    assert len(allx) == 27000 and torch.equal(allx[:20000], load_toy("moons", "train").tensors["x"])


def test_checkerboard_lies_on_eight_squares_of_area_32() -> None:
    x = load_toy("checkerboard", "train").tensors["x"].double().numpy()
    assert np.all(np.abs(x) <= 4)
    cells = np.floor(x / 2).astype(int)  # 2x2 cells indexed -2..1 on each axis
    assert np.all((cells.sum(1) % 2) == 0)  # only the 8 "even" squares are ever hit
    counts = np.unique(cells, axis=0, return_counts=True)[1]
    assert len(counts) == 8
    # Uniform over the 8 squares: each gets 1/8 of the points (5 binomial standard deviations).
    n = len(x)
    assert np.all(np.abs(counts - n / 8) < 5 * math.sqrt(n * (1 / 8) * (7 / 8)))
    # Uniform within squares: the position inside a cell is uniform on [0, 2)^2.
    inner = x - 2 * cells
    assert abs(inner.mean() - 1.0) < 0.02 and abs(inner.var() - 4 / 12) < 0.02
    assert toy_entropy("checkerboard") == pytest.approx(math.log(32)) == pytest.approx(3.4657, abs=1e-4)
    assert load_toy("checkerboard", "val", n=10).spec.extra["entropy_nats"] == pytest.approx(math.log(32))


def test_toy_geometry_matches_ffjord() -> None:
    # Rings: radii 3 * {0.25, 0.5, 0.75, 1} in equal shares, Gaussian noise 0.08 per coordinate, so
    # the radial residual is ~N(0, 0.08) (rings are 0.75 apart: nearest-ring assignment is safe).
    radii = np.array([0.75, 1.5, 2.25, 3.0])
    r = np.linalg.norm(load_toy("rings", n=8000).tensors["x"].double().numpy(), axis=1)
    k = np.abs(r[:, None] - radii).argmin(1)
    assert np.abs(r - radii[k]).mean() < 0.1 and (r - radii[k]).std() == pytest.approx(0.08, rel=0.1)
    assert np.allclose(np.bincount(k, minlength=4) / len(k), 0.25, atol=0.03)
    # Circles: make_circles(factor=0.5, noise=0.08) * 3 -> radii 3 and 1.5, noise 0.24.
    r = np.linalg.norm(load_toy("circles", n=8000).tensors["x"].double().numpy(), axis=1)
    outer = r > 2.25
    assert outer.mean() == pytest.approx(0.5, abs=0.03)
    assert (r[outer] - 3.0).std() == pytest.approx(0.24, rel=0.1) and abs((r[outer] - 3.0).mean()) < 0.03
    g = load_toy("8gaussians", n=8000).tensors["x"].double().numpy()
    centres = 4 / 1.414 * np.stack([np.cos(np.arange(8) * np.pi / 4), np.sin(np.arange(8) * np.pi / 4)], 1)
    d = g[:, None, :] - centres[None]
    resid = d[np.arange(len(g)), (d**2).sum(-1).argmin(1)]
    assert resid.std() == pytest.approx(0.5 / 1.414, rel=0.05)
    assert toy_entropy("moons") is None


def test_toy_bad_names() -> None:
    with pytest.raises(InvalidDataError) as e:
        load_toy("swirl")
    assert "swirl" in _one_line(e)
    with pytest.raises(InvalidDataError):
        toy_entropy("swirl")
    with pytest.raises(InvalidDataError) as e:
        load_dataset("no-such-dataset")
    assert "no-such-dataset" in _one_line(e)


# --- digits ---------------------------------------------------------------------------------------


def test_digits_split_sizes_and_levels() -> None:
    sizes = {s: len(load_dataset("digits", s)) for s in ("train", "val", "test")}
    assert sizes == {"train": 1000, "val": 350, "test": 447}
    ds = load_dataset("digits", "val")
    assert ds.spec.levels == 17 and ds.spec.shape == (1, 8, 8) and ds.spec.num_classes == 10
    lv = ds.tensors["x"] * 16
    assert torch.allclose(lv, lv.round()) and lv.min() == 0 and lv.max() == 16


# --- shapes ---------------------------------------------------------------------------------------


def test_shapes_grid_size_and_round_trip() -> None:
    assert S.num_combinations == 737280 == 3 * 6 * 40 * 32 * 32
    assert S.FACTOR_NAMES == ("shape", "scale", "orientation", "pos_x", "pos_y")
    idx = np.arange(S.num_combinations)
    f = S.index_to_factors(idx)
    assert f.shape == (737280, 5) and f.dtype == np.int64
    assert np.array_equal(S.factors_to_index(f), idx)
    assert np.all(f.min(0) == 0) and np.array_equal(f.max(0) + 1, S.FACTOR_SIZES)
    assert len(np.unique(S.factors_to_index(f))) == 737280
    # Mixed radix, last factor fastest (dSprites order).
    assert S.index_to_factors(1).tolist() == [[0, 0, 0, 0, 1]]
    assert S.index_to_factors(32).tolist() == [[0, 0, 0, 1, 0]]
    assert S.index_to_factors(40 * 32 * 32 * 6).tolist() == [[1, 0, 0, 0, 0]]
    rng = np.random.default_rng(0)
    rows = np.stack([rng.integers(0, k, 1000) for k in S.FACTOR_SIZES], 1)
    assert np.array_equal(S.index_to_factors(S.factors_to_index(rows)), rows)
    assert np.allclose(S.FACTOR_VALUES["scale"], [0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    assert S.FACTOR_VALUES["orientation"][-1] < 2 * np.pi and len(S.FACTOR_VALUES["orientation"]) == 40


def test_shapes_bad_factors() -> None:
    with pytest.raises(InvalidDataError) as e:
        S.factors_to_index([[0, 6, 0, 0, 0]])
    assert "scale=6" in _one_line(e)
    with pytest.raises(InvalidDataError):
        S.index_to_factors([737280])
    with pytest.raises(InvalidDataError):
        S.render([[0, 0, 0, 0]])


def _centroid(mask: np.ndarray) -> tuple[float, float]:
    r, c = np.nonzero(mask)
    return float(r.mean()), float(c.mean())


def test_render_geometry() -> None:
    size = 64
    # Axis-aligned square at scale 1: a filled square of side 2 * 0.15 * 64 = 19.2 px.
    sq = S.render([[0, 5, 0, 16, 16]], size)[0]
    assert sq.dtype == np.uint8 and set(np.unique(sq)) <= {0, 1}
    r, c = np.nonzero(sq)
    h, w = r.max() - r.min() + 1, c.max() - c.min() + 1
    assert h == w and abs(h - 19.2) <= 1 and sq.sum() == h * w
    # Centre follows the documented mapping MARGIN + pos * (1 - 2 MARGIN) (pixel centres at j + 0.5).
    for px, py in [(0, 0), (31, 5), (16, 31)]:
        m = S.render([[0, 2, 0, px, py]], size)[0]
        cy, cx = _centroid(m)
        ex = (S.MARGIN + px / 31 * (1 - 2 * S.MARGIN)) * size - 0.5
        ey = (S.MARGIN + py / 31 * (1 - 2 * S.MARGIN)) * size - 0.5
        assert abs(cx - ex) < 0.6 and abs(cy - ey) < 0.6
    # Areas scale with scale^2; rotation (45 degrees = orientation 5) keeps the area.
    # (at 256 px, so pixel quantisation of the 9.6 px small square does not dominate)
    a1, a05 = S.render([[0, 5, 0, 16, 16], [0, 0, 0, 16, 16]], 256).astype(np.int64).sum((1, 2))
    assert a05 / a1 == pytest.approx(0.25, rel=0.1)
    rot = S.render([[0, 5, 5, 16, 16]], size)[0]
    assert int(rot.sum()) == pytest.approx(int(sq.sum()), rel=0.05) and not np.array_equal(rot, sq)
    # Ellipse: wide at 0, tall at 90 degrees (orientation 10); area pi * a * b.
    e0, e90 = S.render([[1, 5, 0, 16, 16], [1, 5, 10, 16, 16]], size)
    r0, c0 = np.nonzero(e0)
    r9, c9 = np.nonzero(e90)
    assert np.ptp(c0) > 1.6 * np.ptp(r0) and np.ptp(r9) > 1.6 * np.ptp(c9)
    assert int(e0.sum()) == pytest.approx(math.pi * 0.2 * 0.1 * size**2, rel=0.05)
    # Heart upright at 0: two lobes on top (the centre column starts lower than the lobes), tip down.
    heart, flipped = S.render([[2, 5, 0, 16, 16], [2, 5, 20, 16, 16]], size)
    r, c = np.nonzero(heart)
    mid = int(round((c.min() + c.max()) / 2))
    assert np.nonzero(heart[:, mid])[0].min() > r.min() + 1
    assert heart[r.max()].sum() < heart[r.min() + 2].sum()
    # Turned by 180 degrees it is upside down: the notch is at the bottom.
    r, c = np.nonzero(flipped)
    mid = int(round((c.min() + c.max()) / 2))
    assert np.nonzero(flipped[:, mid])[0].max() < r.max() - 1
    # Shapes stay mostly inside the frame at the extreme positions.
    for shape in range(3):
        corner, centre = S.render([[shape, 5, 5, 0, 31], [shape, 5, 5, 16, 16]], size).astype(np.int64).sum((1, 2))
        assert corner >= 0.7 * centre


def test_render_speed() -> None:
    rows = S.index_to_factors(np.random.default_rng(0).integers(0, S.num_combinations, 20000))
    t0 = time.perf_counter()
    imgs = S.render(rows, 64)
    assert time.perf_counter() - t0 < 5.0 and imgs.shape == (20000, 64, 64)


def test_load_shapes() -> None:
    ds = load_dataset("shapes", "val", n=300, seed=0)
    x, f, y = ds.tensors["x"], ds.tensors["factors"], ds.tensors["y"]
    assert x.shape == (300, 1, 64, 64) and x.dtype == torch.float32 and f.shape == (300, 5) and f.dtype == torch.int64
    assert set(x.unique().tolist()) == {0.0, 1.0} and torch.equal(y, f[:, 0])
    assert np.array_equal(S.render(f.numpy(), 64), x[:, 0].numpy().astype(np.uint8))
    assert (x.sum((1, 2, 3)) > 0).all()
    s = ds.spec
    assert (s.kind, s.shape, s.levels, s.num_classes) == ("image", (1, 64, 64), 2, 3)
    assert s.factor_sizes == (3, 6, 40, 32, 32) and s.class_names == ("square", "ellipse", "heart")
    assert torch.equal(load_dataset("shapes", "val", n=300, seed=0).tensors["factors"], f)
    assert not torch.equal(load_dataset("shapes", "val", n=300, seed=1).tensors["factors"], f)
    small = S.load_shapes("test", n=10, size=32)
    assert small.tensors["x"].shape == (10, 1, 32, 32)


def test_shapes_splits_disjoint_and_sized() -> None:
    total = S.num_combinations
    idx = {s: S.grid_split_indices(total, s, None) for s in ("train", "val", "test")}
    assert {s: len(v) for s, v in idx.items()} == {"train": 20000, "val": 2000, "test": 2000}
    big = {s: set(S.grid_split_indices(total, s, 50000 if s == "train" else 9000).tolist()) for s in idx}
    assert not (big["train"] & big["val"]) and not (big["train"] & big["test"]) and not (big["val"] & big["test"])
    assert set(idx["train"].tolist()) <= big["train"]  # growing a split keeps its first examples
    with pytest.raises(InvalidDataError):
        S.grid_split_indices(total, "val", total)


# --- shapes-captions ------------------------------------------------------------------------------


def test_caption_example_and_position_bins() -> None:
    # shape heart=2, scale 0.6 = "small", colour red=0, pos (0, 0) = top left.
    assert S.caption([2, 1, 7, 0, 0, 0]) == "a small red heart in the top left"
    assert S.caption([0, 5, 0, 31, 31, 6]) == "a giant white square in the bottom right"
    assert S.caption([1, 0, 0, 16, 16, 2]) == "a tiny blue ellipse in the center"
    # Thirds of [0, 1]: values < 1/3 -> left/top, > 2/3 -> right/bottom.
    values = np.linspace(0, 1, 32)
    expected = np.where(values < 1 / 3, 0, np.where(values > 2 / 3, 2, 1))
    assert np.array_equal(S.position_bin(np.arange(32)), expected)


def test_captions_parse_back_for_every_value() -> None:
    rng = np.random.default_rng(0)
    rows = []
    # Every combination of the captioned factors (shape x scale x colour x 3x3 region) ...
    for shape, scale, colour, rx, ry in np.ndindex(*S.CAPTION_FACTOR_SIZES):
        px = rng.choice(np.nonzero(S.position_bin(np.arange(32)) == rx)[0])
        py = rng.choice(np.nonzero(S.position_bin(np.arange(32)) == ry)[0])
        rows.append([shape, scale, rng.integers(40), px, py, colour])
    # ... and every value of every factor, including all 40 orientations and 32 positions.
    for k, size in enumerate(S.CAPTION_GRID.factor_sizes):
        for v in range(size):
            row = [int(rng.integers(s)) for s in S.CAPTION_GRID.factor_sizes]
            row[k] = v
            rows.append(row)
    rows = np.array(rows)
    want = S.caption_factors(rows)
    assert len({tuple(r) for r in want.tolist()}) == 3 * 6 * 7 * 9
    tokens = S.caption_tokens(rows)
    for row, w, ids in zip(rows, want, tokens):
        text = S.caption(row)
        parsed = S.parse_caption(text)
        assert [parsed[k] for k in S.CAPTION_FACTOR_NAMES] == w.tolist()
        assert S.decode_caption(ids) == text
        assert S.parse_caption(" <bos> " + text.upper() + " <eos> <pad>") == parsed


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "a small purple heart in the top left",
        "a small red heart",
        "a small red heart in the top left corner",
        "small red heart in the center",
    ],
)
def test_parse_caption_rejects(bad: str) -> None:
    with pytest.raises(InvalidDataError) as e:
        S.parse_caption(bad)
    assert repr(bad) in _one_line(e)


def test_load_shapes_captions() -> None:
    ds = load_dataset("shapes-captions", "train", n=200)
    x, f, text = ds.tensors["x"], ds.tensors["factors"], ds.tensors["text"]
    T = ds.spec.extra["text_len"]
    assert x.shape == (200, 3, 32, 32) and f.shape == (200, 6) and text.shape == (200, T) and text.dtype == torch.int64
    assert set(x.unique().tolist()) <= {0.0, 1.0} and torch.equal(ds.tensors["y"], f[:, 0])
    vocab = ds.spec.vocab
    assert vocab[:4] == ("<pad>", "<bos>", "<eos>", "<unk>") and ds.spec.levels == 2
    assert ds.spec.factor_sizes == (3, 6, 40, 32, 32, 7)
    for img, row, ids in zip(x.numpy(), f.numpy(), text.tolist()):
        # The only non-black colour is the row's colour; the mask is the 32x32 render.
        on = img.max(0) > 0
        assert np.array_equal(on, S.render(row[None, :5], 32)[0].astype(bool))
        assert np.array_equal(np.unique(img[:, on].T, axis=0), S.COLOUR_RGB[row[5]][None])
        assert ids[0] == 1 and 2 in ids and all(i == 0 for i in ids[ids.index(2) + 1 :])
        words = [vocab[i] for i in ids[1 : ids.index(2)]]
        assert " ".join(words) == S.caption(row)
    d = json.loads(json.dumps(ds.spec.to_dict()))
    assert DataSpec.from_dict(d) == ds.spec


# --- text -----------------------------------------------------------------------------------------

SAMPLE = "Hello,  wörld!\nThe  cat sat on the mat.\n\n  Tabs\tand émojis 🎉 too. "


def test_char_tokenizer_round_trip() -> None:
    tok = CharTokenizer().fit(SAMPLE)
    assert tok.vocab[:4] == ("<pad>", "<bos>", "<eos>", "<unk>")
    assert len(tok.vocab) == 4 + len(set(SAMPLE))
    ids = tok.encode(SAMPLE)
    assert len(ids) == len(SAMPLE) and tok.decode(ids) == SAMPLE
    assert tok.decode([1] + ids + [2, 0, 0]) == SAMPLE
    assert tok.encode("Z") == [3]
    again = tokenizer_from_dict(json.loads(json.dumps(tok.to_dict())))
    assert isinstance(again, CharTokenizer) and again.vocab == tok.vocab and again.encode(SAMPLE) == ids


def test_word_tokenizer_round_trip() -> None:
    tok = WordTokenizer().fit(SAMPLE)
    ids = tok.encode(SAMPLE)
    assert tok.decode(ids) == SAMPLE
    assert tok.split("Hello, world!") == ["Hello", ",", " world", "!"]
    assert WordTokenizer.from_dict(tok.to_dict()).encode(SAMPLE) == ids
    assert tok.encode(" zebra") == [3]
    with pytest.raises(InvalidDataError):
        WordTokenizer(["a", "b"])
    with pytest.raises(InvalidDataError):
        CharTokenizer.from_dict(tok.to_dict())


def test_load_text_file_splits(tmp_path) -> None:
    text = "".join(f"line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(200))
    p = tmp_path / "corpus.txt"
    p.write_text(text, encoding="utf-8")
    n = len(text)
    parts = {s: load_text_file(str(p), s, block_size=16) for s in ("train", "val", "test")}
    assert len(parts["train"]) == round(0.9 * n) // 16
    assert len(parts["val"]) == (round(0.95 * n) - round(0.9 * n)) // 16
    tok = CharTokenizer(parts["train"].spec.vocab)
    assert tok.decode(parts["train"].tensors["x"].reshape(-1)) == text[: len(parts["train"]) * 16]
    assert tok.decode(parts["val"].tensors["x"][0]) == text[round(0.9 * n) : round(0.9 * n) + 16]
    assert parts["val"].spec.vocab == parts["train"].spec.vocab == parts["test"].spec.vocab
    s = parts["test"].spec
    assert (s.kind, s.shape, s.levels, s.extra) == ("tokens", (16,), len(s.vocab), {"tokenizer": "char"})
    assert parts["test"].tensors["x"].dtype == torch.int64
    w = load_dataset(str(p), "train", tokenizer="word", block_size=8)
    assert w.spec.extra["tokenizer"] == "word" and w.tensors["x"].shape[1] == 8
    assert WordTokenizer(w.spec.vocab).decode(w.tensors["x"][0]) == "line 0: the quick brown fox jumps"


# --- user files -----------------------------------------------------------------------------------


def test_npy_vectors_split_80_10_10(tmp_path) -> None:
    a = np.arange(200, dtype=np.float64).reshape(100, 2)
    p = tmp_path / "vec.npy"
    np.save(p, a)
    parts = {s: load_dataset(str(p), s) for s in ("train", "val", "test")}
    assert [len(parts[s]) for s in ("train", "val", "test")] == [80, 10, 10]
    rows = torch.cat([parts[s].tensors["x"] for s in parts])[:, 0].tolist()
    assert sorted(rows) == a[:, 0].tolist()  # disjoint and complete
    s = parts["train"].spec
    assert (s.kind, s.shape, s.levels, s.value_range) == ("vector", (2,), None, None)


def test_npy_images_layouts_and_levels(tmp_path) -> None:
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, (20, 6, 5, 3), dtype=np.uint8)
    np.save(tmp_path / "hwc.npy", hwc)
    ds = load_path(str(tmp_path / "hwc.npy"), "all")
    assert ds.spec.shape == (3, 6, 5) and ds.spec.levels == 256 and ds.spec.kind == "image"
    assert ds.tensors["x"][3, 2, 4, 1].item() == pytest.approx(hwc[3, 4, 1, 2] / 255)
    gray = rng.integers(0, 5, (20, 4, 4)).astype(np.int32)
    np.save(tmp_path / "gray.npy", gray)
    ds = load_path(str(tmp_path / "gray.npy"), "all")
    assert ds.spec.shape == (1, 4, 4) and ds.spec.levels == 5
    assert torch.allclose(ds.tensors["x"][:, 0] * 4, torch.from_numpy(gray).float())
    assert load_path(str(tmp_path / "gray.npy"), "all", levels=16).spec.levels == 16
    np.savez(tmp_path / "lab.npz", x=rng.random((30, 3)), y=np.arange(30) % 4)
    ds = load_path(str(tmp_path / "lab.npz"), "all")
    assert ds.spec.num_classes == 4 and torch.equal(ds.tensors["y"], torch.arange(30) % 4)


def _png(path, size=(8, 8), colour=(10, 20, 30)) -> None:
    Image.new("RGB", size, colour).save(path)


def test_image_folder_labels_gray_and_resize(tmp_path) -> None:
    for cls, col in (("dog", (200, 10, 10)), ("cat", (10, 200, 10))):
        (tmp_path / cls).mkdir()
        for i in range(10):
            _png(tmp_path / cls / f"{i}.png", colour=col)
    ds = load_dataset(str(tmp_path), "all")
    assert ds.spec.class_names == ("cat", "dog") and ds.spec.num_classes == 2 and ds.spec.shape == (3, 8, 8)
    first_dog = ds.tensors["x"][ds.tensors["y"] == 1][0]
    assert first_dog[:, 0, 0].tolist() == pytest.approx([200 / 255, 10 / 255, 10 / 255])
    assert len(load_dataset(str(tmp_path), "train")) == 16
    _png(tmp_path / "cat" / "big.png", size=(16, 12))
    with pytest.raises(InvalidDataError) as e:
        load_dataset(str(tmp_path), "train")
    assert "big.png" in _one_line(e) and "size=" in str(e.value)
    ds = load_dataset(str(tmp_path), "all", size=4, grayscale=True)
    assert ds.spec.shape == (1, 4, 4)
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(5):
        Image.new("L", (3, 3), i * 50).save(flat / f"{i}.bmp")
    ds = load_dataset(str(flat), "all")
    assert ds.spec.shape == (1, 3, 3) and "y" not in ds.tensors and ds.spec.levels == 256


def _bad_inputs(tmp_path):
    """(name of the thing the message must mention, path, options) for each malformed input."""
    cases = []
    p = tmp_path / "nan.npy"
    a = np.zeros((10, 3))
    a[4, 1] = np.nan
    a[7, 2] = np.inf
    np.save(p, a)
    cases.append(("(4, 1)", p, {}))
    p = tmp_path / "obj.npy"
    np.save(p, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    cases.append(("obj.npy", p, {}))
    p = tmp_path / "empty.npy"
    p.write_bytes(b"")
    cases.append(("empty.npy", p, {}))
    p = tmp_path / "zero.npy"
    np.save(p, np.zeros((0, 3)))
    cases.append(("zero rows", p, {}))
    p = tmp_path / "flat.npy"
    np.save(p, np.zeros(10))
    cases.append(("1 dims", p, {}))
    p = tmp_path / "five.npy"
    np.save(p, np.zeros((2, 1, 1, 1, 1)))
    cases.append(("5 dims", p, {}))
    p = tmp_path / "garbage.npy"
    p.write_bytes(b"this is not numpy")
    cases.append(("garbage.npy", p, {}))
    p = tmp_path / "nox.npz"
    np.savez(p, data=np.zeros((3, 2)))
    cases.append(("'x'", p, {}))
    p = tmp_path / "mismatch.npz"
    np.savez(p, x=np.zeros((5, 2)), y=np.zeros(4, dtype=int))
    cases.append(("4 rows", p, {}))
    p = tmp_path / "table.csv"
    p.write_text("1,2\n")
    cases.append((".csv", p, {}))
    cases.append(("missing.npy", tmp_path / "missing.npy", {}))
    p = tmp_path / "empty.txt"
    p.write_text("")
    cases.append(("empty.txt", p, {}))
    p = tmp_path / "latin1.txt"
    p.write_bytes("caf\xe9 au lait".encode("latin-1"))
    cases.append(("offset 3", p, {}))
    p = tmp_path / "short.txt"
    p.write_text("tiny")
    cases.append(("block_size=128", p, {}))
    p = tmp_path / "vec2.npy"
    np.save(p, np.zeros((10, 2)))
    cases.append(("block_size", p, {"block_size": 4}))
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    _png(corrupt / "good.png")
    (corrupt / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    cases.append(("bad.png", corrupt, {}))
    trunc = tmp_path / "trunc"
    trunc.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(trunc / "full.png")
    data = (trunc / "full.png").read_bytes()
    (trunc / "cut.png").write_bytes(data[: len(data) // 2])
    cases.append(("cut.png", trunc, {}))
    empty_dir = tmp_path / "nothing"
    empty_dir.mkdir()
    (empty_dir / "notes.md").write_text("no images here")
    cases.append(("nothing", empty_dir, {}))
    p = tmp_path / "neg.npy"
    np.save(p, np.array([[0, -2], [1, 3]]))
    cases.append(("-2", p, {}))
    p = tmp_path / "floatimg.npy"
    np.save(p, np.full((3, 4, 4), 255.0))
    cases.append(("255", p, {}))
    return cases


def test_bad_inputs_raise_one_line_errors(tmp_path) -> None:
    for needle, path, opts in _bad_inputs(tmp_path):
        with pytest.raises(InvalidDataError) as e:
            load_dataset(str(path), "all" if path.suffix != ".txt" else "val", **opts)
        msg = _one_line(e)
        assert needle in msg, (needle, msg)
    # NaN/inf: the count of bad values and where the first one is.
    with pytest.raises(InvalidDataError, match=r"2 NaN/inf value\(s\); the first is at index \(4, 1\)"):
        load_dataset(str(tmp_path / "nan.npy"))


# --- options of built-in data sets ------------------------------------------------------------------


def test_builtin_options_are_checked_against_the_loader() -> None:
    from genlab.data import dataset_options, list_datasets

    assert dataset_options("digits") == {}
    assert dataset_options("moons") == {"n": None, "seed": 0}
    assert dataset_options("shapes") == {"n": None, "seed": 0, "size": 64}
    assert set(dataset_options("tones")) >= {"n", "length", "sample_rate", "seed"}
    for name in list_datasets():  # every built-in has its loader function registered
        assert "split" not in dataset_options(name) and "name" not in dataset_options(name)
    with pytest.raises(InvalidDataError) as e:
        load_dataset("digits", "train", size=32)
    assert _one_line(e) == "data set 'digits' takes no options; got option 'size'"
    with pytest.raises(InvalidDataError) as e:
        load_dataset("checkerboard", "val", size=32, colour=1)
    assert _one_line(e) == "data set 'checkerboard' has no options 'size', 'colour'; its options: n=None, seed=0"
    with pytest.raises(ValueError, match=r"^data set 'tones' has no option 'rate'; its options: n=None, length=1024, "):
        load_dataset("tones", "val", rate=8000)
    assert len(load_dataset("moons", "val", n=50, seed=1)) == 50  # known options still pass through


def test_user_file_options_are_checked(tmp_path) -> None:
    np.save(tmp_path / "v.npy", np.zeros((20, 3), dtype=np.float32))
    with pytest.raises(InvalidDataError) as e:
        load_dataset(str(tmp_path / "v.npy"), "train", size=32)
    msg = _one_line(e)
    assert "size" in msg and "levels, seed" in msg, msg
