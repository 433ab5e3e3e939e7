"""User paired data kept the way people keep it (Flickr8k, COCO captions): a folder of images and a
captions file, ``captions.csv`` (header ``image,caption`` and optionally ``audio``; other columns
are ignored) or ``captions.jsonl`` (one ``{"image": ..., "caption": ..., "audio": ...}`` per line).
Paths in it are relative to the folder. An image may have several captions: each row is one
example, and the split is drawn over images, so all captions of an image land in the same split.

Images are read as the image-folder loader reads them (``size``, ``grayscale``); captions are
tokenized by the word tokenizer of ``text.py`` into a fixed length with <bos>/<eos>/<pad> (the
vocabulary is built from the train split's captions, whichever split is loaded); WAV files (8- or
16-bit PCM mono, one sample rate) are read with the stdlib ``wave`` module. Bad input raises a
one-line :class:`InvalidDataError` naming the file and, for a row's fault, its line.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .audio import read_wav
from .base import InvalidDataError, TensorDataset, check_seed, check_split, discrete_to_float, split_indices
from .files import _parse_size, _short, read_images
from .spec import DataSpec
from .text import SPECIAL_TOKENS, make_tokenizer, pad_ids, read_text

CAPTION_FILES = ("captions.csv", "captions.jsonl")
CAPTION_EXTENSIONS = (".csv", ".jsonl")
#: Options of a pair folder (``load_dataset(path, **opts)``).
PAIR_OPTIONS = {"captions", "size", "grayscale", "seed", "tokenizer", "text_len", "vocab", "audio_len", "sample_rate"}
#: Names that look like a captions file in another format (refused with a hint, not ignored).
_NEAR_MISSES = ("captions.txt", "captions.json", "captions.tsv")


@dataclass(frozen=True)
class _Row:
    line: int  # 1-based line of the captions file where the row ends
    image: str  # path relative to the folder, normalised
    caption: str
    audio: str | None


def find_captions_file(folder: str) -> str | None:
    """The name of the captions file of a pair folder (``captions.csv`` or ``captions.jsonl``), or
    None when the folder has neither (then it is an image folder). Both, or only a look-alike such
    as ``captions.txt``, raise InvalidDataError."""
    present = [c for c in CAPTION_FILES if os.path.isfile(os.path.join(folder, c))]
    if len(present) > 1:
        raise InvalidDataError(f"pair folder {folder!r} holds both {' and '.join(present)}; expected one captions file")
    if present:
        return present[0]
    near = [c for c in _NEAR_MISSES if os.path.isfile(os.path.join(folder, c))]
    if near:
        raise InvalidDataError(
            f"folder {folder!r} has {near[0]} but no captions.csv or captions.jsonl; expected a CSV with header "
            '\'image,caption\' or JSON lines {"image": ..., "caption": ...} under one of those names'
        )
    return None


def load_pairs_folder(
    path: str,
    split: str = "train",
    captions: str | None = None,
    size: int | Sequence[int] | None = None,
    grayscale: bool | None = None,
    seed: int = 0,
    tokenizer: str = "word",
    text_len: int | None = None,
    vocab: Sequence[str] | None = None,
    audio_len: int | None = None,
    sample_rate: int | None = None,
) -> TensorDataset:
    """A pair folder as one split: ``"x"`` float32 [N, C, H, W] in [0, 1] (256 levels), ``"text"``
    int64 [N, text_len] caption tokens and, when the captions file has an ``audio`` column/key,
    ``"audio"`` float32 [N, audio_len] in [-1, 1]; one row per caption.

    ``captions``: the captions file's name in ``path`` (default: ``captions.csv`` or
    ``captions.jsonl``). Images: 80/10/10 of the distinct images, seeded by ``seed``, each with all
    its rows. ``size``/``grayscale``: as for an image folder. ``tokenizer``: "word" (default) or
    "char"; ``vocab``: a fixed vocabulary (e.g. a trained run's), else built from the train split;
    ``text_len``: tokens per caption with <bos>/<eos> (default: the longest caption of the folder;
    longer captions are cut, keeping <eos>). ``audio_len``: samples per clip (default: the longest
    clip; shorter clips are padded with silence at the end, longer ones cut). ``sample_rate``: the
    rate every WAV must have (default: that of the first). The spec is kind "multimodal" with the
    top-level shape/levels of the images, ``vocab`` and ``extra["text_len"]``, and ``modalities``
    describing "x", "text" and "audio"."""
    check_split(split)
    check_seed(seed)
    hw = _parse_size(size)
    if grayscale is not None and not isinstance(grayscale, (bool, np.bool_)):
        raise InvalidDataError(f"grayscale={grayscale!r} is invalid; expected true, false or none (automatic)")
    for key, val in {"text_len": text_len, "audio_len": audio_len, "sample_rate": sample_rate}.items():
        if val is not None and (isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < 1):
            raise InvalidDataError(f"{key}={val!r} is invalid; expected a positive integer")
    if text_len is not None and text_len < 3:
        raise InvalidDataError(f"text_len={text_len} is too short; expected at least 3 (<bos>, a token, <eos>)")
    if not os.path.isdir(path):
        raise InvalidDataError(f"pair folder {path!r} does not exist or is not a folder")
    if captions is not None and (not isinstance(captions, str) or not captions.strip()):
        raise InvalidDataError(f"captions={captions!r} is invalid; expected the captions file's name in {path!r}")
    name = captions if captions is not None else find_captions_file(path)
    if name is None:
        raise InvalidDataError(f"pair folder {path!r} has no captions.csv or captions.jsonl")
    file = os.path.join(path, name)
    if not os.path.isfile(file):
        raise InvalidDataError(f"captions file {file!r} does not exist")
    if not name.lower().endswith(CAPTION_EXTENSIONS):
        raise InvalidDataError(f"captions file {file!r} is neither .csv nor .jsonl")

    rows = _read_rows(file)
    has_audio = any(r.audio is not None for r in rows)
    root = os.path.realpath(path)
    for r in rows:
        _check_file(root, path, file, r.line, "image", r.image)
        if has_audio:
            if r.audio is None:
                raise InvalidDataError(
                    f"line {r.line} of {file!r} has no audio for image {r.image!r}; other rows name WAV files, "
                    "so every row must"
                )
            _check_file(root, path, file, r.line, "audio", r.audio)

    # Distinct images in order of first appearance; splits are drawn over them.
    first_line: dict[str, int] = {}  # image -> the line that first names it
    for r in rows:
        first_line.setdefault(r.image, r.line)
    images = list(first_line)
    image_id = {img: i for i, img in enumerate(images)}
    row_image = np.array([image_id[r.image] for r in rows], dtype=np.int64)
    x_all = read_images(
        [os.path.join(path, img) for img in images],
        path,
        hw,
        grayscale,
        where=[f"line {first_line[img]} of {file!r}" for img in images],
    )

    def rows_of(s: str) -> np.ndarray:
        chosen = np.zeros(len(images), dtype=bool)
        chosen[split_indices(len(images), s, seed=seed)] = True
        return np.nonzero(chosen[row_image])[0]

    sel = rows_of(split)
    if len(sel) == 0:
        raise InvalidDataError(
            f"split {split!r} of {path!r} is empty: {len(images)} images are too few for an 80/10/10 split"
        )

    tok = make_tokenizer(tokenizer, vocab)
    if vocab is None:
        train_tokens = {t for i in rows_of("train") for t in tok.split(rows[i].caption)}
        tok = make_tokenizer(tokenizer, SPECIAL_TOKENS + tuple(sorted(train_tokens - set(SPECIAL_TOKENS))))
    ids = [tok.encode(r.caption) for r in rows]
    length = int(text_len) if text_len is not None else 2 + max(len(i) for i in ids)
    text = np.stack([pad_ids(ids[i], length) for i in sel])

    image_spec = DataSpec(name="x", kind="image", shape=tuple(int(s) for s in x_all.shape[1:]), levels=256)
    text_spec = DataSpec(
        name="text",
        kind="tokens",
        shape=(length,),
        dtype="int64",
        value_range=None,
        levels=len(tok.vocab),
        vocab=tok.vocab,
        extra={"text_len": length, "tokenizer": tok.kind},
    )
    tensors = {"x": discrete_to_float(x_all[row_image[sel]], 256), "text": torch.from_numpy(text)}
    modalities = {"x": image_spec, "text": text_spec}
    if has_audio:
        clips, rate = _read_audio(path, file, rows, audio_len, sample_rate)
        tensors["audio"] = torch.from_numpy(clips[sel])
        modalities["audio"] = DataSpec(
            name="audio",
            kind="audio",
            shape=(clips.shape[1],),
            value_range=(-1.0, 1.0),
            extra={"sample_rate": rate, "encoding": "pcm"},
        )
    spec = DataSpec(
        name=os.path.basename(os.path.normpath(path)),
        kind="multimodal",
        shape=image_spec.shape,
        levels=256,
        vocab=tok.vocab,
        extra={"text_len": length, "tokenizer": tok.kind, "captions_file": name, "num_images": len(images)},
        modalities=modalities,
    )
    return TensorDataset(tensors, spec, split)


# --- the captions file ------------------------------------------------------------------------------


def _read_rows(file: str) -> list[_Row]:
    text = read_text(file, "captions file")
    rows = _csv_rows(file, text) if file.lower().endswith(".csv") else _jsonl_rows(file, text)
    if not rows:
        raise InvalidDataError(f"captions file {file!r} has no rows; expected one image and caption per row")
    return rows


def _row(file: str, line: int, image: Any, caption: Any, audio: Any) -> _Row:
    for key, val in (("image", image), ("caption", caption)):
        if not isinstance(val, str):
            raise InvalidDataError(f"line {line} of {file!r}: {key} is {_short(repr(val))}; expected a string")
    if not image.strip():
        raise InvalidDataError(f"line {line} of {file!r} has an empty image path")
    if not caption.strip():
        raise InvalidDataError(f"line {line} of {file!r} has an empty caption for image {image.strip()!r}")
    if audio is not None and not isinstance(audio, str):
        raise InvalidDataError(f"line {line} of {file!r}: audio is {_short(repr(audio))}; expected a WAV path")
    audio = audio.strip() if audio is not None and audio.strip() else None
    return _Row(line, os.path.normpath(image.strip()), caption.strip(), audio and os.path.normpath(audio))


def _csv_rows(file: str, text: str) -> list[_Row]:
    # newline="": only \n, \r and \r\n end lines (not U+2028 ...), and quoted newlines stay in their field.
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise InvalidDataError(f"captions file {file!r} is empty; expected a header 'image,caption'")
        cols = [c.strip().lower() for c in header]
        missing = [c for c in ("image", "caption") if c not in cols]
        if missing:
            raise InvalidDataError(
                f"line 1 of {file!r} is the header {_short(','.join(header))!r}; it lacks {' and '.join(missing)} "
                "(expected 'image,caption' and optionally 'audio')"
            )
        dup = next((c for i, c in enumerate(cols) if c in cols[:i] and c in ("image", "caption", "audio")), None)
        if dup:
            raise InvalidDataError(f"line 1 of {file!r}: column {dup!r} appears twice")
        at = {c: cols.index(c) for c in ("image", "caption", "audio") if c in cols}
        rows = []
        for fields in reader:
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue  # a blank line
            if len(fields) != len(cols):
                raise InvalidDataError(
                    f"line {reader.line_num} of {file!r} has {len(fields)} fields; expected {len(cols)} "
                    f"({','.join(header)}); quote captions that contain commas"
                )
            audio = fields[at["audio"]] if "audio" in at else None
            rows.append(_row(file, reader.line_num, fields[at["image"]], fields[at["caption"]], audio))
        return rows
    except csv.Error as e:
        raise InvalidDataError(f"line {reader.line_num} of {file!r} is not valid CSV ({e})") from None


def _jsonl_rows(file: str, text: str) -> list[_Row]:
    rows = []
    for line, content in enumerate(text.split("\n"), 1):  # JSON strings may hold U+2028: split on \n only
        if not content.strip():
            continue
        try:
            obj = json.loads(content)
        except (json.JSONDecodeError, RecursionError) as e:
            why = f"{e.msg} at column {e.colno}" if isinstance(e, json.JSONDecodeError) else "nested too deeply"
            raise InvalidDataError(f"line {line} of {file!r} is not valid JSON ({why})") from None
        if not isinstance(obj, dict) or "image" not in obj or "caption" not in obj:
            raise InvalidDataError(
                f"line {line} of {file!r} is {_short(content, 60)!r}; expected an object with 'image' and 'caption' "
                "(and optionally 'audio')"
            )
        rows.append(_row(file, line, obj["image"], obj["caption"], obj.get("audio")))
    return rows


def _check_file(root: str, path: str, file: str, line: int, what: str, rel: str) -> None:
    """A row's image or WAV path must name a file inside the folder."""
    full = os.path.realpath(os.path.join(path, rel))
    if os.path.isabs(rel) or os.path.commonpath([full, root]) != root:
        raise InvalidDataError(f"line {line} of {file!r} names {what} {rel!r} outside the folder {path!r}")
    if not os.path.isfile(full):
        raise InvalidDataError(f"line {line} of {file!r} names {what} {rel!r}, which is not a file in {path!r}")


def _read_audio(
    path: str, file: str, rows: list[_Row], audio_len: int | None, sample_rate: int | None
) -> tuple[np.ndarray, int]:
    """Every row's clip, float32 [N_rows, L] padded with silence or cut to L, and the sample rate."""
    cache: dict[str, tuple[np.ndarray, int]] = {}
    clips, rate, first = [], sample_rate, None
    for r in rows:
        assert r.audio is not None
        if r.audio not in cache:
            try:
                cache[r.audio] = read_wav(os.path.join(path, r.audio), mono=True)
            except InvalidDataError as e:
                raise InvalidDataError(f"line {r.line} of {file!r}: {e}") from None
        samples, r_rate = cache[r.audio]
        if rate is None:
            rate, first = r_rate, r.audio
        if r_rate != rate:
            since = f"the first WAV ({first!r}) has {rate} Hz" if first else f"sample_rate={rate} was asked for"
            raise InvalidDataError(
                f"line {r.line} of {file!r}: WAV file {r.audio!r} has {r_rate} Hz but {since}; "
                "expected one sample rate (resample the files first)"
            )
        clips.append(samples)
    length = int(audio_len) if audio_len is not None else max(len(c) for c in clips)
    out = np.zeros((len(clips), length), dtype=np.float32)
    for i, c in enumerate(clips):
        out[i, : min(len(c), length)] = c[:length]
    assert rate is not None
    return out, int(rate)
