"""Variational autoencoders: VAE, beta-VAE (with KL warm-up) and class-conditional VAE.

Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014 (ELBO, reparameterization); Higgins
et al., "beta-VAE", ICLR 2017 (beta > 1); Burda et al., "Importance Weighted Autoencoders", ICLR
2016 (the IWAE-k bound used by ``log_prob``, and the training objective when ``iwae_k`` > 1); Sohn
et al., "Learning Structured Output Representation using Deep Conditional Generative Models",
NeurIPS 2015 (conditional VAE); Burgess et al., "Understanding disentangling in beta-VAE", 2018
(capacity annealing, eq. 8: loss = -E_q[log p(x|z)] + gamma |KL(q(z|x) || p(z)) - C|, C rising
linearly to C_max).

    log p(x) >= E_q[log p(x|z)] - KL(q(z|x) || N(0, I))                      (ELBO, k = 1)
    log p(x) >= E[log (1/k) sum_i p(x, z_i) / q(z_i|x)],  z_i ~ q(z|x)        (IWAE-k, increases with k)

A continuous decoder (``likelihood="gaussian"``) on data with L levels is a density, so it is fit
to and scores the uniformly dequantized data y = (level + u) / L, u ~ U[0, 1)^D, one draw per
example (Theis et al., "A note on the evaluation of generative models", ICLR 2016), exactly as the
flows do: then log P(level) >= E_u[bound on log p(y)] - D log L, and bits/dim (which subtract
D log L for a density on data with levels) bound the discrete bits/dim from above. A Gaussian
density at the grid points themselves has no such meaning: it reported negative bits/dim.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..data.spec import DataSpec
from ..distributions import LOG_2PI, choose_likelihood, diag_gaussian_log_prob, gaussian_kl_standard
from ..nn import MLP, ConvDecoder, ConvEncoder, activation
from ..protocol import Capabilities, GenerativeModel


class VAE(GenerativeModel):
    """Gaussian-latent VAE with an MLP or convolutional encoder/decoder.

    Args (the config; everything else is read from ``spec``):
        z_dim: latent size.
        hidden: MLP widths (encoder order; the decoder mirrors them). For ``arch="conv"`` the last
            width is the size of the conv feature vector.
        arch: ``"mlp"``, ``"conv"``, or ``"auto"`` (conv for images of side >= 16, MLP otherwise).
        channels: base channel count of the conv nets.
        likelihood: ``"auto"`` (from the spec: Bernoulli for binary data, categorical for few
            levels such as digits' 17, discretized logistic for 8-bit data, Gaussian for continuous
            data) or one of ``bernoulli``, ``gaussian``, ``logistic``, ``categorical``,
            ``logistic_mixture`` (PixelCNN++'s mixture of ``mixtures`` discretized logistics per
            dimension; data with levels). A Gaussian on data with levels models their dequantized
            form (see the module docstring).
        mixtures: components of the ``logistic_mixture`` likelihood (unused otherwise).
        beta: weight of the KL term (beta-VAE when > 1).
        warmup_steps: the KL weight rises linearly from 0 to ``beta`` over this many training steps.
        conditional: condition encoder and decoder on the class (``batch["y"]``).
        iwae_k: importance samples of the training objective and of ``log_prob``. 1: the ELBO with
            the analytic KL, exactly as always. k > 1: training maximizes the IWAE-k bound (Burda et
            al. 2016) on k reparameterized samples per example, log (1/k) sum_i w_i with
            log w_i = log p(x|z_i) + beta_t (log p(z_i) - log q(z_i|x)) -- beta_t = 1 once any
            warm-up is over, so the bound proper; costs k decoder passes per example.
        capacity_max: Burgess et al.'s capacity C_max in nats (0 = off, the plain (beta-)VAE). When on,
            the loss is -recon + beta |KL - C(step)| with the batch-mean KL, and ``beta`` plays the
            paper's gamma (1000 in its dSprites runs, with C_max = 25 nats).
        capacity_steps: C rises linearly from 0 to ``capacity_max`` over this many training steps
            (0: C = ``capacity_max`` from the start).
    """

    likelihood = "bound"
    capabilities = Capabilities(
        encode=True,
        decode=True,
        reconstruct=True,
        conditional=True,
        iwae=True,
        sample_options=("mean",),
        figures=("samples", "samples-mean", "reconstructions", "traversal", "interpolation"),
        notes="log_prob is the ELBO (iwae_k=1) or the IWAE-k bound; encode: posterior mean",
    )

    def __init__(
        self,
        spec: DataSpec,
        z_dim: int = 16,
        hidden: Sequence[int] = (256, 256),
        arch: str = "auto",
        channels: int = 32,
        likelihood: str = "auto",
        beta: float = 1.0,
        warmup_steps: int = 0,
        conditional: bool = False,
        iwae_k: int = 1,
        act: str = "relu",
        capacity_max: float = 0.0,
        capacity_steps: int = 0,
        mixtures: int = 5,
    ) -> None:
        super().__init__(spec)
        is_image = len(spec.shape) == 3
        if spec.kind not in ("image", "vector", "multimodal") or (spec.kind == "multimodal" and not is_image):
            raise ValueError(f"the VAE models images or vectors; data set {spec.name!r} has kind {spec.kind!r}")
        if z_dim < 1 or iwae_k < 1 or beta < 0 or warmup_steps < 0:
            raise ValueError(
                "need z_dim >= 1, iwae_k >= 1, beta >= 0, warmup_steps >= 0; "
                f"got {z_dim}, {iwae_k}, {beta}, {warmup_steps}"
            )
        if arch == "auto":
            arch = "conv" if is_image and min(spec.shape[1:]) >= 16 else "mlp"
        if arch not in ("mlp", "conv") or (arch == "conv" and not is_image):
            raise ValueError(f"arch must be 'mlp', 'conv' (images only) or 'auto'; got {arch!r} for {spec.kind} data")
        self._init_conditioning(conditional)
        if capacity_max < 0 or capacity_steps < 0:
            raise ValueError(f"need capacity_max >= 0 and capacity_steps >= 0; got {capacity_max}, {capacity_steps}")
        self.z_dim, self.beta, self.warmup_steps, self.iwae_k = z_dim, float(beta), warmup_steps, iwae_k
        self.capacity_max, self.capacity_steps = float(capacity_max), capacity_steps
        if iwae_k > 1 and capacity_max > 0:
            raise ValueError("IWAE training (iwae_k > 1) and capacity annealing (capacity_max > 0) do not combine")
        self.lik = choose_likelihood(spec, likelihood, mixtures)
        self.discrete = self.lik.discrete
        hidden = list(hidden)
        d, n_par = spec.dim, self.lik.n_params
        if arch == "mlp":
            # hidden=() gives a linear encoder and decoder (a linear-Gaussian model with known log p(x)).
            self.enc_body: nn.Module = (
                nn.Sequential(MLP(d, hidden[:-1], hidden[-1], act), activation(act)) if hidden else nn.Identity()
            )
            self.dec: nn.Module = MLP(z_dim + self.c_dim, hidden[::-1], d * n_par, act)
            feat = hidden[-1] if hidden else d
        else:
            if not hidden:
                raise ValueError("arch='conv' needs at least one hidden width (the conv feature size)")
            self.enc_body = nn.Sequential(ConvEncoder(spec.shape, hidden[-1], channels, act), activation(act))
            self.dec = ConvDecoder(z_dim + self.c_dim, spec.shape, spec.shape[0] * n_par, channels, act)
            feat = hidden[-1]
        self.arch = arch
        self.enc_head = nn.Linear(feat + self.c_dim, 2 * z_dim)
        # Counts training steps so that the KL warm-up survives checkpoint/resume exactly.
        self.register_buffer("train_step", torch.zeros((), dtype=torch.long))

    # --- networks ---------------------------------------------------------------------------
    def posterior(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of q(z | x[, c]), each [B, z_dim]."""
        h = self.enc_body(x.flatten(1) if self.arch == "mlp" else x)
        c = self.cond_embedding(cond, x)
        if c is not None:
            h = torch.cat([h, c], -1)
        mu, logvar = self.enc_head(h).chunk(2, -1)
        return mu, logvar.clamp(-12.0, 8.0)

    def decoder_params(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        """Likelihood parameters [B, n_params, *data_shape] of p(x | z[, c]); z is [B, z_dim]."""
        c = self.cond_embedding(cond, z)
        if c is not None:
            z = torch.cat([z, c], -1)
        return self.lik.split(self.dec(z), self.spec.shape)

    # --- the protocol -----------------------------------------------------------------------
    def warmup_factor(self) -> float:
        """The KL warm-up's factor on the KL weight at the current training step (1 without warm-up)."""
        if self.warmup_steps == 0:
            return 1.0
        return min(1.0, float(self.train_step) / self.warmup_steps)

    def current_beta(self) -> float:
        if self.warmup_steps == 0:
            return self.beta
        return self.beta * self.warmup_factor()

    def current_capacity(self) -> float:
        """Burgess et al.'s target KL C(step) in nats: linear from 0 to ``capacity_max``."""
        if self.capacity_steps == 0:
            return self.capacity_max
        return self.capacity_max * min(1.0, float(self.train_step) / self.capacity_steps)

    def elbo_terms(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """One reparameterized pass: (mu, logvar, z) each [B, z_dim], log p(x|z) [B] and the analytic
        KL(q(z|x) || N(0, I)) [B]. Changes no state (the step counter is advanced by ``loss``)."""
        x, cond = batch["x"], self.condition(batch)
        mu, logvar = self.posterior(x, cond)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)  # reparameterization
        rec = self.lik.log_prob(self.decoder_params(z, cond), self.lik.target(x))  # [B]
        kl = gaussian_kl_standard(mu, logvar)  # [B], analytic: lower variance than a sampled KL
        return mu, logvar, z, rec, kl

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The training objective: the negative (beta-)ELBO per example (``iwae_k`` = 1) or the negative
        IWAE-k bound (``iwae_k`` > 1, :meth:`iwae_loss`), averaged over the batch, in nats."""
        if self.iwae_k > 1:
            return self.iwae_loss(batch, self.iwae_k)
        return self._loss_with_latents(batch)[0]

    def log_weights(
        self, x: Tensor, cond: Tensor | None, k: int, kl_weight: float = 1.0, y: Tensor | None = None
    ) -> Tensor:
        """[k, B] log importance weights log p(x|z_i) + w (log p(z_i) - log q(z_i|x)), z_i ~ q(z|x)
        reparameterized (so differentiable), w = ``kl_weight``; with w = 1, logsumexp over i minus
        log k is the IWAE-k bound. The decoder scores ``y`` (default ``lik.target(x)``: x, or one
        dequantized draw per example). One decoder pass on all k * B samples."""
        mu, logvar = self.posterior(x, cond)
        y = self.lik.target(x) if y is None else y
        z = mu + torch.exp(0.5 * logvar) * torch.randn(k, *mu.shape, dtype=mu.dtype, device=mu.device)
        cr = None if cond is None else cond.unsqueeze(0).expand(k, *cond.shape).flatten(0, 1)
        xr = y.unsqueeze(0).expand(k, *y.shape).flatten(0, 1)
        log_px_z = self.lik.log_prob(self.decoder_params(z.flatten(0, 1), cr), xr).view(k, -1)
        log_pz = -0.5 * (z.pow(2) + LOG_2PI).sum(-1)
        return log_px_z + kl_weight * (log_pz - diag_gaussian_log_prob(z, mu, logvar))

    def iwae_loss(self, batch: dict[str, Tensor], k: int) -> dict[str, Tensor]:
        """Negative IWAE-k bound (Burda et al. 2016), batch mean in nats, as ``{"loss": ...}`` plus the
        logged bound ("iwae") and the mean single-sample ELBO of the same draws ("elbo"). Its
        gradient weights each sample by its normalized importance weight. Advances the step counter."""
        beta = self.current_beta()
        log_w = self.log_weights(batch["x"], self.condition(batch), k, beta)
        if self.training:
            self.train_step += 1
        bound = torch.logsumexp(log_w, 0) - math.log(k)
        out = {"loss": -bound.mean(), "iwae": bound.mean().detach(), "beta": torch.tensor(beta)}
        if beta == 1.0:  # the weights are then exactly the single-sample ELBO terms
            out["elbo"] = log_w.mean().detach()
        return out

    def _loss_with_latents(self, batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], Tensor]:
        """``loss(batch)`` and the posterior sample z it used (for subclasses that add terms on z)."""
        _, _, z, rec, kl = self.elbo_terms(batch)
        beta = self.current_beta()
        capacity = self.current_capacity() if self.capacity_max > 0 else None
        if self.training:
            self.train_step += 1
        if capacity is None:
            objective = (beta * kl - rec).mean()
        else:  # Burgess et al. 2018, eq. 8, on the batch-mean KL
            objective = -rec.mean() + beta * (kl.mean() - capacity).abs()
        out = {
            "loss": objective,
            "elbo": (rec - kl).mean().detach(),
            "recon_nll": -rec.mean().detach(),
            "kl": kl.mean().detach(),
            "beta": torch.tensor(beta),
        }
        if capacity is not None:
            out["capacity"] = torch.tensor(capacity)
        return out, z

    def log_prob(self, x: Tensor, cond: Tensor | None = None, k: int | None = None) -> Tensor:
        """[B] IWAE-k lower bound on log p(x[|c]) in nats (k = ``iwae_k`` by default; k=1 is the ELBO).
        A Gaussian decoder on data with levels: the bound on log p(y) of one dequantized y per
        example, shared by the k importance samples (a density; bits/dim add D log L)."""
        k = self.iwae_k if k is None else k
        y = self.lik.target(x)  # what the decoder scores: x, or x dequantized (one draw for all k)
        chunk = max(1, 4096 // max(1, x.shape[0]))  # bound memory at k * B decoder passes
        log_w = torch.cat([self.log_weights(x, cond, min(chunk, k - s), y=y) for s in range(0, k, chunk)], 0)
        return torch.logsumexp(log_w, 0) - math.log(k)

    @torch.no_grad()
    def sample(
        self, n: int, cond: Tensor | None = None, *, generator: torch.Generator | None = None, mean: bool = False
    ) -> Tensor:
        """[n, *data_shape] draws of x ~ p(x|z) p(z) (``mean=True``: the decoder mean E[x|z] instead)."""
        z = torch.randn(n, self.z_dim, generator=generator, device=self.device, dtype=self.enc_head.weight.dtype)
        return self.decode(z, cond, mean=mean, generator=generator)

    def encode(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """[B, z_dim] posterior mean E_q[z | x]."""
        return self.posterior(x, cond)[0]

    def decode(
        self, z: Tensor, cond: Tensor | None = None, *, mean: bool = True, generator: torch.Generator | None = None
    ) -> Tensor:
        """[B, *data_shape] decoder mean E[x | z] (``mean=True``) or one draw x ~ p(x | z), z [B, z_dim]."""
        params = self.decoder_params(z, cond)
        return self.lik.mean(params) if mean else self.lik.sample(params, generator)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """[B, *data_shape] decoder mean at the posterior mean: E[x | z = E_q[z|x]]."""
        return self.decode(self.posterior(x, cond)[0], cond)
