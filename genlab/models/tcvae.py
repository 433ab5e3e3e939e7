"""Total-correlation VAEs: beta-TCVAE and FactorVAE (Gaussian latents, the VAE's networks and likelihoods).

Chen, Li, Grosse & Duvenaud, "Isolating Sources of Disentanglement in Variational Autoencoders",
NeurIPS 2018 (beta-TCVAE). With n the data index (uniform over the N training examples) and
q(z) = (1/N) sum_n q(z|n) the aggregate posterior, the ELBO's KL term splits (their eq. 2) as

    E_p(n)[KL(q(z|n) || p(z))] = I_q(z; n) + KL(q(z) || prod_j q(z_j)) + sum_j KL(q(z_j) || p(z_j))
                               =   mi      +          tc               +          dwkl

and beta-TCVAE minimizes -E_q[log p(x|z)] + alpha mi + beta tc + gamma dwkl (their eq. 4; the paper
fixes alpha = gamma = 1). Each term is estimated per sample z_i ~ q(z|x_i) of a minibatch of M
from log q(z_i|x_i), log p(z_i) and estimates of log q(z_i) and log q(z_ij) built from the M x M
matrix q(z_i|x_j) (Sec. 4.1 and Appendix C):

    mws (minibatch weighted sampling):  log q(z_i) ~= logsumexp_j log q(z_i|x_j) - log M
    mss (minibatch stratified sampling): log q(z_i) ~= logsumexp_j [log w_ij + log q(z_i|x_j)],
         w_ii = 1/N, w_i,i+1 (mod M) = (N - M + 1) / (N (M - 1)), w_ij = 1/(M - 1) otherwise

(and the same per dimension j for log q(z_ij)). The paper writes the mws normaliser as log(N M); that
estimates log q(z) - log N when the posteriors overlap (at M = N it is the exact mixture minus
log N), which changes mi, tc and dwkl by the constants +log N, (D-1) log N and -D log N and their
gradients not at all. We drop the log N so the logged terms are in honest nats; mws then needs no N.
The mss weights of each row sum to one (own 1/N, the others (N-1)/N: a mixture over the data set,
unbiased for q(z_i) under the paper's stratified batch sampling); the reference code's
weight matrix puts the stratum weight twice in row M-2 and not in row M-1, which this corrects. For
any estimate of log q(z), mi + tc + dwkl = log q(z_i|x_i) - log p(z_i), the one-sample KL estimate,
so with alpha = beta = gamma = 1 the objective is the ELBO with a sampled KL.

Kim & Mnih, "Disentangling by Factorising", ICML 2018 (FactorVAE): maximize
ELBO - gamma KL(q(z) || prod_j q(z_j)), the total correlation estimated with the
density-ratio trick by a discriminator D(z) that tells samples of q(z) from samples of prod_j q(z_j),
obtained by permuting each latent dimension independently across the batch (their Alg. 2):

    TC ~= E_q(z)[log D(z) / (1 - D(z))],  D trained by logistic regression on [z ; permute_dims(z)]

``log_prob`` of both stays the VAE's ELBO / IWAE bound in nats: the TC weighting is a training
objective only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.spec import DataSpec
from ..distributions import LOG_2PI
from ..nn import MLP
from .vae import VAE

ESTIMATORS = ("mws", "mss")


# --- pure mathematics -------------------------------------------------------------------------
def log_density_matrix(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """[M, M, D] log N(z_id; mu_jd, exp(logvar_jd)): sample i of the batch under posterior j, per dimension."""
    z, mu, logvar = z.unsqueeze(1), mu.unsqueeze(0), logvar.unsqueeze(0)
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) * torch.exp(-logvar))


def log_importance_weights(batch_size: int, dataset_size: int, estimator: str, like: Tensor) -> Tensor:
    """[M, M] log w_ij of the aggregate-posterior estimate q(z_i) ~= sum_j w_ij q(z_i|x_j) (module
    docstring): uniform 1/M (mws) or the stratified weights (mss; needs N >= M)."""
    m = batch_size
    if estimator == "mws" or m == 1:
        return torch.full((m, m), -math.log(m), dtype=like.dtype, device=like.device)
    if estimator != "mss":
        raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}; got {estimator!r}")
    n = dataset_size
    if n < m:
        raise ValueError(f"the mss estimator needs dataset_size >= the batch size; got {n} < {m}")
    w = torch.full((m, m), 1.0 / (m - 1), dtype=like.dtype, device=like.device)
    idx = torch.arange(m, device=like.device)
    w[idx, (idx + 1) % m] = (n - m + 1) / (n * (m - 1))
    w[idx, idx] = 1.0 / n
    return w.log()  # a zero stratum weight (N = M - 1 is refused above; N = M gives 1/(N(M-1)) > 0)


def kl_decomposition(
    z: Tensor, mu: Tensor, logvar: Tensor, dataset_size: int = 0, estimator: str = "mws"
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample estimates (mi, tc, dwkl), each [M], of the minibatch z_i ~ q(z|x_i) (module docstring).

    mi_i = log q(z_i|x_i) - log q(z_i),  tc_i = log q(z_i) - sum_d log q(z_id),
    dwkl_i = sum_d log q(z_id) - log p(z_i); their sum is log q(z_i|x_i) - log p(z_i) exactly."""
    m = z.shape[0]
    mat = log_density_matrix(z, mu, logvar)  # [M, M, D]
    log_w = log_importance_weights(m, dataset_size, estimator, z)  # [M, M]
    log_qz_x = mat.diagonal(dim1=0, dim2=1).sum(0)  # [M]: log q(z_i|x_i)
    log_qz = torch.logsumexp(log_w + mat.sum(-1), dim=1)
    log_prod_qzj = torch.logsumexp(log_w.unsqueeze(-1) + mat, dim=1).sum(-1)
    log_pz = -0.5 * (z.pow(2) + LOG_2PI).sum(-1)
    return log_qz_x - log_qz, log_qz - log_prod_qzj, log_prod_qzj - log_pz


def total_correlation(z: Tensor, mu: Tensor, logvar: Tensor, dataset_size: int = 0, estimator: str = "mws") -> Tensor:
    """Minibatch estimate (scalar, nats) of TC = KL(q(z) || prod_d q(z_d)) of the aggregate posterior."""
    return kl_decomposition(z, mu, logvar, dataset_size, estimator)[1].mean()


def permute_dims(z: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """[B, D]: each column of z shuffled by its own random permutation of the batch (Kim & Mnih,
    Alg. 2). Each latent keeps its marginal; the dependence between latents is destroyed, so the rows
    are samples of prod_d q(z_d) when those of z are samples of q(z)."""
    b, d = z.shape
    idx = torch.argsort(torch.rand(b, d, generator=generator, device=z.device if generator is None else "cpu"), dim=0)
    return z.gather(0, idx.to(z.device))


# --- models -------------------------------------------------------------------------------------
class BetaTCVAE(VAE):
    """beta-TCVAE (Chen et al. 2018): the VAE with the KL split into mi + tc + dwkl, weighted alpha, beta, gamma.

    Args: those of :class:`~genlab.models.vae.VAE` (no capacity annealing), and
        beta: weight of the total correlation (the paper's beta; default 6).
        alpha: weight of the index-code mutual information (1 in the paper).
        gamma: weight of the dimension-wise KL (1 in the paper).
        estimator: ``"mws"`` (minibatch weighted sampling) or ``"mss"`` (minibatch stratified sampling).
        dataset_size: N, the number of training examples; ``mss`` needs it. 0 (default): the size of
            the Trainer's training set (:meth:`on_train_data`); outside a Trainer, the first ``mss``
            loss raises a one-line ``ValueError`` while it is 0. ``mws`` does not need it.

    ``warmup_steps`` scales the three weights together. The loss logs ``mi``, ``tc`` and ``dwkl`` (nats,
    batch means) besides the VAE's ``elbo``, ``recon_nll`` and analytic ``kl``.
    """

    def __init__(
        self,
        spec: DataSpec,
        z_dim: int = 10,
        hidden: Sequence[int] = (256, 256),
        arch: str = "auto",
        channels: int = 32,
        likelihood: str = "auto",
        beta: float = 6.0,
        alpha: float = 1.0,
        gamma: float = 1.0,
        estimator: str = "mws",
        dataset_size: int = 0,
        warmup_steps: int = 0,
        conditional: bool = False,
        iwae_k: int = 1,
        act: str = "relu",
    ) -> None:
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}; got {estimator!r}")
        if alpha < 0 or gamma < 0 or dataset_size < 0:
            raise ValueError(f"need alpha >= 0, gamma >= 0, dataset_size >= 0; got {alpha}, {gamma}, {dataset_size}")
        super().__init__(
            spec,
            z_dim=z_dim,
            hidden=hidden,
            arch=arch,
            channels=channels,
            likelihood=likelihood,
            beta=beta,
            warmup_steps=warmup_steps,
            conditional=conditional,
            iwae_k=iwae_k,
            act=act,
        )
        self.alpha, self.gamma = float(alpha), float(gamma)
        self.estimator, self.dataset_size = estimator, int(dataset_size)

    def on_train_data(self, n: int) -> None:
        """The Trainer's training-set size becomes N unless ``dataset_size`` was given."""
        if self.dataset_size == 0:
            self.dataset_size = int(n)

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        if self.estimator == "mss" and self.dataset_size == 0:
            raise ValueError("betatcvae with estimator='mss' needs dataset_size (the number of training examples)")
        mu, logvar, z, rec, kl = self.elbo_terms(batch)
        mi, tc, dwkl = kl_decomposition(z, mu, logvar, self.dataset_size, self.estimator)
        w = self.warmup_factor()
        if self.training:
            self.train_step += 1
        penalty = self.alpha * mi + self.beta * tc + self.gamma * dwkl
        return {
            "loss": (w * penalty - rec).mean(),
            "elbo": (rec - kl).mean().detach(),
            "recon_nll": -rec.mean().detach(),
            "kl": kl.mean().detach(),
            "mi": mi.mean().detach(),
            "tc": tc.mean().detach(),
            "dwkl": dwkl.mean().detach(),
        }


class FactorVAE(VAE):
    """FactorVAE (Kim & Mnih 2018): the VAE ELBO minus gamma times a discriminator's TC estimate.

    Args: those of :class:`~genlab.models.vae.VAE` (beta = 1, no capacity annealing), and
        gamma: weight of the total correlation. Default 6, a moderate weight: Kim & Mnih sweep gamma per
            data set and pick it by the disentanglement / reconstruction trade-off, so tune it.
        disc_hidden: widths of the discriminator MLP D(z). Default 3 x 256 with LeakyReLU (slope 0.01;
            the paper: 6 x 1000, slope 0.2), far less than the paper's, enough for the data sets here.
        lr_d: Adam learning rate of the discriminator (None: the paper's 1e-4 unless the training
            config sets ``lr``); its betas default to the paper's (0.5, 0.9).

    ``loss`` returns two keys, each stepping its own parameter group: ``"loss"`` (encoder and decoder:
    -ELBO + gamma TC, TC = E[logit D(z)]) and ``"disc"`` (D: logistic loss on z against
    ``permute_dims(z)``, both detached). The paper permutes a second minibatch; here the same one is
    used, so one forward serves both keys. Logs ``tc`` (nats) and ``disc_acc``.
    """

    def __init__(
        self,
        spec: DataSpec,
        z_dim: int = 10,
        hidden: Sequence[int] = (256, 256),
        arch: str = "auto",
        channels: int = 32,
        likelihood: str = "auto",
        gamma: float = 6.0,
        disc_hidden: Sequence[int] = (256, 256, 256),
        lr_d: float | None = None,
        warmup_steps: int = 0,
        conditional: bool = False,
        iwae_k: int = 1,
        act: str = "relu",
    ) -> None:
        if gamma < 0 or not disc_hidden or (lr_d is not None and lr_d <= 0):
            raise ValueError(f"need gamma >= 0, some disc_hidden widths, lr_d > 0; got {gamma}, {disc_hidden}, {lr_d}")
        super().__init__(
            spec,
            z_dim=z_dim,
            hidden=hidden,
            arch=arch,
            channels=channels,
            likelihood=likelihood,
            warmup_steps=warmup_steps,
            conditional=conditional,
            iwae_k=iwae_k,
            act=act,
        )
        self.gamma = float(gamma)
        self.lr_d = None if lr_d is None else float(lr_d)
        self.disc = MLP(z_dim, list(disc_hidden), 1, "leaky_relu")

    def discriminate(self, z: Tensor) -> Tensor:
        """[B] logit of D(z) = P(z is a sample of q(z), not of prod_d q(z_d)): the log density ratio."""
        return self.disc(z)[:, 0]

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        out, z = self._loss_with_latents(batch)
        tc = self.discriminate(z).mean()  # density-ratio trick: E[log D/(1 - D)]
        zd = z.detach()
        real, perm = self.discriminate(zd), self.discriminate(permute_dims(zd))
        out["loss"] = out["loss"] + self.gamma * tc
        out["disc"] = 0.5 * (F.softplus(-real).mean() + F.softplus(perm).mean())
        out["tc"] = tc.detach()
        out["disc_acc"] = 0.5 * ((real > 0).double().mean() + (perm < 0).double().mean()).detach()
        return out

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        # The VAE first: its backward runs through D's current weights, which the "disc" step then changes.
        disc = {id(p) for p in self.disc.parameters()}
        return {
            "loss": [p for p in self.parameters() if p.requires_grad and id(p) not in disc],
            "disc": [p for p in self.disc.parameters() if p.requires_grad],
        }

    def optimizer_settings(self) -> dict[str, dict[str, Any]]:
        """The discriminator: the paper's Adam lr 1e-4 and betas (0.5, 0.9) as defaults, ``lr_d`` fixed if given."""
        disc: dict[str, Any] = {"default_lr": 1e-4, "default_betas": (0.5, 0.9)}
        if self.lr_d is not None:
            disc["lr"] = self.lr_d
        return {"disc": disc}
