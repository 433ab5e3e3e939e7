"""Invertible transforms for normalizing flows: each maps x -> z with log|det dz/dx|, and back.

Every transform is a module with

    forward(x, c=None) -> (z, ladj)    z = f(x), ladj = log|det df/dx| per example, shape [B]
    inverse(z, c=None) -> x            x = f^{-1}(z)

where ``forward`` is the *normalizing* direction (data -> latent), so a flow's density is
log p(x) = log N(f(x); 0, I) + sum of the ladj of its transforms (Dinh et al. 2017, eq. 3). ``c`` is
an optional condition handed to the networks that parameterize a transform: a class one-hot
[B, K], a context vector [B, K'] or a context image [B, C', H, W] (variational dequantization).
Transforms without networks ignore it. Shapes: vectors [B, D] or images [B, C, H, W].

The mathematics (coupling, spline, logit, squeeze) lives in small pure functions; modules only hold
parameters and call them, as zuko does. References: Dinh et al., "Density estimation using Real
NVP", ICLR 2017 (affine coupling, checkerboard/channel masks, squeeze, multi-scale, logit);
Kingma & Dhariwal, "Glow", NeurIPS 2018 (actnorm, invertible 1x1 convolution, LU form);
Papamakarios et al., "Masked Autoregressive Flow", NeurIPS 2017; Germain et al., "MADE", ICML 2015;
Durkan et al., "Neural Spline Flows", NeurIPS 2019 (rational-quadratic splines, see splines.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ...nn import MaskedMLP, dropout, grad_in_layout, tanh

Shape = tuple[int, ...]


def sum_except_batch(t: Tensor) -> Tensor:
    """[B, ...] -> [B]."""
    return t.reshape(t.shape[0], -1).sum(1)


def soft_clamp(raw: Tensor, bound: float) -> Tensor:
    """bound * tanh(raw / bound): identity near 0, smoothly bounded by +-bound. Used on log-scales
    so one coupling can never scale by more than e^bound, which keeps early training finite."""
    return tanh(raw * (1.0 / bound)) * bound  # genlab.nn.tanh: 3-4x faster than torch.tanh on a CPU


class Transform(nn.Module):
    """Base class of a bijection with a tractable log-determinant (see the module docstring)."""

    def forward(self, x: Tensor, c: Tensor | None = None) -> tuple[Tensor, Tensor]:  # pragma: no cover
        raise NotImplementedError

    def inverse(self, z: Tensor, c: Tensor | None = None) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def out_shape(self, shape: Shape) -> Shape:
        """Per-example output shape for per-example input ``shape`` (only squeeze changes it)."""
        return shape


class Chain(Transform):
    """Composition f_K o ... o f_1: log-determinants add up (the chain rule)."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        super().__init__()
        self.transforms = nn.ModuleList(transforms)

    def forward(self, x: Tensor, c: Tensor | None = None) -> tuple[Tensor, Tensor]:
        total: Tensor | None = None
        for t in self.transforms:
            x, ladj = t(x, c)
            total = ladj if total is None else total + ladj
        return x, (x.new_zeros(x.shape[0]) if total is None else total)

    def inverse(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        for t in reversed(self.transforms):
            z = t.inverse(z, c)
        return z

    def out_shape(self, shape: Shape) -> Shape:
        for t in self.transforms:
            shape = t.out_shape(shape)
        return shape


# --- element-wise and linear layers -----------------------------------------------------------


class ActNorm(Transform):
    """Per-channel affine z = x * exp(log_scale) + bias with data-dependent init (Glow, sec. 3.1).

    On the first forward pass in training mode the parameters are set so that z has zero mean and
    unit variance per channel on that batch (averaged over ranks under DDP). The ``initialized``
    buffer is saved in checkpoints, so a resumed or loaded model never re-initializes.
    log|det| = (H * W) * sum(log_scale) for images, sum(log_scale) for vectors.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("initialized", torch.tensor(False))

    def _view(self, p: Tensor, x: Tensor) -> Tensor:
        return p.view(1, -1, *([1] * (x.dim() - 2)))

    @torch.no_grad()
    def _init(self, x: Tensor) -> None:
        dims = [0] + list(range(2, x.dim()))
        mean, sq = x.mean(dims), x.pow(2).mean(dims)
        if dist.is_available() and dist.is_initialized():  # every rank gets the same init
            stats = torch.stack([mean, sq])
            dist.all_reduce(stats)
            mean, sq = stats / dist.get_world_size()
        std = (sq - mean.pow(2)).clamp_min(0).sqrt()
        self.log_scale.copy_(-torch.log(std + 1e-6))
        self.bias.copy_(-mean * self.log_scale.exp())
        self.initialized.fill_(True)

    def forward(self, x: Tensor, c: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.training and not bool(self.initialized):
            self._init(x)
        z = torch.addcmul(self._view(self.bias, x), x, self._view(self.log_scale.exp(), x))
        pixels = math.prod(x.shape[2:])  # H * W for images, 1 for vectors
        return z, (self.log_scale.sum() * pixels).expand(x.shape[0])

    def inverse(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        return (z - self._view(self.bias, z)) * self._view(torch.exp(-self.log_scale), z)


class InvConv1x1(Transform):
    """Invertible 1x1 convolution z = W x at every pixel (Glow, sec. 3.2); on vectors a linear map.

    ``lu=False``: W is a free matrix (initialized as a random rotation), log|det| = HW log|det W|
    computed by ``slogdet`` (O(C^3)). ``lu=True``: W = P L (U + diag(sign * exp(log_s))) with a fixed
    permutation P, unit lower-triangular L and strictly upper U, so log|det| = HW sum(log_s) in O(C).
    P and the signs are buffers (saved in checkpoints, since they come from the random init).
    """

    def __init__(self, channels: int, lu: bool = True) -> None:
        super().__init__()
        self.lu = lu
        w = torch.linalg.qr(torch.randn(channels, channels))[0]  # random rotation: |det| = 1
        if not lu:
            self.weight = nn.Parameter(w)
            return
        p, lower, u = torch.linalg.lu(w)
        s = torch.diagonal(u)
        self.register_buffer("perm", p)
        self.register_buffer("sign_s", torch.sign(s))
        self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels), -1), persistent=False)
        self.register_buffer("eye", torch.eye(channels), persistent=False)
        self.lower = nn.Parameter(lower * self.lower_mask)
        self.upper = nn.Parameter(torch.triu(u, 1))
        self.log_s = nn.Parameter(torch.log(s.abs()))

    def weight_and_logdet(self) -> tuple[Tensor, Tensor]:
        """W [C, C] and log|det W| (a scalar)."""
        if not self.lu:
            return self.weight, torch.linalg.slogdet(self.weight)[1]
        lower = self.lower * self.lower_mask + self.eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign_s * self.log_s.exp())
        return self.perm @ lower @ upper, self.log_s.sum()

    @staticmethod
    def _mix(w: Tensor, x: Tensor) -> Tensor:
        if x.dim() == 2:
            return x @ w.T
        return F.conv2d(x, w.view(*w.shape, 1, 1))

    def forward(self, x: Tensor, c: Tensor | None = None) -> tuple[Tensor, Tensor]:
        w, logdet = self.weight_and_logdet()
        pixels = math.prod(x.shape[2:])
        return self._mix(w, x), (logdet * pixels).expand(x.shape[0])

    def inverse(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        w, _ = self.weight_and_logdet()
        return self._mix(torch.linalg.inv(w), z)


class Reverse(Transform):
    """Reverse the order of the features (dim 1); |det| = 1. Between MAF layers and couplings."""

    def forward(self, x: Tensor, c: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return x.flip(1), x.new_zeros(x.shape[0])

    def inverse(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        return z.flip(1)


class Flatten(Transform):
    """[B, *shape] -> [B, D] (|det| = 1), so vector flows (MAF, NSF) can model images."""

    def __init__(self, shape: Shape) -> None:
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: Tensor, c: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return x.reshape(x.shape[0], -1), x.new_zeros(x.shape[0])

    def inverse(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        return z.reshape(z.shape[0], *self.shape)

    def out_shape(self, shape: Shape) -> Shape:
        return (math.prod(shape),)


class Logit(Transform):
    """Pre-processing of data in [0, 1]: z = logit(alpha + (1 - 2 alpha) y) (RealNVP, sec. 4.1).

    The squeeze into [alpha, 1 - alpha] keeps z finite at y = 0 and y = 1; its log-det is counted,
    so the model stays an exact density of y on [0, 1]^D:
    log|det| = sum(log(1 - 2 alpha) - log p - log(1 - p)), p = alpha + (1 - 2 alpha) y.
    """

    def __init__(self, alpha: float = 0.05) -> None:
        super().__init__()
        if not 0.0 <= alpha < 0.5:
            raise ValueError(f"logit_alpha must be in [0, 0.5); got {alpha}")
        self.alpha = float(alpha)

    def forward(self, x: Tensor, c: Tensor | None = None) -> tuple[Tensor, Tensor]:
        p = x * (1 - 2 * self.alpha) + self.alpha
        z = torch.log(p) - torch.log1p(-p)
        # -log p - log(1 - p) = softplus(-z) + softplus(z): stable for |z| large.
        ladj = F.softplus(z) + F.softplus(-z) + math.log1p(-2 * self.alpha)
        return z, sum_except_batch(ladj)

    def inverse(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        return (torch.sigmoid(z) - self.alpha) / (1 - 2 * self.alpha)


class Shift(Transform):
    """Pre-processing y -> y - 0.5 (Glow's choice: no logit); |det| = 1."""

    def forward(self, x: Tensor, c: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return x - 0.5, x.new_zeros(x.shape[0])

    def inverse(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        return z + 0.5


# --- squeeze and multi-scale ------------------------------------------------------------------


def squeeze2x2(x: Tensor) -> Tensor:
    """[B, C, H, W] -> [B, 4C, H/2, W/2]; channel index (i * 2 + j) * C + c for sub-pixel (i, j)."""
    b, ch, h, w = x.shape
    x = x.view(b, ch, h // 2, 2, w // 2, 2).permute(0, 3, 5, 1, 2, 4)
    return x.reshape(b, 4 * ch, h // 2, w // 2)


def unsqueeze2x2(z: Tensor) -> Tensor:
    """Inverse of :func:`squeeze2x2`."""
    b, ch, h, w = z.shape
    z = z.view(b, 2, 2, ch // 4, h, w).permute(0, 3, 4, 1, 5, 2)
    return z.reshape(b, ch // 4, 2 * h, 2 * w)


class Squeeze(Transform):
    """Space-to-channel reshuffle (RealNVP, fig. 3); a permutation, so log|det| = 0."""

    def forward(self, x: Tensor, c: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return squeeze2x2(x), x.new_zeros(x.shape[0])

    def inverse(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        return unsqueeze2x2(z)

    def out_shape(self, shape: Shape) -> Shape:
        ch, h, w = shape
        if h % 2 or w % 2:
            raise ValueError(f"squeeze needs even height and width; got {h}x{w}")
        return (4 * ch, h // 2, w // 2)


class MultiScale(Transform):
    """Multi-scale architecture (RealNVP, sec. 3.6): after each level but the last, half of the
    channels are factored out as latent variables and the rest goes on to the next level.

    ``levels[i]`` maps [B, C_i, H_i, W_i] to [B, C'_i, H'_i, W'_i] (it may squeeze). The output is
    the flat latent [B, D]: the factored-out parts of every level, then the last level's output,
    each flattened. A learned prior on a factored-out half (Glow) is an affine coupling inside the
    level that transforms the second half conditioned on the first, so the base stays N(0, I).
    """

    def __init__(self, levels: Sequence[Transform], in_shape: Shape) -> None:
        super().__init__()
        self.levels = nn.ModuleList(levels)
        self.in_shape = tuple(in_shape)
        shape, self.z_shapes = self.in_shape, []
        for i, level in enumerate(self.levels):
            shape = level.out_shape(shape)
            if i < len(self.levels) - 1:
                keep = shape[0] - shape[0] // 2
                self.z_shapes.append((shape[0] - keep, *shape[1:]))
                shape = (keep, *shape[1:])
        self.z_shapes.append(shape)

    def forward(self, x: Tensor, c: Tensor | None = None) -> tuple[Tensor, Tensor]:
        zs: list[Tensor] = []
        total: Tensor | None = None
        for i, level in enumerate(self.levels):
            x, ladj = level(x, c)
            total = ladj if total is None else total + ladj
            if i < len(self.levels) - 1:
                keep = x.shape[1] - x.shape[1] // 2
                zs.append(x[:, keep:].reshape(x.shape[0], -1))
                x = x[:, :keep]
        zs.append(x.reshape(x.shape[0], -1))
        return torch.cat(zs, 1), total  # type: ignore[return-value]

    def inverse(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        sizes = [math.prod(s) for s in self.z_shapes]
        parts = [p.reshape(z.shape[0], *s) for p, s in zip(z.split(sizes, 1), self.z_shapes)]
        x = parts[-1]
        for i in reversed(range(len(self.levels))):
            if i < len(self.levels) - 1:
                x = torch.cat([x, parts[i]], 1)
            x = self.levels[i].inverse(x, c)
        return x

    def out_shape(self, shape: Shape) -> Shape:
        return (sum(math.prod(s) for s in self.z_shapes),)


# --- coupling networks and the affine coupling -------------------------------------------------


class CondMLP(nn.Module):
    """MLP ``in_dim (+ cond_dim) -> hidden... -> out_dim`` whose last layer starts at zero, so a
    coupling built on it starts as the identity. ``c`` [B, cond_dim] is concatenated to the input."""

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int, cond_dim: int = 0) -> None:
        super().__init__()
        dims = [in_dim + cond_dim, *hidden, out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        nn.init.zeros_(self.layers[-1].weight)
        nn.init.zeros_(self.layers[-1].bias)
        self.cond_dim = cond_dim

    def forward(self, h: Tensor, c: Tensor | None = None) -> Tensor:
        if self.cond_dim:
            h = torch.cat([h, c], 1)  # type: ignore[list-item]
        # F.linear/F.relu directly (not nn.Sequential): fewer Python calls per step on CPU.
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            h = F.linear(h, layer.weight, layer.bias)
            if i < last:
                h = F.relu(h)
        return h


class CondConvNet(nn.Module):
    """Coupling network for images (Glow's NN()): conv3x3 -> ReLU -> conv1x1 -> ReLU -> conv3x3,
    the last conv zero-initialized. A class condition [B, K] enters as a learned per-channel bias
    of the first hidden layer (equivalent to concatenating constant one-hot planes, but cheaper);
    a context image [B, ctx_channels, H, W] is concatenated to the input channels. ``dropout``
    acts on the last hidden layer in training mode only, so the flow stays an exact bijection
    at evaluation (during training each step sees a randomly thinned network)."""

    def __init__(
        self, in_ch: int, hidden: int, out_ch: int, cond_dim: int = 0, ctx_channels: int = 0, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.dropout = float(dropout)
        self.conv_in = nn.Conv2d(in_ch + ctx_channels, hidden, 3, padding=1)
        self.conv_mid = nn.Conv2d(hidden, hidden, 1)
        self.conv_out = nn.Conv2d(hidden, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        self.cond = nn.Linear(cond_dim, hidden, bias=False) if cond_dim else None
        self.ctx_channels = ctx_channels

    def forward(self, h: Tensor, c: Tensor | None = None) -> Tensor:
        if self.ctx_channels:
            h = torch.cat([h, c], 1)  # type: ignore[list-item]
        h = self.conv_in(h)
        if self.cond is not None:
            h = h + self.cond(c)[:, :, None, None]
        h = F.relu(self.conv_mid(F.relu(h)))
        if self.dropout and self.training:  # regularizes small data sets; identity at evaluation
            h = dropout(h, self.dropout)  # uniforms, not bernoulli_: ~5x cheaper on a CPU
        return grad_in_layout(self.conv_out(h))  # its (log s, t) halves' gradients arrive contiguous


def checkerboard(h: int, w: int, parity: int) -> Tensor:
    """[1, 1, H, W] float mask, 1 where (row + col) % 2 == parity."""
    ij = torch.arange(h)[:, None] + torch.arange(w)[None, :]
    return ((ij % 2) == parity).float().view(1, 1, h, w)


class AffineCoupling(Transform):
    """Affine coupling (RealNVP, sec. 3.3): split x into a conditioning part x_a and a transformed
    part x_b; (log s, t) = net(x_a, c); z_b = x_b * exp(log s) + t, z_a = x_a; log|det| = sum log s.

    ``mask="half"`` splits dim 1 (vector features or image channels) into the first ceil(n/2) and
    the rest; ``parity=1`` swaps the roles, so alternating parities transform every coordinate
    without a permutation. ``mask="checkerboard"`` (images) uses a spatial checkerboard: x_a is the
    masked image, the net sees all pixels of x_a, and only the other squares are transformed.
    ``net`` maps [B, n_a, ...] (+ condition) to [B, 2 * n_b, ...] (log-scale raw, shift).
    log s is soft-clamped to +-``max_log_scale``.
    """

    def __init__(
        self,
        net: nn.Module,
        mask: str,
        n: int,
        parity: int = 0,
        spatial: tuple[int, int] | None = None,
        max_log_scale: float = 3.0,
    ) -> None:
        super().__init__()
        if mask not in ("half", "checkerboard"):
            raise ValueError(f"coupling mask must be 'half' or 'checkerboard'; got {mask!r}")
        self.net, self.mask_kind, self.parity, self.bound = net, mask, parity, float(max_log_scale)
        self.n_first = n - n // 2  # size of the first half along dim 1
        if mask == "checkerboard":
            if spatial is None:
                raise ValueError("a checkerboard coupling needs the image size")
            self.register_buffer("mask", checkerboard(*spatial, parity), persistent=False)

    def _halves(self, x: Tensor) -> tuple[Tensor, Tensor]:
        a, b = x[:, : self.n_first], x[:, self.n_first :]
        return (a, b) if self.parity == 0 else (b, a)

    def _join(self, a: Tensor, b: Tensor) -> Tensor:
        return torch.cat([a, b] if self.parity == 0 else [b, a], 1)

    def _params(self, x_a: Tensor, c: Tensor | None) -> tuple[Tensor, Tensor]:
        raw, shift = self.net(x_a, c).chunk(2, 1)
        return soft_clamp(raw, self.bound), shift

    def forward(self, x: Tensor, c: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.mask_kind == "checkerboard":
            log_s, shift = self._params(x * self.mask, c)
            inv = 1.0 - self.mask
            log_s, shift = log_s * inv, shift * inv  # identity on the conditioning squares
            return torch.addcmul(shift, x, log_s.exp()), sum_except_batch(log_s)
        a, b = self._halves(x)
        log_s, shift = self._params(a, c)
        return self._join(a, torch.addcmul(shift, b, log_s.exp())), sum_except_batch(log_s)

    def inverse(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        if self.mask_kind == "checkerboard":
            log_s, shift = self._params(z * self.mask, c)
            inv = 1.0 - self.mask
            return (z - shift * inv) * torch.exp(-log_s * inv)
        a, b = self._halves(z)
        log_s, shift = self._params(a, c)
        return self._join(a, (b - shift) * torch.exp(-log_s))


# --- the masked autoregressive affine transform (MAF), on the MADE network of nn.py ------------


class MaskedAffineAutoregressive(Transform):
    """MAF layer (Papamakarios et al. 2017, sec. 3): z_d = x_d * exp(log s_d(x_<d)) + t_d(x_<d),
    with (log s, t) from one MADE pass, so the density direction x -> z costs one network
    evaluation; the Jacobian is triangular and log|det| = sum_d log s_d. The inverse (sampling)
    needs D sequential passes: after pass k every coordinate of degree <= k is exact.

    The MADE (:class:`~genlab.nn.MaskedMLP`, output [B, 2, D]) gives input i the degree of its
    position in ``order`` (1..D); hidden units cycle through 1..D-1 (deterministic, so every degree
    is present whenever hidden >= D - 1, and the masks follow from the config: not saved). The
    condition c [B, K] feeds every first-layer unit (unmasked). The last layer starts at zero, so
    the layer starts as the identity.
    """

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int],
        order: Tensor,
        cond_dim: int = 0,
        max_log_scale: float = 3.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.made = MaskedMLP(dim, hidden, 2, cond_dim, cond_layers="first", persistent_masks=False, dropout=dropout)
        deg_in = torch.empty(dim, dtype=torch.long)
        deg_in[order] = torch.arange(1, dim + 1)
        self.made.set_degrees(deg_in, [torch.arange(h) % max(1, dim - 1) + 1 for h in hidden])
        nn.init.zeros_(self.made.layers[-1].weight)
        nn.init.zeros_(self.made.layers[-1].bias)
        self.bound = float(max_log_scale)

    def _params(
        self, x: Tensor, c: Tensor | None, weights: list[Tensor] | None = None, dropout: bool | None = None
    ) -> tuple[Tensor, Tensor]:
        p = self.made(x, c, weights, dropout)  # [B, 2, D]
        return soft_clamp(p[:, 0], self.bound), p[:, 1]

    def forward(self, x: Tensor, c: Tensor | None = None) -> tuple[Tensor, Tensor]:
        log_s, shift = self._params(x, c)
        return torch.addcmul(shift, x, log_s.exp()), log_s.sum(1)

    def inverse(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        weights = self.made.masked_weights()
        x = torch.zeros_like(z)
        for _ in range(z.shape[1]):  # one network for all D passes: no dropout, even in training mode
            log_s, shift = self._params(x, c, weights, dropout=False)
            x = (z - shift) * torch.exp(-log_s)
        return x
