"""Shared network blocks: MLP, convolutional encoder/decoder sized from a data shape, the class
one-hot, and the masked layers of autoregressive models (MaskedLinear, made_masks and the MADE
network :class:`MaskedMLP` used by both the MADE model and MAF's conditioner; MaskedConv2d for
PixelCNN)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn


def activation(name: str) -> nn.Module:
    """An activation module by name (``relu``, ``gelu``, ``silu``, ``elu``, ``tanh``, ``leaky_relu``)."""
    table = {
        "relu": nn.ReLU,
        "gelu": nn.GELU,
        "silu": nn.SiLU,
        "elu": nn.ELU,
        "tanh": nn.Tanh,
        "leaky_relu": nn.LeakyReLU,
    }
    if name not in table:
        raise ValueError(f"unknown activation {name!r}; expected one of {', '.join(table)}")
    return table[name]()


class MLP(nn.Sequential):
    """Fully connected net ``in_dim -> hidden... -> out_dim`` with an activation between layers.

    Input [B, in_dim], output [B, out_dim]; no activation after the last layer.
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int, act: str = "relu") -> None:
        layers: list[nn.Module] = []
        dims = [in_dim, *hidden]
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), activation(act)]
        layers.append(nn.Linear(dims[-1], out_dim))
        super().__init__(*layers)


def _num_downsamples(h: int, w: int, min_size: int = 4) -> int:
    # Halve while both sides stay even and above min_size, so the decoder can mirror exactly.
    n = 0
    while h % 2 == 0 and w % 2 == 0 and h > min_size and w > min_size:
        h, w, n = h // 2, w // 2, n + 1
    return n


def _stage_channels(base: int, i: int) -> int:
    # base, 2*base, 2*base, ...: the beta-VAE literature's 32-64-64-64 (Burgess et al. 2018) rather
    # than doubling at every stage, which costs 4x more per stage on 64x64 images for little gain.
    return base * (2 if i > 0 else 1)


class ConvEncoder(nn.Module):
    """Strided conv net: images [B, C, H, W] -> [B, out_dim].

    Each stage halves H and W (4x4 kernels, stride 2; channels ``base``, then ``2 * base``),
    until the side reaches 4 (or stops being even); a linear layer maps the flat feature map to
    ``out_dim``.
    """

    def __init__(self, in_shape: Sequence[int], out_dim: int, base: int = 32, act: str = "relu") -> None:
        super().__init__()
        c, h, w = in_shape
        n = _num_downsamples(h, w)
        layers: list[nn.Module] = []
        ch = c
        for i in range(n):
            nxt = _stage_channels(base, i)
            layers += [nn.Conv2d(ch, nxt, 4, stride=2, padding=1), activation(act)]
            ch = nxt
        if n == 0:  # tiny images: one same-size conv so the encoder still sees local structure
            layers += [nn.Conv2d(ch, base, 3, padding=1), activation(act)]
            ch = base
        self.body = nn.Sequential(*layers)
        self.flat_shape = (ch, h // 2**n, w // 2**n)
        self.head = nn.Linear(ch * self.flat_shape[1] * self.flat_shape[2], out_dim)

    def forward(self, x: Tensor) -> Tensor:
        # Channels-last activations: oneDNN's strided convolutions and their backward run ~25%
        # faster on CPU without the layout reorders (measured on the 64x64 shapes VAE).
        return self.head(self.body(x.contiguous(memory_format=torch.channels_last)).flatten(1))


class ConvDecoder(nn.Module):
    """Mirror of :class:`ConvEncoder`: [B, in_dim] -> [B, out_channels, H, W] (unnormalised outputs)."""

    def __init__(
        self, in_dim: int, out_shape: Sequence[int], out_channels: int, base: int = 32, act: str = "relu"
    ) -> None:
        super().__init__()
        _, h, w = out_shape
        n = _num_downsamples(h, w)
        ch = _stage_channels(base, n - 1) if n > 0 else base
        self.start = (ch, h // 2**n, w // 2**n)
        self.head = nn.Sequential(nn.Linear(in_dim, ch * self.start[1] * self.start[2]), activation(act))
        layers: list[nn.Module] = []
        for i in reversed(range(n)):
            nxt = _stage_channels(base, i - 1) if i > 0 else base
            layers += [nn.ConvTranspose2d(ch, nxt, 4, stride=2, padding=1), activation(act)]
            ch = nxt
        layers.append(nn.Conv2d(ch, out_channels, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        h = self.head(z).view(-1, *self.start).contiguous(memory_format=torch.channels_last)  # see ConvEncoder
        return self.body(h).contiguous()


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """Inverted dropout of ``x`` (any shape): each entry kept with probability 1 - p and scaled by
    1 / (1 - p), so E[dropout(x)] = x (Srivastava et al. 2014); identity when not ``training`` or
    p == 0. The same distribution as ``F.dropout`` (up to float32's 2^-24 grid of uniforms), drawn
    from torch's generator as uniforms: on a CPU ``bernoulli_`` costs ~5x as much (measured
    2026-12-02, one thread: 41 ms vs 8 ms for 1.6M entries; a third of a multi-scale RealNVP
    step on 28x28 images). The masks differ from ``F.dropout``'s for the same seed."""
    if not training or p == 0.0:
        return x
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout rate p={p}: expected a number in [0, 1)")
    # torch.rand in logical order (not rand_like, which fills in memory order): the same mask for
    # the same seed whatever x's memory layout (channels_last training, tested).
    # Then in x's layout (empty_like keeps it): an elementwise op on a channels_last and a contiguous
    # tensor takes a strided path that, with its backward, cost 4-6x the op on one layout (measured
    # 2026-12-02: the mul and the ReLU backward after it were 30% of a 64x64 Glow step).
    u = torch.rand(x.shape, dtype=x.dtype, device=x.device)
    keep = torch.empty_like(x).copy_(u >= p).mul_(1.0 / (1.0 - p))
    return x * keep


class _Tanh(torch.autograd.Function):
    """tanh through the logistic sigmoid; backward by aten's fused ``tanh_backward`` (differentiable,
    so a gradient penalty's double backward works)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        y = torch.sigmoid(x * 2).mul_(2).sub_(1)  # tanh(x) = 2 sigmoid(2x) - 1
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (y,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(grad, y)


def tanh(x: Tensor) -> Tensor:
    """tanh(x) as 2 sigmoid(2x) - 1, any shape. On this project's CPU build of torch (2.13.0, AVX-512)
    ``torch.tanh`` runs about 10x slower than ``torch.sigmoid`` (measured 2026-12-02, one thread, 2M
    floats: 4.9 ms vs 0.48 ms; float64 16.5 vs 1.3 ms), so this form is 3-4x faster forward; the
    values agree with ``torch.tanh`` to 2e-7 in float32 (1 at +inf, -1 at -inf, NaN stays NaN).
    Used by the gated units of PixelCNN and WaveNet and the flows' soft clamp."""
    return _Tanh.apply(x)


def memory_layout(x: Tensor) -> torch.memory_format:
    """``torch.channels_last`` for a 4-D tensor stored that way (channels_last training), else
    ``torch.contiguous_format`` (also for a tensor that fits both, e.g. one channel)."""
    cl = torch.channels_last
    stored_cl = x.dim() == 4 and x.is_contiguous(memory_format=cl) and not x.is_contiguous()
    return cl if stored_cl else torch.contiguous_format


class _GradInLayout(torch.autograd.Function):
    """Identity forward; backward hands the gradient on in the forward tensor's memory layout."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.layout = memory_layout(x)
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad.contiguous(memory_format=ctx.layout)


def grad_in_layout(x: Tensor) -> Tensor:
    """``x`` itself, but its gradient comes back in x's memory layout. Split outputs (a coupling
    net's (log s, t) halves, taken with ``chunk``) get contiguous gradients from autograd's slice
    backward; in channels_last training every backward op of the net above them then mixes layouts,
    each 4-10x slower (measured 2026-12-02: a ReLU backward 23.6 vs 2.3 ms). One copy of the small
    output gradient here keeps them on one layout."""
    return _GradInLayout.apply(x)


def one_hot(y: Tensor, num_classes: int, dtype: torch.dtype) -> Tensor:
    """Class ids [B] (long) -> one-hot [B, num_classes]; float conditions [B, K] pass through."""
    if y.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8):
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise ValueError(
                f"class id out of range: got {int(y.min())}..{int(y.max())}, expected 0..{num_classes - 1}"
            )
        return nn.functional.one_hot(y.long(), num_classes).to(dtype)
    return y.to(dtype)


# --- masked layers for autoregressive models (MADE, MAF, PixelCNN) -------------------------------


class MaskedLinear(nn.Linear):
    """``nn.Linear`` whose weight is multiplied elementwise by a fixed 0/1 ``mask`` [out, in].

    Germain et al., "MADE: Masked Autoencoder for Distribution Estimation", ICML 2015 (also the
    conditioner of MAF/IAF). The mask is a buffer saved with the weights, so a model built with
    random degrees still round-trips; :meth:`set_mask` swaps it (order-agnostic training).
    Input [..., in_features] -> output [..., out_features].
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        mask: Tensor | None = None,
        bias: bool = True,
        persistent_mask: bool = True,
    ) -> None:
        super().__init__(in_features, out_features, bias)
        # persistent_mask=False: the mask follows from the config alone and is not saved.
        self.register_buffer("mask", torch.ones(out_features, in_features), persistent=persistent_mask)
        if mask is not None:
            self.set_mask(mask)

    def set_mask(self, mask: Tensor) -> None:
        if mask.shape != self.weight.shape:
            raise ValueError(f"mask has shape {tuple(mask.shape)}; expected {tuple(self.weight.shape)} (out, in)")
        self.mask.copy_(mask.to(self.mask.dtype))

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.linear(x, self.weight * self.mask, self.bias)


def made_masks(in_degrees: Tensor, hidden_degrees: Sequence[Tensor], out_degrees: Tensor) -> list[Tensor]:
    """The MADE connectivity masks [out, in] of an MLP, from the degree of every unit.

    Degrees are integers: inputs carry their position 1..D in the autoregressive order, hidden
    units a degree k in [1, D-1] ("this unit may see inputs of degree <= k"), outputs the degree
    of the input they predict. Hidden layers use ``>=`` and the output layer ``>`` (strict), so
    output d depends only on inputs of degree < d (Germain et al. 2015, eqs. 12-13).
    """
    degs = [in_degrees, *hidden_degrees]
    masks = [(d_out[:, None] >= d_in[None, :]).float() for d_in, d_out in zip(degs[:-1], degs[1:])]
    masks.append((out_degrees[:, None] > degs[-1][None, :]).float())
    return masks


class MaskedMLP(nn.Module):
    """The MADE network (Germain et al., ICML 2015): an MLP ``D -> hidden... -> n_params * D`` whose
    masks (:func:`made_masks`) make output (p, d) depend only on inputs that come before d.

    The degrees are set by the caller with :meth:`set_degrees` (a fixed order for MAF's conditioner;
    random orders and connectivities for order-agnostic MADE). Output unit ``p * D + d`` predicts
    parameter p of dimension d, so :meth:`forward` returns [B, n_params, D]. A condition c [B, K]
    enters unmasked, through a bias-free linear map, into the first layer (``cond_layers="first"``)
    or into every layer including the output (``"all"``). ReLU between layers; ``dropout`` on the
    hidden units in training mode (elementwise, so the masks' autoregressive structure holds).
    """

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int],
        n_params: int,
        cond_dim: int = 0,
        cond_layers: str = "first",
        persistent_masks: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if cond_layers not in ("first", "all"):
            raise ValueError(f"cond_layers must be 'first' or 'all'; got {cond_layers!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout}")
        self.dim, self.n_params, self.dropout = dim, n_params, float(dropout)
        dims = [dim, *hidden, n_params * dim]
        self.layers = nn.ModuleList(
            MaskedLinear(a, b, persistent_mask=persistent_masks) for a, b in zip(dims[:-1], dims[1:])
        )
        widths = dims[1:] if cond_layers == "all" else dims[1:2]
        self.cond = nn.ModuleList(nn.Linear(cond_dim, b, bias=False) for b in widths) if cond_dim else None

    def set_degrees(self, in_degrees: Tensor, hidden_degrees: Sequence[Tensor]) -> None:
        """Masks from the degree (1..D) of every input and of every hidden unit (one tensor per
        hidden layer); output unit ``p * D + d`` gets the degree of input d."""
        masks = made_masks(in_degrees, hidden_degrees, in_degrees.repeat(self.n_params))
        for layer, m in zip(self.layers, masks):
            layer.set_mask(m)

    def masked_weights(self) -> list[Tensor]:
        """The weights with their masks applied; compute once and pass to :meth:`forward` when the
        same masks serve many passes (a sequential inverse or sampler)."""
        return [layer.weight * layer.mask for layer in self.layers]

    def cond_term(self, i: int, c: Tensor | None) -> Tensor | None:
        """The condition's contribution [B, width_i] to the pre-activation of layer i, or None."""
        if c is None or self.cond is None or i >= len(self.cond):
            return None
        return self.cond[i](c)

    def hidden_states(
        self, x: Tensor, c: Tensor | None = None, weights: list[Tensor] | None = None, dropout: bool | None = None
    ) -> list[Tensor]:
        """Activations [B, H_i] of every hidden layer for inputs x [B, D] (after the ReLU and, if
        ``dropout`` (default: in training mode), the dropout)."""
        weights = self.masked_weights() if weights is None else weights
        drop = self.dropout > 0 and (self.training if dropout is None else dropout)
        h, hs = x, []
        for i, layer in enumerate(self.layers[:-1]):
            a = nn.functional.linear(h, weights[i], layer.bias)
            ct = self.cond_term(i, c)
            h = torch.relu(a if ct is None else a + ct)
            if drop:
                h = nn.functional.dropout(h, self.dropout, True)
            hs.append(h)
        return hs

    def forward(
        self, x: Tensor, c: Tensor | None = None, weights: list[Tensor] | None = None, dropout: bool | None = None
    ) -> Tensor:
        """[B, n_params, D] outputs for inputs x [B, D]; c: the condition [B, K] or None; ``dropout``
        on the hidden units (default: in training mode)."""
        weights = self.masked_weights() if weights is None else weights
        last = len(self.layers) - 1
        h = self.hidden_states(x, c, weights, dropout)[-1] if last else x
        out = nn.functional.linear(h, weights[last], self.layers[last].bias)
        ct = self.cond_term(last, c)
        if ct is not None:
            out = out + ct
        return out.view(x.shape[0], self.n_params, self.dim)


class MaskedConv2d(nn.Conv2d):
    """``nn.Conv2d`` with a causal mask on its kernel, for raster-scan image models (PixelCNN).

    van den Oord et al., "Pixel Recurrent Neural Networks", ICML 2016, Fig. 2 and Sec. 3.4. With
    kernel centre (cy, cx): rows above the centre are visible; in the centre row the columns left
    of the centre are visible; at the centre pixel itself, channel groups follow the R -> G -> B
    order: mask ``"A"`` (first layer) lets output group g see input groups < g, mask ``"B"``
    (later layers) groups <= g. Mask ``"V"`` is the vertical stack of the gated PixelCNN: every row
    up to and including the centre row (its output is shifted down one row before use).

    Channel j of a tensor with ``data_channels`` = C belongs to group ``j % C``; so with hidden
    widths that are multiples of C, a ``chunk(2)`` of the channels keeps groups aligned. Odd kernel
    sides are padded to keep H and W; a ``(1, k)`` kernel is a horizontal-stack convolution.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        mask_type: str = "B",
        data_channels: int = 1,
        bias: bool = True,
    ) -> None:
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        if mask_type not in ("A", "B", "V"):
            raise ValueError(f"mask_type must be 'A', 'B' or 'V'; got {mask_type!r}")
        if kh % 2 == 0 or kw % 2 == 0:
            raise ValueError(f"MaskedConv2d needs odd kernel sides; got {(kh, kw)}")
        super().__init__(in_channels, out_channels, (kh, kw), padding=(kh // 2, kw // 2), bias=bias)
        cy, cx = kh // 2, kw // 2
        mask = torch.zeros(out_channels, in_channels, kh, kw)
        mask[:, :, :cy, :] = 1  # rows above
        if mask_type == "V":
            mask[:, :, cy, :] = 1  # the whole centre row; the caller shifts the output down
        else:
            mask[:, :, cy, :cx] = 1  # left of the centre
            g_out = torch.arange(out_channels)[:, None] % data_channels
            g_in = torch.arange(in_channels)[None, :] % data_channels
            mask[:, :, cy, cx] = (g_out > g_in) if mask_type == "A" else (g_out >= g_in)
        self.mask_type = mask_type
        self.register_buffer("mask", mask)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.weight * self.mask, self.bias)
