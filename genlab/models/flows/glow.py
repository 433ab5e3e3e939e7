"""Glow: a multi-scale flow of steps (actnorm, invertible 1x1 convolution, affine coupling).

Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions", NeurIPS 2018.

    one step of flow:  actnorm      y = s * x + b                 log|det| = HW sum log|s|
                       1x1 conv     y = W x at every pixel        log|det| = HW log|det W| (= HW sum log|s_LU|)
                       coupling     y_b = x_b * s(x_a) + t(x_a)   log|det| = sum log s

``n_levels`` levels, each: squeeze, ``steps`` steps of flow, then (all but the last) factor out
half of the channels. The factored-out half gets a learned prior N(mu(h), sigma(h)) given the kept
half h (sec. 3.3, ``learn_split_prior``), written as one more affine coupling so the base stays
N(0, I). On vectors the same steps run without squeeze and split (a linear LU mixing between
couplings, as in Glow's and NSF's tabular experiments).
"""

from __future__ import annotations

from ...data.spec import DataSpec
from .base import FlowModel
from .transforms import ActNorm, AffineCoupling, Chain, CondConvNet, CondMLP, InvConv1x1, MultiScale, Squeeze, Transform


class Glow(FlowModel):
    """Glow (Kingma & Dhariwal 2018): actnorm + invertible 1x1 conv + affine coupling, multi-scale.

    Args (the config; sizes come from ``spec``):
        n_levels: levels (squeezes); image sides must divide by 2^n_levels.
        steps: steps of flow per level.
        hidden: conv channels of the coupling nets (MLP width on vectors).
        lu: LU-parameterized 1x1 convolutions (False: a free matrix with slogdet).
        learn_split_prior: learned conditional prior on factored-out channels (else N(0, I)).
        max_log_scale: bound of each coupling's log-scale (soft clamp).
        dropout: dropout rate in the last hidden layer of every coupling net, in training only.
            The default suits small data sets: on digits' 1,000 training images it takes the
            held-out bits/dim from 2.19 (no dropout) to 2.09 (uniform dequantization); use 0 on
            large data sets.
        conditional: condition every coupling net on the class (one-hot of ``batch["y"]``).
        dequantization: ``"uniform"`` or ``"variational"`` (Flow++) noise for discrete data;
            ``"auto"``: variational on discrete data (digits, test bits/dim after the default 2,000
            steps, seeds 0 and 1: 2.039, 2.033 vs uniform 2.094, 2.102), uniform on continuous data.
        logit_alpha: squeeze of the logit pre-processing of [0, 1] data (RealNVP's); None: y - 1/2
            as in Glow (on digits the logit gives 0.3 bits/dim better held-out likelihood).
        deq_hidden: width of the variational dequantizer's nets.
    """

    #: NHWC training (``TrainConfig.channels_last``): measured 2026-12-02 on an idle 2-core CPU, one
    #: thread (``benchmarks/conv_speed.py --channels-last``), 1.09x faster on 28x28, 1.37x on 64x64 per step.
    train_defaults = {"channels_last": True}

    def __init__(
        self,
        spec: DataSpec,
        n_levels: int = 2,
        steps: int = 8,
        hidden: int = 64,
        lu: bool = True,
        learn_split_prior: bool = True,
        max_log_scale: float = 3.0,
        dropout: float = 0.7,
        conditional: bool = False,
        dequantization: str = "auto",
        logit_alpha: float | None = 0.05,
        deq_hidden: int = 32,
    ) -> None:
        super().__init__(
            spec, conditional=conditional, dequantization=dequantization, logit_alpha=logit_alpha, deq_hidden=deq_hidden
        )
        if min(n_levels, steps, hidden) < 1:
            raise ValueError(f"n_levels, steps and hidden must be >= 1; got {n_levels}, {steps}, {hidden}")
        self.lu, self.bound = lu, max_log_scale
        if len(spec.shape) == 1:
            dim = spec.shape[0]
            if dim < 2:
                raise ValueError(f"glow needs at least 2 dimensions; got {dim} (use 'maf' for 1-D data)")
            if n_levels != 2:
                raise ValueError(
                    f"n_levels={n_levels} applies to images (multi-scale); "
                    f"a glow on vectors is one stack of {steps} steps"
                )
            self.flow = Chain(
                [
                    t
                    for _ in range(steps)
                    for t in self._step(dim, lambda a, b: CondMLP(a, (hidden, hidden), b, self.c_dim))
                ]
            )
            return
        if len(spec.shape) != 3:
            raise ValueError(f"glow models images [C, H, W] or vectors [D]; got shape {spec.shape}")
        ch, h, w = spec.shape
        f = 2**n_levels
        if h % f or w % f:
            raise ValueError(
                f"glow with n_levels={n_levels} needs image sides divisible by {f}; got {h}x{w} (lower n_levels)"
            )

        def conv(a: int, b: int) -> CondConvNet:
            return CondConvNet(a, hidden, b, self.c_dim, dropout=dropout)

        levels = []
        for lvl in range(n_levels):
            ch *= 4
            layers: list[Transform] = [Squeeze()]
            for _ in range(steps):
                layers += self._step(ch, conv)
            if lvl < n_levels - 1:
                if learn_split_prior:  # z_out ~ N(mu(z_keep), sigma(z_keep)) as a coupling on the split
                    layers.append(
                        AffineCoupling(conv(ch - ch // 2, 2 * (ch // 2)), "half", ch, 0, max_log_scale=max_log_scale)
                    )
                ch -= ch // 2
            levels.append(Chain(layers))
        self.flow = MultiScale(levels, spec.shape)

    def _step(self, ch: int, make_net) -> list[Transform]:  # type: ignore[no-untyped-def]
        """actnorm -> invertible 1x1 conv -> affine coupling (second half given the first)."""
        n_a = ch - ch // 2
        return [
            ActNorm(ch),
            InvConv1x1(ch, self.lu),
            AffineCoupling(make_net(n_a, 2 * (ch - n_a)), "half", ch, 0, max_log_scale=self.bound),
        ]
