"""Frozen: a vision encoder trained to prompt a frozen language model with an image.

Tsimpoukelli, Menick, Cabi, Eslami, Vinyals & Hill, "Multimodal Few-Shot Learning with Frozen
Language Models", NeurIPS 2021. A language model p_LM trained on text alone is frozen; a vision
encoder f maps an image x to P vectors in the LM's input-embedding space (the "visual prefix"),
and only f is trained, on captions:

    log p(t | x) = log p_LM(t | prefix = f(x)) = sum_i log p_LM(t_i | f(x), t_<i)    (exact, in nats)
    loss         = -(1/T) E_(x, t) log p(t | x)                                    (nats per token)

The LM is untouched, so its prefix can be mixed with text: an interleaved prompt
[f(x_1), t_1, ..., f(x_k), t_k, f(x_q), question] asks it about x_q zero-shot (k = 0) or few-shot
(:func:`answer`). Here the LM is a genlab ``transformer`` run (option ``lm_run``) trained on the
captions; it is loaded from that folder whenever this model is built and is never part of its state
dict, which holds the encoder and a fingerprint of the LM's weights (checked when weights are loaded).

As in the paper P defaults to 2; each shot repeats the training format [f(x_i), <start>, t_i].
What the LM must bring (benchmarks/frozen_captioning.py): the paper's LM learned from web text to
read its context; an LM trained on these captions alone never needs to (the factors are independent,
so each word's distribution is fixed by its slot). A prefix barely steers it -- the best single
prefix lifts p("red") at the colour word from 1/7 to 0.20 -- and its learned absolute positions make
any prefix cost bits (caption token i moves to position P + 1 + i; P = 6 zero vectors: 1.03 -> 2.75
bits/token). An LM trained with ``context_words=8`` (:meth:`TransformerLM.context_loss`) reads a prefix (ceiling 0.97,
zero prefix 1.06 bits/token) and makes a far better captioner (0.44 vs 0.85 bits/token).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.spec import DataSpec
from ..data.text import BOS, EOS, encode_text, tokens_to_text
from ..distributions import sample_categorical
from ..nn import ConvEncoder, activation
from ..protocol import Capabilities, GenerativeModel
from .captioner import caption_ids, image_caption_specs
from .transformer import TransformerLM

Shot = tuple[Tensor, str | Tensor]  # (image [C, H, W] or [B, C, H, W], caption text or ids [T] / [B, T])


def load_language_model(lm_run: str) -> TransformerLM:
    """The frozen LM of run folder ``lm_run`` (best weights, eval mode, no gradients). A missing
    folder, a folder that is no run, or a run of another family raises a one-line ``ValueError``."""
    from ..runs import load_run  # runs -> registry -> this family: import on use

    if not lm_run:
        raise ValueError("frozen needs lm_run=RUN: a finished 'transformer' run on the captions (--set lm_run=runs/lm)")
    try:
        with torch.random.fork_rng(devices=[]):  # the LM's throw-away init leaves the encoder's seed alone
            lm, cfg, _ = load_run(lm_run)
    except (ValueError, RuntimeError, OSError) as e:
        raise ValueError(f"lm_run {lm_run!r}: {str(e).splitlines()[0]}") from None
    if not isinstance(lm, TransformerLM):
        raise ValueError(
            f"lm_run {lm_run!r} is a {cfg.get('model')!r} run; frozen needs a 'transformer' language model"
        )
    if lm.conditional:
        raise ValueError(f"lm_run {lm_run!r} is class-conditional; frozen needs an unconditional language model")
    for p in lm.parameters():
        p.requires_grad_(False)
    return lm.eval()


def weights_fingerprint(module: nn.Module) -> int:
    """A 63-bit hash of a module's state dict (names and float32 values): which weights these are."""
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().cpu().contiguous().numpy().tobytes())
    return int.from_bytes(h.digest()[:8], "little") >> 1


class FrozenCaptioner(GenerativeModel):
    """p(caption | image) through a frozen transformer LM; only the image -> prefix encoder learns.

    Args (the config; image and caption sizes come from ``spec.modalities``):
        lm_run: run folder of the frozen ``transformer`` (trained on the captions: same vocabulary and
            length); kept as an absolute path in the run's config.
        prefix_len: P, the prefix vectors per image (at most the LM's ``max_prefix``).
        channels, hidden: base channels of the conv encoder and its feature width.
        act: activation. conditional: must stay False (no class conditioning).
    """

    likelihood = "exact"
    capabilities = Capabilities(
        sample=False,
        modalities=("x", "text"),
        targets=("text",),
        notes="p(text | x) through a frozen transformer (lm_run); translate x->text; answer(): few-shot prompts",
    )
    train_defaults = {"steps": 500, "batch_size": 64, "lr": 2e-3, "eval_every": 100}

    def __init__(
        self,
        spec: DataSpec,
        lm_run: str = "",
        prefix_len: int = 2,
        channels: int = 32,
        hidden: int = 256,
        act: str = "relu",
        conditional: bool = False,
    ) -> None:
        super().__init__(spec)
        img, txt = image_caption_specs("frozen", spec, conditional)
        if min(prefix_len, channels, hidden) < 1:
            raise ValueError(f"need prefix_len, channels, hidden >= 1; got {prefix_len}, {channels}, {hidden}")
        self.lm_run = str(Path(lm_run).expanduser().resolve()) if lm_run else ""
        lm = load_language_model(self.lm_run)
        vocab, length = tuple(txt.vocab or ()), int(txt.shape[0])
        lm_vocab = tuple(lm.spec.vocab or ())
        if lm.vocab_size != len(vocab) or (lm_vocab and vocab and lm_vocab != vocab) or lm.seq_len != length:
            raise ValueError(
                f"lm_run {self.lm_run!r} models {lm.vocab_size} tokens x {lm.seq_len}; the captions of "
                f"{spec.name!r} have {len(vocab)} x {length} (or another vocabulary): train the LM on these captions"
            )
        if prefix_len > lm.max_prefix:
            raise ValueError(
                f"prefix_len={prefix_len} exceeds the LM's max_prefix={lm.max_prefix} (lm_run {self.lm_run!r})"
            )
        object.__setattr__(self, "_lm", lm)  # not a submodule: no parameters, state dict or train() of ours
        self.prefix_len, self.d_model, self.discrete = prefix_len, lm.d_model, True
        self.data_key = "text"  # what it models; the image is always given
        self.encoder = nn.Sequential(
            ConvEncoder(img.shape, hidden, channels, act), activation(act), nn.Linear(hidden, prefix_len * lm.d_model)
        )
        self.register_buffer("lm_fingerprint", torch.tensor(weights_fingerprint(lm)))

    # --- the frozen LM travels with the model but is not part of it -----------------------------
    @property
    def lm(self) -> TransformerLM:
        """The frozen language model (eval mode, ``requires_grad=False``)."""
        return self._lm

    @property
    def init_kwargs(self) -> dict[str, Any]:
        return self._init_kwargs

    @init_kwargs.setter
    def init_kwargs(self, kwargs: dict[str, Any]) -> None:
        # build_model records the options as given; the run's config keeps lm_run absolute, so the
        # run loads from any working directory.
        self._init_kwargs = {**kwargs, "lm_run": self.lm_run} if "lm_run" in kwargs else dict(kwargs)

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> FrozenCaptioner:
        super()._apply(fn, recurse)  # .to(device), .double(), ...: the LM follows
        lm = self.__dict__.get("_lm")
        if lm is not None:
            lm._apply(fn, recurse)
        return self

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        fp = state_dict.get("lm_fingerprint")
        if fp is not None and int(fp) != int(self.lm_fingerprint):
            raise RuntimeError(
                f"the language model in lm_run {self.lm_run!r} has other weights than the one this encoder was "
                "trained through (the LM run was retrained?); train the frozen run again"
            )
        return super().load_state_dict(state_dict, strict, assign)

    # --- the network --------------------------------------------------------------------------
    def prefix(self, x: Tensor) -> Tensor:
        """Images [B, C, H, W] in [0, 1] -> visual prefixes [B, P, d_model] for the LM."""
        w = self.encoder[-1].weight
        return self.encoder(x.to(w.device, w.dtype)).view(len(x), self.prefix_len, self.d_model)

    def _tokens(self, t: Tensor) -> Tensor:
        return caption_ids(t, self.lm.seq_len)

    def _inputs(self, x: object) -> dict[str, Tensor]:
        if not isinstance(x, dict) or not x or set(x) - {"x", "text"}:
            got = sorted(x) if isinstance(x, dict) else type(x).__name__
            raise ValueError(f"expected a dict of the modalities ['x', 'text'] (or a subset); got {got}")
        return dict(x)

    # --- the protocol -------------------------------------------------------------------------
    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Caption NLL per token given the image's prefix, in nats ("loss") and bits ("bits_per_token")."""
        missing = [k for k in ("x", "text") if k not in batch]
        if missing:
            raise KeyError(f"frozen trains on image 'x' + caption 'text'; the batch has no {missing[0]!r}")
        text = self._tokens(batch["text"])
        logits = self.lm(text, prefix_embeds=self.prefix(batch["x"]))  # (B, T, V)
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), text.reshape(-1))
        return {"loss": nll, "bits_per_token": nll.detach() / math.log(2)}

    def log_prob(
        self, x: dict[str, Tensor], cond: Tensor | None = None, *, given: Sequence[str] | None = None
    ) -> Tensor:
        """[B] log p(text | x) in nats (exact): x = {"x": images, "text": ids}; the image is always
        the condition (``given=["x"]``, also the default): the model has no p(x)."""
        inputs, given = self._inputs(x), ["x"] if given is None else list(given)
        if set(inputs) != {"x", "text"} or given != ["x"]:
            raise ValueError(
                "frozen scores captions given images: log_prob({'x', 'text'}, given=['x']); "
                f"got {sorted(inputs)}, given={given}"
            )
        return self.lm.log_prob(self._tokens(inputs["text"]), prefix_embeds=self.prefix(inputs["x"]))

    def sample(self, n: int, cond: Tensor | None = None, *, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError("frozen models p(text | image), not images: translate({'x': images}) captions them")

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
        top_k: int | None = None,
        top_p: float | None = None,
    ) -> dict[str, Tensor]:
        """Captions {"text": ids [B * n, T]} of images {"x": [B, C, H, W]}, example-major (rows i*n ..
        i*n + n - 1 describe image i): drawn from p(text | x) (temperature / top-k / top-p), or greedy
        with ``mean``."""
        inputs = self._inputs(source)
        targets = ["text"] if targets is None else list(targets)
        if set(inputs) != {"x"} or targets != ["text"] or n < 1:
            raise ValueError(
                "frozen translates images to captions only ({'x'} -> ['text'], n >= 1); "
                f"got {sorted(inputs)} -> {targets}, n={n}"
            )
        pre = self.prefix(inputs["x"]).repeat_interleave(n, 0)  # (B * n, P, d)
        temp = 0.0 if mean else temperature
        return {
            "text": self.lm.sample(
                len(pre), generator=generator, prefix_embeds=pre, temperature=temp, top_k=top_k, top_p=top_p
            )
        }


# --- prompting the frozen LM with images and text ---------------------------------------------
def prompt_ids(model: FrozenCaptioner, text: str | Sequence[str]) -> Tensor:
    """Prompt text(s) -> ids [B, L] (B = 1 for one string): <bos> and the words, no <eos>, tokenized
    like the captions (words outside the vocabulary are a one-line error); all of equal length. An
    empty prompt is <bos> alone."""
    spec = model.spec.modality("text")
    rows = []
    for s in [text] if isinstance(text, str) else list(text):
        ids = torch.from_numpy(encode_text(s, spec)) if s.strip() else torch.tensor([BOS, EOS])
        rows.append(ids[: int((ids == EOS).nonzero()[0])])  # encode_text lays out <bos> words <eos> <pad>...
    if len({len(r) for r in rows}) != 1:
        raise ValueError(f"prompts of one batch must have equal token counts; got {sorted({len(r) for r in rows})}")
    return torch.stack(rows)


def interleave(model: FrozenCaptioner, shots: Sequence[Shot], query: Tensor) -> Tensor:
    """The prompt embeddings [B, S, d] of shots [(image, caption), ...] and a query image: each shot as
    the LM saw captions in training, [f(x_i), <start>, t_i] (t_i: its text or ids, padding included),
    then f(query). The LM's own <start> and the question follow when it reads them. S must fit in
    the LM's ``max_prefix`` (one-line error otherwise)."""
    lm = model.lm
    query = query[None] if query.dim() == 3 else query
    b, parts = len(query), []
    for image, caption in shots:
        image = image[None] if image.dim() == 3 else image
        ids = (
            torch.from_numpy(encode_text(caption, model.spec.modality("text"))) if isinstance(caption, str) else caption
        )
        ids = (ids[None] if ids.dim() == 1 else ids).to(lm.start.device).long()
        pre = model.prefix(image)
        parts += [pre, lm.start.expand(len(pre), 1, -1), lm.tok_emb(ids)]
    parts.append(model.prefix(query))
    parts = [p.expand(b, -1, -1) if len(p) == 1 else p for p in parts]  # one shot for every query
    if any(len(p) != b for p in parts):
        raise ValueError(
            f"shots must hold 1 or {b} examples (the query's batch); got {sorted({len(p) for p in parts})}"
        )
    out = torch.cat(parts, 1)
    if out.shape[1] > lm.max_prefix:
        raise ValueError(
            f"the prompt takes {out.shape[1]} positions ({len(shots)} shots of {model.prefix_len} + 1 + caption, then "
            f"{model.prefix_len}); the LM of lm_run allows max_prefix={lm.max_prefix}: "
            "use fewer shots, or an LM trained with a larger max_prefix"
        )
    return out


@torch.no_grad()
def answer(
    model: FrozenCaptioner,
    image: Tensor,
    prompt: str | Sequence[str] | Tensor = "",
    *,
    shots: Sequence[Shot] = (),
    max_new_tokens: int = 1,
    greedy: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, list[str]]:
    """Continue ``prompt`` about ``image`` [C, H, W] or [B, C, H, W] with the frozen LM, zero-shot
    or after ``shots`` [(image, caption), ...]: the LM reads [shots..., f(image), <start>, prompt]
    (prompt: text -- <bos> is put first -- or ids [L] / [B, L]) and writes ``max_new_tokens`` tokens,
    greedy or drawn. Returns the new ids [B, k] and their words (up to <eos>) per example."""
    lm = model.lm
    pre = interleave(model, shots, image)  # (B, S, d)
    q = prompt_ids(model, prompt) if isinstance(prompt, (str, list, tuple)) else prompt
    q = (q[None] if q.dim() == 1 else q).to(pre.device).long().expand(len(pre), -1)
    if max_new_tokens < 1 or q.shape[1] + max_new_tokens > lm.seq_len:
        raise ValueError(
            f"the prompt ({q.shape[1]} tokens) plus max_new_tokens={max_new_tokens} (>= 1) "
            f"must fit the LM's {lm.seq_len} tokens"
        )
    for _ in range(max_new_tokens):  # the sequence is short: re-run it, through the LM's public forward
        logits = lm(torch.cat([q, q.new_zeros(len(q), 1)], 1), prefix_embeds=pre)[:, -1]  # (B, V): next token
        nxt = logits.argmax(-1) if greedy else sample_categorical(logits, generator)
        q = torch.cat([q, nxt[:, None]], 1)
    new = q[:, q.shape[1] - max_new_tokens :]
    return new, tokens_to_text(new.cpu(), model.spec.modality("text"))


@torch.no_grad()
def caption_coherence(
    model: Any,
    data: Any,
    *,
    n_examples: int = 1000,
    mean: bool = True,
    seed: int = 0,
    batch_size: int = 250,
) -> dict[str, Any]:
    """x -> text coherence of a model's captions on ``shapes-captions``-like data (Shi et al. 2019):
    :func:`genlab.metrics.coherence.coherence` of the factors read back from the captions of a
    seeded subset of ``n_examples`` images (greedy with ``mean``, else drawn) against their ground
    truth -- the ``"x->text"`` direction of the multimodal VAEs' ``cross_modal_coherence``. ``model``:
    anything with ``translate({"x": images}, ["text"], generator=, mean=)`` (a multimodal VAE too)."""
    from ..metrics.coherence import coherence, factor_readers, true_factors

    reader = factor_readers(data.spec)["text"]  # parses captions; needs no training
    n = min(n_examples, len(data))
    idx = torch.from_numpy(np.sort(np.random.default_rng(seed).choice(len(data), n, replace=False)))
    gen = torch.Generator(device=model.device).manual_seed(seed)
    model.eval()
    caps = [
        model.translate({"x": data.tensors["x"][i].to(model.device)}, ["text"], generator=gen, mean=mean)["text"].cpu()
        for i in idx.split(batch_size)
    ]
    pred = np.asarray(reader.read(torch.cat(caps)), dtype=np.int64)
    truth = true_factors(data.tensors["factors"][idx])
    res = coherence(pred, truth, factor_names=reader.factor_names, factor_sizes=reader.factor_sizes)
    return {**res, "sources": ["x"], "target": "text"}
