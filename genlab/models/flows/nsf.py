"""Neural Spline Flow with rational-quadratic spline couplings (RQ-NSF (C)).

Durkan, Bekasov, Murray & Papamakarios, "Neural Spline Flows", NeurIPS 2019.

Each step: an invertible linear map in LU form (mixes the variables; log|det| = sum log|s|), then
a coupling whose transformed half goes through monotonic rational-quadratic splines with ``bins``
bins on [-bound, bound] (identity outside), parameterized by an MLP of the other half. A spline is
far more flexible per layer than an affine map, so a few steps fit multimodal densities.
"""

from __future__ import annotations

from ...data.spec import DataSpec
from .base import FlowModel
from .splines import SplineCoupling
from .transforms import ActNorm, Chain, CondMLP, InvConv1x1, Transform


class NSF(FlowModel):
    """Neural Spline Flow (Durkan et al. 2019): rational-quadratic spline couplings with LU mixing.

    Args (the config; sizes come from ``spec``):
        n_couplings: spline couplings.
        hidden: width of the coupling MLPs; depth: their hidden layers.
        bins: spline bins K (3K - 1 parameters per transformed variable).
        bound: the splines act on [-bound, bound] (identity tails outside).
        lu: an LU-parameterized linear layer before every coupling (else alternating halves).
        actnorm: a data-initialized ActNorm in front (standardizes continuous data).
        conditional: condition every coupling net on the class (one-hot of ``batch["y"]``).
        dequantization: ``"uniform"`` or ``"variational"`` (Flow++) noise for discrete data.
        logit_alpha: squeeze of the logit pre-processing of [0, 1] data; None: y - 1/2.
        deq_hidden: width of the variational dequantizer's nets.
    """

    def __init__(
        self,
        spec: DataSpec,
        n_couplings: int = 6,
        hidden: int = 128,
        depth: int = 2,
        bins: int = 8,
        bound: float = 4.0,
        lu: bool = True,
        actnorm: bool = True,
        conditional: bool = False,
        dequantization: str = "uniform",
        logit_alpha: float | None = 0.05,
        deq_hidden: int = 32,
    ) -> None:
        super().__init__(
            spec, conditional=conditional, dequantization=dequantization, logit_alpha=logit_alpha, deq_hidden=deq_hidden
        )
        if len(spec.shape) != 1:
            raise ValueError(
                "nsf models vectors [D]; "
                f"got shape {spec.shape} (use glow or realnvp for images, or maf on flattened pixels)"
            )
        dim = spec.shape[0]
        if dim < 2:
            raise ValueError(f"spline couplings need at least 2 dimensions; got {dim} (use 'maf' for 1-D data)")
        if min(n_couplings, hidden, depth) < 1 or bins < 2 or bound <= 0:
            raise ValueError(
                "need n_couplings, hidden, depth >= 1, bins >= 2, bound > 0; "
                f"got {n_couplings}, {hidden}, {depth}, {bins}, {bound}"
            )
        layers: list[Transform] = [ActNorm(dim)] if actnorm else []
        for i in range(n_couplings):
            parity = 0 if lu else i % 2
            layers += [InvConv1x1(dim, lu=True)] if lu else []
            n_a = dim - dim // 2 if parity == 0 else dim // 2
            net = CondMLP(n_a, [hidden] * depth, (dim - n_a) * (3 * bins - 1), self.c_dim)
            layers.append(SplineCoupling(net, dim, bins, bound, parity, hidden))
        self.flow = Chain(layers)
