"""Attribute transfer on captions with the sentence VAE (issue 13): change a caption's colour, shape or
scale in latent space and parse the result back. Not a test; run by hand:

    python benchmarks/sentence_transfer.py                 # betas 1, 0.3, 0.1; seeds 0-2 (CPU, ~8 min)

Every run: ``sentencevae`` on ``shapes-captions`` captions (``source=text``), z_dim 16, embed 64,
hidden 128, word dropout 0.25, KL weight annealed over 500 steps up to ``beta``, 1,500 steps of 64,
Adam 2e-3. Measured on 500 test captions with ``genlab.evaluate.transfer_metrics``: ``swap`` sets the
3 latents most informative about the factor to the target value's mean code (2,000 training captions),
``shift`` adds the difference of the target's and the source's mean codes. A transfer succeeds when
the parsed caption has the target value and every other captioned factor unchanged. Also the
held-out ELBO (nats per caption; the exact log-likelihood of the uniform caption distribution is
-log 1134 = -7.03) and the KL term, which shows the posterior collapse at beta 1.
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
from genlab.evaluate import TRANSFER_FACTORS, evaluate, transfer_metrics
from genlab.train import TrainConfig

HERE = Path(__file__).resolve().parent


def table(rows: dict[str, list[dict]], args: argparse.Namespace) -> str:
    """The Markdown table of the median (min, max) of each column over seeds."""
    cols = [(f"transfer/{f}/{m}/success", f"{f} {m}") for m in ("swap", "shift") for f in TRANSFER_FACTORS]
    lines = [
        "# Attribute transfer on captions (sentencevae)",
        "",
        f"Command: `python benchmarks/sentence_transfer.py --betas {' '.join(f'{b:g}' for b in args.betas)} "
        f"--seeds {' '.join(map(str, args.seeds))}` (torch {torch.__version__}, {args.threads} thread(s)); "
        f"{args.steps} steps of 64, warm-up 500; success rates on {args.n_test} test captions "
        "(chance of hitting the target value: shape 1/2, scale 1/5, colour 1/6); median [min, max] over seeds.",
        "",
        "| beta | ELBO nats | KL nats | reconstructed | " + " | ".join(c for _, c in cols) + " | train s |",
        "|---" * (len(cols) + 5) + "|",
    ]
    for beta, rs in rows.items():

        def cell(key: str, rs: list[dict] = rs, digits: int = 2) -> str:
            vals = [float(r[key]) for r in rs]
            med, lo, hi = (f"{v:.{digits}f}" for v in (statistics.median(vals), min(vals), max(vals)))
            return med if len(vals) == 1 else f"{med} [{lo}, {hi}]"

        keys = ["elbo_nats", "kl_nats", "transfer/reconstructed", *(k for k, _ in cols)]
        lines.append(f"| {beta} | " + " | ".join(cell(k) for k in keys) + f" | {cell('train_s', digits=0)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--betas", type=float, nargs="+", default=[1.0, 0.3, 0.1])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--n-test", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", default=str(HERE / "runs" / "sentence_transfer"))
    ap.add_argument("--render", action="store_true", help="only rewrite the .md from results/sentence_transfer.json")
    args = ap.parse_args()
    if args.render:
        saved = json.loads((HERE / "results" / "sentence_transfer.json").read_text())
        md = table(saved["rows"], argparse.Namespace(**saved["args"]))
        (HERE / "results" / "sentence_transfer.md").write_text(md)
        print(md)
        return
    torch.set_num_threads(args.threads)
    tr = genlab.load_dataset("shapes-captions", "train")
    te = genlab.load_dataset("shapes-captions", "test")
    rows: dict[str, list[dict]] = {}
    for beta in args.betas:
        for seed in args.seeds:
            torch.manual_seed(seed)
            model = genlab.build_model("sentencevae", tr.spec, source="text", warmup_steps=500, beta=beta)
            out = Path(args.runs) / f"beta{beta:g}-{seed}"
            if out.exists():
                shutil.rmtree(out)
            cfg = TrainConfig(
                steps=args.steps, batch_size=64, lr=2e-3, seed=seed, eval_every=0, sample_every=0, progress=False
            )
            t0 = time.perf_counter()
            genlab.Trainer(model, tr, None, cfg, out_dir=out).fit()
            secs = time.perf_counter() - t0
            model.eval()
            res = transfer_metrics(model, tr, te, n=args.n_test, seed=seed)
            with torch.no_grad():
                mu, logvar = model.posterior(te.tensors["text"][:2000])
                res["kl_nats"] = float(0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1).mean())
            res.update(evaluate(model, te, ["likelihood"], seed=seed))
            res["train_s"] = round(secs, 1)
            rows.setdefault(f"{beta:g}", []).append(res)
            brief = {k.removeprefix("transfer/"): round(float(v), 3) for k, v in res.items() if k.endswith("success")}
            print(f"beta {beta:g} seed {seed}: elbo {res['elbo_nats']:.2f} kl {res['kl_nats']:.2f}", brief, flush=True)
    md = table(rows, args)
    (HERE / "results" / "sentence_transfer.md").write_text(md)
    (HERE / "results" / "sentence_transfer.json").write_text(
        json.dumps({"args": vars(args), "rows": rows}, indent=1, default=str) + "\n"
    )
    print(md)


if __name__ == "__main__":
    main()
