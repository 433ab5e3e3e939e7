"""Multimodal summarization on shapes-summary (issue 12, part "Multimodal summarization"): one
``summarizer`` (representation conditioning with modality dropout) trained on 20,000 examples at
32x32 on one CPU thread, then greedy summaries of 500 test examples from the image and the masked
caption (fused), from the caption alone (text-only baseline) and from the image alone (image-only
baseline): the accuracy of each fact (colour, shape, position) split by where it was stated, and the
headline fusion gain (fused all-three-correct minus the best single input). Also the summary NLL in
bits per token under each condition. Not a test; run by hand:

    python benchmarks/summarization.py    # writes results/summarization.json and .md
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch

import genlab
from genlab.data.summary import SOURCE_FACTORS
from genlab.metrics.summarization import CONDITIONS, summarization_report
from genlab.registry import model_kwargs
from genlab.train import TrainConfig

HERE = Path(__file__).resolve().parent
#: The budget: a bare step of 64 takes ~26 ms on one thread at these sizes (timed below), ~32 ms in
#: the trainer, so 14,000 steps train in about 7.5 minutes (445 s when the results were written).
MODEL: dict[str, Any] = {}
TRAIN = {"steps": 14000, "batch_size": 64, "lr": 2e-3, "schedule": "cosine", "warmup": 200, "seed": 0}


def step_seconds(model: genlab.GenerativeModel, data: Any, batch_size: int, steps: int = 20) -> float:
    """Seconds per optimizer step of ``model`` on batches of ``data`` (a throw-away copy is trained)."""
    twin = genlab.build_model("summarizer", data.spec, **MODEL)
    twin.load_state_dict(model.state_dict())
    opt = torch.optim.AdamW(twin.parameters(), 1e-3)
    twin.train()
    t0 = 0.0
    for i in range(steps + 3):
        if i == 3:  # after warm-up
            t0 = time.perf_counter()
        loss = twin.loss(data[i * batch_size : (i + 1) * batch_size])["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / steps


@torch.no_grad()
def bits_per_token(model: genlab.GenerativeModel, data: Any) -> dict[str, float]:
    """Summary NLL in bits per token of ``data`` under each condition (exact log p(s | inputs))."""
    batch = {k: data.tensors[k] for k in ("x", "text", "summary")}
    s = batch["summary"].shape[1]
    return {
        name: float(-model.log_prob(batch, given=list(keys)).mean()) / (s * math.log(2))
        for name, keys in CONDITIONS.items()
    }


def markdown(result: dict[str, Any]) -> str:
    """The report as Markdown tables: accuracy per fact and source, then the summary figures."""
    rep, cond = result["report"], result["report"]["conditions"]
    opts = ", ".join(f"{k}={v}" for k, v in result["model"].items())

    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    lines = [
        "# Multimodal summarization on shapes-summary",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Data: shapes-summary size=32, train n=20000, test n={rep['n_examples']} (greedy summaries); "
        f"summarizer {opts}; batch {TRAIN['batch_size']}, {TRAIN['steps']} steps, "
        f"lr {TRAIN['lr']} ({TRAIN['schedule']}); {result['threads']} thread, torch {result['torch']}; "
        f"training {result['train_seconds']:.0f} s (a bare step timed at {result['step_seconds'] * 1000:.0f} ms).",
        "",
        "Accuracy of each fact in the summary, by where the input stated it (n: test examples). "
        "text-only: the caption alone; image-only: the image alone (the other input absent, as in "
        "training's modality dropout). Chance: colour 1/7, shape 1/3, position 1/9.",
        "",
        "| fact | stated in | n | fused | text-only | image-only |",
        "|---|---|---|---|---|---|",
    ]
    for fact in SOURCE_FACTORS:
        for src, n in rep["counts"][fact].items():
            cells = " | ".join(f(cond[c][fact][src]) for c in CONDITIONS)
            lines.append(f"| {fact} | {src.replace('_', ' ')} | {n} | {cells} |")
        cells = " | ".join(f(cond[c][fact]["overall"]) for c in CONDITIONS)
        lines.append(f"| {fact} | all | {rep['n_examples']} | {cells} |")
    lines += ["", "| | fused | text-only | image-only |", "|---|---|---|---|"]
    for key, label in (
        ("all_correct", "all three facts right"),
        ("absent_from_text", "facts absent from the text"),
        ("absent_from_image", "facts absent from the image (hidden colour)"),
        ("parse_rate", "summaries that parse"),
    ):
        lines.append(f"| {label} | " + " | ".join(f(cond[c][key]) for c in CONDITIONS) + " |")
    bpt = result["bits_per_token"]
    lines.append("| summary NLL, bits/token | " + " | ".join(f(bpt[c]) for c in CONDITIONS) + " |")
    lines += [
        "",
        f"**Fusion gain** (fused all-correct minus the best single input): {f(rep['fusion_gain'])}; "
        f"on facts absent from the text, fused minus text-only: {f(rep['gain_absent_from_text'])}; "
        f"on a colour hidden in the image, fused minus image-only: {f(rep['gain_absent_from_image'])}.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    torch.set_num_threads(1)
    tr = genlab.load_dataset("shapes-summary", "train", n=20000, size=32)
    te = genlab.load_dataset("shapes-summary", "test", n=500, size=32)
    torch.manual_seed(0)
    model = genlab.build_model("summarizer", tr.spec, **MODEL)
    per_step = step_seconds(model, tr, TRAIN["batch_size"])
    print(f"{per_step * 1000:.1f} ms per step: {TRAIN['steps']} steps ~ {per_step * TRAIN['steps'] / 60:.1f} min")
    cfg = TrainConfig(**TRAIN, progress=False, eval_every=0, sample_every=0)
    t0 = time.perf_counter()
    genlab.Trainer(model, tr, None, cfg, out_dir=HERE / "runs" / "summarizer").fit()
    train_s = time.perf_counter() - t0
    model.eval()
    t0 = time.perf_counter()
    report = summarization_report(model, te, n_examples=500, seed=0)
    result = {
        "command": "python benchmarks/summarization.py",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "model": {**{k: p.default for k, p in model_kwargs("summarizer").items()}, **MODEL},  # every option
        "train": TRAIN,
        "step_seconds": per_step,
        "train_seconds": round(train_s, 1),
        "report_seconds": round(time.perf_counter() - t0, 1),
        "bits_per_token": bits_per_token(model, te),
        "report": report,
    }
    out = HERE / "results" / "summarization.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
