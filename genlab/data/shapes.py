"""A procedural regenerator of the dSprites factor grid, and a coloured, captioned variant.

``shapes``: 64x64 binary images of a square, an ellipse or a heart on a black background, one per
combination of 5 factors (shape 3 x scale 6 x orientation 40 x pos_x 32 x pos_y 32 = 737,280),
rendered on demand from the factors by an implicit inside-test on the pixel grid (no files).
``shapes-captions``: the same shapes at 32x32 in one of 7 colours, each with an English caption
("a small red heart in the top left") that parses back exactly to the factors it describes.

Geometry (all in units of the image side): pixel centres sit at (j + 0.5) / size; a shape's centre
is ``MARGIN + pos * (1 - 2 * MARGIN)`` so that positions 0 and 1 keep the shape mostly inside the
frame, as in dSprites; pos_y = 0 is the top row. At scale 1 the square's half-side is 0.15, the
ellipse's semi-axes are 0.2 x 0.1, and the heart is about 0.36 wide. Orientation turns the shape
counter-clockwise as seen on screen. Like dSprites, orientation spans the full [0, 2*pi) for every
shape, so the square (4-fold) and the ellipse (2-fold symmetric) repeat their images.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch

from .base import InvalidDataError, TensorDataset, check_split
from .spec import DataSpec

FACTOR_NAMES: tuple[str, ...] = ("shape", "scale", "orientation", "pos_x", "pos_y")
FACTOR_SIZES: tuple[int, ...] = (3, 6, 40, 32, 32)
SHAPE_NAMES: tuple[str, ...] = ("square", "ellipse", "heart")
#: Factor values: index k of factor f means value ``FACTOR_VALUES[f][k]``.
FACTOR_VALUES: dict[str, np.ndarray] = {
    "shape": np.arange(3, dtype=np.float64),
    "scale": np.linspace(0.5, 1.0, 6),
    "orientation": np.linspace(0.0, 2 * math.pi, 40, endpoint=False),
    "pos_x": np.linspace(0.0, 1.0, 32),
    "pos_y": np.linspace(0.0, 1.0, 32),
}

MARGIN = 0.2  # centre range [0.2, 0.8] of the frame: a scale-1 shape at the edge just touches it
_SQUARE_HALF = 0.15
_ELLIPSE_AXES = (0.2, 0.1)
# The heart is the sextic (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0, which spans x in [-1.14, 1.14] and
# y in [-1, 1.24]; it is shifted down by 0.12 so its bounding box is centred, and scaled to 0.16/unit.
_HEART_UNIT = 0.16
_HEART_SHIFT = 0.12

DEFAULT_SIZES = {"train": 20000, "val": 2000, "test": 2000}
_CHUNK = 512  # images rendered per vectorised step: keeps the [chunk, size, size] temporaries in cache


class ShapesGrid:
    """The full factor grid of ``shapes`` (or of ``shapes-captions`` when built with colours).

    Flat indices are mixed-radix numbers over ``FACTOR_SIZES`` with the last factor varying fastest
    (dSprites' order), so index 0 is factors (0, 0, 0, 0, 0) and index 1 moves pos_y by one step.
    """

    def __init__(self, factor_names: Sequence[str] = FACTOR_NAMES, factor_sizes: Sequence[int] = FACTOR_SIZES) -> None:
        self.factor_names = tuple(factor_names)
        self.factor_sizes = tuple(int(s) for s in factor_sizes)
        sizes = np.array(self.factor_sizes, dtype=np.int64)
        # bases[k] = product of the sizes after factor k.
        self.bases = np.concatenate([np.cumprod(sizes[::-1])[::-1][1:], [1]]).astype(np.int64)
        self.num_combinations = int(np.prod(sizes))

    def index_to_factors(self, idx: np.ndarray | Sequence[int] | int) -> np.ndarray:
        """Flat indices [N] (ints in [0, num_combinations)) -> factor indices [N, K] int64."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_combinations):
            bad = idx[(idx < 0) | (idx >= self.num_combinations)][0]
            raise InvalidDataError(f"grid index {int(bad)} is out of range; expected 0..{self.num_combinations - 1}")
        return (idx[:, None] // self.bases[None, :]) % np.array(self.factor_sizes, dtype=np.int64)[None, :]

    def factors_to_index(self, factors: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
        """Factor indices [N, K] (or one row [K]) -> flat indices [N] int64."""
        f = self.check_factors(factors)
        return f @ self.bases

    def check_factors(self, factors: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
        """Validate factor indices and return them as int64 [N, K]."""
        f = np.asarray(factors)
        if f.ndim == 1:
            f = f[None, :]
        k = len(self.factor_sizes)
        if f.ndim != 2 or f.shape[1] != k:
            raise InvalidDataError(
                f"factors have shape {tuple(np.shape(factors))}; expected [N, {k}] ({', '.join(self.factor_names)})"
            )
        if f.size and not np.issubdtype(f.dtype, np.integer):
            raise InvalidDataError(f"factors have dtype {f.dtype}; expected integer factor indices")
        f = f.astype(np.int64)
        sizes = np.array(self.factor_sizes)
        bad = (f < 0) | (f >= sizes[None, :])
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise InvalidDataError(
                f"factor {self.factor_names[col]}={int(f[row, col])} in row {int(row)} is out of range; "
                f"expected 0..{sizes[col] - 1}"
            )
        return f


#: The grid of the ``shapes`` data set (737,280 combinations).
GRID = ShapesGrid()
FACTOR_BASES = GRID.bases
num_combinations = GRID.num_combinations


def index_to_factors(idx: np.ndarray | Sequence[int] | int) -> np.ndarray:
    """Flat ``shapes`` indices [N] -> factor indices [N, 5] int64 (see :class:`ShapesGrid`)."""
    return GRID.index_to_factors(idx)


def factors_to_index(factors: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
    """``shapes`` factor indices [N, 5] -> flat indices [N] int64 (see :class:`ShapesGrid`)."""
    return GRID.factors_to_index(factors)


def render(factors: np.ndarray | Sequence[Sequence[int]], size: int = 64) -> np.ndarray:
    """Rasterise factor rows [N, 5] (shape, scale, orientation, pos_x, pos_y indices; extra columns
    are ignored) into binary images uint8 {0, 1} [N, size, size], 1 where a pixel's centre lies
    inside the shape. Vectorised over chunks of images."""
    f = np.asarray(factors)
    if f.ndim == 1:
        f = f[None, :]
    if f.ndim != 2 or f.shape[1] < 5:
        raise InvalidDataError(f"factors have shape {tuple(np.shape(factors))}; expected [N, 5] or more columns")
    f = GRID.check_factors(f[:, :5])
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 4:
        raise InvalidDataError(f"image size {size!r} is invalid; expected an integer >= 4")
    out = np.zeros((len(f), size, size), dtype=np.uint8)
    for start in range(0, len(f), _CHUNK):
        out[start : start + _CHUNK] = _render_chunk(f[start : start + _CHUNK], int(size))
    return out


def _render_chunk(f: np.ndarray, size: int) -> np.ndarray:
    n = len(f)
    scale = FACTOR_VALUES["scale"][f[:, 1]]
    theta = FACTOR_VALUES["orientation"][f[:, 2]]
    cx = MARGIN + FACTOR_VALUES["pos_x"][f[:, 3]] * (1 - 2 * MARGIN)
    cy = MARGIN + FACTOR_VALUES["pos_y"][f[:, 4]] * (1 - 2 * MARGIN)
    grid = (np.arange(size) + 0.5) / size
    # Offsets from the centre, y pointing up (rows grow downwards), so angles turn counter-clockwise.
    dx = grid[None, :] - cx[:, None]  # [n, W]
    dy = cy[:, None] - grid[None, :]  # [n, H]
    cos, sin = np.cos(theta)[:, None], np.sin(theta)[:, None]
    out = np.zeros((n, size, size), dtype=np.uint8)
    for shape_id in range(3):
        sel = np.nonzero(f[:, 0] == shape_id)[0]
        if sel.size == 0:
            continue
        unit = (_SQUARE_HALF, _ELLIPSE_AXES[0], _HEART_UNIT)[shape_id] * scale[sel, None]
        # Shape-frame coordinates (u, v) = R(-theta) (dx, dy) / unit. Each is a sum of a per-column
        # and a per-row term, so the [n, H, W] grids cost one broadcast add each.
        cs, sn, ddx, ddy = cos[sel] / unit, sin[sel] / unit, dx[sel], dy[sel]
        u = ((cs * ddx)[:, None, :] + (sn * ddy)[:, :, None]).astype(np.float32)
        v = ((-sn * ddx)[:, None, :] + (cs * ddy)[:, :, None]).astype(np.float32)
        if shape_id == 0:
            inside = np.maximum(np.abs(u), np.abs(v)) <= 1.0
        elif shape_id == 1:
            # u and v are in units of the long semi-axis a, so the short one is b/a: u^2 + (v a/b)^2 <= 1.
            ratio = _ELLIPSE_AXES[0] / _ELLIPSE_AXES[1]
            inside = u * u + (v * ratio) ** 2 <= 1.0
        else:
            v = v + np.float32(_HEART_SHIFT)
            u2 = u * u
            r = u2 + v * v - 1.0
            inside = r * r * r <= u2 * v * v * v
        out[sel] = inside
    return out


# --- splits ----------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _permutation(total: int, seed: int) -> np.ndarray:
    perm = np.random.default_rng(int(seed)).permutation(total)
    perm.flags.writeable = False
    return perm


def grid_split_indices(
    total: int, split: str, n: int | None, seed: int = 0, default_sizes: dict[str, int] = DEFAULT_SIZES
) -> np.ndarray:
    """Flat grid indices [N] of one split: a seeded permutation of all ``total`` combinations is
    cut into fixed regions (test: first 10 %, val: next 10 %, train: the remaining 80 %) and a split
    of size ``n`` takes the first ``n`` of its region, so splits stay disjoint whatever their sizes.
    ``"all"`` concatenates the three default-size splits (the first ``n`` rows if ``n`` is given)."""
    check_split(split)
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1):
        raise InvalidDataError(f"number of examples n={n!r} is invalid; expected a positive integer")
    perm = _permutation(total, seed)
    tenth = total // 10
    regions = {"test": perm[:tenth], "val": perm[tenth : 2 * tenth], "train": perm[2 * tenth :]}
    if split == "all":
        idx = np.concatenate([regions[s][: default_sizes[s]] for s in ("train", "val", "test")])
        limit, where = len(idx), "split 'all'"
    else:
        idx, limit, where = regions[split], len(regions[split]), f"split {split!r}"
        if n is None:
            n = default_sizes[split]
    if n is not None:
        if n > limit:
            raise InvalidDataError(f"n={n} exceeds the {limit} examples available to {where}")
        idx = idx[:n]
    return np.array(idx, dtype=np.int64)


def load_shapes(split: str = "train", n: int | None = None, seed: int = 0, size: int = 64) -> TensorDataset:
    """One split of ``shapes``: ``"x"`` float32 [N, 1, size, size] in {0, 1}, ``"factors"`` int64
    [N, 5] (indices into :data:`FACTOR_VALUES`) and ``"y"`` int64 [N] = shape id. The split is a
    seeded random subset of the 737,280 combinations (train 20,000, val 2,000, test 2,000 by default;
    ``n`` overrides), disjoint across splits (see :func:`grid_split_indices`), in random order."""
    idx = grid_split_indices(GRID.num_combinations, split, n, seed)
    factors = GRID.index_to_factors(idx)
    images = render(factors, size)
    spec = DataSpec(
        name="shapes",
        kind="image",
        shape=(1, int(size), int(size)),
        levels=2,
        num_classes=3,
        class_names=SHAPE_NAMES,
        factor_names=FACTOR_NAMES,
        factor_sizes=FACTOR_SIZES,
        extra={"factor_values": {"shape": list(SHAPE_NAMES), "scale": list(SCALE_WORDS)}},
    )
    tensors = {
        "x": torch.from_numpy(images[:, None].astype(np.float32)),
        "factors": torch.from_numpy(factors),
        "y": torch.from_numpy(factors[:, 0].copy()),
    }
    return TensorDataset(tensors, spec, split)


# --- shapes-captions ----------------------------------------------------------------------------

COLOUR_NAMES: tuple[str, ...] = ("red", "green", "blue", "yellow", "magenta", "cyan", "white")
COLOUR_RGB = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 1, 1]], dtype=np.float32)
CAPTION_GRID = ShapesGrid(FACTOR_NAMES + ("colour",), FACTOR_SIZES + (len(COLOUR_NAMES),))

#: One word per scale value, smallest first (scale 0.5, 0.6, ..., 1.0).
SCALE_WORDS: tuple[str, ...] = ("tiny", "small", "medium", "large", "huge", "giant")
#: Position bins: pos index 0..10 -> 0 (left / top), 11..20 -> 1 (centre), 21..31 -> 2 (right / bottom),
#: i.e. values below 1/3, between, and above 2/3 of the range (11/10/11 positions, mirror-symmetric).
_POS_BIN_EDGES = (11, 21)
#: Region phrase for (row bin, column bin); pos_y = 0 is the top of the image.
REGION_PHRASES: dict[tuple[int, int], str] = {
    (0, 0): "in the top left",
    (0, 1): "at the top",
    (0, 2): "in the top right",
    (1, 0): "on the left",
    (1, 1): "in the center",
    (1, 2): "on the right",
    (2, 0): "in the bottom left",
    (2, 1): "at the bottom",
    (2, 2): "in the bottom right",
}
#: What a caption determines exactly: shape, scale, colour and the 3x3 region of the position.
#: Orientation and the exact position within a region are not described.
CAPTION_FACTOR_NAMES: tuple[str, ...] = ("shape", "scale", "colour", "region_x", "region_y")
CAPTION_FACTOR_SIZES: tuple[int, ...] = (3, 6, len(COLOUR_NAMES), 3, 3)

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<bos>", "<eos>", "<unk>")
PAD, BOS, EOS, UNK = 0, 1, 2, 3


def _caption_vocab() -> tuple[str, ...]:
    words: list[str] = ["a", *SCALE_WORDS, *COLOUR_NAMES, *SHAPE_NAMES]
    for phrase in REGION_PHRASES.values():
        words += [w for w in phrase.split() if w not in words]
    return SPECIAL_TOKENS + tuple(words)


CAPTION_VOCAB: tuple[str, ...] = _caption_vocab()
_WORD_ID = {w: i for i, w in enumerate(CAPTION_VOCAB)}
#: Longest caption in words ("a tiny red square in the top left" = 8) plus <bos> and <eos>.
TEXT_LEN = 2 + max(4 + len(p.split()) for p in REGION_PHRASES.values())
_PHRASE_REGION = {p: k for k, p in REGION_PHRASES.items()}


def position_bin(pos_index: np.ndarray | int) -> np.ndarray:
    """Position indices 0..31 -> region bin 0, 1 or 2 (left/top, centre, right/bottom)."""
    return np.searchsorted(np.array(_POS_BIN_EDGES), np.asarray(pos_index), side="right")


def caption_factors(factors: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
    """Full caption-set factors [N, 6] -> the captioned factors [N, 5] int64 (shape, scale, colour,
    region_x, region_y), i.e. what :func:`parse_caption` recovers from :func:`caption`."""
    f = CAPTION_GRID.check_factors(factors)
    return np.stack([f[:, 0], f[:, 1], f[:, 5], position_bin(f[:, 3]), position_bin(f[:, 4])], 1).astype(np.int64)


def caption(factors_row: np.ndarray | Sequence[int]) -> str:
    """English caption of one factor row [6] (shape, scale, orientation, pos_x, pos_y, colour),
    e.g. ``"a small red heart in the top left"``."""
    c = caption_factors(np.asarray(factors_row).reshape(1, -1))[0]
    shape, scale, colour, rx, ry = (int(v) for v in c)
    region = REGION_PHRASES[(ry, rx)]
    return f"a {SCALE_WORDS[scale]} {COLOUR_NAMES[colour]} {SHAPE_NAMES[shape]} {region}"


_CAPTION_RE = re.compile(
    r"a (?P<scale>{}) (?P<colour>{}) (?P<shape>{}) (?P<region>{})".format(
        "|".join(SCALE_WORDS), "|".join(COLOUR_NAMES), "|".join(SHAPE_NAMES), "|".join(REGION_PHRASES.values())
    )
)


def parse_caption(text: str) -> dict[str, int]:
    """Parse a caption back to its captioned factors: a dict with keys :data:`CAPTION_FACTOR_NAMES`
    (factor indices). Case and runs of whitespace are ignored, and so are the special tokens
    ``<bos>``/``<eos>``/``<pad>``; anything else that is not a caption raises InvalidDataError."""
    if not isinstance(text, str):
        raise InvalidDataError(f"caption {text!r} is not a string")
    words = [w for w in text.lower().split() if w not in ("<bos>", "<eos>", "<pad>")]
    m = _CAPTION_RE.fullmatch(" ".join(words))
    if m is None:
        raise InvalidDataError(f"cannot parse caption {text!r}; expected e.g. 'a small red heart in the top left'")
    ry, rx = _PHRASE_REGION[m["region"]]
    return {
        "shape": SHAPE_NAMES.index(m["shape"]),
        "scale": SCALE_WORDS.index(m["scale"]),
        "colour": COLOUR_NAMES.index(m["colour"]),
        "region_x": rx,
        "region_y": ry,
    }


def encode_caption(text: str, length: int = TEXT_LEN) -> np.ndarray:
    """Caption string -> token ids int64 [length]: <bos>, one id per word (unknown words map to
    <unk>), <eos>, then <pad>. Raises InvalidDataError if it does not fit in ``length``."""
    ids = [BOS] + [_WORD_ID.get(w, UNK) for w in text.lower().split()] + [EOS]
    if len(ids) > length:
        raise InvalidDataError(f"caption {text!r} has {len(ids)} tokens with <bos>/<eos>; expected at most {length}")
    return np.array(ids + [PAD] * (length - len(ids)), dtype=np.int64)


def decode_caption(ids: np.ndarray | torch.Tensor | Sequence[int]) -> str:
    """Token ids [T] -> caption string: the words up to the first <eos>, skipping <bos>/<pad>."""
    words = []
    for i in np.asarray(ids).reshape(-1).tolist():
        if i == EOS:
            break
        if i in (PAD, BOS):
            continue
        words.append(CAPTION_VOCAB[i] if 0 <= i < len(CAPTION_VOCAB) else "<unk>")
    return " ".join(words)


@lru_cache(maxsize=1)
def _caption_token_table() -> np.ndarray:
    # Token ids of every distinct caption, indexed by the captioned factors [3, 6, 7, 3, 3, T]:
    # 1,134 captions, so 20,000 rows are tokenized by one lookup instead of 20,000 string builds.
    table = np.zeros(CAPTION_FACTOR_SIZES + (TEXT_LEN,), dtype=np.int64)
    for key in np.ndindex(*CAPTION_FACTOR_SIZES):
        shape, scale, colour, rx, ry = key
        text = f"a {SCALE_WORDS[scale]} {COLOUR_NAMES[colour]} {SHAPE_NAMES[shape]} {REGION_PHRASES[(ry, rx)]}"
        table[key] = encode_caption(text)
    table.flags.writeable = False
    return table


def caption_tokens(factors: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
    """Caption-set factor rows [N, 6] -> caption token ids int64 [N, TEXT_LEN] (what
    ``encode_caption(caption(row))`` gives for each row, vectorised)."""
    c = caption_factors(factors)
    return _caption_token_table()[tuple(c.T)].copy()


def render_coloured(factors: np.ndarray | Sequence[Sequence[int]], size: int = 32) -> np.ndarray:
    """Caption-set factor rows [N, 6] -> RGB images float32 [N, 3, size, size] with values in {0, 1}:
    the shape in its colour on black."""
    f = CAPTION_GRID.check_factors(factors)
    mask = render(f[:, :5], size).astype(np.float32)
    return mask[:, None] * COLOUR_RGB[f[:, 5]][:, :, None, None]


def correlated_value(source: np.ndarray, target_size: int) -> np.ndarray:
    """The tied value of the ``correlate`` option: target index = source index mod ``target_size``
    (colour <- shape: square -> red, ellipse -> green, heart -> blue)."""
    return np.asarray(source, dtype=np.int64) % int(target_size)


def parse_correlate(spec: str) -> tuple[int, int, float]:
    """``"colour:shape:0.8"`` -> (target column, source column, p) in the caption-set factor rows
    (:data:`CAPTION_GRID` order: shape, scale, orientation, pos_x, pos_y, colour). One-line
    InvalidDataError naming the bad part otherwise."""
    parts = str(spec).split(":")
    names = CAPTION_GRID.factor_names
    if len(parts) != 3:
        raise InvalidDataError(f"correlate={spec!r} is invalid; expected 'TARGET:SOURCE:P', e.g. 'colour:shape:0.8'")
    target, source, prob = parts
    for name in (target, source):
        if name not in names:
            raise InvalidDataError(f"correlate={spec!r}: unknown factor {name!r}; expected one of {', '.join(names)}")
    if target == source:
        raise InvalidDataError(f"correlate={spec!r}: a factor cannot be tied to itself")
    try:
        p = float(prob)
    except ValueError:
        raise InvalidDataError(f"correlate={spec!r}: probability {prob!r} is not a number") from None
    if not 0.0 <= p <= 1.0:
        raise InvalidDataError(f"correlate={spec!r}: probability {p} is outside [0, 1]")
    return names.index(target), names.index(source), p


def correlate_factors(factors: np.ndarray, correlate: str, seed: int, split: str) -> np.ndarray:
    """Factor rows [N, 6] with the ``correlate`` option applied: each row's target factor is, with
    probability p (independently per row), replaced by :func:`correlated_value` of its source factor;
    otherwise kept as drawn from the grid. The coin flips are seeded by (seed, split), so a split is
    deterministic, and p = 0 returns the rows unchanged."""
    t, s, p = parse_correlate(correlate)
    out = np.array(factors, dtype=np.int64, copy=True)
    split_id = ("train", "val", "test", "all").index(split)
    rng = np.random.default_rng([int(seed), 7919, split_id])
    tie = rng.random(len(out)) < p
    out[tie, t] = correlated_value(out[tie, s], CAPTION_GRID.factor_sizes[t])
    return out


def load_shapes_captions(
    split: str = "train", n: int | None = None, seed: int = 0, size: int = 32, correlate: str | None = None
) -> TensorDataset:
    """One split of ``shapes-captions``: ``"x"`` float32 [N, 3, size, size] in {0, 1} (a coloured
    shape on black), ``"factors"`` int64 [N, 6] (shape, scale, orientation, pos_x, pos_y, colour),
    ``"y"`` int64 [N] shape id, and ``"text"`` int64 [N, T] caption token ids (<bos> words <eos>
    <pad>...; T = ``spec.extra["text_len"]``, vocabulary ``spec.vocab``). Subsets of the 5,160,960
    combinations are drawn like :func:`load_shapes` (default 20,000 / 2,000 / 2,000).
    ``spec.modalities`` describes ``"x"`` (image) and ``"text"`` (tokens).

    ``correlate="TARGET:SOURCE:P"`` (e.g. ``"colour:shape:0.8"``, for bias-amplification audits,
    Zhao et al. 2017) ties two factors: the split's factors are drawn from the grid as without it,
    then each row's TARGET is set, with probability P, to the fixed value of its SOURCE
    (:func:`correlated_value`: colour <- shape gives square -> red, ellipse -> green, heart -> blue),
    so P(target = tied | source) = P + (1 - P) / |target|; images and captions are rendered from the
    final factors. Rows of a split may then repeat a combination, and correlated splits are no longer
    guaranteed disjoint (two grid cells can collapse onto one); P = 0 gives the independent data exactly."""
    idx = grid_split_indices(CAPTION_GRID.num_combinations, split, n, seed)
    factors = CAPTION_GRID.index_to_factors(idx)
    if correlate is not None:
        factors = correlate_factors(factors, correlate, seed, split)
    images = render_coloured(factors, size)
    text = caption_tokens(factors)
    spec = DataSpec(
        name="shapes-captions",
        kind="multimodal",
        shape=(3, int(size), int(size)),
        levels=2,
        num_classes=3,
        class_names=SHAPE_NAMES,
        vocab=CAPTION_VOCAB,
        factor_names=CAPTION_GRID.factor_names,
        factor_sizes=CAPTION_GRID.factor_sizes,
        extra={
            "text_len": TEXT_LEN,
            "caption_factor_names": list(CAPTION_FACTOR_NAMES),
            "caption_factor_sizes": list(CAPTION_FACTOR_SIZES),
            "colour_names": list(COLOUR_NAMES),
            "factor_values": {"shape": list(SHAPE_NAMES), "scale": list(SCALE_WORDS), "colour": list(COLOUR_NAMES)},
            **({"correlate": str(correlate)} if correlate is not None else {}),
        },
        modalities={
            "x": DataSpec(name="x", kind="image", shape=(3, int(size), int(size)), levels=2),
            "text": DataSpec(
                name="text",
                kind="tokens",
                shape=(TEXT_LEN,),
                dtype="int64",
                value_range=None,
                levels=len(CAPTION_VOCAB),
                vocab=CAPTION_VOCAB,
                extra={"text_len": TEXT_LEN},
            ),
        },
    )
    tensors = {
        "x": torch.from_numpy(images),
        "factors": torch.from_numpy(factors),
        "y": torch.from_numpy(factors[:, 0].copy()),
        "text": torch.from_numpy(text),
    }
    return TensorDataset(tensors, spec, split)
