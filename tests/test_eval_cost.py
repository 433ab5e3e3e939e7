"""The fast paths of the evaluation metrics give the estimators' values: KID from whole kernel
matrices against its definition subset by subset; the one-thread context restores what it changed."""

import numpy as np
import pytest
import torch

from genlab.metrics import fid
from genlab.metrics.threads import single_thread


def kid_by_definition(a, b, subsets, subset_size, seed):
    """Binkowski et al. 2018 written out: per subset, the unbiased MMD^2 with k(x, y) = (x.y / F + 1)^3."""
    rng = np.random.default_rng(seed)
    m = min(subset_size, len(a), len(b))
    vals = []
    for _ in range(subsets):
        x, y = a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)]
        k = lambda u, v: (u @ v.T / a.shape[1] + 1.0) ** 3  # noqa: E731
        kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
        off = lambda kk: (kk.sum() - np.trace(kk)) / (m * (m - 1))  # noqa: E731
        vals.append(off(kxx) + off(kyy) - 2 * kxy.sum() / m**2)
    return float(np.mean(vals)), float(np.std(vals))


@pytest.mark.parametrize("full_kernel", [True, False])
@pytest.mark.parametrize("sizes", [(40, 60, 15), (25, 25, 100), (50, 30, 10)])
def test_kid_equals_its_definition(sizes, full_kernel, monkeypatch):
    na, nb, subset = sizes
    if not full_kernel:
        monkeypatch.setattr(fid, "KID_FULL_KERNEL_MAX", 10)  # the subset-by-subset path for large sets
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(na, 6)), rng.normal(0.3, 1.2, size=(nb, 6))
    got = fid.kid(a, b, subsets=7, subset_size=subset, seed=5)
    want = kid_by_definition(a, b, 7, subset, 5)
    assert got == pytest.approx(want, rel=1e-12, abs=1e-14)


def test_kid_of_a_whole_set_against_itself():
    # Subsets of all N examples on both sides are the whole set, whatever their order: then
    # sxx = syy = the mean off-diagonal kernel and sxy = the mean of all entries, the same every time.
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20, 4))
    k = (a @ a.T / 4 + 1) ** 3
    off = (k.sum() - np.trace(k)) / (20 * 19)
    mean, std = fid.kid(a, a, subsets=3, subset_size=20)
    assert mean == pytest.approx(2 * off - 2 * k.mean(), rel=1e-12) and std == pytest.approx(0, abs=1e-12)


def test_single_thread_limits_torch_and_blas_and_restores_them():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    before = torch.get_num_threads()
    with single_thread():
        assert torch.get_num_threads() == 1
        blas = [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
        assert all(n == 1 for n in blas)
        with single_thread():  # nesting
            pass
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_mmd_permutation_p_value_equals_its_definition():
    # One permutation at a time from the same generator, MMD^2 summed out by hand: the chunked,
    # vectorized test must count exactly the same permutations (the chunk size changes nothing).
    from genlab.metrics.twosample import gaussian_kernel_matrix, median_bandwidth, mmd_test

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(12, 3)), rng.normal(0.4, 1.0, size=(9, 3))
    z = torch.from_numpy(np.concatenate([a, b]))
    k = gaussian_kernel_matrix(z, median_bandwidth(z)).numpy()
    m, n = len(a), len(b)

    def mmd2(first):
        x, y = np.flatnonzero(first), np.flatnonzero(~first)
        kxx, kyy, kxy = k[np.ix_(x, x)], k[np.ix_(y, y)], k[np.ix_(x, y)]
        return (
            (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2 * kxy.mean()
        )

    observed = mmd2(np.arange(m + n) < m)
    gen = torch.Generator().manual_seed(4)
    exceed = 0
    for _ in range(300):
        ranks = torch.rand(1, m + n, generator=gen, dtype=torch.float64).argsort(1)[0].numpy()
        exceed += mmd2(ranks < m) >= observed - 1e-15
    stat, p = mmd_test(a, b, permutations=300, seed=4)
    assert stat == pytest.approx(observed, rel=1e-10)
    assert p == (1 + exceed) / 301


def test_adam_is_torch_adam_bit_for_bit():
    from genlab.metrics.twosample import adam

    torch.manual_seed(0)
    nets = [torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 1)) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    x, y = torch.randn(40, 5), (torch.rand(40) > 0.5).float()

    def loss(net):
        return torch.nn.functional.binary_cross_entropy_with_logits(net(x)[:, 0], y)

    opt = torch.optim.Adam(nets[0].parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(30):
        opt.zero_grad()
        loss(nets[0]).backward()
        opt.step()
    adam(list(nets[1].parameters()), lambda: loss(nets[1]), 30, lr=1e-2, weight_decay=1e-4)
    assert all(torch.equal(p, q) for p, q in zip(nets[0].parameters(), nets[1].parameters()))


def test_the_sample_metrics_do_not_import_torch_dynamo():
    # torch.optim imports torch._dynamo on first use (seconds): an evaluation need not pay for it.
    import subprocess
    import sys

    code = (
        "import sys, numpy as np; from genlab.metrics import c2st, kid, mmd_test, frechet_distance; "
        "a, b = np.random.rand(30, 4), np.random.rand(30, 4); c2st(a, b, steps=3); kid(a, b); "
        "mmd_test(a, b, permutations=5); frechet_distance(a, b); print('torch._dynamo' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
