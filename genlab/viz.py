"""Pictures people would rather look at than numbers: sample grids, reconstructions, latent
traversals and interpolations, and 2-D densities. Pillow and numpy only (no matplotlib needed)."""

from __future__ import annotations

import inspect
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from .data.spec import DataSpec


def image_grid(x: Tensor | np.ndarray, nrow: int | None = None, pad: int = 1, min_side: int = 32) -> np.ndarray:
    """Tile images [N, C, H, W] with values in [0, 1] into one uint8 array [H', W', 3].

    Images smaller than ``min_side`` pixels are enlarged by an integer factor (nearest neighbour)
    so an 8x8 digit is visible; ``nrow`` images per row (default: about square).
    """
    a = x.detach().float().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x, dtype=np.float32)
    if a.ndim != 4:
        raise ValueError(f"image_grid expects [N, C, H, W]; got shape {tuple(a.shape)}")
    n, c, h, w = a.shape
    if c == 1:
        a = np.repeat(a, 3, axis=1)
    elif c != 3:
        raise ValueError(f"image_grid shows 1 or 3 channels; got {c}")
    scale = max(1, math.ceil(min_side / max(h, w)))
    if scale > 1:
        a = a.repeat(scale, axis=2).repeat(scale, axis=3)
        h, w = h * scale, w * scale
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    ncol = math.ceil(n / nrow)
    grid = np.full((3, ncol * (h + pad) + pad, nrow * (w + pad) + pad), 0.5, dtype=np.float32)
    for i in range(n):
        r, col = divmod(i, nrow)
        grid[:, pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w] = a[i]
    return (np.clip(grid, 0, 1) * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0)


def save_png(arr: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a uint8 [H, W, 3] or [H, W] array as PNG (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def save_image_grid(x: Tensor | np.ndarray, path: str | os.PathLike, nrow: int | None = None) -> Path:
    """Save images [N, C, H, W] in [0, 1] as one PNG grid."""
    return save_png(image_grid(x, nrow), path)


def density_image(points: np.ndarray, bins: int = 200, bounds: tuple[float, float] | None = None) -> np.ndarray:
    """2-D histogram of points [N, 2] as a uint8 heat map [bins, bins] (log scale, y up)."""
    pts = np.asarray(points, dtype=np.float64)
    if bounds is None:
        lim = float(np.quantile(np.abs(pts), 0.995)) * 1.1 + 1e-6
        bounds = (-lim, lim)
    h, _, _ = np.histogram2d(pts[:, 0], pts[:, 1], bins=bins, range=[bounds, bounds])
    h = np.log1p(h.T[::-1])
    return (255 * h / max(h.max(), 1e-12)).astype(np.uint8)


def values_image(values: np.ndarray) -> np.ndarray:
    """A [H, W] array of non-negative values (e.g. a density on a grid) as a uint8 image."""
    v = np.asarray(values, dtype=np.float64)
    return (255 * v / max(float(v.max()), 1e-300)).astype(np.uint8)


def side_by_side(*images: np.ndarray, pad: int = 4) -> np.ndarray:
    """Concatenate uint8 images ([H, W] or [H, W, 3], same H) horizontally with a gray gap."""
    rgb = [np.repeat(im[..., None], 3, -1) if im.ndim == 2 else im for im in images]
    h = max(im.shape[0] for im in rgb)
    gap = np.full((h, pad, 3), 128, dtype=np.uint8)
    parts: list[np.ndarray] = []
    for im in rgb:
        if im.shape[0] < h:
            im = np.pad(im, ((0, h - im.shape[0]), (0, 0), (0, 0)), constant_values=128)
        parts += [im, gap]
    return np.concatenate(parts[:-1], axis=1)


def display_count(spec: DataSpec, n: int = 64) -> int:
    """How many samples make a good picture: ``n`` images for a grid, 5,000 points for a 2-D density."""
    return 5000 if spec.kind == "vector" and spec.shape == (2,) else n


def titled(img: np.ndarray, title: str) -> np.ndarray:
    """Put a one-line caption above a uint8 image ([H, W] or [H, W, 3])."""
    from PIL import ImageDraw

    rgb = np.repeat(img[..., None], 3, -1) if img.ndim == 2 else img
    canvas = Image.new("RGB", (rgb.shape[1], rgb.shape[0] + 14), (255, 255, 255))
    canvas.paste(Image.fromarray(rgb), (0, 14))
    ImageDraw.Draw(canvas).text((3, 1), title, fill=(0, 0, 0))
    return np.asarray(canvas)


def save_samples(samples: Tensor, spec: DataSpec, path: str | os.PathLike, reference: Tensor | None = None, nrow: int | None = None) -> Path | None:
    """Save model samples in the form that suits the data: a PNG grid for images, a PNG density
    (next to ``reference`` data when given) for 2-D vectors, a ``.txt`` file (one sample per
    paragraph) for token ids, a ``.wav`` file for audio; other kinds are skipped (None)."""
    if samples.dtype == torch.long and spec.vocab:  # tokens, or an LM's captions
        from .models.transformer import tokens_to_text

        path = Path(path).with_suffix(".txt")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n\n".join(tokens_to_text(samples.cpu(), spec)) + "\n", encoding="utf-8")
        return path
    if spec.kind == "audio":
        from .data.audio import write_wav

        return write_wav(Path(path).with_suffix(".wav"), samples, int(spec.extra.get("sample_rate", 16000)))
    if spec.kind == "image":
        return save_image_grid(samples.view(-1, *spec.shape), path, nrow)
    if spec.kind == "vector" and spec.shape == (2,):
        s = samples.detach().cpu().numpy()
        if reference is None:
            return save_png(density_image(s), path)
        r = reference.detach().cpu().numpy()
        lim = float(np.quantile(np.abs(r), 0.995)) * 1.1 + 1e-6
        data_img = titled(density_image(r, bounds=(-lim, lim)), f"data ({len(r)} points)")
        model_img = titled(density_image(s, bounds=(-lim, lim)), f"samples ({len(s)} points)")
        return save_png(side_by_side(data_img, model_img), path)
    return None


@torch.no_grad()
def latent_traversal(model: Any, x: Tensor, path: str | os.PathLike, dims: list[int] | None = None, span: float = 3.0, steps: int = 9, cond: Tensor | None = None) -> Path:
    """PNG of a latent traversal: one row per latent dimension, moving that coordinate of
    ``encode(x)`` (x is one example [1, *shape]) from -span to +span while the others stay fixed;
    each cell is the decoder mean. Needs a model with ``encode`` and ``decode`` (e.g. the VAE)."""
    z0 = model.encode(x, cond)[0]  # (z,)
    dims = list(range(min(z0.shape[0], 10))) if dims is None else dims
    vals = torch.linspace(-span, span, steps, dtype=z0.dtype, device=z0.device)
    z = z0.repeat(len(dims) * steps, 1)
    for r, d in enumerate(dims):
        z[r * steps : (r + 1) * steps, d] = vals
    c = None if cond is None else cond.expand(z.shape[0], *cond.shape[1:])
    imgs = model.lik.mean(model.decode(z, c))
    return save_image_grid(imgs, path, nrow=steps)


@torch.no_grad()
def interpolation(model: Any, x_a: Tensor, x_b: Tensor, path: str | os.PathLike, steps: int = 10, cond: Tensor | None = None) -> Path:
    """PNG of decoder means along the straight line between ``encode(x_a)`` and ``encode(x_b)``
    (each [R, *shape]: one row per pair)."""
    za, zb = model.encode(x_a, cond), model.encode(x_b, cond)
    t = torch.linspace(0, 1, steps, dtype=za.dtype, device=za.device).view(1, steps, 1)
    z = (za[:, None] * (1 - t) + zb[:, None] * t).flatten(0, 1)
    c = None if cond is None else cond.repeat_interleave(steps, 0)
    imgs = model.lik.mean(model.decode(z, c))
    return save_image_grid(imgs, path, nrow=steps)


@torch.no_grad()
def density_grid(model: Any, bounds: tuple[float, float], bins: int = 128, labels: Tensor | None = None) -> np.ndarray:
    """p(x) of a 2-D model with exact ``log_prob`` on a bins x bins grid of cell centres over
    ``bounds``^2, as a [bins, bins] array laid out like :func:`density_image` (x right, y up).
    A conditional model shows the marginal sum_c p(c) p(x | c), p(c) from ``labels`` (else uniform)."""
    lo, hi = bounds
    centres = lo + (torch.arange(bins, dtype=torch.float64) + 0.5) * (hi - lo) / bins
    gy, gx = torch.meshgrid(centres.flip(0), centres, indexing="ij")  # row 0 = top (largest y)
    pts = torch.stack([gx.flatten(), gy.flatten()], 1).to(device=model.device, dtype=next(model.parameters()).dtype)
    if not model.conditional:
        return torch.cat([model.log_prob(b).exp() for b in pts.split(4096)]).view(bins, bins).cpu().double().numpy()
    k = model.spec.num_classes
    prior = torch.full((k,), 1.0 / k, dtype=torch.float64)
    if labels is not None and len(labels):
        prior = torch.bincount(labels.long().cpu(), minlength=k).double() / len(labels)
    dens = torch.zeros(bins * bins, dtype=torch.float64)
    for c in range(k):
        for i, b in enumerate(pts.split(4096)):
            lp = model.log_prob(b, torch.full((len(b),), c, dtype=torch.long, device=model.device))
            dens[i * 4096 : i * 4096 + len(b)] += prior[c] * lp.exp().double().cpu()
    return dens.view(bins, bins).numpy()


def save_learned_density(model: Any, data: Tensor, path: str | os.PathLike, bins: int = 128, labels: Tensor | None = None) -> Path:
    """PNG of the data histogram (log counts, left) next to the learned density p(x) on a grid
    (linear, right), both over the same square around the data (2-D models with exact log_prob)."""
    r = data.detach().cpu().numpy()
    lim = float(np.quantile(np.abs(r), 0.995)) * 1.1 + 1e-6
    dens = density_grid(model, (-lim, lim), bins, labels)
    return save_png(side_by_side(density_image(r, bins=bins, bounds=(-lim, lim)), values_image(dens)), path)


@torch.no_grad()
def run_figures(model: Any, data: Any, out: str | os.PathLike, seed: int = 0, n: int | None = None) -> list[Path]:
    """The end-of-training pictures of a run folder, as far as the model supports them:
    ``samples.png`` (and ``samples-mean.png``, decoder means, for models that have them), ``reconstructions.png`` (odd rows data, even rows reconstructions),
    ``traversal.png`` and ``interpolation.png`` (models with ``encode`` and ``decode``), and for
    2-D models with exact ``log_prob`` ``density.png`` (data histogram next to the learned density)."""
    out = Path(out)
    model.eval()
    written: list[Path] = []
    gen = torch.Generator(device=model.device).manual_seed(seed)
    n = display_count(model.spec) if n is None else n
    cond = None
    if model.conditional and model.spec.num_classes:
        cond = torch.arange(n, device=model.device) % model.spec.num_classes
    try:
        nrow = model.spec.num_classes if cond is not None else None  # one column per class
        p = save_samples(model.sample(n, cond, generator=gen), model.spec, out / "samples.png", reference=data.tensors["x"], nrow=nrow)
        if p is not None:
            written.append(p)
        if model.spec.kind == "image" and "mean" in inspect.signature(model.sample).parameters:
            gen.manual_seed(seed)  # the same latents as samples.png, shown as decoder means
            written.append(save_image_grid(model.sample(n, cond, generator=gen, mean=True), out / "samples-mean.png", nrow))
    except NotImplementedError:
        pass
    if model.likelihood == "exact" and model.spec.kind == "vector" and model.spec.shape == (2,):
        written.append(save_learned_density(model, data.tensors["x"], out / "density.png", labels=data.tensors.get("y")))
    if model.spec.kind != "image":
        return written
    batch = {k: v[:32].to(model.device) for k, v in data.tensors.items()}
    c = model.condition(batch)
    x = batch["x"]
    if hasattr(model, "reconstruct"):
        rec = model.reconstruct(x, c)
        rows = torch.stack([x.view(4, 8, *x.shape[1:]), rec.view(4, 8, *x.shape[1:])], 1).flatten(0, 2)
        written.append(save_image_grid(rows, out / "reconstructions.png", nrow=8))
    if hasattr(model, "decode") and hasattr(model, "lik"):
        written.append(latent_traversal(model, x[:1], out / "traversal.png", cond=None if c is None else c[:1]))
        written.append(interpolation(model, x[:4], x[4:8], out / "interpolation.png", cond=None if c is None else c[:4]))
    return written


#: Categorical colours (matplotlib's "tab10"), cycled for more classes or curves.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)


def legend(draw: ImageDraw.ImageDraw, x: int, y: int, names: Sequence[str], max_items: int = 20) -> None:
    """Coloured squares with names, one per line, from (x, y) down (colours from :data:`PALETTE`)."""
    for i, name in enumerate(names[:max_items]):
        col = PALETTE[i % len(PALETTE)]
        draw.rectangle([x, y + 14 * i + 2, x + 8, y + 14 * i + 10], fill=col)
        draw.text((x + 13, y + 14 * i), str(name), fill=(0, 0, 0))
    if len(names) > max_items:
        draw.text((x, y + 14 * max_items), f"... {len(names) - max_items} more", fill=(0, 0, 0))
