"""PixelCNN and gated PixelCNN: autoregressive image models with masked convolutions.

van den Oord, Kalchbrenner & Kavukcuoglu, "Pixel Recurrent Neural Networks", ICML 2016 (PixelCNN:
a 7x7 type-A masked convolution, then type-B 3x3 layers; 256-way softmax per sub-pixel; R -> G -> B
channel order within a pixel). van den Oord et al., "Conditional Image Generation with PixelCNN
Decoders", NeurIPS 2016 (gated PixelCNN: tanh * sigmoid units, a vertical stack that sees every
row above and a horizontal stack that sees the pixels to the left, which removes the blind spot of
stacked masked 3x3 convolutions; class-conditional biases).

    log p(x | c) = sum_{i, j, k} log p(x_{k,i,j} | x_{<(k,i,j)}, c)   (raster order, channels last)

The output is a categorical over the data's L levels for every sub-pixel (2 for binary shapes, 17
for digits, 256 for 8-bit images). Sampling is one network pass per sub-pixel (H * W * C passes):
64 on 8x8 digits, but 4,096 passes over 64x64 images for ``shapes`` (hours for a 64-image grid
on a CPU) -- the price of exact likelihood with a convolutional net; Ramachandran et al. 2017
("Fast Generation for Convolutional Autoregressive Models") cache it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.spec import DataSpec
from ..distributions import sample_categorical, to_levels
from ..nn import MaskedConv2d
from ..protocol import Capabilities, GenerativeModel


def gate(a: Tensor) -> Tensor:
    """tanh(a_1) * sigmoid(a_2) of the two channel halves of a [B, 2h, H, W] -> [B, h, H, W]."""
    a1, a2 = a.chunk(2, 1)
    return torch.tanh(a1) * torch.sigmoid(a2)


class GatedLayer(nn.Module):
    """One gated PixelCNN layer (van den Oord et al. 2016b, Fig. 2): (v, h) -> (v', h')."""

    def __init__(self, in_ch: int, ch: int, k: int, data_channels: int, first: bool, n_cond: int) -> None:
        super().__init__()
        self.v = MaskedConv2d(in_ch, 2 * ch, k, "V", data_channels)  # rows <= i; used shifted down
        self.h = MaskedConv2d(in_ch, 2 * ch, (1, k), "A" if first else "B", data_channels)  # left of j
        self.v2h = nn.Conv2d(2 * ch, 2 * ch, 1)  # rows < i only (after the shift): no channel mask
        self.h_out = MaskedConv2d(ch, ch, 1, "B", data_channels)
        self.cond = nn.Linear(n_cond, 4 * ch, bias=False) if n_cond else None
        self.residual = not first  # the first layer's input is the image itself

    def forward(self, v: Tensor, h: Tensor, c: Tensor | None) -> tuple[Tensor, Tensor]:
        v_pre = self.v(v)  # (B, 2ch, H, W), sees rows <= i
        down = F.pad(v_pre, (0, 0, 1, 0))[:, :, :-1]  # row i now holds row i-1: strictly above
        h_pre = self.h(h) + self.v2h(down)
        if c is not None:
            cv, ch_ = self.cond(c)[:, :, None, None].chunk(2, 1)  # per-class biases
            v_pre, h_pre = v_pre + cv, h_pre + ch_
        h_new = self.h_out(gate(h_pre))
        return gate(v_pre), (h + h_new if self.residual else h_new)


class PixelCNN(GenerativeModel):
    """PixelCNN (``gated=False``) or gated PixelCNN (``gated=True``) with categorical outputs.

    Args (the config; channels, size and levels come from ``spec``):
        gated: gated PixelCNN with vertical/horizontal stacks (no blind spot) or the original
            stack of residual masked convolutions (which has one).
        channels: hidden feature maps (rounded up to a multiple of the image channels so the
            R/G/B groups of the masks stay aligned).
        n_layers: masked layers after the first one.
        kernel_size: kernel of the hidden layers; ``first_kernel``: of the first (type A) layer.
        conditional: class-conditional biases in every layer (``batch["y"]``).
    """

    likelihood = "exact"
    capabilities = Capabilities(
        encode=True,
        conditional=True,
        figures=("samples",),
        notes="sampling: one network pass per sub-pixel; encode: mean causal feature map",
    )
    #: Training settings for a ~1-minute CPU run (applied by `genlab train` once the CLI reads them).
    train_defaults = {"steps": 1000, "batch_size": 64, "eval_every": 100}

    def __init__(
        self,
        spec: DataSpec,
        gated: bool = True,
        channels: int = 32,
        n_layers: int = 5,
        kernel_size: int = 3,
        first_kernel: int = 7,
        conditional: bool = False,
    ) -> None:
        super().__init__(spec)
        if len(spec.shape) != 3 or spec.kind not in ("image", "multimodal") or not spec.levels:
            raise ValueError(
                "PixelCNN models discrete images [C, H, W] with levels; "
                f"data set {spec.name!r} is {spec.kind} {spec.shape} with levels={spec.levels}"
            )
        if min(channels, n_layers + 1, kernel_size, first_kernel) < 1 or kernel_size % 2 == 0 or first_kernel % 2 == 0:
            raise ValueError(
                "need channels >= 1, n_layers >= 0 and odd kernels; "
                f"got {channels}, {n_layers}, {kernel_size}, {first_kernel}"
            )
        self._init_conditioning(conditional)
        self.gated, self.discrete = gated, True
        self.c_in, self.levels = spec.shape[0], int(spec.levels)
        ch = math.ceil(channels / self.c_in) * self.c_in
        if gated:
            self.layers = nn.ModuleList(
                GatedLayer(
                    self.c_in if i == 0 else ch,
                    ch,
                    first_kernel if i == 0 else kernel_size,
                    self.c_in,
                    i == 0,
                    self.c_dim,
                )
                for i in range(n_layers + 1)
            )
        else:
            self.first = MaskedConv2d(self.c_in, ch, first_kernel, "A", self.c_in)
            self.layers = nn.ModuleList(MaskedConv2d(ch, ch, kernel_size, "B", self.c_in) for _ in range(n_layers))
            self.cond = (
                nn.ModuleList(nn.Linear(self.c_dim, ch, bias=False) for _ in range(n_layers + 1))
                if conditional
                else None
            )
        # Output head: 1x1 type-B convolutions, channel o = level * C + colour (group o % C).
        self.head = nn.Sequential(
            nn.ReLU(),
            MaskedConv2d(ch, 2 * ch, 1, "B", self.c_in),
            nn.ReLU(),
            MaskedConv2d(2 * ch, self.levels * self.c_in, 1, "B", self.c_in),
        )

    def features(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """Final hidden feature map [B, ch, H, W]; position (i, j) sees only earlier sub-pixels."""
        c = self.cond_embedding(cond, x)
        x = x * 2 - 1  # centre the [0, 1] input
        if self.gated:
            v = h = x
            for layer in self.layers:
                v, h = layer(v, h, c)
            return h
        h = self.first(x)
        for i, layer in enumerate([None, *self.layers]):
            if layer is not None:
                h = h + layer(F.relu(h))  # residual masked 3x3 (type B)
            if c is not None:
                h = h + self.cond[i](c)[:, :, None, None]
        return h

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """Logits [B, L, C, H, W] of p(x_{k,i,j} | earlier sub-pixels); x [B, C, H, W] in [0, 1]."""
        out = self.head(self.features(x, cond))  # (B, L*C, H, W)
        return out.view(x.shape[0], self.levels, self.c_in, *x.shape[2:])

    # --- the protocol -------------------------------------------------------------------------
    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Mean NLL per *sub-pixel* in nats ("loss"); per example ("nll") and bits/dim logged."""
        x = batch["x"]
        nll = F.cross_entropy(self(x, self.condition(batch)), to_levels(x, self.levels))
        return {"loss": nll, "nll": nll.detach() * self.spec.dim, "bpd": nll.detach() / math.log(2)}

    def log_prob(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """[B] log p(x | c) in nats (a probability mass on the L levels)."""
        ce = F.cross_entropy(self(x, cond), to_levels(x, self.levels), reduction="none")  # (B, C, H, W)
        return -ce.flatten(1).sum(1)

    @torch.no_grad()
    def sample(self, n: int, cond: Tensor | None = None, *, generator: torch.Generator | None = None) -> Tensor:
        """[n, C, H, W] samples (floats level/(L-1)), one sub-pixel at a time in raster order."""
        c_in, hgt, wid = self.spec.shape
        w = self.head[-1].weight
        x = torch.zeros(n, c_in, hgt, wid, dtype=w.dtype, device=w.device)
        for i in range(hgt):
            for j in range(wid):
                for k in range(c_in):
                    # Rows below i cannot influence row i (every mask hides them), so run on rows <= i.
                    logits = self(x[:, :, : i + 1], cond)[:, :, k, i, j]  # (n, L)
                    x[:, k, i, j] = sample_categorical(logits, generator).to(x.dtype) / (self.levels - 1)
        return x

    def encode(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """[B, ch] spatial mean of the final feature map: a representation only (autoregressive
        models have no latent variable; these features are causal, i.e. each sees a prefix)."""
        return self.features(x, cond).mean((2, 3))
