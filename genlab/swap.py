"""Style transfer by latent swap: decode example A's latent code with some coordinates taken from
example B's, and find which coordinates carry a named ground-truth factor (e.g. ``scale`` on
``shapes``) by their normalized mutual information with it. Works for any model whose
``capabilities`` say it can ``encode`` and ``decode`` (the VAE family, and ``sentencevae`` for
sentences). A target value instead of an example B (``colour=red``) takes the chosen coordinates
from the mean code of the training examples with that value; :func:`caption_transfer` measures
how often that changes a caption's attribute and keeps the rest (Bowman et al. 2016 and Hu et al.
2017 edit sentences in latent space the same way)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .metrics.disentanglement import mutual_information_matrix


def check_codec(model: Any) -> None:
    """One-line ``ValueError`` unless ``model`` can both ``encode`` data and ``decode`` latents of
    one (non-multimodal) modality: a swap needs both directions."""
    caps = getattr(model, "capabilities", None)
    name = getattr(model, "registry_name", "") or type(model).__name__
    if caps is None or not (caps.encode and caps.decode) or caps.modalities:
        raise ValueError(f"model {name!r} cannot swap latents: it needs both encode and decode (e.g. a vae run)")


def check_dims(dims: Sequence[int], z_dim: int) -> list[int]:
    """``dims`` as a list of distinct ints, each in 0..z_dim-1 (one-line ``ValueError`` otherwise)."""
    out: list[int] = []
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or not 0 <= int(d) < z_dim:
            raise ValueError(f"latent dim {d!r} is out of range: the model has z_dim {z_dim} (dims 0..{z_dim - 1})")
        if int(d) not in out:
            out.append(int(d))
    return out


def _dtype(model: Any) -> torch.dtype:
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def as_model_input(model: Any, x: Tensor) -> Tensor:
    """``x`` on the model's device; floating data in the model's dtype, token ids left as they are."""
    return x.to(model.device, _dtype(model)) if x.is_floating_point() else x.to(model.device)


@torch.no_grad()
def swap_latents(
    model: Any,
    a: Tensor,
    b: Tensor,
    dims: Sequence[int],
    cond_a: Tensor | None = None,
    cond_b: Tensor | None = None,
) -> Tensor:
    """Decoder means [B, *data_shape] of ``z = encode(a)`` with the coordinates ``dims`` replaced by
    those of ``encode(b)``: A's content with B's chosen attributes.

    ``a`` and ``b`` are [B, *data_shape] (``b`` may be [1, ...], broadcast over A); codes are the
    posterior means. No dims gives ``decode(encode(a))``, all dims ``decode(encode(b))`` (with A's
    condition ``cond_a`` for a conditional model)."""
    check_codec(model)
    a, b = as_model_input(model, a), as_model_input(model, b)
    za = model.encode(a, cond_a)  # [B, z_dim]
    zb = model.encode(b, cond_b if cond_b is not None else cond_a)
    idx = check_dims(dims, za.shape[1])
    z = za.clone()
    if idx:
        z[:, idx] = zb.expand_as(za)[:, idx]
    return model.decode(z, cond_a, mean=True)


@torch.no_grad()
def encode_examples(model: Any, dataset: Any, n: int = 2000, batch_size: int = 256) -> tuple[Tensor, Tensor]:
    """Posterior means [N, z_dim] (CPU float) and factors [N, K] of the first ``n`` examples of
    ``dataset`` (a TensorDataset with ``"x"`` and ``"factors"``)."""
    if "factors" not in dataset.tensors:
        raise ValueError(f"data set {dataset.spec.name!r} has no ground-truth factors to pick latents by")
    total = min(int(n), len(dataset))
    codes = []
    for start in range(0, total, batch_size):
        batch = {k: v[start : min(start + batch_size, total)].to(model.device) for k, v in dataset.tensors.items()}
        codes.append(model.encode(as_model_input(model, batch["x"]), model.condition(batch)).float().cpu())
    z = torch.cat(codes) if codes else torch.zeros(0, 0)
    return z, dataset.tensors["factors"][:total].cpu()


def attribute_dims(
    model: Any,
    dataset: Any,
    factor: str,
    top: int = 3,
    threshold: float = 0.1,
    n: int = 2000,
    bins: int = 20,
    codes: tuple[Tensor, Tensor] | None = None,
) -> list[int]:
    """The latent dims that carry ground-truth ``factor`` of ``dataset``, most informative first.

    Encodes the first ``n`` examples (posterior means [n, z_dim]) and ranks latents by their
    normalized mutual information with the factor (I(v; z_j) / H(v), in [0, 1]; see
    :func:`genlab.metrics.disentanglement.mutual_information_matrix`); returns those at or above
    ``threshold``, at most ``top`` and always at least the best one. ``codes``: those examples'
    :func:`encode_examples` when the caller has them already. One-line ``ValueError`` for a
    model that cannot encode and decode, data without factors, or an unknown factor name."""
    check_codec(model)
    names = tuple(getattr(dataset.spec, "factor_names", None) or ())
    if "factors" not in dataset.tensors or not names:
        raise ValueError(f"data set {dataset.spec.name!r} has no named ground-truth factors to pick latents by")
    if factor not in names:
        raise ValueError(f"unknown factor {factor!r}; data set {dataset.spec.name!r} has {', '.join(names)}")
    if len(dataset) < 2:
        raise ValueError(f"data set {dataset.spec.name!r} has {len(dataset)} examples; need at least 2")
    z, f = codes if codes is not None else encode_examples(model, dataset, n)
    k = names.index(factor)
    mi = mutual_information_matrix(z.numpy(), f[:, k : k + 1].numpy(), bins=bins, normalize=True)[0]  # [D]
    if np.isnan(mi).all():
        raise ValueError(f"factor {factor!r} is constant on the first {len(z)} examples; no latent can carry it")
    mi = np.nan_to_num(mi, nan=-1.0)
    order = np.argsort(-mi, kind="stable")  # stable: ties keep the lower dim first
    chosen = [int(d) for d in order[: max(1, top)] if mi[d] >= threshold]
    return chosen or [int(order[0])]


def factor_value(spec: Any, factor: str, value: str) -> int:
    """The index of ``value`` of ground-truth ``factor`` of the data set ``spec``: a value name
    (``spec.extra["factor_values"]``, e.g. ``"red"`` for ``colour``) or an index ``0..size-1``.
    One-line ``ValueError`` naming the bad factor or value and the allowed ones."""
    names = tuple(getattr(spec, "factor_names", None) or ())
    if factor not in names:
        raise ValueError(f"unknown factor {factor!r}; data set {spec.name!r} has {', '.join(names) or 'no factors'}")
    size = int(spec.factor_sizes[names.index(factor)])
    words = [str(w) for w in spec.extra.get("factor_values", {}).get(factor, [])]
    text = str(value).strip().lower()
    if text in words:
        return words.index(text)
    if text.isdigit() and int(text) < size:
        return int(text)
    allowed = ", ".join(words) if words else f"0..{size - 1}"
    raise ValueError(f"unknown value {value!r} of factor {factor!r}; expected one of {allowed}")


def factor_means(
    model: Any, dataset: Any, factor: str, n: int = 2000, codes: tuple[Tensor, Tensor] | None = None
) -> Tensor:
    """Mean posterior code of each value of ``factor`` over the first ``n`` examples of ``dataset``:
    [V, z_dim] float, V the factor's size; a value absent from those examples gives a NaN row.
    ``codes``: those examples' :func:`encode_examples` when the caller has them already."""
    names = tuple(dataset.spec.factor_names or ())
    if factor not in names:
        raise ValueError(f"unknown factor {factor!r}; data set {dataset.spec.name!r} has {', '.join(names)}")
    z, f = codes if codes is not None else encode_examples(model, dataset, n)
    k, size = names.index(factor), int(dataset.spec.factor_sizes[names.index(factor)])
    means = torch.full((size, z.shape[1]), float("nan"))
    for v in range(size):
        rows = f[:, k] == v
        if rows.any():
            means[v] = z[rows].mean(0)
    return means


@torch.no_grad()
def caption_transfer(
    model: Any,
    train: Any,
    test: Any,
    factor: str,
    dims: Sequence[int] | None = None,
    *,
    top: int = 3,
    mode: str = "swap",
    n: int = 500,
    n_train: int = 2000,
    seed: int = 0,
    train_codes: tuple[Tensor, Tensor] | None = None,
) -> dict[str, Any]:
    """Change one attribute of captions in latent space and read the result back.

    For each of the first ``n`` captions of ``test`` (a ``shapes-captions`` split; ``model`` a
    sentence model on its ``"text"``, e.g. ``sentencevae --set source=text``), a target value of
    ``factor`` (``shape``, ``scale`` or ``colour``) other than the caption's own is drawn; the code
    is edited towards it and greedily decoded. ``mode="swap"`` sets the coordinates ``dims``
    (default: :func:`attribute_dims` with ``top``) to those of the target value's mean code over
    ``n_train`` training captions; ``mode="shift"`` adds the difference of the target's and the
    source's mean codes to every coordinate. Each output is parsed back with
    :func:`genlab.data.shapes.parse_caption`. Returns fractions of the n outputs: ``parsed`` (a
    well-formed caption), ``changed`` (``factor`` equals the target), ``kept`` (every other
    captioned factor equals the source's), ``success`` (changed and kept), and ``reconstructed``
    (decoding the unedited code gives the caption back, the ceiling for ``kept``), with ``chance``
    = 1 / (V - 1) for ``changed`` by guessing among the other values. ``train_codes``: the
    :func:`encode_examples` of ``train`` (``n_train``) when the caller has them already."""
    from .data.base import InvalidDataError
    from .data.shapes import CAPTION_FACTOR_NAMES, caption_factors, decode_caption, parse_caption

    check_codec(model)
    if mode not in ("swap", "shift"):
        raise ValueError(f"mode must be 'swap' or 'shift'; got {mode!r}")
    if "text" not in test.tensors or "factors" not in test.tensors:
        raise ValueError(f"data set {test.spec.name!r} has no captions with factors (expected shapes-captions)")
    if factor not in CAPTION_FACTOR_NAMES or factor not in (train.spec.factor_names or ()):
        raise ValueError(f"factor {factor!r} is not captioned; expected one of shape, scale, colour")
    train_codes = train_codes if train_codes is not None else encode_examples(model, train, n_train)
    means = factor_means(model, train, factor, codes=train_codes)  # [V, z_dim]
    if dims is None and mode == "swap":
        dims = attribute_dims(model, train, factor, top=top, codes=train_codes)
    idx = check_dims(dims or [], means.shape[1])
    total = min(int(n), len(test))
    truth = caption_factors(test.tensors["factors"][:total].numpy())  # [n, 5]
    k = CAPTION_FACTOR_NAMES.index(factor)
    size = means.shape[0]
    rng = np.random.default_rng(seed)
    target = (truth[:, k] + rng.integers(1, size, total)) % size  # uniform over the other values
    batch = {key: v[:total] for key, v in test.tensors.items()}
    z, _ = encode_examples(model, test, total)
    if mode == "swap":
        edited = z.clone()
        edited[:, idx] = means[target][:, idx]
    else:
        edited = z + means[target] - means[truth[:, k]]
    if torch.isnan(edited).any():
        raise ValueError(f"some values of {factor!r} are missing from the first {n_train} training examples")
    dtype = _dtype(model)
    out = model.decode(edited.to(model.device, dtype), mean=True).cpu()
    back = model.decode(z.to(model.device, dtype), mean=True).cpu()
    parsed, changed, kept, recon = [], [], [], []
    others = [j for j in range(len(CAPTION_FACTOR_NAMES)) if j != k]
    for i in range(total):
        try:
            got = parse_caption(decode_caption(out[i]))
            row = [got[name] for name in CAPTION_FACTOR_NAMES]
        except InvalidDataError:
            row = None
        parsed.append(row is not None)
        changed.append(row is not None and row[k] == target[i])
        kept.append(row is not None and all(row[j] == truth[i, j] for j in others))
        recon.append(decode_caption(back[i]) == decode_caption(batch["text"][i]))
    ok = np.array(changed) & np.array(kept)
    return {
        "factor": factor,
        "mode": mode,
        "dims": idx if mode == "swap" else list(range(means.shape[1])),
        "n": total,
        "parsed": float(np.mean(parsed)),
        "changed": float(np.mean(changed)),
        "kept": float(np.mean(kept)),
        "success": float(ok.mean()),
        "reconstructed": float(np.mean(recon)),
        "chance": 1.0 / (size - 1),
    }
