"""Memorization audit: does the model reproduce its training examples?

For each generated sample g: d_train(g) = distance to the nearest training example, d_held(g) =
distance to the nearest held-out example (data the model never saw). A model that generalizes is
no closer to its training set than to fresh data from the same distribution; a model that copies
is much closer. Caveat: if the held-out split is shifted from the training split (digits' last
447 images come from other writers), fresh samples of the *training* distribution also sit closer to
the training set; compare with a model's held-out likelihood and FID before calling it copying.

Reported (all distances Euclidean in the space given, e.g. [0, 1] pixels):
    ``closer_to_train``   fraction of samples with d_train < d_held, i.e. whose nearest neighbour in
                          train + held-out is a training example. For a model that does not
                          memorize this is M / (M + H) (``closer_to_train_null``; M train and H
                          held-out examples, by exchangeability); towards 1 for one that copies.
    ``near_copy_fraction`` fraction of samples with d_train <= tau, tau = the ``copy_quantile``
                          quantile of the held-out examples' own nearest-train distances. A fresh
                          draw from the data distribution lands there with probability
                          ``copy_quantile`` (the null rate); a copying model far more often.
    ``copy_auc``          P(d_train(sample) < d_train(held-out example)): 0.5 under the null, > 0.5
                          when samples sit closer to training points than new data does (the
                          three-sample idea of Meehan et al., "A Non-Parametric Test to Detect
                          Data-Copying in Generative Models", AISTATS 2020, as a Mann-Whitney AUC).
The indices of the closest samples (smallest d_train) and of their nearest training examples are
returned too, for a picture of the top copies (:func:`genlab.viz.save_copy_pairs`); metrics draw nothing.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .threads import single_threaded


def _nearest(q: Tensor, ref: Tensor, chunk: int = 2048) -> tuple[Tensor, Tensor]:
    """For each row of q [N, D]: (distance, index) of its nearest row of ref [M, D]."""
    ds, ix = [], []
    for i in range(0, len(q), chunk):
        d = torch.cdist(q[i : i + chunk], ref)
        v, j = d.min(1)
        ds.append(v)
        ix.append(j)
    return torch.cat(ds), torch.cat(ix)


@single_threaded
def memorization_audit(
    samples: Tensor,
    train: Tensor,
    heldout: Tensor,
    *,
    copy_quantile: float = 0.05,
    top: int = 16,
) -> dict[str, Any]:
    """Audit ``samples`` [N, ...] against ``train`` [M, ...] and ``heldout`` [H, ...] (same shape per
    example; images are compared as flat pixel vectors). Returns the statistics of the module
    docstring plus ``mean_dist_train``/``mean_dist_heldout`` and ``near_copy_threshold`` (tau), and
    the ``top`` closest copies: ``closest_samples`` (indices into ``samples``, closest first) and
    ``closest_train`` (the index of each one's nearest training example), as lists of ints.
    """
    if not 0 < copy_quantile < 1:
        raise ValueError(f"copy_quantile must be in (0, 1); got {copy_quantile}")
    g = samples.detach().double().cpu().flatten(1)
    tr = train.detach().double().cpu().flatten(1)
    ho = heldout.detach().double().cpu().flatten(1)
    if not (g.shape[1] == tr.shape[1] == ho.shape[1]):
        raise ValueError(
            f"samples, train and heldout differ in size per example: {g.shape[1]}, {tr.shape[1]}, {ho.shape[1]}"
        )
    if len(tr) < 2 or len(ho) < 2:
        raise ValueError(f"need at least 2 train and 2 held-out examples; got {len(tr)} and {len(ho)}")
    d_train, j = _nearest(g, tr)
    d_held, _ = _nearest(g, ho)
    d_ho_train, _ = _nearest(ho, tr)  # how close genuinely new data comes to the training set
    tau = float(torch.quantile(d_ho_train, copy_quantile))
    # Mann-Whitney AUC, ties counted half: P(d_train(sample) < d_train(held-out)).
    less = (d_train[:, None] < d_ho_train[None, :]).double().mean()
    ties = (d_train[:, None] == d_ho_train[None, :]).double().mean()
    out: dict[str, Any] = {
        "mean_dist_train": float(d_train.mean()),
        "mean_dist_heldout": float(d_held.mean()),
        "closer_to_train": float(((d_train < d_held).double() + 0.5 * (d_train == d_held).double()).mean()),
        "closer_to_train_null": len(tr) / (len(tr) + len(ho)),
        "near_copy_threshold": tau,
        "near_copy_fraction": float((d_train <= tau).double().mean()),
        "near_copy_null_rate": copy_quantile,
        "copy_auc": float(less + 0.5 * ties),
    }
    order = torch.argsort(d_train, stable=True)[:top]
    out["closest_samples"] = [int(i) for i in order]
    out["closest_train"] = [int(i) for i in j[order]]
    return out
