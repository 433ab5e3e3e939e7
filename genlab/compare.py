"""``genlab compare``: the evaluation results of several runs side by side, and their validation
curves on one plot.

Each run folder holds ``eval.json`` (written by ``genlab eval``), ``config.yaml`` (the model and its options)
and ``metrics.jsonl`` (one JSON object per line; validation lines have ``"split": "val"`` and
``val_*`` metrics such as ``val_nll``/``val_bpd``, ``val_fd`` or ``val_loss``).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .checkpoint import read_yaml
from .runs import CONFIG_FILE, EVAL_FILE, METRICS_FILE
from .viz import plot_curves


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def fmt(v: Any) -> str:
    """A table cell: ints as they are, floats with 4 significant digits, missing as ``-``."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


#: Metrics shown first, in this order (those present): likelihoods in bits/dim, then in nats,
#: then sample quality. Any other ``*_bpd``/``*_nats``, ``elbo*``/``iwae*``, ``fid*``, ``kid*``
#: key follows its group; then :data:`SECONDARY` in its order (each statistic next to its null
#: value), everything else in first-seen order, and :data:`BOOKKEEPING` last.
HEADLINE = (
    "log_prob_bpd",
    "elbo_bpd",
    "iwae_bpd",
    "log_prob_nats",
    "elbo_nats",
    "iwae_nats",
    "fid",
    "fid_reference",
    "kid_mean",
    "kid_std",
    "precision",
    "recall",
    "density",
    "coverage",
)
SECONDARY = (
    "recon_mse",
    "recon_mse_per_dim",
    "c2st_accuracy",
    "mmd2",
    "mmd_p_value",
    "classes_covered",
    "classes_total",
    "class_tv",
    "mem_closer_to_train",
    "mem_closer_to_train_null",
    "mem_near_copy_fraction",
    "mem_near_copy_null_rate",
    "mem_copy_auc",
    "mem_mean_dist_train",
    "mem_mean_dist_heldout",
    "mem_near_copy_threshold",
    "feature_classifier_accuracy",
)
#: Numbers that describe the evaluation rather than the model.
BOOKKEEPING = ("n_examples", "n_samples", "iwae_k")
#: The printed and Markdown tables have one row per metric (a column per run) above this many metrics.
TRANSPOSE_ABOVE = 6


def _metric_rank(name: str) -> tuple[int, int]:
    if name in BOOKKEEPING:
        return 9, BOOKKEEPING.index(name)
    if name in HEADLINE:
        return 0, HEADLINE.index(name)
    for tier, test in enumerate(
        (
            lambda m: m.endswith("_bpd"),
            lambda m: m.endswith("_nats"),
            lambda m: m.startswith(("elbo", "iwae")),
            lambda m: m.startswith(("fid", "kid")),
        ),
        1,
    ):
        if test(name):
            return tier, 0
    if name in SECONDARY:
        return 7, SECONDARY.index(name)
    return 8, 0


def metric_columns(evals: Sequence[dict[str, Any]]) -> list[str]:
    """The numeric keys of the ``eval.json`` dicts (their union), headline metrics first: bits/dim
    and nats likelihoods, ELBO, IWAE, FID, KID, precision/recall (:data:`HEADLINE`), then the rest
    in first-seen order, bookkeeping counts (:data:`BOOKKEEPING`) last."""
    cols: dict[str, None] = {}
    for e in evals:
        cols.update({k: None for k, v in e.items() if is_number(v)})
    return sorted(cols, key=_metric_rank)  # stable: first-seen order within a rank


def _option_text(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return ",".join(_option_text(x) for x in v)
    return str(v)


def model_options(cfg: Any) -> dict[str, Any]:
    """The options of a run's ``config.yaml`` (``model_kwargs``) that differ from the model's
    defaults (all of them if the model is not registered here)."""
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model_kwargs"), dict):
        return {}
    kwargs = cfg["model_kwargs"]
    try:
        from .registry import model_kwargs
        from .runs import plain

        params = model_kwargs(str(cfg.get("model")))
    except (ValueError, KeyError):
        return dict(kwargs)
    out = {}
    for k, v in kwargs.items():
        p = params.get(k)
        try:
            default = plain(p.default) if p is not None and p.default is not p.empty else object()
        except (TypeError, ValueError):  # a default that is not plain data
            default = object()
        if v != default:
            out[k] = v
    return out


def options_text(options: dict[str, Any]) -> str:
    """``{"conditional": True, "hidden": [64, 64]}`` -> ``"conditional=True hidden=64,64"``."""
    return " ".join(f"{k}={_option_text(v)}" for k, v in options.items())


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


def compare_runs(runs: Sequence[str | os.PathLike], out: str | os.PathLike = "compare.md") -> dict[str, Any]:
    """Read every run's ``eval.json`` (and ``config.yaml``, ``metrics.jsonl``); write the metric
    table to ``out`` (Markdown) and next to it as ``.csv``, and the validation curves as ``.png``
    when any run has them. Metrics are ordered by :func:`metric_columns`; each run is shown with its
    model and the options of its ``config.yaml`` that differ from the defaults (e.g. ``vae
    conditional=True``). With up to :data:`TRANSPOSE_ABOVE` metrics the table has one row per run
    (``run | model | [options |] metrics...``); with more it is transposed: one row per metric, a
    column per run, the first row ``model``. The CSV always has one row per run (``run, model,
    options, metrics...``, full precision). Returns ``{"header", "rows", "transposed",
    "csv_header", "written", "plotted", "notes"}`` where header and rows are the printed table's
    (formatted cells). A missing run folder or ``eval.json`` raises ``FileNotFoundError``."""
    names, models, options, evals, curves = [], [], [], [], {}
    for run in runs:
        path = Path(run)
        if path.is_file():
            raise FileNotFoundError(f"{str(path)!r} is a file; give the run folder that holds it")
        if not path.is_dir():
            raise FileNotFoundError(f"run folder {str(path)!r} does not exist")
        if not (path / CONFIG_FILE).exists():
            raise FileNotFoundError(f"{str(path)!r} is not a genlab run folder (no {CONFIG_FILE})")
        if not (path / EVAL_FILE).exists():
            raise FileNotFoundError(f"run {str(path)!r} has no {EVAL_FILE}; run 'genlab eval {path}' first")
        try:
            ev = json.loads((path / EVAL_FILE).read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{str(path / EVAL_FILE)!r} is not valid JSON ({e})") from None
        if not isinstance(ev, dict):
            raise ValueError(f"{str(path / EVAL_FILE)!r} does not hold a JSON object of metrics")
        cfg = read_yaml(path / CONFIG_FILE)
        name = path.resolve().name
        if name in names:  # two folders of the same name: tell them apart by the path given
            name = str(run)
        names.append(name)
        models.append(str(cfg.get("model", "-")) if isinstance(cfg, dict) else "-")
        options.append(options_text(model_options(cfg)))
        evals.append(ev)
        curves[name] = val_curves(path / METRICS_FILE)
    cols = metric_columns(evals)
    # CSV: one row per run, full precision, the options in a column of their own.
    csv_header = ["run", "model", "options", *cols]
    values = [[n, m, o, *(e.get(c) for c in cols)] for n, m, o, e in zip(names, models, options, evals)]
    transposed = len(cols) > TRANSPOSE_ABOVE
    if transposed:  # a row per metric, a column per run (headed by its model and options)
        header = ["metric", *names]
        rows = [["model", *(f"{m} {o}".strip() for m, o in zip(models, options))]]
        rows += [[c, *(fmt(e.get(c)) for e in evals)] for c in cols]
        align = ["---"] + ["---:"] * len(names)
    else:
        show_options = any(options)
        header = ["run", "model", *(["options"] if show_options else []), *cols]
        rows = [
            [n, m, *([o or "-"] if show_options else []), *(fmt(e.get(c)) for c in cols)]
            for n, m, o, e in zip(names, models, options, evals)
        ]
        align = ["---"] * (len(header) - len(cols)) + ["---:"] * len(cols)
    notes = []
    setups = {(e.get("data"), e.get("split")) for e in evals}
    if len(setups) > 1:
        notes.append(
            "runs were evaluated on different data or splits: "
            + ", ".join(f"{n}: {str(e.get('data')).rstrip('/')} ({e.get('split')})" for n, e in zip(names, evals))
        )

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    md = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    out.write_text("\n".join(md) + "\n")
    written = [out]
    csv_path = out.with_suffix(".csv")
    with open(csv_path, "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(csv_header)
        for row in values:  # full precision for further analysis; missing cells empty
            wr.writerow(["" if v is None else v for v in row])
    written.append(csv_path)
    plotted = None
    pick = shared_metric(curves)
    if pick is not None:
        metric, with_it = pick
        png = plot_curves(
            {r: curves[r][metric] for r in with_it},
            out.with_suffix(".png"),
            f"{metric} vs step (validation)",
            "step",
            metric,
        )
        written.append(png)
        plotted = metric
        missing = [n for n in names if n not in with_it]
        if missing:
            notes.append(f"{out.with_suffix('.png')} leaves out {', '.join(missing)} (no {metric} curve)")
    return {
        "header": header,
        "rows": rows,
        "transposed": transposed,
        "csv_header": csv_header,
        "written": written,
        "plotted": plotted,
        "notes": notes,
    }


def _is_number_cell(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell: the first column, and any column without a number,
    left-aligned; the others (numbers) right-aligned."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    numeric = [i > 0 and any(_is_number_cell(str(r[i])) for r in rows) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(wd) if num else c.ljust(wd) for c, wd, num in zip(cells, widths, numeric)).rstrip()

    return "\n".join([line(header), *(line(r) for r in rows)])
