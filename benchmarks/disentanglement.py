"""Disentanglement of VAE, beta-VAE, beta-TCVAE and FactorVAE on ``shapes`` under one step budget
(issue 13). Not a test; run by hand:

    python benchmarks/disentanglement.py                         # 32x32, 1,500 steps, seed 0 (CPU, ~15 min)
    python benchmarks/disentanglement.py --size 64 --steps 20000 --seeds 0 1 2   # the published dSprites setting

Every model: the default conv encoder/decoder, ``z_dim=10``, batch 64, Adam 1e-3, the same seed;
scores from ``genlab.evaluate.disentanglement_metrics`` (MIG, DCI, SAP, and the BetaVAE / FactorVAE
scores with the shapes simulator at its small default budget) on 2,000 test images, beside the
held-out ELBO in bits/dim. Published dSprites ranges for orientation (Chen et al. 2018, MIG: VAE
~0.06, beta-TCVAE ~0.20; Locatello et al. 2019, wide ranges over seeds) come from far longer training;
the budget here is stated in the output.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import torch

import genlab
from genlab.evaluate import disentanglement_metrics, evaluate
from genlab.train import TrainConfig

HERE = Path(__file__).resolve().parent
MODELS = {
    "vae": {},
    "beta-vae (beta 4)": {"beta": 4.0},
    "betatcvae": {},
    "factorvae": {},
}
SCORES = ("mig", "sap", "dci_disentanglement", "betavae_score", "factorvae_score")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--n-train", type=int, default=20000)
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", default=str(HERE / "runs" / "disentanglement"))
    ap.add_argument("--tag", default="", help="suffix of the result files (results/disentanglement<tag>.md/.json)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tr = genlab.load_dataset("shapes", "train", n=args.n_train, size=args.size)
    te = genlab.load_dataset("shapes", "test", n=args.n_test, size=args.size)
    rows: dict[str, list[dict]] = {}
    for label, opts in MODELS.items():
        name = "vae" if label.startswith("beta-vae") else label
        for seed in args.seeds:
            torch.manual_seed(seed)
            model = genlab.build_model(name, tr.spec, z_dim=10, **opts)
            out = Path(args.runs) / f"{label.split()[0]}-{seed}"
            if out.exists():
                shutil.rmtree(out)
            cfg = TrainConfig(
                steps=args.steps, batch_size=64, lr=1e-3, seed=seed, eval_every=0, sample_every=0, progress=False
            )
            t0 = time.perf_counter()
            genlab.Trainer(model, tr, None, cfg, out_dir=out).fit()
            secs = time.perf_counter() - t0
            model.eval()
            res = disentanglement_metrics(model, te, seed=seed, out_dir=out)
            res.update(evaluate(model, te, ["likelihood"], seed=seed))
            res["train_s"] = round(secs, 1)
            rows.setdefault(label, []).append(res)
            print(label, seed, {k: round(float(res[k]), 3) for k in (*SCORES, "elbo_bpd") if k in res}, flush=True)
    lines = [
        "# Disentanglement on shapes",
        "",
        f"Command: `python benchmarks/disentanglement.py --size {args.size} --steps {args.steps} --seeds "
        f"{' '.join(map(str, args.seeds))}` (torch {torch.__version__}, {args.threads} thread(s)); "
        f"{args.n_train} training images at {args.size}x{args.size}, z_dim 10, batch 64, Adam 1e-3; scores on "
        f"{args.n_test} test images; median over seeds.",
        "",
        "| model | MIG | SAP | DCI dis. | BetaVAE | FactorVAE | ELBO bits/dim | train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, rs in rows.items():

        def med(key: str, rs: list[dict] = rs) -> str:
            vals = [float(r[key]) for r in rs if key in r]
            return f"{statistics.median(vals):.3f}" if vals else "-"

        lines.append(f"| {label} | " + " | ".join(med(k) for k in (*SCORES, "elbo_bpd", "train_s")) + " |")
    md = "\n".join(lines) + "\n"
    (HERE / "results" / f"disentanglement{args.tag}.md").write_text(md)
    (HERE / "results" / f"disentanglement{args.tag}.json").write_text(
        json.dumps({"args": vars(args), "rows": rows}, indent=1, default=str) + "\n"
    )
    print(md)


if __name__ == "__main__":
    main()
