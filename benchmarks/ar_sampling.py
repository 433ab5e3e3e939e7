"""Autoregressive benchmark (run by hand, not a test): fast vs naive sampling, transformer training
throughput against a torch.nn.TransformerEncoder reference, and held-out bits/char on a text
file against gzip -9 and xz -9.

    python benchmarks/ar_sampling.py                       # all parts
    python benchmarks/ar_sampling.py --part sampling       # or: training, text, image
    python benchmarks/ar_sampling.py --part image --rows 8 # PixelCNN on 64x64 shapes and 3x32x32
    python benchmarks/ar_sampling.py --part text --text FILE --minutes 20

Writes benchmarks/results/ar_sampling.json, ar_training.json, ar_text.json. CPU, float32. The
``image`` part merges its keys into ar_sampling.json (and ``sampling`` keeps the ``image`` keys).
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import genlab
from genlab import DataSpec
from genlab.data.text import load_text_file, make_tokenizer

RESULTS = Path(__file__).parent / "results"
VIM_MANUAL = "/usr/share/vim/vim90/doc/usr_*.txt"


def env() -> dict:
    return {
        "command": " ".join(["python", *sys.argv]),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }


def timed(fn, repeats: int = 1) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


# --- sampling ---------------------------------------------------------------------------------
def bench_sampling(n: int = 8, n_audio: int = 4) -> dict:
    torch.manual_seed(0)
    spec = DataSpec(
        name="chars",
        kind="tokens",
        shape=(256,),
        dtype="int64",
        value_range=None,
        levels=96,
        vocab=tuple(chr(32 + i) for i in range(96)),
    )
    lm = genlab.build_model("transformer", spec).eval()  # d_model 128, 4 layers, 4 heads
    out = {}
    for cached in (True, False):
        sec, s = timed(lambda cached=cached: lm.sample(n, generator=torch.Generator().manual_seed(0), use_cache=cached))
        out[f"transformer_{'cached' if cached else 'naive'}"] = {
            "seconds": sec,
            "samples_per_s": n / sec,
            "tokens_per_s": n * 256 / sec,
        }
        out.setdefault("_tf", []).append(s)
    a, b = out.pop("_tf")
    out["transformer"] = {
        "length": 256,
        "n": n,
        "speedup": out["transformer_naive"]["seconds"] / out["transformer_cached"]["seconds"],
        "identical_float32": bool(torch.equal(a, b)),
    }
    aspec = DataSpec(name="tones", kind="audio", shape=(4000,), value_range=(-1.0, 1.0))
    wn = genlab.build_model("wavenet", aspec).eval()  # 32 channels, dilations 1..128
    for cached in (True, False):
        sec, s = timed(
            lambda cached=cached: wn.sample(n_audio, generator=torch.Generator().manual_seed(0), use_cache=cached)
        )
        out[f"wavenet_{'cached' if cached else 'naive'}"] = {
            "seconds": sec,
            "samples_per_s": n_audio / sec,
            "steps_per_s": n_audio * 4000 / sec,
        }
        out.setdefault("_wn", []).append(s)
    a, b = out.pop("_wn")
    out["wavenet"] = {
        "length": 4000,
        "n": n_audio,
        "receptive_field": wn.receptive_field,
        "speedup": out["wavenet_naive"]["seconds"] / out["wavenet_cached"]["seconds"],
        "identical_float32": bool(torch.equal(a, b)),
    }
    return out


# --- PixelCNN images: the row cache against the whole-network pass per sub-pixel -----------------
def _first_rows(model, rows: int):
    """A context in which ``model.draw`` stops after the first ``rows`` rows: the draw is causal in
    raster order, so those rows, and the random numbers they use, are exactly those of the full draw."""
    from contextlib import contextmanager

    @contextmanager
    def ctx():
        full = model.image_shape
        model.image_shape = (full[0], rows, full[2])
        try:
            yield
        finally:
            model.image_shape = full

    return ctx()


def _pass_seconds(model, n: int, heights: list[int], repeats: int = 3) -> dict[int, float]:
    """Median seconds of one naive step -- ``model.logits`` on the rows <= i of n images -- for
    rows = each of ``heights`` (its cost depends on the height, not on the pixel values)."""
    c, _, w = model.image_shape
    out = {}
    with torch.no_grad():
        for h in heights:
            x = torch.zeros(n, c, h, w)
            ts = []
            for _ in range(repeats):
                t = time.perf_counter()
                model.logits(x, None)
                ts.append(time.perf_counter() - t)
            out[h] = sorted(ts)[len(ts) // 2]
    return out


def bench_image(name: str, spec: DataSpec, n: int = 16, rows: int = 8) -> dict:
    """16 samples of a default (untrained: the time does not depend on the weights) gated PixelCNN:
    the row cache timed in full; the naive draw timed on the first ``rows`` rows next to the cached
    one on the same rows (per-row rates), and its full time estimated from the measured cost of one
    whole-network pass at each height (sum over the H*W*C steps of step i's pass on rows <= i,
    linearly interpolated between the measured heights; checked against the measured first rows).
    Samples of the same generator must be identical."""
    torch.manual_seed(0)
    model = genlab.build_model("pixelcnn", spec).eval()
    c, hgt, wid = model.image_shape
    out: dict = {"shape": [c, hgt, wid], "levels": int(spec.levels), "n": n, "rows_timed_naive": rows}
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    # Alternate cached / naive on the first rows (A B A): the same machine noise for both.
    first = {"cached": [], "naive": []}
    draws = {}
    for mode in ("cached", "naive", "cached"):
        with _first_rows(model, rows):
            t = time.perf_counter()
            draws[mode] = model.draw(n, None, generator=gen(), cached=mode == "cached")
            first[mode].append(time.perf_counter() - t)
    out["first_rows_cached_s"] = min(first["cached"])
    out["first_rows_naive_s"] = first["naive"][0]
    out["first_rows_speedup"] = out["first_rows_naive_s"] / out["first_rows_cached_s"]
    out["first_rows_identical"] = bool(torch.equal(draws["cached"], draws["naive"]))
    t = time.perf_counter()
    full = model.draw(n, None, generator=gen(), cached=True)
    out["cached_s"] = time.perf_counter() - t
    out["cached_first_rows_match_full"] = bool(torch.equal(full[:, :, :rows], draws["cached"]))
    # Logits of the two paths on a random image, all positions of a few rows (same up to rounding).
    with torch.no_grad():
        x = torch.randint(0, int(spec.levels), (2, c, hgt, wid)).float() / (int(spec.levels) - 1)
        ref = model.logits(x, None)
        diffs = []
        for i in (0, 1, hgt // 2, hgt - 1):
            above = model.above(x, i, None)
            for j in range(wid):
                diffs.append(float((model.pixel_logits(x, i, j, above, None) - ref[:, :, :, i, j]).abs().max()))
        out["max_abs_logit_difference"] = max(diffs)
    heights = sorted({1, 2, 4, rows, hgt // 4, hgt // 2, (3 * hgt) // 4, hgt})
    per = _pass_seconds(model, n, heights)
    curve = lambda h: float(np.interp(h, heights, [per[k] for k in heights]))  # noqa: E731
    steps_per_row = wid * c
    out["naive_pass_s_by_height"] = {str(k): v for k, v in per.items()}
    out["naive_first_rows_estimated_s"] = steps_per_row * sum(curve(i + 1) for i in range(rows))
    out["naive_s_estimated"] = steps_per_row * sum(curve(i + 1) for i in range(hgt))
    out["speedup_estimated"] = out["naive_s_estimated"] / out["cached_s"]
    out["naive_measured_in_full"] = False
    return out


def bench_images(rows: int) -> dict:
    torch.set_num_threads(1)
    shapes = genlab.load_dataset("shapes", "train").spec  # 1 x 64 x 64, 2 levels
    rgb = DataSpec(name="rgb32", kind="image", shape=(3, 32, 32), value_range=(0.0, 1.0), levels=256)
    res = {}
    for name, spec in (("shapes64", shapes), ("rgb32", rgb)):
        res[f"pixelcnn_{name}"] = {**bench_image(name, spec, rows=rows), "load_average": list(os.getloadavg())}
        print(json.dumps(res[f"pixelcnn_{name}"], indent=2), flush=True)
    return res


# --- training throughput ----------------------------------------------------------------------
class ReferenceLM(nn.Module):
    """The same GPT shape written with torch.nn.TransformerEncoder (pre-LN, GELU, causal mask)."""

    def __init__(self, vocab: int, d: int = 128, layers: int = 4, heads: int = 4, length: int = 256) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(length, d)
        layer = nn.TransformerEncoderLayer(
            d, heads, 4 * d, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.enc = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.ln, self.head = nn.LayerNorm(d), nn.Linear(d, vocab, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        h = self.tok(x) + self.pos(torch.arange(t))
        mask = nn.Transformer.generate_square_subsequent_mask(t)
        return self.head(self.ln(self.enc(h, mask=mask, is_causal=True)))


def bench_training(batch: int = 8, length: int = 256, steps: int = 10) -> dict:
    torch.manual_seed(0)
    vocab = 96
    spec = DataSpec(
        name="chars",
        kind="tokens",
        shape=(length,),
        dtype="int64",
        value_range=None,
        levels=vocab,
        vocab=tuple(chr(32 + i) for i in range(vocab)),
    )
    x = torch.randint(0, vocab, (batch, length))
    ours = genlab.build_model("transformer", spec)
    ref = ReferenceLM(vocab, length=length)

    def run(model: nn.Module, loss_fn) -> float:
        opt = torch.optim.AdamW(model.parameters(), 1e-3)
        for i in range(steps + 3):
            if i == 3:
                t = time.perf_counter()
            loss = loss_fn()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return batch * length * steps / (time.perf_counter() - t)

    ref_loss = lambda: nn.functional.cross_entropy(ref(x[:, :-1]).reshape(-1, vocab), x[:, 1:].reshape(-1))
    res = {}
    for _ in range(2):  # alternate to share the noise of a busy machine
        res.setdefault("genlab", []).append(run(ours, lambda: ours.loss({"x": x})["loss"]))
        res.setdefault("reference", []).append(run(ref, ref_loss))
    return {
        "batch": batch,
        "length": length,
        "params_genlab": sum(p.numel() for p in ours.parameters()),
        "params_reference": sum(p.numel() for p in ref.parameters()),
        "genlab_tokens_per_s": max(res["genlab"]),
        "reference_tokens_per_s": max(res["reference"]),
    }


# --- held-out bits/char vs gzip and xz -----------------------------------------------------------
def compressed_bits(data: bytes, tool: str) -> int:
    return 8 * len(subprocess.run([tool, "-9", "-c"], input=data, capture_output=True, check=True).stdout)


def bench_text(path: str, minutes: float, steps: int | None = None, block: int = 128, batch: int = 32) -> dict:
    torch.manual_seed(0)
    train, val, test = (load_text_file(path, s, "char", block) for s in ("train", "val", "test"))
    tok = make_tokenizer("char", train.spec.vocab)
    kw = dict(d_model=128, n_layers=4, n_heads=4, dropout=0.0)
    model = genlab.build_model("transformer", train.spec, **kw)
    # Steps from a measured rate, so the run fits the time budget on this machine.
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    t = time.perf_counter()
    for _ in range(5):
        loss = model.loss(train[torch.randint(len(train), (batch,))])["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    if steps is None:
        steps = max(100, int(minutes * 60 / ((time.perf_counter() - t) / 5) * 0.85))
    torch.manual_seed(0)
    model = genlab.build_model("transformer", train.spec, **kw)
    cfg = genlab.TrainConfig(
        steps=steps,
        batch_size=batch,
        lr=2e-3,
        schedule="cosine",
        warmup=100,
        grad_clip=1.0,
        eval_every=max(50, steps // 20),
        sample_every=0,
        checkpoint_every=0,
        progress=False,
    )
    with tempfile.TemporaryDirectory() as out:
        summary = genlab.Trainer(model, train, val, cfg, out).fit()
        from genlab.checkpoint import load_tensors

        model.load_state_dict(load_tensors(Path(out) / "best.safetensors")[0])
    model.eval()
    with torch.no_grad():
        lp = torch.cat([model.log_prob(b["x"]) for b in test.batches(64)])
    n_chars = test.tensors["x"].numel()
    model_bpc = float(-lp.double().sum() / (n_chars * math.log(2)))
    full = Path(path).read_text(encoding="utf-8").encode("utf-8")
    test_text = tok.decode(test.tensors["x"].flatten()).encode("utf-8")
    train_text = tok.decode(load_text_file(path, "train", "char", 1).tensors["x"].flatten()).encode("utf-8")
    n_full = len(full.decode("utf-8"))
    res = {
        "model_test_bits_per_char": model_bpc,
        "test_chars": n_chars,
        "file_chars": n_full,
        "train_steps": steps,
        "train_seconds": summary["seconds"],
        "best_val_bits_per_char": summary["best"] / (block * math.log(2)),
        "model": kw,
    }
    for tool in ("gzip", "xz"):
        res[f"{tool}_whole_file_bits_per_char"] = compressed_bits(full, tool) / n_full
        res[f"{tool}_test_alone_bits_per_char"] = compressed_bits(test_text, tool) / n_chars
        # what the compressor pays for the test text after having seen the training text
        res[f"{tool}_test_given_train_bits_per_char"] = (
            compressed_bits(train_text + test_text, tool) - compressed_bits(train_text, tool)
        ) / n_chars
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=["all", "sampling", "training", "text", "image"], default="all")
    p.add_argument("--rows", type=int, default=8, help="image part: rows over which the naive draw is timed")
    p.add_argument("--text", help=f"UTF-8 text file (default: the Vim user manual, {VIM_MANUAL}, concatenated)")
    p.add_argument("--minutes", type=float, default=20.0, help="training budget of the text model")
    p.add_argument("--steps", type=int, help="training steps of the text model (instead of --minutes)")
    args = p.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.part in ("all", "sampling", "image"):
        path = RESULTS / "ar_sampling.json"
        res = json.loads(path.read_text()) if path.exists() else {}  # each part keeps the other's keys
        if args.part in ("all", "sampling"):
            res.update({"env": env(), **bench_sampling()})
        if args.part in ("all", "image"):
            res.update({"image_env": {**env(), "date": time.strftime("%Y-%m-%d")}, **bench_images(args.rows)})
        path.write_text(json.dumps(res, indent=2))
        print(json.dumps(res, indent=2))
    if args.part in ("all", "training"):
        res = {"env": env(), **bench_training()}
        (RESULTS / "ar_training.json").write_text(json.dumps(res, indent=2))
        print(json.dumps(res, indent=2))
    if args.part in ("all", "text"):
        path, name = args.text, args.text
        if path is None:
            files = sorted(glob.glob(VIM_MANUAL))
            if not files:
                raise SystemExit(f"no text file: pass --text FILE ({VIM_MANUAL} not found)")
            fd, path = tempfile.mkstemp(suffix=".txt")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write("".join(Path(x).read_text(encoding="utf-8") for x in files))
            name = f"{VIM_MANUAL} ({len(files)} files, concatenated in name order)"
        res = {"env": env(), "text_file": name, **bench_text(path, args.minutes, args.steps)}
        (RESULTS / "ar_text.json").write_text(json.dumps(res, indent=2))
        print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
