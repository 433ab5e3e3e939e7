"""Disentanglement of a representation with respect to known generative factors.

MIG -- Chen, Li, Grosse & Duvenaud, "Isolating Sources of Disentanglement in Variational
Autoencoders", NeurIPS 2018, eq. 6: for each factor v_k, the gap between the two largest mutual
informations I(z_j; v_k) over code dimensions j, normalized by the factor's entropy H(v_k),
averaged over factors. 1: every factor is captured by exactly one code dimension; 0: no code
dimension stands out (none, or several equally). As in disentanglement_lib, each code dimension
is discretized into ``bins`` equal-width bins and the mutual information is that of the discrete
histograms (nats; the ratio is unitless).

DCI -- Eastwood & Williams, "A Framework for the Quantitative Evaluation of Disentangled
Representations", ICLR 2018: predict each factor from the codes with a random forest (the paper's
second regressor; here a classifier, since factors are discrete), read the importance R[j, k] of
code j for factor k, and score
  disentanglement = sum_j rho_j (1 - H_K(P_j.)),  P_jk = R_jk / sum_k R_jk,  rho_j = sum_k R_jk / sum R
  completeness    = sum_k rho_k (1 - H_D(P_.k)),  P_jk = R_jk / sum_j R_jk,  rho_k = sum_j R_jk / sum R
  informativeness = mean over factors of the held-out classification accuracy,
with H_K the entropy in base K (number of factors) and H_D in base D (number of code dimensions),
so every score lies in [0, 1]. (disentanglement_lib weights completeness the same way.)

Codes are [N, D] floats (e.g. posterior means from ``model.encode``); factors are [N, K] integer
class indices (the ``factors`` of the ``shapes`` data set, or any discrete labels).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import Tensor


def _as_codes_factors(codes: np.ndarray | Tensor, factors: np.ndarray | Tensor) -> tuple[np.ndarray, np.ndarray]:
    c = codes.detach().cpu().numpy() if isinstance(codes, Tensor) else np.asarray(codes)
    f = factors.detach().cpu().numpy() if isinstance(factors, Tensor) else np.asarray(factors)
    c = c.reshape(len(c), -1).astype(np.float64)
    if f.ndim == 1:
        f = f[:, None]
    if f.ndim != 2 or len(f) != len(c):
        raise ValueError(f"factors must be [N, K] with N = {len(c)} (the codes' N); got shape {f.shape}")
    if not np.all(np.isfinite(c)):
        raise ValueError("codes contain NaN or inf")
    if not np.all(f == np.round(f)):
        raise ValueError("factors must be integer class indices (discretize continuous factors first)")
    if len(c) < 2:
        raise ValueError(f"need at least 2 examples; got {len(c)}")
    return c, f.astype(np.int64)


def discretize(codes: np.ndarray, bins: int = 20) -> np.ndarray:
    """Each column of codes [N, D] -> bin indices [N, D] of ``bins`` equal-width bins between its
    minimum and maximum (a constant column falls in one bin)."""
    out = np.zeros(codes.shape, dtype=np.int64)
    for j in range(codes.shape[1]):
        col = codes[:, j]
        edges = np.histogram_bin_edges(col, bins=bins)
        out[:, j] = np.clip(np.digitize(col, edges[1:-1]), 0, bins - 1)
    return out


def mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """I(a; b) in nats of two discrete label arrays [N] (the plug-in estimate of their joint histogram)."""
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    joint = np.zeros((ai.max() + 1, bi.max() + 1))
    np.add.at(joint, (ai, bi), 1.0)
    p = joint / joint.sum()
    pa, pb = p.sum(1, keepdims=True), p.sum(0, keepdims=True)
    nz = p > 0
    return float((p[nz] * np.log(p[nz] / (pa @ pb)[nz])).sum())


def mig(codes: np.ndarray | Tensor, factors: np.ndarray | Tensor, *, bins: int = 20) -> float:
    """Mutual information gap (Chen et al. 2018) of codes [N, D] for factors [N, K] (integer
    classes), in [0, 1]; factors with a single value (zero entropy) are skipped. Needs D >= 2."""
    c, f = _as_codes_factors(codes, factors)
    if c.shape[1] < 2:
        raise ValueError(f"MIG compares the two most informative code dimensions; codes have {c.shape[1]}")
    z = discretize(c, bins)
    gaps = []
    for k in range(f.shape[1]):
        h = mutual_information(f[:, k], f[:, k])  # I(v; v) = H(v)
        if h <= 0:
            continue
        mi = np.sort([mutual_information(z[:, j], f[:, k]) for j in range(z.shape[1])])[::-1]
        gaps.append((mi[0] - mi[1]) / h)
    if not gaps:
        raise ValueError("every factor is constant on these examples; MIG is undefined")
    return float(np.mean(gaps))


def _entropy_rows(p: np.ndarray, base: int) -> np.ndarray:
    """Entropy in base ``base`` of each row of a row-stochastic matrix."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p), 0.0)
    return -terms.sum(1) / np.log(base)


def dci_scores(importance: np.ndarray) -> tuple[float, float]:
    """(disentanglement, completeness) of an importance matrix R [D codes, K factors] (>= 0),
    Eastwood & Williams 2018 eqs. 1-4 (see the module docstring)."""
    r = np.abs(np.asarray(importance, dtype=np.float64))
    total = r.sum()
    if total <= 0:
        return 0.0, 0.0
    d, k = r.shape
    code_w = r.sum(1) / total
    p_code = r / np.maximum(r.sum(1, keepdims=True), 1e-300)
    dis = float((code_w * (1 - _entropy_rows(p_code, k))).sum()) if k > 1 else 1.0
    fac_w = r.sum(0) / total
    p_fac = (r / np.maximum(r.sum(0, keepdims=True), 1e-300)).T
    com = float((fac_w * (1 - _entropy_rows(p_fac, d))).sum()) if d > 1 else 1.0
    return dis, com


def dci(
    codes: np.ndarray | Tensor,
    factors: np.ndarray | Tensor,
    *,
    test_fraction: float = 0.3,
    n_estimators: int = 50,
    seed: int = 0,
) -> dict[str, Any]:
    """DCI (Eastwood & Williams 2018) of codes [N, D] for factors [N, K] (integer classes).

    A random forest per factor (``n_estimators`` trees, scikit-learn) is fit on a random
    ``1 - test_fraction`` of the examples; its impurity importances form column k of R [D, K].
    Returns ``disentanglement``, ``completeness`` (both in [0, 1]), ``informativeness`` (mean
    held-out accuracy over factors, in [0, 1]; chance is 1 / number of classes) and
    ``importance`` (R as nested lists). Factors with a single value are skipped.
    """
    from sklearn.ensemble import RandomForestClassifier

    c, f = _as_codes_factors(codes, factors)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction}")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(c))
    n_test = max(1, int(round(test_fraction * len(c))))
    test, train = perm[:n_test], perm[n_test:]
    if len(train) < 2:
        raise ValueError(f"too few examples ({len(c)}) for a train/test split")
    cols, acc = [], []
    for k in range(f.shape[1]):
        if len(np.unique(f[train, k])) < 2:
            continue
        # every split may use every code (max_features=None): with a random subset of codes per split
        # (the default), trees must sometimes split on an irrelevant code, leaking importance to it
        forest = RandomForestClassifier(n_estimators=n_estimators, max_features=None, random_state=seed, n_jobs=1)
        forest.fit(c[train], f[train, k])
        cols.append(forest.feature_importances_)
        acc.append(float((forest.predict(c[test]) == f[test, k]).mean()))
    if not cols:
        raise ValueError("every factor is constant on these examples; DCI is undefined")
    r = np.stack(cols, 1)  # [D, K']
    dis, com = dci_scores(r)
    return {
        "disentanglement": dis,
        "completeness": com,
        "informativeness": float(np.mean(acc)),
        "importance": r.tolist(),
    }
