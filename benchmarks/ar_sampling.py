"""Autoregressive benchmark (run by hand, not a test): fast vs naive sampling, transformer training
throughput against a torch.nn.TransformerEncoder reference, and held-out bits/char on a text
file against gzip -9 and xz -9.

    python benchmarks/ar_sampling.py                       # all parts
    python benchmarks/ar_sampling.py --part sampling       # or: training, text
    python benchmarks/ar_sampling.py --part text --text FILE --minutes 20

Writes benchmarks/results/ar_sampling.json, ar_training.json, ar_text.json. CPU, float32.
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
    p.add_argument("--part", choices=["all", "sampling", "training", "text"], default="all")
    p.add_argument("--text", help=f"UTF-8 text file (default: the Vim user manual, {VIM_MANUAL}, concatenated)")
    p.add_argument("--minutes", type=float, default=20.0, help="training budget of the text model")
    p.add_argument("--steps", type=int, help="training steps of the text model (instead of --minutes)")
    args = p.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.part in ("all", "sampling"):
        res = {"env": env(), **bench_sampling()}
        (RESULTS / "ar_sampling.json").write_text(json.dumps(res, indent=2))
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
