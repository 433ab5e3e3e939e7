"""A sentence VAE: a GRU encoder and a z-conditioned autoregressive GRU decoder over token ids.

Bowman et al., "Generating Sentences from a Continuous Space", CoNLL 2016 (the RNN VAE for text,
KL cost annealing and word dropout); Burda et al., "Importance Weighted Autoencoders", ICLR 2016
(the IWAE-k bound used by ``log_prob``).

    log p(x) >= E_q[log p(x|z)] - KL(q(z|x) || N(0, I))                      (ELBO, k = 1)
    log p(x) >= E[log (1/k) sum_i p(x, z_i) / q(z_i|x)],  z_i ~ q(z|x)        (IWAE-k)
    p(x|z) = prod_t p(x_t | x_<t, z)                                          (teacher-forced GRU)

The decoder's GRU starts from h_0 = tanh(W z + b) and reads [embed(x_{t-1}), z] at step t (a learned
start vector in place of x_0), so p(x|z) is a normalised distribution over all V^T sequences of the
data's length T (padding included). Two remedies against the decoder ignoring z (posterior
collapse), both from the paper: the KL weight rises linearly from 0 to 1 over ``warmup_steps``
training steps, and during training each decoder input token is replaced, with probability
``word_dropout``, by ``<unk>`` (or by a dedicated extra embedding when the vocabulary has no
``<unk>``), so the decoder must take what it cannot read from the prefix from z.

Neither remedy helps where z cannot raise the likelihood: on ``shapes-captions`` the five caption
words are independent, so a decoder that ignores z already attains log p(x) and the ELBO's optimum
is the collapsed posterior (measured: KL 1.1 nats per caption and ELBO -7.22 nats against the exact
-log 1134 = -7.03 after 1,000 steps at weight 1). ``beta`` < 1 trades ELBO for an informative code
(what the latent edits of :mod:`genlab.swap` need), and the run's ``elbo`` still reports the bound.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..data.spec import DataSpec
from ..distributions import LOG_2PI, diag_gaussian_log_prob, gaussian_kl_standard, sample_categorical
from ..protocol import Capabilities, GenerativeModel


class SentenceVAE(GenerativeModel):
    """Bowman et al.'s RNN VAE over token ids (a token data set, or the captions of multimodal data).

    Args (the config; vocabulary and length come from ``spec``):
        z_dim: latent size.
        embed: token embedding width (shared by encoder and decoder).
        hidden: GRU width of the encoder and of the decoder.
        word_dropout: probability of replacing each decoder input token by ``<unk>`` in training.
        warmup_steps: the KL weight rises linearly from 0 to ``beta`` over this many training steps.
        beta: the KL weight after warm-up: 1 trains the ELBO; below 1 (a beta-VAE, Higgins et al.
            2017, with beta < 1) keeps an informative code where the ELBO's optimum has none, e.g.
            captions whose words are independent given the template (see the module notes).
        iwae_k: importance samples used by ``log_prob`` by default (1 = the ELBO).
        source: the batch key of the tokens: ``"x"`` (token data sets) or ``"text"`` (captions).
        conditional: only False (class conditioning is not implemented).
    """

    likelihood = "bound"
    capabilities = Capabilities(
        encode=True,
        decode=True,
        reconstruct=True,
        iwae=True,
        sample_options=("mean",),
        figures=("samples",),
        notes="log_prob: ELBO (k=1) or IWAE-k per sentence in nats; encode: posterior mean; decode: greedy; "
        "reconstruct(x) (scored by exact and per-token agreement) and interpolate(a, b, steps) return token ids",
    )
    train_defaults = {"steps": 1000, "batch_size": 64, "lr": 2e-3, "eval_every": 200}

    def __init__(
        self,
        spec: DataSpec,
        z_dim: int = 16,
        embed: int = 64,
        hidden: int = 128,
        word_dropout: float = 0.25,
        warmup_steps: int = 0,
        beta: float = 1.0,
        iwae_k: int = 1,
        source: str = "x",
        conditional: bool = False,
    ) -> None:
        super().__init__(spec)
        if source not in ("x", "text"):
            raise ValueError(f"source must be 'x' or 'text'; got {source!r}")
        if source == "x" and spec.kind != "tokens":
            raise ValueError(
                "the sentence VAE models token ids; "
                f"data set {spec.name!r} has kind {spec.kind!r} (captions: source='text')"
            )
        if source == "text" and not (spec.vocab and "text_len" in spec.extra):
            raise ValueError(f"source='text' needs a data set with captions ('text' tokens); {spec.name!r} has none")
        if conditional:
            raise ValueError(
                f"the sentence VAE is not class-conditional: conditional=True is not supported (data set {spec.name!r})"
            )
        if min(z_dim, embed, hidden, iwae_k) < 1 or warmup_steps < 0 or not 0.0 <= word_dropout < 1.0:
            raise ValueError(
                "need z_dim, embed, hidden, iwae_k >= 1, warmup_steps >= 0 and 0 <= word_dropout < 1; "
                f"got {z_dim}, {embed}, {hidden}, {iwae_k}, {warmup_steps}, {word_dropout}"
            )
        if not 0.0 < beta <= 1e3:
            raise ValueError(f"beta (the KL weight after warm-up) must be > 0; got {beta}")
        self._init_conditioning(False)
        self.source, self.discrete = source, True
        self.data_key = source  # the batch key this model scores
        self.vocab_size = len(spec.vocab) if source == "text" else int(spec.levels or spec.vocab_size or 0)
        self.seq_len = int(spec.extra["text_len"]) if source == "text" else int(spec.shape[0])
        if self.vocab_size < 2:
            raise ValueError(f"token data set {spec.name!r} needs levels (vocabulary size) >= 2")
        vocab = tuple(spec.vocab or ())
        # Word dropout's token: <unk> if the vocabulary has one, else an extra embedding row (input only).
        self.drop_id = vocab.index("<unk>") if "<unk>" in vocab[: self.vocab_size] else self.vocab_size
        self.z_dim, self.iwae_k, self.warmup_steps = z_dim, iwae_k, warmup_steps
        self.word_dropout, self.beta = float(word_dropout), float(beta)
        self.emb = nn.Embedding(self.vocab_size + (self.drop_id == self.vocab_size), embed)
        self.enc_rnn = nn.GRU(embed, hidden, batch_first=True)
        self.enc_head = nn.Linear(hidden, 2 * z_dim)
        self.start = nn.Parameter(torch.zeros(embed))
        self.dec_init = nn.Linear(z_dim, hidden)
        self.dec_rnn = nn.GRU(embed + z_dim, hidden, batch_first=True)
        self.out = nn.Linear(hidden, self.vocab_size)
        # Counts training steps so that the KL annealing survives checkpoint/resume exactly.
        self.register_buffer("train_step", torch.zeros((), dtype=torch.long))

    # --- networks -----------------------------------------------------------------------------
    def _tokens(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """The token ids [B, T] long; with ``source='text'`` the trainer passes the image as x and
        the captions as cond (see :meth:`condition`), which is undone here."""
        if self.source == "text" and x.is_floating_point() and cond is not None:
            x = cond
        if x.is_floating_point() or x.dim() != 2 or x.shape[1] != self.seq_len:
            raise ValueError(f"expected token ids long [B, {self.seq_len}]; got {x.dtype} {tuple(x.shape)}")
        return x.long()

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of q(z | x), each [B, z_dim], from the encoder GRU's last state."""
        _, h = self.enc_rnn(self.emb(x))  # h: (1, B, hidden)
        mu, logvar = self.enc_head(h[0]).chunk(2, -1)
        return mu, logvar.clamp(-12.0, 8.0)

    def decoder_logits(self, x: Tensor, z: Tensor) -> Tensor:
        """Teacher-forced logits [B, T, V]: row t gives p(x_t | x_<t, z). Word dropout on the inputs
        x_<t applies in training mode only."""
        inp = x[:, :-1]
        if self.training and self.word_dropout > 0:
            drop = torch.rand(inp.shape, device=inp.device) < self.word_dropout
            inp = inp.masked_fill(drop, self.drop_id)
        e = torch.cat([self.start.expand(x.shape[0], 1, -1), self.emb(inp)], 1)  # (B, T, embed)
        e = torch.cat([e, z[:, None].expand(-1, e.shape[1], -1)], -1)
        h, _ = self.dec_rnn(e, torch.tanh(self.dec_init(z))[None].contiguous())
        return self.out(h)

    def log_px_z(self, x: Tensor, z: Tensor) -> Tensor:
        """[B] log p(x | z) in nats, summed over the T tokens."""
        logp = self.decoder_logits(x, z).log_softmax(-1)
        return logp.gather(-1, x[..., None])[..., 0].sum(-1)

    # --- the protocol -------------------------------------------------------------------------
    def condition(self, batch: dict[str, Tensor]) -> Tensor | None:
        # As TransformerLM: on captions "x" is the image, so the trainer's log_prob(batch["x"],
        # condition(batch)) hands the caption tokens over as cond.
        return batch["text"] if self.source == "text" else None

    def kl_weight(self) -> float:
        """The annealed KL weight at the current training step (``beta`` without warm-up)."""
        ramp = 1.0 if self.warmup_steps == 0 else min(1.0, float(self.train_step) / self.warmup_steps)
        return self.beta * ramp

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Per sentence, in nats: ``loss`` = weight * KL - E_q[log p(x|z)] (the negative ELBO once the
        KL weight reaches 1), with "elbo" (the true bound, whatever the weight), "recon", "kl",
        "kl_weight" and "bits_per_token" logged."""
        x = self._tokens(batch[self.source])
        mu, logvar = self.posterior(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        rec = self.log_px_z(x, z)
        kl = gaussian_kl_standard(mu, logvar)
        w = self.kl_weight()
        if self.training:
            self.train_step += 1
        elbo = (rec - kl).mean().detach()
        return {
            "loss": (w * kl - rec).mean(),
            "elbo": elbo,
            "recon": -rec.mean().detach(),
            "kl": kl.mean().detach(),
            "kl_weight": torch.tensor(w),
            "bits_per_token": -elbo / (x.shape[1] * math.log(2)),
        }

    def log_prob(self, x: Tensor, cond: Tensor | None = None, k: int | None = None) -> Tensor:
        """[B] IWAE-k lower bound on log p(x) in nats per sentence (k = ``iwae_k`` by default; k=1 is
        the ELBO with a sampled KL)."""
        x = self._tokens(x, cond)
        k = self.iwae_k if k is None else int(k)
        if k < 1:
            raise ValueError(f"k must be >= 1; got {k}")
        mu, logvar = self.posterior(x)
        std = torch.exp(0.5 * logvar)
        chunks: list[Tensor] = []
        chunk = max(1, 4096 // max(1, x.shape[0]))  # bound memory at chunk * B decoder passes
        for s in range(0, k, chunk):
            kk = min(chunk, k - s)
            z = mu + std * torch.randn(kk, *mu.shape, dtype=mu.dtype, device=mu.device)  # (kk, B, z)
            xr = x.unsqueeze(0).expand(kk, *x.shape).flatten(0, 1)
            lp = self.log_px_z(xr, z.flatten(0, 1)).view(kk, -1)
            log_pz = -0.5 * (z.pow(2) + LOG_2PI).sum(-1)
            chunks.append(lp + log_pz - diag_gaussian_log_prob(z, mu, logvar))
        return torch.logsumexp(torch.cat(chunks, 0), 0) - math.log(k)

    @torch.no_grad()
    def decode(
        self, z: Tensor, cond: Tensor | None = None, *, mean: bool = True, generator: torch.Generator | None = None
    ) -> Tensor:
        """[B, T] token ids for latents z [B, z_dim], one token at a time: the most likely token at
        each step (``mean=True``, greedy) or a draw from p(x_t | x_<t, z) (ancestral sampling)."""
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must be [B, {self.z_dim}]; got {tuple(z.shape)}")
        z = z.to(self.start.dtype)
        n = z.shape[0]
        out = torch.zeros(n, self.seq_len, dtype=torch.long, device=z.device)
        h = torch.tanh(self.dec_init(z))[None].contiguous()
        e = self.start.expand(n, -1)
        for t in range(self.seq_len):
            o, h = self.dec_rnn(torch.cat([e, z], -1)[:, None], h)
            logits = self.out(o[:, 0])
            out[:, t] = logits.argmax(-1) if mean else sample_categorical(logits, generator)
            e = self.emb(out[:, t])
        return out

    @torch.no_grad()
    def sample(
        self, n: int, cond: Tensor | None = None, *, generator: torch.Generator | None = None, mean: bool = False
    ) -> Tensor:
        """[n, T] token ids: z ~ N(0, I), then x ~ p(x | z) (``mean=True``: greedy decoding of z)."""
        z = torch.randn(n, self.z_dim, generator=generator, device=self.device, dtype=self.start.dtype)
        return self.decode(z, mean=mean, generator=generator)

    def encode(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """[B, z_dim] posterior mean E_q[z | x]."""
        return self.posterior(self._tokens(x, cond))[0]

    @torch.no_grad()
    def reconstruct(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """[B, T] greedy decoding of the posterior mean of each sentence."""
        return self.decode(self.encode(x, cond))

    @torch.no_grad()
    def interpolate(self, a: Tensor, b: Tensor, steps: int = 8) -> Tensor:
        """[steps, T] greedy decodings along the line between the posterior means of the sentences
        a and b (token ids [T] or [1, T]), a's first and b's last (Bowman et al.'s homotopies)."""
        if steps < 2:
            raise ValueError(f"steps must be >= 2; got {steps}")
        za, zb = self.encode(a.reshape(1, -1)), self.encode(b.reshape(1, -1))
        w = torch.linspace(0, 1, steps, dtype=za.dtype, device=za.device)[:, None]
        return self.decode((1 - w) * za + w * zb)
