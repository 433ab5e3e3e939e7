"""Log-likelihood metrics in nats and bits per dimension, comparable across model families."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import Tensor

from ..data.spec import DataSpec


def bits_per_dim(log_prob_nats: float | Tensor, spec: DataSpec, discrete: bool) -> float | Tensor:
    """Bits per dimension from a per-example log-likelihood in nats (a float or a [B] tensor).

    ``discrete=True``: ``log_prob`` is a log probability mass on the data's levels, so
    bpd = -log P / (D ln 2). ``discrete=False`` on data with L levels: ``log_prob`` is a density
    p(y) of the uniformly dequantized data y = (level + u) / L, u ~ U[0, 1)^D, whose bins have width
    1/L per dimension (genlab's flows, and VAEs with a Gaussian decoder, all use this scale). Then

        log P(level) = log E_u[p(y)] + D ln(1/L) >= E_u[log p(y)] - D ln L        (Jensen)

    so bpd = (-log p + D ln L) / (D ln 2) is an upper bound on the discrete bits/dim, >= 0, and
    equal to it for a density that is constant on each bin. Continuous data (no levels):
    differential bits/dim (may be negative).
    """
    d = spec.dim
    offset = 0.0 if (discrete or spec.levels is None) else d * math.log(spec.levels)
    return (-log_prob_nats + offset) / (d * math.log(2.0))


@torch.no_grad()
def likelihood_metrics(
    model: Any, data: Any, *, k: int | None = None, batch_size: int = 512, max_examples: int | None = None
) -> dict[str, float]:
    """Mean negative log-likelihood (nats/example) and bits/dim of ``model`` on a data set.

    For a model with ``likelihood == "bound"`` this is the bound it reports (ELBO, or IWAE-k when
    ``k`` is given and the model's ``log_prob`` accepts ``k``). Returns ``{"nll", "bpd"}``.

    A multimodal model (``model.capabilities.modalities`` non-empty) is handed the dict of its
    modalities and scored jointly: ``nll`` in nats per example (all modalities together), ``bpd`` per
    dimension of all modalities together (pixels, tokens and audio samples; :func:`multimodal_bits_per_dim`),
    or, for a conditional model of some of them (``capabilities.targets``, e.g. a captioner of images:
    ``("text",)``), per dimension of those: bits per token.
    """
    key, modalities = model.data_key, tuple(model.capabilities.modalities)
    spec = data.spec
    if key != "x" and not modalities:  # e.g. captions: bits per token of the text, not per pixel of the image
        spec = dataclasses.replace(
            spec, kind="tokens", shape=tuple(data.tensors[key].shape[1:]), levels=spec.vocab_size
        )
    total, count = 0.0, 0
    n = len(data) if max_examples is None else min(len(data), max_examples)
    for start in range(0, n, batch_size):
        batch = data[slice(start, min(n, start + batch_size))]
        batch = {kk: v.to(model.device) for kk, v in batch.items()}
        cond = model.condition(batch)
        x = {m: batch[m] for m in modalities} if modalities else batch[key]
        lp = model.log_prob(x, cond) if k is None else model.log_prob(x, cond, k=k)
        total += float(lp.double().sum())
        count += lp.shape[0]
    mean_lp = total / max(count, 1)
    if modalities:
        # A model of some modalities given the others (capabilities.targets, e.g. a captioner's "text"):
        # per dimension of those alone; a joint model: of all of them together.
        targets = model.capabilities.targets
        scored = tuple(targets) if targets is not None else modalities
        return {"nll": -mean_lp, "bpd": multimodal_bits_per_dim(mean_lp, spec, scored, model.discrete)}
    return {"nll": -mean_lp, "bpd": float(bits_per_dim(mean_lp, spec, model.discrete))}


def multimodal_bits_per_dim(log_prob_nats: float, spec: DataSpec, modalities: tuple[str, ...], discrete: bool) -> float:
    """Bits per dimension of a joint log-likelihood (nats per example) of several modalities: per
    dimension of all of them together, D = sum_m D_m. A density (``discrete=False``) on modalities
    with L_m levels adds their dequantization term D_m ln L_m as :func:`bits_per_dim` does; token
    ids are never dequantized, and continuous modalities add nothing."""
    subs = [spec.modality(m) for m in modalities]
    dims = sum(s.dim for s in subs)
    offset = 0.0
    if not discrete:
        offset = sum(s.dim * math.log(s.levels) for s in subs if s.levels and s.kind != "tokens")
    return (-log_prob_nats + offset) / (dims * math.log(2.0))
