"""Generative adversarial networks: DCGAN (non-saturating loss), WGAN-GP, class-conditional GANs.

Goodfellow et al., "Generative Adversarial Nets", NeurIPS 2014 (the minimax game; the optimal
discriminator and V(G, D*) = 2 JSD(p_data, p_G) - log 4; the non-saturating generator loss).
Radford et al., "Unsupervised Representation Learning with Deep Convolutional GANs", ICLR 2016
(DCGAN: strided convolutions, batch norm in G, LeakyReLU(0.2) in D, Adam lr 2e-4, beta1 0.5).
Gulrajani et al., "Improved Training of Wasserstein GANs", NeurIPS 2017 (WGAN-GP: critic, gradient
penalty lambda = 10 on random interpolates, n_critic = 5, Adam lr 1e-4, betas (0, 0.9), no batch
norm in the critic). Mirza & Osindero, "Conditional GANs", 2014 (G sees [z, one-hot c]);
Miyato & Koyama, "cGANs with Projection Discriminator", ICLR 2018 (D(x, c) = psi(phi(x)) +
<embed(c), phi(x)>).

    D-step: maximize V(G, D) = E_data[log D(x)] + E_z[log(1 - D(G(z)))]   ("ns")
            or minimize E_z[f(G(z))] - E_data[f(x)] + lambda E[(||grad f(x_hat)|| - 1)^2]   ("wgan-gp")
    G-step: minimize -E_z[log D(G(z))] (non-saturating)  or  -E_z[f(G(z))]

The discriminator's JSD estimate (V + log 4) / 2 is logged as ``jsd_est`` (exact when D = D*).
Discrete images (digits' 17 levels, binary sprites) are modelled in dequantized form: real data
gets uniform noise inside its level's bin, the generator outputs a continuous value in [0, 1], and
``sample`` returns the bin's level, so samples lie on the data's levels and D cannot tell real from
fake by quantization alone. GANs have no likelihood (``likelihood = "none"``) and no encoder.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.spec import DataSpec
from ..distributions import from_unit, uniform_dequantize
from ..nn import MLP
from ..protocol import Capabilities, GenerativeModel

LOG4 = math.log(4.0)
LOSSES = ("ns", "wgan-gp")
# Paper defaults per loss: n_critic, learning rate, Adam betas.
DEFAULTS: dict[str, dict[str, Any]] = {
    "ns": {"n_critic": 1, "lr": 2e-4, "betas": (0.5, 0.999)},
    "wgan-gp": {"n_critic": 5, "lr": 1e-4, "betas": (0.0, 0.9)},
}


# --- pure mathematics -------------------------------------------------------------------------
def discriminator_value(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """V(G, D) = E_data[log D] + E_G[log(1 - D)] in nats, with D = sigmoid(logit); log D =
    -softplus(-logit) and log(1 - D) = -softplus(logit) are the numerically safe forms."""
    return -F.softplus(-real_logits).mean() - F.softplus(fake_logits).mean()


def jsd_estimate(value: Tensor) -> Tensor:
    """JSD(p_data, p_G) in nats estimated from V(G, D): (V + log 4) / 2. A lower bound that is
    exact at the optimal discriminator D* = p_data / (p_data + p_G) (Goodfellow et al. 2014, Thm. 1)."""
    return (value + LOG4) / 2


def gradient_penalty(
    critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor, generator: torch.Generator | None = None
) -> Tensor:
    """WGAN-GP penalty E[(||grad_x critic(x_hat)||_2 - 1)^2] on x_hat = e real + (1 - e) fake,
    e ~ U[0, 1] per example (Gulrajani et al. 2017, Alg. 1). Differentiable in the critic's
    parameters (create_graph); works under an outer ``torch.no_grad`` too."""
    e = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), generator=generator, dtype=real.dtype, device=real.device)
    with torch.enable_grad():
        x_hat = (e * real.detach() + (1 - e) * fake.detach()).requires_grad_(True)
        (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


# --- networks -----------------------------------------------------------------------------------
def _num_upsamplings(h: int, w: int) -> int:
    # Halve while both sides stay even and above 4: G starts from that size and doubles back up.
    n = 0
    while h % 2 == 0 and w % 2 == 0 and h > 4 and w > 4:
        h, w, n = h // 2, w // 2, n + 1
    return n


def _stage(base: int, j: int) -> int:
    """Channels at a resolution j halvings below the image: base, 2 base, 4 base, 8 base (cap)."""
    return base * 2 ** min(j, 3)


class ConvGenerator(nn.Module):
    """DCGAN generator: [B, in_dim] -> Linear -> (C0, h0, w0) -> stride-2 transposed convs with
    batch norm + ReLU -> 3x3 conv to [B, C, H, W] (unbounded; the model maps it to the data range)."""

    def __init__(self, in_dim: int, shape: Sequence[int], base: int) -> None:
        super().__init__()
        c, h, w = shape
        n = _num_upsamplings(h, w)
        self.start = (_stage(base, n), h // 2**n, w // 2**n)
        self.fc = nn.Sequential(
            nn.Linear(in_dim, math.prod(self.start)), nn.BatchNorm1d(math.prod(self.start)), nn.ReLU()
        )
        layers: list[nn.Module] = []
        for j in range(n, 0, -1):
            layers += [
                nn.ConvTranspose2d(_stage(base, j), _stage(base, j - 1), 4, 2, 1),
                nn.BatchNorm2d(_stage(base, j - 1)),
                nn.ReLU(),
            ]
        layers.append(nn.Conv2d(_stage(base, 0), c, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.body(self.fc(z).view(-1, *self.start))


class ConvDiscriminatorBody(nn.Module):
    """DCGAN/WGAN-GP discriminator body: [B, C, H, W] -> features phi(x) [B, out_dim].

    3x3 stem conv, then stride-2 4x4 convs down to 4x4, LeakyReLU(0.2) throughout and no batch
    norm: the gradient penalty is per example, and batch statistics would let D compare examples.
    """

    def __init__(self, shape: Sequence[int], base: int) -> None:
        super().__init__()
        c, h, w = shape
        n = _num_upsamplings(h, w)
        layers: list[nn.Module] = [nn.Conv2d(c, base, 3, padding=1), nn.LeakyReLU(0.2)]
        for j in range(n):
            layers += [nn.Conv2d(_stage(base, j), _stage(base, j + 1), 4, 2, 1), nn.LeakyReLU(0.2)]
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.out_dim = _stage(base, n) * (h // 2**n) * (w // 2**n)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class GAN(GenerativeModel):
    """GAN with the non-saturating (``loss="ns"``, DCGAN) or Wasserstein-GP (``"wgan-gp"``) loss.

    Registered as ``dcgan`` (default ``loss="ns"``) and ``wgan_gp`` (default ``loss="wgan-gp"``);
    the two names differ only in that default and the paper settings that follow from it.

    Args (the config; sizes come from ``spec``):
        loss: ``"ns"`` or ``"wgan-gp"`` (None: the registered name's default).
        z_dim: noise size; z ~ N(0, I).
        arch: ``"conv"`` (images with both sides >= 8), ``"mlp"``, or ``"auto"`` (conv when possible).
        channels: base channel count of the conv nets (doubling per halving, capped at 8x).
        hidden: MLP widths (G uses them in reverse).
        n_critic: discriminator steps per generator step (None: 1 for ns, 5 for wgan-gp).
        gp_weight: lambda of the gradient penalty (wgan-gp).
        lr_g, lr_d: a fixed Adam learning rate for the generator / the discriminator.
        conditional: class-conditional GAN: G gets [z, one-hot c]; D is a projection discriminator.

    Learning rates: ``lr_g``/``lr_d`` where given; else the training ``lr`` (``--set lr=5e-4``) for
    both groups when it is set; else the paper's rate for the loss (2e-4 ns, 1e-4 wgan-gp). Adam's
    betas: the training ``beta1``/``beta2`` when set, else the paper's ((0.5, 0.999) ns, (0, 0.9)
    wgan-gp). So a training setting is never ignored, and the run's log records the rates in use
    (``lr``, or ``lr_generator``/``lr_discriminator`` when they differ).
    """

    #: NHWC training (``TrainConfig.channels_last``): measured 2026-12-02 on an idle 2-core CPU, one
    #: thread (``benchmarks/conv_speed.py --channels-last``), DCGAN 1.12x faster on 28x28, 1.28x on 64x64 per step.
    train_defaults = {"channels_last": True}

    likelihood = "none"
    capabilities = Capabilities(
        conditional=True,
        figures=("samples",),
        notes="projection discriminator when conditional; validation: Frechet distance on random features",
    )
    # G steps against the discriminator just updated in the same training step (alternating updates).
    recompute_loss_per_group = True
    default_loss: ClassVar[str] = "ns"

    def __init__(
        self,
        spec: DataSpec,
        loss: str | None = None,
        z_dim: int = 32,
        arch: str = "auto",
        channels: int = 32,
        hidden: Sequence[int] = (256, 256),
        n_critic: int | None = None,
        gp_weight: float = 10.0,
        lr_g: float | None = None,
        lr_d: float | None = None,
        conditional: bool = False,
    ) -> None:
        super().__init__(spec)
        loss = self.default_loss if loss is None else loss
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}; got {loss!r}")
        if spec.kind not in ("image", "vector") or (spec.kind == "vector" and len(spec.shape) != 1):
            raise ValueError(f"the GAN models images or vectors; data set {spec.name!r} has kind {spec.kind!r}")
        is_image = len(spec.shape) == 3
        if arch == "auto":
            arch = "conv" if is_image and min(spec.shape[1:]) >= 8 else "mlp"
        if arch not in ("conv", "mlp") or (arch == "conv" and not (is_image and min(spec.shape[1:]) >= 8)):
            raise ValueError(
                f"arch must be 'conv' (images of side >= 8), 'mlp' or 'auto'; got {arch!r} for shape {spec.shape}"
            )
        n_critic = DEFAULTS[loss]["n_critic"] if n_critic is None else n_critic
        if z_dim < 1 or n_critic < 1 or gp_weight < 0 or not hidden:
            raise ValueError(
                "need z_dim >= 1, n_critic >= 1, gp_weight >= 0 and at least one hidden width; "
                f"got {z_dim}, {n_critic}, {gp_weight}, {hidden}"
            )
        self._init_conditioning(conditional)
        self.loss_type, self.z_dim, self.arch, self.n_critic, self.gp_weight = (
            loss,
            z_dim,
            arch,
            n_critic,
            float(gp_weight),
        )
        self.lr_g = None if lr_g is None else float(lr_g)
        self.lr_d = None if lr_d is None else float(lr_d)
        d = spec.dim
        if arch == "conv":
            self.gen: nn.Module = ConvGenerator(z_dim + self.c_dim, spec.shape, channels)
            self.disc_body: nn.Module = ConvDiscriminatorBody(spec.shape, channels)
            feat = self.disc_body.out_dim
        else:
            hidden = list(hidden)
            self.gen = MLP(z_dim + self.c_dim, hidden[::-1], d, "relu")
            self.disc_body = nn.Sequential(
                nn.Flatten(), MLP(d, hidden[:-1], hidden[-1], "leaky_relu"), nn.LeakyReLU(0.2)
            )
            feat = hidden[-1]
        # psi. A critic's constant offset cancels in E[f(real)] - E[f(fake)] and in the penalty: no bias.
        self.disc_head = nn.Linear(feat, 1, bias=loss != "wgan-gp")
        # Projection term <embed(c), phi(x)>: a bias-free linear map of the one-hot class.
        self.disc_embed = nn.Linear(self.c_dim, feat, bias=False) if conditional else None
        # Schedule state (saved with the weights so --resume continues the n_critic cycle exactly):
        # D-calls made so far, and whether the next call is the trainer's recomputation for G.
        self.register_buffer("d_calls", torch.zeros((), dtype=torch.long))
        self.register_buffer("pending_g", torch.zeros((), dtype=torch.long))

    # --- networks -----------------------------------------------------------------------------
    def generate(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        """Continuous generator output [B, *shape] in the (dequantized) data range; z is [B, z_dim]."""
        c = self.cond_embedding(cond, z)
        h = self.gen(z if c is None else torch.cat([z, c], -1)).view(-1, *self.spec.shape)
        if self.spec.value_range is None:
            return h
        lo, hi = self.spec.value_range
        return lo + (hi - lo) * torch.sigmoid(h)

    def discriminate(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """[B] discriminator logit (ns: log D/(1-D)) or critic value (wgan-gp) of x [B, *shape]."""
        phi = self.disc_body(x)  # (B, feat)
        out = self.disc_head(phi)[:, 0]
        c = self.cond_embedding(cond, x)
        if c is not None and self.disc_embed is not None:
            out = out + (self.disc_embed(c) * phi).sum(-1)
        return out

    def dequantize(self, x: Tensor) -> Tensor:
        """Real data on L levels (level / (L-1)) -> uniform in its bin [level/L, (level+1)/L)."""
        if not self.spec.levels or self.spec.value_range is None:
            return x
        return uniform_dequantize(x, self.spec.levels)

    # --- losses -------------------------------------------------------------------------------
    def discriminator_loss(self, real: Tensor, fake: Tensor, cond: Tensor | None = None) -> dict[str, Tensor]:
        """The D-step objective on real [B, *shape] (dequantized) and fake (detached) samples, plus
        logged estimates: ``jsd_est`` (ns) or ``wasserstein_est`` and ``gradient_penalty``."""
        d_real, d_fake = self.discriminate(real, cond), self.discriminate(fake.detach(), cond)
        if self.loss_type == "ns":
            v = discriminator_value(d_real, d_fake)
            return {
                "discriminator": -v,
                "jsd_est": jsd_estimate(v.detach()),
                "d_real": torch.sigmoid(d_real).mean().detach(),
                "d_fake": torch.sigmoid(d_fake).mean().detach(),
            }
        w = d_real.mean() - d_fake.mean()  # the critic's estimate of W1(p_data, p_G)
        gp = gradient_penalty(lambda x: self.discriminate(x, cond), real, fake)
        return {
            "discriminator": -w + self.gp_weight * gp,
            "wasserstein_est": w.detach(),
            "gradient_penalty": gp.detach(),
        }

    def generator_loss(self, fake: Tensor, cond: Tensor | None = None) -> Tensor:
        """Non-saturating -E[log D(G(z))] (ns) or -E[f(G(z))] (wgan-gp)."""
        d = self.discriminate(fake, cond)
        return F.softplus(-d).mean() if self.loss_type == "ns" else -d.mean()

    def _schedule(self) -> tuple[bool, bool]:
        """(D key present, G key present) for this call. The trainer calls ``loss`` once per step
        and again (``recompute_loss_per_group``) before the G update; a G step happens on every
        ``n_critic``-th D step (the first call included, so one call always yields both keys)."""
        if not self.training or not torch.is_grad_enabled():
            return True, True  # evaluation: report everything, change no state
        if bool(self.pending_g):
            self.pending_g.zero_()
            return False, True
        want_g = int(self.d_calls) % self.n_critic == 0
        self.d_calls += 1
        if want_g:
            self.pending_g.fill_(1)
        return True, want_g

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """``{"discriminator", "generator"}`` (either may be absent on a step: n_critic) plus
        logged diagnostics; see the module docstring for the objectives."""
        cond = self.condition(batch)
        real = self.dequantize(batch["x"].to(self.disc_head.weight.dtype))
        want_d, want_g = self._schedule()
        z = torch.randn(real.shape[0], self.z_dim, dtype=real.dtype, device=real.device)
        fake = self.generate(z, cond)
        out: dict[str, Tensor] = {}
        if want_d:
            out.update(self.discriminator_loss(real, fake, cond))
        if want_g:
            out["generator"] = self.generator_loss(fake, cond)
        return out

    # --- the protocol -----------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, cond: Tensor | None = None, *, generator: torch.Generator | None = None) -> Tensor:
        """[n, *shape] samples G(z), z ~ N(0, I); on the data's levels for discrete data."""
        z = torch.randn(n, self.z_dim, generator=generator, device=self.device, dtype=self.disc_head.weight.dtype)
        x = self.generate(z, cond)
        if self.spec.levels and self.spec.value_range is not None:
            x = from_unit(x, self.spec.levels)  # the bin of the dequantized value, back to level / (L-1)
        return x

    def encode(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        raise NotImplementedError(
            "a GAN has no encoder (no inference network maps x to z); use a VAE or a flow for representations"
        )

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        # D first: the trainer steps the keys in this order, so G then trains against the new D.
        disc = [*self.disc_body.parameters(), *self.disc_head.parameters()]
        if self.disc_embed is not None:
            disc += list(self.disc_embed.parameters())
        return {"discriminator": disc, "generator": list(self.gen.parameters())}

    def optimizer_settings(self) -> dict[str, dict[str, Any]]:
        """The paper's rate and betas as defaults (for training settings left unset), ``lr_g``/``lr_d``
        as fixed rates where given (see the class docstring)."""
        paper = DEFAULTS[self.loss_type]
        out: dict[str, dict[str, Any]] = {}
        for key, lr in (("discriminator", self.lr_d), ("generator", self.lr_g)):
            out[key] = {"default_lr": paper["lr"], "default_betas": paper["betas"]}
            if lr is not None:
                out[key]["lr"] = lr
        return out

    @torch.no_grad()
    def validation_metrics(self, data: Any, max_examples: int = 1000) -> dict[str, float]:
        """``val_fd``: Frechet distance between samples and ``data`` on the fixed random features of
        :class:`~genlab.metrics.features.RandomFeatures` (training-free, so cheap enough to select
        the best weights by), and the discriminator's estimate on held-out data (``val_jsd_est`` or
        ``val_wasserstein_est``). Lower ``val_fd`` is better."""
        from ..metrics.features import RandomFeatures
        from ..metrics.fid import frechet_distance

        n = min(len(data), max_examples)
        batch = {k: v[:n].to(self.device) for k, v in data.tensors.items()}
        cond = self.condition(batch)
        x = self.sample(n, cond, generator=torch.Generator(device=self.device).manual_seed(0))
        feats = RandomFeatures(self.spec)
        out = {"val_fd": frechet_distance(feats.features(batch["x"]), feats.features(x))}
        real = self.dequantize(batch["x"].to(self.disc_head.weight.dtype))
        fake = self.generate(torch.randn(n, self.z_dim, dtype=real.dtype, device=real.device), cond)
        if self.loss_type == "ns":
            out["val_jsd_est"] = float(
                jsd_estimate(discriminator_value(self.discriminate(real, cond), self.discriminate(fake, cond)))
            )
        else:
            out["val_wasserstein_est"] = float(
                self.discriminate(real, cond).mean() - self.discriminate(fake, cond).mean()
            )
        return out


class DCGAN(GAN):
    """DCGAN: non-saturating GAN loss (Goodfellow et al. 2014; Radford et al. 2016)."""

    default_loss = "ns"


class WGANGP(GAN):
    """WGAN-GP: Wasserstein critic with gradient penalty, n_critic = 5 (Gulrajani et al. 2017)."""

    default_loss = "wgan-gp"
