"""A multimodal summarizer: a one-line summary from an image and a caption, each holding facts the
other lacks (the lecture's "video + transcript -> summary"; data set ``shapes-summary``).

Representation conditioning, as :mod:`genlab.models.captioner` (whose network this reuses): a
GPT-style causal transformer (Radford et al. 2019) reads the caption t_1..t_T and then writes the
summary s_1..s_S, and image features enter every layer's input (the ``h + V c`` conditioning of van
den Oord et al., "Conditional Image Generation with PixelCNN Decoders", NeurIPS 2016, eq. 4):

    c_l = W_l f(x)                                  (f a conv net; c_l = n_l, learned, without an image)
    h^0 = [e(<start>), e(t_1..t_T), e(s_1..s_{S-1})] + positions
    h^l = Block_l(h^{l-1} + c_l)
    log p(s | x, t) = sum_j log softmax(E ln(h^L_{T+j}))[s_j]          (exact, nats; E tied)

The loss is the NLL of the summary tokens only (nats per token; the caption is the condition, never
a target). Modality dropout (Neverova et al., "ModDrop", 2015): in training each example's image is
replaced by the learned no-image vectors n_l with probability ``p_drop_image``, and its caption by
the empty caption "<bos> <eos>" (every word withheld: a text the data never holds) with probability
``p_drop_text``, so one model also answers p(s | t) and p(s | x): the text-only and image-only
baselines the fused summary is measured against (:mod:`genlab.metrics.summarization`). The text is
dropped more often by default (0.3 against 0.15) because where the caption states a fact the image
gets no gradient for it: on shapes-summary (benchmarks/summarization.py's budget) the image-read
shape went from 72 % right at 0.15 to 91 % at 0.3, the copied facts staying at 100 %. Causality:
the output at summary position j depends on the caption, the image and s_<j only (tested by
gradients, which are exactly zero for s_>=j).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.spec import DataSpec
from ..data.text import BOS, EOS
from ..distributions import sample_categorical
from ..protocol import Capabilities
from .captioner import RepresentationCaptioner

INPUTS = ("x", "text")  # what a summary is conditioned on: the image and the caption


class Summarizer(RepresentationCaptioner):
    """p(summary | image, caption): a causal transformer over [caption; summary], W_l f(image) in every layer.

    Modality dropout in training makes the same model give p(summary | caption) and p(summary | image)
    (see the module doc).

    Args (the config; sizes from the data's ``x`` image, ``text`` and ``summary`` tokens, which share
    one vocabulary):
        d_model, n_layers, n_heads, dropout: the transformer. channels, hidden: the image conv net.
        act: activation of the conv net. p_drop_image, p_drop_text: modality dropout rates in
        training, each in [0, 1). conditional: must stay False.
    """

    capabilities = Capabilities(
        sample=False,
        modalities=("x", "text", "summary"),
        targets=("summary",),
        notes="p(summary | x, text) with modality dropout; translate {x, text} or either alone -> summary",
    )
    train_defaults = {"steps": 1000, "batch_size": 64, "lr": 2e-3, "eval_every": 250}

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
        p_drop_image: float = 0.15,
        p_drop_text: float = 0.3,
        conditional: bool = False,
    ) -> None:
        super().__init__(spec, d_model, n_layers, n_heads, dropout, channels, hidden, act, conditional)
        if not (0 <= p_drop_image < 1 and 0 <= p_drop_text < 1):
            raise ValueError(f"need 0 <= p_drop_image, p_drop_text < 1; got {p_drop_image}, {p_drop_text}")
        self.p_drop_image, self.p_drop_text = float(p_drop_image), float(p_drop_text)
        self.text_len = int(spec.modality("text").shape[0])
        self.summary_len = self.length - self.text_len
        self.data_key = "summary"
        self.no_image = nn.Parameter(torch.zeros(n_layers, d_model))  # n_l: the condition without an image

    def sequence_sizes(self, spec: DataSpec, conditional: bool) -> tuple[DataSpec, int, int]:
        """The image spec, the shared vocabulary size of caption and summary, and T + S positions."""
        if conditional:
            raise ValueError(
                f"summarizer is not class-conditional: conditional=True is not supported (data set {spec.name!r})"
            )
        keys = spec.modality_keys
        if spec.kind != "multimodal" or any(k not in keys for k in ("x", "text", "summary")):
            raise ValueError(
                f"summarizer needs image 'x' + caption 'text' + summary 'summary' data (e.g. shapes-summary); "
                f"{spec.name!r} has kind {spec.kind!r} with modalities {', '.join(keys)}"
            )
        img, txt, summ = spec.modality("x"), spec.modality("text"), spec.modality("summary")
        if img.kind != "image" or txt.kind != "tokens" or summ.kind != "tokens" or not txt.levels:
            raise ValueError(
                f"summarizer needs an image 'x' and tokens 'text', 'summary'; {spec.name!r} has "
                f"{img.kind!r}, {txt.kind!r}, {summ.kind!r}"
            )
        if (txt.levels, txt.vocab) != (summ.levels, summ.vocab):
            raise ValueError(
                f"summarizer reads captions and writes summaries with one vocabulary; {spec.name!r} has "
                f"{txt.levels} caption and {summ.levels} summary tokens (or other words)"
            )
        return img, int(txt.levels), int(txt.shape[0]) + int(summ.shape[0])

    # --- the conditions -------------------------------------------------------------------------
    def empty_text(self, b: int) -> Tensor:
        """The caption of an absent text, ids [b, T]: "<bos> <eos> <pad>...", every word withheld."""
        t = torch.zeros(b, self.text_len, dtype=torch.long, device=self.no_image.device)
        t[:, 0], t[:, 1] = BOS, EOS
        return t

    def _check_ids(self, t: Tensor, what: str, lo: int, hi: int) -> Tensor:
        if t.is_floating_point() or t.dim() != 2 or not lo <= t.shape[1] <= hi:
            want = f"{hi}" if lo == hi else f"{lo}..{hi}"
            raise ValueError(f"{what} must be token ids long [B, {want}]; got {t.dtype} {tuple(t.shape)}")
        return t.long().to(self.no_image.device)

    def conditions(self, images: Tensor | None, text: Tensor | None) -> tuple[Tensor, Tensor]:
        """(conditioning vectors [B, n_layers, d_model], caption ids [B, T]) for images [B, C, H, W]
        and captions [B, T]; None for an absent modality: the learned no-image vectors, the empty caption."""
        if images is None and text is None:
            raise ValueError("a summary needs an image, a caption or both; got neither")
        b = len(images) if images is not None else len(text)  # type: ignore[arg-type]
        if images is not None and text is not None and len(text) != b:
            raise ValueError(f"images and captions must pair up; got {len(images)} images and {len(text)} captions")
        ids = self.empty_text(b) if text is None else self._check_ids(text, "captions", self.text_len, self.text_len)
        c = self.no_image.expand(b, -1, -1) if images is None else self.condition_vectors(images)
        return c, ids

    def summary_logits(self, text: Tensor, summary: Tensor, c: Tensor) -> Tensor:
        """Teacher-forced logits [B, S', V] of summary tokens 1..S' (S' <= S) given captions ``text``
        [B, T], summaries ``summary`` [B, S'] (row j: the law of token j given the caption, the
        condition and tokens < j; ``summary[:, -1]`` is never read) and conditions ``c`` [B, L, d]."""
        return self.logits(torch.cat([text, summary], 1), c)[:, self.text_len :]

    # --- the protocol -------------------------------------------------------------------------
    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Summary NLL per token given image and caption (each dropped at its rate in training), in
        nats ("loss") and bits ("bits_per_token"); the caption tokens are not scored."""
        missing = [k for k in ("x", "text", "summary") if k not in batch]
        if missing:
            raise KeyError(f"summarizer trains on image 'x', caption 'text', summary 'summary'; no {missing[0]!r}")
        summary = self._check_ids(batch["summary"], "summaries", self.summary_len, self.summary_len)
        c, text = self.conditions(batch["x"], batch["text"])
        if self.training:  # modality dropout, per example: one model learns p(s|x,t), p(s|t) and p(s|x)
            b = len(summary)
            keep_image = torch.rand(b, 1, 1, device=c.device) >= self.p_drop_image
            c = torch.where(keep_image, c, self.no_image.expand_as(c))
            keep_text = torch.rand(b, 1, device=c.device) >= self.p_drop_text
            text = torch.where(keep_text, text, self.empty_text(b))
        logits = self.summary_logits(text, summary, c)
        nll = F.cross_entropy(logits.reshape(-1, self.vocab), summary.reshape(-1))
        return {"loss": nll, "bits_per_token": nll.detach() / math.log(2)}

    def log_prob(
        self, x: dict[str, Tensor], cond: Tensor | None = None, *, given: Sequence[str] | None = None
    ) -> Tensor:
        """[B] log p(summary | given) in nats (exact) for x = {"summary": ids [B, S'] (S' <= S, a
        prefix's marginal), and the modalities of ``given``}: ``["x", "text"]`` (the default), ``["x"]``
        or ``["text"]`` (the other one absent, as under modality dropout). The model has no p(x, text)."""
        given = list(INPUTS) if given is None else list(given)
        ok = isinstance(x, dict) and "summary" in x and set(x) <= {*INPUTS, "summary"}
        if not ok or not given or len(set(given)) != len(given) or not set(given) <= set(INPUTS) & set(x):
            got = sorted(x) if isinstance(x, dict) else type(x).__name__
            raise ValueError(
                "summarizer scores summaries given an image and/or a caption: log_prob({'x', 'text', 'summary'}, "
                f"given=['x', 'text'] or one of them); got {got}, given={given}"
            )
        summary = self._check_ids(x["summary"], "summaries", 1, self.summary_len)
        c, text = self.conditions(x["x"] if "x" in given else None, x["text"] if "text" in given else None)
        if len(summary) != len(text):
            raise ValueError(f"summaries and their sources must pair up; got {len(summary)} and {len(text)}")
        logp = self.summary_logits(text, summary, c).log_softmax(-1)
        return logp.gather(-1, summary[..., None])[..., 0].sum(-1)

    def sample(self, n: int, cond: Tensor | None = None, *, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError(
            "summarizer models p(summary | image, caption), not images or captions: summarize() or "
            "translate({'x': ..., 'text': ...}) writes summaries"
        )

    @torch.no_grad()
    def summarize(
        self,
        images: Tensor | None,
        text: Tensor | None,
        *,
        n: int = 1,
        mean: bool = True,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
    ) -> Tensor:
        """Summaries ids [B * n, S] of images [B, C, H, W] and captions ids [B, T] (None: that modality
        absent), example-major (rows i*n .. i*n + n - 1 summarize example i): greedy with ``mean``
        (the default), else drawn token by token from p(s | x, t) at ``temperature``. Each step re-runs
        the T + S positions (17 on shapes-summary: no key/value cache needed)."""
        if n < 1:
            raise ValueError(f"n must be >= 1 summaries per example; got {n}")
        c, text = self.conditions(images, text)
        c, text = c.repeat_interleave(n, 0), text.repeat_interleave(n, 0)  # (B * n, L, d), (B * n, T)
        out = torch.zeros(len(c), self.summary_len, dtype=torch.long, device=c.device)
        for j in range(self.summary_len):
            logits = self.summary_logits(text, out[:, : j + 1], c)[:, j]  # token j given tokens < j
            out[:, j] = logits.argmax(-1) if mean else sample_categorical(logits, generator, temperature)
        return out

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
        """Summaries {"summary": ids [B * n, S]} of {"x": images, "text": caption ids} or either alone
        (the other absent), through :meth:`summarize`: drawn, or greedy with ``mean``."""
        targets = ["summary"] if targets is None else list(targets)
        if not isinstance(source, dict) or not source or set(source) - set(INPUTS) or targets != ["summary"]:
            got = sorted(source) if isinstance(source, dict) else type(source).__name__
            raise ValueError(
                f"summarizer translates an image and/or a caption to a summary only ({{'x', 'text'}} -> "
                f"['summary']); got {got} -> {targets}"
            )
        ids = self.summarize(
            source.get("x"), source.get("text"), n=n, mean=mean, generator=generator, temperature=temperature
        )
        return {"summary": ids}
