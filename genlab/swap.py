"""Style transfer by latent swap: decode example A's latent code with some coordinates taken from
example B's, and find which coordinates carry a named ground-truth factor (e.g. ``scale`` on
``shapes``) by their normalized mutual information with it. Works for any model whose
``capabilities`` say it can ``encode`` and ``decode`` (the VAE family)."""

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
    dtype = _dtype(model)
    za = model.encode(a.to(model.device, dtype), cond_a)  # [B, z_dim]
    zb = model.encode(b.to(model.device, dtype), cond_b if cond_b is not None else cond_a)
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
    dtype = _dtype(model)
    codes = []
    for start in range(0, total, batch_size):
        batch = {k: v[start : min(start + batch_size, total)].to(model.device) for k, v in dataset.tensors.items()}
        codes.append(model.encode(batch["x"].to(dtype), model.condition(batch)).float().cpu())
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
) -> list[int]:
    """The latent dims that carry ground-truth ``factor`` of ``dataset``, most informative first.

    Encodes the first ``n`` examples (posterior means [n, z_dim]) and ranks latents by their
    normalized mutual information with the factor (I(v; z_j) / H(v), in [0, 1]; see
    :func:`genlab.metrics.disentanglement.mutual_information_matrix`); returns those at or above
    ``threshold``, at most ``top`` and always at least the best one. One-line ``ValueError`` for a
    model that cannot encode and decode, data without factors, or an unknown factor name."""
    check_codec(model)
    names = tuple(getattr(dataset.spec, "factor_names", None) or ())
    if "factors" not in dataset.tensors or not names:
        raise ValueError(f"data set {dataset.spec.name!r} has no named ground-truth factors to pick latents by")
    if factor not in names:
        raise ValueError(f"unknown factor {factor!r}; data set {dataset.spec.name!r} has {', '.join(names)}")
    if len(dataset) < 2:
        raise ValueError(f"data set {dataset.spec.name!r} has {len(dataset)} examples; need at least 2")
    z, f = encode_examples(model, dataset, n)
    k = names.index(factor)
    mi = mutual_information_matrix(z.numpy(), f[:, k : k + 1].numpy(), bins=bins, normalize=True)[0]  # [D]
    if np.isnan(mi).all():
        raise ValueError(f"factor {factor!r} is constant on the first {len(z)} examples; no latent can carry it")
    mi = np.nan_to_num(mi, nan=-1.0)
    order = np.argsort(-mi, kind="stable")  # stable: ties keep the lower dim first
    chosen = [int(d) for d in order[: max(1, top)] if mi[d] >= threshold]
    return chosen or [int(order[0])]
