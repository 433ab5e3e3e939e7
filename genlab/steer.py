"""Plug-and-play steering of a frozen transformer language model (PPLM).

Dathathri et al., "Plug and Play Language Models: A Simple Approach to Controlled Text
Generation", ICLR 2020. Sample from p(x | c) ∝ p(c | x) p(x) with an unchanged LM p(x) and a small
attribute model p(c | x), by nudging the LM's *past* (its key/value cache) at every step:

    H_t   = the keys and values of every position before the current input (the KV cache)
    ΔH ← 0;  repeat ``iterations`` times:                                           (paper eq. 3)
        L(ΔH) = −log p(c | H_t + ΔH) + kl_scale · KL(p(x_t | H_t + ΔH) ‖ p(x_t | H_t))
        g     = ∇_ΔH L, kept on the last ``window`` positions only
        ΔH   ← ΔH − step_size · g / ‖g‖^gamma_norm
    p(x_t) ∝ p(x_t | H_t + ΔH)^gm_scale · p(x_t | H_t)^(1 − gm_scale)              (post-norm fusion)

The perturbed keys/values stay in the history (later steps perturb them further), as in the
official code; the unperturbed distribution p(x_t | H_t) comes from a second, clean cache.

Normalisation, as the official code (uber-research/PPLM, ``run_pplm.py``): ‖g‖ is taken per layer
over that layer's keys and values together, γ = 1.5 for a bag of words and 1.0 for a classifier
(the official examples); for a bag of words the divisor is the running maximum of those norms over
iterations and tokens (``max_norm``), so steps shrink once a large gradient has been seen. The
step length is α‖g‖^(1−γ): with γ > 1 it depends on the LM's gradient scale, so step sizes tuned
on GPT-2 do not carry over to a small LM. Deliberate differences from the official code: the norms
are per sample, so a batch of n is n independent runs; the window holds the *last* positions (the
official mask keeps the first ones); temperature, top-k and top-p apply to the fused distribution,
so ``gm_scale=1`` is exactly :meth:`TransformerLM.sample` when nothing is perturbed; the KL term
uses log-softmax (no ε-corrections); a prefix (class embedding, ``prefix_embeds``) is perturbed
like any other past position.

Attribute models p(c | x): :class:`BagOfWords` (log Σ_{w∈BoW} p(x_t = w)) and
:class:`AttributeClassifier` (a linear head on the mean of the LM's final hidden states, trained
by :func:`train_attribute_classifier` on the frozen LM). The classifier sees the mean over the
tokens so far plus the expected embedding of the next token (one-step horizon, as the paper).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .data.spec import DataSpec
from .distributions import sample_categorical
from .models.transformer import KVCache, TransformerLM

_TINY = 1e-15  # the official code's SMALL_CONST, added to gradient norms


# --- attribute models ---------------------------------------------------------------------------
class BagOfWords:
    """p(c | x_<t, x_t) = Σ_{w ∈ BoW} p(x_t = w | x_<t): the attribute is "the next token is in the bag".

    Args:
        ids: token ids of the bag (in the LM's vocabulary).
        words: their strings, for messages.
    """

    uses_features = False  # needs only the next-token distribution
    kind = "bow"

    def __init__(self, ids: Sequence[int], words: Sequence[str] = ()) -> None:
        if not len(ids):
            raise ValueError("a bag of words needs at least one word")
        self.ids = torch.tensor(sorted(set(int(i) for i in ids)), dtype=torch.long)
        self.words = tuple(words)

    @classmethod
    def from_words(cls, words: Sequence[str], vocab: Sequence[str]) -> BagOfWords:
        """The bag of ``words`` looked up in ``vocab`` (exact strings); unknown words raise a
        ValueError that names the valid ones."""
        index = {w: i for i, w in enumerate(vocab)}
        unknown = [w for w in words if w not in index]
        if unknown:
            raise ValueError(f"word(s) {', '.join(map(repr, unknown))} not in the vocabulary; {_listing(vocab)}")
        return cls([index[w] for w in words], words)

    def log_prob(self, logp_next: Tensor, features: Tensor | None = None) -> Tensor:
        """[n] log Σ_w p(w) in nats, from next-token log-probabilities ``logp_next`` [n, V]."""
        return torch.logsumexp(logp_next[:, self.ids.to(logp_next.device)], -1)

    def text_prob(self, model: TransformerLM, ids: Tensor) -> Tensor:
        """[n] 1.0 where the text ``ids`` [n, T] holds a word of the bag, else 0.0."""
        return (ids[..., None] == self.ids.to(ids.device)).any(-1).any(-1).float()

    def __repr__(self) -> str:
        return f"BagOfWords({', '.join(self.words) or self.ids.tolist()})"


class AttributeClassifier(nn.Module):
    """p(c | x) = softmax(W · (f − μ) / σ + b)_c with f = mean_t h_t: a linear head on the mean of
    the LM's final hidden states h_t [d] (after the last LayerNorm) over the token positions, as the
    paper's discriminators. μ, σ [d] standardise the features (the training set's; the directions
    that carry an attribute can have a small spread). ``target`` is the class c that steering raises."""

    uses_features = True
    kind = "classifier"

    def __init__(
        self, d_model: int, n_classes: int, target: int | None = None, class_names: Sequence[str] = ()
    ) -> None:
        super().__init__()
        self.linear = nn.Linear(d_model, n_classes)
        self.register_buffer("mean", torch.zeros(d_model))
        self.register_buffer("std", torch.ones(d_model))
        self.class_names = tuple(class_names)
        self.target = target
        self.val_accuracy: float | None = None  # on held-out full texts, set by train_attribute_classifier

    def forward(self, features: Tensor) -> Tensor:
        """Class logits [n, K] of mean hidden states [n, d]."""
        return self.linear((features - self.mean) / self.std)

    def log_prob(self, logp_next: Tensor, features: Tensor | None) -> Tensor:
        """[n] log p(target | features) in nats; ``features`` [n, d] are mean hidden states."""
        if self.target is None or not 0 <= self.target < self.linear.out_features:
            raise ValueError(f"set the classifier's target to a class id 0..{self.linear.out_features - 1}")
        if features is None:
            raise ValueError("the classifier attribute needs mean hidden states (features)")
        return self(features).log_softmax(-1)[:, self.target]

    @torch.no_grad()
    def text_prob(self, model: TransformerLM, ids: Tensor) -> Tensor:
        """[n] p(target | text) of whole texts ``ids`` [n, T] under this classifier."""
        return self.log_prob(torch.empty(0), token_hidden(model, ids).mean(1)).exp()


Attribute = BagOfWords | AttributeClassifier


@torch.no_grad()
def token_hidden(model: TransformerLM, ids: Tensor, cond: Tensor | None = None) -> Tensor:
    """[B, T, d] final hidden states of ``model`` at the positions of the tokens ``ids`` [B, T]
    (what :meth:`TransformerLM.encode` averages)."""
    pre = model._prefix(ids.shape[0], cond, None)
    h = model._run(torch.cat([pre, model.tok_emb(ids.long())], 1))
    return h[:, pre.shape[1] :]


def train_attribute_classifier(
    model: TransformerLM,
    texts_ids: Tensor,
    labels: Tensor,
    *,
    n_classes: int | None = None,
    class_names: Sequence[str] = (),
    target: int | None = None,
    steps: int = 500,
    lr: float = 5e-2,
    batch_size: int = 1024,
    prefixes: bool = False,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> AttributeClassifier:
    """Fit a linear :class:`AttributeClassifier` on the frozen LM's mean hidden states (seconds).

    Args:
        texts_ids: [N, T] token ids; ``labels``: [N] class ids (e.g. a data set's ``factors`` column).
        prefixes: train on the mean over every prefix x_1..x_k (k = 1..T) of each text, not only on
            whole texts (as the official discriminators): steering applies the head to the prefix
            generated so far, but a linear head fitted to every length reads whole texts worse.
        val_fraction: the last share of the texts is held out; the accuracy on their whole texts is
            stored as ``val_accuracy``.
        steps, lr, batch_size: Adam on the cross-entropy of the standardised features (the LM is
            not touched: features are computed once, without gradients).
    Returns the classifier (eval mode, parameters frozen), ``target`` set as given.
    """
    if texts_ids.dim() != 2 or labels.shape != texts_ids.shape[:1]:
        raise ValueError(f"need texts [N, T] and labels [N]; got {tuple(texts_ids.shape)} and {tuple(labels.shape)}")
    labels = labels.long()
    k = int(n_classes if n_classes is not None else labels.max().item() + 1)
    hidden = torch.cat([token_hidden(model, t) for t in texts_ids.split(1024)])  # (N, T, d)
    n_val = int(len(hidden) * val_fraction) if len(hidden) >= 10 else 0
    h_tr, y_tr = hidden[: len(hidden) - n_val], labels[: len(hidden) - n_val]
    if prefixes:  # the mean over x_1..x_k for every k: (N, T, d) -> (N*T, d)
        counts = torch.arange(1, h_tr.shape[1] + 1, dtype=h_tr.dtype, device=h_tr.device)[:, None]
        x = (h_tr.cumsum(1) / counts).reshape(-1, h_tr.shape[-1])
        y = y_tr[:, None].expand(-1, h_tr.shape[1]).reshape(-1)
    else:
        x, y = h_tr.mean(1), y_tr
    clf = AttributeClassifier(x.shape[-1], k, target, class_names).to(x.device, x.dtype)
    clf.mean.copy_(x.mean(0))
    clf.std.copy_(x.std(0) + 1e-6)
    opt = torch.optim.Adam(clf.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(len(x), (min(batch_size, len(x)),), generator=gen).to(x.device)
        loss = F.cross_entropy(clf(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    clf.eval().requires_grad_(False)
    if n_val:
        with torch.no_grad():
            clf.val_accuracy = (clf(hidden[-n_val:].mean(1)).argmax(-1) == labels[-n_val:]).float().mean().item()
    return clf


# --- attributes from a "factor=value" string -----------------------------------------------------
def factor_value_names(spec: DataSpec) -> dict[str, tuple[str, ...]]:
    """The named values of each factor of ``spec`` that has them: ``extra["<factor>_names"]`` (e.g.
    ``colour_names``), and for caption data (``shapes-captions``) the caption words of shape and scale."""
    names: dict[str, tuple[str, ...]] = {}
    for f, size in zip(spec.factor_names or (), spec.factor_sizes or ()):
        v = spec.extra.get(f"{f}_names")
        if v is not None and len(v) == size:
            names[f] = tuple(v)
    if "caption_factor_names" in spec.extra:
        from .data.shapes import SCALE_WORDS, SHAPE_NAMES

        for f, v in (("shape", SHAPE_NAMES), ("scale", SCALE_WORDS)):
            if f in (spec.factor_names or ()):
                names.setdefault(f, v)
    return names


def attribute_from_spec(
    model: TransformerLM,
    spec: DataSpec,
    steer: str,
    *,
    data: Any = None,
    kind: str = "bow",
    classifier_steps: int = 500,
    seed: int = 0,
) -> Attribute:
    """The attribute model named by ``steer``:

    - ``"words=a,b,c"``: a :class:`BagOfWords` of those vocabulary entries (any token run);
    - ``"factor=value"`` (e.g. ``"colour=red"``) on data with named factor values: ``kind="bow"``
      gives the bag {value}; ``kind="classifier"`` trains an :class:`AttributeClassifier` on
      ``data`` (a data split with ``factors`` and the LM's tokens, e.g. the training split) over
      every value of the factor, targeting ``value``.

    Unknown factors, values or words raise a one-line ValueError that names the valid ones.
    """
    if kind not in ("bow", "classifier"):
        raise ValueError(f"kind must be 'bow' or 'classifier'; got {kind!r}")
    key, sep, value = steer.partition("=")
    key, value = key.strip(), value.strip()
    names = factor_value_names(spec)
    if not sep or not key or not value:
        raise ValueError(f"{steer!r}: expected 'factor=value' (e.g. 'colour=red') or 'words=a,b,c'")
    vocab = spec.vocab
    if key == "words":
        if kind == "classifier":
            raise ValueError(
                "'words=...' makes a bag of words; the classifier needs 'factor=value' on data with factors"
            )
        if not vocab:
            raise ValueError(f"data set {spec.name!r} has no vocabulary to look words up in")
        return BagOfWords.from_words([w.strip() for w in value.split(",") if w.strip()], vocab)
    if key not in names:
        have = ", ".join(names) if names else "none"
        raise ValueError(f"no factor {key!r} with named values in {spec.name!r} (factors: {have}; or words=a,b,c)")
    if value not in names[key]:
        raise ValueError(f"factor {key!r} has no value {value!r}; values: {', '.join(names[key])}")
    target = names[key].index(value)
    if kind == "bow":
        if not vocab or value not in vocab:
            raise ValueError(f"{value!r} is not a word of the vocabulary; use kind='classifier'")
        return BagOfWords.from_words([value], vocab)
    if data is None or "factors" not in getattr(data, "tensors", {}) or model.source not in data.tensors:
        raise ValueError(f"the classifier for {steer!r} trains on a data split with 'factors' and {model.source!r}")
    col = list(spec.factor_names or ()).index(key)
    return train_attribute_classifier(
        model,
        data.tensors[model.source],
        data.tensors["factors"][:, col],
        n_classes=len(names[key]),
        class_names=names[key],
        target=target,
        steps=classifier_steps,
        seed=seed,
    )


def _listing(vocab: Sequence[str], limit: int = 60) -> str:
    shown = ", ".join(map(str, vocab[:limit]))
    return f"the vocabulary: {shown}" + (f" ... ({len(vocab)} entries)" if len(vocab) > limit else "")


# --- steered sampling ---------------------------------------------------------------------------
def _shift(past: KVCache, delta: list[tuple[Tensor, Tensor]] | None) -> KVCache:
    """A new cache: ``past`` plus ``delta`` (per layer (ΔK, ΔV)), or a shallow copy of it."""
    if delta is None:
        return [dict(c) for c in past]
    return [{"k": c["k"] + dk, "v": c["v"] + dv} for c, (dk, dv) in zip(past, delta)]


def _perturb(
    model: TransformerLM,
    attribute: Attribute,
    past: KVCache,
    last: Tensor,
    pos: int,
    clean: KVCache,
    unpert_logp: Tensor,
    token_sum: Tensor,
    n_tokens: int,
    last_is_token: bool,
    norms: Tensor | None,
    *,
    step_size: float,
    iterations: int,
    window: int | None,
    kl_scale: float,
    gamma_norm: float,
    max_norm: bool,
) -> tuple[list[tuple[Tensor, Tensor]], Tensor | None]:
    """ΔH for one step: ``iterations`` normalised gradient steps on −log p(c | H + ΔH) + KL.

    ``past``: H, the (possibly already perturbed) cache of the S positions before ``last`` [n, 1, d]
    at position ``pos``; ``clean``: the unperturbed cache through ``pos`` (for the classifier's
    one-step horizon); ``token_sum`` [n, d]: the summed clean hidden states of the ``n_tokens``
    tokens before ``last`` (itself a token unless it is <start>); ``norms`` [L, n]: the running
    maximum of the gradient norms (or None). Returns the per-layer (ΔK, ΔV) and the new ``norms``.
    """
    s = past[0]["k"].shape[2]
    mask = torch.ones(s, 1, dtype=last.dtype, device=last.device)  # (S, 1): positions perturbed
    if window is not None and window < s:
        mask[: s - window] = 0
    delta = [(torch.zeros_like(c["k"]), torch.zeros_like(c["v"])) for c in past]
    is_token = float(last_is_token)
    for _ in range(iterations):
        leaves = [t.requires_grad_() for pair in delta for t in pair]
        with torch.enable_grad():
            hid = model._run(last, pos, _shift(past, delta))[:, -1]  # (n, d)
            logp = model.head(hid).log_softmax(-1)  # (n, V)
            features = None
            if attribute.uses_features:  # mean hidden state over x_1..x_t and the expected x_{t+1}
                soft = logp.exp() @ model.tok_emb.weight  # (n, d): one-step horizon
                h_next = model._run(soft[:, None], pos + 1, [dict(c) for c in clean])[:, -1]
                features = (token_sum + is_token * hid.detach() + h_next) / (n_tokens + is_token + 1)
            loss = -attribute.log_prob(logp, features).sum()  # samples are independent: sum, not mean
            if kl_scale > 0:
                loss = loss + kl_scale * (logp.exp() * (logp - unpert_logp)).sum()
            grads = torch.autograd.grad(loss, leaves)
        new = []
        for i, (dk, dv) in enumerate(delta):
            gk, gv = grads[2 * i] * mask, grads[2 * i + 1] * mask  # (n, nh, S, hs)
            norm = (gk.square().sum((1, 2, 3)) + gv.square().sum((1, 2, 3))).sqrt()  # (n,): per sample
            if max_norm:
                norms[i] = norm + _TINY if norms[i].isnan().all() else torch.maximum(norms[i], norm)
                norm = norms[i]
            else:
                norm = norm + _TINY
            scale = (step_size / norm.pow(gamma_norm))[:, None, None, None]
            new.append(((dk - scale * gk).detach(), (dv - scale * gv).detach()))
        delta = new
    return delta, norms


@torch.no_grad()
def steered_sample(
    model: TransformerLM,
    n: int,
    attribute: Attribute,
    *,
    step_size: float = 0.02,
    iterations: int = 3,
    window: int | None = None,
    kl_scale: float = 0.01,
    gm_scale: float = 0.95,
    gamma_norm: float | None = None,
    max_norm: bool | None = None,
    generator: torch.Generator | None = None,
    cond: Tensor | None = None,
    prefix_embeds: Tensor | None = None,
    length: int | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> Tensor:
    """[n, length] token ids drawn from the frozen ``model`` steered toward ``attribute`` (PPLM).

    Args:
        step_size: α, the size of each normalised gradient step on the key/value cache.
        iterations: gradient steps per generated token (0: no perturbation).
        window: perturb only the last ``window`` cached positions (None: all of them).
        kl_scale: weight of KL(p_perturbed ‖ p_unperturbed) of the next token, in nats.
        gm_scale: γ_gm of the fusion p ∝ p_pert^γ_gm · p_unpert^(1−γ_gm) (1: the perturbed LM only).
        gamma_norm: γ, the gradient is divided by its norm to this power; None: as the official
            examples, 1.5 for a bag of words and 1.0 for a classifier (with γ > 1 a small gradient
            makes a large step: a classifier's can be tiny).
        max_norm: divide by the running maximum norm over iterations and tokens; None: as the
            official code (for a bag of words only).
        generator, cond, prefix_embeds, length, temperature, top_k, top_p: as
            :meth:`TransformerLM.sample`; one uniform per sample per token is drawn from
            ``generator``, so with nothing perturbed (``step_size=0`` or ``iterations=0``) and
            ``gm_scale=1`` the tokens are exactly ``model.sample``'s.

    The model's parameters are never changed (only the cache is perturbed, and gradients are taken
    with respect to the perturbation alone).
    """
    if not isinstance(model, TransformerLM):
        raise ValueError(f"PPLM steering needs a transformer language model; got {type(model).__name__}")
    if not (math.isfinite(step_size) and step_size >= 0) or iterations < 0 or not 0 <= gm_scale <= 1:
        raise ValueError(
            f"need step_size >= 0, iterations >= 0 and gm_scale in [0, 1]; got {step_size}, {iterations}, {gm_scale}"
        )
    if gamma_norm is None:
        gamma_norm = 1.5 if isinstance(attribute, BagOfWords) else 1.0
    if kl_scale < 0 or gamma_norm < 0 or (window is not None and window < 1):
        raise ValueError(f"need kl_scale >= 0, gamma_norm >= 0 and window >= 1; got {kl_scale}, {gamma_norm}, {window}")
    length = model.seq_len if length is None else length
    if not 1 <= length <= model.seq_len:
        raise ValueError(f"length must be in 1..{model.seq_len}; got {length}")
    if max_norm is None:
        max_norm = isinstance(attribute, BagOfWords)
    pre = model._prefix(n, cond, prefix_embeds)  # (n, P+1, d)
    out = torch.zeros(n, length, dtype=torch.long, device=pre.device)
    clean: KVCache = [{} for _ in model.blocks]  # the unperturbed LM's cache
    h = model._run(pre, 0, clean)[:, -1]  # (n, d) unperturbed hidden state at the current input
    past = [{"k": c["k"][:, :, :-1], "v": c["v"][:, :, :-1]} for c in clean]  # H_t: positions before it
    last = pre[:, -1:]  # (n, 1, d) the current input: <start>, then x_t
    token_sum = torch.zeros_like(h)  # clean hidden states of x_1..x_{t-1}, summed (classifier)
    norms = torch.full((len(model.blocks), n), float("nan"), dtype=h.dtype, device=h.device) if max_norm else None
    perturb = iterations > 0  # step_size 0 still runs the machinery (ΔH = 0 exactly)
    for t in range(length):
        pos = pre.shape[1] - 1 + t
        unpert_logits = model.head(h)  # (n, V)
        if perturb and past[0]["k"].shape[2] > 0:
            delta, norms = _perturb(
                model, attribute, past, last, pos, clean, unpert_logits.log_softmax(-1), token_sum, max(t - 1, 0),
                t > 0, norms, step_size=step_size, iterations=iterations, window=window, kl_scale=kl_scale,
                gamma_norm=gamma_norm, max_norm=max_norm,
            )  # fmt: skip
            past = _shift(past, delta)  # the perturbed history is kept for later steps
            pert_logits = model.head(model._run(last, pos, past)[:, -1])  # past now holds `last` too
        else:  # nothing to perturb: the perturbed LM is the LM
            past, pert_logits = [dict(c) for c in clean], unpert_logits
        if gm_scale == 1.0:  # the same logits model.sample would see (softmax ignores the shift)
            fused = pert_logits
        else:
            fused = gm_scale * pert_logits.log_softmax(-1) + (1 - gm_scale) * unpert_logits.log_softmax(-1)
        out[:, t] = sample_categorical(fused, generator, temperature, top_k, top_p)
        if t + 1 == length:
            break
        if t:  # the clean hidden state of x_t joins the classifier's running sum
            token_sum = token_sum + h
        last = model.tok_emb(out[:, t : t + 1])  # (n, 1, d)
        h = model._run(last, pos + 1, clean)[:, -1]
    return out


# --- measurement --------------------------------------------------------------------------------
def caption_reader(factor: str, value: int) -> Callable[[Tensor], Tensor]:
    """A reader of caption token ids [n, T] -> bool [n]: whether :func:`parse_caption` of the
    decoded caption gives ``factor`` (``shape``, ``scale``, ``colour``, ``region_x``/``_y``) the
    value id ``value``; an unparsable caption counts as wrong."""
    from .data.base import InvalidDataError
    from .data.shapes import decode_caption, parse_caption

    def read(ids: Tensor) -> Tensor:
        hits = []
        for row in ids.cpu():
            try:
                hits.append(parse_caption(decode_caption(row))[factor] == value)
            except InvalidDataError:
                hits.append(False)
        return torch.tensor(hits, dtype=torch.bool)

    return read


def caption_parses(ids: Tensor) -> Tensor:
    """bool [n]: whether each caption token row [n, T] parses as a caption (a fluency check)."""
    from .data.base import InvalidDataError
    from .data.shapes import decode_caption, parse_caption

    ok = []
    for row in ids.cpu():
        try:
            parse_caption(decode_caption(row))
            ok.append(True)
        except InvalidDataError:
            ok.append(False)
    return torch.tensor(ok, dtype=torch.bool)


@torch.no_grad()
def steering_report(
    model: TransformerLM,
    attribute: Attribute,
    attribute_reader: Callable[[Tensor], Tensor] | None = None,
    *,
    step_sizes: Sequence[float] = (0.0, 0.01, 0.02, 0.04, 0.08),
    n: int = 256,
    seed: int = 0,
    fluent: Callable[[Tensor], Tensor] | None = None,
    **steer: Any,
) -> dict[str, Any]:
    """Attribute hit rate and fluency of steered vs unsteered samples, over a sweep of step sizes.

    Every row draws ``n`` samples with the same seed (``torch.Generator().manual_seed(seed)``): row
    ``"unsteered"`` from ``model.sample``, then one row per step size from :func:`steered_sample`
    (``steer``: its other options). Per row: ``accuracy`` = mean of ``attribute_reader(ids)`` (e.g.
    :func:`caption_reader`), ``attribute_prob`` = mean ``attribute.text_prob`` (classifier
    probability, or the share of texts holding a bag word), ``log_lik`` = mean log p(x) of the texts
    under the unsteered LM in nats per text (the fluency cost), ``fluent`` = mean of ``fluent(ids)``
    when given (e.g. :func:`caption_parses`), and ``seconds``.
    """
    import time

    rows = []
    sample_kw = {k: steer[k] for k in ("cond", "temperature", "top_k", "top_p", "length") if k in steer}
    for step in [None, *step_sizes]:
        gen = torch.Generator(device=model.start.device).manual_seed(seed)
        t0 = time.perf_counter()
        if step is None:
            ids = model.sample(n, generator=gen, **sample_kw)
        else:
            ids = steered_sample(model, n, attribute, step_size=float(step), generator=gen, **steer)
        seconds = time.perf_counter() - t0
        full = ids if ids.shape[1] == model.seq_len else None
        row: dict[str, Any] = {
            "step_size": "unsteered" if step is None else float(step),
            "accuracy": None if attribute_reader is None else attribute_reader(ids).float().mean().item(),
            "attribute_prob": attribute.text_prob(model, ids).mean().item(),
            "log_lik": None if full is None else model.log_prob(full, steer.get("cond")).mean().item(),
            "seconds": round(seconds, 3),
        }
        if fluent is not None:
            row["fluent"] = fluent(ids).float().mean().item()
        rows.append(row)
    return {
        "n": n,
        "seed": seed,
        "attribute": repr(attribute),
        "options": {k: repr(v) for k, v in steer.items()},
        "rows": rows,
    }
