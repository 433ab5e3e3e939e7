"""Shared network blocks: MLP and convolutional encoder/decoder sized from a data shape."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn


def activation(name: str) -> nn.Module:
    """An activation module by name (``relu``, ``gelu``, ``silu``, ``elu``, ``tanh``, ``leaky_relu``)."""
    table = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "elu": nn.ELU, "tanh": nn.Tanh, "leaky_relu": nn.LeakyReLU}
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


class ConvEncoder(nn.Module):
    """Strided conv net: images [B, C, H, W] -> [B, out_dim].

    Each stage halves H and W (4x4 kernels, stride 2) and doubles the channels from ``base``,
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
            nxt = base * 2**i
            layers += [nn.Conv2d(ch, nxt, 4, stride=2, padding=1), activation(act)]
            ch = nxt
        if n == 0:  # tiny images: one same-size conv so the encoder still sees local structure
            layers += [nn.Conv2d(ch, base, 3, padding=1), activation(act)]
            ch = base
        self.body = nn.Sequential(*layers)
        self.flat_shape = (ch, h // 2**n, w // 2**n)
        self.head = nn.Linear(ch * self.flat_shape[1] * self.flat_shape[2], out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x).flatten(1))


class ConvDecoder(nn.Module):
    """Mirror of :class:`ConvEncoder`: [B, in_dim] -> [B, out_channels, H, W] (unnormalised outputs)."""

    def __init__(self, in_dim: int, out_shape: Sequence[int], out_channels: int, base: int = 32, act: str = "relu") -> None:
        super().__init__()
        _, h, w = out_shape
        n = _num_downsamples(h, w)
        ch = base * 2 ** max(n - 1, 0)
        self.start = (ch, h // 2**n, w // 2**n)
        self.head = nn.Sequential(nn.Linear(in_dim, ch * self.start[1] * self.start[2]), activation(act))
        layers: list[nn.Module] = []
        for i in reversed(range(n)):
            nxt = base * 2 ** (i - 1) if i > 0 else base
            layers += [nn.ConvTranspose2d(ch, nxt, 4, stride=2, padding=1), activation(act)]
            ch = nxt
        layers.append(nn.Conv2d(ch, out_channels, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.body(self.head(z).view(-1, *self.start))


def one_hot(y: Tensor, num_classes: int, dtype: torch.dtype) -> Tensor:
    """Class ids [B] (long) -> one-hot [B, num_classes]; float conditions [B, K] pass through."""
    if y.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8):
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise ValueError(f"class id out of range: got {int(y.min())}..{int(y.max())}, expected 0..{num_classes - 1}")
        return nn.functional.one_hot(y.long(), num_classes).to(dtype)
    return y.to(dtype)
