"""PPLM steering of a small caption LM (Dathathri et al., ICLR 2020): attribute hit rate and
fluency cost over a sweep of step sizes.

Not a test: run by hand. Trains a small transformer on the captions of ``shapes-captions`` (the
``"text"`` key; what ``genlab train transformer --data shapes-captions --set source=text`` does)
through the public API, then for the attribute ``colour=red`` — as a bag of words {red} and as a
linear classifier on the LM's mean hidden states (:func:`genlab.steer.train_attribute_classifier`)
— draws ``--n`` captions per step size with the same seed (:func:`genlab.steer.steering_report`)
and reads them back with ``parse_caption``: accuracy = share of captions that parse with colour
red (unparsable = wrong), parses = share that parse at all, log p = mean log-likelihood of the
captions under the unsteered LM (nats per caption; the fluency cost), attribute p = classifier
probability of the whole caption / share of captions holding "red".

A control where the attribute is expressible: an LM of two-topic token rows (each row mostly a0..a3
or mostly b0..b3), steered by the bag {a0..a3}; accuracy = share of rows mostly in topic a.

    python benchmarks/pplm_sweep.py                      # steps 600, n 1024
    python benchmarks/pplm_sweep.py --steps 300 --n 256  # quicker

Writes benchmarks/results/pplm_sweep.json and .md; the LM's run folder goes to benchmarks/runs/
(git-ignored). CPU, float32.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import torch

import genlab
from genlab import DataSpec
from genlab.data.base import TensorDataset
from genlab.data.shapes import COLOUR_NAMES
from genlab.steer import attribute_from_spec, caption_parses, caption_reader, steering_report
from genlab.train import TrainConfig

HERE = Path(__file__).resolve().parent
STEPS = (0.0, 0.01, 0.02, 0.04, 0.08)  # the sweep asked for
WIDE = (0.16, 0.32, 0.64)  # beyond it: where the perturbation starts to act, and breaks captions


def train_lm(args: argparse.Namespace) -> tuple[genlab.GenerativeModel, object, float, float]:
    train = genlab.load_dataset("shapes-captions", "train")
    val = genlab.load_dataset("shapes-captions", "val", n=1000)
    torch.manual_seed(args.seed)
    model = genlab.build_model(
        "transformer", train.spec, source="text", d_model=args.d_model, n_layers=args.n_layers, n_heads=4
    )
    out = HERE / "runs" / "pplm_sweep"
    if out.exists():
        shutil.rmtree(out)
    cfg = TrainConfig(
        steps=args.steps,
        batch_size=64,
        lr=3e-3,
        seed=args.seed,
        eval_every=args.steps,
        sample_every=0,
        checkpoint_every=args.steps,
        progress=False,
    )
    t0 = time.perf_counter()
    genlab.Trainer(model, train, val, cfg, out_dir=out).fit()
    model.eval()
    with torch.no_grad():
        val_nll = -model.log_prob(val.tensors["text"]).mean().item()
    return model, train, val_nll, time.perf_counter() - t0


def topics(n: int, seed: int, length: int = 12, stay: float = 0.85) -> torch.Tensor:
    """[n, length] token ids: a0..a3 = 0..3, b0..b3 = 4..7; each row picks topic a or b, then each
    token is a uniform word of its topic with probability ``stay``, else of the other topic."""
    g = torch.Generator().manual_seed(seed)
    topic = torch.randint(2, (n, 1), generator=g)
    t = torch.where(torch.rand(n, length, generator=g) < stay, topic, 1 - topic)
    return t * 4 + torch.randint(4, (n, length), generator=g)


def topic_control(args: argparse.Namespace) -> dict:
    vocab = tuple(f"a{i}" for i in range(4)) + tuple(f"b{i}" for i in range(4))
    spec = DataSpec(name="topics", kind="tokens", shape=(12,), dtype="int64", value_range=None, levels=8, vocab=vocab)
    torch.manual_seed(args.seed)
    model = genlab.build_model("transformer", spec, d_model=32, n_layers=2, n_heads=2)
    cfg = TrainConfig(steps=300, batch_size=64, lr=3e-3, seed=args.seed, eval_every=300, sample_every=0, progress=False)
    out = HERE / "runs" / "pplm_topics"
    if out.exists():
        shutil.rmtree(out)
    genlab.Trainer(model, TensorDataset({"x": topics(5000, args.seed)}, spec), None, cfg, out_dir=out).fit()
    model.eval()
    bow = attribute_from_spec(model, spec, "words=a0,a1,a2,a3")
    rep = steering_report(
        model, bow, lambda ids: (ids < 4).float().mean(1) > 0.5, step_sizes=STEPS + WIDE, n=args.n, seed=args.seed
    )
    print("topics", json.dumps(rep["rows"]), flush=True)
    return rep


def embedding_spread(model, vocab, words) -> float:
    """Mean distance of the words' (tied input/output) embeddings from their centroid, relative to
    their mean norm: how differently the LM represents the values of one factor."""
    e = model.tok_emb.weight[[vocab.index(w) for w in words]].detach()
    return ((e - e.mean(0)).norm(dim=1).mean() / e.norm(dim=1).mean()).item()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=600, help="LM training steps")
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--n-layers", type=int, default=2)
    p.add_argument("--n", type=int, default=1024, help="captions per step size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, train, val_nll, train_s = train_lm(args)
    spec = model.spec
    red = COLOUR_NAMES.index("red")
    reader = caption_reader("colour", red)
    results = {
        "command": " ".join(["python", *sys.argv]),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "lm": {
            "d_model": args.d_model,
            "n_layers": args.n_layers,
            "steps": args.steps,
            "train_seconds": round(train_s, 1),
            "val_nll_nats_per_caption": round(val_nll, 3),
            # every caption factor is uniform and independent: ln(3 * 6 * 7 * 9) = 7.03 nats is close
            # to the entropy (the 3x3 regions are 11/10/11 positions, not exactly uniform)
            "colour_embedding_spread": round(embedding_spread(model, spec.vocab, COLOUR_NAMES), 3),
        },
        "attribute": "colour=red",
        # gamma_norm: 1.5 for the bag of words, 1.0 for the classifier (the official examples)
        "pplm": {"iterations": 3, "kl_scale": 0.01, "gm_scale": 0.95, "window": None},
        "sweeps": {},
    }
    for kind in ("bow", "classifier"):
        t0 = time.perf_counter()
        attribute = attribute_from_spec(model, spec, "colour=red", data=train, kind=kind, seed=args.seed)
        fit_s = time.perf_counter() - t0
        rep = steering_report(
            model, attribute, reader, step_sizes=STEPS + WIDE, n=args.n, seed=args.seed, fluent=caption_parses
        )
        rep["fit_seconds"] = round(fit_s, 2)
        if kind == "classifier":
            rep["classifier_val_accuracy"] = attribute.val_accuracy
        results["sweeps"][kind] = rep
        print(kind, json.dumps(rep["rows"]), flush=True)
    results["topic_control"] = topic_control(args)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "pplm_sweep.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "pplm_sweep.md").write_text(markdown(results))
    print(markdown(results))
    return 0


def markdown(r: dict) -> str:
    lm = r["lm"]
    lines = [
        "# PPLM steering of a caption LM toward colour=red",
        "",
        f"Command: `{r['command']}` (torch {r['torch']}, {r['threads']} CPU thread(s)).",
        "",
        f"LM: transformer d_model={lm['d_model']}, {lm['n_layers']} layers, {lm['steps']} steps on shapes-captions "
        f"captions ({lm['train_seconds']} s); held-out NLL {lm['val_nll_nats_per_caption']} nats/caption "
        "(uniform independent factors: about 7.03). The seven colour words' (tied) embeddings lie "
        f"{lm['colour_embedding_spread']:.3f} of their norm from their centroid: colour is independent of "
        "every other word and uniform, so the LM's logits barely separate the colours and a perturbed "
        "cache can move p(red) at the colour slot only a little.",
        f"PPLM: {r['pplm']}, gamma_norm 1.5 (bag of words) / 1.0 (classifier). Same seed for every row; "
        "accuracy: parse_caption(colour) == red, "
        "unparsable = wrong; chance 1/7 = 0.143.",
        "",
    ]
    for kind, rep in r["sweeps"].items():
        extra = f", held-out accuracy {rep['classifier_val_accuracy']:.3f}" if "classifier_val_accuracy" in rep else ""
        lines += [
            f"## {'bag of words {red}' if kind == 'bow' else 'linear classifier on mean hidden states' + extra}",
            "",
            "| step size | accuracy | parses | log p (nats) | attribute p | seconds |",
            "|---|---|---|---|---|---|",
        ]
        for row in rep["rows"]:
            lines.append(
                f"| {row['step_size']} | {row['accuracy']:.3f} | {row['fluent']:.3f} | {row['log_lik']:.2f} "
                f"| {row['attribute_prob']:.3f} | {row['seconds']:.1f} |"
            )
        lines.append("")
    lines += [
        "## control: bag {a0..a3} on an LM of two-topic rows (accuracy: share of rows mostly topic a)",
        "",
        "| step size | accuracy | log p (nats) | attribute p | seconds |",
        "|---|---|---|---|---|",
    ]
    for row in r["topic_control"]["rows"]:
        lines.append(
            f"| {row['step_size']} | {row['accuracy']:.3f} | {row['log_lik']:.2f} | {row['attribute_prob']:.3f} "
            f"| {row['seconds']:.1f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
