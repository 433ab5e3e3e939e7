"""How well a model summarizes ``shapes-summary``: the accuracy of each fact in its summaries, split
by where the fact was stated (the text only, the image only, or both), with and without each input.

A model's greedy summary of each example is parsed (:func:`genlab.data.summary.parse_summary`) and
held against the example's colour, shape and position (both region bins) under three conditions:

    fused       the image and the masked caption
    text_only   the caption alone (the image absent)
    image_only  the image alone (the caption absent)

A summary that does not parse gets every fact wrong. A model that fuses its inputs must beat each
single input where that input lacks the fact: the text-only condition can only guess facts absent
from the text (chance: colour 1/7, shape 1/3, position 1/9), the image-only one can only guess a
hidden colour. The headline ``fusion_gain`` is the fused all-three-correct rate minus the best
single-input one. Any model whose ``translate`` maps ``{"x", "text"}``, ``{"text"}`` and ``{"x"}``
to ``["summary"]`` (``mean=True``: greedy) can be measured; this module imports no model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..data.base import InvalidDataError, TensorDataset
from ..data.summary import (
    BOTH,
    IMAGE_ONLY,
    SOURCE_FACTORS,
    SOURCE_NAMES,
    SUMMARY_FACTOR_NAMES,
    SUMMARY_FACTOR_SIZES,
    TEXT_ONLY,
    decode_summary,
    parse_summary,
    summary_factors,
)

#: The input conditions of a report: name -> the modalities the model is given.
CONDITIONS: dict[str, tuple[str, ...]] = {"fused": ("x", "text"), "text_only": ("text",), "image_only": ("x",)}
#: Where each fact can be stated on ``shapes-summary`` (shape and position are always in the image).
_SOURCES = {"colour": (TEXT_ONLY, IMAGE_ONLY, BOTH), "shape": (IMAGE_ONLY, BOTH), "position": (IMAGE_ONLY, BOTH)}


def read_summaries(ids: Tensor | np.ndarray, vocab: tuple[str, ...]) -> np.ndarray:
    """Summary ids [N, S] -> the facts they state, int64 [N, 4] (:data:`SUMMARY_FACTOR_NAMES`); a row
    that does not parse is -1 throughout (it matches nothing)."""
    rows = ids.detach().cpu().numpy() if isinstance(ids, Tensor) else np.asarray(ids)
    out = np.full((len(rows), len(SUMMARY_FACTOR_NAMES)), -1, dtype=np.int64)
    for i, row in enumerate(rows):
        try:
            f = parse_summary(decode_summary(row, vocab))
        except InvalidDataError:
            continue
        out[i] = [f[k] for k in SUMMARY_FACTOR_NAMES]
    return out


def fact_correct(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per example and fact (colour, shape, position), whether the prediction is right: bool [N, 3]
    from rows [N, 4] (colour, shape, region_x, region_y); position needs both region bins right."""
    eq = pred == truth
    return np.stack([eq[:, 0], eq[:, 1], eq[:, 2] & eq[:, 3]], 1)


def _mean(a: np.ndarray) -> float | None:
    return float(a.mean()) if a.size else None


def accuracy_report(correct: np.ndarray, source: np.ndarray, readable: np.ndarray) -> dict[str, Any]:
    """Accuracy of one condition's summaries: ``correct`` bool [N, 3] (colour, shape, position),
    ``source`` int [N, 3] (0 text only, 1 image only, 2 both), ``readable`` bool [N]. Returns per fact
    ``overall`` and per source (None where no example has it), ``absent_from_text`` and
    ``absent_from_image`` (pooled over facts and examples where the input lacked the fact),
    ``all_correct`` and ``parse_rate``."""
    out: dict[str, Any] = {}
    for f, name in enumerate(SOURCE_FACTORS):
        out[name] = {"overall": _mean(correct[:, f])}
        for s in _SOURCES[name]:
            out[name][SOURCE_NAMES[s]] = _mean(correct[source[:, f] == s, f])
    out["absent_from_text"] = _mean(correct[source == IMAGE_ONLY])
    out["absent_from_image"] = _mean(correct[source == TEXT_ONLY])
    out["all_correct"] = _mean(correct.all(1))
    out["parse_rate"] = _mean(readable)
    return out


@torch.no_grad()
def summarization_report(
    model: Any, dataset: TensorDataset, *, n_examples: int = 500, seed: int = 0, batch_size: int = 250
) -> dict[str, Any]:
    """Greedy summaries of a seeded subset of ``n_examples`` examples of ``dataset`` (a
    ``shapes-summary`` split: it needs ``"x"``, ``"text"``, ``"factors"``, ``"source"``) under the
    three :data:`CONDITIONS`, scored by :func:`accuracy_report`. Returns ``{"conditions": {name:
    report}, "fusion_gain", "gain_absent_from_text"`` (fused minus text-only on facts absent from the
    text), ``"gain_absent_from_image"`` (fused minus image-only on a hidden colour), ``"counts"``
    (examples per fact and source), ``"chance"`` (uniform guessing), ``"n_examples"``, ``"seed"}``."""
    missing = [k for k in ("x", "text", "factors", "source") if k not in dataset.tensors]
    if missing or "summary" not in dataset.spec.modality_keys:
        raise ValueError(
            f"the summarization report needs shapes-summary-like data (image 'x', caption 'text', 'summary', "
            f"'factors', 'source'); {dataset.spec.name!r} lacks {', '.join(missing) or 'summary'}"
        )
    if n_examples < 1 or len(dataset) < 1:
        raise ValueError(f"the summarization report needs n_examples >= 1 and data; got {n_examples}, {len(dataset)}")
    n = min(n_examples, len(dataset))
    idx = torch.from_numpy(np.sort(np.random.default_rng(seed).choice(len(dataset), n, replace=False)))
    truth = summary_factors(dataset.tensors["factors"][idx].numpy())
    source = dataset.tensors["source"][idx].numpy()
    vocab = tuple(dataset.spec.modality("summary").vocab or ())
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    model.eval()
    conditions = {}
    for name, keys in CONDITIONS.items():
        gen = torch.Generator(device=model.device).manual_seed(seed)
        parts = []
        for chunk in idx.split(batch_size):
            src = {k: dataset.tensors[k][chunk].to(model.device) for k in keys}
            if "x" in src:
                src["x"] = src["x"].to(dtype)
            parts.append(model.translate(src, ["summary"], generator=gen, mean=True)["summary"].cpu())
        pred = read_summaries(torch.cat(parts), vocab)
        conditions[name] = accuracy_report(fact_correct(pred, truth), source, (pred >= 0).all(1))
    fused, text, image = (conditions[k] for k in CONDITIONS)

    def gain(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else a - b

    counts = {
        name: {SOURCE_NAMES[s]: int((source[:, f] == s).sum()) for s in _SOURCES[name]}
        for f, name in enumerate(SOURCE_FACTORS)
    }
    sizes = dict(zip(SUMMARY_FACTOR_NAMES, SUMMARY_FACTOR_SIZES))
    chance = {
        "colour": 1 / sizes["colour"],
        "shape": 1 / sizes["shape"],
        "position": 1 / (sizes["region_x"] * sizes["region_y"]),
    }
    chance["all_correct"] = chance["colour"] * chance["shape"] * chance["position"]
    return {
        "n_examples": n,
        "seed": seed,
        "conditions": conditions,
        "fusion_gain": gain(fused["all_correct"], max(text["all_correct"], image["all_correct"])),
        "gain_absent_from_text": gain(fused["absent_from_text"], text["absent_from_text"]),
        "gain_absent_from_image": gain(fused["absent_from_image"], image["absent_from_image"]),
        "counts": counts,
        "chance": chance,
    }


def flatten_report(report: dict[str, Any], prefix: str = "summary") -> dict[str, Any]:
    """The nested report as flat keys ``prefix/condition/fact/source`` etc. (``genlab eval``'s JSON)."""
    out: dict[str, Any] = {}

    def walk(d: dict[str, Any], key: str) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{key}/{k}")
            else:
                out[f"{key}/{k}"] = v

    walk({k: v for k, v in report.items() if k != "seed"}, prefix)
    return out
