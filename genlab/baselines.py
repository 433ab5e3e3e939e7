"""Simple likelihood baselines of a data set's held-out split, so a model's bits/dim has a floor to beat.

Every figure is a code length of the evaluated split in bits, divided by what genlab's likelihood
metrics divide by (``bpd``: bits per scored dimension -- sub-pixel, or token), and for text also by
the characters of the decoded text (``bits_per_char``). Keys are flat, ``baseline/<name>/<unit>``,
like :func:`genlab.evaluate`'s ``modality/<m>/...`` keys, so they merge into ``eval.json``.

Images (discrete ``levels`` L, D sub-pixels):
- ``uniform``: log2 L bits per sub-pixel.
- ``independent``: one categorical per sub-pixel, fitted on train with add-one (Laplace)
  smoothing -- the smoothing behind the published digits figure (2.40; tests/test_reliability.py).
- ``linear_ar``: a fully visible softmax regression (Frey 1998, "Graphical Models for Machine
  Learning and Digital Communication"; a logistic FVSBN for L = 2): p(x_d | x_<d) =
  softmax(b_d + W_d x_<d / (L - 1)) in raster order over (C, H, W), fitted on train by L-BFGS with an
  L2 penalty ``LINEAR_AR_L2`` per example. On digits it gives the quoted 2.09 bits/dim.

Token sequences (V = vocabulary size, specials included, as in an LM's softmax): scored exactly as
genlab's transformer scores them -- every one of a row's T tokens (padding and <bos>/<eos> of
captions included), each row from an empty context (a text file's blocks are independent).
- ``unigram``: add-one smoothed token frequencies of train.
- ``kn``: interpolated Kneser-Ney (Kneser & Ney 1995; the interpolated form of Chen & Goodman 1998,
  eq. 20, one absolute discount per order D_k = n1 / (n1 + 2 n2)); the highest order uses raw
  counts, lower orders continuation counts, the lowest interpolates with 1/V. Rows are padded on
  the left with a start symbol. The order n in 1..6 is the one best on the val split.
- ``gzip9`` / ``xz9``: the compressor's cost of the decoded split given the decoded train text,
  8 * (len(C(train + split)) - len(C(train))) bits (UTF-8 bytes; rows joined as the data set cut
  them: a text file's blocks with nothing between, captions with ``"\\n"``).

Results are cached as JSON under ``$GENLAB_CACHE/baselines`` (default ``~/.cache/genlab/baselines``),
keyed by a hash of the data set name (a user file: its content hash), its options, split and key.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data.base import TensorDataset
from .data.spec import DataSpec

#: Bumped when a figure's definition changes, so older cache entries are not read.
VERSION = 1
MAX_ORDER = 6
#: L2 penalty on the linear autoregressive weights, per training example (weights act on x in [0, 1]).
LINEAR_AR_L2 = 1e-4
#: The linear AR holds D * L * D weights and one L-BFGS step costs ~ N * D^2 * L: skipped above this.
LINEAR_AR_MAX_COST = 2e9


# --- images ------------------------------------------------------------------------------------
def _levels(data: TensorDataset, key: str) -> np.ndarray:
    """Level ids int64 [N, D] of the image key ``key`` (floats level / (L - 1) -> 0..L-1)."""
    from .distributions import to_levels

    spec = data.spec.modality(key)
    x = data.tensors[key]
    ids = x.long() if not x.is_floating_point() else to_levels(x, spec.levels)
    return ids.flatten(1).numpy()


def independent_log_probs(train: np.ndarray, levels: int) -> np.ndarray:
    """[D, L] log-probabilities (nats) of one categorical per dimension, from train level ids [N, D]
    with add-one smoothing: (count + 1) / (N + L)."""
    counts = np.stack([(train == lv).sum(0) for lv in range(levels)], 1) + 1.0  # [D, L]
    return np.log(counts / counts.sum(1, keepdims=True))


class LinearAR(torch.nn.Module):
    """Softmax regression of each dimension on the previous ones (raster order), float64.

    ``log_prob(ids)``: ids int64 [B, D] in 0..L-1 -> [B] log P(ids) in nats."""

    def __init__(self, dim: int, levels: int, bias: np.ndarray) -> None:
        super().__init__()
        self.levels = levels
        self.weight = torch.nn.Parameter(torch.zeros(dim, levels, dim, dtype=torch.float64))  # [D, L, D]
        self.bias = torch.nn.Parameter(torch.tensor(bias, dtype=torch.float64))  # [D, L]
        self.register_buffer("mask", torch.ones(dim, dim, dtype=torch.float64).tril(-1))  # row d sees x_<d

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        x = ids.double() / (self.levels - 1)  # [B, D] in [0, 1]
        return torch.einsum("dkj,bj->bdk", self.weight * self.mask[:, None], x) + self.bias  # [B, D, L]

    def log_prob(self, ids: torch.Tensor) -> torch.Tensor:
        logp = self.logits(ids).log_softmax(-1)
        return logp.gather(-1, ids[..., None])[..., 0].sum(1)


def fit_linear_ar(train: np.ndarray, levels: int, l2: float = LINEAR_AR_L2, max_iter: int = 200) -> LinearAR:
    """Fit :class:`LinearAR` on train level ids [N, D]: full-batch L-BFGS (strong Wolfe) on the mean
    NLL + ``l2`` * ||W||^2, from W = 0 and the independent model's biases (a convex problem, so the
    start only saves steps)."""
    ids = torch.from_numpy(train)
    model = LinearAR(train.shape[1], levels, independent_log_probs(train, levels))
    opt = torch.optim.LBFGS(
        model.parameters(),
        max_iter=max_iter,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = -model.log_prob(ids).mean() + l2 * (model.weight * model.mask[:, None]).pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return model


def image_baselines(train: np.ndarray, evaluated: np.ndarray, levels: int) -> dict[str, float]:
    """Bits per sub-pixel of the evaluated level ids [M, D] under the uniform, independent (fitted on
    train ids [N, D]) and, when affordable, linear autoregressive baselines."""
    m, d = evaluated.shape
    norm = m * d * math.log(2)
    table = independent_log_probs(train, levels)
    out = {
        "baseline/uniform/bpd": math.log2(levels),
        "baseline/independent/bpd": float(-table[np.arange(d), evaluated].sum() / norm),
    }
    if len(train) * d * d * levels <= LINEAR_AR_MAX_COST:
        from .train import idle_threads

        # The idle cores only (as genlab train and eval take them): float64 products split over busy
        # cores spin against the other job; measured on 2 cores at load 2.6 (2026-12-02), the digits
        # fit took 160 s with torch's default 2 threads and 9.2 s with 1.
        threads = torch.get_num_threads()
        torch.set_num_threads(idle_threads())
        try:
            model = fit_linear_ar(train, levels)
        finally:
            torch.set_num_threads(threads)
        with torch.no_grad():
            lp = model.log_prob(torch.from_numpy(evaluated))
        out["baseline/linear_ar/bpd"] = float(-lp.sum() / norm)
    return out


# --- token sequences: Kneser-Ney --------------------------------------------------------------
class KneserNey:
    """Interpolated Kneser-Ney n-gram model over token ids 0..V-1 (see the module docstring).

    ``fit(rows)`` counts every k-gram, k <= ``max_order``, of the rows (each a sequence of ids, padded
    on the left with the start symbol -1). :meth:`prob` / :meth:`probs` use order ``self.order``."""

    def __init__(self, vocab_size: int, max_order: int = MAX_ORDER) -> None:
        self.v, self.max_order, self.order = vocab_size, max_order, max_order
        # raw[k][context] = {token: count} (k-1 tokens of context); cont[k] the same with continuation
        # counts N1+(. context token): the number of distinct tokens seen before the k-gram.
        self.raw: list[dict[tuple[int, ...], dict[int, int]]] = []
        self.cont: list[dict[tuple[int, ...], dict[int, int]]] = []

    def fit(self, rows: list[list[int]] | np.ndarray) -> KneserNey:
        n = self.max_order
        raw: list[dict] = [defaultdict(lambda: defaultdict(int)) for _ in range(n + 1)]
        for row in rows:
            seq = [-1] * (n - 1) + [int(t) for t in row]
            for i in range(n - 1, len(seq)):
                w = seq[i]
                for k in range(1, n + 1):
                    raw[k][tuple(seq[i - k + 1 : i])][w] += 1
        cont: list[dict] = [defaultdict(lambda: defaultdict(int)) for _ in range(n + 1)]
        for k in range(1, n):  # distinct (k+1)-grams (a, context, w) -> one continuation of (context, w)
            for ctx, nxt in raw[k + 1].items():
                for w in nxt:
                    cont[k][ctx[1:]][w] += 1
        self.raw = [{c: dict(d) for c, d in level.items()} for level in raw]
        self.cont = [{c: dict(d) for c, d in level.items()} for level in cont]
        self._stats: dict[tuple[int, bool], dict[tuple[int, ...], tuple[int, int]]] = {}
        self._discount: dict[tuple[int, bool], float] = {}
        return self

    def _level(self, k: int) -> tuple[dict, dict, float]:
        """Counts, per-context (total, distinct followers) and discount of order k in the model of
        order ``self.order``: raw counts at the top order, continuation counts below."""
        top = k == self.order
        counts = (self.raw if top else self.cont)[k]
        if (k, top) not in self._stats:
            self._stats[(k, top)] = {c: (sum(d.values()), len(d)) for c, d in counts.items()}
            hist = np.bincount([min(c, 3) for d in counts.values() for c in d.values()], minlength=4)
            n1, n2 = int(hist[1]), int(hist[2])
            self._discount[(k, top)] = n1 / (n1 + 2 * n2) if n1 + 2 * n2 > 0 else 0.5
        return counts, self._stats[(k, top)], self._discount[(k, top)]

    def prob(self, context: tuple[int, ...], w: int) -> float:
        """P(w | context) for the last order-1 tokens of ``context`` (-1 = start, padded as needed)."""
        ctx = ((-1,) * (self.order - 1) + tuple(context))[len(context) :] if self.order > 1 else ()
        p = 1.0 / self.v
        for k in range(1, self.order + 1):  # lowest order first, each interpolating the one below
            counts, stats, disc = self._level(k)
            h = ctx[len(ctx) - (k - 1) :] if k > 1 else ()
            if h not in stats:
                continue  # unseen context: this order passes the lower-order estimate on unchanged
            total, types = stats[h]
            p = max(counts[h].get(w, 0) - disc, 0.0) / total + disc * types / total * p
        return p

    def probs(self, context: tuple[int, ...]) -> np.ndarray:
        """[V] the whole distribution P(. | context) (sums to 1)."""
        return np.array([self.prob(context, w) for w in range(self.v)])

    def log2_cost(self, rows: list[list[int]] | np.ndarray) -> float:
        """-log2 P(rows) in bits: every token of every row, each row from an empty context."""
        bits = 0.0
        for row in rows:
            row = [int(t) for t in row]
            for i, w in enumerate(row):
                bits -= math.log2(self.prob(tuple(row[max(0, i - self.order + 1) : i]), w))
        return bits


def _decoded(data: TensorDataset, key: str) -> str:
    """The split's text as the data set cut it: a text file's blocks concatenated, captions one a line."""
    from .data.text import tokens_to_text

    spec = data.spec.modality(key)
    sep = "" if spec.extra.get("tokenizer") in ("char", "word") else "\n"
    return sep.join(tokens_to_text(data.tensors[key], spec))


def compressed_bits(train_text: str, text: str, compressor: str) -> float:
    """Bits the compressor (``"gzip9"``: gzip -9, ``"xz9"``: xz -9) spends on ``text`` after
    ``train_text``: 8 * (len(C(train + text)) - len(C(train))), on UTF-8 bytes. Deterministic
    (gzip's header time is fixed at 0)."""
    funcs = {
        "gzip9": lambda b: gzip.compress(b, compresslevel=9, mtime=0),
        "xz9": lambda b: lzma.compress(b, preset=9),
    }
    if compressor not in funcs:
        raise ValueError(f"compressor {compressor!r} is unknown; expected one of {', '.join(funcs)}")
    c = funcs[compressor]
    a, b = train_text.encode("utf-8"), text.encode("utf-8")
    return 8.0 * (len(c(a + b)) - len(c(a)))


def text_baselines(train: TensorDataset, val: TensorDataset, evaluated: TensorDataset, key: str) -> dict[str, Any]:
    """Bits per token (``bpd``) and per decoded character of the evaluated split's tokens
    ``evaluated.tensors[key]`` [M, T] under the unigram, the val-chosen Kneser-Ney n-gram (its order
    in ``baseline/kn/order``) and the gzip -9 / xz -9 baselines, all fitted on (conditioned on) train."""
    spec = evaluated.spec.modality(key)
    v = int(spec.vocab_size or spec.levels)
    rows_tr, rows_va, rows = (d.tensors[key].numpy() for d in (train, val, evaluated))
    n_tokens = rows.size
    text_tr, text = _decoded(train, key), _decoded(evaluated, key)
    n_chars = max(len(text), 1)
    bits: dict[str, float] = {}
    counts = np.bincount(rows_tr.reshape(-1), minlength=v) + 1.0
    bits["unigram"] = float(-np.log2(counts / counts.sum())[rows.reshape(-1)].sum())
    kn = KneserNey(v).fit(rows_tr)
    val_bits = {}
    for n in range(1, MAX_ORDER + 1):
        kn.order = n
        val_bits[n] = kn.log2_cost(rows_va)
    kn.order = min(val_bits, key=val_bits.__getitem__)
    bits["kn"] = kn.log2_cost(rows)
    for c in ("gzip9", "xz9"):
        bits[c] = compressed_bits(text_tr, text, c)
    out: dict[str, Any] = {"baseline/kn/order": kn.order}
    for name, b in bits.items():
        out[f"baseline/{name}/bpd"] = b / n_tokens
        out[f"baseline/{name}/bits_per_char"] = b / n_chars
    return out


# --- entry points ----------------------------------------------------------------------------
def compute_baselines(
    train: TensorDataset, val: TensorDataset, evaluated: TensorDataset, key: str = "x"
) -> dict[str, Any]:
    """The baselines of batch key ``key`` of ``evaluated`` (token or discrete image data), fitted on
    ``train`` (the KN order chosen on ``val``); no caching. Empty for continuous data."""
    spec: DataSpec = evaluated.spec.modality(key)
    if spec.kind == "tokens":
        return text_baselines(train, val, evaluated, key)
    if spec.levels:
        return image_baselines(_levels(train, key), _levels(evaluated, key), int(spec.levels))
    return {}


def cache_dir() -> Path:
    """``$GENLAB_CACHE/baselines`` if set, else ``~/.cache/genlab/baselines``."""
    root = os.environ.get("GENLAB_CACHE")
    return Path(root) / "baselines" if root else Path.home() / ".cache" / "genlab" / "baselines"


def _file_hash(path: str) -> str:
    h = hashlib.sha256()
    for file in sorted(Path(path).rglob("*")) if os.path.isdir(path) else [Path(path)]:
        if file.is_file():
            h.update(str(file.relative_to(path) if os.path.isdir(path) else "").encode())
            h.update(file.read_bytes())
    return h.hexdigest()


def baselines(
    data: str, split: str = "test", *, key: str | None = None, cache: bool = True, **data_opts: Any
) -> dict[str, Any]:
    """The simple baselines of ``load_dataset(data, split, **data_opts)`` (a built-in name or a path),
    fitted on its train split; keys ``baseline/<name>/bpd`` (bits per sub-pixel or per token, the unit
    of ``evaluate``'s ``*_bpd``), ``baseline/<name>/bits_per_char`` for text, ``baseline/kn/order``.

    ``key``: the batch key scored (default ``"x"``; ``"text"`` for a caption model). Computed once per
    (data set or file content, options, split, key) and cached as JSON (see :func:`cache_dir`)."""
    from .checkpoint import read_json, write_json
    from .data import list_datasets, load_dataset

    key = key or "x"
    # a missing path keys on its name: load_dataset below raises its one-line error
    ident = data if data in list_datasets() or not os.path.exists(data) else "file:" + _file_hash(data)
    blob = json.dumps([VERSION, ident, sorted(data_opts.items()), split, key], default=str, sort_keys=True)
    path = cache_dir() / f"{hashlib.sha256(blob.encode()).hexdigest()[:32]}.json"
    if cache and path.exists():
        try:
            return read_json(path)["baselines"]
        except Exception:  # a corrupt or foreign entry is recomputed and overwritten
            pass
    train, val, evaluated = (load_dataset(data, s, **data_opts) for s in ("train", "val", split))
    out = compute_baselines(train, val, evaluated, key)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json({"key": json.loads(blob), "baselines": out}, path)
    return out
