"""The character transformer against gzip -9 and xz -9 on two real texts (issue 17; run by hand, not a
test): held-out bits/char scored block by block, as one stream with fixed weights, and by dynamic
evaluation (Krause et al. 2018: the LM keeps learning from the text it has scored, as a compressor
does), with the step size chosen on the validation split; validation curves as PNG.

    python benchmarks/lm_dynamic.py                       # builds the texts, trains both runs, scores
    python benchmarks/lm_dynamic.py --work /tmp/lm --reuse  # score run folders already trained there

The texts are ``benchmarks/lm_defaults.py``'s (the licenses of ``/usr/share/common-licenses``, 145 kB,
and the Vim user manual, 642 kB: files every Debian machine with vim has), cut 90/5/5 % by
``genlab train``. Runs: ``genlab train transformer --data TEXT --set threads=1`` with the defaults
and ``--set steps=`` :data:`STEPS` (``WORK/runs/<text>``; the best validation weights are scored).
The compressors are charged for the split given the training text: 8 * (|c(train + split)| -
|c(train)|) / |split| bits per character (gzip sees only the last 32 kB of train: its window).
Writes ``benchmarks/results/lm_dynamic.json`` and ``docs/lm_dynamic-<text>.png`` (in the README).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import lm_defaults  # noqa: E402  (the texts and the compressors' conditional cost)

from genlab import load_dataset  # noqa: E402
from genlab.baselines import baselines  # noqa: E402
from genlab.evaluate import DYNAMIC_LR, DYNAMIC_STRIDE, dynamic_log_prob, stream_log_prob  # noqa: E402
from genlab.runs import load_run, saved_data_opts  # noqa: E402
from genlab.viz import plot_curves  # noqa: E402

RESULTS = Path(__file__).parent / "results"
DOCS = Path(__file__).parents[1] / "docs"  # the PNGs the README shows
#: Training steps per text: the licenses' validation is best near step 800 and then rises; the Vim
#: manual's still falls at 2,400 (14 minutes on one thread).
STEPS = {"licenses": 1000, "vim": 2400}
#: Step sizes tried on the validation split (DYNAMIC_LR is the library default).
LR_GRID = (5e-5, 1e-4, 2e-4)


def chars(data) -> str:
    """A char-tokenized split's text, decoded from its token blocks (exactly the characters scored)."""
    vocab = data.spec.vocab
    return "".join(vocab[i] for i in data.tensors["x"].reshape(-1).tolist())


def bits(total_nats: float, n: int) -> float:
    return -total_nats / (n * math.log(2))


def score(run: Path) -> dict[str, object]:
    """Every figure of one run on its val and test splits (bits/char)."""
    model, cfg, _ = load_run(run)
    opts = saved_data_opts(cfg)
    train = chars(load_dataset(cfg["data"], "train", **opts))
    out: dict[str, object] = {}
    for split in ("val", "test"):
        data = load_dataset(cfg["data"], split, **opts)
        x = data.tensors["x"]
        t = x.shape[1]
        with torch.no_grad():
            block = float(model.log_prob(x).double().sum())
        row: dict[str, object] = {"chars": x.numel(), "block": bits(block, x.numel())}
        row["stream"] = bits(stream_log_prob(model, x, t // 2)[0], x.numel())
        grid = LR_GRID if split == "val" else (DYNAMIC_LR,)
        for lr in grid:
            t0 = time.perf_counter()
            row[f"dynamic_lr{lr:g}"] = bits(dynamic_log_prob(model, x, DYNAMIC_STRIDE, lr=lr)[0], x.numel())
            row[f"dynamic_lr{lr:g}_seconds"] = round(time.perf_counter() - t0, 1)
        base = baselines(cfg["data"], split, **opts)
        row.update({k.split("/")[1]: v for k, v in base.items() if k.endswith("/bits_per_char")})
        row.update(lm_defaults.compressor_bits(train, chars(data)))
        out[split] = row
    return out


def plot(name: str, entry: dict) -> None:
    """``docs/lm_dynamic-<name>.png``: the validation curve with the compressors' and dynamic evaluation's
    validation figures as lines, the test figures in the legend."""
    curve, val, test = entry["val_curve"], entry["val"], entry["test"]
    key = f"dynamic_lr{DYNAMIC_LR:g}"
    series = {f"transformer, each block from an empty context (test {test['block']:.2f})": curve}
    last = curve[-1][0]
    lines = (
        ("gzip -9 | train", "gzip_given_train"),
        ("xz -9 | train", "xz_given_train"),
        ("transformer, dynamic evaluation", key),
    )
    for label, k in lines:
        series[f"{label}: val {val[k]:.2f}, test {test[k]:.2f}"] = [(0, val[k]), (last, val[k])]
    plot_curves(
        series,
        DOCS / f"lm_dynamic-{name}.png",
        f"transformer on {name}.txt ({entry['file_chars'] // 1000}k chars): validation bits/char",
        ylabel="bits/char",
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="/tmp/lm_dynamic", help="where the texts and run folders go")
    ap.add_argument("--reuse", action="store_true", help="score run folders already there (same commands)")
    ap.add_argument("--plot", action="store_true", help="only redraw the PNGs from lm_dynamic.json")
    ap.add_argument("--note", default="", help="free text recorded in the results (load, how the runs were made)")
    args = ap.parse_args()
    if args.plot:
        for name, entry in json.loads((RESULTS / "lm_dynamic.json").read_text())["results"].items():
            plot(name, entry)
        return
    torch.set_num_threads(1)
    work = Path(args.work)
    texts = lm_defaults.build_texts(work)
    results: dict[str, object] = {}
    for name, path in texts.items():
        run = work / "runs" / name
        cmd = ["genlab", "train", "transformer", "--data", str(path), "--out", str(run), "--quiet"]
        cmd += ["--set", f"steps={STEPS[name]}", "--set", "threads=1"]
        seconds = None
        if not (args.reuse and (run / "best.safetensors").exists()):
            t0 = time.perf_counter()
            subprocess.run([*cmd, "--overwrite"], check=True)
            seconds = round(time.perf_counter() - t0, 1)
        text = path.read_text(encoding="utf-8")
        entry = {"file_chars": len(text), "command": " ".join(cmd), "train_seconds": seconds, **score(run)}
        entry["val_curve"] = lm_defaults.val_curve(run)
        plot(name, entry)
        results[name] = entry
    out = {
        "env": {
            "command": " ".join(["python", *sys.argv]),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "loadavg": os.getloadavg(),
            "date": time.strftime("%Y-%m-%d"),
            "note": args.note,
            "dynamic_stride": DYNAMIC_STRIDE,
        },
        "results": results,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "lm_dynamic.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: {s: v[s] for s in ("val", "test")} for k, v in results.items()}, indent=1))


if __name__ == "__main__":
    main()
