"""genlab vs pythae: the same MLP VAE on digits, timed in one run (not a test; run by hand).

Both libraries train the same network (encoder 64-256-256-(mu, log-var of 16), decoder
16-256-256-64 Bernoulli logits, ReLU) with Adam(W) lr 1e-3 (no weight decay), batch 128, the same
number of optimizer steps, each through its own trainer as a user would run it: genlab.Trainer
(evaluation, samples, checkpoints and progress bar off) and pythae's BaseTrainer (no eval set, no
callbacks). Only the training call is timed. Runs alternate between the libraries so machine noise
hits both; the median of the repeats is reported. Held-out ELBO: mean over the 447 test digits
of log Bernoulli(x | logits) - KL(q || N(0, I)), averaged over 10 posterior draws, same formula
for both. A third row trains genlab with ``precision="bf16"`` (bfloat16 autocast; pythae's
trainer has no CPU mixed precision), reported apart from the like-for-like fp32 ratio.

Run in the benchmark venv (pythae + torch 2.13.0 CPU + genlab installed editable):
    .venv-bench/bin/python benchmarks/vae_vs_pythae.py [--steps 2000] [--repeats 5]
Writes benchmarks/results/vae_vs_pythae.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))

from pythae_side import load_digits_split, train_pythae_vae  # noqa: E402

import genlab  # noqa: E402
from genlab import TrainConfig, Trainer  # noqa: E402

HIDDEN, Z_DIM, BATCH, LR = 256, 16, 128, 1e-3


@torch.no_grad()
def genlab_elbo(model, x_test: torch.Tensor, n_samples: int = 10, seed: int = 0) -> float:
    """The same estimator as pythae_side.bernoulli_elbo_nats, on genlab's model."""
    model.eval()
    mu, logvar = model.posterior(x_test)
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(-1)
    gen = torch.Generator().manual_seed(seed)
    total = torch.zeros(x_test.shape[0], dtype=torch.float64)
    for _ in range(n_samples):
        z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=gen)
        logits = model.decoder_params(z)[:, 0].flatten(1)  # decode() gives the Bernoulli mean, not logits
        rec = -F.binary_cross_entropy_with_logits(logits, x_test.flatten(1), reduction="none").sum(-1)
        total += (rec - kl).double()
    return float((total / n_samples).mean())


def train_genlab(steps: int, seed: int = 0, precision: str = "fp32") -> dict:
    train = genlab.load_dataset("digits", "train")
    test = genlab.load_dataset("digits", "test")
    torch.manual_seed(seed)
    model = genlab.build_model(
        "vae", train.spec, z_dim=Z_DIM, hidden=(HIDDEN, HIDDEN), arch="mlp", likelihood="bernoulli"
    )
    cfg = TrainConfig(
        steps=steps,
        batch_size=BATCH,
        lr=LR,
        weight_decay=0.0,
        seed=seed,
        eval_every=0,
        sample_every=0,
        checkpoint_every=0,
        progress=False,
        device="cpu",
        precision=precision,
    )
    trainer = Trainer(model, train, None, cfg, out_dir=None)
    t0 = time.perf_counter()
    trainer.fit()
    seconds = time.perf_counter() - t0
    return {
        "steps": trainer.step,
        "seconds": seconds,
        "steps_per_s": trainer.step / seconds,
        "test_elbo_nats": genlab_elbo(model, test.tensors["x"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads for both libraries (0: torch's default)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "vae_vs_pythae.json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import pythae

    x_tr, x_te = load_digits_split()
    runs: dict[str, list[dict]] = {"genlab": [], "pythae": [], "genlab_bf16": []}
    train_genlab(50)  # warm-up: first-call costs (thread pools, allocator) off the clock for both
    train_pythae_vae(x_tr, x_te, hidden=HIDDEN, z_dim=Z_DIM, batch_size=BATCH, steps=16, lr=LR)
    for r in range(args.repeats):
        runs["genlab"].append(train_genlab(args.steps, seed=r))
        runs["pythae"].append(
            train_pythae_vae(x_tr, x_te, hidden=HIDDEN, z_dim=Z_DIM, batch_size=BATCH, steps=args.steps, lr=LR, seed=r)
        )
        runs["genlab_bf16"].append(train_genlab(args.steps, seed=r, precision="bf16"))
        print(
            f"repeat {r}: " + ", ".join(f"{k} {v[-1]['steps_per_s']:.1f} steps/s" for k, v in runs.items()), flush=True
        )
    summary = {}
    for lib, rs in runs.items():
        summary[lib] = {
            "steps": rs[0]["steps"],
            "steps_per_s_median": statistics.median(r["steps_per_s"] for r in rs),
            "steps_per_s_all": [round(r["steps_per_s"], 1) for r in rs],
            "test_elbo_nats_median": statistics.median(r["test_elbo_nats"] for r in rs),
            "test_elbo_nats_all": [round(r["test_elbo_nats"], 3) for r in rs],
        }
    ratio = summary["genlab"]["steps_per_s_median"] / summary["pythae"]["steps_per_s_median"]
    result = {
        "benchmark": "MLP VAE on sklearn digits (64-256-256-16, Bernoulli), Adam lr 1e-3, batch 128",
        "command": (
            f"{os.path.relpath(sys.executable)} benchmarks/vae_vs_pythae.py"
            f" --steps {args.steps} --repeats {args.repeats} --threads {args.threads}"
        ),
        "date": time.strftime("%Y-%m-%d"),
        "machine": (
            f"{platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
        ),
        "versions": {
            "genlab": genlab.__version__,
            "pythae": pythae.__version__ if hasattr(pythae, "__version__") else "0.1.2",
        },
        "speedup_genlab_over_pythae": ratio,
        "speedup_genlab_bf16_over_pythae": summary["genlab_bf16"]["steps_per_s_median"]
        / summary["pythae"]["steps_per_s_median"],
        **summary,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"genlab {summary['genlab']['steps_per_s_median']:.1f} "
        f"steps/s (test ELBO {summary['genlab']['test_elbo_nats_median']:.2f} nats)"
    )
    print(
        f"pythae {summary['pythae']['steps_per_s_median']:.1f} "
        f"steps/s (test ELBO {summary['pythae']['test_elbo_nats_median']:.2f} nats)"
    )
    print(
        f"genlab bf16 autocast {summary['genlab_bf16']['steps_per_s_median']:.1f} "
        f"steps/s (test ELBO {summary['genlab_bf16']['test_elbo_nats_median']:.2f} nats)"
    )
    print(
        f"speed ratio genlab/pythae = {ratio:.2f}x (fp32), "
        f"{result['speedup_genlab_bf16_over_pythae']:.2f}x (genlab bf16); wrote {args.out}"
    )


if __name__ == "__main__":
    main()
