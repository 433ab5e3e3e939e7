"""Cross-modal coherence of the multimodal VAEs on ``shapes-av`` (image + caption + audio).

Not a test (it takes minutes): run by hand. Each of ``mvae``, ``mmvae``, ``mopoe`` and ``mmvaeplus``
is trained through the public Python API (:func:`genlab.load_dataset`, :func:`genlab.build_model`,
:class:`genlab.Trainer`) with the same data, sizes, batch and steps, then evaluated with
``genlab.evaluate(model, test, metrics=["coherence", "likelihood"])``: the held-out joint bound
(nats), the coherence of every direction (each ordered pair of modalities and every multi-source
set -> the rest) with its chance level, joint coherence, and the accuracy of each modality's factor
reader (the ceiling of the coherence measured with it).

    python benchmarks/multimodal_coherence.py --steps 1000 --n-eval 500

Results go to benchmarks/results/multimodal_coherence.json and .md; with ``--images`` the last
run's translation/samples pictures of up to ``--max-images`` files (under 200 kB each) are copied
to docs/ as ``multimodal-<model>-<name>.png`` (docs/*.png is the only PNG path git keeps). Runs are
written under benchmarks/runs/ (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

import torch

import genlab
from genlab.train import TrainConfig

HERE = Path(__file__).resolve().parent
MODELS = ("mvae", "mmvae", "mopoe", "mmvaeplus")
MAX_PNG_BYTES = 200_000


def run_one(name: str, train, test, args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    model = genlab.build_model(name, train.spec, **args.model_opts)
    n_params = sum(p.numel() for p in model.parameters())
    out_dir = Path(args.runs) / name
    if out_dir.exists():
        shutil.rmtree(out_dir)
    config = TrainConfig(
        steps=args.steps,
        batch_size=args.batch,
        seed=args.seed,
        eval_every=args.steps,  # one validation pass at the end only
        sample_every=args.steps,  # pictures at the end only
        checkpoint_every=args.steps,
        log_every=50,
        max_eval_examples=args.n_eval,
        lr=args.lr,
        device=args.device,
        threads=args.threads,
        progress=False,
    )
    trainer = genlab.Trainer(model, train, None, config, out_dir=out_dir)
    trainer.write_config("shapes-av", {"size": args.size, "seed": args.seed})  # so `genlab eval` loads this data
    t0 = time.perf_counter()
    summary = trainer.fit()
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ev = genlab.evaluate(
        model,
        test,
        metrics=["coherence", "likelihood"],
        n_samples=args.n_eval,
        reference=train,
        seed=args.seed,
    )
    eval_s = time.perf_counter() - t0
    figures = make_figures(model, test, out_dir, args.seed)
    steps = int(summary.get("step", args.steps)) if isinstance(summary, dict) else args.steps
    row = {
        "model": name,
        "params": n_params,
        "steps": steps,
        "stopped": summary.get("stopped") if isinstance(summary, dict) else None,
        "train_seconds": round(train_s, 2),
        "steps_per_s": round(steps / train_s, 3) if train_s > 0 else None,
        "eval_seconds": round(eval_s, 2),
        "joint_bound_nats": ev.get("elbo_nats", ev.get("log_prob_nats")),
        "coherence": {
            k[len("coherence/") :]: v for k, v in ev.items() if k.startswith("coherence/") and k.count("/") == 1
        },
        "per_factor": {
            k[len("coherence/") :]: v for k, v in ev.items() if k.startswith("coherence/") and k.count("/") == 2
        },
        "chance": {k[len("chance/") :]: v for k, v in ev.items() if k.startswith("chance/") and k.count("/") == 1},
        "reader_accuracy": {
            k[len("reader_accuracy/") :]: v
            for k, v in ev.items()
            if k.startswith("reader_accuracy/") and k.count("/") == 1
        },
        "eval": ev,
        "figures": figures,
    }
    print(
        f"{name}: {steps} steps in {train_s:.1f}s ({row['steps_per_s']} steps/s), eval {eval_s:.1f}s, "
        f"bound {row['joint_bound_nats']}, joint coherence {row['coherence'].get('joint')}",
        flush=True,
    )
    return row


def make_figures(model, data, out_dir: Path, seed: int) -> list[str]:
    """The end-of-training pictures ``genlab train`` draws (samples.png, translation.png, ...); the
    Python ``Trainer`` does not draw them, so draw them here."""
    from genlab.viz import run_figures

    return [str(p) for p in run_figures(model, data, out_dir, seed=seed) if str(p).endswith(".png")]


def copy_figures(rows: list[dict], max_images: int) -> None:
    """Copy small translation/samples PNGs to docs/multimodal-<model>-<name>.png (git keeps docs/*.png
    only; docs/multimodal/*.png would be ignored by the ``*.png`` rule)."""
    docs = HERE.parent / "docs"
    copied = 0
    for want in ("translation", "samples"):  # translations first: one per model, then samples
        for r in rows:
            for p in map(Path, r["figures"]):
                if p.stem != want or p.stat().st_size >= MAX_PNG_BYTES or copied >= max_images:
                    continue
                docs.mkdir(exist_ok=True)
                dest = docs / f"multimodal-{r['model']}-{p.name}"
                shutil.copyfile(p, dest)
                copied += 1
                print(f"copied {p} -> {dest} ({p.stat().st_size} bytes)")


def directions(rows: list[dict]) -> list[str]:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r["coherence"] if k not in keys]
    # single-source pairs first, then multi-source, then joint
    return sorted(keys, key=lambda k: (k == "joint", "+" in k.split("->")[0], k))


def markdown(rows: list[dict], meta: dict) -> str:
    dirs = directions(rows)
    readers: list[str] = []
    for r in rows:
        readers += [k for k in r["reader_accuracy"] if k not in readers]
    lines = [
        "# Multimodal coherence on shapes-av",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"Data: shapes-av size={meta['size']}, train n={meta['n_train']}, test n={meta['n_test']}; "
        f"batch {meta['batch']}, {meta['steps']} steps, coherence over {meta['n_eval']} test examples; "
        f"model options {meta.get('model_opts') or 'defaults'}, lr {meta.get('lr') or 'default'}; "
        f"device {meta['device']}, torch {meta['torch']}.",
        "",
        "Each cell: coherence (chance). `x` image, `text` caption, `audio` clip.",
        "",
        "| model | " + " | ".join(dirs) + " |",
        "|---" * (len(dirs) + 1) + "|",
    ]
    for r in rows:
        cells = [f"{r['coherence'][d]:.3f} ({r['chance'][d]:.3f})" if d in r["coherence"] else "-" for d in dirs]
        lines.append(f"| {r['model']} | " + " | ".join(cells) + " |")
    factors = ("shape", "scale", "colour", "region_x", "region_y")
    lines += [
        "",
        "Per factor (single-source directions; chance per factor is about 1/3 for shape and regions, "
        "1/6 for scale, 1/7 for colour):",
        "",
        "| model | direction | " + " | ".join(factors) + " |",
        "|---" * (2 + len(factors)) + "|",
    ]
    for r in rows:
        for d in (d for d in dirs if "+" not in d and d != "joint"):
            cells = [f"{r['per_factor'][f'{d}/{f}']:.2f}" if f"{d}/{f}" in r["per_factor"] else "-" for f in factors]
            lines.append(f"| {r['model']} | {d} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| model | params | steps | train s | steps/s | eval s | held-out joint bound (nats) | "
        + " | ".join(f"reader acc {k}" for k in readers)
        + " |",
        "|---" * (6 + 1 + len(readers)) + "|",
    ]
    for r in rows:
        bound = r["joint_bound_nats"]
        acc = [f"{r['reader_accuracy'].get(k, float('nan')):.3f}" for k in readers]
        lines.append(
            f"| {r['model']} | {r['params']:,} | {r['steps']} | {r['train_seconds']:.1f} | {r['steps_per_s']:.2f} | "
            f"{r['eval_seconds']:.1f} | {bound:.1f} | " + " | ".join(acc) + " |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=16, help="image side (shapes-av size= option)")
    ap.add_argument("--n-train", type=int, default=5000)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--n-eval", type=int, default=500, help="test examples for coherence (and validation)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--runs", default=str(HERE / "runs" / "multimodal_coherence"))
    ap.add_argument("--out", default=str(HERE / "results" / "multimodal_coherence.json"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="model option, e.g. rescale=true")
    ap.add_argument("--lr", type=float, default=None, help="learning rate (default: the model's)")
    ap.add_argument("--images", action="store_true", help="copy small translation/samples PNGs to docs/")
    ap.add_argument("--max-images", type=int, default=4)
    args = ap.parse_args()
    from genlab.config import parse_assignments

    args.model_opts = parse_assignments(args.set, "--set")

    import sys

    train = genlab.load_dataset("shapes-av", "train", size=args.size, n=args.n_train, seed=args.seed)
    test = genlab.load_dataset("shapes-av", "test", size=args.size, n=args.n_test, seed=args.seed)
    rows = []
    t_all = time.perf_counter()
    for name in args.models.split(","):
        rows.append(run_one(name, train, test, args))
    meta = {
        "command": "python benchmarks/multimodal_coherence.py " + " ".join(sys.argv[1:]),
        "size": args.size,
        "n_train": len(train),
        "n_test": len(test),
        "batch": args.batch,
        "steps": args.steps,
        "n_eval": args.n_eval,
        "model_opts": args.model_opts,
        "lr": args.lr,
        "device": args.device + (" (cuda)" if torch.cuda.is_available() else " (cpu)"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "total_seconds": round(time.perf_counter() - t_all, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "models": rows}, indent=2, default=str) + "\n")
    out.with_suffix(".md").write_text(markdown(rows, meta))
    print(out.with_suffix(".md").read_text())
    if args.images:
        copy_figures(rows, args.max_images)


if __name__ == "__main__":
    main()
