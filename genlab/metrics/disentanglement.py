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

SAP -- Kumar, Sattigeri & Balakrishnan, "Variational Inference of Disentangled Latent Concepts from
Unlabeled Observations", ICLR 2018: for discrete factors, S[j, k] is the held-out accuracy of a
classifier predicting factor k from code dimension j alone; the score is the mean over factors of
the gap between the two largest S[j, k] over j. (disentanglement_lib uses a linear SVM per code
dimension; here a 1-D histogram classifier -- the majority class of each of ``bins`` equal-width
bins -- which can also carve out the interior classes of a multi-class factor.)

BetaVAE score -- Higgins et al., "beta-VAE: Learning Basic Visual Concepts with a Constrained
Variational Framework", ICLR 2017; FactorVAE score -- Kim & Mnih, "Disentangling by Factorising",
ICML 2018. Both generate observations with one factor held fixed, so they take a ``represent``
function (observations -> codes [n, D]) and a :class:`GroundTruthSimulator` (e.g.
:class:`ShapesSimulator`) rather than a fixed data set.

Codes are [N, D] floats (e.g. posterior means from ``model.encode``); factors are [N, K] integer
class indices (the ``factors`` of the ``shapes`` data set, or any discrete labels).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
from torch import Tensor

from ..data.shapes import FACTOR_NAMES as SHAPES_FACTOR_NAMES
from ..data.shapes import FACTOR_SIZES as SHAPES_FACTOR_SIZES
from ..data.shapes import render


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


def mutual_information_matrix(
    codes: np.ndarray | Tensor, factors: np.ndarray | Tensor, *, bins: int = 20, normalize: bool = False
) -> np.ndarray:
    """I(v_k; z_j) as a [K factors, D codes] float64 matrix, in nats, of codes [N, D] (each
    discretized into ``bins`` equal-width bins, as for MIG) and factors [N, K] (integer classes).
    ``normalize``: divide row k by the factor's entropy H(v_k), so entries lie in [0, 1] (rows of
    constant factors are then NaN). Uses all N examples; the plug-in estimate is biased upwards by
    about (bins - 1)(classes - 1) / (2N) nats."""
    c, f = _as_codes_factors(codes, factors)
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 2:
        raise ValueError(f"bins must be an integer >= 2; got {bins!r}")
    z = discretize(c, int(bins))
    mi = np.array([[mutual_information(z[:, j], f[:, k]) for j in range(z.shape[1])] for k in range(f.shape[1])])
    if normalize:
        h = np.array([mutual_information(f[:, k], f[:, k]) for k in range(f.shape[1])])
        with np.errstate(divide="ignore", invalid="ignore"):
            mi = np.where(h[:, None] > 0, mi / h[:, None], np.nan)
    return mi


def mig(codes: np.ndarray | Tensor, factors: np.ndarray | Tensor, *, bins: int = 20) -> float:
    """Mutual information gap (Chen et al. 2018) of codes [N, D] for factors [N, K] (integer
    classes), in [0, 1]; factors with a single value (zero entropy) are skipped. Needs D >= 2."""
    c, f = _as_codes_factors(codes, factors)
    if c.shape[1] < 2:
        raise ValueError(f"MIG compares the two most informative code dimensions; codes have {c.shape[1]}")
    mi_all = mutual_information_matrix(c, f, bins=bins)
    gaps = []
    for k in range(f.shape[1]):
        h = mutual_information(f[:, k], f[:, k])  # I(v; v) = H(v)
        if h <= 0:
            continue
        mi = np.sort(mi_all[k])[::-1]
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


def _split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) index arrays of a seeded random split of ``n`` examples."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(test_fraction * n)))
    if n - n_test < 2:
        raise ValueError(f"too few examples ({n}) for a train/test split")
    return perm[n_test:], perm[:n_test]


def _bin_classifier_accuracy(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, bins: int
) -> float:
    """Held-out accuracy of a 1-D histogram classifier: ``bins`` equal-width bins over the training
    range of the scalar feature x, each predicting its majority training class (empty bins: the
    overall majority class)."""
    edges = np.histogram_bin_edges(x_train, bins=bins)[1:-1]
    b_train = np.digitize(x_train, edges)
    b_test = np.digitize(x_test, edges)  # outside the training range: the first / last bin
    classes, y = np.unique(y_train, return_inverse=True)
    counts = np.zeros((bins, len(classes)))
    np.add.at(counts, (b_train, y), 1.0)
    pred = np.where(counts.sum(1) > 0, counts.argmax(1), np.bincount(y).argmax())
    return float((classes[pred[b_test]] == y_test).mean())


def sap_matrix(
    codes: np.ndarray | Tensor,
    factors: np.ndarray | Tensor,
    *,
    bins: int | None = None,
    test_fraction: float = 0.3,
    seed: int = 0,
    chance_corrected: bool = False,
) -> np.ndarray:
    """SAP score matrix S [D codes, K factors] (Kumar et al. 2018) of codes [N, D] and factors
    [N, K] (integer classes): S[j, k] is the held-out accuracy (fraction in [0, 1]) of a 1-D
    histogram classifier of factor k on code j, fit on a seeded random ``1 - test_fraction`` of
    the examples. ``bins`` defaults to max(20, 2 x the largest number of classes), so a code equal
    to an evenly spaced factor is classified exactly. ``chance_corrected``: report
    (acc - chance) / (1 - chance) instead, chance being the test frequency of the training
    majority class (so an uninformative code scores ~0 whatever the number of classes); columns of
    factors constant on the training split are NaN."""
    c, f = _as_codes_factors(codes, factors)
    train, test = _split(len(c), test_fraction, seed)
    if bins is None:
        bins = max(20, 2 * int(max(len(np.unique(f[:, k])) for k in range(f.shape[1]))))
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 2:
        raise ValueError(f"bins must be an integer >= 2; got {bins!r}")
    s = np.full((c.shape[1], f.shape[1]), np.nan)
    for k in range(f.shape[1]):
        classes, counts = np.unique(f[train, k], return_counts=True)
        if len(classes) < 2:
            continue
        chance = float((f[test, k] == classes[counts.argmax()]).mean())
        for j in range(c.shape[1]):
            acc = _bin_classifier_accuracy(c[train, j], f[train, k], c[test, j], f[test, k], int(bins))
            s[j, k] = (acc - chance) / (1.0 - chance) if chance_corrected and chance < 1 else acc
    return s


def sap(
    codes: np.ndarray | Tensor,
    factors: np.ndarray | Tensor,
    *,
    bins: int | None = None,
    test_fraction: float = 0.3,
    seed: int = 0,
    chance_corrected: bool = False,
) -> float:
    """Separated Attribute Predictability (Kumar, Sattigeri & Balakrishnan 2018) of codes [N, D]
    for factors [N, K] (integer classes): the mean over factors of the gap between the two largest
    entries of column k of :func:`sap_matrix` (held-out accuracies). Unitless; 0 when no code, or
    two codes equally, predict each factor. Without ``chance_corrected`` (the paper's definition) a
    perfect code scores 1 - (accuracy of the best other code), i.e. about 1 - 1/classes when the
    other codes are independent of the factor; with it, ~1. Needs D >= 2 and a non-constant factor.
    Budget: all N examples (split ``1 - test_fraction`` / ``test_fraction``), D x K 1-D fits."""
    c, f = _as_codes_factors(codes, factors)
    if c.shape[1] < 2:
        raise ValueError(f"SAP compares the two most predictive code dimensions; codes have {c.shape[1]}")
    s = sap_matrix(c, f, bins=bins, test_fraction=test_fraction, seed=seed, chance_corrected=chance_corrected)
    gaps = [
        float(col[0] - col[1]) for col in (np.sort(s[:, k])[::-1] for k in range(s.shape[1])) if np.isfinite(col).all()
    ]
    if not gaps:
        raise ValueError("every factor is constant on these examples; SAP is undefined")
    return float(np.mean(gaps))


# --- metrics that generate observations with a factor held fixed ---------------------------------------


@runtime_checkable
class GroundTruthSimulator(Protocol):
    """A generator of observations from known discrete factors.

    ``factor_sizes``: number of classes of each of the K factors. ``sample(n, rng, fix)``: ``n``
    factor rows drawn uniformly from the grid (int64 [n, K]) and their observations (an array with
    leading dimension n, whatever ``represent`` takes); ``fix=(k, value)`` sets factor k to
    ``value`` in every row (an int, or an int array [n] of per-row values)."""

    factor_sizes: Sequence[int]

    def sample(
        self, n: int, rng: np.random.Generator, fix: tuple[int, int | np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]: ...


def _sample_factors(
    sizes: Sequence[int], n: int, rng: np.random.Generator, fix: tuple[int, int | np.ndarray] | None
) -> np.ndarray:
    """Uniform factor rows int64 [n, K] on the grid ``sizes``, with ``fix`` applied (see
    :class:`GroundTruthSimulator`)."""
    f = np.stack([rng.integers(0, s, n) for s in sizes], 1).astype(np.int64)
    if fix is not None:
        k, value = fix
        if not 0 <= k < len(sizes):
            raise ValueError(f"fixed factor {k} is out of range; expected 0..{len(sizes) - 1}")
        v = np.asarray(value, dtype=np.int64)
        if np.any(v < 0) or np.any(v >= sizes[k]):
            raise ValueError(f"fixed value {value!r} of factor {k} is out of range; expected 0..{sizes[k] - 1}")
        f[:, k] = v
    return f


class ShapesSimulator:
    """:class:`GroundTruthSimulator` of the built-in ``shapes`` data set: factors (shape, scale,
    orientation, pos_x, pos_y) drawn uniformly from the 3 x 6 x 40 x 32 x 32 grid, observations
    float32 [n, 1, size, size] in {0, 1} rendered by :func:`genlab.data.shapes.render` (exactly
    what ``load_shapes(size=size)`` holds for the same factors)."""

    factor_names: tuple[str, ...] = SHAPES_FACTOR_NAMES
    factor_sizes: tuple[int, ...] = SHAPES_FACTOR_SIZES

    def __init__(self, size: int = 64) -> None:
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 4:
            raise ValueError(f"image size {size!r} is invalid; expected an integer >= 4")
        self.size = int(size)

    def sample(
        self, n: int, rng: np.random.Generator, fix: tuple[int, int | np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        f = _sample_factors(self.factor_sizes, n, rng, fix)
        return f, render(f, self.size)[:, None].astype(np.float32)


Represent = Callable[[Any], Any]


def _codes(represent: Represent, x: Any) -> np.ndarray:
    """``represent(x)`` as float64 [n, D] (tensors are moved to the CPU)."""
    z = represent(x)
    z = z.detach().cpu().numpy() if isinstance(z, Tensor) else np.asarray(z)
    z = z.reshape(len(z), -1).astype(np.float64)
    if not np.all(np.isfinite(z)):
        raise ValueError("represent returned NaN or inf")
    return z


def _check_budget(**counts: int) -> None:
    for name, v in counts.items():
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive integer; got {v!r}")


def _batched(represent: Represent, parts: list[Any]) -> list[np.ndarray]:
    """Codes of each observation array in ``parts`` from one ``represent`` call per group of about
    4096 observations (fewer, larger calls than one per batch)."""
    out: list[np.ndarray] = []
    group: list[Any] = []

    def flush() -> None:
        if group:
            z = _codes(represent, np.concatenate(group))
            out.extend(np.split(z, np.cumsum([len(g) for g in group])[:-1]))
            group.clear()

    for p in parts:
        group.append(p)
        if sum(len(g) for g in group) >= 4096:
            flush()
    flush()
    return out


def betavae_score(
    represent: Represent,
    simulator: GroundTruthSimulator,
    *,
    batch_size: int = 64,
    num_train: int = 10000,
    num_eval: int = 5000,
    seed: int = 0,
) -> float:
    """BetaVAE score (Higgins et al. 2017), as in disentanglement_lib: each point picks a factor k
    uniformly, draws ``batch_size`` pairs of observations that share factor k (one random value per
    pair, all other factors independent) and has the feature mean_pairs |z1 - z2| [D]; a
    logistic regression predicts k from it, trained on ``num_train`` points and scored on
    ``num_eval`` held-out points. Returns that accuracy (fraction in [0, 1]; chance 1/K).
    ``represent``: observations -> codes [n, D]. Budget: 2 x batch_size x (num_train + num_eval)
    simulated observations (disentanglement_lib's defaults: 64, 10,000, 5,000)."""
    from sklearn.linear_model import LogisticRegression

    _check_budget(batch_size=batch_size, num_train=num_train, num_eval=num_eval)
    sizes = tuple(int(s) for s in simulator.factor_sizes)
    rng = np.random.default_rng(seed)

    def points(n: int) -> tuple[np.ndarray, np.ndarray]:
        ks = rng.integers(0, len(sizes), n)
        parts = []
        for k in ks:
            values = rng.integers(0, sizes[k], batch_size)
            parts.append(simulator.sample(batch_size, rng, fix=(int(k), values))[1])
            parts.append(simulator.sample(batch_size, rng, fix=(int(k), values))[1])
        z = _batched(represent, parts)
        feats = np.stack([np.abs(z[2 * i] - z[2 * i + 1]).mean(0) for i in range(n)])
        return feats, ks

    x_train, y_train = points(num_train)
    x_eval, y_eval = points(num_eval)
    if len(np.unique(y_train)) < 2:
        return float((y_eval == y_train[0]).mean())
    clf = LogisticRegression(max_iter=1000, random_state=seed)
    clf.fit(x_train, y_train)
    return float((clf.predict(x_eval) == y_eval).mean())


def factorvae_score(
    represent: Represent,
    simulator: GroundTruthSimulator,
    *,
    batch_size: int = 64,
    num_train: int = 10000,
    num_eval: int = 5000,
    num_variance_estimate: int = 10000,
    prune_std: float = 0.05,
    seed: int = 0,
) -> float:
    """FactorVAE score (Kim & Mnih 2018), as in disentanglement_lib: each code dimension is divided
    by its standard deviation over ``num_variance_estimate`` random observations, and dimensions
    with a std below ``prune_std`` (in code units) are dropped; each point picks a factor k
    uniformly, fixes it to one random value for a batch of ``batch_size`` observations, and votes
    for (argmin over kept dimensions of the normalized within-batch variance, k). The classifier
    maps each dimension to its most-voted factor (``num_train`` points); the score is its accuracy
    on ``num_eval`` held-out points (fraction in [0, 1]; 0 if every dimension is pruned).
    ``represent``: observations -> codes [n, D]. Budget: num_variance_estimate + batch_size x
    (num_train + num_eval) simulated observations (defaults: disentanglement_lib's)."""
    _check_budget(
        batch_size=batch_size, num_train=num_train, num_eval=num_eval, num_variance_estimate=num_variance_estimate
    )
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2 to estimate a variance; got {batch_size}")
    sizes = tuple(int(s) for s in simulator.factor_sizes)
    rng = np.random.default_rng(seed)
    z_all = np.concatenate(
        _batched(represent, [simulator.sample(n, rng)[1] for n in _chunks(num_variance_estimate, 4096)])
    )
    scale = z_all.std(0, ddof=1) if len(z_all) > 1 else np.zeros(z_all.shape[1])
    active = scale >= prune_std
    if not active.any():
        return 0.0

    def votes(n: int) -> np.ndarray:
        ks = rng.integers(0, len(sizes), n)
        parts = [simulator.sample(batch_size, rng, fix=(int(k), int(rng.integers(0, sizes[k]))))[1] for k in ks]
        v = np.zeros((z_all.shape[1], len(sizes)))
        for k, z in zip(ks, _batched(represent, parts), strict=True):
            local = (z[:, active] / scale[active]).var(0, ddof=1)
            v[np.flatnonzero(active)[local.argmin()], k] += 1
        return v

    v_train = votes(num_train)
    v_eval = votes(num_eval)
    classifier = v_train.argmax(1)
    return float(v_eval[np.arange(len(classifier)), classifier].sum() / v_eval.sum())


def _chunks(n: int, size: int) -> list[int]:
    """``n`` split into parts of at most ``size``."""
    return [min(size, n - i) for i in range(0, n, size)]
