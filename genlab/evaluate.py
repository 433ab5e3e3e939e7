"""``genlab.evaluate``: the metrics that apply to a model, chosen from its capabilities."""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import torch

from .data.base import TensorDataset
from .metrics.likelihood import likelihood_metrics
from .protocol import GenerativeModel

AVAILABLE = ("likelihood", "iwae", "recon")


def applicable_metrics(model: GenerativeModel) -> list[str]:
    """The metric names that make sense for ``model``: ``likelihood`` unless it has none,
    ``iwae`` for bound models whose ``log_prob`` takes ``k``, ``recon`` if it can reconstruct."""
    out = []
    if model.likelihood != "none":
        out.append("likelihood")
        if model.likelihood == "bound" and "k" in inspect.signature(model.log_prob).parameters:
            out.append("iwae")
    if hasattr(model, "reconstruct"):
        out.append("recon")
    return out


@torch.no_grad()
def evaluate(model: GenerativeModel, dataset: TensorDataset, metrics: Sequence[str] | None = None, *, k: int = 100, batch_size: int = 256, seed: int = 0) -> dict[str, Any]:
    """Evaluate ``model`` on ``dataset``; returns a flat JSON-safe dict.

    ``likelihood``: mean log-likelihood in nats per example and bits/dim (``log_prob_nats``,
    ``bpd``); for bound models this is the ELBO (k=1: ``elbo_nats``, ``elbo_bpd``).
    ``iwae``: the IWAE-k bound (``iwae_nats``, ``iwae_bpd``, ``iwae_k``), tighter than the ELBO.
    ``recon``: mean squared reconstruction error per example, summed over dimensions, in the
    [0, 1] data units (``recon_mse``), and per dimension (``recon_mse_per_dim``).
    """
    chosen = applicable_metrics(model) if metrics is None else list(metrics)
    for m in chosen:
        if m not in AVAILABLE:
            raise ValueError(f"unknown metric {m!r}; expected one of {', '.join(AVAILABLE)}")
        if m not in applicable_metrics(model):
            raise ValueError(f"metric {m!r} does not apply to {type(model).__name__} (applicable: {', '.join(applicable_metrics(model))})")
    model.eval()
    torch.manual_seed(seed)
    out: dict[str, Any] = {"n_examples": len(dataset), "likelihood_kind": model.likelihood}
    if "likelihood" in chosen:
        kw = {"k": 1} if model.likelihood == "bound" and "iwae" in applicable_metrics(model) else {}
        m = likelihood_metrics(model, dataset, batch_size=batch_size, **kw)
        name = "elbo" if model.likelihood == "bound" else "log_prob"
        out[f"{name}_nats"], out[f"{name}_bpd"] = -m["nll"], m["bpd"]
    if "iwae" in chosen:
        m = likelihood_metrics(model, dataset, k=k, batch_size=max(1, batch_size // 4))
        out.update(iwae_k=k, iwae_nats=-m["nll"], iwae_bpd=m["bpd"])
    if "recon" in chosen:
        se, n = 0.0, 0
        for batch in dataset.batches(batch_size):
            batch = {kk: v.to(model.device) for kk, v in batch.items()}
            rec = model.reconstruct(batch["x"], model.condition(batch))  # type: ignore[operator]
            se += float((rec - batch["x"]).pow(2).flatten(1).sum(1).double().sum())
            n += len(batch["x"])
        out["recon_mse"] = se / max(n, 1)
        out["recon_mse_per_dim"] = out["recon_mse"] / dataset.spec.dim
    return out
