"""Observation likelihoods p(x | params) for decoders, as pure functions plus a small chooser.

Each likelihood maps a decoder output of ``n_params`` channels per data dimension to a log-likelihood
in nats summed over every dimension of an example ([B]), a mean, and a sample. Discrete ones
(Bernoulli on binary data, categorical, discretized logistic) return a log probability *mass* on
the data's L levels; the Gaussian returns a log *density*: of the data on continuous data, and on
data with L levels of the uniformly dequantized data y = (level + u) / L, u ~ U[0, 1)^D
(:meth:`Likelihood.target`; Theis et al., "A note on the evaluation of generative models", ICLR
2016). A density at the grid points themselves bounds nothing (a narrow Gaussian on a level has
density >> L there, and bits/dim went negative); on the dequantized data, by Jensen's inequality,

    log P(level) = log E_u[p(y)] - D log L >= E_u[log p(y)] - D log L,

so log p(y) minus D log L (what :func:`genlab.metrics.likelihood.bits_per_dim` subtracts for a
density on data with levels) is a lower bound on the log mass, and bits/dim are never negative.

Discretized logistic and its mixture: Salimans et al., "PixelCNN++", ICLR 2017, eq. (2), with the
edge bins extended to -inf / +inf and a bin's mass replaced by density x width where the exact
difference of CDFs loses its float precision (the paper's "midpoint" case). The mixture is per
sub-pixel and independent across colour channels (PixelCNN++'s linear dependence of a pixel's G and
B means on its R and G is not used: PixelCNN's masks already condition G on R and B on R, G).
Also the one copy of the small helpers every family shares: ``LOG_2PI``, the diagonal-Gaussian
latent helpers :func:`gaussian_kl_standard` and :func:`diag_gaussian_log_prob`, :func:`to_levels` and
:func:`sample_categorical` (Holtzman et al., "The Curious Case of Neural Text Degeneration",
ICLR 2020, for top-p).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .data.spec import DataSpec

LIKELIHOODS = ("bernoulli", "gaussian", "logistic", "categorical", "logistic_mixture")
#: log(2 pi), the constant of every Gaussian log-density.
LOG_2PI = math.log(2 * math.pi)


def _sum_per_example(t: Tensor) -> Tensor:
    return t.flatten(1).sum(1)


def gaussian_kl_standard(mu: Tensor, logvar: Tensor) -> Tensor:
    """[...] KL(N(mu, diag exp(logvar)) || N(0, I)) in nats, summed over the last (latent) dimension."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)


def diag_gaussian_log_prob(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; mu, diag exp(logvar)) summed over the last dimension (shapes broadcast)."""
    return -0.5 * ((z - mu).pow(2) * torch.exp(-logvar) + logvar + LOG_2PI).sum(-1)


def to_levels(x: Tensor, levels: int) -> Tensor:
    """Floats level / (L - 1) in [0, 1], shape [...] -> level ids 0..L-1 (long, same shape),
    rounding to the nearest level and clamping. Callers that need float ids convert the result."""
    return torch.round(x * (levels - 1)).clamp_(0, levels - 1).long()


def uniform_dequantize(x: Tensor, levels: int) -> Tensor:
    """Floats level / (L - 1) [...] -> y = (level + u) / L with u ~ U[0, 1)^D: a uniform point of the
    level's bin of width 1/L in [0, 1) (same shape and dtype)."""
    return (to_levels(x, levels).to(x.dtype) + torch.rand_like(x)) / levels


def from_unit(y: Tensor, levels: int) -> Tensor:
    """Dequantized y in [0, 1] -> the data's floats level / (L - 1), level = clamp(floor(y L), 0, L-1)."""
    return torch.floor(y * levels).clamp_(0, levels - 1) / (levels - 1)


def sample_categorical(
    logits: Tensor,
    generator: torch.Generator | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> Tensor:
    """One draw per row of ``logits`` [B, V] -> ids [B] (long), after temperature, top-k and top-p.

    top-k keeps the k most likely ids; top-p keeps the smallest set of most likely ids whose mass
    reaches p (Holtzman et al. 2020). Exactly one uniform per row is drawn from ``generator``
    (inverse CDF), so two samplers that compute the same logits make the same choices; this is
    what lets cached and naive sampling be compared draw for draw. ``temperature=0`` is greedy.
    """
    u = 1.0 - torch.rand(logits.shape[0], 1, generator=generator, dtype=logits.dtype, device=logits.device)  # (0, 1]
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop_sorted = probs.cumsum(-1) - probs >= top_p  # the mass before this id already reaches p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)  # back to id order
        logits = logits.masked_fill(drop, float("-inf"))
    cdf = logits.softmax(-1).cumsum(-1)  # (B, V)
    return (cdf < u * cdf[:, -1:]).sum(-1).clamp_(max=logits.shape[-1] - 1)


@dataclass(frozen=True)
class Likelihood:
    """A decoder likelihood for data of shape ``(C, *rest)`` (images) or ``(D,)`` (vectors).

    The decoder emits ``[B, n_params * C, *rest]`` (images) or ``[B, n_params * D]`` (vectors);
    :meth:`split` reshapes that into ``[B, n_params, *data_shape]``.
    """

    kind: str
    levels: int | None = None
    #: components K of ``logistic_mixture`` (its parameters: K logits, K means, K log-scales).
    mixtures: int = 5

    @property
    def n_params(self) -> int:
        return {
            "bernoulli": 1,
            "gaussian": 2,
            "logistic": 2,
            "categorical": self.levels or 0,
            "logistic_mixture": 3 * self.mixtures,
        }[self.kind]

    @property
    def discrete(self) -> bool:
        """True when :meth:`log_prob` is a probability mass on the levels (not a density)."""
        return self.kind in ("bernoulli", "categorical", "logistic", "logistic_mixture")

    @property
    def dequantized(self) -> bool:
        """True for a density (Gaussian) on data with levels: it scores y = :meth:`target` (x), and
        :meth:`mean` and :meth:`sample` map back to the data's levels."""
        return not self.discrete and self.levels is not None

    def target(self, x: Tensor) -> Tensor:
        """What :meth:`log_prob` scores for data x [B, *data_shape]: x itself, or for a
        :attr:`dequantized` likelihood one uniform draw y = (level + u) / L in the level's bin."""
        return uniform_dequantize(x, self.levels) if self.dequantized else x  # type: ignore[arg-type]

    def split(self, out: Tensor, data_shape: tuple[int, ...]) -> Tensor:
        b = out.shape[0]
        if len(data_shape) == 1:
            return out.view(b, self.n_params, *data_shape)
        c = data_shape[0]
        return out.view(b, self.n_params, c, *data_shape[1:])

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        """[B] log p(x | params) in nats; ``params`` [B, n_params, *data_shape], ``x`` [B, *data_shape] in
        [0, 1]: the data, or for a :attr:`dequantized` likelihood ``target(data)``."""
        if self.kind == "bernoulli":
            return -_sum_per_example(F.binary_cross_entropy_with_logits(params[:, 0], x, reduction="none"))
        if self.kind == "gaussian":
            mean, log_scale = params[:, 0], params[:, 1].clamp(min=-7.0)
            z = (x - mean) * torch.exp(-log_scale)
            return _sum_per_example(-0.5 * z * z - log_scale - 0.5 * LOG_2PI)
        if self.kind == "categorical":
            ids = to_levels(x, self.levels)  # type: ignore[arg-type]
            return -_sum_per_example(F.cross_entropy(params, ids, reduction="none"))
        if self.kind == "logistic_mixture":
            lp = discretized_logistic_mixture_log_prob(*self.mixture_params(params), x, self.levels)  # type: ignore[arg-type]
            return _sum_per_example(lp)
        return _sum_per_example(discretized_logistic_log_prob(params[:, 0], params[:, 1], x, self.levels))  # type: ignore[arg-type]

    def mixture_params(self, params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``logistic_mixture`` parameters [B, 3K, *data_shape] -> (logits, means, log-scales), each
        [B, *data_shape, K] (components last, as :func:`discretized_logistic_mixture_log_prob` takes them)."""
        k = self.mixtures
        logits, means, log_scales = params[:, :k], params[:, k : 2 * k], params[:, 2 * k : 3 * k]
        return logits.movedim(1, -1), means.movedim(1, -1), log_scales.movedim(1, -1)

    def mean(self, params: Tensor) -> Tensor:
        """[B, *data_shape] expected value of x under p(x | params), in [0, 1]."""
        if self.kind == "logistic_mixture":
            return discretized_logistic_mixture_mean(*self.mixture_params(params), self.levels)  # type: ignore[arg-type]
        if self.kind == "bernoulli":
            return torch.sigmoid(params[:, 0])
        if self.kind == "categorical":
            grid = torch.linspace(0, 1, self.levels, dtype=params.dtype, device=params.device)  # type: ignore[arg-type]
            shape = [1, -1] + [1] * (params.dim() - 2)
            return (params.softmax(1) * grid.view(shape)).sum(1)
        if self.dequantized:  # bin centres (level + 1/2) / L -> level / (L - 1)
            lv = self.levels
            return ((params[:, 0] * lv - 0.5) / (lv - 1)).clamp(0, 1)  # type: ignore[operator]
        return params[:, 0].clamp(0, 1)

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """[B, *data_shape] one draw from p(x | params), on the data's levels where discrete."""
        if self.kind == "bernoulli":
            p = torch.sigmoid(params[:, 0])
            return (torch.rand(p.shape, generator=generator, dtype=p.dtype, device=p.device) < p).to(p.dtype)
        if self.kind == "categorical":
            probs = params.movedim(1, -1).softmax(-1)
            flat = probs.reshape(-1, probs.shape[-1])
            ids = torch.multinomial(flat, 1, generator=generator).view(probs.shape[:-1])
            return ids.to(params.dtype) / (self.levels - 1)  # type: ignore[operator]
        if self.kind == "logistic_mixture":
            return sample_discretized_logistic_mixture(*self.mixture_params(params), self.levels, generator)  # type: ignore[arg-type]
        mean, log_scale = params[:, 0], params[:, 1].clamp(min=-7.0)
        u = torch.rand(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device).clamp(1e-6, 1 - 1e-6)
        if self.kind == "gaussian":
            y = mean + torch.exp(log_scale) * torch.randn(
                mean.shape, generator=generator, dtype=mean.dtype, device=mean.device
            )
            return from_unit(y, self.levels) if self.dequantized else y  # type: ignore[arg-type]
        x = mean + torch.exp(log_scale) * (torch.log(u) - torch.log1p(-u))  # logistic inverse CDF
        return to_levels(x.clamp(0, 1), self.levels).to(mean.dtype) / (self.levels - 1)  # type: ignore[operator]


def _log_bin_masses(mean: Tensor, log_scale: Tensor, x: Tensor, levels: int) -> Tensor:
    """Elementwise log mass of the level x (floats level / (L-1)) under a logistic(mean, exp(log_scale))
    discretized to L bins; all three broadcast. Bin i covers [(i - 0.5)/(L-1), (i + 0.5)/(L-1)] and
    the edge bins extend to -inf/+inf, so the masses over the L levels sum to exactly 1."""
    log_scale = log_scale.clamp(min=-7.0)
    half = 0.5 / (levels - 1)
    inv_s = torch.exp(-log_scale)
    centered = x - mean
    a, b = inv_s * (centered - half), inv_s * (centered + half)  # bin edges in standard units
    # sigma(b) - sigma(a) without cancellation: on the left use log-CDFs, on the right the
    # log-survival functions (sigma(b) - sigma(a) = sigma(-a) - sigma(-b)); exact in both tails.
    left = centered <= 0
    hi = torch.where(left, F.logsigmoid(b), F.logsigmoid(-a))
    lo = torch.where(left, F.logsigmoid(a), F.logsigmoid(-b))
    gap = hi - lo  # log of the ratio of the two CDF (or survival) values, >= 0
    inner = hi + torch.log(-torch.expm1(-gap.clamp(min=1e-30)))
    # A bin narrow against the scale: hi and lo agree to nearly float precision and their difference
    # is mostly rounding (relative error ~ eps / gap, or 0 - 0). There use the density at the bin
    # centre times its width (PixelCNN++'s midpoint case), relative error ~ (width / scale)^2 / 24 ~
    # gap^2 / 6. The switch at gap = 2 eps^(1/3) balances the two: errors ~1e-5 in float32, ~2e-11 in
    # float64.
    m = inv_s * centered
    mid = F.logsigmoid(m) + F.logsigmoid(-m) - log_scale + math.log(2 * half)
    inner = torch.where(gap < 2 * torch.finfo(gap.dtype).eps ** (1 / 3), mid, inner)
    log_cdf_plus = F.logsigmoid(b)  # lowest bin: (-inf, edge]
    log_sf_min = F.logsigmoid(-a)  # highest bin: [edge, +inf)
    return torch.where(x < half, log_cdf_plus, torch.where(x > 1 - half, log_sf_min, inner))


def discretized_logistic_log_prob(mean: Tensor, log_scale: Tensor, x: Tensor, levels: int) -> Tensor:
    """Elementwise log P(x) in nats of a logistic discretized to ``levels`` bins on [0, 1] (PixelCNN++).

    ``mean``, ``log_scale`` and ``x`` (floats level / (L-1)) broadcast to a common shape, which is
    returned. Bin i covers [(i - 0.5)/(L-1), (i + 0.5)/(L-1)]; the edge bins extend to -inf/+inf so
    the masses over the L levels sum to exactly 1; the mid-bin density x width is used only where
    the difference of CDFs has lost its precision.
    """
    return _log_bin_masses(mean, log_scale, x, levels)


def discretized_logistic_mixture_log_prob(
    logits: Tensor, means: Tensor, log_scales: Tensor, x: Tensor, levels: int
) -> Tensor:
    """Elementwise log P(x) in nats under a mixture of K discretized logistics (PixelCNN++, eq. 2).

    ``logits``, ``means`` and ``log_scales`` are [..., K] (mixture weights softmax(logits), means in
    the data's [0, 1] units, log-scales clamped below at -7); ``x`` [...] holds floats level / (L-1).
    Returns [...]: log sum_k pi_k P_k(x), each P_k as in :func:`discretized_logistic_log_prob`.
    """
    comp = _log_bin_masses(means, log_scales, x.unsqueeze(-1), levels)  # [..., K]
    return torch.logsumexp(F.log_softmax(logits, -1) + comp, -1)


def discretized_logistic_mixture_log_pmf(logits: Tensor, means: Tensor, log_scales: Tensor, levels: int) -> Tensor:
    """The whole pmf: [..., K] parameters -> [..., L] log P(level) in nats for every level 0..L-1
    (they sum to 1). Memory L x K per element: for sampling one sub-pixel at a time and for tests."""
    grid = torch.arange(levels, dtype=means.dtype, device=means.device) / (levels - 1)  # [L]
    comp = _log_bin_masses(means.unsqueeze(-2), log_scales.unsqueeze(-2), grid[:, None], levels)  # [..., L, K]
    return torch.logsumexp(F.log_softmax(logits, -1).unsqueeze(-2) + comp, -1)


def discretized_logistic_mixture_mean(logits: Tensor, means: Tensor, log_scales: Tensor, levels: int) -> Tensor:
    """[...] expected value of x = level / (L-1) under the mixture with [..., K] parameters, exactly:
    E[level] = sum_{i=1}^{L-1} P(level >= i) = sum_i sigma((mean - (i - 1/2)/(L-1)) / s) per component.
    One pass per level boundary, so memory stays that of the parameters even for L = 256."""
    inv_s = torch.exp(-log_scales.clamp(min=-7.0))
    acc = torch.zeros_like(means)
    for i in range(1, levels):
        acc = acc + torch.sigmoid(inv_s * (means - (i - 0.5) / (levels - 1)))
    return (F.softmax(logits, -1) * acc).sum(-1) / (levels - 1)


def sample_discretized_logistic_mixture(
    logits: Tensor, means: Tensor, log_scales: Tensor, levels: int, generator: torch.Generator | None = None
) -> Tensor:
    """One exact draw per element: [..., K] parameters -> [...] floats level / (L-1).

    A component k ~ softmax(logits) (inverse CDF on one uniform), then y = mean_k + s_k logit(u) (the
    logistic's inverse CDF) and the level whose bin holds y: round(y (L-1)) clamped to 0..L-1, which
    is exactly the discretization whose edge bins reach -inf and +inf.
    """
    shape = means.shape[:-1]
    u_comp = torch.rand(shape, generator=generator, dtype=means.dtype, device=means.device).unsqueeze(-1)
    cdf = F.softmax(logits, -1).cumsum(-1)
    k = (cdf < u_comp * cdf[..., -1:]).sum(-1, keepdim=True).clamp_(max=logits.shape[-1] - 1)
    mean = means.gather(-1, k).squeeze(-1)
    log_scale = log_scales.clamp(min=-7.0).gather(-1, k).squeeze(-1)
    u = torch.rand(shape, generator=generator, dtype=means.dtype, device=means.device).clamp(1e-7, 1 - 1e-7)
    y = mean + torch.exp(log_scale) * (torch.log(u) - torch.log1p(-u))
    return to_levels(y.clamp(-1.0, 2.0), levels).to(means.dtype) / (levels - 1)


def choose_likelihood(spec: DataSpec, name: str = "auto", mixtures: int = 5) -> Likelihood:
    """Pick the decoder likelihood from the data spec (``name="auto"``) or by name.

    ``logistic_mixture`` (never chosen by auto) mixes ``mixtures`` discretized logistics per
    dimension; it needs data with levels.

    auto: binary data (L=2) -> Bernoulli; few levels (L <= 64, e.g. digits' 17) -> categorical;
    more levels (8-bit images) -> discretized logistic; continuous data -> Gaussian.
    """
    if name not in ("auto", *LIKELIHOODS):
        raise ValueError(f"unknown likelihood {name!r}; expected 'auto' or one of {', '.join(LIKELIHOODS)}")
    levels = spec.levels
    if name == "auto":
        if levels is None:
            name = "gaussian"
        elif levels == 2:
            name = "bernoulli"
        elif levels <= 64:
            name = "categorical"
        else:
            name = "logistic"
    if name in ("categorical", "logistic", "logistic_mixture") and levels is None:
        raise ValueError(
            f"likelihood {name!r} needs discrete data with a number of levels; data set {spec.name!r} is continuous"
        )
    if name == "categorical" and levels is not None and levels > 256:
        raise ValueError(f"categorical likelihood over {levels} levels is too large; use 'logistic'")
    if mixtures < 1:
        raise ValueError(f"need mixtures >= 1; got {mixtures}")
    return Likelihood(name, levels, mixtures)
