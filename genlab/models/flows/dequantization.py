"""Dequantization: turn discrete data (L levels) into continuous data on [0, 1]^D for a flow.

A flow is a density, so on data with L levels per dimension it is fit to y = (level + u) / L with
noise u in [0, 1)^D. For any q(u | x),

    log P(level) >= E_q[ log p_Y(y) - log q(u | x) ] - D log L                   (Theis et al. 2016;
                                                                                 Ho et al. 2019)
so -log p_Y(y) + log q(u | x) + D log L, in bits per dimension, bounds the discrete bits/dim from
above. ``uniform``: u ~ U[0, 1)^D, log q = 0 (RealNVP, Glow). ``variational`` (Flow++, Ho et al.,
"Flow++", ICML 2019, sec. 3.1): u = sigmoid(g(eps; x)) with eps ~ N(0, I) and g a small conditional
flow of affine couplings that sees the data, so the noise can follow the model and tighten the bound.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# from_unit and uniform_dequantize are shared with the VAE's and the GAN's dequantization.
from ...distributions import LOG_2PI, from_unit, uniform_dequantize  # noqa: F401
from .transforms import AffineCoupling, Chain, CondConvNet, CondMLP, Shape, sum_except_batch


class VariationalDequantizer(nn.Module):
    """q(u | x) as a conditional flow: eps ~ N(0, I) -> v = g(eps; x) -> u = sigmoid(v).

    log q(u | x) = log N(eps) - log|det dv/deps| - sum(log sigmoid(v) + log sigmoid(-v)).
    The coupling nets see the data (scaled to [-0.5, 0.5]) as context channels (images) or as
    extra inputs (vectors). ``n_couplings`` alternating couplings; checkerboard masks on images.
    """

    def __init__(self, shape: Shape, hidden: int = 32, n_couplings: int = 4) -> None:
        super().__init__()
        self.shape = tuple(shape)
        layers = []
        for i in range(n_couplings):
            if len(shape) == 3:
                ch, h, w = shape
                net = CondConvNet(ch, hidden, 2 * ch, ctx_channels=ch)
                layers.append(AffineCoupling(net, "checkerboard", ch, parity=i % 2, spatial=(h, w)))
            else:
                d = shape[0]
                if d < 2:  # nothing to couple: a per-dimension affine map of eps given x instead
                    layers.append(_ElementwiseAffine(d, hidden))
                    continue
                n_a = d - d // 2 if i % 2 == 0 else d // 2
                net = CondMLP(n_a, (hidden, hidden), 2 * (d - n_a), cond_dim=d)
                layers.append(AffineCoupling(net, "half", d, parity=i % 2))
        self.flow = Chain(layers)

    def forward(self, levels_x: Tensor, levels: int) -> tuple[Tensor, Tensor]:
        """levels_x: level ids as floats [B, *shape]. Returns y = (level + u) / L and log q(u | x) [B]."""
        ctx = levels_x / (levels - 1) - 0.5
        eps = torch.randn_like(levels_x)
        v, ladj = self.flow(eps, ctx)
        u = torch.sigmoid(v)
        log_q = (
            -0.5 * sum_except_batch(eps * eps + LOG_2PI) - ladj - sum_except_batch(F.logsigmoid(v) + F.logsigmoid(-v))
        )
        return (levels_x + u) / levels, log_q


class _ElementwiseAffine(AffineCoupling):
    """For 1-D data: v = eps * exp(log s(x)) + t(x) (a coupling whose conditioning part is empty)."""

    def __init__(self, d: int, hidden: int) -> None:
        super().__init__(CondMLP(0, (hidden,), 2 * d, cond_dim=d), "half", 2 * d)
        self.n_first = 0
