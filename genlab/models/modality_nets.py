"""The networks of one modality in the multimodal VAEs (:mod:`genlab.models.multimodal`): a Gaussian
encoder q(latent | x_m) and a decoder p(x_m | latent), chosen from the modality's spec.

Conv nets (:class:`~genlab.nn.ConvEncoder` / ``ConvDecoder``) for images. For token ids an
embedding + GRU encoder and (``text_decoder="gru"``, the default) the autoregressive GRU decoder of
Bowman et al., "Generating Sentences from a Continuous Space", CoNLL 2016: p(t_1..t_T | z) =
prod_i p(t_i | t_<i, z), initial state tanh(W z + b), z concatenated to every step's input, teacher
forcing in training (:class:`CaptionGRU`); ``text_decoder="independent"`` is the older MLP of
independent categoricals per position (:class:`IndependentTokens`), whose samples mix the words of
several captions. Strided 1-D convolutions (kernel 8, stride 4) and an MLP decoder for audio; MLPs
for vectors. Likelihoods from :func:`~genlab.distributions.choose_likelihood` (Bernoulli for binary
images ...); 8-bit mu-law audio (``extra["encoding"] == "mu-law-8bit"``) gets a discretized logistic
over its 256 codes; continuous data a Gaussian. Every likelihood is a mass on the data's levels or a
density of continuous data, so bits/dim need no dequantization offset.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.audio import mu_law_decode, mu_law_encode
from ..data.spec import DataSpec
from ..distributions import Likelihood, choose_likelihood, sample_categorical, to_levels
from ..nn import MLP, ConvDecoder, ConvEncoder, activation

MU_LAW = "mu-law-8bit"


def sequence_log_prob(logits: Tensor, y: Tensor) -> Tensor:
    """[N] sum_i log softmax(logits[:, i])[y_i] in nats: logits [N, T, V], token ids y [N, T]."""
    return -F.cross_entropy(logits.transpose(1, 2), y, reduction="none").sum(1)


# --- token decoders: log_prob(lat [N, latent], y [N, T]) -> [N], sample(lat, generator, greedy) -> [N, T]
class IndependentTokens(MLP):
    """p(t_1..t_T | lat) = prod_i Cat(t_i; softmax(MLP(lat)_i)): independent categoricals per position.

    The positions are independent given the latent, so samples can mix the words of several captions."""

    def __init__(self, latent: int, hidden: int, length: int, vocab: int, act: str) -> None:
        super().__init__(latent, [hidden], length * vocab, act)
        self.length, self.vocab = length, vocab

    def log_prob(self, lat: Tensor, y: Tensor) -> Tensor:
        """[N] log p(y | lat) in nats: latents [N, latent], ids y [N, T]."""
        return sequence_log_prob(self(lat).view(len(lat), self.length, self.vocab), y)

    def sample(self, lat: Tensor, generator: torch.Generator | None, greedy: bool) -> Tensor:
        """Ids [N, T]: one draw per position, or (``greedy``) each position's most likely token (the mode)."""
        logits = self(lat).view(len(lat), self.length, self.vocab)  # (N, T, V)
        if greedy:
            return logits.argmax(-1)
        return torch.multinomial(logits.softmax(-1).flatten(0, 1), 1, generator=generator).view(logits.shape[:2])


class CaptionGRU(nn.Module):
    """Autoregressive decoder p(t_1..t_T | lat) = prod_i p(t_i | t_<i, lat) (Bowman et al. 2016).

    h_0 = tanh(W lat + b); step i reads [e(t_{i-1}); lat] (e(t_0) a learned start embedding, the row
    ``vocab`` of the embedding), updates the GRU state h_i and predicts t_i from softmax(U h_i + c).
    ``log_prob`` runs all T steps at once on the true prefixes (teacher forcing) and is exact."""

    def __init__(self, latent: int, hidden: int, length: int, vocab: int) -> None:
        super().__init__()
        self.length, self.vocab = length, vocab
        self.init = nn.Linear(latent, hidden)
        self.embed = nn.Embedding(vocab + 1, hidden)  # + the start token
        self.gru = nn.GRU(hidden + latent, hidden, batch_first=True)
        self.out = nn.Linear(hidden, vocab)  # the output layer, registered last

    def _step(self, prev: Tensor, lat: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """Logits [N, S, V] and the new state [1, N, H] after S steps on previous ids [N, S]."""
        inp = torch.cat([self.embed(prev), lat[:, None].expand(-1, prev.shape[1], -1)], -1)  # (N, S, H + L)
        o, h = self.gru(inp, h)
        return self.out(o), h

    def log_prob(self, lat: Tensor, y: Tensor) -> Tensor:
        """[N] log p(y | lat) in nats (exact): latents [N, latent], ids y [N, T]."""
        prev = F.pad(y[:, :-1], (1, 0), value=self.vocab)  # (N, T): start, t_1 .. t_{T-1}
        logits, _ = self._step(prev, lat, torch.tanh(self.init(lat))[None])
        return sequence_log_prob(logits, y)

    def sample(self, lat: Tensor, generator: torch.Generator | None, greedy: bool) -> Tensor:
        """Ids [N, T] token by token: ancestral sampling from p(t_i | t_<i, lat), or (``greedy``) the
        most likely next token at each step -- a greedy decode, not the most likely sequence."""
        h = torch.tanh(self.init(lat))[None]  # (1, N, H)
        prev = torch.full((len(lat), 1), self.vocab, dtype=torch.long, device=lat.device)
        ids = []
        for _ in range(self.length):
            logits, h = self._step(prev, lat, h)  # (N, 1, V)
            t = logits[:, 0].argmax(-1) if greedy else sample_categorical(logits[:, 0], generator)
            ids.append(t)
            prev = t[:, None]
        return torch.stack(ids, 1)


TEXT_DECODERS = ("gru", "independent")  # CaptionGRU, IndependentTokens


# --- one modality's networks ---------------------------------------------------------------------
class ModalityNet(nn.Module):
    """Encoder q(latent | x_m) and decoder p(x_m | latent) of one modality, chosen from its spec.

    ``posterior(x)`` gives the mean and log-variance [B, latent]; ``log_lik(latent [N, latent], y)``
    scores ``y = target(x)`` ([N], nats) and ``draw(latent, ...)`` returns data in the data's space
    (image levels in [0, 1], token ids, audio in [-1, 1]). ``dec`` is the decoder network; token ids
    use ``text_decoder`` (one of :data:`TEXT_DECODERS`)."""

    def __init__(
        self, spec: DataSpec, latent: int, hidden: int, channels: int, act: str, text_decoder: str = "gru"
    ) -> None:
        super().__init__()
        if text_decoder not in TEXT_DECODERS:
            raise ValueError(f"unknown text_decoder {text_decoder!r}; expected one of {', '.join(TEXT_DECODERS)}")
        self.spec, shape = spec, tuple(spec.shape)
        self.tokens = spec.kind == "tokens"
        self.mu_law = spec.kind == "audio" and spec.extra.get("encoding") == MU_LAW
        if self.tokens:
            if len(shape) != 1 or not spec.levels:
                raise ValueError(
                    f"token modality {spec.name!r} needs shape (T,) and levels; got {shape}, {spec.levels}"
                )
            self.vocab = int(spec.levels)
            self.embed = nn.Embedding(self.vocab, hidden)
            self.body: nn.Module = nn.GRU(hidden, hidden, batch_first=True)
            if text_decoder == "gru":
                self.dec: nn.Module = CaptionGRU(latent, hidden, shape[0], self.vocab)
            else:
                self.dec = IndependentTokens(latent, hidden, shape[0], self.vocab, act)
        else:
            self.lik = Likelihood("logistic", 256) if self.mu_law else choose_likelihood(spec)
            out = shape[0] * self.lik.n_params
            if spec.kind == "image" and len(shape) == 3:
                self.body = nn.Sequential(ConvEncoder(shape, hidden, channels, act), activation(act))
                self.dec = ConvDecoder(latent, shape, out, channels, act)
            elif spec.kind in ("audio", "vector") and len(shape) == 1:
                self.body = (
                    self._conv1d(shape[0], hidden, channels, act)
                    if spec.kind == "audio" and shape[0] >= 32
                    else (nn.Sequential(MLP(shape[0], [hidden], hidden, act), activation(act)))
                )
                self.dec = MLP(latent, [hidden], out, act)
            else:
                raise ValueError(f"no encoder for modality {spec.name!r} of kind {spec.kind!r} and shape {shape}")
        self.head = nn.Linear(hidden, 2 * latent)

    @staticmethod
    def _conv1d(length: int, hidden: int, channels: int, act: str) -> nn.Module:
        layers: list[nn.Module] = [nn.Unflatten(1, (1, length))]  # (B, T) -> (B, 1, T)
        c = 1
        while length > 16:  # 1000 samples -> 250 -> 62 -> 15
            layers += [nn.Conv1d(c, channels, 8, stride=4, padding=2), activation(act)]
            c, length = channels, (length - 4) // 4 + 1
        return nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * length, hidden), activation(act))

    def target(self, x: Tensor) -> Tensor:
        """What ``log_lik`` scores: token ids (long), mu-law codes / 255, or the data in [0, 1]."""
        if self.tokens:
            return x.long()
        return mu_law_encode(x).to(x.dtype) / 255 if self.mu_law else self.lik.target(x)

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.tokens:
            h = self.body(self.embed(x.long()))[1][-1]  # the GRU's last state (B, hidden)
        else:
            h = self.body(self.target(x) * 2 - 1 if self.mu_law else x)  # audio: the companded signal
        mu, logvar = self.head(h).chunk(2, -1)
        return mu, logvar.clamp(-12.0, 8.0)

    def log_lik(self, lat: Tensor, y: Tensor) -> Tensor:
        """[N] log p(y | latent) in nats at latents [N, latent]; y = ``target(x)`` [N, ...]."""
        if self.tokens:
            return self.dec.log_prob(lat, y)
        return self.lik.log_prob(self.lik.split(self.dec(lat), self.spec.shape), y)

    def draw(self, lat: Tensor, generator: torch.Generator | None, mean: bool) -> Tensor:
        """Data [N, *shape] from latents [N, latent]: one draw from p(x | latent), or (``mean``) the
        decoder mean (tokens: greedy decoding, see the token decoders)."""
        if self.tokens:
            return self.dec.sample(lat, generator, mean)
        params = self.lik.split(self.dec(lat), self.spec.shape)
        u = self.lik.mean(params) if mean else self.lik.sample(params, generator)
        if self.mu_law:
            return mu_law_decode(to_levels(u, 256), dtype=u.dtype)
        if self.lik.kind == "gaussian" and self.spec.value_range is not None:
            u = u.clamp(*self.spec.value_range)
        return u
