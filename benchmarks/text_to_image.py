"""Caption -> image with the caption-conditioned PixelCNN (``pixelcnn_text``) on shapes-captions 32x32.

Not a test (about half an hour on one CPU thread); run by hand:

    python benchmarks/text_to_image.py          # writes results/text_to_image.json, docs/text-to-image-pixelcnn.png

Trains ``pixelcnn_text`` (default sizes) on 20,000 training pairs for a fixed number of steps chosen
so it takes about 10 minutes on one thread (~0.65 s a step at batch 32 measured beforehand), and an
unconditional ``pixelcnn`` with the same channels, layers, kernels, batch, learning rate and steps.
Reports on 500 test images: held-out bits/dim of p(x | text), of p(x | another test caption) and of
p(x) (every image sub-pixel counted, D = 3,072); text -> image coherence (Shi et al. 2019) of one
image drawn for each of ``--n-captions`` test captions, per factor and for all five, read back by
the image factor reader of :mod:`genlab.metrics.coherence` (trained on the training split), with the
chance level and the reader's accuracy on the real test images (the ceiling of any coherence
measured with it); training seconds and sampling seconds per image. For reference the file quotes
mmvae's text -> x coherence from results/multimodal_coherence.json (shapes-av 32x32, 1,000 steps).
The picture: a few test captions, each with 8 images drawn for it.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import genlab
from genlab.metrics.coherence import coherence, factor_readers, true_factors
from genlab.metrics.likelihood import likelihood_metrics
from genlab.train import TrainConfig
from genlab.viz import modality_texts, translation_grid

HERE = Path(__file__).resolve().parent
#: The network options the unconditional baseline shares with pixelcnn_text.
SHARED = ("channels", "n_layers", "kernel_size", "first_kernel")


def train(name: str, opts: dict[str, Any], data, args: argparse.Namespace, keep: bool) -> tuple[Any, float, int]:
    """Train ``name`` on ``data`` for ``args.steps``; returns the model (eval mode), seconds, parameters.
    With ``keep`` the run folder is written under ``args.runs`` (for `genlab translate/eval RUN`);
    without, nothing is: the Trainer's end-of-training grid of 64 samples would take the plain
    PixelCNN ~15 minutes (a full network pass per sub-pixel)."""
    torch.manual_seed(args.seed)
    model = genlab.build_model(name, data.spec, **opts)
    out = Path(args.runs) / name if keep else None
    if out is not None and out.exists():
        shutil.rmtree(out)
    cfg = TrainConfig(
        steps=args.steps,
        batch_size=args.batch,
        lr=args.lr,
        seed=args.seed,
        eval_every=0,
        sample_every=0,
        checkpoint_every=0,
        log_every=50,
        threads=args.threads,
        progress=False,
    )
    trainer = genlab.Trainer(model, data, None, cfg, out_dir=out)
    trainer.write_config("shapes-captions", {"size": 32})  # so `genlab eval/translate RUN` reload this data
    t0 = time.perf_counter()
    trainer.fit()
    seconds = time.perf_counter() - t0
    print(f"{name}: {args.steps} steps in {seconds:.0f} s", flush=True)
    return model.eval(), seconds, sum(p.numel() for p in model.parameters())


def options(model: Any) -> dict[str, Any]:
    """Every constructor option of ``model`` (its defaults, then what it was built with)."""
    sig = inspect.signature(type(model).__init__).parameters
    defaults = {k: p.default for k, p in sig.items() if k not in ("self", "spec")}
    return {**defaults, **model.init_kwargs}


def bits_per_dim(model: Any, x: torch.Tensor, text: torch.Tensor | None) -> float:
    """Mean -log2 p(x [| text]) per sub-pixel of images x [N, C, H, W] (batches of 100)."""
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(x), 100):
            xb = x[i : i + 100]
            lp = model.log_prob(xb) if text is None else model.log_prob({"x": xb, "text": text[i : i + 100]})
            total += float(lp.double().sum())
    return -total / (len(x) * x[0].numel() * math.log(2))


def mmvae_reference() -> dict[str, Any] | None:
    """mmvae's text -> x coherence from results/multimodal_coherence.json, if that file is there."""
    path = HERE / "results" / "multimodal_coherence.json"
    if not path.exists():
        return None
    rows = {r["model"]: r for r in json.loads(path.read_text())["models"]}
    if "mmvae" not in rows:
        return None
    r = rows["mmvae"]
    return {
        "source": "benchmarks/results/multimodal_coherence.json (shapes-av 32x32, 1,000 steps, 500 test examples)",
        "coherence": r["coherence"].get("text->x"),
        "per_factor": {k.split("/")[1]: v for k, v in r["per_factor"].items() if k.startswith("text->x/")},
        "chance": r["chance"].get("text->x"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=900)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--n-train", type=int, default=20000)
    ap.add_argument("--n-test", type=int, default=500)
    ap.add_argument("--n-captions", type=int, default=100, help="test captions translated for coherence")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="pixelcnn_text option")
    ap.add_argument("--runs", default=str(HERE / "runs" / "text_to_image"))
    ap.add_argument("--out", default=str(HERE / "results" / "text_to_image.json"))
    ap.add_argument("--picture", default=str(HERE.parent / "docs" / "text-to-image-pixelcnn.png"))
    args = ap.parse_args()
    from genlab.config import parse_assignments

    opts = parse_assignments(args.set, "--set")
    torch.set_num_threads(args.threads)
    t_all, load_start = time.perf_counter(), round(os.getloadavg()[0], 2)
    tr = genlab.load_dataset("shapes-captions", "train", n=args.n_train, size=32, seed=args.seed)
    te = genlab.load_dataset("shapes-captions", "test", n=args.n_test, size=32, seed=args.seed)

    text_model, text_s, text_params = train("pixelcnn_text", opts, tr, args, keep=True)
    config = {k: v for k, v in text_model.init_kwargs.items() if k in SHARED}  # the same network
    plain, plain_s, plain_params = train("pixelcnn", config, tr, args, keep=False)

    x, text = te.tensors["x"], te.tensors["text"]
    bpd = {
        "x_given_text": bits_per_dim(text_model, x, text),
        "x_given_other_caption": bits_per_dim(text_model, x, text.roll(1, 0)),  # each image, its neighbour's caption
        "x_unconditional_pixelcnn": bits_per_dim(plain, x, None),
        "x_given_text_genlab_evaluate": likelihood_metrics(text_model, te)["bpd"],  # what `genlab eval` reports
    }
    print("bits/dim", bpd, flush=True)

    # text -> image coherence: one image per test caption, read back by the image factor reader.
    idx = torch.from_numpy(np.sort(np.random.default_rng(args.seed).choice(len(te), args.n_captions, replace=False)))
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    images = text_model.translate({"text": text[idx]}, ["x"], n=1, generator=gen)["x"]
    sample_s = (time.perf_counter() - t0) / len(idx)
    reader = factor_readers(te.spec, tr)["x"]
    names, sizes = reader.factor_names, reader.factor_sizes
    truth = true_factors(te.tensors["factors"])
    coh = coherence(reader.read(images), truth[idx.numpy()], factor_names=names, factor_sizes=sizes)
    ceiling = coherence(reader.read(x), truth, factor_names=names, factor_sizes=sizes)
    ceiling_subset = coherence(reader.read(x[idx]), truth[idx.numpy()], factor_names=names, factor_sizes=sizes)
    print("coherence", coh["coherence"], coh["per_factor"], "ceiling", ceiling["per_factor"], flush=True)

    # The picture: the first 4 test captions, 8 images each.
    t0 = time.perf_counter()
    grid = text_model.translate({"text": text[:4]}, ["x"], n=8, generator=torch.Generator().manual_seed(args.seed))
    picture_s = time.perf_counter() - t0
    titles = [f'"{t}"' for t in modality_texts(text[:4], te.spec)]
    picture = translation_grid([(t, grid["x"][i * 8 : (i + 1) * 8]) for i, t in enumerate(titles)], args.picture)

    result = {
        "command": " ".join(["python benchmarks/text_to_image.py", *sys.argv[1:]]),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "load_average_start_end": [load_start, round(os.getloadavg()[0], 2)],  # other jobs on shared cores
        "data": f"shapes-captions size=32, train n={len(tr)}, test n={len(te)}",
        "config": {
            "steps": args.steps,
            "batch": args.batch,
            "lr": args.lr,
            "pixelcnn_text": options(text_model),
            "pixelcnn": options(plain),
        },
        "params": {"pixelcnn_text": text_params, "pixelcnn": plain_params},
        "train_seconds": {"pixelcnn_text": round(text_s, 1), "pixelcnn": round(plain_s, 1)},
        "bits_per_dim_test": bpd,
        "caption_gain_bits_per_image": (bpd["x_unconditional_pixelcnn"] - bpd["x_given_text"]) * x[0].numel(),
        "coherence_text_to_x": {**coh, "n_captions": len(idx), "samples_per_caption": 1, "sampled": True},
        "reader_accuracy_test": ceiling,
        "reader_accuracy_same_captions": ceiling_subset,
        "sampling_seconds_per_image": round(sample_s, 3),
        "sampling_batch": len(idx),
        "picture": str(picture),
        "picture_seconds": round(picture_s, 1),
        "mmvae_reference": mmvae_reference(),
        "total_seconds": round(time.perf_counter() - t_all, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "config"}, indent=2, default=str))


if __name__ == "__main__":
    main()
