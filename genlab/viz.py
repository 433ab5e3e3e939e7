"""Pictures people would rather look at than numbers: image grids (sample grids, reconstructions,
latent traversals and interpolations: pixel arrays written with Pillow) and plots (2-D densities,
curves, scatters, heat maps: matplotlib figures on an Agg canvas, never pyplot or global state)."""

from __future__ import annotations

import io
import math
import os
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
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
    for i in range(nrow * ncol):
        r, col = divmod(i, nrow)
        # the cells after the last image are white, not a grey tile that reads as a sample
        cell = a[i] if i < n else 1.0
        grid[:, pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w] = cell
    return (np.clip(grid, 0, 1) * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0)


def save_png(arr: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a uint8 [H, W, 3] or [H, W] array as PNG (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def column_labels(grid: np.ndarray, labels: Sequence[str], nrow: int, size: float = 8.0) -> np.ndarray:
    """Put ``labels[j]`` above column j of a uint8 grid [H, W, 3] of ``nrow`` equal columns (as
    :func:`image_grid` makes them): each label rendered by :func:`text_image`, centred on its
    column and cut to the column's width."""
    width = grid.shape[1]
    col_w = (width - 1) / nrow
    caps = [text_image(str(t), size) for t in labels[:nrow]]
    band = np.full((max(c.shape[0] for c in caps), width, 3), 255, dtype=np.uint8)
    for j, cap in enumerate(caps):
        w = min(cap.shape[1], int(col_w))
        left = int(round(1 + j * col_w + (col_w - w) / 2))
        band[: cap.shape[0], left : left + w] = cap[:, :w]
    return np.concatenate([band, grid], 0)


def save_image_grid(
    x: Tensor | np.ndarray,
    path: str | os.PathLike,
    nrow: int | None = None,
    title: str | None = None,
    labels: Sequence[str] | None = None,
) -> Path:
    """Save images [N, C, H, W] in [0, 1] as one PNG grid, with a one-line ``title`` above it and,
    for a grid of ``nrow`` columns (e.g. one per class), ``labels`` over the columns."""
    grid = image_grid(x, nrow)
    if labels and nrow:
        grid = column_labels(grid, labels, nrow)
    return save_png(titled(grid, title) if title else grid, path)


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


# --- plots: matplotlib figures on their own Agg canvas -------------------------------------------
# Every plot is a matplotlib.figure.Figure attached to a FigureCanvasAgg: no pyplot, no backend
# switch, no rcParams change, so nothing leaks into (or waits on) a user's interactive session.
# matplotlib is imported on first use, so `import genlab` stays quick.

#: Pixels per inch of every figure (a 6.4 x 4.8 inch figure is 640 x 480 pixels).
DPI = 100
#: Point size of figure and caption titles (axis labels, ticks and legends use matplotlib's defaults).
TITLE_SIZE = 11


def new_figure(width: float, height: float) -> Any:
    """An empty matplotlib ``Figure`` of ``width`` x ``height`` inches, white, on its own Agg
    canvas. No layout engine: :func:`save_figure` crops or widens the picture to what it shows
    (one layout pass instead of two, and labels or legends outside the axes are never cut off)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, facecolor="white")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Any, path: str | os.PathLike) -> Path:
    """Write a matplotlib figure as PNG at :data:`DPI` (parent folders are created), cropped or
    widened to what it shows plus a small white margin, so no title, label or legend is cut off."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI, facecolor="white", bbox_inches="tight", pad_inches=0.08)
    return path


def _plain(text: Any) -> str:
    # Names and titles are shown as written: matplotlib would read text between two '$' as math.
    return str(text).replace("$", r"\$")


def _title(text: str, width_in: float) -> str:
    # Wrap a long title to the figure's width (DejaVu Sans averages about 0.6 em per character).
    return textwrap.fill(_plain(text), max(20, int(width_in * 72 / (0.6 * TITLE_SIZE))))


def colours(n: int) -> list[tuple[float, float, float, float]]:
    """``n`` categorical RGBA colours: matplotlib's "tab10" up to 10, "tab20" up to 20, else
    evenly spaced along "turbo"."""
    from matplotlib import colormaps

    if n > 20:
        return [colormaps["turbo"](t) for t in np.linspace(0.05, 0.95, n)]
    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i) for i in range(n)]


def _legend(ax: Any, handles: Sequence[Any] | None = None) -> None:
    # Outside the axes on the right, so it never hides data; a second column past 25 entries.
    n = len(handles) if handles is not None else len(ax.get_legend_handles_labels()[0])
    if n:
        kw = {"handles": handles} if handles is not None else {}
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, ncol=math.ceil(n / 25), **kw)


def plot_curves(
    series: Mapping[str, Sequence[tuple[float, float]]],
    path: str | os.PathLike,
    title: str,
    xlabel: str = "step",
    ylabel: str = "value",
) -> Path:
    """PNG line plot of ``{name: [(x, y), ...]}``: one line with dots per name (points sorted by
    x; colours from :func:`colours` in order), axes with ticks and labels, a light grid, the legend
    to the right and ``title`` above. Returns the path."""
    fig = new_figure(6.0, 4.2)
    ax = fig.add_subplot()
    for (name, pts), col in zip(series.items(), colours(len(series))):
        xy = np.asarray(sorted(pts), dtype=np.float64).reshape(-1, 2)
        ax.plot(xy[:, 0], xy[:, 1], marker="o", markersize=3, linewidth=1.5, color=col, label=_plain(name))
    ax.set_xlabel(_plain(xlabel))
    ax.set_ylabel(_plain(ylabel))
    ax.grid(alpha=0.3)
    ax.set_title(_title(title, 4.8), fontsize=TITLE_SIZE)
    _legend(ax)
    return save_figure(fig, path)


def robust_limits(v: np.ndarray) -> tuple[float, float]:
    """Axis limits around values ``v`` [N] from their 0.2% and 99.8% quantiles plus 5%, so a few
    outliers do not squeeze the picture into a corner ((-1, 1) around a constant; (0, 1) if empty)."""
    v = np.asarray(v, dtype=np.float64)
    v = v[np.isfinite(v)]
    lo, hi = (float(q) for q in np.quantile(v, [0.002, 0.998])) if len(v) else (0.0, 1.0)
    pad = 0.05 * (hi - lo) if hi > lo else 1.0
    return lo - pad, hi + pad


def plot_scatter(
    points: np.ndarray,
    labels: np.ndarray | None,
    class_names: Sequence[str] | None,
    path: str | os.PathLike,
    title: str,
    xlabel: str = "",
    ylabel: str = "",
) -> Path:
    """PNG scatter of ``points`` [N, 2], one small dot each, coloured by integer ``labels`` [N]
    (class ``i`` named ``class_names[i]``, else ``i``; a legend of every class present or named)
    or all alike when ``labels`` is None; axes with ticks, labels and :func:`robust_limits`; drawn
    in a fixed random order so that no class is systematically on top. Returns the path."""
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"plot_scatter expects points [N, 2]; got shape {tuple(pts.shape)}")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (len(pts),) or not np.issubdtype(labels.dtype, np.integer) or (labels < 0).any():
            raise ValueError(
                f"plot_scatter expects non-negative integer labels [{len(pts)}]; "
                f"got {labels.dtype} of shape {tuple(labels.shape)}"
            )
    from matplotlib.lines import Line2D

    k = max(len(class_names or ()), int(labels.max()) + 1 if labels is not None and len(labels) else 0)
    names = display_names(class_names, k)
    cols = np.asarray(colours(max(k, 1)))
    fig = new_figure(6.4, 5.2)
    ax = fig.add_subplot()
    order = np.random.default_rng(0).permutation(len(pts))
    c = cols[labels[order]] if labels is not None else cols[np.zeros(len(pts), dtype=np.int64)]
    ax.scatter(pts[order, 0], pts[order, 1], c=c, s=10 if len(pts) <= 2000 else 3, linewidths=0, alpha=0.8)
    ax.set_xlim(*robust_limits(pts[:, 0]))
    ax.set_ylim(*robust_limits(pts[:, 1]))
    ax.set_xlabel(_plain(xlabel))
    ax.set_ylabel(_plain(ylabel))
    ax.set_title(_title(title, 4.8), fontsize=TITLE_SIZE)
    if labels is not None and k:
        handles = [
            Line2D([], [], marker="o", linestyle="", color=cols[i], markersize=6, label=_plain(names[i]))
            for i in range(k)
        ]
        _legend(ax, handles)
    return save_figure(fig, path)


def plot_heatmap(
    matrix: np.ndarray,
    row_names: Sequence[str],
    col_names: Sequence[str],
    path: str | os.PathLike,
    title: str,
    xlabel: str = "",
    ylabel: str = "",
    colorbar_label: str = "",
    annotate: bool | None = None,
) -> Path:
    """PNG heat map of ``matrix`` [R, C] (e.g. mutual information, factors x latents): row ``i``
    named ``row_names[i]`` (top to bottom), column ``j`` ``col_names[j]``, a colour bar, each cell
    printed (3 significant digits) when ``annotate`` (default: up to 20 x 20 cells); NaN cells are
    light gray. The figure grows with the matrix. Returns the path."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape != (len(row_names), len(col_names)):
        raise ValueError(
            f"plot_heatmap: matrix of shape {tuple(m.shape)} does not match "
            f"{len(row_names)} row names x {len(col_names)} column names"
        )
    from matplotlib import colormaps

    r, c = m.shape
    annotate = r <= 20 and c <= 20 if annotate is None else annotate
    rotate = max((len(str(n)) for n in col_names), default=0) > 4  # long column names: slanted
    cell = 0.5 if annotate else 0.3  # inches; the axes take about 60% of the width, 77% of the height
    width, height = min(16.0, max(4.0, cell * c / 0.6)), min(16.0, max(2.5, cell * r / 0.77))
    fig = new_figure(width, height)
    ax = fig.add_subplot()
    cmap = colormaps["viridis"].with_extremes(bad="lightgray")
    finite = m[np.isfinite(m)]
    lo, hi = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    im = ax.imshow(np.ma.masked_invalid(m), cmap=cmap, vmin=lo, vmax=hi if hi > lo else lo + 1, aspect="auto")
    ax.set_xticks(range(c))
    ax.set_yticks(range(r))
    ax.set_xticklabels(
        [_plain(n) for n in col_names],
        rotation=45 if rotate else 0,
        ha="right" if rotate else "center",
        rotation_mode="anchor",
    )
    ax.set_yticklabels([_plain(n) for n in row_names])
    ax.tick_params(length=0)
    ax.set_xlabel(_plain(xlabel))
    ax.set_ylabel(_plain(ylabel))
    ax.set_title(_title(title, 0.6 * width), fontsize=TITLE_SIZE)
    bar = fig.colorbar(im, ax=ax, pad=0.02)
    bar.set_label(_plain(colorbar_label))
    if annotate:
        for (i, j), v in np.ndenumerate(m):
            if np.isfinite(v):  # light text on the dark half of viridis, dark text on the light half
                dark = (v - lo) / (hi - lo) < 0.6 if hi > lo else True
                ax.text(j, i, f"{v:.3g}", ha="center", va="center", fontsize=8, color="white" if dark else "black")
    return save_figure(fig, path)


def data_bounds(points: np.ndarray) -> tuple[float, float]:
    """A square around 2-D points [N, 2] as (lo, hi) for both axes: +-1.1 times the 99.5% quantile
    of the absolute coordinates, so that a few outliers do not shrink the picture."""
    lim = float(np.quantile(np.abs(np.asarray(points, dtype=np.float64)), 0.995)) * 1.1 + 1e-6
    return -lim, lim


def histogram_2d(points: np.ndarray, bins: int, bounds: tuple[float, float]) -> np.ndarray:
    """Counts of points [N, 2] in ``bins`` x ``bins`` cells over ``bounds``^2, as a [bins, bins]
    array laid out like an image (x to the right, row 0 at the top = largest y)."""
    pts = np.asarray(points, dtype=np.float64)
    h, _, _ = np.histogram2d(pts[:, 0], pts[:, 1], bins=bins, range=[bounds, bounds])
    return h.T[::-1]


def plot_density_panels(
    panels: Sequence[tuple[str, np.ndarray]], bounds: tuple[float, float], path: str | os.PathLike
) -> Path:
    """PNG of 2-D densities side by side: one square panel per ``(title, values)``, ``values``
    [bins, bins] laid out like :func:`histogram_2d` over ``bounds``^2 (x1 right, x2 up), each on
    its own linear colour scale (pass log counts for a histogram), with ticked axes. Returns the path."""
    lo, hi = bounds
    fig = new_figure(4.6 * len(panels), 4.6)
    for i, (name, values) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.imshow(values, extent=(lo, hi, lo, hi), origin="upper", cmap="viridis", interpolation="nearest")
        ax.set_title(_title(name, 3.6), fontsize=TITLE_SIZE)
        ax.set_xlabel("x1")
        if i == 0:
            ax.set_ylabel("x2")
    return save_figure(fig, path)


def text_image(text: str, size: float = 10.0) -> np.ndarray:
    """One line of black ``text`` on white as a uint8 [H, W, 3] array, rendered by matplotlib
    (its bundled DejaVu Sans at ``size`` points and :data:`DPI`, whatever Pillow was built with)
    and cropped to the text plus a 3-pixel margin."""
    fig = new_figure(1.0, 1.0)
    fig.text(0, 0, text, fontsize=size, parse_math=False)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.03, facecolor="white")
    return np.asarray(Image.open(buf).convert("RGB"))


def titled(img: np.ndarray, title: str, size: float = 10.0) -> np.ndarray:
    """Put a one-line caption (:func:`text_image`) above a uint8 image ([H, W] or [H, W, 3]); an
    image narrower than the caption is centred on a white canvas as wide as the caption."""
    rgb = np.repeat(img[..., None], 3, -1) if img.ndim == 2 else img
    if not title:
        return rgb
    cap = text_image(title, size)
    width = max(rgb.shape[1], cap.shape[1])
    canvas = np.full((cap.shape[0] + rgb.shape[0], width, 3), 255, dtype=np.uint8)
    canvas[: cap.shape[0], : cap.shape[1]] = cap
    left = (width - rgb.shape[1]) // 2
    canvas[cap.shape[0] :, left : left + rgb.shape[1]] = rgb
    return canvas


def sample_delimiter(i: int) -> str:
    """The line before text sample ``i`` (from 1) in a samples ``.txt`` file."""
    return f"----- sample {i} -----"


def class_labels(spec: DataSpec) -> list[str]:
    """The display names of ``spec``'s classes: its ``class_names``, else the class ids."""
    return display_names(spec.class_names, spec.num_classes)


def display_names(class_names: Sequence[str] | None, k: int) -> list[str]:
    """Names of classes 0..k-1: ``class_names[i]`` where given, else the id ``str(i)``."""
    return [class_names[i] if class_names and i < len(class_names) else str(i) for i in range(k)]


def save_samples(
    samples: Tensor,
    spec: DataSpec,
    path: str | os.PathLike,
    reference: Tensor | None = None,
    nrow: int | None = None,
    title: str | None = None,
    labels: Sequence[str] | None = None,
) -> Path | None:
    """Save model samples in the form that suits the data: a PNG grid for images (with ``title``
    above it and ``labels`` over its ``nrow`` columns, e.g. the classes), a PNG histogram
    (right of the ``reference`` data's when given; :func:`plot_density_panels`) for 2-D vectors,
    a ``.txt`` file for token ids (each sample after a line ``----- sample i -----``, since texts
    hold blank lines themselves), a ``.wav`` file for audio; other kinds are skipped (None)."""
    if samples.dtype == torch.long and spec.vocab:  # tokens, or an LM's captions
        from .data.text import tokens_to_text

        path = Path(path).with_suffix(".txt")
        path.parent.mkdir(parents=True, exist_ok=True)
        texts = tokens_to_text(samples.cpu(), spec)
        path.write_text("\n".join(f"{sample_delimiter(i)}\n{t}\n" for i, t in enumerate(texts, 1)), encoding="utf-8")
        return path
    if spec.kind == "audio":
        from .data.audio import write_wav

        return write_wav(Path(path).with_suffix(".wav"), samples, int(spec.extra.get("sample_rate", 16000)))
    if spec.kind == "image":
        return save_image_grid(samples.view(-1, *spec.shape), path, nrow, title=title, labels=labels)
    if spec.kind == "vector" and spec.shape == (2,):
        s = samples.detach().cpu().numpy()
        r = None if reference is None else reference.detach().cpu().numpy()
        bounds = data_bounds(s if r is None else r)
        panels = [] if r is None else [(f"data ({len(r)} points, log counts)", np.log1p(histogram_2d(r, 100, bounds)))]
        panels.append((f"samples ({len(s)} points, log counts)", np.log1p(histogram_2d(s, 100, bounds))))
        return plot_density_panels(panels, bounds, path)
    return None


@torch.no_grad()
def latent_kl(model: Any, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, bool]:
    """How much each latent is used on the examples ``x`` [B, *shape]: ([z_dim] scores, is_kl).

    With a Gaussian posterior (a model with ``posterior(x, cond) -> (mu, logvar)``, the VAE family)
    the score is the KL of each coordinate's posterior to the N(0, 1) prior averaged over the batch,
    0.5 * (mu^2 + exp(logvar) - 1 - logvar) in nats (``is_kl`` True). A model that exposes only
    ``encode`` means gets the variance of the means across the batch instead (``is_kl`` False): a
    latent the encoder ignores has near-constant means, as it has near-zero KL."""
    post = getattr(model, "posterior", None)
    if callable(post):
        try:
            mu, logvar = post(x, cond)
        except (TypeError, ValueError):  # a posterior of another form: fall back to the means
            mu = logvar = None
        if isinstance(mu, Tensor) and isinstance(logvar, Tensor) and mu.shape == logvar.shape and mu.ndim == 2:
            return (0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar)).float().mean(0), True
    z = model.encode(x, cond).float()
    return z.var(0, unbiased=False) if len(z) > 1 else torch.zeros(z.shape[1], device=z.device), False


def latent_order(model: Any, x: Tensor, cond: Tensor | None = None) -> list[int]:
    """Latent dims most informative first: sorted by :func:`latent_kl` on ``x`` [B, *shape],
    descending (ties keep the lower dim first)."""
    score, _ = latent_kl(model, x, cond)
    return [int(d) for d in torch.argsort(-score.cpu(), stable=True)]


def latent_factors(
    codes: Tensor | np.ndarray, factors: Tensor | np.ndarray, names: Sequence[str], bins: int = 10
) -> list[tuple[str, float] | None]:
    """For each latent of ``codes`` [N, D]: the ground-truth factor (of ``factors`` [N, K], named
    ``names``) it shares the most normalized mutual information with, and that MI in [0, 1]; None
    where every factor is constant. Few bins (10), since a figure's batch is small."""
    from .metrics.disentanglement import mutual_information_matrix

    mi = mutual_information_matrix(codes, factors, bins=bins, normalize=True)  # [K, D]
    out: list[tuple[str, float] | None] = []
    for j in range(mi.shape[1]):
        col = mi[:, j]
        if np.isnan(col).all():
            out.append(None)
        else:
            k = int(np.nanargmax(col))
            out.append((str(names[k]), float(col[k])))
    return out


@torch.no_grad()
def latent_traversal(
    model: Any,
    x: Tensor,
    path: str | os.PathLike,
    dims: list[int] | None = None,
    span: float = 3.0,
    steps: int = 9,
    cond: Tensor | None = None,
    *,
    rank_x: Tensor | None = None,
    rank_cond: Tensor | None = None,
    factors: Tensor | None = None,
    factor_names: Sequence[str] | None = None,
    max_rows: int = 10,
) -> Path:
    """PNG of a latent traversal: one row per latent dimension, moving that coordinate of
    ``encode(x)`` (x is one example [1, *shape]) from -span to +span while the others stay fixed;
    each cell is the decoder mean. Needs a model with ``encode`` and ``decode`` (e.g. the VAE).

    Without ``rank_x`` (and with ``dims`` None) the rows are dims 0..max_rows-1 under one title.
    With a batch ``rank_x`` [B, *shape] (condition ``rank_cond``), the rows are the ``max_rows``
    most informative latents by :func:`latent_kl` on it, most informative first (``dims`` given:
    those dims in that order), each row titled with its dim and KL (or the variance of its means
    for a model without a Gaussian posterior); with ``factors`` [B, K] and their ``factor_names``,
    also the factor that latent tracks best and its normalized MI (:func:`latent_factors`)."""
    z0 = model.encode(x[:1], None if cond is None else cond[:1])[0]  # (z,)
    score: Tensor | None = None
    is_kl = False
    if rank_x is not None and len(rank_x):
        score, is_kl = latent_kl(model, rank_x, rank_cond)
        order = [int(d) for d in torch.argsort(-score.cpu(), stable=True)]
        dims = order[:max_rows] if dims is None else sorted(dims, key=order.index)
    dims = list(range(min(z0.shape[0], max_rows))) if dims is None else list(dims)
    vals = torch.linspace(-span, span, steps, dtype=z0.dtype, device=z0.device)
    z = z0.repeat(len(dims) * steps, 1)
    for r, d in enumerate(dims):
        z[r * steps : (r + 1) * steps, d] = vals
    c = None if cond is None else cond[:1].expand(z.shape[0], *cond.shape[1:])
    imgs = model.decode(z, c, mean=True)
    sweep = f"each from {-span:g} to {span:g} (others fixed)"
    if score is None:
        if dims == list(range(len(dims))):
            rows = f"latent dims 0-{len(dims) - 1}" if len(dims) > 1 else "latent dim 0"
        else:
            rows = "latent dims " + ", ".join(map(str, dims))
        return save_png(titled(image_grid(imgs, nrow=steps), f"rows top to bottom: {rows}, {sweep}"), path)
    tracks: list[tuple[str, float] | None] = [None] * int(score.shape[0])
    if factors is not None and factor_names and rank_x is not None and len(factors) == len(rank_x) > 1:
        tracks = latent_factors(model.encode(rank_x, rank_cond).float().cpu(), factors.cpu(), factor_names)
    blocks = []
    for r, d in enumerate(dims):
        what = f"KL {float(score[d]):.2f} nats" if is_kl else f"var of mean {float(score[d]):.3g}"
        best = tracks[d]
        label = f"z{d}: {what}" + ("" if best is None else f"; tracks {best[0]} (normalized MI {best[1]:.2f})")
        # caption over the row, both left-aligned, so the columns of all rows line up
        blocks.append(
            stack_rows([text_image(label, 8.0), image_grid(imgs[r * steps : (r + 1) * steps], nrow=steps)], 0)
        )
    how = "KL to the prior" if is_kl else "variance of the posterior means"
    title = f"latents by {how}, largest first; {sweep}"
    return save_png(titled(stack_rows(blocks, 4), title), path)


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
    imgs = model.decode(z, c, mean=True)
    title = f"each row: z of example a (left) to z of example b (right), {steps} steps"
    return save_png(titled(image_grid(imgs, nrow=steps), title), path)


@torch.no_grad()
def density_grid(model: Any, bounds: tuple[float, float], bins: int = 128, labels: Tensor | None = None) -> np.ndarray:
    """p(x) of a 2-D model with exact ``log_prob`` on a bins x bins grid of cell centres over
    ``bounds``^2, as a [bins, bins] array laid out like :func:`histogram_2d` (x right, y up).
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
    model: Any, data: Tensor, path: str | os.PathLike, bins: int = 128, labels: Tensor | None = None
) -> Path:
    """PNG of two panels over the same square around the data (:func:`data_bounds`): the data
    histogram (log counts, left, titled "data") and the learned density p(x) of a 2-D model with
    exact log_prob on a ``bins`` x ``bins`` grid (:func:`density_grid`; linear, right, titled
    "model density p(x)"); see :func:`plot_density_panels`."""
    r = data.detach().cpu().numpy()
    bounds = data_bounds(r)
    dens = density_grid(model, bounds, bins, labels)
    hist = np.log1p(histogram_2d(r, bins, bounds))
    return plot_density_panels(
        [(f"data ({len(r)} points, log counts)", hist), ("model density p(x)", dens)], bounds, path
    )


# --- multimodal pictures: images with their captions, translation grids, WAV files beside ------------

#: Side in pixels that images are enlarged to (by a whole factor) in captioned pictures: 32x32 -> 128x128.
CELL = 128


def stack_rows(rows: Sequence[np.ndarray], pad: int = 8) -> np.ndarray:
    """Stack uint8 images [H, W, 3] top to bottom, left-aligned on white, ``pad`` pixels apart."""
    width = max(r.shape[1] for r in rows)
    parts = []
    for r in rows:
        parts.append(np.pad(r, ((0, pad), (0, width - r.shape[1]), (0, 0)), constant_values=255))
    return np.concatenate(parts)[:-pad] if pad else np.concatenate(parts)


def _text_block(lines: Sequence[str], size: float) -> np.ndarray:
    """Lines of text, left-aligned, as one uint8 [H, W, 3] image (a blank strip for no text)."""
    if not any(line.strip() for line in lines):
        return np.full((4, 4, 3), 255, dtype=np.uint8)
    return text_image("\n".join(lines), size)


def captioned_grid(
    images: Tensor | np.ndarray,
    captions: Sequence[str | Sequence[str]],
    ncol: int = 8,
    cell: int = CELL,
    size: float = 8.0,
    pad: int = 6,
) -> np.ndarray:
    """Images [N, C, H, W] in [0, 1] with text under each, ``ncol`` per row, as uint8 [H', W', 3].

    ``captions[i]`` is one string or several (one per line, each after ``- ``), wrapped to the
    width of the enlarged image (about ``cell`` pixels); every cell is as tall as the tallest."""
    a = images.detach().float().cpu().numpy() if isinstance(images, Tensor) else np.asarray(images, np.float32)
    if a.ndim != 4 or len(captions) != len(a):
        raise ValueError(f"captioned_grid expects images [N, C, H, W] and N captions; got {a.shape}, {len(captions)}")
    n, _, h, w = a.shape
    scale = max(1, cell // max(h, w))
    chars = max(8, int(scale * w / (0.6 * size * DPI / 72)))  # DejaVu Sans: ~0.6 em per character
    tiles = [image_grid(a[i : i + 1], nrow=1, pad=0, min_side=scale * max(h, w)) for i in range(n)]
    texts = []
    for cap in captions:
        items = [cap] if isinstance(cap, str) else [f"- {c}" for c in cap]
        lines = [line for item in items for line in (textwrap.wrap(item, chars) or [""])]
        texts.append(_text_block(lines, size))
    cw = max(max(t.shape[1] for t in tiles), max(t.shape[1] for t in texts))
    ch = max(t.shape[0] for t in tiles) + 2 + max(t.shape[0] for t in texts)
    cells = []
    for tile, text in zip(tiles, texts):
        c = np.full((ch, cw, 3), 255, dtype=np.uint8)
        c[: tile.shape[0], (cw - tile.shape[1]) // 2 : (cw - tile.shape[1]) // 2 + tile.shape[1]] = tile
        c[tile.shape[0] + 2 : tile.shape[0] + 2 + text.shape[0], : text.shape[1]] = text
        cells.append(c)
    ncol = max(1, min(ncol, n))
    rows = []
    for r in range(0, n, ncol):
        row = cells[r : r + ncol]
        row += [np.full((ch, cw, 3), 255, dtype=np.uint8)] * (ncol - len(row))
        rows.append(np.concatenate([np.pad(c, ((0, 0), (0, pad), (0, 0)), constant_values=255) for c in row], 1))
    return stack_rows(rows, pad)


def modality_texts(ids: Tensor, spec: DataSpec) -> list[str]:
    """Token ids [N, T] of the ``"text"`` modality of ``spec`` -> N strings."""
    from .data.text import tokens_to_text

    return tokens_to_text(ids.detach().cpu().long(), spec.modality("text"))


def _write_clips(clips: Tensor, spec: DataSpec, png: Path) -> list[Path]:
    """One WAV file per clip beside ``png``: ``<stem>-0.wav``, ``<stem>-1.wav``, ..."""
    from .data.audio import write_wav

    rate = int(spec.modality("audio").extra.get("sample_rate", 16000))
    return [write_wav(png.with_name(f"{png.stem}-{i}.wav"), clip, rate) for i, clip in enumerate(clips.cpu())]


def save_multimodal(
    outputs: Mapping[str, Tensor],
    spec: DataSpec,
    path: str | os.PathLike,
    *,
    title: str = "",
    source_image: Tensor | None = None,
    ncol: int = 8,
) -> list[Path]:
    """Generated modalities (joint samples, or the translations of one source) as one PNG, plus one
    WAV file per clip beside it (``<stem>-<i>.wav``) when ``outputs`` holds ``"audio"``.

    With images (``"x"`` [N, C, H, W]): the grid of images, each with its caption (``"text"``) under
    it. Without images but with captions and a ``source_image`` [C, H, W] (image -> caption): the
    source image with the N captions under it. Cells are numbered when WAV files go with them, so
    ``[3]`` is ``<stem>-3.wav``. ``title`` goes above. Returns the PNG's path, then the WAVs'."""
    path = Path(path)
    texts = modality_texts(outputs["text"], spec) if "text" in outputs else None
    clips = outputs.get("audio")
    if "x" in outputs:
        n = len(outputs["x"])
        caps = texts if texts is not None else [""] * n
        if clips is not None:
            caps = [f"[{i}] {c}".strip() for i, c in enumerate(caps)]
        grid = captioned_grid(outputs["x"], caps, ncol)
    elif texts is not None and source_image is not None:
        caps = [f"[{i}] {c}" for i, c in enumerate(texts)] if clips is not None else texts
        grid = captioned_grid(source_image[None], [caps], 1, cell=2 * CELL)
    else:
        raise ValueError("save_multimodal draws images (with captions), or captions under a source image")
    written = [save_png(titled(grid, title) if title else grid, path)]
    if clips is not None:
        written += _write_clips(clips, spec, path)
    return written


def translation_grid(rows: Sequence[tuple[str, Tensor]], path: str | os.PathLike, ncol: int = 8) -> Path:
    """PNG of translations to images: one row per source, titled with it (e.g. its caption), holding
    that source's translations [k, C, H, W] (``ncol`` per line)."""
    blocks = [titled(image_grid(imgs, nrow=ncol, min_side=64), title) for title, imgs in rows]
    return save_png(stack_rows(blocks, 12), path)


@torch.no_grad()
def multimodal_figures(
    model: Any, data: Any, out: str | os.PathLike, seed: int = 0, n: int = 16, rows: int = 4
) -> list[Path]:
    """The end-of-training pictures of a multimodal run (keys ``model.capabilities.modalities``):
    ``samples.png``, ``n`` jointly created examples (each image with its caption under it; audio as
    ``samples-<i>.wav`` beside it); ``translation.png``, the captions of the first ``rows`` examples
    of ``data`` each translated to 8 images (row titles: the captions); ``captioning.png``, the
    first 8 images of ``data`` each with 3 captions the model writes for it. Each figure is drawn
    only when the model has the modalities it needs (and ``data`` the examples)."""
    out = Path(out)
    keys = tuple(model.capabilities.modalities)
    spec = model.spec
    gen = torch.Generator(device=model.device).manual_seed(seed)
    written: list[Path] = []
    if "x" in keys and model.capabilities.sample:
        samples = model.sample(n, generator=gen)
        written += save_multimodal(samples, spec, out / "samples.png", title="jointly generated: image and caption")
    if not ("x" in keys and "text" in keys) or len(data) == 0:
        return written
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    if model.capabilities.generates("x"):
        text = data.tensors["text"][:rows].to(model.device)
        images = model.translate({"text": text}, ["x"], n=8, generator=gen)["x"].cpu()
        titles = [f'from "{t}"' for t in modality_texts(text, spec)]
        written.append(
            translation_grid([(t, images[i * 8 : (i + 1) * 8]) for i, t in enumerate(titles)], out / "translation.png")
        )
    if not model.capabilities.generates("text"):
        return written
    x = data.tensors["x"][:8]
    caps = modality_texts(model.translate({"x": x.to(model.device, dtype)}, ["text"], n=3, generator=gen)["text"], spec)
    grid = captioned_grid(x, [caps[i * 3 : (i + 1) * 3] for i in range(len(x))], ncol=4)
    written.append(save_png(titled(grid, "each image with 3 captions the model writes for it"), out / "captioning.png"))
    return written


@torch.no_grad()
def run_figures(
    model: Any, data: Any, out: str | os.PathLike, seed: int = 0, n: int | None = None, title: str | None = None
) -> list[Path]:
    """The end-of-training pictures of a run folder: those of ``model.capabilities.figures`` that
    apply to the data. ``samples.png`` (and ``samples-mean.png``, decoder means, on images),
    ``reconstructions.png`` (up to 32 examples of ``data``; odd rows data, even rows
    reconstructions), ``traversal.png`` (the first example; rows ordered by each latent's KL on up
    to 512 examples, titled with the factor each tracks when the data has factors) and ``interpolation.png`` (up to 4
    pairs; needs 2 examples) on images, and ``density.png`` (data histogram next to the learned
    density) on 2-D vectors for models with exact ``log_prob``. Multimodal models get
    :func:`multimodal_figures` instead. Any number of examples in ``data`` works; returns the paths
    of the figures written. ``title`` (e.g. model, run and step) goes above the sample grids."""
    out = Path(out)
    model.eval()
    if model.capabilities.modalities:  # a dict of modalities per sample: pictures of their own
        return multimodal_figures(model, data, out, seed=seed, n=min(n or 16, 16))
    figures = set(model.capabilities.figures)
    spec = model.spec
    written: list[Path] = []
    gen = torch.Generator(device=model.device).manual_seed(seed)
    n = display_count(spec) if n is None else n
    cond = None
    if model.conditional and spec.num_classes:
        cond = torch.arange(n, device=model.device) % spec.num_classes
    nrow = spec.num_classes if cond is not None else None  # one column per class
    if "samples" in figures:
        samples = model.sample(n, cond, generator=gen)
        labels = class_labels(spec) if nrow else None
        p = save_samples(
            samples, spec, out / "samples.png", reference=data.tensors["x"], nrow=nrow, title=title, labels=labels
        )
        if p is not None:
            written.append(p)
    if "samples-mean" in figures and spec.kind == "image":
        gen.manual_seed(seed)  # the same latents as samples.png, shown as decoder means
        means = model.sample(n, cond, generator=gen, mean=True)
        mean_title = f"{title}, decoder means" if title else None
        written.append(save_image_grid(means, out / "samples-mean.png", nrow, title=mean_title, labels=labels))
    if "density" in figures and model.likelihood == "exact" and spec.kind == "vector" and spec.shape == (2,):
        written.append(
            save_learned_density(model, data.tensors["x"], out / "density.png", labels=data.tensors.get("y"))
        )
    if spec.kind != "image" or len(data) == 0:
        return written
    batch = {k: v[:32].to(model.device) for k, v in data.tensors.items()}  # up to 32 examples
    c = model.condition(batch)
    x = batch["x"]
    if "reconstructions" in figures:
        written.append(save_reconstructions(x, model.reconstruct(x, c), out / "reconstructions.png"))
    if "traversal" in figures:
        # rank the rows on a larger batch than the figures' 32: the factor MI needs examples
        rank = {k: v[:512].to(model.device) for k, v in data.tensors.items()}
        written.append(
            latent_traversal(
                model,
                x[:1],
                out / "traversal.png",
                cond=None if c is None else c[:1],
                rank_x=rank["x"],
                rank_cond=model.condition(rank),
                factors=rank.get("factors"),
                factor_names=spec.factor_names,
            )
        )
    k = min(4, len(x) // 2)  # pairs (x[i], x[k + i]); none with a single example
    if "interpolation" in figures and k:
        written.append(
            interpolation(model, x[:k], x[k : 2 * k], out / "interpolation.png", cond=None if c is None else c[:k])
        )
    return written


def save_copy_pairs(samples: Tensor, nearest: Tensor, path: str | os.PathLike) -> Path:
    """PNG of generated images ``samples`` [N, C, H, W] next to ``nearest`` (same shape: each one's
    nearest training example, see :func:`genlab.metrics.memorization_audit`): each row a pair
    (sample left, training example right), blocks of 4 rows side by side, titled."""
    pairs = torch.stack([samples.detach().float().cpu(), nearest.detach().float().cpu()], 1).flatten(0, 1)
    blocks = [image_grid(pairs[i : i + 8], nrow=2, min_side=48) for i in range(0, len(pairs), 8)]
    title = "each pair: sample (left), its nearest training example (right); closest first"
    return save_png(titled(side_by_side(*blocks, pad=8), title), path)


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
