"""Held-out bits/dim on digits: PixelCNN categorical vs discretized logistic mixture output, and the
VAE's default decoder vs the logistic-mixture decoder vs IWAE training (k = 5), with the CLI.

Each configuration is ``genlab train MODEL --data digits --set threads=1 ...`` then
``genlab eval RUN --split test --metrics likelihood[,iwae]`` (IWAE-100 for the VAEs); the test
bits/dim and the commands go to ``benchmarks/results/likelihood_digits.json`` (merged with what is
there, so runs can be added one at a time), with the load average seen during the runs. Baselines
on the same split (uniform 4.09, independent categorical 2.40, linear autoregressive 2.09) come
from ``benchmarks/baselines.py``.

    python benchmarks/likelihood_digits.py                  # every configuration, 2 at a time
    python benchmarks/likelihood_digits.py --only pixelcnn-mix --steps 3000
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "likelihood_digits.json"

#: name -> (model, extra --set options); steps are the model's default unless --steps is given.
CONFIGS: dict[str, tuple[str, list[str]]] = {
    "pixelcnn-categorical": ("pixelcnn", []),
    "pixelcnn-mix": ("pixelcnn", ["output=logistic_mixture", "mixtures=5"]),
    "pixelcnn-categorical-cos": ("pixelcnn", ["schedule=cosine"]),
    "pixelcnn-mix-cos": ("pixelcnn", ["output=logistic_mixture", "mixtures=5", "schedule=cosine"]),
    # regularized: 1,000 digits overfit a PixelCNN within 1,000 steps at the constant learning rate
    "pixelcnn-categorical-drop": ("pixelcnn", ["dropout=0.2", "schedule=cosine"]),
    "pixelcnn-mix-drop": ("pixelcnn", ["output=logistic_mixture", "mixtures=5", "dropout=0.2", "schedule=cosine"]),
    "vae-default": ("vae", []),
    "vae-mix": ("vae", ["likelihood=logistic_mixture", "mixtures=5"]),
    "vae-iwae5": ("vae", ["iwae_k=5"]),
    "vae-mix-iwae5": ("vae", ["likelihood=logistic_mixture", "mixtures=5", "iwae_k=5"]),
    # toward the 1.70 target (2026-12-03): weight averaging, then wider/deeper nets with heavy dropout
    "pixelcnn-ema": ("pixelcnn", ["steps=2000", "schedule=cosine", "ema=0.999"]),
    "pixelcnn-wide-drop": (
        "pixelcnn",
        ["channels=64", "dropout=0.3", "steps=3000", "schedule=cosine", "ema=0.999"],
    ),
}
DOCS = ROOT.parent / "docs"  # the PNG the README shows


def curves(run: Path) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(step, bits/dim) of a run's ``metrics.jsonl``: validation, and the training batches' mean
    over each 100 steps (with dropout, if the run has it)."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    val = [(r["step"], r["val_bpd"]) for r in rows if r.get("split") == "val" and "val_bpd" in r]
    buckets: dict[int, list[float]] = {}
    for r in rows:
        if r.get("split") == "train" and "bpd" in r:
            buckets.setdefault(-(-r["step"] // 100) * 100, []).append(r["bpd"])
    return val, [(step, sum(v) / len(v)) for step, v in sorted(buckets.items())]


def run_one(name: str, steps: int | None, out_root: Path, reuse: bool = False) -> dict:
    """Train (unless ``reuse`` and the run folder holds trained weights) and evaluate one
    configuration; returns its record (commands, seconds, test metrics, validation curve)."""
    model, sets = CONFIGS[name]
    tag = name if steps is None else f"{name}-{steps}"
    run = out_root / tag
    train = ["genlab", "train", model, "--data", "digits", "--out", str(run), "--overwrite", "--quiet"]
    train += ["--set", "threads=1"] + [a for s in sets for a in ("--set", s)]
    if steps is not None:
        train += ["--set", f"steps={steps}"]
    metrics = "likelihood,iwae" if model == "vae" else "likelihood"
    ev = ["genlab", "eval", str(run), "--split", "test", "--metrics", metrics, "--out", str(run / "eval-test.json")]
    t0 = time.time()
    trained = not (reuse and (run / "best.safetensors").exists())
    if trained:
        subprocess.run(train, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    t1 = time.time()
    subprocess.run(ev, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    result = json.loads((run / "eval-test.json").read_text())
    val_curve, train_curve = curves(run)
    keep = {k: v for k, v in result.items() if any(w in k for w in ("bpd", "nats", "iwae_k", "n_examples"))}
    return {
        "train": " ".join(map(shlex.quote, train)),
        "eval": " ".join(map(shlex.quote, ev)),
        "train_seconds": round(t1 - t0, 1) if trained else None,
        "val_curve": val_curve,
        "train_curve": train_curve,
        "loadavg_after": os.getloadavg(),
        "test": keep,
        "test_bpd": round(keep.get("iwae_bpd", keep.get("log_prob_bpd", float("nan"))), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: the model's own)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out-root", default=str(ROOT / "runs" / "likelihood_digits"))
    ap.add_argument("--reuse", action="store_true", help="evaluate run folders already trained (same commands)")
    ap.add_argument("--plot", action="store_true", help="only redraw the PNG from the results file")
    args = ap.parse_args()
    if args.plot:
        plot(json.loads(RESULTS.read_text())["runs"])
        return
    out_root = Path(args.out_root)
    load_before = os.getloadavg()
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {n: pool.submit(run_one, n, args.steps, out_root, args.reuse) for n in args.only}
        records = {}
        for n, f in futures.items():
            try:
                records[n if args.steps is None else f"{n}-{args.steps}"] = f.result()
            except subprocess.CalledProcessError as e:  # keep the others
                print(f"{n}: failed: {e}", file=sys.stderr)
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"runs": {}}
    data["runs"].update(records)
    data.setdefault("loadavg", []).append({"before": load_before, "after": os.getloadavg(), "jobs": args.jobs})
    data["baselines_test_bpd"] = {"uniform": 4.09, "independent_categorical": 2.40, "linear_autoregressive": 2.09}
    data["date"] = time.strftime("%Y-%m-%d")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=2) + "\n")
    plot(data["runs"])
    for n, r in records.items():
        print(n, r["train_seconds"], "s", r["test"])


def plot(runs: dict) -> None:
    """``docs/likelihood_digits-pixelcnn.png``: validation bits/dim of the PixelCNN runs that
    recorded their curve, with each one's test figure, the default run's training batches, the
    linear AR baseline and the target."""
    from genlab.viz import plot_curves

    series = {
        f"{name} (test {r['test_bpd']:.3f})": r["val_curve"]
        for name, r in runs.items()
        if name.startswith("pixelcnn") and r.get("val_curve")
    }
    for name, r in runs.items():
        if name == "pixelcnn-categorical" and r.get("train_curve"):
            series[f"{name}, training batches"] = r["train_curve"]
    last = max(x for c in series.values() for x, _ in c)
    series["linear AR baseline (test) 2.09"] = [(0, 2.09), (last, 2.09)]
    series["target 1.70"] = [(0, 1.70), (last, 1.70)]
    plot_curves(
        series,
        DOCS / "likelihood_digits-pixelcnn.png",
        "PixelCNN on digits: validation bits/dim (and the default run's training batches)",
        ylabel="bits/dim",
    )


if __name__ == "__main__":
    main()
