"""Dequantization bounds of the flows, checked against the discrete likelihood itself.

On a 2-D vector with 3 levels the discrete probability of a level x is an integral of the flow's
density over the level's bin, P(x) = L^-D * int_[0,1)^D p_Y((x + u) / L) du, which a midpoint rule
computes to high accuracy. The uniform-dequantization value E_u[log p_Y] - D ln L must lie below
log P(x) (Jensen), the importance-weighted value must rise towards it with the number of draws, and
a variational q(u | x) must be a normalized density (so E_q[p_Y / q] = L^D P(x)).
"""

from __future__ import annotations

import math

import pytest
import torch

from genlab.data.spec import DataSpec
from genlab.models.flows.glow import Glow
from genlab.models.flows.realnvp import RealNVP

L, D = 3, 2
SPEC = DataSpec(name="tiny", kind="vector", shape=(D,), levels=L)
GRID = 160  # midpoints per axis per bin


def _model(dequantization: str) -> RealNVP:
    torch.manual_seed(0)
    m = RealNVP(SPEC, n_couplings=3, hidden=16, dequantization=dequantization).double()
    with torch.no_grad():  # a density far from flat inside each bin, so Jensen's gap is visible
        for p in m.flow.parameters():  # (the coupling nets' last layers start at zero: the identity)
            p.normal_(0.0, 0.3)
    m.train()
    m.log_prob(torch.rand(64, D, dtype=torch.float64))  # ActNorm's data-dependent init
    return m.eval()


def _bins() -> torch.Tensor:
    """All L^D level vectors as data values level / (L - 1), [L^D, D]."""
    ids = torch.cartesian_prod(*[torch.arange(L)] * D).double()
    return ids / (L - 1)


@torch.no_grad()
def _quadrature(m: RealNVP, x: torch.Tensor) -> tuple[float, float]:
    """(log P(x), E_u[log p_Y(y)] - D ln L) for one data point x [D], u ~ U[0, 1)^D, by midpoints."""
    mid = (torch.arange(GRID, dtype=torch.float64) + 0.5) / GRID
    u = torch.cartesian_prod(mid, mid)
    lev = torch.round(x * (L - 1))
    lp = m.log_density((lev + u) / L)
    log_p = float(torch.logsumexp(lp, 0) - math.log(len(lp))) - D * math.log(L)
    return log_p, float(lp.mean()) - D * math.log(L)


def test_exact_discrete_probabilities_are_a_sub_distribution():
    m = _model("uniform")
    total = sum(math.exp(_quadrature(m, x)[0]) for x in _bins())
    # The logit maps [0, 1] onto a bounded interval, so some of p_Y's mass lies outside the bins.
    assert 0.2 < total <= 1.0 + 1e-6


@torch.no_grad()
def test_uniform_bound_is_below_the_discrete_log_likelihood_and_iw_tightens_it():
    m = _model("uniform")
    n = 4000
    for x in _bins()[[1, 4, 6]]:
        log_p, jensen = _quadrature(m, x)
        assert jensen < log_p - 1e-3  # a real gap for this density
        xs = x.expand(n, D).clone()
        one = m.log_prob(xs) - D * math.log(L)
        # k = 1: an unbiased estimate of E_u[log p_Y] - D ln L, the bound Jensen puts below log P.
        assert abs(float(one.mean()) - jensen) < 4 * float(one.std()) / math.sqrt(n) + 1e-3
        est = [m.log_prob(xs, k=k) - D * math.log(L) for k in (1, 8, 64)]  # n estimates each
        means, se = [float(e.mean()) for e in est], [float(e.std()) / math.sqrt(n) for e in est]
        assert means[0] < means[1] < means[2] < log_p + 3 * se[2]
        assert log_p - means[2] < 0.2 * (log_p - jensen)  # most of Jensen's gap is closed by k = 64


@torch.no_grad()
def test_variational_q_is_a_normalized_density_and_its_bound_is_below_log_p():
    m = _model("variational")
    for p in m.deq.parameters():  # a q unlike its initial logit-normal (larger weights concentrate it)
        p.normal_(0.0, 0.1)
    n = 50_000
    for x in _bins()[[1, 5]]:
        lev = torch.round(x * (L - 1)).expand(n, D).clone()
        y, log_q = m.deq(lev, L)
        u = y * L - lev
        assert (u > 0).all() and (u < 1).all()
        # E_q[1{u in R} / q(u)] = |R| for any region R; on R = [1/4, 3/4]^2, q is bounded below, so
        # the estimate has a small variance. A wrong log-det or sigmoid term would miss 0.25.
        w = ((u > 0.25) & (u < 0.75)).all(1).double() * torch.exp(-log_q)
        assert abs(float(w.mean()) - 0.25) < 4 * float(w.std()) / math.sqrt(n)
        log_p, _ = _quadrature(m, x)
        xs = x.expand(4000, D).clone()
        est = [m.log_prob(xs, k=k) - D * math.log(L) for k in (1, 16)]
        se = float(est[1].std()) / math.sqrt(4000)
        assert float(est[0].mean()) < float(est[1].mean()) < log_p + 3 * se  # Flow++'s bound, tightened


@pytest.mark.parametrize("deq", ["uniform", "variational"])
def test_images_and_classes_take_k_draws(deq):
    spec = DataSpec(name="img", kind="image", shape=(1, 4, 4), levels=5, num_classes=3)
    torch.manual_seed(0)
    m = Glow(spec, n_levels=1, steps=1, hidden=8, conditional=True, dequantization=deq)
    x = torch.randint(0, 5, (4, 1, 4, 4)).float() / 4
    y = torch.tensor([0, 1, 2, 0])
    m.log_prob(x, y)  # ActNorm init
    m.eval()
    torch.manual_seed(1)
    lp = m.log_prob(x, y, k=5)
    assert lp.shape == (4,) and torch.isfinite(lp).all()
    # The k draws of example i are grouped with example i: changing the other examples (same noise
    # positions under the same seed) leaves its value alone; a wrong reshape would mix them.
    x2, y2 = x.clone(), y.clone()
    x2[1:], y2[1:] = 1.0 - x2[1:], (y2[1:] + 1) % 3
    torch.manual_seed(1)
    lp2 = m.log_prob(x2, y2, k=5)
    assert torch.allclose(lp[0], lp2[0], atol=1e-5) and not torch.allclose(lp[1:], lp2[1:])
    with pytest.raises(ValueError, match="k"):
        m.log_prob(x, y, k=0)
