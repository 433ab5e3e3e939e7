"""Membership inference by a loss threshold: can one tell a training example from a fresh one by
the model's likelihood alone?

Yeom, Giacomelli, Fredrikson & Jha, "Privacy Risk in Machine Learning: Analyzing the Connection to
Overfitting", IEEE CSF 2018, section 3.2 (the threshold adversary): guess "member" when the model's
loss on x is below a threshold tau, i.e. when log p(x) > -tau. Its advantage is governed by the
generalization gap. Carlini et al. use the same score for generative models ("Extracting Training
Data from Large Language Models", USENIX Security 2021: the perplexity of a sample ranks likely
training members; "Membership Inference Attacks From First Principles", IEEE S&P 2022, sec. III-B,
call it the LOSS attack). The later literature (Carlini et al. 2022, sec. III-A) argues that the
average-case AUC hides the attack's worst-case power and reports the **true-positive rate at a
low false-positive rate** (1 %, 0.1 %); both are reported here.

Definitions (score s(x) = log p(x) in nats per example, from ``model.log_prob``: exact, or a lower
bound such as the ELBO -- then the attack uses the bound; optional division by the number of
dimensions, which matters only for variable-length data):

    AUC       P(s(x_train) > s(x_heldout)) + 1/2 P(tie), the Mann-Whitney statistic over all pairs
              of a training and a held-out example: 0.5 = no membership signal, 1 = every training
              example scores above every held-out one.
    TPR@FPR   the fraction of training examples whose score exceeds the (1 - FPR) quantile of the
              held-out scores. With H held-out examples an FPR below 1/H cannot be resolved; such
              entries are None.
    null AUC  the AUC between two disjoint random halves of the held-out set: both are non-members,
              so it is 0.5 up to sampling error -- the interval that a "no signal" model shows.

95 % intervals are percentile bootstraps (both sides resampled with replacement, seeded).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..data.base import TensorDataset
from ..protocol import GenerativeModel

#: False-positive rates at which the true-positive rate is reported.
LOW_FPRS: tuple[float, ...] = (0.01, 0.001)


def auc_score(pos: np.ndarray, neg: np.ndarray) -> float:
    """Mann-Whitney AUC = P(pos > neg) + 1/2 P(pos == neg) of scores pos [N] vs neg [M] (a fraction)."""
    pos, neg = np.asarray(pos, np.float64).ravel(), np.asarray(neg, np.float64).ravel()
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError(f"auc_score needs scores on both sides; got {len(pos)} and {len(neg)}")
    both = np.concatenate([pos, neg])
    order = np.argsort(both, kind="mergesort")
    ranks = np.empty(len(both), np.float64)
    sorted_vals = both[order]
    # Average ranks of ties: first and last position of each run of equal values.
    _, first, counts = np.unique(sorted_vals, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    r_pos = ranks[: len(pos)].sum()
    return float((r_pos - len(pos) * (len(pos) + 1) / 2.0) / (len(pos) * len(neg)))


def tpr_at_fpr(pos: np.ndarray, neg: np.ndarray, fpr: float) -> float | None:
    """Fraction of ``pos`` scores above the threshold that lets through a fraction ``fpr`` of ``neg``
    (the ``ceil(fpr * M)``-th largest negative score, strict inequality). None when fpr < 1/M."""
    neg = np.sort(np.asarray(neg, np.float64).ravel())[::-1]
    k = int(math.floor(fpr * len(neg) + 1e-9))  # negatives allowed above the threshold
    if k < 1:
        return None
    tau = neg[k] if k < len(neg) else -np.inf  # exactly k negatives lie strictly above neg[k] (no ties)
    return float(np.mean(np.asarray(pos, np.float64) > tau))


def _bootstrap_auc(pos: np.ndarray, neg: np.ndarray, rng: np.random.Generator, n_boot: int) -> list[float]:
    stats = [auc_score(rng.choice(pos, len(pos)), rng.choice(neg, len(neg))) for _ in range(n_boot)]
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return [float(lo), float(hi)]


def membership_from_scores(
    train_scores: np.ndarray | Tensor | Sequence[float],
    heldout_scores: np.ndarray | Tensor | Sequence[float],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    fprs: Sequence[float] = LOW_FPRS,
) -> dict[str, Any]:
    """The loss-threshold attack on given scores (higher = more likely a member): ``train_scores``
    [N] of training examples, ``heldout_scores`` [M] of held-out ones (M >= 4: its halves give the
    null). Returns a JSON-safe dict: ``auc`` and ``auc_ci`` (95 % bootstrap), ``null_auc`` and
    ``null_auc_ci`` (two disjoint held-out halves), ``tpr_at_fpr`` {"0.01": fraction or None, ...},
    ``n_train``, ``n_heldout``, ``n_boot``, ``seed``."""
    pos = train_scores.detach().cpu().numpy() if isinstance(train_scores, Tensor) else np.asarray(train_scores)
    neg = heldout_scores.detach().cpu().numpy() if isinstance(heldout_scores, Tensor) else np.asarray(heldout_scores)
    pos, neg = pos.astype(np.float64).ravel(), neg.astype(np.float64).ravel()
    if len(pos) < 2 or len(neg) < 4:
        raise ValueError(f"membership needs >= 2 training and >= 4 held-out scores; got {len(pos)} and {len(neg)}")
    if not (np.isfinite(pos).all() and np.isfinite(neg).all()):
        raise ValueError("membership scores contain NaN or inf; the model's log_prob is not finite on some examples")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 10:
        raise ValueError(f"n_boot={n_boot!r} is invalid; expected an integer >= 10")
    bad = [f for f in fprs if not 0 < f < 1]
    if bad:
        raise ValueError(f"fpr {bad[0]!r} is outside (0, 1)")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(neg))
    half_a, half_b = neg[perm[: len(neg) // 2]], neg[perm[len(neg) // 2 :]]
    return {
        "auc": auc_score(pos, neg),
        "auc_ci": _bootstrap_auc(pos, neg, rng, n_boot),
        "null_auc": auc_score(half_a, half_b),
        "null_auc_ci": _bootstrap_auc(half_a, half_b, rng, n_boot),
        "tpr_at_fpr": {str(f): tpr_at_fpr(pos, neg, f) for f in fprs},
        "min_resolvable_fpr": 1.0 / len(neg),
        "n_train": int(len(pos)),
        "n_heldout": int(len(neg)),
        "n_boot": int(n_boot),
        "seed": int(seed),
    }


def _model_input(model: GenerativeModel, data: TensorDataset, idx: Tensor) -> Tensor | dict[str, Tensor]:
    keys = model.capabilities.modalities
    if keys:
        missing = [k for k in keys if k not in data.tensors]
        if missing:
            raise ValueError(f"data set {data.spec.name!r} lacks modality {missing[0]!r} of the model")
        return {k: data.tensors[k][idx] for k in keys}
    if model.data_key not in data.tensors:
        raise ValueError(f"data set {data.spec.name!r} has no {model.data_key!r} tensor for this model")
    return data.tensors[model.data_key][idx]


def _dims(x: Tensor | dict[str, Tensor]) -> int:
    if isinstance(x, dict):
        return sum(int(v[0].numel()) for v in x.values())
    return int(x[0].numel())


@torch.no_grad()
def log_prob_scores(
    model: GenerativeModel,
    data: TensorDataset,
    idx: np.ndarray | Tensor,
    *,
    batch_size: int = 256,
    per_dim: bool = False,
    seed: int = 0,
) -> np.ndarray:
    """[len(idx)] scores log p(x) of the examples ``idx`` of ``data`` in nats per example (``per_dim``:
    divided by the number of dimensions of one example). Conditional models get the data's ``cond``
    or ``y``; multimodal models a dict of all their modalities. Stochastic bounds (ELBO, IWAE) are
    drawn under ``seed`` (the global RNG is restored afterwards)."""
    if model.likelihood == "none":
        raise ValueError(f"membership needs a likelihood; {type(model).__name__} has likelihood='none'")
    idx = torch.as_tensor(np.asarray(idx), dtype=torch.long)
    out = []
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for start in range(0, len(idx), batch_size):
            b = idx[start : start + batch_size]
            x = _model_input(model, data, b)
            cond = model.condition(data[b]) if model.conditional else None
            if isinstance(x, dict):
                x = {k: v.to(model.device) for k, v in x.items()}
            else:
                x = x.to(model.device)
            lp = model.log_prob(x, None if cond is None else cond.to(model.device)).double().cpu()
            out.append(lp / _dims(x) if per_dim else lp)
    return torch.cat(out).numpy() if out else np.zeros(0)


def membership_audit(
    model: GenerativeModel,
    train: TensorDataset,
    heldout: TensorDataset,
    *,
    n: int = 1000,
    seed: int = 0,
    batch_size: int = 256,
    per_dim: bool = False,
    n_boot: int = 1000,
    fprs: Sequence[float] = LOW_FPRS,
) -> dict[str, Any]:
    """Loss-threshold membership inference (module docstring) of ``model`` on ``n`` random training
    examples vs ``n`` random held-out examples (fewer if a split is smaller; seeded, no repeats).

    Any model with ``likelihood`` "exact" or "bound" (images, text, audio, multimodal). Returns
    :func:`membership_from_scores`'s dict plus ``likelihood`` (the kind the score is),
    ``score_unit`` ("nats per example" or "nats per dim"), ``mean_score_train``,
    ``mean_score_heldout`` and ``generalization_gap`` (their difference, same unit)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 4:
        raise ValueError(f"n={n!r} is invalid; expected an integer >= 4 examples per side")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is invalid; expected a positive integer")
    rng = np.random.default_rng(seed)
    i_train = np.sort(rng.choice(len(train), min(n, len(train)), replace=False))
    i_held = np.sort(rng.choice(len(heldout), min(n, len(heldout)), replace=False))
    s_train = log_prob_scores(model, train, i_train, batch_size=batch_size, per_dim=per_dim, seed=seed)
    s_held = log_prob_scores(model, heldout, i_held, batch_size=batch_size, per_dim=per_dim, seed=seed + 1)
    out = membership_from_scores(s_train, s_held, n_boot=n_boot, seed=seed, fprs=fprs)
    out.update(
        likelihood=model.likelihood,
        score_unit="nats per dim" if per_dim else "nats per example",
        mean_score_train=float(s_train.mean()),
        mean_score_heldout=float(s_held.mean()),
        generalization_gap=float(s_train.mean() - s_held.mean()),
    )
    return out
