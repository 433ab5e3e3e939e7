"""Multimodal VAEs: one latent space shared by images, captions, audio and vectors.

Wu & Goodman, "Multimodal Generative Models for Scalable Weakly-Supervised Learning", NeurIPS 2018
(``mvae``); Shi, Siddharth, Paige & Torr, "Variational Mixture-of-Experts Autoencoders for Multi-Modal
Deep Generative Models", NeurIPS 2019 (``mmvae``); Sutter, Daunhawer & Vogt, "Generalized Multimodal
ELBO", ICLR 2021 (``mopoe``); Palumbo, Daunhawer & Vogt, "MMVAE+: Enhancing the Generative Quality of
Multimodal VAEs without Compromises", ICLR 2023 (``mmvaeplus``); Tucker et al., "Doubly Reparameterized
Gradient Estimators for Monte Carlo Objectives", ICLR 2019 (DReG, ``dreg=True``).

Generative model (all four): z ~ N(0, I) and each modality m of M independently x_m ~ p(x_m | z)
(MMVAE+: p(x_m | z, w_m) with a private w_m ~ N(0, I)). Each modality's encoder is a Gaussian expert
q_m(z | x_m) = N(mu_m, diag sigma_m^2); the families differ in how the experts of a subset S are
fused into q_S(z | x_S) and in the training objective L (maximized; beta weights the latent terms):

  mvae   q_S = N(0, I) prod_{m in S} q_m = N(mu, 1/T), T = 1 + sum_m 1/sigma_m^2, mu = sum_m mu_m/sigma_m^2 / T
         L = sum_{S in {M, {m} for each m, `subsets` random S}} E_{q_S}[sum_{m in S} log p(x_m|z)] - beta KL(q_S||p)
         (KL terms analytic here and in mopoe; one reparameterized draw per term)
  mmvae  q_S = (1/|S|) sum_{m in S} q_m                                        (mixture of experts)
         L = (1/|M|) sum_m E_{z_1..k ~ q_m}[log (1/k) sum_i p(z_i) prod_n p(x_n|z_i) / q_M(z_i|X)]
         (stratified IWAE: every expert's draws are scored by every decoder; k = 1 is the stratified ELBO)
  mopoe  q_S = (1/(2^|S| - 1)) sum_{A subset S, A != {}} prod_{m in A} q_m   (no prior expert)
         L = (1/(2^|M| - 1)) sum_A E_{q_A}[sum_n log p(x_n|z)] - beta KL(q_A||p)  (mean KL >= the mixture's KL)
  mmvaeplus  z as in mmvae; private w_m ~ q_m(w_m|x_m) from the same encoder, and
         L = (1/|M|) sum_m E[log (1/k) sum_i p(z_i) p(w_i) p(x_m|z_i,w_i) prod_{n!=m} p(x_n|z_i,v_ni)
                                            / (q_M(z_i|X) q_m(w_i|x_m))]
         where v_n ~ r_n = N(0, diag s_n^2) is the auxiliary prior (scale learned, mean variance 1 as in the
         authors' code) that fills the target's private latent in cross-modal reconstructions, so that z
         alone must carry what the modalities share; translating and sampling draw w_n from p(w_n) = N(0, I).
         (Gaussian priors and posteriors throughout, where the paper uses Laplace distributions.)

``log_prob(x_S)`` is the IWAE-k bound log p(x_S) >= E log (1/k) sum_i p(z_i) prod_{m in S} p(x_m|z_i) /
q_S(z_i|x_S) (private latents importance-sampled from q_m), valid for every fusion. ``log_prob(x,
given=G)`` estimates log p(x_T | x_G), T the other keys of x, as log (1/k) sum_i p(x_T|z_i), z_i ~ q_G(z|x_G)
(private w_T from the prior): the posterior p(z|x_G) replaced by the encoder's q_G, an approximation
(exact when q_G is), not a bound. ``translate`` decodes z ~ q_G(z | x_G) into the target modalities.

Networks per modality (:mod:`genlab.models.modality_nets`): conv nets for images, an embedding + GRU
encoder and an autoregressive GRU decoder for captions, strided 1-D convolutions for audio, MLPs for
vectors; every likelihood is a mass on the data's levels or a density of continuous data.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from typing import TypeVar

import torch
from torch import Tensor, nn

from ..data.spec import DataSpec
from ..distributions import diag_gaussian_log_prob, gaussian_kl_standard
from ..protocol import Capabilities, GenerativeModel
from .modality_nets import ModalityNet

T = TypeVar("T")


# --- the mathematics of experts (pure functions) -------------------------------------------------
def product_of_experts(mu: Tensor, logvar: Tensor, prior: bool = True) -> tuple[Tensor, Tensor]:
    """Normalized product of Gaussian experts [E, B, Z] (and of N(0, I) when ``prior``): mean and
    log-variance [B, Z], precision T = sum_e 1/var_e (+ 1), mean = (sum_e mu_e / var_e) / T."""
    precision = torch.exp(-logvar)
    total = precision.sum(0) + (1.0 if prior else 0.0)
    return (mu * precision).sum(0) / total, -torch.log(total)


def nonempty_subsets(keys: Sequence[T]) -> list[tuple[T, ...]]:
    """The 2^n - 1 non-empty subsets of ``keys``, smallest first, each in the order of ``keys``."""
    return [s for r in range(1, len(keys) + 1) for s in itertools.combinations(keys, r)]


def sample_mixture(mu: Tensor, logvar: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
    """k draws [k, B, Z] from the equal-weight mixture of the Gaussians [C, B, Z]: a uniformly chosen
    component per draw, then its reparameterized sample (gradients reach the chosen component)."""
    c = torch.randint(mu.shape[0], (k, mu.shape[1], 1), generator=generator, device=mu.device)
    c = c.expand(-1, -1, mu.shape[-1])
    eps = torch.randn(c.shape, generator=generator, dtype=mu.dtype, device=mu.device)
    return mu.gather(0, c) + torch.exp(0.5 * logvar.gather(0, c)) * eps


def mixture_log_prob(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """[K, B] log (1/C) sum_c N(z; mu_c, var_c) at z [K, B, Z] for components [C, B, Z]."""
    return torch.logsumexp(diag_gaussian_log_prob(z[:, None], mu[None], logvar[None]), 1) - math.log(mu.shape[0])


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """[...] log N(z; 0, I) summed over the last dimension."""
    return diag_gaussian_log_prob(z, torch.zeros_like(z), torch.zeros_like(z))


# --- the shared base -------------------------------------------------------------------------------
class MultimodalVAE(GenerativeModel):
    """Shared base of the multimodal VAEs: experts per modality, :meth:`fuse` (mixture of experts
    here; overridden by products) and :meth:`objective` (overridden per family); see the module doc.

    Args (the config; sizes of every modality come from ``spec.modalities``):
        z_dim: shared latent size. hidden: feature width of every encoder and decoder MLP.
        channels: base channels of the image (and audio) conv nets. beta: weight of the latent terms.
        iwae_k: importance samples of ``log_prob`` (1: the ELBO). act: activation.
        conditional: must stay False (class-conditional multimodal VAEs are not implemented).
        text_decoder: decoder of token modalities: ``"gru"`` (autoregressive, :class:`CaptionGRU`) or
            ``"independent"`` (independent categoricals per position, :class:`IndependentTokens`).
        rescale: weight each modality's log-likelihood in the training objective by max_m D_m / D_m
            (D_m its number of values): the objective is then no longer a bound (``log_prob`` and the
            validation NLL stay one). On by default: on shapes-av (3,072 pixels, 1,000 audio samples, 12
            tokens) it lifted mmvae's text -> audio coherence from 0.75 to 0.88 and audio -> text from
            0.57 to 0.64 (800 steps at 16x16, decoder means; 1.00 and 0.95 at 32x32).
    """

    likelihood = "bound"
    capabilities = Capabilities(
        encode=True,
        iwae=True,
        sample_options=("mean",),
        notes="modalities from the data; log_prob(x, given=[...]) conditional, translate(source, targets)",
    )
    train_defaults = {"batch_size": 64}  # 200 steps on 32x32 shapes-captions in about a minute on a CPU
    legacy_defaults = {"text_decoder": "independent", "rescale": False}  # runs saved before these defaults

    def __init__(
        self,
        spec: DataSpec,
        z_dim: int = 16,
        hidden: int = 128,
        channels: int = 32,
        beta: float = 1.0,
        iwae_k: int = 1,
        act: str = "relu",
        conditional: bool = False,
        text_decoder: str = "gru",
        rescale: bool = True,
        *,
        w_dim: int = 0,
    ) -> None:
        super().__init__(spec)
        name = type(self).registry_name or type(self).__name__
        keys = spec.modality_keys
        if spec.kind != "multimodal" or len(keys) < 2:
            raise ValueError(f"{name} models several modalities; data set {spec.name!r} has kind {spec.kind!r}")
        if conditional:
            raise ValueError(
                f"{name} is not class-conditional: conditional=True is not supported (data set {spec.name!r})"
            )
        if min(z_dim, hidden, channels, iwae_k) < 1 or beta < 0 or w_dim < 0:
            raise ValueError(
                f"need z_dim, hidden, channels, iwae_k >= 1, beta >= 0, w_dim >= 0; got "
                f"{z_dim}, {hidden}, {channels}, {iwae_k}, {beta}, {w_dim}"
            )
        self.keys, self.z_dim, self.w_dim, self.beta, self.iwae_k = keys, z_dim, w_dim, float(beta), iwae_k
        self.discrete = True  # masses on the levels, or densities of continuous data: no bits/dim offset
        self.capabilities = dataclasses.replace(type(self).capabilities, modalities=keys)
        lat = z_dim + w_dim
        self.nets = nn.ModuleDict(
            {k: ModalityNet(spec.modality(k), lat, hidden, channels, act, text_decoder) for k in keys}
        )
        # Likelihood rescaling (llik_scaling in the MMVAE authors' code; MultiVae's rescale_factors): in the
        # training objective only, each modality's log-likelihood is weighted by max_m D_m / D_m (D: its
        # number of values), so a 12-token caption is not drowned by 3,072 pixel terms.
        dims = {k: math.prod(spec.modality(k).shape) for k in keys}
        self.rescale = bool(rescale)
        self.lik_weight = {k: (max(dims.values()) / d if rescale else 1.0) for k, d in dims.items()}

    # --- building blocks ---------------------------------------------------------------------------
    def _inputs(self, x: object) -> dict[str, Tensor]:
        if not isinstance(x, dict) or not x or set(x) - set(self.keys):
            got = sorted(x) if isinstance(x, dict) else type(x).__name__
            raise ValueError(f"expected a dict of a non-empty subset of the modalities {list(self.keys)}; got {got}")
        return {k: x[k] for k in self.keys if k in x}

    def experts(self, x: dict[str, Tensor]) -> dict[str, tuple[Tensor, Tensor]]:
        """q_m(z, w_m | x_m) of each given modality: mean and log-variance [B, z_dim + w_dim]."""
        return {k: self.nets[k].posterior(v) for k, v in self._inputs(x).items()}

    def _shared(self, ex: dict[str, tuple[Tensor, Tensor]], keys: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Means and log-variances [E, B, z_dim] of the shared latent's experts of ``keys``."""
        mu = torch.stack([ex[k][0][:, : self.z_dim] for k in keys])
        return mu, torch.stack([ex[k][1][:, : self.z_dim] for k in keys])

    def fuse(self, ex: dict[str, tuple[Tensor, Tensor]], keys: Sequence[str]) -> tuple[Tensor, Tensor]:
        """q_S(z | x_S) for the subset ``keys`` as an equal-weight mixture of Gaussians [C, B, z_dim]."""
        return self._shared(ex, keys)  # mixture of experts

    def _private(
        self, ex: dict[str, tuple[Tensor, Tensor]], key: str, shape: torch.Size, detach: bool = False
    ) -> tuple[Tensor, Tensor]:
        """A draw w [k, B, w_dim] from q_key(w | x_key) and log p(w) - log q(w) [k, B] (``detach``: q's
        density with detached parameters, for DReG)."""
        mu, logvar = ex[key][0][:, self.z_dim :], ex[key][1][:, self.z_dim :]
        w = mu + torch.exp(0.5 * logvar) * torch.randn(*shape, self.w_dim, dtype=mu.dtype, device=mu.device)
        q = (mu.detach(), logvar.detach()) if detach else (mu, logvar)
        return w, standard_normal_log_prob(w) - diag_gaussian_log_prob(w, *q)

    def _log_lik(self, key: str, z: Tensor, w: Tensor | None, y: Tensor) -> Tensor:
        """[K, B] log p(x_key | z, w) at latents z [K, B, z_dim] (w [K, B, w_dim]); y = target(x_key) [B, ...]."""
        lat = z if w is None else torch.cat([z, w], -1)
        yy = y.unsqueeze(0).expand(z.shape[0], *y.shape).flatten(0, 1)
        return self.nets[key].log_lik(lat.flatten(0, 1), yy).view(z.shape[:2])

    def _elbo(self, mu: Tensor, logvar: Tensor, y: dict[str, Tensor], keys: Sequence[str]) -> Tensor:
        """[B] E_q[sum_{m in keys} log p(x_m | z)] - beta KL(q || N(0, I)), q = N(mu, exp(logvar)) [B, Z], one draw."""
        z = (mu + torch.exp(0.5 * logvar) * torch.randn_like(mu))[None]
        rec = sum(self.lik_weight[m] * self._log_lik(m, z, None, y[m])[0] for m in keys)
        return rec - self.beta * gaussian_kl_standard(mu, logvar)

    def objective(self, ex: dict[str, tuple[Tensor, Tensor]], y: dict[str, Tensor]) -> Tensor:
        """[B] the family's training objective (maximized) from the experts and the targets of all modalities."""
        raise NotImplementedError(f"{type(self).__name__} defines no objective")

    # --- the protocol ------------------------------------------------------------------------------
    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        missing = [k for k in self.keys if k not in batch]
        if missing:
            raise KeyError(f"{type(self).__name__} trains on {list(self.keys)}; the batch has no {missing[0]!r}")
        x = {k: batch[k] for k in self.keys}
        bound = self.objective(self.experts(x), {k: self.nets[k].target(v) for k, v in x.items()})
        return {"loss": -bound.mean(), "objective": bound.mean().detach()}

    def log_prob(
        self,
        x: dict[str, Tensor],
        cond: Tensor | None = None,
        k: int | None = None,
        *,
        given: Sequence[str] | None = None,
    ) -> Tensor:
        """[B] IWAE-k bound on log p(x_S) in nats for the subset S in ``x`` (k = ``iwae_k`` by default);
        with ``given``, the estimate of log p(x_T | x_given) described in the module docstring."""
        k, inputs, given = self.iwae_k if k is None else k, self._inputs(x), list(given or ())
        if set(given) - set(inputs) or len(given) == len(inputs):
            raise ValueError(f"given={given} must name some but not all of the modalities in x ({list(inputs)})")
        src = [m for m in inputs if m in given] or list(inputs)
        ex = self.experts({m: inputs[m] for m in src})
        mu, logvar = self.fuse(ex, src)
        z = sample_mixture(mu, logvar, k)
        log_w = 0.0 if given else standard_normal_log_prob(z) - mixture_log_prob(z, mu, logvar)
        for m in (m for m in inputs if m not in given):
            w = None
            if self.w_dim and given:  # the target's private latent from its prior
                w = torch.randn(*z.shape[:2], self.w_dim, dtype=z.dtype, device=z.device)
            elif self.w_dim:
                w, lw = self._private(ex, m, z.shape[:2])
                log_w = log_w + lw
            log_w = log_w + self._log_lik(m, z, w, self.nets[m].target(inputs[m]))
        return torch.logsumexp(log_w, 0) - math.log(k)

    def encode(self, x: dict[str, Tensor], cond: Tensor | None = None) -> Tensor:
        """[B, z_dim] mean of q_S(z | x_S) (of the mixture: the mean of its components) for any subset."""
        inputs = self._inputs(x)
        return self.fuse(self.experts(inputs), list(inputs))[0].mean(0)

    def _decode(
        self,
        z: Tensor,
        keys: Sequence[str],
        generator: torch.Generator | None,
        mean: bool,
        private: dict[str, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        out = {}
        for m in keys:
            lat = z
            if self.w_dim:  # the private latent of the source, or one from the prior (its mean 0 with `mean`)
                w = (private or {}).get(m)
                if w is None:
                    w = torch.randn(len(z), self.w_dim, generator=generator, dtype=z.dtype, device=z.device)
                    w = w * 0 if mean else w
                lat = torch.cat([z, w], -1)
            out[m] = self.nets[m].draw(lat, generator, mean)
        return out

    @torch.no_grad()
    def sample(
        self, n: int, cond: Tensor | None = None, *, generator: torch.Generator | None = None, mean: bool = False
    ) -> dict[str, Tensor]:
        """One dict of every modality [n, *shape] from z ~ N(0, I) (``mean``: decoder means / modes)."""
        p = next(self.parameters())
        z = torch.randn(n, self.z_dim, generator=generator, dtype=p.dtype, device=p.device)
        return self._decode(z, self.keys, generator, mean)

    @torch.no_grad()
    def translate(
        self,
        source: dict[str, Tensor],
        targets: Sequence[str] | None = None,
        *,
        n: int = 1,
        generator: torch.Generator | None = None,
        mean: bool = False,
    ) -> dict[str, Tensor]:
        """Decode z ~ q_S(z | source) into ``targets`` (default: every modality not in ``source``).

        Returns {target: [B * n, *shape]}, example-major (rows i*n .. i*n + n - 1 come from source
        example i), in the data's space. ``mean``: z = the posterior mean, private latents at their
        prior mean, and decoder means (tokens: greedy decoding)."""
        inputs = self._inputs(source)
        targets = [m for m in self.keys if m not in inputs] if targets is None else list(targets)
        if not targets or set(targets) - set(self.keys) or n < 1:
            raise ValueError(f"targets must be modalities among {list(self.keys)} and n >= 1; got {targets}, n={n}")
        ex = self.experts(inputs)
        mu, logvar = self.fuse(ex, list(inputs))
        if mean:
            z = mu.mean(0).repeat_interleave(n, 0)  # (B * n, Z)
        else:
            z = sample_mixture(mu, logvar, n, generator).transpose(0, 1).flatten(0, 1)  # (B * n, Z)
        private = {m: ex[m][0][:, self.z_dim :].repeat_interleave(n, 0) for m in targets if m in ex}
        return self._decode(z, targets, generator, mean, private if self.w_dim else None)


# --- the four families ------------------------------------------------------------------------------
def _caps(notes: str) -> Capabilities:
    return dataclasses.replace(MultimodalVAE.capabilities, notes=notes)


class MVAE(MultimodalVAE):
    """MVAE (Wu & Goodman 2018): product of Gaussian experts with a prior expert, sub-sampled ELBOs.

    Trained on the sum of the joint ELBO, each modality's ELBO and ``subsets`` random subsets' ELBOs
    (of sizes 2 .. M - 1, drawn anew each step; none exist for two modalities)."""

    capabilities = _caps("product of experts with a prior expert; log_prob(x, given=[...]), translate(source)")

    def __init__(
        self,
        spec: DataSpec,
        z_dim: int = 16,
        hidden: int = 128,
        channels: int = 32,
        beta: float = 1.0,
        subsets: int = 1,
        iwae_k: int = 1,
        act: str = "relu",
        conditional: bool = False,
        text_decoder: str = "gru",
        rescale: bool = True,
    ) -> None:
        super().__init__(spec, z_dim, hidden, channels, beta, iwae_k, act, conditional, text_decoder, rescale)
        if subsets < 0:
            raise ValueError(f"subsets (random subset ELBOs per step) must be >= 0; got {subsets}")
        self.subsets = subsets

    def fuse(self, ex: dict[str, tuple[Tensor, Tensor]], keys: Sequence[str]) -> tuple[Tensor, Tensor]:
        mu, logvar = product_of_experts(*self._shared(ex, keys), prior=True)
        return mu[None], logvar[None]

    def objective(self, ex: dict[str, tuple[Tensor, Tensor]], y: dict[str, Tensor]) -> Tensor:
        middle = [s for s in nonempty_subsets(self.keys) if 1 < len(s) < len(self.keys)]
        terms = [self.keys, *((m,) for m in self.keys)]
        if middle and self.subsets:
            terms += [middle[i] for i in torch.randint(len(middle), (self.subsets,)).tolist()]
        return sum(self._elbo(*(t[0] for t in self.fuse(ex, s)), y, s) for s in terms)


class MMVAE(MultimodalVAE):
    """MMVAE (Shi et al. 2019): mixture of experts, stratified IWAE objective (optionally DReG).

    ``k`` draws per expert (``k=1``: the stratified ELBO); ``dreg=True`` uses the doubly reparameterized
    gradients of Tucker et al. (2019): the encoders' path gradient weighted by the squared normalized
    importance weights, the decoders' the IWAE gradient."""

    capabilities = _caps("mixture of experts, stratified IWAE-k (DReG); log_prob(x, given=[...]), translate(source)")

    def __init__(
        self,
        spec: DataSpec,
        z_dim: int = 16,
        hidden: int = 128,
        channels: int = 32,
        beta: float = 1.0,
        k: int = 1,
        dreg: bool = False,
        iwae_k: int = 1,
        act: str = "relu",
        conditional: bool = False,
        text_decoder: str = "gru",
        rescale: bool = True,
    ) -> None:
        super().__init__(spec, z_dim, hidden, channels, beta, iwae_k, act, conditional, text_decoder, rescale)
        self._init_stratified(k, dreg)

    def _init_stratified(self, k: int, dreg: bool) -> None:
        if k < 1:
            raise ValueError(f"k (importance samples per expert in the objective) must be >= 1; got {k}")
        self.k, self.dreg = k, bool(dreg)

    def _cross_private(self, key: str, shape: torch.Size) -> Tensor | None:
        """The private latent [k, B, w_dim] of ``key`` in a cross-modal reconstruction (none here)."""
        return None

    def objective(self, ex: dict[str, tuple[Tensor, Tensor]], y: dict[str, Tensor]) -> Tensor:
        mu, logvar = self.fuse(ex, self.keys)  # (M, B, Z): one expert per modality
        # DReG: the densities of q see detached parameters; the draws keep their reparameterized path.
        mu_q, logvar_q = (mu.detach(), logvar.detach()) if self.dreg else (mu, logvar)
        lws, draws = [], []
        for i, m in enumerate(self.keys):
            eps = torch.randn(self.k, *mu.shape[1:], dtype=mu.dtype, device=mu.device)
            z = mu[i] + torch.exp(0.5 * logvar[i]) * eps  # (k, B, Z): stratified, k draws per expert
            lw = standard_normal_log_prob(z) - mixture_log_prob(z, mu_q, logvar_q)
            w = None
            if self.w_dim:
                w, lw_w = self._private(ex, m, z.shape[:2], detach=self.dreg)
                lw = lw + lw_w
            lw = self.beta * lw
            for n in self.keys:
                private = w if n == m else self._cross_private(n, z.shape[:2])
                lw = lw + self.lik_weight[n] * self._log_lik(n, z, private, y[n])
            lws.append(lw)
            draws.append([t for t in (z, w) if t is not None])
        lw = torch.stack(lws)  # (M, k, B)
        if not self.dreg:
            return (torch.logsumexp(lw, 1) - math.log(self.k)).mean(0)
        weights = torch.softmax(lw.detach(), 1)  # normalized importance weights of each expert's draws
        for wt, ts in zip(weights, draws):
            for t in ts:
                if t.requires_grad:  # the encoder's path gradient gets the weight squared
                    t.register_hook(lambda g, wt=wt: wt[..., None] * g)
        return (weights * lw).sum(1).mean(0)  # a surrogate: its gradient is DReG's, its value is not the bound


class MoPoE(MultimodalVAE):
    """MoPoE-VAE (Sutter et al. 2021): mixture of products of experts over all subsets.

    The mixture runs over all 2^M - 1 non-empty subsets; the objective is the mean over subsets of their
    ELBOs, each reconstructing every modality. ``stratified=True`` (default) estimates that mean with
    one subset per example, assigned in turn along the batch from a random offset (so every subset
    gets B / (2^M - 1) examples, as in the authors' code and MultiVae): an unbiased estimate of the
    same objective at 1 / (2^M - 1) of the decoder work; ``stratified=False`` scores every subset for
    every example (lower variance, 2^M - 1 times the decoding)."""

    capabilities = _caps("mixture of products of experts over subsets; log_prob(x, given=[...]), translate(source)")
    legacy_defaults = {**MultimodalVAE.legacy_defaults, "stratified": False}

    def __init__(
        self,
        spec: DataSpec,
        z_dim: int = 16,
        hidden: int = 128,
        channels: int = 32,
        beta: float = 1.0,
        iwae_k: int = 1,
        act: str = "relu",
        conditional: bool = False,
        text_decoder: str = "gru",
        rescale: bool = True,
        stratified: bool = True,
    ) -> None:
        super().__init__(spec, z_dim, hidden, channels, beta, iwae_k, act, conditional, text_decoder, rescale)
        self.stratified = bool(stratified)

    def fuse(self, ex: dict[str, tuple[Tensor, Tensor]], keys: Sequence[str]) -> tuple[Tensor, Tensor]:
        mu, logvar = self._shared(ex, keys)
        parts = [
            product_of_experts(mu[list(s)], logvar[list(s)], prior=False) for s in nonempty_subsets(range(len(keys)))
        ]
        return torch.stack([p[0] for p in parts]), torch.stack([p[1] for p in parts])

    def objective(self, ex: dict[str, tuple[Tensor, Tensor]], y: dict[str, Tensor]) -> Tensor:
        mu, logvar = self.fuse(ex, self.keys)  # (2^M - 1, B, Z)
        if not self.stratified:
            return torch.stack([self._elbo(m, lv, y, self.keys) for m, lv in zip(mu, logvar)]).mean(0)
        c, b = mu.shape[:2]
        pick = (torch.arange(b, device=mu.device) + int(torch.randint(c, ()))) % c  # subset of each example
        rows = torch.arange(b, device=mu.device)
        return self._elbo(mu[pick, rows], logvar[pick, rows], y, self.keys)


class MMVAEPlus(MMVAE):
    """MMVAE+ (Palumbo et al. 2023): shared latent plus modality-private latents, auxiliary priors.

    MMVAE's shared z plus a private w_m (``w_dim``) per modality, with a learned auxiliary prior r_m for
    the private latent in cross-modal reconstructions (module docstring). ``encode`` returns the shared
    z; translations draw the targets' private latents from N(0, I)."""

    capabilities = _caps("shared + private latents, auxiliary priors; log_prob(x, given=[...]), translate(source)")

    def __init__(
        self,
        spec: DataSpec,
        z_dim: int = 16,
        w_dim: int = 8,
        hidden: int = 128,
        channels: int = 32,
        beta: float = 1.0,
        k: int = 1,
        dreg: bool = False,
        iwae_k: int = 1,
        act: str = "relu",
        conditional: bool = False,
        text_decoder: str = "gru",
        rescale: bool = True,
    ) -> None:
        if w_dim < 2:  # one dimension would leave the normalized auxiliary scale nothing to learn
            raise ValueError(f"mmvaeplus needs w_dim >= 2 private dimensions; got {w_dim}")
        MultimodalVAE.__init__(
            self, spec, z_dim, hidden, channels, beta, iwae_k, act, conditional, text_decoder, rescale, w_dim=w_dim
        )
        self._init_stratified(k, dreg)
        self.aux_logit = nn.Parameter(torch.zeros(len(self.keys), w_dim))

    def aux_variance(self) -> Tensor:
        """[M, w_dim] variances of the auxiliary priors r_m: softmax(logits) * w_dim (mean 1, learned)."""
        return self.aux_logit.softmax(-1) * self.w_dim

    def _cross_private(self, key: str, shape: torch.Size) -> Tensor | None:
        std = self.aux_variance()[self.keys.index(key)].sqrt()
        return std * torch.randn(*shape, self.w_dim, dtype=std.dtype, device=std.device)
