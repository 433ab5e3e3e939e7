"""Frozen (Tsimpoukelli et al. 2021) on ``shapes-captions``: an image -> prefix encoder trained
through a frozen transformer language model, against that LM alone and a multimodal VAE.

Not a test (it takes minutes): run by hand. For each of two language models on the captions' text --
``plain``, trained as ``genlab train transformer --data shapes-captions --set source=text`` does,
and ``context``, trained with ``--set context_words=8`` (:meth:`TransformerLM.context_loss`: a random bag of
the caption's own words as a token-embedding prefix, so the LM learns to read context as a web-text
LM does) -- it trains the ``frozen`` captioner with the LM frozen and reports, on the test split:

- caption bits/token: the LM alone, the LM behind a zero prefix of P vectors (what the shift of its
  learned positions costs), and with the image's prefix (and, as a control, another image's);
- the prefix ceiling: the best single prefix for "red" (Adam on the prefix itself) and the
  probability of "red" it reaches at the colour word of 32 captions (1/7 = no control at all);
- x -> text coherence of greedy and drawn captions per factor, with chance
  (:func:`genlab.models.frozen.caption_coherence`, the array core of genlab.metrics.coherence);
- zero-shot and 2-shot prompting: the colour word after "a <scale>" and the shape word after
  "a <scale> <colour>" (the image's true words), read by vocabulary lookup; the LM without the
  image answers the same prompts (the blind baseline); 2-shot puts two random training pairs
  [f(x_i), <start>, caption_i] in front.

An ``mmvae`` (defaults, GRU caption decoder) trained for as many steps gives the same x -> text
coherence for one table with the multimodal VAEs.

    python benchmarks/frozen_captioning.py --lm-steps 600 --steps 1000

Results go to benchmarks/results/frozen_captioning.json; runs under benchmarks/runs/frozen/ (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

import genlab
from genlab.data import shapes as S
from genlab.models.frozen import answer, caption_coherence, prompt_ids
from genlab.train import TrainConfig

HERE = Path(__file__).resolve().parent


def train(model, data, out: Path, steps: int, batch: int, lr: float, args: argparse.Namespace) -> float:
    if out.exists():
        shutil.rmtree(out)
    cfg = TrainConfig(
        steps=steps,
        batch_size=batch,
        lr=lr,
        seed=args.seed,
        eval_every=0,
        sample_every=0,
        checkpoint_every=steps,
        log_every=100,
        threads=args.threads,
        progress=False,
    )
    t0 = time.perf_counter()
    genlab.Trainer(model, data, None, cfg, out_dir=out).fit()
    return round(time.perf_counter() - t0, 1)


def bits_per_token(lp: torch.Tensor, length: int) -> float:
    return float(-lp.double().mean() / (length * math.log(2)))


@torch.no_grad()
def blind_answers(lm, prompts: torch.Tensor) -> torch.Tensor:
    """The LM's greedy next token after each prompt [B, L], without any image: ids [B]."""
    return lm(torch.cat([prompts, prompts.new_zeros(len(prompts), 1)], 1))[:, -1].argmax(-1)


def prefix_ceiling(lm, text: torch.Tensor, prefix_len: int, steps: int = 200) -> float:
    """p("red") at the colour word of captions rewritten to "red", under the single prefix [1, P, d]
    that maximizes it (Adam on the prefix): how far any prefix can move the frozen LM's colour word."""
    lm.requires_grad_(False)
    t = text.clone()
    red = S.CAPTION_VOCAB.index("red")
    t[:, 3] = red  # <bos> a <scale> <colour> ...
    pre = torch.nn.Parameter(torch.randn(1, prefix_len, lm.d_model))
    opt = torch.optim.Adam([pre], lr=0.05)
    for _ in range(steps):
        logp = lm(t, prefix_embeds=pre.expand(len(t), -1, -1))[:, 3].log_softmax(-1)[:, red].mean()
        opt.zero_grad()
        (-logp).backward()
        opt.step()
    with torch.no_grad():
        return float(lm(t, prefix_embeds=pre.expand(len(t), -1, -1))[:, 3].softmax(-1)[:, red].mean())


def prompting(model, test, train_data, n: int, seed: int) -> dict:
    """Zero-shot, 2-shot and blind accuracy of the colour and the shape word (see the module)."""
    rng = np.random.default_rng(seed)
    fac = S.caption_factors(test.tensors["factors"][:n].numpy())  # shape, scale, colour, rx, ry
    x = test.tensors["x"][:n]
    scale = [S.SCALE_WORDS[s] for s in fac[:, 1]]
    colour = [S.COLOUR_NAMES[c] for c in fac[:, 2]]
    shape = [S.SHAPE_NAMES[s] for s in fac[:, 0]]
    idx = rng.choice(len(train_data), (2, n))
    shots = [(train_data.tensors["x"][i], train_data.tensors["text"][i]) for i in idx]
    questions = {
        "colour": ([f"a {s}" for s in scale], colour),
        "shape": ([f"a {s} {c}" for s, c in zip(scale, colour)], shape),
    }
    out = {}
    for what, (prompts, truth) in questions.items():
        ids = prompt_ids(model, prompts)
        blind = [S.CAPTION_VOCAB[i] for i in blind_answers(model.lm, ids).tolist()]
        zero = answer(model, x, ids)[1]
        two = answer(model, x, ids, shots=shots)[1]
        out[what] = {
            "zero_shot": float(np.mean([a == t for a, t in zip(zero, truth)])),
            "two_shot": float(np.mean([a == t for a, t in zip(two, truth)])),
            "blind_lm": float(np.mean([a == t for a, t in zip(blind, truth)])),
            "chance": 1 / len(S.COLOUR_NAMES if what == "colour" else S.SHAPE_NAMES),
            "n": n,
        }
    return out


def run_lm(kind: str, tr, test, args: argparse.Namespace) -> dict:
    runs = Path(args.runs)
    torch.manual_seed(args.seed)
    context = 8 if kind == "context" else 0  # the objective, not the architecture
    lm = genlab.build_model("transformer", tr.spec, source="text", max_prefix=args.max_prefix, context_words=context)
    lm_s = train(lm, tr, runs / f"lm-{kind}", args.lm_steps, 32, 2e-3, args)
    lm.eval()
    text, x = test.tensors["text"], test.tensors["x"]
    length = text.shape[1]
    with torch.no_grad():
        zero = torch.zeros(len(text), args.prefix_len, lm.d_model)
        row = {
            "lm": kind,
            "lm_steps": args.lm_steps,
            "lm_train_s": lm_s,
            "bits_per_token_lm_alone": bits_per_token(lm.log_prob(text), length),
            "bits_per_token_zero_prefix": bits_per_token(lm.log_prob(text, prefix_embeds=zero), length),
        }
    torch.manual_seed(args.seed)
    row["prefix_ceiling_p_red"] = prefix_ceiling(lm, text[:32], args.prefix_len)
    torch.manual_seed(args.seed)
    model = genlab.build_model("frozen", tr.spec, lm_run=str(runs / f"lm-{kind}"), prefix_len=args.prefix_len)
    row["frozen_params"] = sum(p.numel() for p in model.parameters())
    row["frozen_steps"] = args.steps
    row["frozen_train_s"] = train(model, tr, runs / f"frozen-{kind}", args.steps, args.batch, args.lr, args)
    model.eval()
    with torch.no_grad():
        lp = model.log_prob({"x": x, "text": text})
        other = torch.roll(torch.arange(len(x)), 1)
        lp_other = model.lm.log_prob(text, prefix_embeds=model.prefix(x[other]))
    row["bits_per_token_with_image"] = bits_per_token(lp, length)
    row["bits_per_token_other_image"] = bits_per_token(lp_other, length)
    for mode, mean in (("greedy", True), ("sampled", False)):
        row[f"coherence_{mode}"] = caption_coherence(model, test, n_examples=args.n_eval, mean=mean, seed=args.seed)
    row["prompting"] = prompting(model, test, tr, args.n_eval, args.seed)
    print(json.dumps({k: v for k, v in row.items() if not k.startswith("coherence")}, indent=1), flush=True)
    print({m: row[f"coherence_{m}"]["per_factor"] for m in ("greedy", "sampled")}, flush=True)
    return row


def run_vae(name: str, tr, test, args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    model = genlab.build_model(name, tr.spec)
    secs = train(model, tr, Path(args.runs) / name, args.steps, args.batch, args.lr, args)
    model.eval()
    row = {"model": name, "steps": args.steps, "train_s": secs, "params": sum(p.numel() for p in model.parameters())}
    for mode, mean in (("greedy", True), ("sampled", False)):
        row[f"coherence_{mode}"] = caption_coherence(model, test, n_examples=args.n_eval, mean=mean, seed=args.seed)
    print(name, {m: row[f"coherence_{m}"]["per_factor"] for m in ("greedy", "sampled")}, flush=True)
    return row


def markdown(rows: list[dict], vae: dict | None, meta: dict) -> str:
    f5 = S.CAPTION_FACTOR_NAMES
    lines = [
        "# Frozen captioning on shapes-captions",
        "",
        f"Command: `{meta['command']}`",
        "",
        "| LM | bits/tok LM alone | zero prefix | with image | other image | p(red) ceiling | "
        "colour 0-shot | colour 2-shot | colour blind | shape 0-shot | shape 2-shot | shape blind |",
        "|---" * 12 + "|",
    ]
    for r in rows:
        p = r["prompting"]
        lines.append(
            f"| {r['lm']} | {r['bits_per_token_lm_alone']:.3f} | {r['bits_per_token_zero_prefix']:.3f} | "
            f"{r['bits_per_token_with_image']:.3f} | {r['bits_per_token_other_image']:.3f} | "
            f"{r['prefix_ceiling_p_red']:.3f} | "
            + " | ".join(f"{p[w][k]:.3f}" for w in ("colour", "shape") for k in ("zero_shot", "two_shot", "blind_lm"))
            + " |"
        )
    lines += ["", "x -> text coherence (chance), greedy captions:", ""]
    lines += ["| model | all | " + " | ".join(f5) + " | readable |", "|---" * (len(f5) + 3) + "|"]
    named = [(f"frozen ({r['lm']} LM)", r) for r in rows] + ([(vae["model"], vae)] if vae else [])
    for name, r in named:
        c = r["coherence_greedy"]
        cells = [f"{c['per_factor'][f]:.3f} ({c['chance_per_factor'][f]:.3f})" for f in f5]
        lines.append(
            f"| {name} | {c['coherence']:.3f} ({c['chance']:.3f}) | " + " | ".join(cells) + f" | {c['readable']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lm-steps", type=int, default=600)
    ap.add_argument("--steps", type=int, default=1000, help="steps of the frozen captioner (and the VAE)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--prefix-len", type=int, default=4)
    ap.add_argument("--max-prefix", type=int, default=40, help="the LMs' max_prefix: room for 2 shots")
    ap.add_argument("--lms", default="plain,context")
    ap.add_argument("--vae", default="mmvae", help="a multimodal VAE to compare with ('' to skip)")
    ap.add_argument("--n-train", type=int, default=20000)
    ap.add_argument("--n-eval", type=int, default=500)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", default=str(HERE / "runs" / "frozen"))
    ap.add_argument("--out", default=str(HERE / "results" / "frozen_captioning.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    tr = genlab.load_dataset("shapes-captions", "train", n=args.n_train, size=args.size)
    test = genlab.load_dataset("shapes-captions", "test", n=args.n_eval, size=args.size)
    rows = [run_lm(kind, tr, test, args) for kind in args.lms.split(",") if kind]
    vae = run_vae(args.vae, tr, test, args) if args.vae else None
    meta = {
        "command": "python benchmarks/frozen_captioning.py " + " ".join(sys.argv[1:]),
        "torch": torch.__version__,
        "cpu": platform.machine(),
        "threads": args.threads,
        "data": f"shapes-captions size={args.size}, train n={args.n_train}, test n={args.n_eval}",
        "config": vars(args),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    result = {**meta, "frozen": rows, "vae": vae, "markdown": markdown(rows, vae, meta)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(result["markdown"])


if __name__ == "__main__":
    main()
