"""Flows on digits (issue 17): uniform vs variational dequantization, and the importance-weighted
dequantization bound, held out (test split, bits/dim of the discrete data).

    genlab train glow --data digits --out RUN --set threads=1 [--set dequantization=variational] ...
    python benchmarks/flows_digits.py RUN [RUN ...] [--k 1,16] [--label NAME] [--step-time]

For every run folder: the model's settings, the validation curve (metrics.jsonl: val_bpd every
``eval_every`` steps, to read overfitting from), the best-validation step, and on the test split
the bits/dim of log_prob(x, k=K) for each K: K = 1 is the usual one-draw dequantization bound, K > 1
the importance-weighted bound over K noise draws (tighter; both bound the discrete bits/dim from
above). Results are merged into benchmarks/results/flows_digits.json by run label, with the load
average and the seconds each evaluation took (1 torch thread).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from genlab.data import load_dataset
from genlab.metrics.likelihood import likelihood_metrics
from genlab.runs import load_run

RESULTS = Path(__file__).parent / "results" / "flows_digits.json"


def curve(run: Path) -> list[tuple[int, float]]:
    """(step, val_bpd) pairs of a run's metrics.jsonl."""
    out = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("split") == "val" and "val_bpd" in rec:
            out.append((int(rec["step"]), round(float(rec["val_bpd"]), 4)))
    return out


def measure(run: Path, ks: list[int], seed: int = 0) -> dict:
    model, config, spec = load_run(run)
    test = load_dataset(config.get("data", spec.name), split="test", **config.get("data_opts", {}))
    settings = dict(config.get("model_kwargs", {}))
    train = config.get("train", {})
    vals = curve(run)
    best = min(vals, key=lambda sv: sv[1]) if vals else None
    res: dict = {
        "run": str(run),
        "family": type(model).__name__,
        "model_settings": settings,
        "train_settings": {k: train.get(k) for k in ("steps", "lr", "weight_decay", "schedule", "batch_size", "seed")},
        "val_curve": vals,
        "best_val": {"step": best[0], "val_bpd": best[1]} if best else None,
        "final_val_bpd": vals[-1][1] if vals else None,
        "n_test": len(test),
        "test": {},
    }
    for k in ks:
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        with torch.no_grad():
            m = likelihood_metrics(model, test, k=k, batch_size=max(1, 512 // k))
        res["test"][f"k={k}"] = {
            "bpd": round(m["bpd"], 4),
            "nll_nats": round(m["nll"], 3),
            "seconds": round(time.perf_counter() - t0, 2),
        }
    return res


def step_times(families: list[str], repeats: int = 7, steps: int = 5) -> dict:
    """Median seconds per training step (batch 128 of digits, forward + backward + AdamW, 1 thread) of
    each family with uniform vs variational dequantization, timed alternately (A B A B ...)."""
    import genlab

    train = load_dataset("digits", split="train")
    batch = train[slice(0, 128)]
    out = {}
    for fam in families:
        models = {}
        for deq in ("uniform", "variational"):
            torch.manual_seed(0)
            m = genlab.build_model(fam, train.spec, dequantization=deq)
            m.train()
            models[deq] = (m, torch.optim.AdamW(m.parameters(), 1e-3))
        times: dict[str, list[float]] = {d: [] for d in models}
        for r in range(repeats + 1):  # the first round warms up and is dropped
            for deq, (m, opt) in models.items():
                t0 = time.perf_counter()
                for _ in range(steps):
                    opt.zero_grad()
                    m.loss(batch)["loss"].backward()
                    opt.step()
                if r:
                    times[deq].append((time.perf_counter() - t0) / steps)
        med = {d: sorted(t)[len(t) // 2] for d, t in times.items()}
        out[fam] = {
            "s_per_step": {d: round(v, 4) for d, v in med.items()},
            "variational_over_uniform": round(med["variational"] / med["uniform"], 2),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="*")
    ap.add_argument("--step-time", action="store_true", help="time a training step, uniform vs variational")
    ap.add_argument("--k", default="1,16", help="comma-separated noise draws per example")
    ap.add_argument("--label", action="append", help="label per run (default: the folder name)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ks = [int(k) for k in args.k.split(",")]
    labels = args.label or [Path(r).name for r in args.runs]
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"runs": {}}
    for label, run in zip(labels, args.runs):
        res = measure(Path(run), ks)
        res["loadavg"] = [round(x, 2) for x in os.getloadavg()]
        data["runs"][label] = res
        print(label, res["best_val"], res["final_val_bpd"], res["test"], "load", res["loadavg"], flush=True)
    if args.step_time:
        data["step_time"] = step_times(["glow", "realnvp"])
        data["step_time"]["loadavg"] = [round(x, 2) for x in os.getloadavg()]
        print(data["step_time"], flush=True)
    data["date"] = time.strftime("%Y-%m-%d", time.gmtime())
    data["machine"] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": 1,
        "cpus": os.cpu_count(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    main()
