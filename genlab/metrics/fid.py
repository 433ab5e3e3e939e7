"""Sample-quality metrics on feature vectors: FID, KID, precision/recall, density/coverage.

All functions take two sets of features ``a`` (real) and ``b`` (generated), each ``[N, F]`` as a
numpy array or torch tensor, and compute in float64. They know nothing about models: any feature
extractor (:mod:`genlab.metrics.features`, an Inception network, raw pixels) can feed them.

References:
    Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
    Equilibrium", NeurIPS 2017 (FID: the Frechet distance between Gaussians fitted to features).
    Binkowski et al., "Demystifying MMD GANs", ICLR 2018 (KID: unbiased squared MMD with the cubic
    polynomial kernel, averaged over random subsets).
    Kynkaanniemi et al., "Improved Precision and Recall Metric for Assessing Generative Models",
    NeurIPS 2019 (k-NN manifolds).
    Naeem et al., "Reliable Fidelity and Diversity Metrics for Generative Models", ICML 2020
    (density and coverage).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from .threads import single_threaded


def as_float64(a: np.ndarray | Tensor, name: str = "features") -> np.ndarray:
    """[N, F] float64 numpy copy of ``a`` (vectors [N] become [N, 1]); loud on bad shapes/NaN."""
    x = a.detach().cpu().double().numpy() if isinstance(a, Tensor) else np.asarray(a, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"{name} must be [N, F]; got shape {tuple(x.shape)}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contain NaN or inf")
    return x


def _psd_sqrt(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(c)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def gaussian_frechet(mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray) -> float:
    """Frechet (2-Wasserstein squared) distance between N(mu_a, cov_a) and N(mu_b, cov_b):

        ||mu_a - mu_b||^2 + tr(cov_a + cov_b - 2 (cov_a cov_b)^(1/2)).

    tr((A B)^(1/2)) is computed as the sum of square roots of the eigenvalues of the symmetric PSD
    matrix A^(1/2) B A^(1/2) (same spectrum as A B): real and stable, unlike a general ``sqrtm``
    that returns complex round-off for nearly singular covariances.
    """
    sa = _psd_sqrt(cov_a)
    m = sa @ cov_b @ sa
    tr_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0.0, None)).sum())
    d = float(((mu_a - mu_b) ** 2).sum()) + float(np.trace(cov_a) + np.trace(cov_b)) - 2.0 * tr_sqrt
    return max(d, 0.0)  # >= 0 in exact arithmetic; clip eigenvalue round-off


@single_threaded
def frechet_distance(feats_a: np.ndarray | Tensor, feats_b: np.ndarray | Tensor) -> float:
    """FID: Frechet distance between Gaussians fitted (mean, unbiased covariance) to two feature
    sets [N_a, F] and [N_b, F]. In squared feature units; 0 for identical sets. Biased upwards for
    small N (compare values only at equal sample sizes)."""
    a, b = as_float64(feats_a, "feats_a"), as_float64(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sizes differ: {a.shape[1]} vs {b.shape[1]}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"need at least 2 examples per set; got {len(a)} and {len(b)}")
    return gaussian_frechet(
        a.mean(0),
        np.cov(a, rowvar=False).reshape(a.shape[1], -1),
        b.mean(0),
        np.cov(b, rowvar=False).reshape(b.shape[1], -1),
    )


def mmd2_unbiased(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray) -> float:
    """Unbiased estimate of MMD^2 from kernel matrices (Gretton et al. 2012, eq. 3): the diagonals
    of k(x, x) and k(y, y) are left out so E[estimate] = MMD^2 exactly (it can be negative)."""
    m, n = kxx.shape[0], kyy.shape[0]
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(sxx + syy - 2.0 * kxy.mean())


def polynomial_kernel(x: Any, y: Any, degree: int = 3, coef0: float = 1.0) -> Any:
    """k(x, y) = (x.y / F + coef0)^degree, the KID kernel (F = feature size), for x [N, F] and
    y [M, F] both numpy arrays or both torch tensors -> [N, M] of the same kind."""
    return (x @ y.T / x.shape[1] + coef0) ** degree


#: Above this many features per set, KID's subsets are scored one by one instead of from the whole
#: kernel matrices (N x N float64: 128 MB at 4,096).
KID_FULL_KERNEL_MAX = 4096


@single_threaded
def kid(
    feats_a: np.ndarray | Tensor,
    feats_b: np.ndarray | Tensor,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """KID: unbiased MMD^2 with the cubic polynomial kernel, over ``subsets`` random subsets of
    ``min(subset_size, N_a, N_b)`` examples drawn without replacement from each set.

    Returns (mean, std) over subsets, in the kernel's units. Unlike FID the estimator is unbiased:
    its expectation is 0 when both sets come from the same distribution, at any sample size.

    The kernel of a pair does not depend on the subset it is drawn in, so for sets of up to
    :data:`KID_FULL_KERNEL_MAX` examples the three kernel matrices k(a, a), k(b, b), k(a, b) are
    computed once and every subset's sums are read off them with 0/1 selection vectors s:
    sum_{i, j in S} k_ij = s^T K s (3 matrix products instead of 300 for the default 100 subsets;
    the same subsets, so the same value up to float64 summation order).
    """
    a, b = as_float64(feats_a, "feats_a"), as_float64(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sizes differ: {a.shape[1]} vs {b.shape[1]}")
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError(f"KID needs at least 2 examples per set; got {len(a)} and {len(b)}")
    rng = np.random.default_rng(seed)
    picks = [(rng.choice(len(a), m, replace=False), rng.choice(len(b), m, replace=False)) for _ in range(subsets)]
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    if max(len(a), len(b)) > KID_FULL_KERNEL_MAX:
        vals = np.empty(subsets)
        for s, (ia, ib) in enumerate(picks):
            x, y = ta[torch.from_numpy(ia)], tb[torch.from_numpy(ib)]
            vals[s] = _mmd2_poly(polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y), m)
        return float(vals.mean()), float(vals.std())
    sel_a = torch.zeros(subsets, len(a), dtype=torch.float64)  # [S, N_a]: 1 where example i is in subset s
    sel_b = torch.zeros(subsets, len(b), dtype=torch.float64)
    rows = torch.arange(subsets)[:, None]
    sel_a[rows, torch.from_numpy(np.stack([p[0] for p in picks]))] = 1.0
    sel_b[rows, torch.from_numpy(np.stack([p[1] for p in picks]))] = 1.0

    def block_sum(k: Tensor, left: Tensor, right: Tensor) -> Tensor:  # [S]: s_l^T K s_r per subset
        return ((left @ k) * right).sum(1)

    kaa, kbb = polynomial_kernel(ta, ta), polynomial_kernel(tb, tb)
    sxx = (block_sum(kaa, sel_a, sel_a) - sel_a @ torch.diagonal(kaa)) / (m * (m - 1))
    syy = (block_sum(kbb, sel_b, sel_b) - sel_b @ torch.diagonal(kbb)) / (m * (m - 1))
    sxy = block_sum(polynomial_kernel(ta, tb), sel_a, sel_b) / (m * m)
    vals = (sxx + syy - 2.0 * sxy).numpy()
    return float(vals.mean()), float(vals.std())


def _mmd2_poly(kxx: Tensor, kyy: Tensor, kxy: Tensor, m: int) -> float:
    """:func:`mmd2_unbiased` on torch kernel matrices of two subsets of ``m`` examples each."""
    sxx = (kxx.sum() - torch.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - torch.trace(kyy)) / (m * (m - 1))
    return float(sxx + syy - 2.0 * kxy.mean())


def _pairwise(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # Euclidean distances [len(x), len(y)] in float64 (torch.cdist is fast and exact enough here).
    return torch.cdist(torch.from_numpy(x), torch.from_numpy(y)).numpy()


def _knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Distance of each point of x to its k-th nearest other point of x ([N])."""
    if len(x) <= k:
        raise ValueError(f"k-NN radii need more than k={k} points; got {len(x)}")
    d = _pairwise(x, x)
    # Column 0 of the sorted row is the point itself (distance 0), so the k-th neighbour is column k.
    return np.partition(d, k, axis=1)[:, k]


@single_threaded
def precision_recall(real: np.ndarray | Tensor, fake: np.ndarray | Tensor, *, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019).

    Each set's manifold is the union of balls around its points with radius the distance to the
    k-th nearest neighbour. Precision: fraction of generated points inside the real manifold
    (fidelity). Recall: fraction of real points inside the generated manifold (diversity). Both in
    [0, 1]; k=3 as in the paper.
    """
    r, f = as_float64(real, "real"), as_float64(fake, "fake")
    d = _pairwise(r, f)  # [N_real, N_fake]
    precision = float((d <= _knn_radii(r, k)[:, None]).any(0).mean())
    recall = float((d <= _knn_radii(f, k)[None, :]).any(1).mean())
    return precision, recall


@single_threaded
def density_coverage(real: np.ndarray | Tensor, fake: np.ndarray | Tensor, *, k: int = 5) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020), built on the real set's k-NN balls only (k=5).

    Density: (1 / (k M)) sum_j #{real balls containing fake j}; about 1 when the two sets match,
    unbounded above (fakes crowding dense real regions), robust to real outliers.
    Coverage: fraction of real balls that contain at least one fake; in [0, 1].
    """
    r, f = as_float64(real, "real"), as_float64(fake, "fake")
    inside = _pairwise(r, f) <= _knn_radii(r, k)[:, None]  # [N_real, N_fake]
    density = float(inside.sum() / (k * f.shape[0]))
    coverage = float(inside.any(1).mean())
    return density, coverage
