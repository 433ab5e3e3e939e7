"""One table for the ways genlab conditions a generator on another modality (issue 12): prefix
(``frozen``), representation (``captioner``; ``pixelcnn_text`` for caption -> image), gradient
(PPLM steering of an unconditional caption LM) and multimodal VAE translation (``mmvae``), each
measured with part 1's coherence metric on the same 500 test pairs of shapes-captions (32x32,
20,000 training pairs, 1,500 steps, batch 64, seed 0). Not a test; run by hand:

    python benchmarks/conditioning_comparison.py   # ~20 min on 1 thread; writes results/conditioning_comparison.*
    python benchmarks/conditioning_comparison.py --sections pplm_context   # re-measure one part only

Trained here: the caption LMs that PPLM steers (and their unsteered floors: a plain LM, and one
trained with ``context_words=8`` to read its context) and ``mmvae`` (both directions). Read from
their own benchmarks, which use the same data, test pairs and budget: ``frozen``
(results/frozen_captioning.json, context LM), ``captioner`` (results/captioner_coherence.json) and
the ``pixelcnn_text`` run of text_to_image.py (measured here, section ``t2x``, on the same pairs as
``mmvae``); a missing file leaves its row out and says so.

PPLM turns an image into text only through an attribute: for each test image the colour that the
image reader reads from it becomes the steering target ("colour=<that colour>", bag of words), so
PPLM's row can be coherent on colour at best; its other factors show the unconditional LM.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import genlab
from genlab.data.shapes import COLOUR_NAMES
from genlab.metrics.coherence import coherence, factor_readers, true_factors
from genlab.models.frozen import caption_coherence
from genlab.steer import attribute_from_spec, steered_sample
from genlab.train import TrainConfig

HERE = Path(__file__).resolve().parent
FACTORS = ("shape", "scale", "colour", "region_x", "region_y")
SECTIONS = ("pplm_plain", "pplm_context", "mmvae", "t2x")
#: text -> x runs measured by the "t2x" section (trained by this script and by text_to_image.py).
T2X_RUNS = {"mmvae": "conditioning/mmvae", "pixelcnn_text": "text_to_image/pixelcnn_text"}


def train(model: genlab.GenerativeModel, data: Any, out: Path, args: argparse.Namespace, batch: int) -> float:
    """Train ``model`` for ``args.steps`` at ``batch`` and lr 2e-3 into ``out``; seconds."""
    if out.exists():
        shutil.rmtree(out)
    cfg = TrainConfig(
        steps=args.steps,
        batch_size=batch,
        lr=2e-3,
        seed=args.seed,
        eval_every=0,
        sample_every=0,
        checkpoint_every=args.steps,
        threads=args.threads,
        progress=False,
    )
    t0 = time.perf_counter()
    genlab.Trainer(model, data, None, cfg, out_dir=out).fit()
    return round(time.perf_counter() - t0, 1)


def eval_index(n_data: int, n: int, seed: int) -> torch.Tensor:
    """The seeded test subset of :func:`genlab.models.frozen.caption_coherence` (all 500 here)."""
    return torch.from_numpy(np.sort(np.random.default_rng(seed).choice(n_data, min(n, n_data), replace=False)))


@torch.no_grad()
def image_coherence(model: Any, test: Any, reader: Any, n: int, seed: int, mean: bool) -> dict[str, Any]:
    """text -> x coherence: one image per test caption (``translate``), read back by the image
    reader. ``mean``: the mode image (a VAE's mean thresholded at 0.5 into the binary data space, the
    PixelCNN's greedy sub-pixel argmax); else a drawn one."""
    idx = eval_index(len(test), n, seed)
    gen = torch.Generator().manual_seed(seed)
    text = test.tensors["text"]
    imgs = torch.cat([model.translate({"text": text[i]}, ["x"], generator=gen, mean=mean)["x"] for i in idx.split(100)])
    pred = np.asarray(reader.read((imgs > 0.5).float() if mean else imgs), dtype=np.int64)
    res = coherence(pred, true_factors(test.tensors["factors"][idx]), factor_names=FACTORS)
    return {**res, "sources": ["text"], "target": "x"}


@torch.no_grad()
def pplm_coherence(lm: Any, test: Any, train_data: Any, image_reader: Any, args: argparse.Namespace) -> dict:
    """x -> text through PPLM: steer the caption LM toward the colour read from each test image."""
    idx = eval_index(len(test), args.n_eval, args.seed)
    colour = np.asarray(image_reader.read(test.tensors["x"][idx]), dtype=np.int64)[:, FACTORS.index("colour")]
    text_reader = factor_readers(test.spec)["text"]
    truth = true_factors(test.tensors["factors"][idx])
    rows: dict[str, Any] = {}
    for label, step in (("unsteered", 0.0), *((f"step {s}", s) for s in args.pplm_steps)):
        caps = torch.zeros(len(idx), test.tensors["text"].shape[1], dtype=torch.long)
        t0 = time.perf_counter()
        for c in np.unique(colour):
            sel = torch.from_numpy(np.flatnonzero(colour == c))
            attr = attribute_from_spec(lm, test.spec, f"colour={COLOUR_NAMES[c]}", data=train_data)
            gen = torch.Generator().manual_seed(args.seed + int(c))
            with torch.enable_grad():
                caps[sel] = steered_sample(lm, len(sel), attr, step_size=step, generator=gen)
        pred = np.asarray(text_reader.read(caps), dtype=np.int64)
        res = coherence(pred, truth, factor_names=FACTORS)
        rows[label] = {**res, "step_size": step, "seconds": round(time.perf_counter() - t0, 1)}
        print("pplm", label, res["per_factor"], flush=True)
    return rows


def load(name: str) -> dict | None:
    path = HERE / "results" / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def cell(c: dict, f: str) -> str:
    return f"{c['per_factor'][f]:.3f}"


def markdown(rows: list[tuple[str, str, str, dict]], meta: dict) -> str:
    lines = [
        "# Conditioning a generator on another modality: one table",
        "",
        f"Command: `{meta['command']}` (torch {meta['torch']}, {meta['threads']} thread(s)). Data: {meta['data']}.",
        "Coherence (Shi et al. 2019): the fraction of outputs whose factors, read back (captions parsed, images by "
        "the image reader), equal the source's; `all` = every factor at once. One output per test pair: greedy "
        "captions; images as marked (mode: a VAE's mean thresholded at 0.5, a PixelCNN's argmax per sub-pixel; "
        "drawn: a sample). `pixelcnn_text` is the run of text_to_image.py: 900 steps of 32 (its steps cost "
        "~0.65 s), not 1,500 of 64. A PixelCNN's argmax image is blank: no single sub-pixel is more likely on "
        "than off before the shape has begun.",
        "",
        "| direction | mechanism | model | all | shape | scale | colour | region_x | region_y | chance (all) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for direction, mechanism, model, c in rows:
        cells = " | ".join(cell(c, f) for f in FACTORS)
        lines.append(f"| {direction} | {mechanism} | {model} | {c['coherence']:.3f} | {cells} | {c['chance']:.4f} |")
    if meta.get("missing"):
        lines += ["", "Rows left out (their benchmark has not been run): " + ", ".join(meta["missing"]) + "."]
    if meta.get("reader_accuracy") is not None:
        acc = meta["reader_accuracy"]
        lines += ["", f"Image reader on real test images (the ceiling of text -> x): all {acc:.3f}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--n-train", type=int, default=20000)
    ap.add_argument("--n-eval", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pplm-steps", type=float, nargs="*", default=[0.04, 0.16, 0.32])
    ap.add_argument(
        "--sections",
        nargs="*",
        choices=SECTIONS,
        default=list(SECTIONS),
        help="what to (re)measure; the rest is read from the saved JSON (none: rebuild the table only)",
    )
    ap.add_argument("--runs", default=str(HERE / "runs" / "conditioning"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    runs = Path(args.runs)
    tr = genlab.load_dataset("shapes-captions", "train", n=args.n_train, size=32)
    te = genlab.load_dataset("shapes-captions", "test", n=args.n_eval, size=32)
    image_reader = factor_readers(te.spec, tr)["x"]
    idx = eval_index(len(te), args.n_eval, args.seed)
    real = np.asarray(image_reader.read(te.tensors["x"][idx]), dtype=np.int64)
    reader_acc = coherence(real, true_factors(te.tensors["factors"][idx]), factor_names=FACTORS)["coherence"]

    saved = HERE / "results" / "conditioning_comparison.json"
    old = json.loads(saved.read_text()) if saved.exists() else {}
    res: dict[str, Any] = {k: old[k] for k in SECTIONS if k in old}
    meta: dict[str, Any] = old.get("meta", {})
    for section in args.sections:
        t0 = time.perf_counter()
        torch.manual_seed(args.seed)
        if section.startswith("pplm_"):
            context = 8 if section == "pplm_context" else 0
            lm = genlab.build_model("transformer", tr.spec, source="text", max_prefix=40, context_words=context)
            secs = train(lm, tr, runs / f"lm-{section[5:]}", args, batch=32)
            lm.eval()
            res[section] = {"train_s": secs, **pplm_coherence(lm, te, tr, image_reader, args)}
        elif section == "t2x":  # both text -> x generators on the same pairs, mode and drawn images
            res[section] = {}
            for name, rel in T2X_RUNS.items():
                model = genlab.load_run(HERE / "runs" / rel).model.eval()
                res[section][name] = {
                    mode: image_coherence(model, te, image_reader, args.n_eval, args.seed, mean=mode == "mode")
                    for mode in ("mode", "drawn")
                }
                print(name, {m: r["per_factor"] for m, r in res[section][name].items()}, flush=True)
        else:
            vae = genlab.build_model("mmvae", tr.spec)
            secs = train(vae, tr, runs / "mmvae", args, batch=64)
            vae.eval()
            res[section] = {
                "train_s": secs,
                "x->text": caption_coherence(vae, te, n_examples=args.n_eval, mean=True, seed=args.seed),
                "text->x": image_coherence(vae, te, image_reader, args.n_eval, args.seed, mean=True),
            }
        meta[f"{section}_seconds"] = round(time.perf_counter() - t0, 1)
    meta.update(
        command="python benchmarks/conditioning_comparison.py",
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        data=f"shapes-captions size=32, train n={args.n_train}, test n={args.n_eval}, {args.steps} steps, "
        f"seed {args.seed}",
        reader_accuracy=reader_acc,
    )

    rows: list[tuple[str, str, str, dict]] = []
    missing = []
    frozen, captioner = load("frozen_captioning"), load("captioner_coherence")
    if frozen is not None:
        ctx = next(r for r in frozen["frozen"] if r["lm"] == "context")
        rows.append(("x -> text", "prefix (frozen LM)", "frozen, context LM", ctx["coherence_greedy"]))
    else:
        missing.append("frozen (benchmarks/frozen_captioning.py)")
    if captioner is not None:
        rows.append(("x -> text", "representation", "captioner", captioner["coherence_greedy"]))
    else:
        missing.append("captioner (benchmarks/captioner_coherence.py)")
    for section, lm_name in (("pplm_plain", "plain LM"), ("pplm_context", "context LM")):
        if section not in res:
            missing.append(f"{section} (--sections {section})")
            continue
        pplm = {k: v for k, v in res[section].items() if isinstance(v, dict)}
        best = max((k for k in pplm if k != "unsteered"), key=lambda k: pplm[k]["per_factor"]["colour"])
        rows.append(("x -> text", f"none (unsteered {lm_name}: the floor)", "transformer", pplm["unsteered"]))
        rows.append(("x -> text", f"gradient (PPLM {best}; colour only)", f"{lm_name} + BoW", pplm[best]))
    if "mmvae" in res:
        rows.append(("x -> text", "multimodal VAE", "mmvae", res["mmvae"]["x->text"]))
    if "t2x" in res:
        for name, modes in res["t2x"].items():
            mech = "representation" if name == "pixelcnn_text" else "multimodal VAE"
            for mode, c in modes.items():
                rows.append(("text -> x", f"{mech} ({mode} image)", name, c))
    else:
        missing.append("text -> x (--sections t2x, after benchmarks/text_to_image.py)")
    meta["missing"] = missing
    result = {"meta": meta, **res, "rows": rows}
    saved.write_text(json.dumps(result, indent=1, default=str) + "\n")
    md = markdown(rows, meta)
    (HERE / "results" / "conditioning_comparison.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
