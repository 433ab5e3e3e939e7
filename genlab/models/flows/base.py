"""What every flow model shares: data handling (dequantization, logit), the N(0, I) base, and the
protocol methods. A family file (realnvp.py, glow.py, maf.py, nsf.py) only builds ``self.flow``.

Change of variables (Dinh et al. 2017, eq. 3): with z = f(x) a bijection and p_Z = N(0, I),

    log p(x) = log N(f(x); 0, I) + log|det df/dx|                       (nats, exact)

Data with L levels (digits: 17; 8-bit images: 256) are modelled as y = (level + u) / L on [0, 1]^D
(see dequantization.py), then mapped to R^D by a logit layer whose log-det is counted, so
``log_prob`` is a density of y and ``bits_per_dim(..., discrete=False)`` adds D ln L. Continuous
data are modelled directly (a leading ActNorm standardizes them).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ...data.spec import DataSpec
from ...distributions import LOG_2PI, to_levels
from ...protocol import Capabilities, GenerativeModel
from .dequantization import VariationalDequantizer, from_unit, uniform_dequantize
from .transforms import Chain, Logit, Shift, Transform

DEQUANTIZATIONS = ("auto", "uniform", "variational")


class FlowModel(GenerativeModel):
    """Base of the flow families: subclasses call ``super().__init__`` and then set ``self.flow``,
    a :class:`~.transforms.Transform` from the pre-processed data [B, *shape] to z [B, D].

    ``dequantization="auto"`` (Glow's and RealNVP's default) is ``"variational"`` on discrete data and
    ``"uniform"`` (no noise at all) on continuous data.

    ``log_prob(x)`` is the exact log-density (nats) of one dequantized version of x: with
    ``dequantization="uniform"`` y = (level + u) / L for one draw u ~ U[0, 1)^D (the standard
    number that RealNVP and Glow report); with ``"variational"`` u ~ q(u | x) and the value is
    log p_Y(y) - log q(u | x), one draw of the Flow++ bound. Either way bits/dim computed from it
    bound the discrete bits/dim from above, in expectation. ``log_prob(x, k=K)`` averages the
    weights p_Y(y) / q(u | x) of K noise draws inside the log (Burda et al.'s importance-weighted
    bound, 2016, with the noise as the latent variable): a tighter bound that reaches the discrete
    log-likelihood as K grows.
    """

    likelihood = "exact"
    capabilities = Capabilities(
        encode=True,
        decode=True,
        conditional=True,
        sample_options=("temperature",),
        figures=("samples", "density"),
        iwae=True,
        notes="encode: the exact latent z = f(x); decode is its inverse; "
        "log_prob(x, k=K): importance-weighted dequantization bound on discrete data",
    )

    def __init__(
        self,
        spec: DataSpec,
        *,
        conditional: bool = False,
        dequantization: str = "uniform",
        logit_alpha: float | None = 0.05,
        deq_hidden: int = 32,
    ) -> None:
        super().__init__(spec)
        if spec.kind not in ("image", "vector"):
            raise ValueError(
                f"{type(self).__name__} models images or vectors; data set {spec.name!r} has kind {spec.kind!r}"
            )
        if spec.dtype not in ("float32", "float64"):
            raise ValueError(f"{type(self).__name__} needs float data; data set {spec.name!r} has dtype {spec.dtype!r}")
        self._init_conditioning(conditional)
        if dequantization not in DEQUANTIZATIONS:
            raise ValueError(f"dequantization must be one of {', '.join(DEQUANTIZATIONS)}; got {dequantization!r}")
        self.discrete = False  # a density of dequantized data: bits/dim adds D ln L
        self.levels = spec.levels
        # Bounded data (discrete levels, or floats in [0, 1]) go through a logit (or Glow's shift).
        self.bounded = spec.levels is not None or spec.value_range is not None
        self.pre: Transform = (
            (Logit(logit_alpha) if logit_alpha is not None else Shift()) if self.bounded else Chain([])
        )
        if self.bounded and spec.value_range not in (None, (0.0, 1.0), (0, 1)):
            raise ValueError(
                f"{type(self).__name__} needs data in [0, 1] or unbounded; "
                f"data set {spec.name!r} has range {spec.value_range}"
            )
        if dequantization == "variational" and not spec.levels:
            raise ValueError(
                "dequantization='variational' applies to discrete data; "
                f"data set {spec.name!r} is continuous (no levels)"
            )
        if dequantization == "auto":  # variational where it applies: on digits it is 0.05-0.08 bits/dim better
            dequantization = "variational" if spec.levels else "uniform"
        self.dequantization = dequantization
        self.deq = (
            VariationalDequantizer(spec.shape, deq_hidden)
            if (dequantization == "variational" and spec.levels)
            else None
        )
        self.flow: Transform = Chain([])

    # --- helpers ------------------------------------------------------------------------------
    @property
    def _dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def base_log_prob(self, z: Tensor) -> Tensor:
        """[B] log N(z; 0, I), z [B, D]."""
        return -0.5 * (z * z).sum(1) - 0.5 * z.shape[1] * LOG_2PI

    def log_density(self, y: Tensor, c: Tensor | None = None) -> Tensor:
        """[B] exact log p_Y(y) in nats of (dequantized) data y [B, *shape]; c: one-hot or None."""
        if not self.bounded:  # continuous data: no pre-processing (skip its zero log-det)
            z, ladj = self.flow(y, c)
            return self.base_log_prob(z) + ladj
        s, ladj_pre = self.pre(y)
        z, ladj = self.flow(s, c)
        return self.base_log_prob(z) + ladj + ladj_pre

    def dequantize(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Data x [B, *shape] -> (y in [0, 1]^D, log q(u | x) [B] or None for uniform noise)."""
        if not self.levels:
            return x, None
        if self.deq is not None:
            return self.deq(to_levels(x, self.levels).to(x.dtype), self.levels)
        return uniform_dequantize(x, self.levels), None

    # --- the protocol -------------------------------------------------------------------------
    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        x = batch["x"]
        lp = self.log_prob(x, self.condition(batch))
        nll = -lp.mean()
        out = {"loss": nll}
        if self.levels:  # bits/dim of the dequantized data, the number papers report
            out["bpd"] = (nll.detach() / self.spec.dim + math.log(self.levels)) / math.log(2)
        return out

    def log_prob(self, x: Tensor, cond: Tensor | None = None, k: int = 1) -> Tensor:
        """[B] log-density in nats of x [B, *shape] (see the class docstring).

        Discrete data: log mean_k p_Y(y_k) / q(u_k | x) over ``k`` noise draws u_k ~ q (uniform:
        q = 1), y_k = (level + u_k) / L, a density of y. Its expectation minus D ln L is a lower
        bound on the discrete log P(x) that does not decrease with k and reaches log P(x) as
        k -> infinity (Burda et al. 2016, thm. 1, with the noise as the latent; ``bits_per_dim(...,
        discrete=False)`` subtracts the D ln L). Continuous data: the exact log-density; k is unused.
        """
        if k < 1:
            raise ValueError(f"k (noise draws) must be >= 1; got {k}")
        if k == 1 or not self.levels:
            y, log_q = self.dequantize(x)
            lp = self.log_density(y, self.cond_embedding(cond, x))
            return lp if log_q is None else lp - log_q
        b = x.shape[0]
        # k draws per example as one batch of k * B (rows j * B + i: draw j of example i).
        xs = x.repeat(k, *([1] * (x.dim() - 1)))
        cs = None if cond is None else cond.repeat(k, *([1] * (cond.dim() - 1)))
        log_w = self.log_prob(xs, cs).view(k, b)
        return torch.logsumexp(log_w, 0) - math.log(k)

    def encode(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """[B, D] latent z = f(x). Discrete data use the centre of each level's bin,
        y = (level + 1/2) / L, so ``decode(encode(x)) == x`` exactly."""
        y = (to_levels(x, self.levels).to(x.dtype) + 0.5) / self.levels if self.levels else x
        s, _ = self.pre(y)
        return self.flow(s, self.cond_embedding(cond, x))[0]

    def decode(
        self, z: Tensor, cond: Tensor | None = None, *, mean: bool = True, generator: torch.Generator | None = None
    ) -> Tensor:
        """[B, *shape] data for latents z [B, D] (x = f^{-1}(z)), in the data's space and range.
        A flow's decoder is deterministic: ``mean`` and ``generator`` change nothing."""
        y = self.pre.inverse(self.flow.inverse(z, self.cond_embedding(cond, z)))
        if self.levels:
            return from_unit(y, self.levels)
        if self.bounded:
            return y.clamp(0.0, 1.0)
        return y

    @torch.no_grad()
    def sample(
        self, n: int, cond: Tensor | None = None, *, generator: torch.Generator | None = None, temperature: float = 1.0
    ) -> Tensor:
        """[n, *shape] samples x = f^{-1}(z), z ~ N(0, T^2 I) (T = ``temperature``; T < 1 trades
        diversity for typicality, as in Glow, sec. 5)."""
        z = torch.randn(n, self.spec.dim, generator=generator, device=self.device, dtype=self._dtype) * temperature
        return self.decode(z, cond)
