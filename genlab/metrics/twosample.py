"""Two-sample tests: did samples ``a`` and ``b`` come from the same distribution?

This is the lens through which the lecture frames likelihood-free learning: a GAN's discriminator
*is* a learned two-sample test. Here are the two classical tests used to audit a trained model.

References:
    Gretton et al., "A Kernel Two-Sample Test", JMLR 2012 (MMD; unbiased estimator; permutation
    test; median-distance bandwidth heuristic).
    Lopez-Paz & Oquab, "Revisiting Classifier Two-Sample Tests", ICLR 2017 (C2ST: the held-out
    accuracy of a classifier trained to tell the samples apart; 0.5 under the null).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from .fid import as_float64
from .threads import single_thread


def gaussian_kernel_matrix(z: Tensor, bandwidth: float) -> Tensor:
    """k(z_i, z_j) = exp(-||z_i - z_j||^2 / (2 bandwidth^2)) for z [N, F] -> [N, N]."""
    return torch.exp(-torch.cdist(z, z).pow(2) / (2.0 * bandwidth**2))


def median_bandwidth(z: Tensor) -> float:
    """The median heuristic: the median pairwise distance of the pooled sample (Gretton et al. 2012)."""
    d = torch.cdist(z, z)
    off = d[~torch.eye(len(z), dtype=torch.bool)]
    med = float(off.median()) if off.numel() else 1.0
    return med if med > 0 else 1.0


def _mmd2_from_assignments(k: Tensor, a: Tensor) -> Tensor:
    """Unbiased MMD^2 for each row of 0/1 assignments ``a`` [P, N] (1 = first sample) given the
    pooled kernel matrix k [N, N]; vectorized over P permutations."""
    b = 1.0 - a
    m, n = a[0].sum(), b[0].sum()
    diag = torch.diagonal(k)
    ka = a @ k  # [P, N]
    sxx = ((ka * a).sum(1) - a @ diag) / (m * (m - 1))
    syy = (((k.sum(0) - ka) * b).sum(1) - b @ diag) / (n * (n - 1))  # b^T K b, with K b = K 1 - K a
    sxy = (ka * b).sum(1) / (m * n)
    return sxx + syy - 2.0 * sxy


def mmd_test(
    a: np.ndarray | Tensor,
    b: np.ndarray | Tensor,
    *,
    permutations: int = 1000,
    seed: int = 0,
    bandwidth: float | None = None,
) -> tuple[float, float]:
    """Kernel two-sample test with a Gaussian kernel (bandwidth: median heuristic unless given).

    a: [M, F], b: [N, F] (M, N >= 2). Returns (statistic, p_value): the unbiased MMD^2 estimate
    (kernel units; can be slightly negative under the null) and the permutation p-value
    (1 + #{permuted >= observed}) / (1 + permutations), which is valid (P(p <= alpha) <= alpha under
    the null) for any sample size.
    """
    x, y = as_float64(a, "a"), as_float64(b, "b")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature sizes differ: {x.shape[1]} vs {y.shape[1]}")
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"MMD needs at least 2 examples per sample; got {len(x)} and {len(y)}")
    if permutations < 1:
        raise ValueError(f"permutations must be >= 1; got {permutations}")
    with single_thread():  # thousands of small matmuls: threads only add contention
        return _mmd_permutation_test(torch.from_numpy(np.concatenate([x, y])), len(x), permutations, seed, bandwidth)


def _mmd_permutation_test(
    z: Tensor, m: int, permutations: int, seed: int, bandwidth: float | None
) -> tuple[float, float]:
    h = median_bandwidth(z) if bandwidth is None else float(bandwidth)
    k = gaussian_kernel_matrix(z, h)
    n_tot = len(z)
    observed = _mmd2_from_assignments(k, (torch.arange(n_tot) < m).double()[None])[0]
    gen = torch.Generator().manual_seed(seed)
    exceed = 0
    # Permutations per chunk: ~2e8 / N^2, so one [P, N] @ [N, N] product reads K once for ~100 rows
    # (3x faster at N = 1,447 than ~10 rows: the product is bound by reading K); [P, N] stays small.
    # Chunks draw from one generator in turn, so the permutations do not depend on the chunk size.
    chunk = max(1, int(2e8 // (n_tot * n_tot)))
    done = 0
    while done < permutations:
        p = min(chunk, permutations - done)
        ranks = torch.rand(p, n_tot, generator=gen, dtype=torch.float64).argsort(1)
        assign = (ranks < m).double()  # a uniformly random split into sizes m and n
        exceed += int((_mmd2_from_assignments(k, assign) >= observed).sum())
        done += p
    return float(observed), (1 + exceed) / (1 + permutations)


def c2st(
    a: np.ndarray | Tensor,
    b: np.ndarray | Tensor,
    *,
    seed: int = 0,
    hidden: int = 64,
    steps: int = 300,
    test_fraction: float = 0.5,
) -> float:
    """Classifier two-sample test: held-out accuracy of a small MLP that tells a from b.

    Both samples are subsampled to the same size (so chance is exactly 0.5), standardized with the
    training half's statistics, and split ``1 - test_fraction`` / ``test_fraction``; a one-hidden-
    layer ReLU net is trained full-batch with Adam for ``steps`` steps. Returns the accuracy on the
    held-out half: about 0.5 when a and b come from one distribution, about 1 when the classifier
    finds a difference. Under the null, accuracy ~ N(1/2, 1/(4 n_test)) (see :func:`c2st_p_value`).
    """
    x, y = as_float64(a, "a"), as_float64(b, "b")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature sizes differ: {x.shape[1]} vs {y.shape[1]}")
    rng = np.random.default_rng(seed)
    n = min(len(x), len(y))
    if n < 4:
        raise ValueError(f"C2ST needs at least 4 examples per sample; got {len(x)} and {len(y)}")
    x, y = x[rng.choice(len(x), n, replace=False)], y[rng.choice(len(y), n, replace=False)]
    feats = np.concatenate([x, y])
    labels = np.concatenate([np.zeros(n), np.ones(n)])
    perm = rng.permutation(2 * n)
    n_test = max(2, int(round(test_fraction * 2 * n)))
    te, tr = perm[:n_test], perm[n_test:]
    mu, sd = feats[tr].mean(0), feats[tr].std(0) + 1e-8
    f = torch.from_numpy((feats - mu) / sd).float()
    t = torch.from_numpy(labels).float()
    gen = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(f.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, 1))
    with torch.no_grad():  # seeded init, independent of the global RNG
        for p in net.parameters():
            p.uniform_(-1.0 / math.sqrt(p.shape[-1]), 1.0 / math.sqrt(p.shape[-1]), generator=gen)
    ftr, ttr = f[tr], t[tr]
    with single_thread():
        adam(
            list(net.parameters()),
            lambda: nn.functional.binary_cross_entropy_with_logits(net(ftr)[:, 0], ttr),
            steps,
            lr=1e-2,
            weight_decay=1e-4,
        )
    with torch.no_grad():
        pred = (net(f[te])[:, 0] > 0).float()
    return float((pred == t[te]).float().mean())


def adam(
    params: list[Tensor],
    loss_fn: Callable[[], Tensor],
    steps: int,
    *,
    lr: float,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> None:
    """``steps`` steps of Adam (Kingma & Ba 2015; L2 weight decay added to the gradient) on
    ``params``, in place, minimizing the scalar ``loss_fn()``: the arithmetic of ``torch.optim.Adam``
    on a CPU (its single-tensor path), operation for operation, so the parameters come out the same.

    Why not ``torch.optim.Adam`` itself: the first optimizer a process builds imports
    ``torch._dynamo``, 3.3 s on this machine (2 shared cores, 2026-12-02) -- in ``genlab eval``
    more than all of C2ST's arithmetic, and nothing else in an evaluation needs it."""
    beta1, beta2 = betas
    exp_avg = [torch.zeros_like(p) for p in params]
    exp_avg_sq = [torch.zeros_like(p) for p in params]
    for step in range(1, steps + 1):
        for p in params:
            p.grad = None
        with torch.enable_grad():
            loss_fn().backward()
        bias_correction1 = 1 - beta1 ** float(step)
        bias_correction2_sqrt = (1 - beta2 ** float(step)) ** 0.5
        step_size = lr / bias_correction1
        with torch.no_grad():
            for p, m, v in zip(params, exp_avg, exp_avg_sq):
                grad = p.grad.add(p, alpha=weight_decay) if weight_decay else p.grad
                m.lerp_(grad, 1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                p.addcdiv_(m, (v.sqrt() / bias_correction2_sqrt).add_(eps), value=-step_size)
    for p in params:
        p.grad = None


def c2st_p_value(accuracy: float, n_test: int) -> float:
    """One-sided p-value of a C2ST accuracy on ``n_test`` held-out examples under the null
    (accuracy ~ N(1/2, 1/(4 n_test)), Lopez-Paz & Oquab 2017, Sec. 3)."""
    z = (accuracy - 0.5) / math.sqrt(0.25 / n_test)
    return 0.5 * math.erfc(z / math.sqrt(2.0))
