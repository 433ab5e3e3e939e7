"""Denoising diffusion probabilistic models (DDPM) with DDIM sampling, v-prediction and classifier-free guidance.

Ho, Jain & Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020 (t = 1..T, alpha_t = 1 - beta_t,
abar_t = prod_{s<=t} alpha_s):

    q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)                                     (eq. 4)
    L_simple = E_{t, x_0, eps} || eps - eps_theta(sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t) ||^2    (eq. 14)
    -log p(x_0) <= L_T + sum_{t=2}^T L_{t-1} + L_0                                             (eq. 5)
        L_T = KL(q(x_T | x_0) || N(0, I)),  L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)),
        L_0 = -log p(x_0 | x_1): a Gaussian N(mu_theta(x_1, 1), beta_1) integrated over the data's bins (eq. 13).

p(x_{t-1} | x_t) = N(mu~_t(x_t, x0_hat), sigma_t^2 I): the true posterior's mean (eqs. 6-7) at the predicted
x0_hat, and sigma_t^2 = beta_t (``variance="large"``) or beta~_t (``"small"``), so that per dimension
L_{t-1} = c_t^2 (x_0 - x0_hat)^2 / (2 sigma_t^2) + KL(N(0, beta~_t) || N(0, sigma_t^2)), c_t =
sqrt(abar_{t-1}) beta_t / (1 - abar_t). Nichol & Dhariwal, "Improved Denoising Diffusion Probabilistic
Models", ICML 2021: the cosine schedule abar_t = f(t)/f(0), f(t) = cos^2((t/T + s)/(1 + s) pi/2), s = 0.008,
betas clipped at 0.999 (and the linear schedule's 1e-4..0.02 scaled by 1000/T for other T). Song, Meng &
Ermon, "Denoising Diffusion Implicit Models", ICLR 2021, eq. 12: on a subsequence tau of the steps,

    x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps_hat + sigma z,
    sigma = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev),

eta = 1 with all T steps is DDPM's ancestral sampler; eta = 0 is a deterministic map, run backwards by
:meth:`DDPM.encode` (x_0 -> x_T). Salimans & Ho, "Progressive Distillation", ICLR 2022: v-prediction, v =
sqrt(abar) eps - sqrt(1 - abar) x_0, so x0 = sqrt(abar) x_t - sqrt(1 - abar) v. Ho & Salimans, "Classifier-Free
Diffusion Guidance", 2022: the class is replaced by a null class with probability ``p_uncond`` in training
and eps = (1 + w) eps(x_t, c) - w eps(x_t, null) at sampling.

Captions (``text_conditional=True``, image + caption data such as ``shapes-captions``): the condition is a
caption, read by the caption encoder of :mod:`genlab.models.text_pixelcnn` (token embeddings, a bidirectional
GRU, a linear map of the two final states: :class:`CaptionEncoder`, the same design written once more here
because that model builds it inline), and its vector h [B, text_hidden] enters where the class vector does,
through the bias-free map of :class:`~genlab.models.unet.TimeEmbedding`: h = 0 is the null condition of
guidance, and ``p_uncond`` replaces h by 0 in training. ``log_prob`` is then a bound on log p(x | caption) and
the model translates captions to images (``translate({"text": ids})``, or ``sample(n, cond=ids)``); it has no
p(caption), so it declares ``sample=False`` like ``pixelcnn_text``.

Data: images with L levels are mapped to [-1, 1] (level -> 2 level / (L - 1) - 1) and ``log_prob`` is a
bound on the probability *mass* (``discrete``, so bits/dim compare with every other family); continuous
images are mapped affinely to [-1, 1] and vectors (2-D toys) are used as they are, and ``log_prob`` is then a
bound on the *density* of the data in its own units (the affine map's log-Jacobian included). The
network is in :mod:`genlab.models.unet`. The trainer's ``ema`` setting gives the weight average the paper
samples from (``train_defaults`` turns it on).

Cost: ``sample`` takes ``sample_steps`` network passes, ``encode``/``decode`` as many, ``reconstruct`` twice
that, and the exact bound T passes per example: 32 digits with a 16-channel U-Net and T = 1000 took 64 s on
one (shared) CPU thread; ``bound_timesteps=100`` estimates it from 101 passes instead.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.special import log_ndtr

from ..data.spec import DataSpec
from ..distributions import LOG_2PI, to_levels
from ..protocol import Capabilities, GenerativeModel, Modalities
from .captioner import caption_ids, check_one_way, image_caption_specs
from .unet import UNet, VectorNet


def beta_schedule(name: str, timesteps: int) -> Tensor:
    """betas [T] (float64): ``"linear"`` (Ho et al.: 1e-4..0.02 at T = 1000, scaled by 1000/T so that
    abar_T stays ~0 for other T) or ``"cosine"`` (Nichol & Dhariwal, eq. 17), both capped at 0.999."""
    if name == "linear":
        scale = 1000.0 / timesteps
        betas = torch.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=torch.float64, device="cpu")
    else:
        s = 0.008
        f = torch.cos(
            (torch.arange(timesteps + 1, dtype=torch.float64, device="cpu") / timesteps + s) / (1 + s) * math.pi / 2
        )
        abar = f**2 / f[0] ** 2
        betas = 1 - abar[1:] / abar[:-1]
    return betas.clamp(max=0.999)


def discretized_gaussian_log_prob(x: Tensor, mean: Tensor, log_scale: Tensor | float, levels: int) -> Tensor:
    """Elementwise log P(x) of N(mean, exp(log_scale)^2) integrated over x's bin, for x on the grid of
    ``levels`` values in [-1, 1] (bins of width 2/(L-1); the two edge bins reach -inf/+inf, so the masses
    of the L levels sum to 1). Ho et al. 2020, eq. 13; computed on the side of the bin away from the mean
    (log-CDFs on the left, log-survival on the right) so that no difference of near-equal CDFs cancels."""
    half = 1.0 / (levels - 1)
    inv_s = torch.exp(-torch.as_tensor(log_scale, dtype=x.dtype, device=x.device))
    centered = x - mean
    a, b = inv_s * (centered - half), inv_s * (centered + half)  # bin edges in standard units
    left = centered <= 0
    hi = torch.where(left, log_ndtr(b), log_ndtr(-a))
    lo = torch.where(left, log_ndtr(a), log_ndtr(-b))
    inner = hi + torch.log(-torch.expm1((lo - hi).clamp(max=-1e-30)))
    return torch.where(x < -1 + half, log_ndtr(b), torch.where(x > 1 - half, log_ndtr(-a), inner))


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(what)


class CaptionEncoder(nn.Module):
    """Caption ids [B, T] -> caption vector h [B, hidden]: token embeddings read by a bidirectional GRU,
    h = W [GRU->(c)_T ; GRU<-(c)_1] + b (the design of :meth:`TextPixelCNN.caption_vector
    <genlab.models.text_pixelcnn.TextPixelCNN.caption_vector>`; the whole caption is the condition, so no
    causal order). Padding tokens are read like any other: captions have a fixed length."""

    def __init__(self, vocab: int, length: int, dim: int, hidden: int) -> None:
        super().__init__()
        self.length = length
        self.tok_emb = nn.Embedding(vocab, dim)
        self.gru = nn.GRU(dim, hidden, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * hidden, hidden)

    def forward(self, text: Tensor) -> Tensor:
        ids = caption_ids(text, self.length).to(self.tok_emb.weight.device)
        return self.embedded(self.tok_emb(ids))

    def embedded(self, emb: Tensor) -> Tensor:
        """Token embeddings [B, T, dim] -> h [B, hidden] (split out so tests can differentiate w.r.t. them)."""
        _, last = self.gru(emb)  # (2, B, hidden): the forward and backward final states
        return self.out(torch.cat([last[0], last[1]], -1))


class DDPM(GenerativeModel):
    """Gaussian diffusion over images [C, H, W] (U-Net) or vectors [D] (residual MLP).

    Args (the config; shapes, levels and classes come from ``spec``):
        timesteps: T, the number of diffusion steps.
        schedule: ``"linear"`` (Ho et al.) or ``"cosine"`` (Nichol & Dhariwal).
        prediction: what the network predicts: ``"eps"`` (the noise) or ``"v"`` (Salimans & Ho).
        channels: base width of the U-Net (vectors: the MLP has width 4 * channels).
        channel_mult: U-Net width multipliers per resolution level (vectors: the number of MLP blocks is
            len(channel_mult) * num_res_blocks).
        num_res_blocks: residual blocks per U-Net level.
        attention: resolutions (smaller image side) whose U-Net blocks get self-attention; the middle
            block always has it.
        time_dim: width of the time (+ class) embedding; 0 = 4 * channels.
        dropout: dropout in the residual blocks.
        conditional: class-conditional (``batch["y"]``), with classifier-free guidance.
        p_uncond: probability of training on the null class (or null caption) instead of the true one
            (conditional or text_conditional only).
        guidance: default guidance scale w of :meth:`sample` (0: the plain conditional model).
        sample_steps: default number of DDIM steps of :meth:`sample`, :meth:`encode` and :meth:`decode`
            (at most T; more use all T).
        eta: default DDIM noise of :meth:`sample` (0: deterministic; 1 with T steps: ancestral DDPM).
        variance: sigma_t^2 of the reverse steps in the bound: ``"large"`` = beta_t or ``"small"`` = beta~_t,
            the posterior's (Ho et al. Sec. 3.2: optimal for x_0 ~ N(0, I) and for x_0 fixed). Large bounds
            better where x_t does not pin x_0 down: 0.02 vs 0.47 nats below the true log-density of 1-D
            Gaussian data with the exact predictor, and 3.33 vs 3.62 bits/dim on digits after 1000 steps of
            a 16-channel U-Net (before ``norm`` kept 4 channels per group). Sampling uses DDIM's sigma (eta) either way.
        bound_timesteps: 0 = ``log_prob`` sums all T terms of the bound (T network passes per example:
            17 minutes for the 447 test digits on one CPU thread); k > 0 (default 100): an unbiased
            stratified estimate from k + 1 of them (L_0, and one KL step in each of k strata), whose
            expectation is the bound.
        text_conditional: condition on the caption ``batch["text"]`` (ids [B, T]) of image + caption data
            instead of a class, with classifier-free guidance (the null caption: h = 0); excludes
            ``conditional``. The model then takes and translates {"x", "text"} (``capabilities`` per instance).
        text_dim: token embedding size of the caption encoder (text_conditional only).
        text_hidden: GRU state per direction and size of the caption vector h (text_conditional only).
        scale_shift_norm: the U-Net's residual blocks apply the time (+ condition) embedding as a scale and
            shift of their normalized features (AdaGN, Dhariwal & Nichol 2021) instead of adding it before
            the GroupNorm (Ho et al.). Images only.
    """

    likelihood = "bound"
    capabilities = Capabilities(
        encode=True,
        decode=True,
        reconstruct=True,
        conditional=True,
        sample_options=("steps", "eta", "guidance"),
        figures=("samples", "reconstructions"),
        notes="log_prob: variational bound (default: unbiased estimate from 101 of its T terms); sample: DDIM; "
        "encode: DDIM inversion to x_T",
    )
    #: EMA of the weights as in Ho et al. (the trainer's ``ema``); the bound costs T network passes per example,
    #: so training evaluates only at the end, on 100 validation examples (``genlab eval`` scores them all).
    train_defaults = {"ema": 0.999, "eval_every": 0, "max_eval_examples": 100}

    def __init__(
        self,
        spec: DataSpec,
        timesteps: int = 1000,
        schedule: str = "linear",
        prediction: str = "eps",
        channels: int = 32,
        channel_mult: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 1,
        attention: Sequence[int] = (16,),
        time_dim: int = 0,
        dropout: float = 0.0,
        conditional: bool = False,
        p_uncond: float = 0.1,
        guidance: float = 0.0,
        sample_steps: int = 50,
        eta: float = 0.0,
        bound_timesteps: int = 100,
        variance: str = "large",
        text_conditional: bool = False,
        text_dim: int = 32,
        text_hidden: int = 64,
        scale_shift_norm: bool = False,
    ) -> None:
        super().__init__(spec)
        is_image = len(spec.shape) == 3 and spec.kind in ("image", "multimodal")
        if not (is_image or (spec.kind == "vector" and len(spec.shape) == 1)):
            raise ValueError(
                f"DDPM models images [C, H, W] or vectors [D]; data set {spec.name!r} is {spec.kind!r} {spec.shape}"
            )
        _check(timesteps >= 1, f"timesteps={timesteps}: expected an integer >= 1")
        _check(schedule in ("linear", "cosine"), f"schedule={schedule!r}: expected 'linear' or 'cosine'")
        _check(prediction in ("eps", "v"), f"prediction={prediction!r}: expected 'eps' or 'v'")
        _check(channels >= 1, f"channels={channels}: expected an integer >= 1")
        _check(
            len(channel_mult) > 0 and all(m >= 1 for m in channel_mult),
            f"channel_mult={channel_mult!r}: expected integers >= 1",
        )
        _check(num_res_blocks >= 1, f"num_res_blocks={num_res_blocks}: expected an integer >= 1")
        _check(all(r >= 1 for r in attention), f"attention={attention!r}: expected resolutions >= 1")
        _check(time_dim >= 0, f"time_dim={time_dim}: expected an integer >= 0 (0: 4 * channels)")
        _check(0 <= dropout < 1, f"dropout={dropout}: expected a number in [0, 1)")
        _check(0 <= p_uncond < 1, f"p_uncond={p_uncond}: expected a probability in [0, 1)")
        _check(variance in ("small", "large"), f"variance={variance!r}: expected 'small' or 'large'")
        _check(bound_timesteps >= 0, f"bound_timesteps={bound_timesteps}: expected an integer >= 0 (0: all T)")
        _check(text_dim >= 1, f"text_dim={text_dim}: expected an integer >= 1")
        _check(text_hidden >= 1, f"text_hidden={text_hidden}: expected an integer >= 1")
        _check(
            is_image or not scale_shift_norm,
            "scale_shift_norm=True: expected images (the vectors' MLP has no GroupNorm; leave it False)",
        )
        self.text_encoder: CaptionEncoder | None = None
        if text_conditional:
            # one-line errors for class labels on top of captions, or data without image + caption
            _, txt = image_caption_specs("ddpm with text_conditional=True", spec, conditional)
            self.text_encoder = CaptionEncoder(int(txt.levels), int(txt.shape[0]), text_dim, text_hidden)
            # per instance: a caption -> image model (as pixelcnn_text), so likelihood metrics hand it
            # {"x", "text"} and the figures and ``genlab translate`` ask it for images of captions
            self.capabilities = dataclasses.replace(
                type(self).capabilities,
                sample=False,
                conditional=False,
                modalities=("x", "text"),
                targets=("x",),
                notes="p(x | text) by diffusion; caption vector (embedding + biGRU) as the guidance condition; "
                "log_prob: variational bound; translate text->x by DDIM (sample(n, cond=ids) too)",
            )
        self.text_conditional = bool(text_conditional)
        self._init_conditioning(conditional)
        if text_conditional:
            self.c_dim = text_hidden
        self.guidance, self.sample_steps, self.eta = self._sampling_options(sample_steps, eta, guidance)
        self.timesteps, self.prediction, self.p_uncond = timesteps, prediction, float(p_uncond)
        self.image = is_image
        self.levels = int(spec.levels) if is_image and spec.levels else None
        self.discrete = self.levels is not None
        self.bound_timesteps, self.variance = bound_timesteps, variance
        # Affine map data -> model space y = scale * x + shift: images onto [-1, 1], vectors as they are.
        lo, hi = spec.value_range if is_image and spec.value_range else (-1.0, 1.0)
        self.scale, self.shift = 2.0 / (hi - lo), -1.0 - 2.0 * lo / (hi - lo)
        self.clip = is_image  # x0 predictions of bounded data are clipped to [-1, 1] (Ho et al.'s sampler)

        betas = beta_schedule(schedule, timesteps)
        abar = torch.cumprod(1 - betas, 0)
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64, device="cpu"), abar[:-1]])
        # Float64 tables on the CPU, outside the state dict: they follow from the config, and the float32
        # cast of model.float() would lose 1 - abar_t at small t. Gathered per call in x's dtype.
        self.tables = {
            "beta": betas,
            "abar": abar,
            "abar_prev": abar_prev,
            "post_var": betas * (1 - abar_prev) / (1 - abar),  # beta~_t (eq. 7); 0 at t = 1
            # sigma_t^2 of p(x_{t-1} | x_t) in the bound: beta~_t ("small") or beta_t ("large")
            "p_var": betas * (1 - abar_prev) / (1 - abar) if variance == "small" else betas,
            "post_c0": abar_prev.sqrt() * betas / (1 - abar),  # coefficient of x_0 in mu~_t
        }
        emb = time_dim or 4 * channels
        t_scale = 1000.0 / timesteps
        if is_image:
            self.net: torch.nn.Module = UNet(
                spec.shape,
                channels,
                channel_mult,
                num_res_blocks,
                attention,
                emb,
                self.c_dim,
                dropout,
                t_scale,
                scale_shift_norm,
            )
        else:
            n_blocks = len(channel_mult) * num_res_blocks
            self.net = VectorNet(spec.dim, 4 * channels, n_blocks, emb, self.c_dim, dropout, t_scale)

    def _sampling_options(self, steps: int, eta: float, guidance: float) -> tuple[float, int, float]:
        _check(steps >= 1, f"steps={steps}: expected an integer >= 1 DDIM steps")
        _check(0 <= eta <= 1, f"eta={eta}: expected a number in [0, 1]")
        _check(math.isfinite(guidance) and guidance >= 0, f"guidance={guidance}: expected a finite scale >= 0")
        return float(guidance), int(steps), float(eta)

    # --- numerics ---------------------------------------------------------------------------------
    def coef(self, name: str, t: Tensor, x: Tensor) -> Tensor:
        """Schedule table ``name`` at steps t [B] (ints 0..T-1 for the paper's t = 1..T), shaped to broadcast with x."""
        return self.tables[name].to(t.device)[t].to(x.dtype).view(-1, *[1] * (x.dim() - 1))

    def q_sample(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, a draw of q(x_t | x_0) (eq. 4); all [B, *shape]."""
        abar = self.coef("abar", t, x0)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * eps

    def model_output(self, x_t: Tensor, t: Tensor, c: Tensor | None, guidance: float = 0.0) -> Tensor:
        """The network's prediction (eps or v) [B, *shape] at x_t, steps t [B] and condition vector c [B, K];
        with guidance w > 0: (1 + w) out(c) - w out(null), the null class being c = 0 (the output is affine
        in eps and in v alike, so guiding either is guiding eps)."""
        if c is None or guidance == 0:
            return self.net(x_t, t, c)
        both = self.net(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([c, torch.zeros_like(c)]))
        out_c, out_null = both.chunk(2)
        return (1 + guidance) * out_c - guidance * out_null

    def eps_x0(self, x_t: Tensor, t: Tensor, out: Tensor, clip: bool = False) -> tuple[Tensor, Tensor]:
        """(eps_hat, x0_hat) from the network output at (x_t, t); ``clip``: x0_hat clamped to [-1, 1] and
        eps_hat recomputed to match it (as DDIM does)."""
        abar = self.coef("abar", t, x_t)
        a, s = abar.sqrt(), (1 - abar).sqrt()
        if self.prediction == "eps":
            eps, x0 = out, (x_t - s * out) / a
        else:  # v = a eps - s x0  =>  x0 = a x_t - s v,  eps = s x_t + a v
            eps, x0 = s * x_t + a * out, a * x_t - s * out
        if clip:
            x0 = x0.clamp(-1, 1)
            eps = (x_t - a * x0) / s
        return eps, x0

    def to_model(self, x: Tensor) -> Tensor:
        """Data [B, *shape] -> model space (discrete images: levels onto the grid of L values in [-1, 1])."""
        if self.levels is not None:
            return to_levels(x, self.levels).to(x.dtype) * (2.0 / (self.levels - 1)) - 1
        return self.scale * x + self.shift

    def from_model(self, y: Tensor) -> Tensor:
        """Model space -> data (images clamped to their range; discrete images rounded to the nearest level)."""
        if self.levels is not None:
            return to_levels((y + 1) / 2, self.levels).to(y.dtype) / (self.levels - 1)
        x = (y.clamp(-1, 1) if self.clip else y) - self.shift
        return x / self.scale

    # --- the condition ---------------------------------------------------------------------------
    def condition(self, batch: dict[str, Tensor]) -> Tensor | None:
        """The caption ids ``batch["text"]`` [B, T] (text_conditional), else as every family (class ids or None)."""
        if not self.text_conditional:
            return super().condition(batch)
        if "text" not in batch:
            raise KeyError("a text_conditional ddpm needs the caption 'text' in the batch; it has none")
        return batch["text"]

    def cond_embedding(self, cond: Tensor | None, ref: Tensor) -> Tensor | None:
        """The condition vector [B, c_dim] in ``ref``'s dtype: the caption vector h of caption ids [B, T]
        (text_conditional), else the one-hot class (see the base class); None when unconditional."""
        if self.text_encoder is None:
            return super().cond_embedding(cond, ref)
        if cond is None:
            raise ValueError("this ddpm is text_conditional: pass cond = caption token ids long [B, T]")
        return self.text_encoder(cond).to(ref.dtype)

    def _image_and_cond(self, x: Modalities, cond: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """(images [B, *shape], condition) from a tensor x, or (text_conditional) from {"x": images, "text":
        ids} as the likelihood metrics and ``genlab encode`` pass it; ``cond``, when given, wins over x["text"]."""
        if not isinstance(x, dict):
            return x, cond
        if not self.text_conditional or "x" not in x or not set(x) <= {"x", "text"}:
            raise ValueError(
                f"ddpm takes images x, or {{'x', 'text'}} when text_conditional; got a dict of {sorted(x)}"
            )
        return x["x"], x.get("text") if cond is None else cond

    # --- the protocol -----------------------------------------------------------------------------
    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """L_simple: mean squared error of the eps (or v) prediction at t ~ U{1..T} ("loss"); "mse" is the
        error of the implied eps prediction (the same number for ``prediction="eps"``)."""
        x0 = self.to_model(batch["x"])
        c = self.cond_embedding(self.condition(batch), x0)
        if c is not None and self.training and self.p_uncond > 0:  # classifier-free guidance: null class/caption
            c = c * (torch.rand(len(x0), 1, device=x0.device) >= self.p_uncond).to(c.dtype)
        t = torch.randint(0, self.timesteps, (len(x0),), device=x0.device)
        eps = torch.randn_like(x0)
        out = self.net(self.q_sample(x0, t, eps), t, c)
        abar = self.coef("abar", t, x0)
        target = eps if self.prediction == "eps" else abar.sqrt() * eps - (1 - abar).sqrt() * x0
        err = (out - target).pow(2)
        mse = err.mean() if self.prediction == "eps" else (abar * err).mean()  # eps - eps_hat = sqrt(abar)(v - v_hat)
        return {"loss": err.mean(), "mse": mse.detach()}

    def terms_at(self, x0: Tensor, c: Tensor | None, steps: Tensor) -> Tensor:
        """Terms of the bound [B, len(steps)] in nats for model-space x0 [B, *shape]: at step index k
        (the paper's t = k + 1) L_0 = -log p(x_0 | x_1) if k = 0, else L_k = KL(q(x_k | x_{k+1}, x_0) ||
        p(x_k | x_{k+1})), each from one draw of x_{k+1} ~ q. Steps are batched in chunks of ~2^18 values."""
        b = len(x0)
        chunk = max(1, 2**18 // max(1, x0[0].numel() * b))
        out = []
        for ks in steps.split(chunk):
            t = ks.to(x0.device).repeat_interleave(b)  # (m B,)
            x = x0.repeat(len(ks), *[1] * (x0.dim() - 1))
            cc = None if c is None else c.repeat(len(ks), 1)
            x_t = self.q_sample(x, t, torch.randn_like(x))
            _, x0_hat = self.eps_x0(x_t, t, self.model_output(x_t, t, cc), clip=self.clip)
            # KL(N(mu~(x_t, x_0), beta~) || N(mu~(x_t, x0_hat), sigma^2)) per dimension; the means differ
            # by post_c0 (x_0 - x0_hat), and the variances only for variance="large"
            ratio = self.coef("post_var", t, x) / self.coef("p_var", t, x).clamp(min=1e-30)
            var_kl = 0.5 * (ratio - 1 - torch.log(ratio.clamp(min=1e-30)))
            kl = var_kl + self.coef("post_c0", t, x).pow(2) * (x - x0_hat).pow(2) / (
                2 * self.coef("p_var", t, x).clamp(min=1e-30)
            )
            # L_0: N(x0_hat, beta_1) (mu~ at t = 1 is x0_hat) integrated over the bin, or a density
            log_var = math.log(float(self.tables["beta"][0]))
            if self.levels is not None:
                nll0 = -discretized_gaussian_log_prob(x, x0_hat, 0.5 * log_var, self.levels)
            else:
                nll0 = 0.5 * ((x - x0_hat).pow(2) / math.exp(log_var) + log_var + LOG_2PI)
            term = torch.where((t == 0).view(-1, *[1] * (x.dim() - 1)), nll0, kl)
            out.append(term.flatten(1).sum(1).view(len(ks), b).T)
        return torch.cat(out, 1)

    def prior_term(self, x0: Tensor) -> Tensor:
        """L_T = KL(q(x_T | x_0) || N(0, I)) [B] in nats, in closed form."""
        abar = float(self.tables["abar"][-1])
        return 0.5 * (abar * x0.pow(2) + (1 - abar) - 1 - math.log(1 - abar)).flatten(1).sum(1)

    def bound_terms(self, x: Modalities, cond: Tensor | None = None) -> Tensor:
        """Every term of the bound [B, T + 1] in nats for data x: columns 0..T-1 as in :meth:`terms_at` at
        all steps, column T the prior term L_T; -(row sum) = :meth:`log_prob` (discrete data: minus the
        log-Jacobian, which is 0 there). Costs T network passes per example."""
        x, cond = self._image_and_cond(x, cond)
        x0 = self.to_model(x)
        c = self.cond_embedding(cond, x0)
        steps = torch.arange(self.timesteps)
        return torch.cat([self.terms_at(x0, c, steps), self.prior_term(x0)[:, None]], 1)

    @torch.no_grad()
    def log_prob(self, x: Modalities, cond: Tensor | None = None) -> Tensor:
        """[B] variational lower bound on log p(x | c) in nats: of the probability mass of data with levels,
        else of the density of x in the data's own units. Exact sum over all T steps (T network passes per
        example; one draw of x_t per step), or with ``bound_timesteps`` = k an unbiased estimate from L_0 and
        one step in each of k equal strata of the KL steps, weighted by the stratum's size (k + 1 passes).
        Guidance is not used: this is the conditional model itself. text_conditional: c is the caption, given
        as ``cond`` (ids [B, T]) or in x = {"x": images, "text": ids}; the bound is then on log p(x | caption)."""
        x, cond = self._image_and_cond(x, cond)
        k = self.bound_timesteps
        if k == 0 or k >= self.timesteps - 1:
            nll = self.bound_terms(x, cond).sum(1)
        else:
            # L_0 (the decoder, the largest and most variable term) always; KL steps 1..T-1 in k strata
            x0 = self.to_model(x)
            edges = 1 + torch.linspace(0, self.timesteps - 1, k + 1).long()
            sizes = torch.cat([torch.ones(1, dtype=torch.long), edges.diff()])
            steps = torch.cat([torch.zeros(1, dtype=torch.long), edges[:-1] + (torch.rand(k) * sizes[1:]).long()])
            terms = self.terms_at(x0, self.cond_embedding(cond, x0), steps)
            nll = (terms * sizes.to(terms)).sum(1) + self.prior_term(x0)
        log_jac = 0.0 if self.levels is not None else self.spec.dim * math.log(abs(self.scale))
        return -nll + log_jac

    def ddim(
        self,
        x: Tensor,
        c: Tensor | None,
        steps: int,
        eta: float = 0.0,
        guidance: float = 0.0,
        clip: bool = False,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """DDIM (Song et al., eq. 12) from x = x_T [B, *shape] (model space) down to x_0 on ``steps`` of the
        T steps (evenly spaced, always from T); eta = 1 with steps = T is DDPM's ancestral sampler."""
        ts = torch.linspace(self.timesteps - 1, 0, min(steps, self.timesteps)).round().long().flip(0)
        abar = self.tables["abar"]
        for i in reversed(range(len(ts))):
            t = ts[i].expand(len(x)).to(x.device)
            eps, x0 = self.eps_x0(x, t, self.model_output(x, t, c, guidance), clip)
            a_t, a_prev = float(abar[ts[i]]), float(abar[ts[i - 1]]) if i > 0 else 1.0
            sigma = eta * math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
            x = math.sqrt(a_prev) * x0 + math.sqrt(max(0.0, 1 - a_prev - sigma**2)) * eps
            if sigma > 0:
                x = x + sigma * torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        return x

    @torch.no_grad()
    def sample(
        self,
        n: int,
        cond: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
        steps: int | None = None,
        eta: float | None = None,
        guidance: float | None = None,
    ) -> Tensor:
        """[n, *data_shape] samples in the data's range (levels for discrete data) by DDIM from x_T ~ N(0, I)
        with ``steps``, ``eta`` and guidance scale ``guidance`` (defaults: the model's ``sample_steps``,
        ``eta``, ``guidance``). Costs steps network passes (twice that with guidance). ``cond``: class ids
        [n], or (text_conditional) caption ids [n, T], one caption per sample."""
        if self.text_conditional and cond is None:  # as pixelcnn_text: the trainer's sample grid skips it
            raise NotImplementedError(
                "a text_conditional ddpm models p(image | caption), not captions: pass cond = caption ids [n, T], "
                "or translate({'text': ids})"
            )
        if self.text_conditional and len(cond) != n:
            raise ValueError(f"sample(n={n}, cond): a text_conditional ddpm needs n captions [n, T]; got {len(cond)}")
        guidance, steps, eta = self._sampling_options(
            self.sample_steps if steps is None else steps,
            self.eta if eta is None else eta,
            self.guidance if guidance is None else guidance,
        )
        w = next(self.parameters())
        z = torch.randn(n, *self.spec.shape, generator=generator, dtype=w.dtype, device=w.device)
        c = self.cond_embedding(cond, z)
        return self.from_model(self.ddim(z, c, steps, eta, guidance, self.clip, generator))

    @torch.no_grad()
    def encode(self, x: Modalities, cond: Tensor | None = None) -> Tensor:
        """[B, D] x_T from DDIM's deterministic map run forward (eta = 0, ``sample_steps`` steps, no
        guidance): x_next = sqrt(abar_next) x0_hat + sqrt(1 - abar_next) eps_hat with eps_hat taken at the
        current point (at the data itself, at the first step). :meth:`decode` inverts it. text_conditional:
        the caption as ``cond`` or x = {"x", "text"} (see :meth:`log_prob`)."""
        x, cond = self._image_and_cond(x, cond)
        y = self.to_model(x)
        c = self.cond_embedding(cond, y)
        ts = torch.linspace(self.timesteps - 1, 0, min(self.sample_steps, self.timesteps)).round().long().flip(0)
        abar = self.tables["abar"]
        for i in range(len(ts)):
            cur = ts[max(i - 1, 0)]
            a_cur, a_next = (float(abar[ts[i - 1]]) if i > 0 else 1.0), float(abar[ts[i]])
            t = cur.expand(len(y)).to(y.device)
            out = self.model_output(y, t, c)
            eps, _ = self.eps_x0(y, t, out)
            x0 = (y - math.sqrt(1 - a_cur) * eps) / math.sqrt(a_cur)
            y = math.sqrt(a_next) * x0 + math.sqrt(1 - a_next) * eps
        return y.flatten(1)

    @torch.no_grad()
    def decode(
        self, z: Tensor, cond: Tensor | None = None, *, mean: bool = True, generator: torch.Generator | None = None
    ) -> Tensor:
        """[B, *data_shape] data from x_T = z [B, D]: deterministic DDIM (``mean=True``, the inverse of
        :meth:`encode`, unclipped) or, with ``mean=False``, DDIM with the model's ``eta`` (a draw)."""
        x = z.view(len(z), *self.spec.shape)
        c = self.cond_embedding(cond, x)
        return self.from_model(self.ddim(x, c, self.sample_steps, 0.0 if mean else self.eta, generator=generator))

    @torch.no_grad()
    def reconstruct(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """[B, *data_shape] decode(encode(x)): DDIM inversion and back (2 * ``sample_steps`` network passes)."""
        return self.decode(self.encode(x, cond), cond)

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
        """Images {"x": [B * n, *shape]} for captions {"text": ids [B, T]} (text_conditional only), example-major
        (rows i*n .. i*n + n - 1 are for caption i): :meth:`sample` with the model's steps, eta and guidance.
        ``mean``: eta = 0 (DDIM's deterministic map of a drawn x_T; a diffusion model has no decoder mean)."""
        if not self.text_conditional:
            raise ValueError("ddpm translates captions to images only when built with text_conditional=True")
        check_one_way("ddpm", source, targets, n, "text", "x")
        ids = caption_ids(source["text"], self.text_encoder.length).repeat_interleave(n, 0)  # type: ignore[union-attr]
        return {"x": self.sample(len(ids), ids, generator=generator, eta=0.0 if mean else None)}
