"""Transformer defaults on small real text (issue 17; run by hand, not a test): validation curves,
best step and held-out bits/char of ``genlab train transformer`` with the defaults before and
after dropout, weight decay and a cosine schedule, against gzip -9 and xz -9 on the same split.

    python benchmarks/lm_defaults.py                         # builds the texts, trains, evaluates
    python benchmarks/lm_defaults.py --jobs 4 --steps 1500   # the four runs side by side
    python benchmarks/lm_defaults.py --steps-after 700       # the new defaults with fewer steps
    python benchmarks/lm_defaults.py --collect --work DIR    # train nothing: collect DIR's run folders

Run folders are ``WORK/runs/<before|after><steps>-<text>``. ``--collect`` scores what is there,
also a training still under way (its best weights so far; ``"partial": true``, the steps done).

The two texts, built from files every Debian/Ubuntu machine with vim has:
- ``licenses.txt``: :data:`LICENSE_FILES` of ``/usr/share/common-licenses`` concatenated in that
  order (145,468 bytes: each license once -- the symlinks GPL, LGPL, GFDL and the older GPL-1,
  LGPL-2, LGPL-3, GFDL-1.2, MPL-1.1 left out -- so the test split, the tail of MPL-2.0, is not a
  near-copy of a file in the train split);
- ``vim.txt``: the Vim user manual, ``/usr/share/vim/vim90/doc/usr_*.txt`` in name order (641,560 bytes).

``genlab train`` cuts a text file's character stream 90 % / 5 % / 5 % into train/val/test and each
part into blocks of 128 (``genlab/data/text.py``); ``genlab eval RUN`` scores the test blocks with
the best validation weights. The compressors see the same test characters (the whole blocks):
gzip -9 and xz -9 alone, and conditional on the train text,
bits = 8 * (len(c(train + test)) - len(c(train))) / test characters (gzip sees only the last
32 kB of the train text: its window). Each training runs with ``--set threads=1`` (shared machine).
Writes ``benchmarks/results/lm_defaults.json`` and ``benchmarks/results/lm_defaults-<text>.png``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import lzma
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from genlab.data.text import SPLIT_FRACTIONS
from genlab.viz import plot_curves

RESULTS = Path(__file__).parent / "results"
LICENSE_DIR = "/usr/share/common-licenses"
#: One text per license, concatenated in this order (see the module docstring).
LICENSE_FILES = (
    "Apache-2.0",
    "Artistic",
    "BSD",
    "CC0-1.0",
    "GFDL-1.3",
    "GPL-2",
    "GPL-3",
    "LGPL-2.1",
    "MPL-2.0",
)
VIM_DIR = "/usr/share/vim/vim90/doc"
BLOCK_SIZE = 128  # genlab's default block_size for text files
#: The defaults a user got before issue 17, set explicitly so that the "before" runs stay the same
#: whatever the defaults are now.
BEFORE = {"dropout": 0.0, "weight_decay": 0.0, "schedule": "constant", "warmup": 0, "grad_clip": "null"}


def build_texts(work: Path) -> dict[str, Path]:
    """Write ``licenses.txt`` and ``vim.txt`` into ``work``; returns {name: path}."""
    work.mkdir(parents=True, exist_ok=True)
    parts = {
        "licenses": [Path(LICENSE_DIR, f) for f in LICENSE_FILES],
        "vim": sorted(Path(VIM_DIR).glob("usr_*.txt")),
    }
    out = {}
    for name, files in parts.items():
        path = work / f"{name}.txt"
        path.write_bytes(b"".join(f.read_bytes() for f in files))
        out[name] = path
    return out


def splits(text: str) -> tuple[str, str]:
    """(train text, test text) as ``genlab.data.text.load_text_file`` cuts a char-tokenized file:
    contiguous 90 % / 5 % / 5 %, the test part cut to whole blocks of :data:`BLOCK_SIZE`."""
    n = len(text)
    cut1 = int(round(SPLIT_FRACTIONS[0] * n))
    cut2 = int(round((SPLIT_FRACTIONS[0] + SPLIT_FRACTIONS[1]) * n))
    test = text[cut2:]
    return text[:cut1], test[: len(test) // BLOCK_SIZE * BLOCK_SIZE]


def compressor_bits(train: str, test: str) -> dict[str, float]:
    """Bits per test character of gzip -9 and xz -9, alone and conditional on ``train``."""
    tr, te = train.encode(), test.encode()
    codecs = {"gzip": lambda b: gzip.compress(b, 9, mtime=0), "xz": lambda b: lzma.compress(b, preset=9)}
    out = {}
    for name, c in codecs.items():
        out[f"{name}_test_alone"] = 8 * len(c(te)) / len(test)
        out[f"{name}_given_train"] = 8 * (len(c(tr + te)) - len(c(tr))) / len(test)
    return out


def train_command(data: Path, out: Path, steps: int, settings: dict[str, object]) -> list[str]:
    cmd = ["genlab", "train", "transformer", "--data", str(data), "--out", str(out), "--quiet"]
    for k, v in {"steps": steps, "threads": 1, **settings}.items():
        cmd += ["--set", f"{k}={v}"]
    return cmd


def val_curve(run: Path) -> list[tuple[int, float]]:
    """(step, validation bits/char) of a run's ``metrics.jsonl``."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [(r["step"], r["val_bpd"]) for r in rows if r.get("split") == "val"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="/tmp/lm_defaults", help="where the texts and run folders go")
    ap.add_argument("--steps", type=int, default=1500, help="steps of the runs with the old defaults")
    ap.add_argument(
        "--steps-after",
        default="",
        help="steps of the runs with the new defaults: N, or per text 'licenses=700,vim=500' (default --steps)",
    )
    ap.add_argument("--jobs", type=int, default=1, help="trainings run side by side")
    ap.add_argument("--reuse", action="store_true", help="keep finished run folders (same commands)")
    ap.add_argument("--collect", action="store_true", help="train nothing; score the run folders there are")
    ap.add_argument("--note", default="", help="free text recorded in the results (how the runs were made)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    work = Path(args.work)
    texts = build_texts(work)
    after = dict(kv.split("=") for kv in args.steps_after.split(",")) if "=" in args.steps_after else {}
    steps = {
        (s, n): args.steps if s == "before" else int(after.get(n, args.steps_after or args.steps))
        for s in ("before", "after")
        for n in texts
    }
    runs = {(s, n): work / "runs" / f"{s}{steps[(s, n)]}-{n}" for s, n in steps}
    commands = {
        key: train_command(texts[key[1]], path, steps[key], BEFORE if key[0] == "before" else {})
        for key, path in runs.items()
    }
    done = {k for k, p in runs.items() if (p / "best.safetensors").exists()}
    todo = [] if args.collect else [k for k in runs if not (args.reuse and k in done)]
    load = {"start": os.getloadavg()}
    t0, pending, procs = time.time(), list(todo), []
    while pending or procs:  # at most --jobs trainings at once
        while pending and len(procs) < args.jobs:
            key = pending.pop(0)
            cmd = commands[key] + (["--overwrite"] if runs[key].exists() else [])
            procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL))
        time.sleep(5)
        for p in [p for p in procs if p.poll() is not None]:
            if p.returncode:
                sys.exit(f"training failed ({p.returncode}): {' '.join(p.args)}")
            procs.remove(p)
    load["after_training"] = os.getloadavg()
    results: dict[str, object] = {}
    for name, path in texts.items():
        text = path.read_text(encoding="utf-8")
        train, test = splits(text)
        entry: dict[str, object] = {
            "file_bytes": path.stat().st_size,
            "file_chars": len(text),
            "train_chars": len(train),
            "test_chars": len(test),
            **compressor_bits(train, test),
        }
        series = {}
        for setting in ("before", "after"):
            run = runs[(setting, name)]
            if not (run / "best.safetensors").exists():
                entry[setting] = None  # --collect: never run
                continue
            subprocess.run(["genlab", "eval", str(run)], check=True, stdout=subprocess.DEVNULL)
            ev = json.loads((run / "eval.json").read_text())
            curve = val_curve(run)
            best_step, best_val = min(curve, key=lambda sv: (sv[1], sv[0]))
            cfg = (run / "config.yaml").read_text()
            entry[setting] = {
                "command": " ".join(commands[(setting, name)]).replace(str(work), "$WORK"),
                "test_bits_per_char": ev["log_prob_bpd"],
                "test_blocks": ev["n_examples"],
                "steps_done": curve[-1][0],
                "partial": curve[-1][0] < steps[(setting, name)],
                "best_step": best_step,
                "best_val_bits_per_char": best_val,
                "last_val_bits_per_char": curve[-1][1],
                "val_curve": curve,
                "config_yaml_train_and_model": [
                    line.strip()
                    for line in cfg.splitlines()
                    if line.strip().split(":")[0]
                    in ("dropout", "weight_decay", "schedule", "warmup", "grad_clip", "lr", "d_model", "n_layers")
                ],
            }
            series[f"{setting} ({steps[(setting, name)]} steps): test {ev['log_prob_bpd']:.2f}"] = curve
        for label, key in (("gzip -9 | train", "gzip_given_train"), ("xz -9 | train", "xz_given_train")):
            series[f"{label} (test) {entry[key]:.2f}"] = [(0, entry[key]), (max(steps.values()), entry[key])]
        results[name] = entry
        plot_curves(
            series,
            RESULTS / f"lm_defaults-{name}.png",
            f"transformer on {name}.txt ({len(text) // 1000}k chars): validation bits/char, old and new defaults",
            ylabel="bits/char",
        )
    out = {
        "env": {
            "command": " ".join(["python", *sys.argv]),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpu": platform.machine(),
            "cpu_count": os.cpu_count(),
            "loadavg": load,
            "train_seconds_wall": time.time() - t0 if todo else None,
            "date": time.strftime("%Y-%m-%d"),
            "note": args.note,
        },
        "license_files": [f"{LICENSE_DIR}/{f}" for f in LICENSE_FILES],
        "vim_files": f"{VIM_DIR}/usr_*.txt (name order)",
        "results": results,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "lm_defaults.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({n: {k: v for k, v in e.items() if k not in ("before", "after")} for n, e in results.items()}))
    for n, e in results.items():
        for s in ("before", "after"):
            r = e[s]
            if r is None:
                continue
            print(f"{n} {s}: best step {r['best_step']}, best val {r['best_val_bits_per_char']:.3f}, "
                  f"test {r['test_bits_per_char']:.3f} bits/char")  # fmt: skip


if __name__ == "__main__":
    main()
