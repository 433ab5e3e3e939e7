"""Representations of a data set under a trained model (``genlab encode``), and the small Pillow
plot of the latents it draws (validation curves are in :mod:`genlab.compare`).

``encode_dataset`` runs ``model.encode`` over a split in batches and returns ``z`` [N, Z] with the
data set's labels and ground-truth factors aligned to it, ready for a linear probe or a
disentanglement score. ``latent_scatter`` shows z in two dimensions: the two latent coordinates
when Z == 2, else the first two principal components (a plain SVD, no scikit-learn).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from .viz import PALETTE, legend, save_png, text_size, titled


@torch.no_grad()
def encode_dataset(model: Any, data: Any, *, batch_size: int = 512, limit: int | None = None) -> dict[str, np.ndarray]:
    """``model.encode`` over the first ``limit`` examples of ``data`` (all by default), in order.

    Returns ``{"z": float32 [N, Z]}`` (anything beyond the batch dimension flattened) plus ``"y"``
    [N] and ``"factors"`` [N, F] when the data set holds them. Each batch gives the model the
    tensor it models (``batch[model.data_key]``) and its condition (``model.condition(batch)``),
    as :func:`genlab.metrics.likelihood.likelihood_metrics` does. A model without an encoder raises
    ``NotImplementedError`` on the first batch.
    """
    key = getattr(model, "data_key", "x")
    n = len(data) if limit is None else min(len(data), limit)
    parts: list[np.ndarray] = []
    for start in range(0, n, batch_size):
        batch = {k: v.to(model.device) for k, v in data[slice(start, min(n, start + batch_size))].items()}
        z = model.encode(batch[key], model.condition(batch))
        parts.append(z.detach().reshape(z.shape[0], -1).float().cpu().numpy())  # (B, Z)
    out = {"z": np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, 0), np.float32)}
    for name in ("y", "factors"):
        if name in data.tensors:
            out[name] = data.tensors[name][:n].cpu().numpy()
    return out


def project_2d(z: np.ndarray) -> tuple[np.ndarray, str]:
    """z [N, Z] -> ([N, 2] points, axis description). Z == 2: z itself; Z == 1: z against zero;
    else the first two principal components of the centred z (numpy SVD)."""
    z = np.asarray(z, dtype=np.float64)
    if z.shape[1] == 2:
        return z, "latent dimensions z1 (x), z2 (y)"
    if z.shape[1] == 1:
        return np.concatenate([z, np.zeros_like(z)], 1), "latent dimension z1 (Z=1)"
    c = z - z.mean(0, keepdims=True)
    _, s, vt = np.linalg.svd(c, full_matrices=False)
    var = s**2
    frac = var[:2].sum() / max(var.sum(), 1e-300)
    return c @ vt[:2].T, f"first 2 principal components of z (Z={z.shape[1]}; {100 * frac:.0f}% of variance)"


def _axis_range(v: np.ndarray) -> tuple[float, float]:
    # Robust limits so a few outliers do not squeeze the picture into a corner.
    lo, hi = (float(q) for q in np.quantile(v, [0.002, 0.998])) if len(v) else (0.0, 1.0)
    pad = 0.05 * (hi - lo) if hi > lo else 1.0
    return lo - pad, hi + pad


def latent_scatter(
    z: np.ndarray,
    path: str | os.PathLike,
    labels: np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    size: int = 480,
    margin: int = 20,
) -> Path:
    """PNG scatter of latents z [N, Z] (see :func:`project_2d`), one small dot per example,
    coloured by integer ``labels`` [N] when given (with a legend); the title names the axes."""
    pts, what = project_2d(z)
    categorical = (
        labels is not None and labels.ndim == 1 and np.issubdtype(labels.dtype, np.integer) and len(labels) == len(pts)
    )
    names: list[str] = []
    if categorical:
        k = int(labels.max()) + 1 if len(labels) else 0
        names = [class_names[i] if class_names and i < len(class_names) else str(i) for i in range(k)]
    legend_w = max(110, 30 + max(text_size(n)[0] for n in names[:20])) if names else 0  # legend() shows 20
    canvas = Image.new("RGB", (size + 2 * margin + legend_w, size + 2 * margin), (255, 255, 255))
    arr = np.array(canvas)
    (x0, x1), (y0, y1) = _axis_range(pts[:, 0]), _axis_range(pts[:, 1])
    px = np.round(margin + (pts[:, 0] - x0) / (x1 - x0) * (size - 1)).astype(np.int64)
    py = np.round(margin + (y1 - pts[:, 1]) / (y1 - y0) * (size - 1)).astype(np.int64)  # y up
    cols = (
        np.array([PALETTE[int(c) % len(PALETTE)] for c in labels], dtype=np.uint8)
        if categorical
        else np.tile(np.array(PALETTE[0], np.uint8), (len(pts), 1))
    )
    order = np.random.default_rng(0).permutation(len(pts))  # no class systematically on top
    inside = (px >= margin) & (px < margin + size) & (py >= margin) & (py < margin + size)
    order = order[inside[order]]
    for dy, dx in [(0, 0), (0, 1), (1, 0), (1, 1), (0, -1), (-1, 0)]:  # a dot of about 2x2 pixels
        arr[py[order] + dy, px[order] + dx] = cols[order]
    canvas = Image.fromarray(arr)
    draw = ImageDraw.Draw(canvas)
    draw.rectangle([margin - 2, margin - 2, margin + size + 1, margin + size + 1], outline=(180, 180, 180))
    if names:
        legend(draw, size + 2 * margin, margin, names)
    coloured = ", coloured by label" if names else ""
    return save_png(titled(np.asarray(canvas), f"{len(pts)} points: {what}{coloured}"), path)
