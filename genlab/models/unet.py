"""Noise-prediction networks of the diffusion models: a small U-Net for images and a residual MLP
for vectors, both conditioned on the diffusion time (and optionally a class vector).

The U-Net follows Ho et al., "Denoising Diffusion Probabilistic Models", NeurIPS 2020, App. B (itself
a PixelCNN++ / Wide-ResNet backbone): a sinusoidal embedding of t (Vaswani et al. 2017) through a
two-layer MLP, residual blocks (GroupNorm, SiLU, 3x3 conv) into which the time (+ class) embedding is
added, self-attention at chosen low resolutions and in the middle, strided-conv down-sampling,
nearest-neighbour up-sampling and a skip connection from every down-path block to the up path.
Down-sampling stops where a side would become odd or smaller than 4, so 4x4, 8x8, 28x28 (28 -> 14 ->
7), 32x32 and 64x64 inputs all work without padding. Both networks map x_t [B, *shape] and t [B]
(ints in 0..T-1) to an output of x's shape (eps or v, see :mod:`genlab.models.ddpm`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn import grad_in_layout


def timestep_embedding(t: Tensor, dim: int, dtype: torch.dtype) -> Tensor:
    """Sinusoidal embedding [B, dim] of (possibly fractional) times t [B]: sin/cos of t * 10000^(-2i/dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64, device=t.device) / half)
    args = t.double()[:, None] * freqs[None]
    emb = torch.cat([torch.sin(args), torch.cos(args)], -1)
    if dim % 2:  # odd width: one zero column keeps the requested size
        emb = F.pad(emb, (0, 1))
    return emb.to(dtype)


def norm(ch: int) -> nn.GroupNorm:
    """GroupNorm with the paper's 32 groups where each keeps >= 4 channels, else fewer (halving).

    Why not 32 at any width: the time (and class) embedding is added per channel just before a
    GroupNorm, and a group of one channel subtracts that constant out exactly -- at width 32 with 32
    groups a residual block cannot see t or the condition at all (as in any U-Net that keeps 32 groups
    at such small widths)."""
    groups = 32
    while groups > 1 and (ch % groups or ch // groups < 4):
        groups //= 2
    return nn.GroupNorm(groups, ch)


def zero(module: nn.Module) -> nn.Module:
    """Zero the weights and bias of ``module``: residual branches and the output start at 0 (Ho et al.'s init)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class TimeEmbedding(nn.Module):
    """t [B] (and a condition vector c [B, c_dim] or None: a one-hot class, or a caption vector) -> embedding [B, dim].

    The class (or caption) enters through a bias-free linear map, so the all-zero vector -- the "null" condition
    of classifier-free guidance -- embeds to exactly 0 and needs no parameter of its own."""

    def __init__(self, base: int, dim: int, c_dim: int, t_scale: float) -> None:
        super().__init__()
        self.base, self.t_scale = base, t_scale
        self.mlp = nn.Sequential(nn.Linear(base, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.cls = nn.Linear(c_dim, dim, bias=False) if c_dim else None

    def forward(self, t: Tensor, c: Tensor | None, dtype: torch.dtype) -> Tensor:
        # t scaled to the 0..1000 range the sinusoid frequencies were chosen for, whatever T is
        emb = self.mlp(timestep_embedding(t * self.t_scale, self.base, dtype))
        if self.cls is not None and c is not None:
            emb = emb + self.cls(c)
        return emb


class ResBlock(nn.Module):
    """x [B, c_in, H, W], emb [B, E] -> [B, c_out, H, W]: two GroupNorm-SiLU-conv layers with the
    embedding added between them, plus a (1x1-projected) skip.

    ``scale_shift``: the embedding instead scales and shifts the second layer's normalized features,
    GroupNorm(h) (1 + s) + b (AdaGN; Dhariwal & Nichol, "Diffusion Models Beat GANs on Image Synthesis",
    NeurIPS 2021, Sec. 3). Added before the norm, a per-channel offset survives only as its deviation
    from its group's mean, which is why :func:`norm` never makes a group of one channel."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float, scale_shift: bool = False) -> None:
        super().__init__()
        self.scale_shift = scale_shift
        self.in_layers = nn.Sequential(norm(c_in), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, padding=1))
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * c_out if scale_shift else c_out))
        self.out_layers = nn.Sequential(
            norm(c_out), nn.SiLU(), nn.Dropout(dropout), zero(nn.Conv2d(c_out, c_out, 3, padding=1))
        )
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h, e = self.in_layers(x), self.emb(emb)[:, :, None, None]
        if self.scale_shift:
            scale, shift = e.chunk(2, 1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            return self.skip(x) + self.out_layers[1:](h)
        return self.skip(x) + self.out_layers(h + e)


class Attention(nn.Module):
    """Single-head self-attention over the H*W positions of [B, C, H, W], residual."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.norm, self.qkv, self.proj = norm(ch), nn.Conv2d(ch, 3 * ch, 1), zero(nn.Conv2d(ch, ch, 1))

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).flatten(2).chunk(3, 1)  # each (B, C, HW)
        a = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(c), -1)  # (B, HW, HW)
        return x + self.proj((v @ a.transpose(1, 2)).view(b, c, h, w))


class Down(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        return self.conv(x)


class Up(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _apply(layers: nn.ModuleList, h: Tensor, emb: Tensor) -> Tensor:
    for layer in layers:
        h = layer(h, emb)
    return h


class UNet(nn.Module):
    """x_t [B, C, H, W], t [B] (and class vector c [B, c_dim]) -> [B, C, H, W].

    Level i of ``mult`` has ``channels * mult[i]`` feature maps and ``n_res`` residual blocks; after
    every level but the last the resolution halves while both sides stay even and >= 4 after
    halving. ``attention`` lists the resolutions (the smaller side) whose blocks get self-attention;
    the middle block always has it (the lowest resolution). ``scale_shift``: AdaGN residual blocks
    (see :class:`ResBlock`)."""

    def __init__(
        self,
        shape: Sequence[int],
        channels: int,
        mult: Sequence[int],
        n_res: int,
        attention: Sequence[int],
        emb_dim: int,
        c_dim: int,
        dropout: float,
        t_scale: float,
        scale_shift: bool = False,
    ) -> None:
        super().__init__()
        c_in, h, w = shape
        self.time = TimeEmbedding(channels, emb_dim, c_dim, t_scale)
        self.conv_in = nn.Conv2d(c_in, channels, 3, padding=1)
        self.down = nn.ModuleList()
        skips, ch, downsampled = [channels], channels, []
        for i, m in enumerate(mult):
            for _ in range(n_res):
                block = [ResBlock(ch, channels * m, emb_dim, dropout, scale_shift)]
                ch = channels * m
                if min(h, w) in attention:
                    block.append(Attention(ch))
                self.down.append(nn.ModuleList(block))
                skips.append(ch)
            halve = i < len(mult) - 1 and h % 2 == 0 and w % 2 == 0 and min(h, w) // 2 >= 4
            downsampled.append(halve)
            if halve:
                self.down.append(nn.ModuleList([Down(ch)]))
                skips.append(ch)
                h, w = h // 2, w // 2
        self.mid = nn.ModuleList(
            [
                ResBlock(ch, ch, emb_dim, dropout, scale_shift),
                Attention(ch),
                ResBlock(ch, ch, emb_dim, dropout, scale_shift),
            ]
        )
        self.up = nn.ModuleList()
        for i, m in reversed(list(enumerate(mult))):
            # one block per skip of this level: its res blocks', and conv_in's or the down-sampling's before it
            halved = i > 0 and downsampled[i - 1]
            n_blocks = n_res + (1 if i == 0 or halved else 0)
            for j in range(n_blocks):
                block = [ResBlock(ch + skips.pop(), channels * m, emb_dim, dropout, scale_shift)]
                ch = channels * m
                if min(h, w) in attention:
                    block.append(Attention(ch))
                if j == n_blocks - 1 and halved:  # undo the halving after level i - 1
                    block.append(Up(ch))
                    h, w = h * 2, w * 2
                self.up.append(nn.ModuleList(block))
        self.out = nn.Sequential(norm(ch), nn.SiLU(), zero(nn.Conv2d(ch, c_in, 3, padding=1)))

    def forward(self, x: Tensor, t: Tensor, c: Tensor | None = None) -> Tensor:
        emb = self.time(t, c, x.dtype)  # (B, E)
        h = self.conv_in(x)
        hs = [h]
        for block in self.down:
            h = _apply(block, h, emb)
            hs.append(h)
        h = _apply(self.mid, h, emb)
        for block in self.up:
            # cat's backward hands each input a strided slice of its gradient: in channels_last training
            # the convolutions' backward and the skip sums then mix layouts (grad_in_layout: dense again)
            h = _apply(block, torch.cat([grad_in_layout(h), grad_in_layout(hs.pop())], 1), emb)
        return self.out(h)


class VectorNet(nn.Module):
    """x_t [B, D], t [B] (and c [B, c_dim]) -> [B, D]: residual MLP blocks of ``width`` units, each
    with the time (+ class) embedding added after its first layer."""

    def __init__(
        self, dim: int, width: int, n_blocks: int, emb_dim: int, c_dim: int, dropout: float, t_scale: float
    ) -> None:
        super().__init__()
        self.time = TimeEmbedding(width, emb_dim, c_dim, t_scale)
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(
            nn.ModuleDict(
                {
                    "lin": nn.Sequential(nn.SiLU(), nn.Linear(width, width)),
                    "emb": nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, width)),
                    "out": nn.Sequential(nn.SiLU(), nn.Dropout(dropout), nn.Linear(width, width)),
                }
            )
            for _ in range(n_blocks)
        )
        self.out = nn.Sequential(nn.SiLU(), zero(nn.Linear(width, dim)))

    def forward(self, x: Tensor, t: Tensor, c: Tensor | None = None) -> Tensor:
        emb = self.time(t, c, x.dtype)
        h = self.inp(x)
        for b in self.blocks:
            h = h + b["out"](b["lin"](h) + b["emb"](emb))
        return self.out(h)
