"""Caption -> image by a gated PixelCNN conditioned on a representation of the caption.

van den Oord et al., "Conditional Image Generation with PixelCNN Decoders", NeurIPS 2016: a gated
PixelCNN (:mod:`genlab.models.pixelcnn`) whose every layer receives a conditioning vector h as a
bias per channel (eq. 4, ``V^T h``) and, because a caption also says *where* ("in the top left"),
a location-dependent bias from a spatial map s = m(h) (eq. 5, ``V * s``, a 1x1 convolution). Here h
is a caption embedding, as in Reed et al., "Generative Adversarial Text to Image Synthesis", ICML
2016 (and "Generating Interpretable Images with Controllable Structure", Reed et al. 2017, for
text-conditioned PixelCNNs): token embeddings read by a bidirectional GRU (Cho et al. 2014) --
the whole caption is the condition, so it needs no causal order -- and m a learned linear map of h
to a coarse grid, upsampled bilinearly to H x W. The model is exact:

    log p(x | c) = sum_{k,i,j} log p(x_{k,i,j} | x_{<(k,i,j)}, c)     (nats; raster order, R -> G -> B)

with c the caption. Neither h nor s depends on the image, so the masks alone keep each sub-pixel's
law a function of earlier sub-pixels (tested by gradients). The model has no p(c) and no p(x): it
translates captions to images (``translate({"text": ids})``: sub-pixel by sub-pixel, the caption
encoded once, the vertical stack run once per row and the horizontal stack on a window of the row,
:meth:`~genlab.models.pixelcnn.PixelCNN.draw`) and scores images given captions; ``sample`` is refused.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.spec import DataSpec
from ..distributions import to_levels
from ..protocol import Capabilities, GenerativeModel
from .captioner import caption_ids, check_one_way, image_caption_specs
from .pixelcnn import PixelCNN, check_sizes

#: Side of the coarse grid the caption's spatial map is predicted on (before upsampling to H x W):
#: 8 x 8 cells of 4 x 4 pixels on 32 x 32 images, fine enough for the captions' 3 x 3 regions.
MAP_GRID = 8


class TextPixelCNN(PixelCNN):
    """p(image x | caption text) by a gated PixelCNN conditioned on the caption; see the module doc.

    Args (the config; image size and levels from the data's ``x``, vocabulary and length from ``text``):
        channels, n_layers, kernel_size, first_kernel: the gated PixelCNN (as ``pixelcnn``).
        text_dim: token embedding size. text_hidden: GRU state per direction and size of the
            caption vector h [B, text_hidden] that biases every layer (eq. 4).
        cond_map: channels of the spatial map s [B, cond_map, H, W] (eq. 5); 0: the global bias only.
        conditional: must stay False (the condition is the caption, not a class).
    """

    likelihood = "exact"
    capabilities = Capabilities(
        sample=False,
        modalities=("x", "text"),
        targets=("x",),
        notes="p(x | text): caption vector + spatial map in every gated layer; translate text->x, row-cached sampling",
    )
    #: About 2 minutes on one CPU thread on shapes-captions 32x32 (~0.65 s a step), validation on 500
    #: images, plus ~15 s for the end-of-training picture (32 images). A demo: the caption is read
    #: only after ~500 steps (benchmarks/text_to_image.py trains 900; see its results).
    train_defaults = {"steps": 200, "batch_size": 32, "lr": 2e-3, "eval_every": 100, "max_eval_examples": 500}

    def __init__(
        self,
        spec: DataSpec,
        channels: int = 32,
        n_layers: int = 5,
        kernel_size: int = 3,
        first_kernel: int = 7,
        text_dim: int = 32,
        text_hidden: int = 64,
        cond_map: int = 8,
        conditional: bool = False,
    ) -> None:
        GenerativeModel.__init__(self, spec)  # PixelCNN.__init__ checks single-image data: not this one
        img, txt = image_caption_specs("pixelcnn_text", spec, conditional)
        if len(img.shape) != 3 or not img.levels:
            raise ValueError(
                f"pixelcnn_text needs discrete images [C, H, W] with levels; {spec.name!r} has {img.shape} "
                f"with levels={img.levels}"
            )
        check_sizes(channels, n_layers, kernel_size, first_kernel)
        if min(text_dim, text_hidden) < 1 or cond_map < 0:
            raise ValueError(
                f"need text_dim, text_hidden >= 1 and cond_map >= 0; got {text_dim}, {text_hidden}, {cond_map}"
            )
        self.vocab, self.length = int(txt.levels), int(txt.shape[0])
        self._build(
            img.shape, int(img.levels), True, channels, n_layers, kernel_size, first_kernel, text_hidden, cond_map
        )
        # The caption encoder: h = W [GRU->(c)_T ; GRU<-(c)_1] + b from the two directions' final states
        # (no squashing on top: the GRU states are bounded already).
        self.tok_emb = nn.Embedding(self.vocab, text_dim)
        self.gru = nn.GRU(text_dim, text_hidden, batch_first=True, bidirectional=True)
        self.text_out = nn.Linear(2 * text_hidden, text_hidden)
        _, hgt, wid = self.image_shape
        self.grid = (min(hgt, MAP_GRID), min(wid, MAP_GRID))
        self.to_map = nn.Linear(text_hidden, cond_map * self.grid[0] * self.grid[1]) if cond_map else None

    # --- the network --------------------------------------------------------------------------
    def caption_vector(self, text: Tensor) -> Tensor:
        """Caption ids [B, T] (T <= the data's caption length) -> caption vector h [B, text_hidden]."""
        ids = caption_ids(text, self.length).to(self.tok_emb.weight.device)
        _, last = self.gru(self.tok_emb(ids))  # (2, B, text_hidden): forward and backward final states
        return self.text_out(torch.cat([last[0], last[1]], -1))

    def caption_map(self, h: Tensor) -> Tensor | None:
        """Caption vectors h [B, text_hidden] -> spatial maps s [B, cond_map, H, W] (None if cond_map=0):
        a coarse grid from h, upsampled bilinearly so neighbouring pixels get similar biases."""
        if self.to_map is None:
            return None
        coarse = self.to_map(h).view(len(h), -1, *self.grid)  # (B, k, gh, gw)
        return F.interpolate(coarse, size=self.image_shape[1:], mode="bilinear", align_corners=False)

    def forward(self, x: Tensor, text: Tensor) -> Tensor:
        """Logits [B, L, C, H, W] of p(x_{k,i,j} | earlier sub-pixels, caption) for images x [B, C, H, W]
        in [0, 1] and caption ids ``text`` [B, T]."""
        h = self.caption_vector(text)  # (B, text_hidden), in the weights' dtype
        return self.logits(x, h, self.caption_map(h))

    # --- the protocol -------------------------------------------------------------------------
    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Mean NLL per image *sub-pixel* given the caption, in nats ("loss"); per image ("nll") and
        bits/dim ("bpd") logged."""
        missing = [k for k in ("x", "text") if k not in batch]
        if missing:
            raise KeyError(f"pixelcnn_text trains on image 'x' + caption 'text'; the batch has no {missing[0]!r}")
        x = batch["x"]
        nll = F.cross_entropy(self(x, batch["text"]), to_levels(x, self.levels))
        dim = math.prod(self.image_shape)
        return {"loss": nll, "nll": nll.detach() * dim, "bpd": nll.detach() / math.log(2)}

    def log_prob(
        self, x: dict[str, Tensor], cond: Tensor | None = None, *, given: Sequence[str] | None = None
    ) -> Tensor:
        """[B] log p(image | caption) in nats (exact; a mass on the image's levels) for x = {"x": images
        [B, C, H, W], "text": ids [B, T]}; the caption is always the condition (``given=["text"]``, the
        default): the model has no p(text) and no p(x)."""
        given = ["text"] if given is None else list(given)
        if not isinstance(x, dict) or set(x) != {"x", "text"} or given != ["text"] or cond is not None:
            got = sorted(x) if isinstance(x, dict) else type(x).__name__
            raise ValueError(
                f"pixelcnn_text scores images given captions: log_prob({{'x', 'text'}}, given=['text']), no cond; "
                f"got {got}, given={given}, cond={'set' if cond is not None else None}"
            )
        img = x["x"]
        ce = F.cross_entropy(self(img, x["text"]), to_levels(img, self.levels), reduction="none")  # (B, C, H, W)
        return -ce.flatten(1).sum(1)

    def sample(self, n: int, cond: Tensor | None = None, *, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError(
            "pixelcnn_text models p(image | caption), not captions: translate({'text': ids}) draws images for them"
        )

    def encode(self, x: dict[str, Tensor], cond: Tensor | None = None) -> Tensor:
        raise NotImplementedError("pixelcnn_text has no encoder: it scores and draws images given captions")

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
        """Images {"x": [B * n, C, H, W]} (floats level/(L-1)) for captions {"text": ids [B, T]},
        example-major (rows i*n .. i*n + n - 1 are for caption i), drawn sub-pixel by sub-pixel in
        raster order from p(x | text) at ``temperature``, or the most likely level of each with
        ``mean`` (greedy: deterministic). The caption is encoded once; row-cached sampling (``draw``)."""
        check_one_way("pixelcnn_text", source, targets, n, "text", "x")
        if not mean and not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0; got {temperature}")
        h = self.caption_vector(source["text"])  # encoded once per caption
        s = self.caption_map(h)
        h = h.repeat_interleave(n, 0)  # (B * n, text_hidden), example-major
        s = None if s is None else s.repeat_interleave(n, 0)
        x = self.draw(len(h), h, s, generator=generator, greedy=mean, temperature=temperature, cached=True)
        return {"x": x}
