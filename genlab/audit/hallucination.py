"""Hallucination by latent search: many high-resolution images explain one low-resolution input.

Menon, Damian, Hu, Ravi & Rudin, "PULSE: Self-Supervised Photo Upsampling via Latent Space
Exploration of Generative Models", CVPR 2020, sections 3-4. Given a low-resolution image I_LR and a
downscaling operator DS, PULSE searches a generator's latent space for z such that

    || DS(G(z)) - I_LR ||_p^p <= eps                                    (the downscaling loss)

and, since a Gaussian latent N(0, I_d) concentrates on the sphere of radius sqrt(d), it optimizes on
that sphere (a step, then a projection z <- sqrt(d) z / ||z||), so that G(z) stays realistic. Every z
that meets the tolerance is an equally valid "up-sampling" -- the model *hallucinates* the missing
detail, and with it possibly the identity (here: the class) of the picture. The paper's own example
(a down-sampled photo of Barack Obama up-sampled to a white face) is what the lecture warns about.

Here: DS = average pooling by an integer factor f; M random restarts per test image, each optimized
by Adam on the sphere; the tolerance ``eps`` is an RMS error per low-resolution pixel value, on the
data's [0, 1] scale (DS(G(z)) and I_LR both in [0, 1]). Reported per image and overall:
    fit         fraction of restarts whose answer's low-res RMS error <= eps (the solution set found);
    distinct    number of fitting answers that differ from each other by more than ``delta`` (RMS
                per high-resolution pixel value; greedy: an answer counts if no earlier counted one
                lies within delta);
    class_changed  fraction of fitting answers whose class, read by the data set's feature
                classifier (:mod:`genlab.metrics.features`, head 0: the label ``y``), differs from the
                true image's label (and, separately, from the classifier's reading of the truth).

Decoders: any model with ``capabilities.decode`` (VAE: decoder mean; flow: the inverse, made
continuous for discrete data; DDPM: deterministic DDIM from x_T) and a GAN's generator. The search
needs gradients through the decoder; a decoder that runs without autograd is a one-line ValueError.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.base import TensorDataset
from ..protocol import GenerativeModel

Decoder = Callable[[Tensor], Tensor]


def downscale(x: Tensor, factor: int) -> Tensor:
    """Average pooling of images [B, C, H, W] by ``factor`` (H and W divisible by it) -> [B, C, H/f, W/f]."""
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ValueError(f"downscale factor {factor!r} is invalid; expected a positive integer")
    if x.dim() != 4 or x.shape[-1] % factor or x.shape[-2] % factor:
        raise ValueError(
            f"downscale by {factor} needs images [B, C, H, W] with H, W divisible by it; got {tuple(x.shape)}"
        )
    return F.avg_pool2d(x, factor)


def project_sphere(z: Tensor) -> Tensor:
    """Rows of z [B, d] scaled onto the sphere of radius sqrt(d), where N(0, I_d) concentrates."""
    return z * (math.sqrt(z.shape[1]) / z.norm(dim=1, keepdim=True).clamp_min(1e-12))


def latent_decoder(model: GenerativeModel, example: Tensor | None = None) -> tuple[Decoder, int]:
    """(G, d): a differentiable map from latents [B, d] to images [B, C, H, W] in [0, 1] for ``model``,
    and the latent size d. Models with ``capabilities.decode`` use ``decode(z, mean=True)`` (d from
    ``encode(example)``); a flow on discrete data uses its inverse before quantization (the floor to
    levels has no gradient), rescaled to the data's level / (L - 1) grid; a GAN uses its generator."""
    from ..models.flows.base import FlowModel
    from ..models.gan import GAN

    if model.conditional:
        raise ValueError(f"latent search needs an unconditional model; this {type(model).__name__} is conditional")
    if isinstance(model, GAN):
        return (lambda z: model.generate(z)), int(model.z_dim)
    if not model.capabilities.decode:
        raise ValueError(f"{type(model).__name__} has no decoder from latents (capabilities.decode is False)")
    if isinstance(model, FlowModel):
        d = int(model.spec.dim)
        if model.levels:
            lv = int(model.levels)

            def flow_decode(z: Tensor) -> Tensor:
                y = model.pre.inverse(model.flow.inverse(z, None))  # dequantized data in [0, 1]
                return ((y * lv - 0.5) / (lv - 1)).clamp(0.0, 1.0)  # centre of y's level, on the data's grid

            return flow_decode, d
        return (lambda z: model.decode(z, None, mean=True)), d
    if example is None:
        raise ValueError("latent_decoder needs an example image to learn the latent size from encode()")
    with torch.no_grad():
        d = int(model.encode(example[:1].to(model.device)).shape[1])
    return (lambda z: model.decode(z, None, mean=True)), d


def latent_search(
    decoder: Decoder,
    z_dim: int,
    x_lr: Tensor,
    factor: int,
    *,
    restarts: int = 16,
    steps: int = 300,
    lr: float = 0.05,
    seed: int = 0,
    sphere: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """PULSE search: for each low-res image of ``x_lr`` [K, C, h, w], ``restarts`` latents from
    random N(0, I) starts, optimized by Adam (``steps``; ``lr`` decayed by a cosine to 1 %) on the
    downscaling loss mean((downscale(G(z), factor) - x_lr)^2), projected after every step onto the
    sphere of radius sqrt(z_dim) (``sphere``; the gradient is first projected on the sphere's
    tangent space). Returns (z [K, M, d], x_hr = G(z) [K, M, C, H, W], err [K, M] the RMS error per
    low-res pixel value), all detached, on the CPU."""
    if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 1:
        raise ValueError(f"restarts={restarts!r} is invalid; expected a positive integer")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps={steps!r} is invalid; expected a non-negative integer")
    if not lr > 0:
        raise ValueError(f"lr={lr!r} is invalid; expected > 0")
    k = len(x_lr)
    gen = torch.Generator().manual_seed(seed)
    z0 = torch.randn(k * restarts, z_dim, generator=gen, dtype=torch.float64)
    z0 = project_sphere(z0) if sphere else z0
    probe = decoder(z0[:1].to(x_lr.dtype).to(x_lr.device).requires_grad_(True))
    if not probe.requires_grad:
        raise ValueError(
            "the model's decoder runs without autograd (e.g. under torch.no_grad); latent search needs its gradient"
        )
    target = x_lr.repeat_interleave(restarts, 0)  # (K*M, C, h, w)
    z = z0.to(x_lr.dtype).to(x_lr.device).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    # Cosine decay to 1 % of lr: Adam at a constant rate keeps jittering around the solution set by
    # about lr per coordinate (PULSE, too, decays its rate over the search).
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1), eta_min=0.01 * lr)
    with torch.enable_grad():
        for _ in range(steps):
            loss_each = (downscale(decoder(z), factor) - target).pow(2).flatten(1).mean(1)
            opt.zero_grad()
            loss_each.sum().backward()  # independent restarts: the sum's gradient is each one's own
            if sphere:  # the gradient along the sphere only: Adam's per-coordinate scaling of the
                # radial part would otherwise fight the projection and stall it away from a fit
                with torch.no_grad():
                    g = z.grad
                    g -= (g * z).sum(1, keepdim=True) / z.pow(2).sum(1, keepdim=True) * z
            opt.step()
            sched.step()
            if sphere:
                with torch.no_grad():
                    z.copy_(project_sphere(z))
    with torch.no_grad():
        x_hr = decoder(z)
        err = (downscale(x_hr, factor) - target).pow(2).flatten(1).mean(1).sqrt()
    return (
        z.detach().cpu().view(k, restarts, -1),
        x_hr.cpu().view(k, restarts, *x_hr.shape[1:]),
        err.cpu().view(k, restarts),
    )


def count_distinct(x: Tensor, delta: float) -> int:
    """Greedy count of images x [M, ...] pairwise more than ``delta`` apart (RMS per value): an image
    counts if no image counted before it lies within delta."""
    kept: list[Tensor] = []
    for xi in x.flatten(1):
        if all(float((xi - kj).pow(2).mean().sqrt()) > delta for kj in kept):
            kept.append(xi)
    return len(kept)


def hallucination_audit(
    model: GenerativeModel,
    test: TensorDataset,
    train: TensorDataset | None = None,
    *,
    factor: int = 4,
    n_images: int = 8,
    restarts: int = 16,
    steps: int = 300,
    lr: float = 0.05,
    eps: float = 0.05,
    delta: float = 0.1,
    seed: int = 0,
    out_dir: str | os.PathLike | None = None,
    show: int = 4,
    decoder: Decoder | None = None,
    z_dim: int | None = None,
    sphere: bool = True,
) -> dict[str, Any]:
    """PULSE-style hallucination audit (module docstring) of a decoder-based ``model`` on ``n_images``
    random images of ``test`` (seeded), downscaled by ``factor``. ``train`` (the training split) trains
    the class reader (:func:`genlab.metrics.features.feature_extractor`, cached); without it, or
    on data without labels, class changes are not reported. ``decoder``/``z_dim`` override
    :func:`latent_decoder` (e.g. a known linear map in tests); ``sphere=False`` drops PULSE's constraint
    (answers may then leave the prior's typical set). With ``out_dir``, writes
    ``hallucination.png``: per shown image the low-res input, the truth and up to 6 fitting answers.

    Returns a JSON-safe dict: settings (``factor``, ``eps`` (RMS per low-res pixel value, [0, 1]
    scale), ``delta`` (RMS per high-res pixel value), ``restarts``, ``steps``, ``lr``, ``z_dim``, ``sphere``,
    ``mean_latent_norm`` (sqrt(z_dim) on the sphere),
    ``lowres_shape``), ``fit_fraction`` (of all restarts), ``images_with_fit`` (fraction of images
    with >= 1 fitting answer), ``mean_distinct`` (distinct fitting answers per image),
    ``class_changed`` (fraction of fitting answers whose read class != the true label; None without
    a reader), ``class_changed_vs_read_truth``, ``reader_accuracy_on_truth``, ``mean_rms_to_truth``
    (high-res RMS distance of fitting answers to the true image), ``per_image`` (list of dicts),
    ``seconds`` and ``png`` (path or None)."""
    import time

    t0 = time.perf_counter()
    if "x" not in test.tensors or test.tensors["x"].dim() != 4:
        raise ValueError(f"hallucination needs images [N, C, H, W]; data set {test.spec.name!r} has none")
    for name, v in (("eps", eps), ("delta", delta)):
        if not v > 0:
            raise ValueError(f"{name}={v!r} is invalid; expected > 0")
    if isinstance(n_images, bool) or not isinstance(n_images, int) or n_images < 1:
        raise ValueError(f"n_images={n_images!r} is invalid; expected a positive integer")
    rng = np.random.default_rng(seed)
    idx = torch.from_numpy(np.sort(rng.choice(len(test), min(n_images, len(test)), replace=False)))
    truth = test.tensors["x"][idx].float()
    x_lr = downscale(truth, factor)
    if decoder is None:
        decoder, z_dim = latent_decoder(model, truth)
        model.eval()
    elif z_dim is None:
        raise ValueError("a custom decoder needs its z_dim")
    dtype = next(iter(model.parameters()), torch.zeros((), dtype=torch.float32)).dtype
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        z, x_hr, err = latent_search(
            decoder,
            int(z_dim),  # type: ignore[arg-type]
            x_lr.to(dtype).to(model.device),
            factor,
            restarts=restarts,
            steps=steps,
            lr=lr,
            seed=seed,
            sphere=sphere,
        )
    fit = err <= eps  # (K, M)
    # The class reader: the data set's feature classifier, head 0 (the label y).
    reader = None
    y_true = test.tensors["y"][idx] if "y" in test.tensors and test.tensors["y"].dim() == 1 else None
    if train is not None and y_true is not None:
        from ..metrics.features import FeatureNetworkError, train_classifier

        try:
            reader = train_classifier(train)
        except FeatureNetworkError:
            reader = None
    per_image = []
    changed = changed_read = n_fit_total = 0
    truth_read_ok = []
    dists = []
    for i in range(len(idx)):
        answers = x_hr[i][fit[i]].float()
        entry: dict[str, Any] = {
            "index": int(idx[i]),
            "n_fit": int(fit[i].sum()),
            "n_distinct": count_distinct(answers, delta) if len(answers) else 0,
            "best_error": float(err[i].min()),
        }
        if len(answers):
            d = (answers - truth[i]).flatten(1).pow(2).mean(1).sqrt()
            dists.append(d)
            entry["mean_rms_to_truth"] = float(d.mean())
        if reader is not None and y_true is not None:
            read_truth = int(reader.predict(truth[i : i + 1])[0])
            truth_read_ok.append(read_truth == int(y_true[i]))
            entry["true_class"], entry["read_truth_class"] = int(y_true[i]), read_truth
            if len(answers):
                pred = reader.predict(answers)
                entry["answer_classes"] = [int(p) for p in pred]
                changed += int((pred != y_true[i]).sum())
                changed_read += int((pred != read_truth).sum())
        n_fit_total += entry["n_fit"]
        per_image.append(entry)
    have_reader = reader is not None and y_true is not None
    png = None
    if out_dir is not None:
        png = str(_picture(truth, x_lr, x_hr, err, fit, factor, eps, per_image, show, Path(out_dir)))
    return {
        "factor": int(factor),
        "eps": float(eps),
        "eps_unit": "RMS error per low-res pixel value, data scaled to [0, 1]",
        "delta": float(delta),
        "restarts": int(restarts),
        "steps": int(steps),
        "lr": float(lr),
        "z_dim": int(z_dim),  # type: ignore[arg-type]
        "sphere": bool(sphere),
        "mean_latent_norm": float(z.norm(dim=-1).mean()),
        "lowres_shape": list(x_lr.shape[1:]),
        "n_images": int(len(idx)),
        "fit_fraction": float(fit.float().mean()),
        "images_with_fit": float(fit.any(1).float().mean()),
        "mean_distinct": float(np.mean([e["n_distinct"] for e in per_image])),
        "median_best_error": float(err.min(1).values.median()),
        "class_changed": (changed / n_fit_total if n_fit_total else None) if have_reader else None,
        "class_changed_vs_read_truth": (changed_read / n_fit_total if n_fit_total else None) if have_reader else None,
        "reader_accuracy_on_truth": float(np.mean(truth_read_ok)) if truth_read_ok else None,
        "mean_rms_to_truth": float(torch.cat(dists).mean()) if dists else None,
        "per_image": per_image,
        "seed": int(seed),
        "seconds": time.perf_counter() - t0,
        "png": png,
    }


def _picture(
    truth: Tensor,
    x_lr: Tensor,
    x_hr: Tensor,
    err: Tensor,
    fit: Tensor,
    factor: int,
    eps: float,
    per_image: list[dict[str, Any]],
    show: int,
    out_dir: Path,
) -> Path:
    """One row per shown image: low-res input (enlarged), truth, up to 6 answers (fitting ones first)."""
    from ..viz import captioned_grid, save_png, stack_rows, titled

    rows = []
    for i in range(min(show, len(truth))):
        order = torch.argsort(err[i])[:6]
        imgs = [F.interpolate(x_lr[i : i + 1].float(), scale_factor=factor, mode="nearest")[0], truth[i]]
        caps = [f"input {x_lr.shape[-2]}x{x_lr.shape[-1]}", "truth" + _cls(per_image[i].get("true_class"))]
        classes = per_image[i].get("answer_classes", [])
        fit_rank = {int(j): r for r, j in enumerate(torch.nonzero(fit[i]).flatten())}
        for j in order.tolist():
            imgs.append(x_hr[i, j].float())
            c = classes[fit_rank[j]] if j in fit_rank and fit_rank[j] < len(classes) else None
            caps.append(("fit" if fit[i, j] else "miss") + f" {float(err[i, j]):.3f}" + _cls(c))
        rows.append(captioned_grid(torch.stack(imgs), caps, ncol=len(imgs)))
    grid = stack_rows(rows)
    return save_png(
        titled(grid, f"latent search: {factor}x down, fit if RMS <= {eps:g} per low-res pixel"),
        out_dir / "hallucination.png",
    )


def _cls(c: int | None) -> str:
    return "" if c is None else f" [{c}]"
