"""Masked Autoregressive Flow: a stack of MADE-parameterized affine autoregressive layers.

Papamakarios, Pavlakou & Murray, "Masked Autoregressive Flow for Density Estimation", NeurIPS 2017;
Germain, Gregor, Murray & Larochelle, "MADE: Masked Autoencoder for Distribution Estimation", ICML 2015.

    z_d = x_d * exp(log s_d(x_<d)) + t_d(x_<d),     log|det dz/dx| = sum_d log s_d(x_<d)

The density direction x -> z is one MADE pass per layer (fast training and evaluation); sampling
inverts each layer with D sequential passes. Layers alternate between the natural and the reversed
variable order, so every variable is conditioned on every other one somewhere in the stack.
Small images (up to 256 values, e.g. 8x8 digits) are flattened to vectors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ...data.spec import DataSpec
from .base import FlowModel
from .transforms import ActNorm, Chain, Flatten, MaskedAffineAutoregressive, Transform

#: Largest image (in pixels x channels) MAF accepts: sampling costs that many passes per layer.
MAX_IMAGE_DIM = 256


class MAF(FlowModel):
    """Masked Autoregressive Flow (Papamakarios et al. 2017) of MADE layers (Germain et al. 2015).

    Args (the config; sizes come from ``spec``):
        n_layers: MADE layers (MAF's "5 autoregressive layers" on tabular data).
        hidden: hidden widths of each MADE (>= D - 1 units per layer keeps every degree present).
        actnorm: a data-initialized ActNorm in front (standardizes continuous data).
        max_log_scale: bound of each layer's log-scale (soft clamp).
        conditional: condition every MADE on the class (one-hot of ``batch["y"]``).
        dequantization: ``"uniform"`` or ``"variational"`` (Flow++) noise for discrete data.
        logit_alpha: squeeze of the logit pre-processing of [0, 1] data; None: y - 1/2.
        deq_hidden: width of the variational dequantizer's nets.
        dropout: dropout on every MADE's hidden units in training (nflows' ``dropout_probability``);
            the density that is evaluated and sampled is the deterministic network's.
    """

    def __init__(
        self,
        spec: DataSpec,
        n_layers: int = 5,
        hidden: Sequence[int] = (256, 256),
        actnorm: bool = True,
        max_log_scale: float = 3.0,
        conditional: bool = False,
        dequantization: str = "uniform",
        logit_alpha: float | None = 0.05,
        deq_hidden: int = 32,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(
            spec, conditional=conditional, dequantization=dequantization, logit_alpha=logit_alpha, deq_hidden=deq_hidden
        )
        hidden = [int(h) for h in hidden]
        if n_layers < 1 or not hidden or min(hidden) < 1:
            raise ValueError(
                f"maf needs n_layers >= 1 and a non-empty list of positive hidden widths; got {n_layers}, {hidden}"
            )
        dim = spec.dim
        if len(spec.shape) > 1 and dim > MAX_IMAGE_DIM:
            raise ValueError(
                f"maf flattens images and samples with {dim} sequential passes per layer; "
                f"{spec.shape} has more than {MAX_IMAGE_DIM} pixels (use glow or realnvp)"
            )
        layers: list[Transform] = [Flatten(spec.shape)] if len(spec.shape) > 1 else []
        layers += [ActNorm(dim)] if actnorm else []
        forward_order = torch.arange(dim)
        for i in range(n_layers):
            order = forward_order if i % 2 == 0 else forward_order.flip(0)
            layers.append(MaskedAffineAutoregressive(dim, hidden, order, self.c_dim, max_log_scale, dropout))
        self.flow = Chain(layers)
