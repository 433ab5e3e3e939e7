"""Pictures people would rather look at than numbers: sample grids, reconstructions, latent
traversals and interpolations, and 2-D densities. Pillow and numpy only (no matplotlib needed)."""

from __future__ import annotations

import functools
import inspect
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
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


#: Point sizes of figure text: labels and legends, and titles.
FONT_SIZE = 12
TITLE_SIZE = 13


@functools.cache
def font(size: int = FONT_SIZE) -> Any:
    """The font of every text genlab draws: Pillow's scalable default TrueType font at ``size``
    points (Pillow >= 10.1, built with FreeType), which spaces words properly; on older Pillow the
    bitmap default font (fixed size, and it drops some spaces)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1 (no size argument) or no FreeType
        return ImageFont.load_default()


def text_size(text: str, size: int = FONT_SIZE) -> tuple[int, int]:
    """(width, height) in pixels of one line of ``text`` in :func:`font` (height: a full line,
    ascenders to descenders, whatever the text)."""
    f = font(size)
    if hasattr(f, "getmetrics"):  # TrueType
        ascent, descent = f.getmetrics()
        height = ascent + descent
    elif hasattr(f, "getbbox"):  # bitmap font, Pillow >= 9.2
        height = f.getbbox("Ag|")[3]
    else:  # older bitmap font
        height = f.getsize("Ag|")[1]
    if hasattr(f, "getlength"):
        width = f.getlength(text)
    elif hasattr(f, "getbbox"):
        width = f.getbbox(text)[2]
    else:
        width = f.getsize(text)[0]
    return int(math.ceil(width)), int(height)


def draw_text(
    draw: ImageDraw.ImageDraw,
    xy: tuple[float, float],
    text: str,
    fill: tuple[int, int, int] = (0, 0, 0),
    size: int = FONT_SIZE,
) -> None:
    """Write one line of ``text`` with its top left at ``xy`` in :func:`font` (all figure text
    goes through here)."""
    draw.text(xy, text, fill=fill, font=font(size))


def titled(img: np.ndarray, title: str, size: int = TITLE_SIZE) -> np.ndarray:
    """Put a one-line caption above a uint8 image ([H, W] or [H, W, 3]); an image narrower than
    the caption is centred on a white canvas as wide as the caption."""
    rgb = np.repeat(img[..., None], 3, -1) if img.ndim == 2 else img
    tw, th = text_size(title, size)
    bar = th + 4
    width = max(rgb.shape[1], tw + 6)
    canvas = Image.new("RGB", (width, rgb.shape[0] + bar), (255, 255, 255))
    canvas.paste(Image.fromarray(rgb), ((width - rgb.shape[1]) // 2, bar))
    draw_text(ImageDraw.Draw(canvas), (3, 2), title, size=size)
    return np.asarray(canvas)


def enlarge(img: np.ndarray, min_side: int) -> np.ndarray:
    """Repeat the pixels of a uint8 image ([H, W] or [H, W, 3]) by the smallest integer factor
    that makes its longer side at least ``min_side`` (nearest neighbour; unchanged if already)."""
    f = max(1, math.ceil(min_side / max(img.shape[0], img.shape[1])))
    return img if f == 1 else img.repeat(f, axis=0).repeat(f, axis=1)


def sample_delimiter(i: int) -> str:
    """The line before text sample ``i`` (from 1) in a samples ``.txt`` file."""
    return f"----- sample {i} -----"


def save_samples(
    samples: Tensor, spec: DataSpec, path: str | os.PathLike, reference: Tensor | None = None, nrow: int | None = None
) -> Path | None:
    """Save model samples in the form that suits the data: a PNG grid for images, a PNG density
    (next to ``reference`` data when given) for 2-D vectors, a ``.txt`` file for token ids (each
    sample after a line ``----- sample i -----``, since texts hold blank lines themselves), a
    ``.wav`` file for audio; other kinds are skipped (None)."""
    if samples.dtype == torch.long and spec.vocab:  # tokens, or an LM's captions
        from .models.transformer import tokens_to_text

        path = Path(path).with_suffix(".txt")
        path.parent.mkdir(parents=True, exist_ok=True)
        texts = tokens_to_text(samples.cpu(), spec)
        path.write_text("\n".join(f"{sample_delimiter(i)}\n{t}\n" for i, t in enumerate(texts, 1)), encoding="utf-8")
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
def latent_traversal(
    model: Any,
    x: Tensor,
    path: str | os.PathLike,
    dims: list[int] | None = None,
    span: float = 3.0,
    steps: int = 9,
    cond: Tensor | None = None,
) -> Path:
    """PNG of a latent traversal: one row per latent dimension, moving that coordinate of
    ``encode(x)`` (x is one example [1, *shape]) from -span to +span while the others stay fixed;
    each cell is the decoder mean; the title says which dimensions the rows are. Needs a model
    with ``encode`` and ``decode`` (e.g. the VAE)."""
    z0 = model.encode(x[:1], None if cond is None else cond[:1])[0]  # (z,)
    dims = list(range(min(z0.shape[0], 10))) if dims is None else list(dims)
    vals = torch.linspace(-span, span, steps, dtype=z0.dtype, device=z0.device)
    z = z0.repeat(len(dims) * steps, 1)
    for r, d in enumerate(dims):
        z[r * steps : (r + 1) * steps, d] = vals
    c = None if cond is None else cond[:1].expand(z.shape[0], *cond.shape[1:])
    imgs = model.lik.mean(model.decode(z, c))
    if dims == list(range(len(dims))):
        rows = f"latent dims 0-{len(dims) - 1}" if len(dims) > 1 else "latent dim 0"
    else:
        rows = "latent dims " + ", ".join(map(str, dims))
    title = f"rows top to bottom: {rows}, each from {-span:g} to {span:g} (others fixed)"
    return save_png(titled(image_grid(imgs, nrow=steps), title), path)


@torch.no_grad()
def interpolation(
    model: Any, x_a: Tensor, x_b: Tensor, path: str | os.PathLike, steps: int = 10, cond: Tensor | None = None
) -> Path:
    """PNG of decoder means along the straight line between ``encode(x_a)`` and ``encode(x_b)``
    (each [R, *shape]: one row per pair, ``cond`` [R] the condition of each row)."""
    za, zb = model.encode(x_a, cond), model.encode(x_b, cond)
    t = torch.linspace(0, 1, steps, dtype=za.dtype, device=za.device).view(1, steps, 1)
    z = (za[:, None] * (1 - t) + zb[:, None] * t).flatten(0, 1)
    c = None if cond is None else cond.repeat_interleave(steps, 0)
    imgs = model.lik.mean(model.decode(z, c))
    title = f"each row: z of example a (left) to z of example b (right), {steps} steps"
    return save_png(titled(image_grid(imgs, nrow=steps), title), path)


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


def save_learned_density(
    model: Any,
    data: Tensor,
    path: str | os.PathLike,
    bins: int = 128,
    labels: Tensor | None = None,
    min_side: int = 256,
) -> Path:
    """PNG of the data histogram (log counts, left, titled "data") next to the learned density
    p(x) on a grid (linear, right, titled "model density"), both over the same square around the
    data (2-D models with exact log_prob); each panel is ``bins`` cells enlarged to at least
    ``min_side`` pixels."""
    r = data.detach().cpu().numpy()
    lim = float(np.quantile(np.abs(r), 0.995)) * 1.1 + 1e-6
    dens = density_grid(model, (-lim, lim), bins, labels)
    data_img = titled(
        enlarge(density_image(r, bins=bins, bounds=(-lim, lim)), min_side), f"data ({len(r)} points, log counts)"
    )
    model_img = titled(enlarge(values_image(dens), min_side), "model density p(x)")
    return save_png(side_by_side(data_img, model_img), path)


@torch.no_grad()
def run_figures(model: Any, data: Any, out: str | os.PathLike, seed: int = 0, n: int | None = None) -> list[Path]:
    """The end-of-training pictures of a run folder, as far as the model supports them:
    ``samples.png`` (and ``samples-mean.png``, decoder means, for models that have them),
    ``reconstructions.png`` (up to 32 examples of ``data``; odd rows data, even rows
    reconstructions), ``traversal.png`` (the first example) and ``interpolation.png`` (up to 4
    pairs; needs 2 examples) for models with ``encode`` and ``decode``, and for 2-D models with
    exact ``log_prob`` ``density.png`` (data histogram next to the learned density). Any number of
    examples in ``data`` works; returns the paths of the figures written."""
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
        p = save_samples(
            model.sample(n, cond, generator=gen),
            model.spec,
            out / "samples.png",
            reference=data.tensors["x"],
            nrow=nrow,
        )
        if p is not None:
            written.append(p)
        if model.spec.kind == "image" and "mean" in inspect.signature(model.sample).parameters:
            gen.manual_seed(seed)  # the same latents as samples.png, shown as decoder means
            written.append(
                save_image_grid(model.sample(n, cond, generator=gen, mean=True), out / "samples-mean.png", nrow)
            )
    except NotImplementedError:
        pass
    if model.likelihood == "exact" and model.spec.kind == "vector" and model.spec.shape == (2,):
        written.append(
            save_learned_density(model, data.tensors["x"], out / "density.png", labels=data.tensors.get("y"))
        )
    if model.spec.kind != "image":
        return written
    n_val = len(data)
    if n_val == 0:
        return written
    batch = {k: v[:32].to(model.device) for k, v in data.tensors.items()}  # up to 32 examples
    c = model.condition(batch)
    x = batch["x"]
    if hasattr(model, "reconstruct"):
        written.append(save_reconstructions(x, model.reconstruct(x, c), out / "reconstructions.png"))
    if hasattr(model, "decode") and hasattr(model, "lik"):
        written.append(latent_traversal(model, x[:1], out / "traversal.png", cond=None if c is None else c[:1]))
        k = min(4, len(x) // 2)  # pairs (x[i], x[k + i]); none with a single example
        if k:
            written.append(
                interpolation(model, x[:k], x[k : 2 * k], out / "interpolation.png", cond=None if c is None else c[:k])
            )
    return written


def save_reconstructions(x: Tensor, rec: Tensor, path: str | os.PathLike, ncol: int = 8) -> Path:
    """PNG of examples x [N, C, H, W] over their reconstructions ``rec`` (same shape): rows of up
    to ``ncol`` examples, each row of data followed by the row of their reconstructions (a short
    last row is filled with blank cells); the title says which rows are which."""
    n = len(x)
    ncol = max(1, min(ncol, n))
    nrows = math.ceil(n / ncol)
    blank = nrows * ncol - n
    pair = torch.stack([x.detach().float().cpu(), rec.detach().float().cpu()], 0)  # (2, N, C, H, W)
    if blank:
        pair = torch.cat([pair, torch.full((2, blank, *x.shape[1:]), 0.5)], 1)
    rows = pair.view(2, nrows, ncol, *x.shape[1:]).transpose(0, 1).flatten(0, 2)
    title = "top row: data, bottom row: reconstructions" if nrows == 1 else "odd rows: data, even rows: reconstructions"
    return save_png(titled(image_grid(rows, nrow=ncol), title), path)


#: Categorical colours (matplotlib's "tab10"), cycled for more classes or curves.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)


def legend(draw: ImageDraw.ImageDraw, x: int, y: int, names: Sequence[str], max_items: int = 20) -> None:
    """Coloured squares with names, one per line, from (x, y) down (colours from :data:`PALETTE`)."""
    _, th = text_size("Ag")
    step = th + 2
    for i, name in enumerate(names[:max_items]):
        col = PALETTE[i % len(PALETTE)]
        top = y + step * i + (th - 8) // 2
        draw.rectangle([x, top, x + 8, top + 8], fill=col)
        draw_text(draw, (x + 13, y + step * i), str(name))
    if len(names) > max_items:
        draw_text(draw, (x, y + step * max_items), f"... {len(names) - max_items} more")
