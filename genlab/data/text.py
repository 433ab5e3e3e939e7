"""Character and word tokenizers, and a UTF-8 text file as blocks of token ids for language models.

Both tokenizers reserve ids 0..3 for ``<pad>``, ``<bos>``, ``<eos>``, ``<unk>`` and are lossless on
text made of known tokens: ``decode(encode(s)) == s``. The word tokenizer keeps the whitespace
that precedes a word or punctuation mark as part of that token (``"Hello, world"`` ->
``["Hello", ",", " world"]``), so decoding is plain concatenation and no spacing is lost.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from .base import InvalidDataError, TensorDataset, check_split
from .spec import DataSpec

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<bos>", "<eos>", "<unk>")
PAD, BOS, EOS, UNK = 0, 1, 2, 3

#: Contiguous fractions of the token stream given to train and val; test gets the rest.
SPLIT_FRACTIONS = (0.9, 0.05)


class _Tokenizer:
    """Shared vocabulary handling: ``vocab`` is a tuple of token strings, specials first."""

    kind: ClassVar[str] = ""
    unk_text: ClassVar[str] = ""

    def __init__(self, vocab: Sequence[str] | None = None) -> None:
        self.vocab: tuple[str, ...] = SPECIAL_TOKENS
        self._ids: dict[str, int] = {}
        self._set_vocab(SPECIAL_TOKENS if vocab is None else vocab)

    def _set_vocab(self, vocab: Sequence[str]) -> None:
        if isinstance(vocab, (str, bytes)) or not isinstance(vocab, (Sequence, np.ndarray)):
            raise InvalidDataError(f"vocabulary {_short(vocab)} is invalid; expected a list of token strings")
        vocab = tuple(vocab)
        if vocab[: len(SPECIAL_TOKENS)] != SPECIAL_TOKENS:
            raise InvalidDataError(
                f"vocabulary starts with {list(vocab[:4])}; expected the special tokens {list(SPECIAL_TOKENS)} first"
            )
        if not all(isinstance(t, str) and t for t in vocab):
            bad = next(t for t in vocab if not (isinstance(t, str) and t))
            raise InvalidDataError(f"vocabulary entry {bad!r} is invalid; expected non-empty strings")
        if len(set(vocab)) != len(vocab):
            dup = next(t for i, t in enumerate(vocab) if t in vocab[:i])
            raise InvalidDataError(f"vocabulary entry {dup!r} appears twice; expected unique tokens")
        self.vocab = vocab
        self._ids = {t: i for i, t in enumerate(vocab)}

    def __len__(self) -> int:
        return len(self.vocab)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def split(self, text: str) -> list[str]:
        """The token strings of ``text`` (before mapping to ids)."""
        raise NotImplementedError

    def fit(self, text: str) -> _Tokenizer:
        """Build the vocabulary from ``text``: the specials, then every distinct token sorted (so the
        ids do not depend on where in the text a token first appears). Returns self."""
        tokens = set(self.split(text)) - set(SPECIAL_TOKENS)
        self._set_vocab(SPECIAL_TOKENS + tuple(sorted(tokens)))
        return self

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no <bos>/<eos> added); unknown tokens map to <unk> (id 3)."""
        return [self._ids.get(t, UNK) for t in self.split(text)]

    def decode(self, ids: Iterable[int] | np.ndarray | torch.Tensor) -> str:
        """Text of token ids: <pad>, <bos> and <eos> are dropped, <unk> becomes ``unk_text``."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        elif isinstance(ids, np.ndarray):
            ids = ids.reshape(-1).tolist()
        out = []
        for i in ids:
            i = int(i)
            if i in (PAD, BOS, EOS):
                continue
            if not 0 <= i < len(self.vocab):
                raise InvalidDataError(f"token id {i} is out of range; expected 0..{len(self.vocab) - 1}")
            out.append(self.unk_text if i == UNK else self.vocab[i])
        return "".join(out)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe description: ``{"type": "char"|"word", "vocab": [...]}``."""
        return {"type": self.kind, "vocab": list(self.vocab)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> _Tokenizer:
        """Rebuild a tokenizer from :meth:`to_dict` output (on the base class, any type)."""
        kind = d.get("type") if isinstance(d, dict) else None
        classes = {"char": CharTokenizer, "word": WordTokenizer}
        if kind not in classes or (cls is not _Tokenizer and classes[kind] is not cls):
            raise InvalidDataError(f"tokenizer type {kind!r} is invalid; expected {cls.kind or 'char or word'}")
        if not isinstance(d.get("vocab"), list):
            raise InvalidDataError("tokenizer dict has no 'vocab' list")
        return classes[kind](d["vocab"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={len(self.vocab)})"


class CharTokenizer(_Tokenizer):
    """One token per Unicode code point (newlines included). Unknown characters decode as U+FFFD."""

    kind = "char"
    unk_text = "\ufffd"

    def split(self, text: str) -> list[str]:
        return list(text)


class WordTokenizer(_Tokenizer):
    """Words (``\\w+``) and single punctuation marks, each carrying the whitespace before it, plus
    trailing whitespace as its own token; decoding concatenates, so spacing round-trips exactly."""

    kind = "word"
    unk_text = " <unk>"
    _PATTERN = re.compile(r"\s*\w+|\s*[^\w\s]|\s+")

    def split(self, text: str) -> list[str]:
        return self._PATTERN.findall(text)


def _short(value: object, limit: int = 60) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def tokenizer_from_dict(d: dict[str, Any]) -> CharTokenizer | WordTokenizer:
    """Rebuild a char or word tokenizer from its ``to_dict()``."""
    return _Tokenizer.from_dict(d)  # type: ignore[return-value]


def make_tokenizer(kind: str, vocab: Sequence[str] | None = None) -> CharTokenizer | WordTokenizer:
    """A tokenizer by name ("char" or "word"), empty or with a given vocabulary."""
    if kind == "char":
        return CharTokenizer(vocab)
    if kind == "word":
        return WordTokenizer(vocab)
    raise InvalidDataError(f"tokenizer {kind!r} is unknown; expected 'char' or 'word'")


def pad_ids(ids: Sequence[int], length: int) -> np.ndarray:
    """Token ids of one text -> int64 [length]: <bos>, the ids (the first ``length - 2`` if more),
    <eos>, then <pad> up to ``length`` (the fixed-length layout of captions)."""
    if length < 3:
        raise InvalidDataError(f"text length {length} is too short; expected at least 3 (<bos>, a token, <eos>)")
    body = list(ids)[: length - 2]
    return np.array([BOS, *body, EOS] + [PAD] * (length - 2 - len(body)), dtype=np.int64)


def read_text(path: str, what: str = "text file") -> str:
    """The contents of a UTF-8 text file; one-line InvalidDataError (naming it as ``what``) if it is
    missing, unreadable, empty, or not valid UTF-8 (naming the line and byte offset). A UTF-8
    byte-order mark is dropped."""
    if not os.path.isfile(path):
        raise InvalidDataError(f"{what} {path!r} does not exist")
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as e:
        raise InvalidDataError(f"{what} {path!r} cannot be read ({e.strerror or type(e).__name__})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise InvalidDataError(
            f"{what} {path!r} is not valid UTF-8: byte 0x{raw[e.start]:02x} on line {line} (offset {e.start})"
        ) from None
    if not text.strip():
        raise InvalidDataError(f"{what} {path!r} is empty (or only whitespace); expected some UTF-8 text")
    return text


#: The sentence a canary secret is written into (Carlini et al. 2019): the secret's digits are
#: separated by spaces, so each digit is one token for the char and for the word tokenizer.
CANARY_FORMAT = "my PIN is {}"


def make_canaries(n: int, seed: int = 0, digits: int = 6, fmt: str = CANARY_FORMAT) -> list[str]:
    """``n`` distinct canary sentences ``fmt.format("d d d d d d")`` with ``digits`` random decimal
    digits each, drawn uniformly from the 10**digits secrets by ``numpy.random.default_rng(seed)``.

    Deterministic, and prefix-stable: ``make_canaries(n + m, s)[:n] == make_canaries(n, s)``, so
    ``make_canaries(n + m, s)[n:]`` are m fresh secrets never inserted by a run with n canaries."""
    for name, value, low in (("n", n, 0), ("digits", digits, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise InvalidDataError(f"canary {name}={value!r} is invalid; expected an integer >= {low}")
    if n > 10**digits:
        raise InvalidDataError(f"canaries={n} is more than the 10**{digits} distinct secrets of {digits} digits")
    if "{}" not in fmt:
        raise InvalidDataError(f"canary format {fmt!r} has no '{{}}' for the secret")
    rng = np.random.default_rng(int(seed))
    seen: set[int] = set()
    out = []
    while len(out) < n:
        secret = int(rng.integers(0, 10**digits))
        if secret not in seen:
            seen.add(secret)
            out.append(fmt.format(" ".join(str(secret).zfill(digits))))
    return out


def _insert_canaries(
    tok: _Tokenizer, train: list[str], texts: list[str], repeats: int, seed: int, block_size: int, path: str
) -> list[str]:
    """The train tokens with each canary text inserted ``repeats`` times, as ``"\n" + canary`` just
    before a token that starts a new line (so the line before ends where it did and no original
    token changes), at positions drawn by ``default_rng(seed + 1)`` with replacement. Only positions
    followed by at least ``block_size`` original tokens are used, so the remainder that blocking
    drops never holds a canary: each canary is in the train blocks exactly ``repeats`` times."""
    starts = [
        j for j in range(len(train) - block_size + 1) if "\n" in train[j][: len(train[j]) - len(train[j].lstrip())]
    ]
    if not starts:
        raise InvalidDataError(
            f"text file {path!r} has no line break in its train part (before the last block) to insert canaries at"
        )
    rng = np.random.default_rng(int(seed) + 1)
    at: dict[int, list[str]] = {}
    for text in texts * repeats:
        at.setdefault(starts[int(rng.integers(len(starts)))], []).append(text)
    out: list[str] = []
    for j, t in enumerate(train):
        for text in at.get(j, ()):
            out.extend(tok.split("\n" + text))
        out.append(t)
    return out


def load_text_file(
    path: str,
    split: str = "train",
    tokenizer: str = "char",
    block_size: int = 128,
    vocab: Sequence[str] | None = None,
    canaries: int = 0,
    repeats: int = 1,
    canary_seed: int = 0,
    canary_digits: int = 6,
) -> TensorDataset:
    """A UTF-8 text file as non-overlapping blocks of token ids ``"x"`` int64 [N, block_size].

    The vocabulary is built from the whole file (or given as ``vocab``, e.g. a trained run's), so
    all splits share it; the token stream is then cut contiguously 90 % / 5 % / 5 % into
    train/val/test (``"all"``: the whole stream) and each part into blocks, dropping the remainder.
    Spec: kind "tokens", shape (block_size,), levels = vocabulary size, ``extra["tokenizer"]``.

    Canaries (Carlini et al. 2019, "The Secret Sharer"; audited by :mod:`genlab.audit.text`):
    ``canaries=N`` inserts the N secret sentences ``make_canaries(N, canary_seed, canary_digits)``
    (``"my PIN is 4 8 1 7 2 9"``), each ``repeats`` times, at random line breaks of the *train* part
    only, after the cut: val and test hold exactly the text they hold without canaries (``"all"``
    too stays the plain file). The vocabulary then also holds the canary sentence and all ten
    digits, so any secret of that format can be scored; ``extra["canaries"]`` records
    ``{"n", "repeats", "seed", "digits", "format"}``.
    """
    check_split(split)
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1:
        raise InvalidDataError(f"block_size={block_size!r} is invalid; expected a positive integer")
    for name, value, low in (("canaries", canaries, 0), ("repeats", repeats, 1), ("canary_seed", canary_seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise InvalidDataError(f"{name}={value!r} is invalid; expected an integer >= {low}")
    tok = make_tokenizer(tokenizer, vocab)
    text = read_text(path)
    secrets = make_canaries(int(canaries), int(canary_seed), canary_digits) if canaries else []
    if vocab is None:  # with canaries: every digit too, so fresh secrets are scorable (<unk>-free)
        every_digit = CANARY_FORMAT.format(" ".join("0123456789"))
        tok.fit(text + ("\n" + every_digit + "\n" + "\n".join(secrets) if secrets else ""))
    tokens = tok.split(text)
    n = len(tokens)
    cut1 = int(round(SPLIT_FRACTIONS[0] * n))
    cut2 = int(round((SPLIT_FRACTIONS[0] + SPLIT_FRACTIONS[1]) * n))
    ranges = {"train": (0, cut1), "val": (cut1, cut2), "test": (cut2, n), "all": (0, n)}
    lo, hi = ranges[split]
    part_tokens = tokens[lo:hi]
    if secrets and split == "train":
        part_tokens = _insert_canaries(tok, part_tokens, secrets, int(repeats), int(canary_seed), block_size, path)
    ids = [tok._ids.get(t, UNK) for t in part_tokens]
    part = np.array(ids, dtype=np.int64)
    n_blocks = len(part) // block_size
    if n_blocks == 0:
        raise InvalidDataError(
            f"text file {path!r} is too short: split {split!r} has {len(part)} {tokenizer} tokens "
            f"(of {n}), fewer than block_size={block_size}"
        )
    x = part[: n_blocks * block_size].reshape(n_blocks, block_size)
    extra: dict[str, Any] = {"tokenizer": tok.kind}
    if secrets:
        extra["canaries"] = {
            "n": int(canaries),
            "repeats": int(repeats),
            "seed": int(canary_seed),
            "digits": int(canary_digits),
            "format": CANARY_FORMAT,
        }
    spec = DataSpec(
        name=os.path.basename(os.path.normpath(path)),
        kind="tokens",
        shape=(int(block_size),),
        dtype="int64",
        value_range=None,
        levels=len(tok.vocab),
        vocab=tok.vocab,
        extra=extra,
    )
    return TensorDataset({"x": torch.from_numpy(x)}, spec, split)


def tokens_to_text(ids: torch.Tensor, spec: DataSpec) -> list[str]:
    """Token ids [N, T] -> N strings: a text file's tokenizer (``spec.extra["tokenizer"]``) joins
    tokens as they are; caption vocabularies (words) are joined with spaces up to <eos>."""
    vocab = spec.vocab or ()
    if spec.extra.get("tokenizer") in ("char", "word"):
        tok = make_tokenizer(spec.extra["tokenizer"], vocab)
        return [tok.decode(row) for row in ids.tolist()]
    texts = []
    for row in ids.tolist():
        words = []
        for i in row:
            if vocab[i] == "<eos>":
                break
            if vocab[i] not in ("<pad>", "<bos>"):
                words.append(vocab[i])
        texts.append(" ".join(words))
    return texts


def encode_text(text: str, spec: DataSpec) -> np.ndarray:
    """One text -> token ids int64 [T] of the token modality ``spec`` (shape (T,), ``vocab``): <bos>,
    its tokens, <eos>, then <pad>, tokenized as the data set was -- by its char or word tokenizer
    (``spec.extra["tokenizer"]``), else (caption vocabularies such as ``shapes-captions``) as
    lower-case words split at whitespace. A token outside the vocabulary, an empty text, or one
    longer than T - 2 tokens raises a one-line InvalidDataError that names the token or the count."""
    vocab = tuple(spec.vocab or ())
    kind = spec.extra.get("tokenizer")
    tokens = make_tokenizer(kind, vocab).split(text) if kind in ("char", "word") else text.lower().split()
    if not "".join(tokens).strip():
        raise InvalidDataError("the text is empty; expected some words")
    ids = {t: i for i, t in enumerate(vocab) if t not in SPECIAL_TOKENS}
    for t in tokens:
        if t not in ids:
            what = "character" if kind == "char" else "word"
            known = [v.strip() for v in vocab if v not in SPECIAL_TOKENS]
            listed = ", ".join(known[:40]) + (f", ... ({len(known)} in all)" if len(known) > 40 else "")
            raise InvalidDataError(f"{what} {t.strip() or t!r} is not in the vocabulary of the run's data: {listed}")
    length = int(spec.shape[0])
    if len(tokens) + 2 > length:
        raise InvalidDataError(
            f"the text has {len(tokens)} tokens; the run's texts hold at most {length - 2} (plus <bos> and <eos>)"
        )
    return pad_ids([ids[t] for t in tokens], length)
