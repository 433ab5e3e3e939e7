"""``genlab compare``: the evaluation results of several runs side by side, and their validation
curves on one plot.

Each run folder holds ``eval.json`` (written by ``genlab eval``), ``config.yaml`` (the model name)
and ``metrics.jsonl`` (one JSON object per line; validation lines have ``"split": "val"`` and
``val_*`` metrics such as ``val_nll``/``val_bpd``, ``val_fd`` or ``val_loss``).
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw

from .viz import PALETTE, legend, save_png, titled

EVAL_FILE = "eval.json"
METRICS_FILE = "metrics.jsonl"  # as written by genlab.train.Trainer


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def fmt(v: Any) -> str:
    """A table cell: ints as they are, floats with 4 significant digits, missing as ``-``."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def metric_columns(evals: Sequence[dict[str, Any]]) -> list[str]:
    """The numeric keys of the ``eval.json`` dicts: their union, in first-seen order."""
    cols: dict[str, None] = {}
    for e in evals:
        cols.update({k: None for k, v in e.items() if is_number(v)})
    return list(cols)


def val_curves(path: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """Validation curves of one run: ``{metric: [(step, value), ...]}`` for every ``val_*`` key
    of ``metrics.jsonl`` (in first-seen order); ``{}`` if the file is missing. Lines that do not
    parse (a run killed mid-write) and non-finite values are skipped."""
    path = Path(path)
    curves: dict[str, list[tuple[int, float]]] = {}
    if not path.exists():
        return curves
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(rec, dict) or not is_number(rec.get("step")):
            continue
        for k, v in rec.items():
            if k.startswith("val_") and is_number(v) and math.isfinite(v):
                curves.setdefault(k, []).append((int(rec["step"]), float(v)))
    return curves


def shared_metric(curves: dict[str, dict[str, list[tuple[int, float]]]]) -> tuple[str, list[str]] | None:
    """The validation metric to plot and the runs that have it: the first (in first-seen order)
    that every run with curves shares, preferring ``val_bpd`` (comparable across data sets) over
    ``val_nll``; if they share none, the one most runs have. None if no run has a curve."""
    have = {r: c for r, c in curves.items() if c}
    if not have:
        return None
    order: dict[str, None] = {}
    for c in have.values():
        order.update(dict.fromkeys(c))
    shared = [m for m in order if all(m in c for c in have.values())]
    if shared:
        metric = "val_bpd" if "val_bpd" in shared else shared[0]
    else:
        metric = max(order, key=lambda m: sum(m in c for c in have.values()))  # first of the most common
    return metric, [r for r, c in have.items() if metric in c]


def _nice(v: float) -> str:
    return f"{v:.4g}"


def curves_image(series: dict[str, list[tuple[int, float]]], title: str, width: int = 640, height: int = 400) -> np.ndarray:
    """A line plot (uint8 [H, W, 3]) of ``{name: [(step, value), ...]}``: one coloured line per
    name (:data:`~genlab.viz.PALETTE`), step to the right, value up, the ranges printed at the
    axes and a legend on the right."""
    left, right, top, bottom, legend_w = 60, 16, 10, 28, 150
    w, h = width - left - right - legend_w, height - top - bottom
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    steps = [s for pts in series.values() for s, _ in pts]
    vals = [v for pts in series.values() for _, v in pts]
    s0, s1 = (min(steps), max(steps)) if steps else (0, 1)
    v0, v1 = (min(vals), max(vals)) if vals else (0.0, 1.0)
    if s1 == s0:
        s0, s1 = s0 - 1, s1 + 1
    if v1 == v0:
        v0, v1 = v0 - 0.5 * (abs(v0) or 1), v1 + 0.5 * (abs(v1) or 1)
    pad = 0.05 * (v1 - v0)
    v0, v1 = v0 - pad, v1 + pad

    def xy(s: float, v: float) -> tuple[float, float]:
        return left + (s - s0) / (s1 - s0) * (w - 1), top + (v1 - v) / (v1 - v0) * (h - 1)

    draw.rectangle([left, top, left + w, top + h], outline=(120, 120, 120))
    draw.text((4, top), _nice(v1), fill=(0, 0, 0))
    draw.text((4, top + h - 10), _nice(v0), fill=(0, 0, 0))
    draw.text((left, top + h + 4), str(int(s0)), fill=(0, 0, 0))
    last = str(int(s1))
    draw.text((left + w - 6 * len(last), top + h + 4), last, fill=(0, 0, 0))
    draw.text((left + w // 2 - 12, top + h + 14), "step", fill=(0, 0, 0))
    for i, pts in enumerate(series.values()):
        col = PALETTE[i % len(PALETTE)]
        line = [xy(s, v) for s, v in sorted(pts)]
        if len(line) > 1:
            draw.line(line, fill=col, width=2)
        for px, py in line:
            draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=col)
    legend(draw, left + w + 12, top, list(series))
    return titled(np.asarray(canvas), title)


def compare_runs(runs: Sequence[str | os.PathLike], out: str | os.PathLike = "compare.md") -> dict[str, Any]:
    """Read every run's ``eval.json`` (and ``config.yaml``, ``metrics.jsonl``); write the metric
    table to ``out`` (Markdown) and next to it as ``.csv``, and the validation curves as ``.png``
    when any run has them. Returns ``{"header", "rows", "written", "plotted", "notes"}`` where rows
    hold formatted cells. A missing run folder or ``eval.json`` raises ``FileNotFoundError``."""
    import yaml

    names, models, evals, curves = [], [], [], {}
    for run in runs:
        path = Path(run)
        if not path.is_dir():
            raise FileNotFoundError(f"run folder {str(path)!r} does not exist")
        if not (path / EVAL_FILE).exists():
            raise FileNotFoundError(f"run {str(path)!r} has no {EVAL_FILE}; run 'genlab eval {path}' first")
        try:
            ev = json.loads((path / EVAL_FILE).read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{str(path / EVAL_FILE)!r} is not valid JSON ({e})") from None
        if not isinstance(ev, dict):
            raise ValueError(f"{str(path / EVAL_FILE)!r} does not hold a JSON object of metrics")
        cfg = yaml.safe_load((path / "config.yaml").read_text()) if (path / "config.yaml").exists() else None
        name = path.resolve().name
        if name in names:  # two folders of the same name: tell them apart by the path given
            name = str(run)
        names.append(name)
        models.append(str(cfg.get("model", "-")) if isinstance(cfg, dict) else "-")
        evals.append(ev)
        curves[name] = val_curves(path / METRICS_FILE)
    cols = metric_columns(evals)
    header = ["run", "model", *cols]
    values = [[n, m, *(e.get(c) for c in cols)] for n, m, e in zip(names, models, evals)]
    rows = [[fmt(v) for v in row] for row in values]
    notes = []
    setups = {(e.get("data"), e.get("split")) for e in evals}
    if len(setups) > 1:
        notes.append("runs were evaluated on different data or splits: " + ", ".join(f"{n}: {e.get('data')}/{e.get('split')}" for n, e in zip(names, evals)))

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    md = ["| " + " | ".join(header) + " |", "|" + "|".join(["---", "---"] + ["---:"] * len(cols)) + "|"]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    out.write_text("\n".join(md) + "\n")
    written = [out]
    csv_path = out.with_suffix(".csv")
    with open(csv_path, "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(header)
        for row in values:  # full precision for further analysis; missing cells empty
            wr.writerow(["" if v is None else v for v in row])
    written.append(csv_path)
    plotted = None
    pick = shared_metric(curves)
    if pick is not None:
        metric, with_it = pick
        png = save_png(curves_image({r: curves[r][metric] for r in with_it}, f"{metric} vs step (validation)"), out.with_suffix(".png"))
        written.append(png)
        plotted = metric
        missing = [n for n in names if n not in with_it]
        if missing:
            notes.append(f"{out.with_suffix('.png')} leaves out {', '.join(missing)} (no {metric} curve)")
    return {"header": header, "rows": rows, "written": written, "plotted": plotted, "notes": notes}


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell (first two left-aligned, numbers right-aligned)."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(wd) if i < 2 else c.rjust(wd) for i, (c, wd) in enumerate(zip(cells, widths)))

    return "\n".join([line(header), *(line(r) for r in rows)])
