"""Monotonic rational-quadratic splines and the spline coupling transform of Neural Spline Flows.

Durkan, Bekasov, Murray & Papamakarios, "Neural Spline Flows", NeurIPS 2019 (sec. 3.1, appendix A).
On [-B, B] the spline passes through K + 1 increasing knots (x_k, y_k) with positive derivatives
d_k at the knots; in bin k, with xi = (x - x_k) / w_k in [0, 1] and s_k = h_k / w_k,

    y = y_k + h_k (s_k xi^2 + d_k xi (1 - xi)) / (s_k + (d_{k+1} + d_k - 2 s_k) xi (1 - xi))
    dy/dx = s_k^2 (d_{k+1} xi^2 + 2 s_k xi (1 - xi) + d_k (1 - xi)^2) / (s_k + (...) xi (1 - xi))^2

and the inverse solves a quadratic for xi (eqs. 6-8 of the paper). Outside [-B, B] the map is the
identity ("linear tails"), which is why the boundary derivatives are fixed to 1.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .transforms import Transform, sum_except_batch

MIN_BIN = 1e-3
MIN_DERIV = 1e-3
# softplus(raw + _DERIV_SHIFT) + MIN_DERIV = 1 at raw = 0: a zero-initialized net gives the identity.
_DERIV_SHIFT = math.log(math.expm1(1.0 - MIN_DERIV))


def _knots(raw: Tensor, bound: float) -> tuple[Tensor, Tensor]:
    """Unnormalized bin sizes [..., K] -> knot positions [..., K+1] from -B to B and bin sizes."""
    k = raw.shape[-1]
    size = MIN_BIN + (1 - MIN_BIN * k) * torch.softmax(raw, -1)
    cum = F.pad(torch.cumsum(size, -1), (1, 0)) * (2 * bound) - bound
    # Pin the ends exactly (the cumulative sum can miss 1 by a rounding error).
    cum = torch.cat([torch.full_like(cum[..., :1], -bound), cum[..., 1:-1], torch.full_like(cum[..., :1], bound)], -1)
    return cum, cum[..., 1:] - cum[..., :-1]


def rq_spline(
    x: Tensor, raw_w: Tensor, raw_h: Tensor, raw_d: Tensor, bound: float, inverse: bool = False
) -> tuple[Tensor, Tensor]:
    """Element-wise monotonic RQ spline on [-bound, bound], identity outside.

    x [...]; raw_w, raw_h [..., K]; raw_d [..., K-1] (interior knot derivatives). Returns the output
    [...] and the element-wise log|dy/dx| [...] of the map applied (of the inverse if ``inverse``).
    """
    inside = (x > -bound) & (x < bound)
    xc = x.clamp(-bound, bound)  # outside points are computed on the edge, then discarded
    cw, w = _knots(raw_w, bound)
    ch, h = _knots(raw_h, bound)
    ones = torch.ones_like(raw_d[..., :1])
    d = torch.cat([ones, F.softplus(raw_d + _DERIV_SHIFT) + MIN_DERIV, ones], -1)  # [..., K+1]
    knots = ch if inverse else cw
    idx = torch.searchsorted(
        knots[..., 1:-1].contiguous(), xc.unsqueeze(-1).contiguous(), right=True
    )  # bin id [..., 1]

    def at(t: Tensor) -> Tensor:
        return t.gather(-1, idx).squeeze(-1)

    xk, wk, yk, hk, dk, dk1 = at(cw), at(w), at(ch), at(h), at(d), at(d[..., 1:])
    s = hk / wk
    if inverse:
        dy = xc - yk
        a = hk * (s - dk) + dy * (dk1 + dk - 2 * s)
        b = hk * dk - dy * (dk1 + dk - 2 * s)
        cc = -s * dy
        disc = (b * b - 4 * a * cc).clamp_min(0)
        xi = (2 * cc) / (-b - disc.sqrt())  # the root in [0, 1], numerically stable form
        out = xi * wk + xk
    else:
        xi = (xc - xk) / wk
    one_m = 1 - xi
    den = s + (dk1 + dk - 2 * s) * xi * one_m
    log_deriv = (
        2 * torch.log(s) + torch.log(dk1 * xi * xi + 2 * s * xi * one_m + dk * one_m * one_m) - 2 * torch.log(den)
    )
    if not inverse:
        out = yk + hk * (s * xi * xi + dk * xi * one_m) / den
        ladj = log_deriv
    else:
        ladj = -log_deriv
    return torch.where(inside, out, x), torch.where(inside, ladj, torch.zeros_like(ladj))


class SplineCoupling(Transform):
    """Rational-quadratic spline coupling (NSF, sec. 3.2): x_b -> spline(x_b; theta(x_a, c)).

    Splits dim 1 into halves like :class:`~.transforms.AffineCoupling` with ``mask="half"``;
    ``net`` maps [B, n_a] (+ condition) to [B, n_b * (3K - 1)] spline parameters. Raw widths and
    heights are divided by sqrt(hidden) as in the paper's code, so early training is smooth.
    """

    def __init__(self, net: nn.Module, n: int, bins: int, bound: float, parity: int = 0, hidden: int = 1) -> None:
        super().__init__()
        self.net, self.bins, self.bound, self.parity = net, bins, float(bound), parity
        self.n_first = n - n // 2
        self.scale = 1.0 / math.sqrt(hidden)

    def _halves(self, x: Tensor) -> tuple[Tensor, Tensor]:
        a, b = x[:, : self.n_first], x[:, self.n_first :]
        return (a, b) if self.parity == 0 else (b, a)

    def _join(self, a: Tensor, b: Tensor) -> Tensor:
        return torch.cat([a, b] if self.parity == 0 else [b, a], 1)

    def _spline(self, x: Tensor, c: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        a, b = self._halves(x)
        k = self.bins
        p = self.net(a, c).view(b.shape[0], b.shape[1], 3 * k - 1)
        out, ladj = rq_spline(
            b, p[..., :k] * self.scale, p[..., k : 2 * k] * self.scale, p[..., 2 * k :], self.bound, inverse
        )
        return self._join(a, out), sum_except_batch(ladj)

    def forward(self, x: Tensor, c: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._spline(x, c, inverse=False)

    def inverse(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        return self._spline(z, c, inverse=True)[0]
