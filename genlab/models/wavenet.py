"""WaveNet: dilated causal convolutions over raw audio with a 256-way mu-law output, and the queue
cache that makes sampling fast.

van den Oord et al., "WaveNet: A Generative Model for Raw Audio", arXiv:1609.03499, 2016 (gated
residual layers with dilations 1, 2, ..., 2^(n-1) repeated in stacks, skip connections, softmax
over 8-bit mu-law codes, global conditioning). Paine et al., "Fast Wavenet Generation
Algorithm", arXiv:1611.09482, 2016 (queue cache).

    log p(x | c) = sum_t log p(q(x_t) | q(x_<t), c),    q = 8-bit mu-law code (or the data's levels)

A layer with dilation d combines its input at t - d and at t. Naive sampling re-runs the net on
the last R samples (R = receptive field) for every new sample; the queue cache keeps, per layer,
the inputs of its last d steps in a ring buffer, so one new sample costs one matrix product per
layer: O(layers) per step instead of O(R * layers).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.audio import mu_law_decode, mu_law_encode
from ..data.spec import DataSpec
from ..distributions import sample_categorical
from ..nn import tanh
from ..protocol import Capabilities, GenerativeModel


class ResidualLayer(nn.Module):
    """Gated dilated causal convolution (kernel 2) with residual and skip 1x1 outputs."""

    def __init__(self, channels: int, skip_channels: int, dilation: int, n_cond: int, residual: bool = True) -> None:
        super().__init__()
        self.dilation = dilation
        self.conv = nn.Conv1d(channels, 2 * channels, 2, dilation=dilation)  # taps: t - d, t
        self.cond = nn.Linear(n_cond, 2 * channels, bias=False) if n_cond else None
        # The last layer's residual output feeds nothing (only its skip does): no parameters for it.
        self.res = nn.Conv1d(channels, channels, 1) if residual else None
        self.skip = nn.Conv1d(channels, skip_channels, 1)

    def _gate(self, a: Tensor, c: Tensor | None) -> Tensor:
        if c is not None:
            a = a + self.cond(c).unsqueeze(-1)  # global conditioning: a per-class bias
        a1, a2 = a.chunk(2, 1)
        return tanh(a1) * torch.sigmoid(a2)

    def forward(self, x: Tensor, c: Tensor | None) -> tuple[Tensor, Tensor]:
        """x [B, C, T] -> (residual output [B, C, T], skip [B, S, T]); causal by left padding."""
        z = self._gate(self.conv(F.pad(x, (self.dilation, 0))), c)
        return (x if self.res is None else x + self.res(z)), self.skip(z)

    def step_weights(self, c: Tensor | None) -> tuple[Tensor, Tensor]:
        """For :meth:`step`: both conv taps as one matrix [2C, 2C] (rows: input at t-d, then t),
        and the bias with the class term folded in (constant over time), [B or 1, 2C]."""
        w = self.conv.weight  # (2C, C, 2)
        bias = self.conv.bias[None] if c is None else self.conv.bias + self.cond(c)
        return torch.cat([w[:, :, 0], w[:, :, 1]], 1).T, bias

    def step(self, x: Tensor, queue: Tensor, t: int, weights: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """One time step: x [B, C] at time t -> (residual output [B, C], gated z [B, C]).
        ``queue`` [d, B, C] holds this layer's inputs at t-d .. t-1 as a ring buffer (zeros before
        the start, as the left padding of forward)."""
        slot = t % self.dilation
        both = torch.cat([queue[slot], x], 1)  # (B, 2C): inputs at t - d and t
        queue[slot] = x
        a1, a2 = torch.addmm(weights[1], both, weights[0]).chunk(2, 1)
        z = tanh(a1) * torch.sigmoid(a2)
        return (x if self.res is None else x + F.linear(z, self.res.weight[..., 0], self.res.bias)), z


class WaveNet(GenerativeModel):
    """WaveNet over 1-D signals: categorical over 8-bit mu-law codes (or the data's own levels).

    Args (the config; length and range come from ``spec``):
        channels: residual channels; ``skip_channels``: width of the skip sum and output head.
        layers_per_stack: dilations 1, 2, ..., 2^(n-1) in each stack; ``stacks``: repeats.
        mu_levels: mu-law codes for continuous signals in [-1, 1] (data with ``levels`` uses them).
        conditional: class-conditional (global conditioning on ``batch["y"]``).
    """

    likelihood = "exact"
    capabilities = Capabilities(
        encode=True,
        conditional=True,
        sample_options=("temperature", "length", "use_cache"),
        figures=("samples",),
        notes="log_prob of the quantized signal; queue-cache sampling; encode: mean skip features",
    )
    #: Training settings for a ~1-minute CPU run (applied by `genlab train` once the CLI reads them).
    train_defaults = {"steps": 300, "batch_size": 8, "eval_every": 100}

    def __init__(
        self,
        spec: DataSpec,
        channels: int = 32,
        skip_channels: int = 64,
        layers_per_stack: int = 8,
        stacks: int = 1,
        mu_levels: int = 256,
        conditional: bool = False,
    ) -> None:
        super().__init__(spec)
        lo, hi = spec.value_range or (None, None)
        if spec.kind not in ("audio", "vector") or len(spec.shape) != 1:
            raise ValueError(f"WaveNet models 1-D signals [T]; data set {spec.name!r} is {spec.kind} {spec.shape}")
        if not spec.levels and (lo is None or lo < -1 or hi > 1):
            raise ValueError(
                "WaveNet needs levels or a signal in [-1, 1] for mu-law coding; "
                f"{spec.name!r} has value_range={spec.value_range}"
            )
        if min(channels, skip_channels, layers_per_stack, stacks) < 1 or mu_levels < 2:
            raise ValueError(
                "need positive sizes and mu_levels >= 2; "
                f"got {channels}, {skip_channels}, {layers_per_stack}, {stacks}, {mu_levels}"
            )
        self._init_conditioning(conditional)
        self.discrete = True
        self.levels = int(spec.levels or mu_levels)
        self.embed = nn.Embedding(self.levels + 1, channels)  # id L = <start>: the input before x_0
        n = stacks * layers_per_stack
        self.layers = nn.ModuleList(
            ResidualLayer(channels, skip_channels, 2 ** (j % layers_per_stack), self.c_dim, residual=j < n - 1)
            for j in range(n)
        )
        self.out1 = nn.Linear(skip_channels, skip_channels)
        self.out2 = nn.Linear(skip_channels, self.levels)
        #: Input positions that influence one output (the naive sampler's window).
        self.receptive_field = 1 + sum(layer.dilation for layer in self.layers)

    # --- quantization -------------------------------------------------------------------------
    def quantize(self, x: Tensor) -> Tensor:
        """Signal [B, T] -> codes 0..L-1 (mu-law for continuous data, the grid for leveled data)."""
        if self.spec.levels:
            lo, hi = self.spec.value_range or (0.0, 1.0)
            return torch.round((x - lo) / (hi - lo) * (self.levels - 1)).clamp(0, self.levels - 1).long()
        return mu_law_encode(x, self.levels)

    def dequantize(self, q: Tensor, dtype: torch.dtype) -> Tensor:
        if self.spec.levels:
            lo, hi = self.spec.value_range or (0.0, 1.0)
            return lo + q.to(dtype) / (self.levels - 1) * (hi - lo)
        return mu_law_decode(q, self.levels, dtype)

    # --- the network --------------------------------------------------------------------------
    def _net(self, inp: Tensor, c: Tensor | None) -> tuple[Tensor, Tensor]:
        """Input ids [B, T] (shifted: <start>, q_0 .. q_{T-2}) -> (logits [B, T, L], skip sum [B, T, S])."""
        h = self.embed(inp).transpose(1, 2)  # (B, C, T): the one-hot input's 1x1 convolution
        skip = 0
        for layer in self.layers:
            h, s = layer(h, c)
            skip = skip + s
        skip = skip.transpose(1, 2)  # (B, T, S)
        return self.out2(F.relu(self.out1(F.relu(skip)))), skip

    def _inputs(self, q: Tensor) -> Tensor:
        start = torch.full_like(q[:, :1], self.levels)
        return torch.cat([start, q[:, :-1]], 1)  # position t sees q_<t only

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """Logits [B, T, L] of p(q_t | q_<t, c) for a signal x [B, T]."""
        c = self.cond_embedding(cond, self.embed.weight)
        return self._net(self._inputs(self.quantize(x)), c)[0]

    # --- the protocol -------------------------------------------------------------------------
    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Mean NLL per *sample* (time step) in nats ("loss"), and bits per sample ("bpd")."""
        x = batch["x"]
        nll = F.cross_entropy(self(x, self.condition(batch)).transpose(1, 2), self.quantize(x))
        return {"loss": nll, "bpd": nll.detach() / math.log(2)}

    def log_prob(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """[B] log P(codes of x | c) in nats: a mass on the L codes (bits/dim = bits per sample)."""
        logp = self(x, cond).log_softmax(-1)
        return logp.gather(-1, self.quantize(x)[..., None])[..., 0].sum(1)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        cond: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
        length: int | None = None,
        temperature: float = 1.0,
        use_cache: bool = True,
    ) -> Tensor:
        """[n, length] signals in the data's space (mu-law decoded), one sample at a time.

        ``use_cache=False`` re-runs the net on the last ``receptive_field`` inputs per step (the
        naive sampler); with the same ``generator`` state both give identical signals.
        """
        length = self.spec.shape[0] if length is None else length
        w = self.embed.weight
        c = self.cond_embedding(cond, w)
        q = torch.full((n, length + 1), self.levels, dtype=torch.long, device=w.device)  # <start>, q_0..
        queues = [torch.zeros(layer.dilation, n, w.shape[1], dtype=w.dtype, device=w.device) for layer in self.layers]
        weights = [layer.step_weights(c) for layer in self.layers]
        # The skip sum of all layers is one product with the skip weights side by side.
        skip_w = torch.cat([layer.skip.weight[..., 0] for layer in self.layers], 1)  # (S, layers * C)
        skip_b = sum(layer.skip.bias for layer in self.layers)
        for t in range(length):
            if use_cache:
                h, zs = self.embed(q[:, t]), []  # (n, C): the newest input only
                for layer, queue, wts in zip(self.layers, queues, weights):
                    h, z = layer.step(h, queue, t, wts)
                    zs.append(z)
                skip = F.linear(torch.cat(zs, 1), skip_w, skip_b)
                logits = self.out2(F.relu(self.out1(F.relu(skip))))
            else:
                logits = self._net(q[:, max(0, t + 1 - self.receptive_field) : t + 1], c)[0][:, -1]
            q[:, t + 1] = sample_categorical(logits, generator, temperature)
        return self.dequantize(q[:, 1:], w.dtype)

    def encode(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """[B, skip_channels] time average of the skip features: a representation only."""
        c = self.cond_embedding(cond, self.embed.weight)
        return self._net(self._inputs(self.quantize(x)), c)[1].mean(1)
