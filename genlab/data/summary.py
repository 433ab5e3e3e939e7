"""``shapes-summary``: multimodal summarization on the coloured shapes -- less information out than
in, where each input modality holds facts the other lacks (the lecture's "video + transcript ->
one-line summary").

Each example of ``shapes-captions`` becomes an image, a caption with some factors withheld, and a
short summary that names the colour, the shape and the position::

    caption  "a small red heart in the top left"
    text     "a small ___ heart somewhere"          (colour and position withheld)
    image    the red heart, top left                (colour and position are in the image)
    summary  "red heart, top left"

Per example, independently with probability :data:`P_WITHHOLD` = 0.5 each: the colour word becomes
``"___"``, the shape noun the generic ``"shape"``, the region phrase ``"somewhere"``. With
probability :data:`P_HIDE_COLOUR` = 0.25, *if the caption states the colour*, the image hides it: the
shape is rendered white. So the colour is in the text only (p = 0.125), the image only (0.5) or both
(0.375); shape and position are always in the image, and in the text too half of the time. The
``"source"`` tensor records which (:data:`TEXT_ONLY`, :data:`IMAGE_ONLY`, :data:`BOTH`) for colour,
shape and position. A white shape is ambiguous to an image-only reader (white, or a hidden colour);
the caption then says which. The draws come from a counter-based hash of the example's grid index
and the ``seed`` option (as ``shapes-av``'s jitter), so an example is masked the same way whatever
the split size ``n``.

Vocabulary: :data:`SUMMARY_VOCAB` is ``CAPTION_VOCAB`` with ``"___"``, ``"shape"``, ``"somewhere"``
and ``","`` appended, so caption token ids keep their values; captions and summaries share it.
Position words of a summary (row bin, column bin): "top left", "top", "top right", "left",
"center", "right", "bottom left", "bottom", "bottom right".
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch

from .base import InvalidDataError, TensorDataset
from .shapes import (
    CAPTION_GRID,
    CAPTION_VOCAB,
    COLOUR_NAMES,
    REGION_PHRASES,
    SCALE_WORDS,
    SHAPE_NAMES,
    TEXT_LEN,
    caption_factors,
    grid_split_indices,
    parse_caption,
    render_coloured,
)
from .shapes_av import _example_keys, _uniform  # the one counter-based hash of the shapes data sets
from .spec import DataSpec
from .text import BOS, EOS, PAD, encode_text

#: The words a masked caption uses in place of a withheld colour, shape and position.
WITHHELD_COLOUR, GENERIC_SHAPE, SOMEWHERE = "___", "shape", "somewhere"
SUMMARY_VOCAB: tuple[str, ...] = CAPTION_VOCAB + (WITHHELD_COLOUR, GENERIC_SHAPE, SOMEWHERE, ",")
_WORD_ID = {w: i for i, w in enumerate(SUMMARY_VOCAB)}
#: Position words of a summary per (row bin, column bin), as :data:`REGION_PHRASES`.
REGION_WORDS: dict[tuple[int, int], str] = {
    (0, 0): "top left",
    (0, 1): "top",
    (0, 2): "top right",
    (1, 0): "left",
    (1, 1): "center",
    (1, 2): "right",
    (2, 0): "bottom left",
    (2, 1): "bottom",
    (2, 2): "bottom right",
}
_WORDS_REGION = {w: k for k, w in REGION_WORDS.items()}
#: Longest summary in tokens: <bos> colour shape , two position words <eos> = 7.
SUMMARY_LEN = 4 + max(len(w.split()) for w in REGION_WORDS.values()) + 1
#: What a summary determines, in the order of :func:`summary_factors` and :func:`parse_summary`.
SUMMARY_FACTOR_NAMES: tuple[str, ...] = ("colour", "shape", "region_x", "region_y")
SUMMARY_FACTOR_SIZES: tuple[int, ...] = (len(COLOUR_NAMES), len(SHAPE_NAMES), 3, 3)
#: The columns of ``"source"``: where each of these facts is stated.
SOURCE_FACTORS: tuple[str, ...] = ("colour", "shape", "position")
#: Values of ``"source"``: the fact is in the text only, the image only, or both.
SOURCE_NAMES: tuple[str, ...] = ("text_only", "image_only", "both")
TEXT_ONLY, IMAGE_ONLY, BOTH = 0, 1, 2
P_WITHHOLD = 0.5
P_HIDE_COLOUR = 0.25
_STREAM = 16  # hash stream of the masks: apart from shapes-av's audio jitter (streams 0 and 1)


# --- captions with withheld factors ------------------------------------------------------------


def _masked_text(shape: int, scale: int, colour: int, rx: int, ry: int, withheld: Sequence[bool]) -> str:
    hide_colour, hide_shape, hide_position = withheld
    return " ".join(
        [
            "a",
            SCALE_WORDS[scale],
            WITHHELD_COLOUR if hide_colour else COLOUR_NAMES[colour],
            GENERIC_SHAPE if hide_shape else SHAPE_NAMES[shape],
            SOMEWHERE if hide_position else REGION_PHRASES[(ry, rx)],
        ]
    )


def mask_caption(text: str, *, colour: bool = False, shape: bool = False, position: bool = False) -> str:
    """A full ``shapes-captions`` caption with the named factors withheld, e.g.
    ``mask_caption("a small red heart in the top left", colour=True)`` -> ``"a small ___ heart in
    the top left"``; ``shape=True`` puts the generic ``"shape"``, ``position=True`` ``"somewhere"``.
    A text that is no full caption raises a one-line InvalidDataError."""
    f = parse_caption(text)
    return _masked_text(f["shape"], f["scale"], f["colour"], f["region_x"], f["region_y"], (colour, shape, position))


def _text_spec() -> DataSpec:
    return DataSpec(
        name="text",
        kind="tokens",
        shape=(TEXT_LEN,),
        dtype="int64",
        value_range=None,
        levels=len(SUMMARY_VOCAB),
        vocab=SUMMARY_VOCAB,
        extra={"text_len": TEXT_LEN},
    )


def encode_prompt(text: str) -> np.ndarray:
    """A (masked) caption -> token ids int64 [TEXT_LEN] over :data:`SUMMARY_VOCAB`: <bos>, the
    lower-case words, <eos>, <pad>... A word outside the vocabulary, an empty text or one of more
    than TEXT_LEN - 2 words raises a one-line InvalidDataError that names it."""
    return encode_text(text, _text_spec())


@lru_cache(maxsize=1)
def _masked_token_table() -> np.ndarray:
    # Token ids of every masked caption, indexed by the captioned factors and the three withheld
    # flags [3, 6, 7, 3, 3, 2, 2, 2, T]: 9,072 captions, so a split is tokenized by one lookup.
    table = np.zeros((3, len(SCALE_WORDS), len(COLOUR_NAMES), 3, 3, 2, 2, 2, TEXT_LEN), dtype=np.int64)
    for key in np.ndindex(*table.shape[:-1]):
        table[key] = encode_prompt(_masked_text(*key[:5], key[5:]))
    table.flags.writeable = False
    return table


# --- summaries ----------------------------------------------------------------------------------


def summary_text(colour: int, shape: int, region_x: int, region_y: int) -> str:
    """The summary of a colour, shape and region (factor indices), e.g. ``"red heart, top left"``."""
    return f"{COLOUR_NAMES[colour]} {SHAPE_NAMES[shape]}, {REGION_WORDS[(region_y, region_x)]}"


def summary_factors(factors: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
    """Caption-set factor rows [N, 6] -> what their summaries state, int64 [N, 4] (colour, shape,
    region_x, region_y: :data:`SUMMARY_FACTOR_NAMES`)."""
    c = caption_factors(factors)  # shape, scale, colour, region_x, region_y
    return np.stack([c[:, 2], c[:, 0], c[:, 3], c[:, 4]], 1)


def encode_summary(text: str) -> np.ndarray:
    """A summary string -> token ids int64 [SUMMARY_LEN]: <bos>, its words (a comma is a token of its
    own, spaced or not), <eos>, <pad>... A text that is no summary raises a one-line InvalidDataError."""
    f = parse_summary(text)
    words = summary_text(f["colour"], f["shape"], f["region_x"], f["region_y"]).replace(",", " ,").split()
    ids = [BOS, *(_WORD_ID[w] for w in words), EOS]
    return np.array(ids + [PAD] * (SUMMARY_LEN - len(ids)), dtype=np.int64)


@lru_cache(maxsize=1)
def _summary_token_table() -> np.ndarray:
    # [7, 3, 3, 3, S]: the 189 summaries by (colour, shape, region_x, region_y).
    table = np.zeros(SUMMARY_FACTOR_SIZES + (SUMMARY_LEN,), dtype=np.int64)
    for key in np.ndindex(*SUMMARY_FACTOR_SIZES):
        table[key] = encode_summary(summary_text(*key))
    table.flags.writeable = False
    return table


def decode_summary(ids: np.ndarray | torch.Tensor | Sequence[int], vocab: Sequence[str] = SUMMARY_VOCAB) -> str:
    """Token ids [S] -> text: the words up to the first <eos>, <bos>/<pad> skipped, a comma attached
    to the word before it (``"red heart, top left"``); ids outside ``vocab`` read as ``<unk>``."""
    words: list[str] = []
    for i in np.asarray(ids).reshape(-1).tolist():
        w = vocab[i] if 0 <= i < len(vocab) else "<unk>"
        if w == "<eos>":
            break
        if w in ("<pad>", "<bos>"):
            continue
        if w == "," and words:
            words[-1] += ","
        else:
            words.append(w)
    return " ".join(words)


_SUMMARY_RE = re.compile(
    r"(?P<colour>{}) (?P<shape>{}) , (?P<region>{})".format(
        "|".join(COLOUR_NAMES), "|".join(SHAPE_NAMES), "|".join(REGION_WORDS.values())
    )
)


def parse_summary(text: str) -> dict[str, int]:
    """A summary -> the factor indices it states: keys :data:`SUMMARY_FACTOR_NAMES`. Case, runs of
    whitespace, spacing around the comma and the special tokens <bos>/<eos>/<pad> are ignored;
    anything else that is not a summary raises a one-line InvalidDataError."""
    if not isinstance(text, str):
        raise InvalidDataError(f"summary {text!r} is not a string")
    words = [w for w in text.lower().replace(",", " , ").split() if w not in ("<bos>", "<eos>", "<pad>")]
    m = _SUMMARY_RE.fullmatch(" ".join(words))
    if m is None:
        raise InvalidDataError(f"cannot parse summary {text!r}; expected e.g. 'red heart, top left'")
    ry, rx = _WORDS_REGION[m["region"]]
    return {
        "colour": COLOUR_NAMES.index(m["colour"]),
        "shape": SHAPE_NAMES.index(m["shape"]),
        "region_x": rx,
        "region_y": ry,
    }


# --- the data set ---------------------------------------------------------------------------------


def withheld_flags(grid_index: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per example (flat ``CAPTION_GRID`` indices [N]): which of colour, shape and position the
    caption withholds, bool [N, 3], and whether the image hides the colour, bool [N] (only where the
    caption states it). Deterministic in (index, seed), independent of the split and its size."""
    u = _uniform(_example_keys(grid_index, seed), _STREAM, 4)
    withheld = u[:, :3] < P_WITHHOLD
    hidden = ~withheld[:, 0] & (u[:, 3] < P_HIDE_COLOUR)
    return withheld, hidden


def load_shapes_summary(split: str = "train", n: int | None = None, seed: int = 0, size: int = 32) -> TensorDataset:
    """One split of ``shapes-summary`` (see the module docstring), over the examples of
    ``shapes-captions`` with the same split and options: ``"x"`` float32 [N, 3, size, size] in {0, 1}
    (white where the colour is hidden), ``"text"`` int64 [N, TEXT_LEN] masked caption ids, ``"summary"``
    int64 [N, SUMMARY_LEN] (<bos> colour shape , position words <eos> <pad>...), ``"factors"`` int64
    [N, 6], ``"y"`` shape id, and ``"source"`` int64 [N, 3]: for colour, shape and position, 0 = in the
    text only, 1 = in the image only, 2 = in both. ``spec.modalities``: ``"x"`` (image), ``"text"`` and
    ``"summary"`` (tokens over :data:`SUMMARY_VOCAB`)."""
    idx = grid_split_indices(CAPTION_GRID.num_combinations, split, n, seed)
    factors = CAPTION_GRID.index_to_factors(idx)
    withheld, hidden = withheld_flags(idx, seed)
    images = render_coloured(factors, size)
    images[hidden] = images[hidden].max(1, keepdims=True)  # the silhouette in white: no colour left
    c = caption_factors(factors)  # shape, scale, colour, region_x, region_y
    text = _masked_token_table()[(*c.T, *withheld.T.astype(np.int64))]
    s = summary_factors(factors)
    summary = _summary_token_table()[tuple(s.T)]
    in_image = np.stack([~hidden, np.ones_like(hidden), np.ones_like(hidden)], 1)
    source = np.where(withheld, IMAGE_ONLY, np.where(in_image, BOTH, TEXT_ONLY)).astype(np.int64)
    size = int(size)
    text_spec = _text_spec()
    spec = DataSpec(
        name="shapes-summary",
        kind="multimodal",
        shape=(3, size, size),
        levels=2,
        num_classes=3,
        class_names=SHAPE_NAMES,
        vocab=SUMMARY_VOCAB,
        factor_names=CAPTION_GRID.factor_names,
        factor_sizes=CAPTION_GRID.factor_sizes,
        extra={
            "text_len": TEXT_LEN,
            "summary_len": SUMMARY_LEN,
            "summary_factor_names": list(SUMMARY_FACTOR_NAMES),
            "summary_factor_sizes": list(SUMMARY_FACTOR_SIZES),
            "source_factors": list(SOURCE_FACTORS),
            "source_names": list(SOURCE_NAMES),
            "colour_names": list(COLOUR_NAMES),
        },
        modalities={
            "x": DataSpec(name="x", kind="image", shape=(3, size, size), levels=2),
            "text": text_spec,
            "summary": DataSpec(
                name="summary",
                kind="tokens",
                shape=(SUMMARY_LEN,),
                dtype="int64",
                value_range=None,
                levels=len(SUMMARY_VOCAB),
                vocab=SUMMARY_VOCAB,
                extra={"text_len": SUMMARY_LEN},
            ),
        },
    )
    tensors = {
        "x": torch.from_numpy(images),
        "factors": torch.from_numpy(factors),
        "y": torch.from_numpy(factors[:, 0].copy()),
        "text": torch.from_numpy(text),
        "summary": torch.from_numpy(summary),
        "source": torch.from_numpy(source),
    }
    return TensorDataset(tensors, spec, split)
