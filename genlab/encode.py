"""Representations of a data set under a trained model (``genlab encode``), and the scatter plot
of the latents it draws (matplotlib, via :func:`genlab.viz.plot_scatter`).

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

from .viz import plot_scatter


@torch.no_grad()
def encode_dataset(model: Any, data: Any, *, batch_size: int = 512, limit: int | None = None) -> dict[str, np.ndarray]:
    """``model.encode`` over the first ``limit`` examples of ``data`` (all by default), in order.

    Returns ``{"z": float32 [N, Z]}`` (anything beyond the batch dimension flattened) plus ``"y"``
    [N] and ``"factors"`` [N, F] when the data set holds them. Each batch gives the model the
    tensor it models (``batch[model.data_key]``; a multimodal model: the dict of those of its
    ``capabilities.modalities`` that the data set holds) and its condition
    (``model.condition(batch)``). A model without an encoder raises ``NotImplementedError`` (with
    the model's reason) on the first batch.
    """
    modalities = model.capabilities.modalities
    n = len(data) if limit is None else min(len(data), limit)
    parts: list[np.ndarray] = []
    for start in range(0, n, batch_size):
        batch = {k: v.to(model.device) for k, v in data[slice(start, min(n, start + batch_size))].items()}
        x = {k: batch[k] for k in modalities if k in batch} if modalities else batch[model.data_key]
        z = model.encode(x, model.condition(batch))
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


def latent_scatter(
    z: np.ndarray,
    path: str | os.PathLike,
    labels: np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
) -> Path:
    """PNG scatter of latents z [N, Z] (see :func:`project_2d`), one small dot per example, with
    ticked and labelled axes, coloured by integer ``labels`` [N] when given (a legend names the
    classes, from ``class_names``); the title says what the axes are."""
    pts, what = project_2d(z)
    categorical = (
        labels is not None
        and labels.ndim == 1
        and np.issubdtype(labels.dtype, np.integer)
        and len(labels) == len(pts)
        and bool((labels >= 0).all())
    )
    zdim = np.asarray(z).shape[1]
    xlabel, ylabel = ("z1", "z2") if zdim == 2 else ("z1", "") if zdim == 1 else ("PC 1", "PC 2")
    coloured = ", coloured by label" if categorical else ""
    return plot_scatter(
        pts,
        labels if categorical else None,
        class_names,
        path,
        f"{len(pts)} points: {what}{coloured}",
        xlabel=xlabel,
        ylabel=ylabel,
    )
