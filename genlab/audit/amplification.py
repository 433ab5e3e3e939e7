"""Bias amplification: does a generator exaggerate a co-occurrence of its training data?

Zhao, Wang, Yatskar, Ordonez & Chang, "Men Also Like Shopping: Reducing Gender Bias Amplification
using Corpus-level Constraints", EMNLP 2017, section 2. For an attribute a (their gender) and a
group g (their activity or object), the *bias* of a set of examples towards a within g is

    b(a, g) = c(a, g) / sum_a' c(a', g) = P(a | g)                          (a fraction)

with c the co-occurrence counts. With b* measured on the training data and b~ on the model's
outputs, the mean bias amplification is

    A = 1/|G| sum_g sum_{a : b*(a, g) > 1/|A|} (b~(a, g) - b*(a, g))

-- only the pairs that the training data already favour (above the uniform 1/|A|) count; A > 0 means
the outputs lean further in the training data's direction, A < 0 that they weaken it, 0 that they
reproduce it. With two attributes (their case) every group has exactly one such pair, so A is
also the mean over the selected pairs (``amplification_pairs`` here; the two differ when a group
favours several attributes). Caveat (Wang & Russakovsky, "Directional Bias Amplification", ICML
2021): pairs near 1/|A| are selected by sampling noise; use it on clearly correlated data.

On ``shapes-captions`` the correlation is planted with the data option
``--data-opt correlate=colour:shape:P`` (:func:`genlab.data.shapes.load_shapes_captions`: square ->
red, ellipse -> green, heart -> blue with probability P), and generated images and captions are read
back to factors by :mod:`genlab.metrics.coherence`'s readers (captions parsed exactly, images by the
trained factor classifier). Default: attribute colour, group shape, i.e. b(colour | shape).

Uncertainty: a percentile bootstrap over the generated rows and the training rows (both resampled,
the selected pairs fixed by the full training data), 95 %.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..data.base import TensorDataset
from ..data.shapes import CAPTION_FACTOR_NAMES, CAPTION_FACTOR_SIZES
from ..protocol import GenerativeModel


def _as_factors(a: np.ndarray | Tensor, what: str) -> np.ndarray:
    arr = a.detach().cpu().numpy() if isinstance(a, Tensor) else np.asarray(a)
    if arr.ndim != 2:
        raise ValueError(f"{what} must be factor indices [N, K]; got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{what} must be integer factor indices; got dtype {arr.dtype}")
    return arr.astype(np.int64)


def _column(which: int | str, names: Sequence[str], k: int, role: str) -> int:
    if isinstance(which, str):
        if which not in names:
            raise ValueError(f"{role} {which!r} is not a factor; expected one of {', '.join(names)}")
        return list(names).index(which)
    if isinstance(which, bool) or not isinstance(which, (int, np.integer)) or not 0 <= which < k:
        raise ValueError(f"{role} {which!r} is not a column index in 0..{k - 1}")
    return int(which)


def bias_table(attr: np.ndarray, group: np.ndarray, n_attr: int, n_group: int) -> np.ndarray:
    """b[g, a] = P(a | g) [n_group, n_attr] from attribute ids [N] and group ids [N] (NaN rows for
    groups that never occur)."""
    counts = np.zeros((n_group, n_attr), np.float64)
    np.add.at(counts, (group, attr), 1.0)
    tot = counts.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tot > 0, counts / np.where(tot > 0, tot, 1.0), np.nan)


def _amplify(b_gen: np.ndarray, b_train: np.ndarray, sel: np.ndarray) -> tuple[float, float]:
    diff = np.where(sel, b_gen - b_train, 0.0)
    present = ~np.isnan(b_gen).any(1)  # groups the outputs contain
    diff = np.where(present[:, None], diff, 0.0)
    n_groups, n_pairs = int(present.sum()), int((sel & present[:, None]).sum())
    zhao = float(diff.sum() / n_groups) if n_groups else float("nan")
    pairs = float(diff.sum() / n_pairs) if n_pairs else float("nan")
    return zhao, pairs


def amplification_audit(
    samples_factors: np.ndarray | Tensor,
    train_factors: np.ndarray | Tensor,
    attribute: int | str = "colour",
    group: int | str = "shape",
    *,
    factor_names: Sequence[str] = CAPTION_FACTOR_NAMES,
    factor_sizes: Sequence[int] = CAPTION_FACTOR_SIZES,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Bias amplification (module docstring) of generated factor rows ``samples_factors`` [N, K]
    against the training rows ``train_factors`` [M, K] (same columns, ``factor_names``/``factor_sizes``;
    default: the captioned factors shape, scale, colour, region_x, region_y). ``attribute`` and
    ``group``: column names or indices. Generated rows with a negative (unreadable) attribute or
    group are dropped and counted.

    Returns a JSON-safe dict: ``amplification`` (Zhao et al.'s A, a difference of fractions) and
    ``amplification_ci`` (95 % bootstrap), ``amplification_pairs`` (mean over the selected pairs) and
    its ``_ci``, ``pairs`` (one entry per selected (group, attribute): names, ``b_train``, ``b_gen``),
    ``b_train``/``b_gen`` tables [|G|][|A|] (None where a group is absent), ``n_samples``,
    ``n_unreadable``, ``n_train``, ``attribute``, ``group``, ``threshold`` (1/|A|)."""
    names, sizes = tuple(factor_names), tuple(int(s) for s in factor_sizes)
    gen, train = _as_factors(samples_factors, "samples_factors"), _as_factors(train_factors, "train_factors")
    for what, arr in (("samples_factors", gen), ("train_factors", train)):
        if arr.shape[1] != len(names):
            raise ValueError(f"{what} has {arr.shape[1]} columns; expected {len(names)} ({', '.join(names)})")
    ca, cg = _column(attribute, names, len(names), "attribute"), _column(group, names, len(names), "group")
    if ca == cg:
        raise ValueError(f"attribute and group are the same factor {names[ca]!r}")
    na, ng = sizes[ca], sizes[cg]
    for what, arr in (("samples_factors", gen), ("train_factors", train)):
        big = (arr[:, ca] >= na) | (arr[:, cg] >= ng)
        if big.any():
            raise ValueError(f"{what} has a value beyond the factor sizes ({na} x {ng}) in row {int(np.argmax(big))}")
    if (train[:, [ca, cg]] < 0).any():
        raise ValueError("train_factors has negative (unreadable) entries; expected ground-truth factors")
    readable = (gen[:, ca] >= 0) & (gen[:, cg] >= 0)
    gen_r = gen[readable]
    if len(gen_r) < 2 or len(train) < 2:
        raise ValueError(f"amplification needs >= 2 readable samples and training rows; got {len(gen_r)}, {len(train)}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 10:
        raise ValueError(f"n_boot={n_boot!r} is invalid; expected an integer >= 10")
    b_train = bias_table(train[:, ca], train[:, cg], na, ng)
    b_gen = bias_table(gen_r[:, ca], gen_r[:, cg], na, ng)
    sel = np.nan_to_num(b_train, nan=0.0) > 1.0 / na
    zhao, pairs = _amplify(b_gen, b_train, sel)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        g = gen_r[rng.integers(0, len(gen_r), len(gen_r))]
        t = train[rng.integers(0, len(train), len(train))]
        boots.append(_amplify(bias_table(g[:, ca], g[:, cg], na, ng), bias_table(t[:, ca], t[:, cg], na, ng), sel))
    arr = np.array(boots, np.float64)

    def ci(col: np.ndarray) -> list[float | None]:
        col = col[np.isfinite(col)]
        return [float(v) for v in np.percentile(col, [2.5, 97.5])] if len(col) else [None, None]

    def plain(t: np.ndarray) -> list[list[float | None]]:
        return [[None if np.isnan(v) else float(v) for v in row] for row in t]

    values = _factor_value_names(names[ca], na), _factor_value_names(names[cg], ng)
    selected = [
        {
            "group": values[1][g],
            "attribute": values[0][a],
            "b_train": float(b_train[g, a]),
            "b_gen": None if np.isnan(b_gen[g, a]) else float(b_gen[g, a]),
        }
        for g, a in zip(*np.nonzero(sel))
    ]
    return {
        "attribute": names[ca],
        "group": names[cg],
        "threshold": 1.0 / na,
        "amplification": zhao,
        "amplification_ci": ci(arr[:, 0]),
        "amplification_pairs": pairs,
        "amplification_pairs_ci": ci(arr[:, 1]),
        "pairs": selected,
        "b_train": plain(b_train),
        "b_gen": plain(b_gen),
        "n_samples": int(len(gen)),
        "n_unreadable": int((~readable).sum()),
        "n_train": int(len(train)),
        "n_boot": int(n_boot),
        "seed": int(seed),
    }


def _factor_value_names(name: str, size: int) -> list[str]:
    from ..data.shapes import COLOUR_NAMES, SCALE_WORDS, SHAPE_NAMES

    known = {"shape": SHAPE_NAMES, "colour": COLOUR_NAMES, "scale": SCALE_WORDS}.get(name)
    return list(known) if known is not None and len(known) == size else [str(i) for i in range(size)]


@torch.no_grad()
def _draw(
    model: GenerativeModel, n: int, train: TensorDataset, seed: int, options: dict[str, Any], chunk: int = 250
) -> dict[str, Tensor]:
    """n samples {modality key: tensor} on the CPU; conditional models get labels drawn from ``train``."""
    gen = torch.Generator(device=model.device).manual_seed(seed)
    cond = None
    if model.conditional:
        labels = train.tensors.get("cond", train.tensors.get("y"))
        if labels is None:
            raise ValueError(f"conditional model: data set {train.spec.name!r} has no 'y' or 'cond' to condition on")
        cond = labels[torch.from_numpy(np.random.default_rng(seed).integers(0, len(labels), n))].to(model.device)
    parts: list[dict[str, Tensor]] = []
    for i in range(0, n, chunk):
        c = None if cond is None else cond[i : i + chunk]
        out = model.sample(min(chunk, n - i), c, generator=gen, **options)  # type: ignore[call-arg]
        parts.append({k: v.cpu() for k, v in out.items()} if isinstance(out, dict) else {model.data_key: out.cpu()})
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def amplification_audit_model(
    model: GenerativeModel,
    train: TensorDataset,
    *,
    n: int = 2000,
    attribute: int | str = "colour",
    group: int | str = "shape",
    seed: int = 0,
    n_boot: int = 1000,
    cache: bool = True,
    sample_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Draw ``n`` samples from ``model`` (trained on ``train``, a ``shapes-captions``-like split,
    e.g. with ``correlate=colour:shape:0.8``), read every generated modality that has a factor reader
    (images: the classifier of :func:`genlab.metrics.coherence.train_image_reader`, trained on
    ``train`` and cached; captions: :func:`~genlab.data.shapes.parse_caption`) and run
    :func:`amplification_audit` against ``train``'s captioned factors.

    ``sample_options`` go to ``model.sample`` (only those in ``model.capabilities.sample_options``,
    e.g. ``{"mean": True}`` for a VAE's decoder means instead of per-pixel draws).

    Returns ``{"by_modality": {key: audit dict}, "modalities": [...], "n": n, "correlate": the
    data option or None, "sample_options": ...}``; a model whose samples no reader can read is a ValueError."""
    from ..metrics.coherence import factor_readers, has_factor_readers, true_factors

    if not has_factor_readers(train.spec):
        raise ValueError(
            f"amplification reads factors back from samples; data set {train.spec.name!r} has no factor readers "
            "(expected shapes-captions or shapes-av)"
        )
    if "factors" not in train.tensors:
        raise ValueError(f"data set {train.spec.name!r} has no 'factors' to measure the training bias on")
    if not model.capabilities.sample:
        raise ValueError(f"{type(model).__name__} cannot sample")
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n={n!r} is invalid; expected an integer >= 2 samples")
    options = dict(sample_options or {})
    bad = [k for k in options if k not in model.capabilities.sample_options]
    if bad:
        allowed = ", ".join(model.capabilities.sample_options) or "none"
        raise ValueError(f"sample option {bad[0]!r} is not one {type(model).__name__} takes; its options: {allowed}")
    readers = factor_readers(train.spec, train, cache=cache)
    samples = _draw(model, n, train, seed, options)
    train_f = true_factors(train.tensors["factors"])
    by: dict[str, Any] = {}
    for key, x in samples.items():
        reader = readers.get(key)
        if reader is None or tuple(reader.factor_names) != tuple(CAPTION_FACTOR_NAMES):
            continue
        if key == "text":
            x = x.long()
        read = reader.read(x)
        by[key] = amplification_audit(read, train_f, attribute, group, n_boot=n_boot, seed=seed)
    if not by:
        raise ValueError(f"no factor reader reads the samples of {type(model).__name__} (modalities {list(samples)})")
    return {
        "by_modality": by,
        "modalities": list(by),
        "n": int(n),
        "correlate": train.spec.extra.get("correlate"),
        "sample_options": options,
    }
