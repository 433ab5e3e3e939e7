"""A captioner conditioned through its hidden representations: image features enter every layer.

The second of the three ways the lecture names to condition a language model on another modality
(beside a prefix for a frozen LM, :mod:`genlab.models.frozen`, and plug-and-play gradients,
:mod:`genlab.steer`): a learned conditioning vector per layer, as in conditional batch/layer
modulation and the class-conditional PixelCNN's ``h + V c`` term (van den Oord et al., "Conditional
Image Generation with PixelCNN Decoders", NeurIPS 2016, eq. 4), here added to a GPT-style causal
transformer (Radford et al. 2019) trained end to end with its image encoder:

    c_l = W_l f(x)                         (f: a conv net on the image, one vector per layer l)
    h^0_t = e(t_{t-1}) + p_t               (e(t_0) a learned <start> vector, p_t learned positions)
    h^l = Block_l(h^{l-1} + c_l)           (the same c_l at every position: causality is untouched)
    log p(text | x) = sum_t log softmax(E ln(h^L_t))[t_t]       (exact, nats; E the tied embedding)

The condition never mixes positions, so the output at position t depends on tokens < t only
(tested by the gradient of the output with respect to later tokens, which is exactly zero).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.spec import DataSpec
from ..distributions import sample_categorical
from ..nn import ConvEncoder, activation
from ..protocol import Capabilities, GenerativeModel
from .transformer import Block


def image_caption_specs(name: str, spec: DataSpec, conditional: bool) -> tuple[DataSpec, DataSpec]:
    """The image ``"x"`` and caption ``"text"`` specs of ``spec`` for captioner family ``name``; a
    one-line ValueError for other data or ``conditional=True`` (shared by ``captioner`` and ``frozen``)."""
    if conditional:
        raise ValueError(f"{name} is not class-conditional: conditional=True is not supported (data set {spec.name!r})")
    keys = spec.modality_keys
    if spec.kind != "multimodal" or "x" not in keys or "text" not in keys:
        raise ValueError(
            f"{name} models image + caption pairs: it needs image 'x' + caption 'text' data; {spec.name!r} has kind "
            f"{spec.kind!r}"
        )
    img, txt = spec.modality("x"), spec.modality("text")
    if img.kind != "image" or txt.kind != "tokens" or not txt.levels:
        raise ValueError(f"{name} needs an image 'x' and tokens 'text'; {spec.name!r} has {img.kind!r}, {txt.kind!r}")
    return img, txt


def caption_ids(t: Tensor, length: int) -> Tensor:
    """Caption token ids as long [B, T] (1 <= T <= ``length``), or a one-line ValueError."""
    if t.is_floating_point() or t.dim() != 2 or not 1 <= t.shape[1] <= length:
        raise ValueError(f"captions must be token ids long [B, T <= {length}]; got {t.dtype} {tuple(t.shape)}")
    return t.long()


def check_one_way(name: str, source: Any, targets: Sequence[str] | None, n: int, key: str, target: str) -> None:
    """A one-line ValueError unless ``source`` is {key: ...}, ``targets`` is None or [target] and n >= 1:
    the only translation a one-way conditional model (image -> caption, caption -> image) makes."""
    if not isinstance(source, dict) or set(source) != {key} or list(targets or [target]) != [target] or n < 1:
        got = sorted(source) if isinstance(source, dict) else type(source).__name__
        what = {"x": "images", "text": "captions"}
        raise ValueError(
            f"{name} translates {what.get(key, key)} to {what.get(target, target)} only ({{'{key}'}} -> ['{target}'], "
            f"n >= 1); got {got} -> {targets}, n={n}"
        )


class RepresentationCaptioner(GenerativeModel):
    """p(caption | image) by a causal transformer whose every layer receives W_l f(image); see the module doc.

    Args (the config; sizes from the data's ``x`` image and ``text`` tokens):
        d_model, n_layers, n_heads, dropout: the transformer. channels, hidden: the image conv net.
        act: activation of the conv net. conditional: must stay False.
    """

    likelihood = "exact"
    capabilities = Capabilities(
        sample=False,
        modalities=("x", "text"),
        targets=("text",),
        notes="p(text | x), image features added to every layer's input; translate x->text",
    )
    train_defaults = {"steps": 500, "batch_size": 64, "lr": 2e-3, "eval_every": 100}

    def __init__(
        self,
        spec: DataSpec,
        d_model: int = 64,
        n_layers: int = 2,
        n_heads: int = 4,
        dropout: float = 0.0,
        channels: int = 32,
        hidden: int = 128,
        act: str = "relu",
        conditional: bool = False,
    ) -> None:
        super().__init__(spec)
        img, vocab, length = self.sequence_sizes(spec, conditional)
        if min(d_model, n_layers, n_heads, channels, hidden) < 1 or d_model % n_heads or not 0 <= dropout < 1:
            raise ValueError(
                f"need d_model, n_layers, n_heads, channels, hidden >= 1, d_model divisible by n_heads, 0 <= dropout "
                f"< 1; got {d_model}, {n_layers}, {n_heads}, {channels}, {hidden}, {dropout}"
            )
        self.vocab, self.length, self.d_model, self.n_layers = vocab, length, d_model, n_layers
        self.data_key, self.discrete = "text", True
        self.features = nn.Sequential(ConvEncoder(img.shape, hidden, channels, act), activation(act))
        self.cond = nn.Linear(hidden, n_layers * d_model)  # c_l = W_l f(x), all layers at once
        self.tok_emb = nn.Embedding(self.vocab, d_model)
        self.pos_emb = nn.Embedding(self.length, d_model)
        self.start = nn.Parameter(torch.zeros(1, 1, d_model))
        self.blocks = nn.ModuleList(Block(d_model, n_heads, dropout) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        nn.init.normal_(self.tok_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.02)

    def sequence_sizes(self, spec: DataSpec, conditional: bool) -> tuple[DataSpec, int, int]:
        """The image spec, vocabulary size and sequence length (positions) the network is built for,
        from the data's ``x`` and ``text``; a one-line ValueError for other data. Subclasses that model
        another token sequence (the summarizer: caption then summary) override it."""
        img, txt = image_caption_specs("captioner", spec, conditional)
        return img, int(txt.levels), int(txt.shape[0])

    # --- the network --------------------------------------------------------------------------
    def condition_vectors(self, x: Tensor) -> Tensor:
        """Images [B, C, H, W] -> conditioning vectors [B, n_layers, d_model] (one per layer)."""
        w = self.cond.weight
        return self.cond(self.features(x.to(w.device, w.dtype))).view(len(x), self.n_layers, self.d_model)

    def logits(self, text: Tensor, c: Tensor) -> Tensor:
        """Teacher-forced logits [B, S, V] for positions 1..S of captions ``text`` [B, S] (row t: the
        law of token t given tokens < t and the image), from conditioning vectors ``c`` [B, L, d]."""
        b, s = text.shape
        h = torch.cat([self.start.expand(b, 1, -1), self.tok_emb(text[:, :-1])], 1)
        h = h + self.pos_emb(torch.arange(s, device=h.device))
        for i, block in enumerate(self.blocks):
            h = block(h + c[:, i, None])
        return F.linear(self.ln_f(h), self.tok_emb.weight)  # tied output layer

    def _tokens(self, t: Tensor) -> Tensor:
        return caption_ids(t, self.length)

    # --- the protocol -------------------------------------------------------------------------
    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Caption NLL per token given the image, in nats ("loss") and bits ("bits_per_token")."""
        missing = [k for k in ("x", "text") if k not in batch]
        if missing:
            raise KeyError(f"captioner trains on image 'x' + caption 'text'; the batch has no {missing[0]!r}")
        text = self._tokens(batch["text"])
        logits = self.logits(text, self.condition_vectors(batch["x"]))
        nll = F.cross_entropy(logits.reshape(-1, self.vocab), text.reshape(-1))
        return {"loss": nll, "bits_per_token": nll.detach() / math.log(2)}

    def log_prob(
        self, x: dict[str, Tensor], cond: Tensor | None = None, *, given: Sequence[str] | None = None
    ) -> Tensor:
        """[B] log p(text | x) in nats (exact) for x = {"x": images, "text": ids}; the image is always
        the condition (``given=["x"]``, the default): the model has no p(x)."""
        given = ["x"] if given is None else list(given)
        if not isinstance(x, dict) or set(x) != {"x", "text"} or given != ["x"]:
            got = sorted(x) if isinstance(x, dict) else type(x).__name__
            raise ValueError(
                f"captioner scores captions given images: log_prob({{'x', 'text'}}, given=['x']); got {got}"
            )
        text = self._tokens(x["text"])
        logp = self.logits(text, self.condition_vectors(x["x"])).log_softmax(-1)
        return logp.gather(-1, text[..., None])[..., 0].sum(-1)

    def sample(self, n: int, cond: Tensor | None = None, *, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError(
            "captioner models p(text | image), not images: translate({'x': images}) captions them"
        )

    @torch.no_grad()
    def translate(
        self,
        source: dict[str, Tensor],
        targets: Sequence[str] | None = None,
        *,
        n: int = 1,
        generator: torch.Generator | None = None,
        mean: bool = False,
        temperature: float = 1.0,
    ) -> dict[str, Tensor]:
        """Captions {"text": ids [B * n, T]} of images {"x": [B, C, H, W]}, example-major (rows i*n ..
        i*n + n - 1 describe image i), drawn token by token from p(text | x), or greedy with ``mean``.
        Each step re-runs the prefix (T is a caption's ~12 tokens: no key/value cache needed)."""
        check_one_way("captioner", source, targets, n, "x", "text")
        c = self.condition_vectors(source["x"]).repeat_interleave(n, 0)  # (B * n, L, d)
        out = torch.zeros(len(c), self.length, dtype=torch.long, device=c.device)
        for t in range(self.length):
            logits = self.logits(out[:, : t + 1], c)[:, t]  # token t given tokens < t (out[:, t] unused)
            out[:, t] = logits.argmax(-1) if mean else sample_categorical(logits, generator, temperature)
        return {"text": out}
