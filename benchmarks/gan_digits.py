"""DCGAN and WGAN-GP on digits: sample quality after a fixed number of steps (not a test; run by hand).

Both train through genlab.Trainer (batch 64, the paper optimizer settings from each model's
optimizer_settings(), validation every 500 steps on the 350 validation digits by val_fd, the best
weights kept) and are then evaluated by genlab.evaluate on the 447 test digits with 1,000 samples
and the cached local digits classifier as feature network: FID (and the real-vs-real floor
fid_reference: 1,000 training digits against the test digits), KID, precision/recall, density/
coverage, classes covered, plus training steps/s (wall clock, including validation).

    .venv/bin/python benchmarks/gan_digits.py [--steps 3000] [--threads 1]
Writes benchmarks/results/gan_digits.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

import genlab
from genlab import TrainConfig, Trainer
from genlab.checkpoint import load_tensors

MODELS = {"dcgan": {}, "wgan_gp": {}}
METRICS = ["fid", "kid", "pr", "dc", "classes"]


def run(name: str, kwargs: dict, steps: int, seed: int, out: Path) -> dict:
    train, val, test = (genlab.load_dataset("digits", s) for s in ("train", "val", "test"))
    torch.manual_seed(seed)
    model = genlab.build_model(name, train.spec, **kwargs)
    cfg = TrainConfig(
        steps=steps, batch_size=64, seed=seed, eval_every=500, sample_every=0, checkpoint_every=0, progress=False
    )
    trainer = Trainer(model, train, val, cfg, out_dir=out / name)
    t0 = time.perf_counter()
    summary = trainer.fit()
    seconds = time.perf_counter() - t0
    tensors, _ = load_tensors(out / name / "best.safetensors")  # the best validation weights
    model.load_state_dict(tensors)
    res = genlab.evaluate(model.eval(), test, METRICS, n_samples=1000, reference=train, seed=seed)
    keep = [
        "fid",
        "fid_reference",
        "kid_mean",
        "kid_std",
        "precision",
        "recall",
        "density",
        "coverage",
        "classes_covered",
        "classes_total",
        "class_tv",
        "features",
        "feature_classifier_accuracy",
    ]
    return {
        "model": name,
        "kwargs": kwargs,
        "steps": steps,
        "best_step": summary["best_step"],
        "best_val_fd": summary["best"],
        "train_seconds": seconds,
        "steps_per_s": steps / seconds,
        **{k: res[k] for k in keep},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 is fastest for these small nets)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "gan_digits.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, kw in MODELS.items():
            rows.append(run(name, kw, args.steps, args.seed, Path(tmp)))
            print(json.dumps(rows[-1]))
    result = {
        "benchmark": "gan_digits",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "threads": args.threads,
        "results": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
