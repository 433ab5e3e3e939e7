"""``genlab compare``: the evaluation results of several runs side by side, and their validation
curves on one plot (:func:`compare_runs`); or one model per family trained on one data set under the
same wall-clock budget, evaluated and tabulated (:func:`compare_families`).

Each run folder holds ``eval.json`` (written by ``genlab eval``), ``config.yaml`` (the model and its options)
and ``metrics.jsonl`` (one JSON object per line; validation lines have ``"split": "val"`` and
``val_*`` metrics such as ``val_nll``/``val_bpd``, ``val_fd`` or ``val_loss``).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .checkpoint import finite_or_null, read_yaml
from .runs import COMPARE_STATE_FILE as COMPARE_STATE
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
    in first-seen order, bookkeeping counts (:data:`BOOKKEEPING`) last. The data's baselines
    (``baseline/...``, :mod:`genlab.baselines`) describe the data, not a run, and are left out."""
    cols: dict[str, None] = {}
    for e in evals:
        cols.update({k: None for k, v in e.items() if is_number(v) and not k.startswith("baseline/")})
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


# --- the family table: one model per family under one wall-clock budget -----------------------------
#: The families ``genlab compare --data`` trains when ``--models`` is not given: one per way of
#: modelling p(x) (latent variable with a bound, autoregressive, flow, adversarial, diffusion).
#: A family that is not registered (``ddpm`` before it lands) is skipped with a note.
DEFAULT_FAMILIES = ("vae", "pixelcnn", "glow", "dcgan", "ddpm")
# COMPARE_STATE is written in each family's run folder after every checkpoint: the wall-clock seconds
# of training (and, apart, of validation and checkpoints) that the checkpoint embodies, so that a
# resumed compare charges the budget honestly.
#: The step cap of a budgeted run when ``--set steps=N`` does not set one: the budget ends it.
MAX_STEPS = 10**9
#: Sample-based metrics of the family table (a subset of :data:`genlab.evaluate.SAMPLE_METRICS`).
FAMILY_SAMPLE_METRICS = ("fid", "kid", "pr", "memorization")
#: Samples drawn to time sampling and to draw the grid (the first :data:`GRID_SAMPLES` of them).
TIMED_SAMPLES = 100
GRID_SAMPLES = 64
#: (key in compare.json / .csv, header in the Markdown table) of the family table, in order.
FAMILY_COLUMNS = (
    ("family", "family"),
    ("inference", "inference"),
    ("train_seconds", "train s"),
    ("overhead_seconds", "val+ckpt s"),
    ("steps", "steps"),
    ("best_step", "best step"),
    ("test_bpd", "test bits/dim"),
    ("fid", "FID"),
    ("kid_mean", "KID"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("sample_seconds_per_100", "sample s/100"),
    ("probe_accuracy", "probe acc"),
    ("near_copy_rate", "near-copy rate"),
)
#: Extra keys of the CSV and JSON rows (not shown in the Markdown table): the bounds behind
#: ``test_bpd``, the real-data floors of FID and of the near-copy rate, where the run lives.
FAMILY_EXTRA = (
    "bpd_source",
    "log_prob_bpd",
    "elbo_bpd",
    "iwae_bpd",
    "fid_reference",
    "kid_std",
    "near_copy_null_rate",
    "copy_auc",
    "stopped",
    "run",
)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(s|sec|m|min|h)?\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"": 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_budget(text: str | float | int) -> float:
    """A wall-clock budget in seconds from ``"90s"``, ``"10m"``, ``"1h"``, ``"1.5m"`` or plain
    seconds (``"600"``, ``600``). Anything else, zero or negative is a one-line ``ValueError``
    naming the value and the expected form."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        m = _DURATION.match(str(text))
        if m is None:
            raise ValueError(
                f"bad --budget {text!r}: expected a duration such as 90s, 10m, 1h or plain seconds (e.g. 600)"
            )
        seconds = float(m.group(1)) * _UNIT_SECONDS[(m.group(2) or "").lower()]
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"bad --budget {text!r}: expected a duration > 0, such as 90s, 10m, 1h or plain seconds")
    return seconds


def format_seconds(s: float) -> str:
    """``75.3`` -> ``"75s"``, ``600`` -> ``"10m"``, ``5400`` -> ``"1.5h"`` (for progress lines and notes)."""
    if s >= 3600:
        return f"{s / 3600:.3g}h"
    if s >= 60:
        return f"{s / 60:.3g}m"
    return f"{s:.3g}s"


def resolve_families(models: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """(families to train, notes). ``None``: :data:`DEFAULT_FAMILIES`, leaving out (with a note)
    those not registered. Given names must all be registered: an unknown one is a one-line
    ``ValueError`` listing the registered models; duplicates are dropped."""
    from .registry import model_names

    known = model_names()
    if models is None:
        missing = [m for m in DEFAULT_FAMILIES if m not in known]
        notes = [f"{m} is not registered here; skipped" for m in missing]
        return [m for m in DEFAULT_FAMILIES if m in known], notes
    names = list(dict.fromkeys(m.strip() for m in models if m.strip()))
    if not names:
        raise ValueError(f"--models is empty; expected comma-separated model names from: {', '.join(known)}")
    for m in names:
        if m not in known:
            raise ValueError(f"unknown model {m!r} in --models; registered: {', '.join(known)}")
    return names, []


def split_family_settings(
    families: Sequence[str], settings: dict[str, Any] | None
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Split ``--set`` assignments into per-family training and model settings.

    ``KEY=VALUE`` with a training key (``batch_size``, ``lr``, ``threads``, ``device``, ``steps`` as a
    step cap, ...) applies to every family; ``FAMILY.KEY=VALUE`` (``vae.z_dim=8``,
    ``pixelcnn.batch_size=32``) to that family only, training or model key. An unqualified model key,
    a key no family has or a family not being compared is a one-line ``ValueError``."""
    import dataclasses

    from .config import split_settings
    from .registry import model_kwargs
    from .train import TrainConfig

    train_keys = [f.name for f in dataclasses.fields(TrainConfig)]
    train: dict[str, dict[str, Any]] = {f: {} for f in families}
    model: dict[str, dict[str, Any]] = {f: {} for f in families}
    common = {k: v for k, v in (settings or {}).items() if "." not in k}
    bad = [k for k in common if k not in train_keys]
    if bad:
        owners = [f for f in families if bad[0] in model_kwargs(f)]
        example = " or ".join(f"--set {f}.{bad[0]}=VALUE" for f in owners) or f"--set FAMILY.{bad[0]}=VALUE"
        raise ValueError(
            f"--set {bad[0]}: not a training key; model options are per family ({example}); "
            f"training keys: {', '.join(train_keys)}"
        )
    fixed = [k for k in settings or {} if k.rpartition(".")[2] in ("seed", "progress")]
    if fixed:
        raise ValueError(f"--set {fixed[0]}: compare sets it (use --seed, --quiet)")
    for f in families:
        train[f].update(common)
    for key, value in (settings or {}).items():
        if "." not in key:
            continue
        family, _, sub = key.partition(".")
        if family not in train:
            raise ValueError(f"--set {key}: {family!r} is not one of the compared families ({', '.join(families)})")
        t, m = split_settings({sub: value}, train_keys=train_keys, model_keys=model_kwargs(family), model=family)
        train[family].update(t)
        model[family].update(m)
    return train, model


def _read_state(folder: Path) -> dict[str, Any] | None:
    try:
        state = json.loads((folder / COMPARE_STATE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return state if isinstance(state, dict) else None


def _make_budget_trainer() -> type:
    """:class:`genlab.train.Trainer` with a wall-clock budget (defined on first use: the runs mode
    of ``genlab compare`` never loads the training loop)."""
    from collections.abc import Iterator
    from contextlib import contextmanager

    from .checkpoint import write_json
    from .train import Trainer

    class BudgetTrainer(Trainer):
        """A Trainer that stops once its training seconds reach ``budget_s``: ``spent_s`` (training
        seconds of earlier sessions, as recorded with the checkpoint it resumes from) plus this
        session's wall clock, less the time of validation passes, sample grids and checkpoints
        (``overhead_s``, recorded apart: a GAN's Frechet-distance validation or a diffusion model's
        bound can cost more than many steps, and would otherwise eat into its training).

        It stops through the loop's own end: after the step that spends the budget it sets
        ``cfg.steps`` to that step, so the loop runs its final validation (best weights), sample grid and
        checkpoint as at any planned end. After every checkpoint it writes :data:`COMPARE_STATE`: the
        step, the training and overhead seconds up to it, so a compare killed mid-training resumes
        from the checkpoint charged with exactly that time (the steps after it, which are lost, are
        not charged).
        """

        def __init__(
            self, *args: Any, budget_s: float, spent_s: float, overhead_s: float = 0.0, report: Any = None, **kw: Any
        ) -> None:
            super().__init__(*args, **kw)
            self.budget_s, self.spent_s, self.report = budget_s, spent_s, report
            self.overhead_before, self.overhead_now = overhead_s, 0.0
            self.budget_spent = False
            self._t0 = time.monotonic()

        def elapsed(self) -> float:
            """Training seconds so far (earlier sessions plus this one's wall clock, less overhead)."""
            return self.spent_s + time.monotonic() - self._t0 - self.overhead_now

        def overhead(self) -> float:
            """Seconds of validation passes, sample grids and checkpoints so far (all sessions)."""
            return self.overhead_before + self.overhead_now

        @contextmanager
        def _overhead(self) -> Iterator[None]:
            t0 = time.monotonic()
            try:
                yield
            finally:
                self.overhead_now += time.monotonic() - t0

        def fit(self, resume: bool = False) -> dict[str, Any]:
            self._t0, self.overhead_now = time.monotonic(), 0.0
            return super().fit(resume)

        def evaluate(self) -> dict[str, float]:
            with self._overhead():
                return super().evaluate()

        def save_sample_grid(self, name: str) -> Path | None:
            with self._overhead():
                return super().save_sample_grid(name)

        def train_step(self, batch: dict[str, Any]) -> dict[str, Any]:
            losses = super().train_step(batch)
            spent = self.elapsed()
            if spent >= self.budget_s and self.step < self.cfg.steps:
                self.cfg.steps = self.step  # the loop's planned end: final validation, samples, checkpoint
                self.budget_spent = True
            if self.report is not None:
                self.report(self.step, spent)
            return losses

        def save_checkpoint(self) -> None:
            with self._overhead():
                super().save_checkpoint()
            if self.out is not None and self.is_main:
                self.write_state(done=False, stopped=None)

        def write_state(self, done: bool, stopped: str | None) -> None:
            assert self.out is not None
            write_json(
                {
                    "model": self.model.registry_name,
                    "step": self.step,
                    "elapsed_s": self.elapsed(),
                    "overhead_s": self.overhead(),
                    "budget_s": self.budget_s,
                    "best_step": self.best_step,
                    "done": done,
                    "stopped": stopped,
                },
                self.out / COMPARE_STATE,
            )

    return BudgetTrainer


class _Progress:
    """One line per family event and, while training, one every ``every`` seconds of wall clock or more:
    ``  vae: 12s / 60s, step 850`` (on stderr, so the table on stdout stays clean)."""

    def __init__(self, enabled: bool, every: float = 5.0) -> None:
        self.enabled, self.every, self.last = enabled, every, 0.0

    def say(self, text: str) -> None:
        if self.enabled:
            print(text, file=sys.stderr, flush=True)

    def training(self, family: str, budget_s: float) -> Any:
        """The trainer's ``report(step, seconds)`` callback for ``family``: a line at most every
        ``every`` seconds, or every twelfth of the budget if that is longer."""
        self.last = time.monotonic()
        every = max(self.every, budget_s / 12)

        def report(step: int, spent: float) -> None:
            now = time.monotonic()
            if now - self.last >= every:
                self.last = now
                self.say(f"  {family}: {format_seconds(spent)} / {format_seconds(budget_s)}, step {step}")

        return report


def _check_same_options(
    folder: Path, family: str, data: str, data_opts: dict[str, Any], model_settings: dict[str, Any]
) -> None:
    """Refuse (one-line ``ValueError``) to resume or reuse the run in ``folder`` when it was trained with
    other model or data options than those asked for now."""
    from .runs import full_data_opts, full_model_kwargs, plain, saved_data_opts, saved_model_kwargs

    cfg = read_yaml(folder / CONFIG_FILE)
    if not isinstance(cfg, dict):
        return
    had, want = full_model_kwargs(family, saved_model_kwargs(cfg)), plain(full_model_kwargs(family, model_settings))
    diff = [f"{k}={had.get(k)!r} (now {want.get(k)!r})" for k in want if plain(had.get(k)) != want.get(k)]
    had_opts, want_opts = full_data_opts(data, saved_data_opts(cfg)), full_data_opts(data, data_opts)
    diff += [f"data {k}={had_opts.get(k)!r} (now {v!r})" for k, v in want_opts.items() if had_opts.get(k) != v]
    if diff:
        raise ValueError(
            f"{str(folder)!r} trained {family} with other options: {', '.join(diff)}; "
            "give the same --set/--data-opt to continue it, or another --out-dir"
        )


def train_family(
    family: str,
    data: str,
    folder: Path,
    budget_s: float,
    *,
    data_opts: dict[str, Any] | None = None,
    train_settings: dict[str, Any] | None = None,
    model_settings: dict[str, Any] | None = None,
    seed: int = 0,
    progress: _Progress | None = None,
) -> dict[str, Any]:
    """Train ``family`` on ``data`` in run folder ``folder`` until ``budget_s`` wall-clock seconds of
    training are spent (validation passes and checkpoints are timed apart), with validation selection
    (``best.safetensors``). A folder whose :data:`COMPARE_STATE` says it is done (budget spent, or
    a ``steps`` cap reached) is left as it is; a half-trained one resumes from its checkpoint with
    the seconds recorded there; any other genlab run folder of the same model starts over.
    Returns the final compare state (``step``, ``elapsed_s``: training seconds, ``overhead_s``:
    seconds of validation and checkpoints, ``best_step``, ``done``, ``stopped``, ``trained``: whether
    this call trained)."""
    import torch

    from . import build_model, load_dataset
    from .checkpoint import read_yaml
    from .registry import get_model_class
    from .runs import check_run_folder, checkpoint_step, has_checkpoint
    from .train import TrainConfig

    progress = progress or _Progress(False)
    check_run_folder(folder)
    state = _read_state(folder)
    if (folder / CONFIG_FILE).exists():
        cfg = read_yaml(folder / CONFIG_FILE)
        if isinstance(cfg, dict) and (cfg.get("model") != family or str(cfg.get("data")) != data):
            raise ValueError(
                f"{str(folder)!r} holds a run of {cfg.get('model')!r} on {cfg.get('data')!r}, not {family!r} on "
                f"{data!r}; choose another --out-dir"
            )
    if state and (folder / CONFIG_FILE).exists():
        _check_same_options(folder, family, data, data_opts or {}, model_settings or {})
    spent = float(state["elapsed_s"]) if state else 0.0
    overhead = float(state.get("overhead_s", 0.0)) if state else 0.0
    step_cap = (train_settings or {}).get("steps")
    if state and state.get("done") and (state.get("stopped") != "budget" or spent >= budget_s):
        return {**state, "trained": False}
    resume = bool(state) and has_checkpoint(folder) and checkpoint_step(folder) == state.get("step")
    if not resume:
        spent = overhead = 0.0
        (folder / COMPARE_STATE).unlink(missing_ok=True)
    elif step_cap is not None and int(step_cap) <= int(state["step"]):
        return {**state, "done": True, "stopped": "completed", "trained": False}
    cls = get_model_class(family)
    settings = {
        **{k: v for k, v in cls.train_defaults.items() if k != "steps"},
        "sample_every": 0,  # the budget goes to training; the final grid is drawn at the end
        **(train_settings or {}),
        "seed": seed,
        "progress": False,
    }
    settings.setdefault("steps", MAX_STEPS)
    # Checkpoints (what a killed compare resumes from) as often as validation, or the default when it is off.
    settings.setdefault("checkpoint_every", settings.get("eval_every") or TrainConfig.checkpoint_every)
    train_cfg = TrainConfig.from_dict(settings)
    train = load_dataset(data, "train", **(data_opts or {}))
    val = load_dataset(data, "val", **(data_opts or {}))
    torch.manual_seed(seed)
    model = build_model(family, train.spec, **(model_settings or {}))
    trainer = _make_budget_trainer()(
        model,
        train,
        val,
        train_cfg,
        folder,
        budget_s=budget_s,
        spent_s=spent,
        overhead_s=overhead,
        report=progress.training(family, budget_s),
    )
    trainer.write_config(data, data_opts or {})
    if resume:
        progress.say(f"  {family}: resuming at step {state['step']} with {format_seconds(spent)} spent")
    summary = trainer.fit(resume=resume)
    stopped = "budget" if trainer.budget_spent else summary["stopped"]
    done = stopped in ("budget", "completed", "early_stop")
    trainer.write_state(done=done, stopped=stopped)
    if not done:  # Ctrl-C: the checkpoint and its seconds are kept; the same command resumes
        raise KeyboardInterrupt
    return {**_read_state(folder), "trained": True}  # type: ignore[dict-item]


def linear_probe(model: Any, train: Any, test: Any, *, seed: int = 0, max_train: int = 5000) -> float | None:
    """Held-out accuracy (fraction of ``test`` classified right) of a logistic regression trained on
    the standardized ``model.encode`` codes of (at most ``max_train`` of) ``train`` against its labels
    ``y``; None when the model has no encoder or the data no labels."""
    if not model.capabilities.encode or "y" not in train.tensors or "y" not in test.tensors:
        return None
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from .encode import encode_dataset

    try:
        tr = encode_dataset(model, train, limit=max_train)
        te = encode_dataset(model, test)
    except NotImplementedError:
        return None
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    clf.fit(tr["z"], tr["y"])
    return float(clf.score(te["z"], te["y"]))


def eval_setup(n_samples: int, iwae_k: int, features: str, seed: int) -> dict[str, Any]:
    """What an ``eval.json`` of :func:`evaluate_family` was measured with (kept in it as
    ``compare_eval``): a later compare with other settings evaluates again."""
    return {"n_samples": n_samples, "iwae_k": iwae_k, "features": features, "seed": seed}


def evaluate_family(
    folder: Path,
    data: str,
    *,
    data_opts: dict[str, Any] | None = None,
    n_samples: int = 1000,
    iwae_k: int = 100,
    features: str = "auto",
    seed: int = 0,
) -> dict[str, Any]:
    """Evaluate the best validation weights of the run in ``folder`` on the test split of ``data``:
    likelihood (and IWAE-``iwae_k`` for bound models) in nats and bits/dim, FID/KID, precision/recall
    and the memorization audit on ``n_samples`` samples (features: ``features``, trained on the train
    split), seconds to draw :data:`TIMED_SAMPLES` samples (``sample_seconds_per_100``), the
    linear-probe accuracy of ``encode`` (``probe_accuracy``). Writes ``eval.json`` (so that the
    folder also works in the runs mode of ``genlab compare``) and ``samples.png`` (the first
    :data:`GRID_SAMPLES` timed samples; 2-D vector data: a density of 5,000) in ``folder``; returns the eval dict."""
    import torch

    from . import load_dataset
    from .checkpoint import write_json
    from .evaluate import applicable_metrics, draw_samples, evaluate
    from .runs import load_run
    from .viz import display_count, save_samples

    model, _, spec = load_run(folder, weights="best")
    train = load_dataset(data, "train", **(data_opts or {}))
    test = load_dataset(data, "test", **(data_opts or {}))
    applicable = applicable_metrics(model)
    metrics = [m for m in ("likelihood", "iwae", *FAMILY_SAMPLE_METRICS) if m in applicable]
    res = evaluate(
        model,
        test,
        metrics,
        k=iwae_k,
        n_samples=n_samples,
        reference=train,
        features=features,
        seed=seed,
        out_dir=folder,
    )
    if model.capabilities.sample:
        with torch.no_grad():
            draw_samples(model, 2, test, seed=seed)  # warm-up: first-call allocations are not sampling time
            t0 = time.perf_counter()
            x = draw_samples(model, TIMED_SAMPLES, test, seed=seed)
            res["sample_seconds_per_100"] = (time.perf_counter() - t0) * 100 / TIMED_SAMPLES
            n_show = display_count(spec, GRID_SAMPLES)  # a 2-D density needs thousands of points
            if n_show > len(x):
                x = draw_samples(model, n_show, test, seed=seed)
        save_samples(x[:n_show], spec, folder / "samples.png", reference=train.tensors["x"][:n_show])
    res["probe_accuracy"] = linear_probe(model, train, test, seed=seed)
    setup = eval_setup(n_samples, iwae_k, features, seed)
    res = {"run": str(folder), "weights": "best", "split": "test", "data": data, **res, "compare_eval": setup}
    write_json(finite_or_null(res), folder / EVAL_FILE)
    return res


def family_row(family: str, folder: Path, state: dict[str, Any], ev: dict[str, Any]) -> dict[str, Any]:
    """One row of the family table from a run's compare state and eval dict. ``test_bpd``: the exact
    ``log_prob_bpd``; for bound models the tighter IWAE bound if measured, else the ELBO (an upper
    bound on the true bits/dim either way; ``bpd_source`` says which); None without a likelihood."""
    kind = ev.get("likelihood_kind", "none")
    if ev.get("log_prob_bpd") is not None:
        bpd, source = ev["log_prob_bpd"], "log_prob"
    elif ev.get("iwae_bpd") is not None:
        bpd, source = ev["iwae_bpd"], f"iwae_k{ev.get('iwae_k')}"
    elif ev.get("elbo_bpd") is not None:
        bpd, source = ev["elbo_bpd"], "elbo"
    else:
        bpd, source = None, None
    return {
        "family": family,
        "inference": kind,
        "train_seconds": state.get("elapsed_s"),
        "overhead_seconds": state.get("overhead_s"),
        "steps": state.get("step"),
        "best_step": state.get("best_step"),
        "test_bpd": bpd,
        "fid": ev.get("fid"),
        "kid_mean": ev.get("kid_mean"),
        "precision": ev.get("precision"),
        "recall": ev.get("recall"),
        "sample_seconds_per_100": ev.get("sample_seconds_per_100"),
        "probe_accuracy": ev.get("probe_accuracy"),
        "near_copy_rate": ev.get("mem_near_copy_fraction"),
        "bpd_source": source,
        "log_prob_bpd": ev.get("log_prob_bpd"),
        "elbo_bpd": ev.get("elbo_bpd"),
        "iwae_bpd": ev.get("iwae_bpd"),
        "fid_reference": ev.get("fid_reference"),
        "kid_std": ev.get("kid_std"),
        "near_copy_null_rate": ev.get("mem_near_copy_null_rate"),
        "copy_auc": ev.get("mem_copy_auc"),
        "stopped": state.get("stopped"),
        "run": str(folder),
    }


def sample_panel(
    families: Sequence[str], folders: Sequence[Path], kinds: Sequence[str], steps_done: Sequence[int], path: Path
) -> Path | None:
    """One PNG: each family's ``samples.png`` under a title ``"<family> (likelihood: <kind>, <N>
    steps)"``, side by side; None if no family drew a picture (e.g. token data)."""
    import numpy as np
    from PIL import Image

    from .viz import save_png, side_by_side, titled

    panels = []
    for fam, folder, kind, steps in zip(families, folders, kinds, steps_done):
        png = folder / "samples.png"
        if png.exists():
            img = np.asarray(Image.open(png).convert("RGB"))
            panels.append(titled(img, f"{fam} (likelihood: {kind}, {steps} steps)", size=12))
    if not panels:
        return None
    return save_png(side_by_side(*panels, pad=12), path)


def _check_table_files(out_path: Path) -> None:
    """One-line ValueError if the table files of ``out_path`` (.md, .csv, .json, .png) exist but were
    not written by an earlier ``compare --data`` (its .json, with ``families`` and ``budget_s``):
    a user's own file of that name is never overwritten."""
    paths = [out_path.with_suffix(s) for s in (".md", ".csv", ".json", ".png")]
    existing = [p for p in paths if p.exists()]
    if not existing:
        return
    try:
        ours = {"families", "budget_s"} <= set(json.loads(out_path.with_suffix(".json").read_text()))
    except (OSError, ValueError, TypeError):
        ours = False
    if not ours:
        raise ValueError(
            f"{existing[0]} exists and was not written by 'genlab compare --data'; "
            "choose another --out-dir or --out (the table files would replace it)"
        )


def compare_families(
    data: str,
    models: Sequence[str] | None = None,
    budget_s: float = 600.0,
    out_dir: str | os.PathLike | None = None,
    *,
    data_opts: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
    seed: int = 0,
    n_samples: int = 1000,
    iwae_k: int = 100,
    features: str = "auto",
    out: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train one model per family on ``data`` under the same wall-clock budget, evaluate each on the
    test split and tabulate them (``genlab compare --data``).

    ``models``: registered names (default :data:`DEFAULT_FAMILIES`, unregistered ones skipped with a
    note). Each family trains in ``out_dir/<family>/`` (default ``compare-<data>/``) for ``budget_s``
    seconds of wall clock spent in training steps (its validation passes, sample grids and checkpoints
    are timed apart: ``overhead_seconds``), with its own
    ``train_defaults`` (batch size 128 unless they say otherwise; their ``steps`` is replaced by the
    budget), ``sample_every=0``, checkpoints every ``eval_every`` steps (500 if 0), seed ``seed``; then its best
    validation weights are evaluated (:func:`evaluate_family`). ``settings``: ``--set`` assignments
    (:func:`split_family_settings`). A second call with the same ``out_dir`` retrains nothing that
    finished and resumes a half-trained family from its checkpoint with the seconds recorded there.

    Writes ``out`` (default ``out_dir/compare.md``: the table of :data:`FAMILY_COLUMNS`; times in
    seconds, bits/dim of the test split, FID/KID on the feature network's features) and next to it
    ``.csv`` and ``.json`` (full precision, plus :data:`FAMILY_EXTRA`) and ``.png`` (a titled sample
    grid per family). Returns ``{"header", "rows", "records", "written", "notes", "skipped"}``."""
    from . import list_datasets, load_dataset

    families, notes = resolve_families(models)
    budget_s = parse_budget(budget_s)
    if n_samples < 2:
        raise ValueError(f"n_samples must be >= 2; got {n_samples}")
    if data not in list_datasets() and Path(data).exists():
        data = str(Path(data).resolve())  # config.yaml keeps absolute paths
    data_opts = dict(data_opts or {})
    if "split" in data_opts:
        raise ValueError("--data-opt split: the split is not a data option; compare uses train, val and test")
    train_over, model_over = split_family_settings(families, settings)
    load_dataset(data, "train", **data_opts)  # a bad --data or --data-opt fails before any folder is made
    root = Path(out_dir) if out_dir is not None else Path(f"compare-{Path(data.rstrip('/')).stem}")
    out_path = Path(out) if out is not None else root / "compare.md"
    _check_table_files(out_path)  # before minutes of training, not after
    prog = _Progress(progress)
    for note in notes:
        prog.say(f"note: {note}")
    records, skipped, done_folders, kinds = [], {}, [], []
    for i, fam in enumerate(families, 1):
        folder = root / fam
        prog.say(f"[{i}/{len(families)}] {fam} on {data}, budget {format_seconds(budget_s)}")
        try:
            state = train_family(
                fam,
                data,
                folder,
                budget_s,
                data_opts=data_opts,
                train_settings=train_over[fam],
                model_settings=model_over[fam],
                seed=seed,
                progress=prog,
            )
        except (ValueError, TypeError, NotImplementedError) as e:
            if models is not None:  # asked for by name: its failure is the user's to see
                raise
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            skipped[fam] = reason
            notes.append(f"{fam} skipped: {reason}")
            prog.say(f"  {fam}: skipped ({reason})")
            continue
        if not state["trained"]:
            prog.say(f"  {fam}: already trained ({state['step']} steps in {format_seconds(state['elapsed_s'])})")
        else:
            prog.say(f"  {fam}: trained {state['step']} steps in {format_seconds(state['elapsed_s'])}")
        ev_file = folder / EVAL_FILE
        ev = None
        if ev_file.exists() and not state["trained"]:
            try:
                ev = json.loads(ev_file.read_text())
            except json.JSONDecodeError:
                ev = None
            if not isinstance(ev, dict) or ev.get("compare_eval") != eval_setup(n_samples, iwae_k, features, seed):
                ev = None  # damaged, or measured with other settings
        if not state["trained"] and state.get("budget_s") != budget_s:
            notes.append(
                f"{fam} was trained for {format_seconds(state['elapsed_s'])} in an earlier compare "
                f"(budget {format_seconds(state.get('budget_s') or 0)}), not {format_seconds(budget_s)}"
            )
        if ev is None:
            prog.say(f"  {fam}: evaluating on the test split")
            t0 = time.monotonic()
            ev = evaluate_family(
                folder, data, data_opts=data_opts, n_samples=n_samples, iwae_k=iwae_k, features=features, seed=seed
            )
            prog.say(f"  {fam}: evaluated in {format_seconds(time.monotonic() - t0)}")
        records.append(family_row(fam, folder, state, ev))
        done_folders.append(folder)
        kinds.append(str(ev.get("likelihood_kind", "none")))
    if not records:
        raise ValueError(f"no family could be trained on {data!r}: " + "; ".join(notes))
    ref = [r["fid_reference"] for r in records if r.get("fid_reference") is not None]
    if ref:
        notes.append(f"FID of held-out real data against train data at {n_samples} samples (the floor): {ref[0]:.4g}")
    null = [r["near_copy_null_rate"] for r in records if r.get("near_copy_null_rate") is not None]
    if null:
        notes.append(f"near-copy rate of fresh data (the null rate): {null[0]:.3g}")
    if any(r["inference"] == "bound" for r in records):
        notes.append(
            "bound models: test bits/dim is an upper bound (the IWAE bound where the model has one, else the ELBO; "
            "bpd_source in the .csv)"
        )
    header = [label for _, label in FAMILY_COLUMNS]
    rows = [[fmt(r[k]) for k, _ in FAMILY_COLUMNS] for r in records]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    md = [
        f"Families on {data} (test split), {format_seconds(budget_s)} of training each, seed {seed}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---", "---"] + ["---:"] * (len(header) - 2)) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]
    if notes:
        md += ["", *(f"- {n}" for n in notes)]
    out_path.write_text("\n".join(md) + "\n")
    keys = [k for k, _ in FAMILY_COLUMNS] + list(FAMILY_EXTRA)
    csv_path = out_path.with_suffix(".csv")
    with open(csv_path, "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(keys)
        for r in records:
            wr.writerow(["" if r.get(k) is None else r.get(k) for k in keys])
    json_path = out_path.with_suffix(".json")
    summary = {
        "data": data,
        "data_opts": data_opts,
        "budget_s": budget_s,
        "seed": seed,
        "n_samples": n_samples,
        "families": records,
        "skipped": skipped,
        "notes": notes,
    }
    json_path.write_text(json.dumps(finite_or_null(summary), indent=2) + "\n")
    written = [out_path, csv_path, json_path]
    png = sample_panel(
        [r["family"] for r in records], done_folders, kinds, [r["steps"] for r in records], out_path.with_suffix(".png")
    )
    if png is not None:
        written.append(png)
    return {"header": header, "rows": rows, "records": records, "written": written, "notes": notes, "skipped": skipped}
