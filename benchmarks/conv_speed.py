"""Convolutional training near its floor: every image family's Trainer step vs its conv/matmul floor.

For each image family (vae with conv nets, gated pixelcnn, glow, multi-scale realnvp, dcgan, ddpm)
at its default sizes, on 28x28 grey data (a user's ``.npz`` of 5,000 uint8 images, written to a
temporary folder and loaded through genlab's file path like a user's) and on 64x64 ``shapes``:

- **step**: one ``genlab.Trainer`` optimizer step (batching, loss, backward, AdamW; evaluation,
  samples, checkpoints and progress off), hot, median over ``--repeats`` timed blocks.
- **floor**: the step's convolutions and matrix products alone. Every call of ``F.conv*``,
  ``F.linear``, ``matmul``/``mm``/``bmm``/``addmm``/``einsum`` made during one step is captured with
  its shapes (a ``TorchFunctionMode``, so convolutions called through ``F`` by masked or invertible
  1x1 layers count too) and re-timed standalone and hot: forward plus backward (the gradients the
  step needs: input and/or weight, as recorded) in the faster of the contiguous and channels_last
  layouts; the times are summed over the calls. This is what ``benchmarks/flows_vs_peers.py`` does
  for matrix products. ``fraction`` = floor / step (1.0 = nothing but the products).
- **profile**: ``torch.profiler`` self CPU time per step of the top ops that are not products.
- ``--channels-last``: the same step under ``--set channels_last=true``, alternated with the plain one.
- ``--compile``: the same step under ``--set compile=true``: hot speed-up and compile time (the
  first compiled step minus a hot one).

Run by hand (not a test): ``python benchmarks/conv_speed.py --threads 1``. Writes
``benchmarks/results/conv_speed.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

import genlab
from genlab.train import TrainConfig, Trainer

FAMILIES = {  # family label: (registry name, model options: the defaults except what names the family)
    "vae": ("vae", {"arch": "conv"}),
    "pixelcnn": ("pixelcnn", {"gated": True}),
    "glow": ("glow", {}),
    "realnvp": ("realnvp", {}),
    "dcgan": ("dcgan", {}),
    "ddpm": ("ddpm", {}),
}
RESULTS = Path(__file__).parent / "results"

# --- data ---------------------------------------------------------------------------------------


def write_user_npz(folder: Path, n: int = 5000, seed: int = 0) -> Path:
    """A user's MNIST-sized file: ``x`` [n, 28, 28] uint8 grey images (256 levels), made from
    scikit-learn's 8x8 digits up-sampled bilinearly to 20x20, placed at a random offset in a 28x28
    frame (as MNIST centres 20x20 digits) with a random brightness; ``y`` their labels."""
    digits = genlab.load_dataset("digits", split="train")
    x = digits.tensors["x"].float()  # [1000, 1, 8, 8] in [0, 1]
    y = digits.tensors["y"]
    g = torch.Generator().manual_seed(seed)
    pick = torch.randint(len(x), (n,), generator=g)
    big = F.interpolate(x[pick], size=(20, 20), mode="bilinear", align_corners=False)
    out = torch.zeros(n, 28, 28)
    dx, dy = torch.randint(0, 9, (n,), generator=g), torch.randint(0, 9, (n,), generator=g)
    gain = 0.7 + 0.3 * torch.rand(n, generator=g)
    for i in range(n):
        out[i, dy[i] : dy[i] + 20, dx[i] : dx[i] + 20] = big[i, 0] * gain[i]
    path = folder / "user-digits28.npz"
    np.savez(path, x=(out * 255).round().clamp(0, 255).to(torch.uint8).numpy(), y=y[pick].numpy())
    return path


def load_data(size: int, folder: Path) -> genlab.data.base.TensorDataset:
    if size == 28:
        return genlab.load_dataset(str(write_user_npz(folder)), split="train")
    if size == 64:
        return genlab.load_dataset("shapes", split="train", n=5000)
    raise ValueError(f"size {size}: expected 28 (user .npz) or 64 (shapes)")


# --- the step -----------------------------------------------------------------------------------


def make_trainer(
    family: str, data: Any, batch_size: int | None = None, compile_: bool = False, channels_last: bool = False
) -> Trainer:
    """The Trainer ``genlab train`` would build for ``family`` (its ``train_defaults`` batch size and
    EMA), with evaluation, samples, checkpoints and the progress bar off."""
    name, opts = FAMILIES[family]
    torch.manual_seed(0)
    model = genlab.build_model(name, data.spec, **opts)
    defaults = genlab.registry.get_model_class(name).train_defaults
    cfg = TrainConfig(
        steps=10**9,
        batch_size=batch_size or defaults.get("batch_size", TrainConfig.batch_size),
        ema=defaults.get("ema"),
        eval_every=0,
        sample_every=0,
        checkpoint_every=0,
        progress=False,
        device="cpu",
        compile=compile_,
        channels_last=channels_last,
    )
    return Trainer(model, data, None, cfg)


def one_step(tr: Trainer) -> None:
    """What the Trainer's loop does per step, minus logging: pick indices, batch, step."""
    tr.train_step(tr.train_data[tr._next_indices()])


def time_steps(tr: Trainer, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        one_step(tr)
    return (time.perf_counter() - t0) / n


# --- the floor ----------------------------------------------------------------------------------

_PRODUCTS = {
    F.conv1d,
    F.conv2d,
    F.conv3d,
    F.conv_transpose1d,
    F.conv_transpose2d,
    F.linear,
    torch.matmul,
    torch.mm,
    torch.bmm,
    torch.addmm,
    torch.baddbmm,
    torch.einsum,
    Tensor.__matmul__,
    Tensor.matmul,
    Tensor.mm,
    Tensor.bmm,
}


class CaptureProducts(TorchFunctionMode):
    """Records every product call: (function, tensor args as (shape, requires_grad), other args)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[Any, ...]] = []

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in _PRODUCTS:
            grad = torch.is_grad_enabled()
            sig = tuple(
                ("T", tuple(a.shape), bool(a.requires_grad and grad)) if isinstance(a, Tensor) else ("V", a)
                for a in args
            )
            kw = tuple(sorted((k, v) for k, v in kwargs.items() if not isinstance(v, Tensor)))
            kwt = tuple(
                sorted(
                    (k, tuple(v.shape), bool(v.requires_grad and grad))
                    for k, v in kwargs.items()
                    if isinstance(v, Tensor)
                )
            )
            self.calls.append((func, sig, kw, kwt))
        return func(*args, **kwargs)


def capture_products(tr: Trainer) -> Counter:
    mode = CaptureProducts()
    with mode:
        one_step(tr)
    return Counter(mode.calls)


def _median_time(fn: Callable[[], Any], budget: float = 0.15, max_reps: int = 50) -> float:
    fn()  # warm: allocations, oneDNN primitive creation
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-6)
    reps = int(min(max_reps, max(3, budget / one)))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _layout_time(call: tuple[Any, ...], fmt: torch.memory_format) -> float:
    """Hot time (s) of one captured product with its 4-D tensors in layout ``fmt``: forward, then
    the backward to the inputs that required a gradient in the step (none under no_grad)."""
    func, sig, kw, kwt = call

    def make(shape: tuple[int, ...], rg: bool) -> Tensor:
        t = torch.randn(shape)
        if len(shape) == 4:
            t = t.contiguous(memory_format=fmt)
        return t.requires_grad_(rg)

    args = [make(a[1], a[2]) if a[0] == "T" else a[1] for a in sig]
    kwargs = dict(kw)
    kwargs.update({k: make(s, rg) for k, s, rg in kwt})
    leaves = [a for a in [*args, *kwargs.values()] if isinstance(a, Tensor) and a.requires_grad]
    with torch.no_grad():
        gout = torch.randn_like(func(*args, **kwargs))

    def run() -> None:
        y = func(*args, **kwargs)
        if leaves:
            torch.autograd.grad(y, leaves, gout)

    with torch.set_grad_enabled(bool(leaves)):
        return _median_time(run)


def product_time(call: tuple[Any, ...]) -> tuple[float, str]:
    """Hot standalone time (s) of one captured product, forward + backward, in its faster layout
    (contiguous or, for 2-D convolutions, channels_last), and that layout's name."""
    layouts = {"contiguous": torch.contiguous_format}
    if call[0] in (F.conv2d, F.conv_transpose2d):
        layouts["channels_last"] = torch.channels_last
    times = {name: _layout_time(call, fmt) for name, fmt in layouts.items()}
    best = min(times, key=times.get)
    return times[best], best


def floor_ms(calls: Counter) -> tuple[float, dict[str, float]]:
    total, by_kind = 0.0, Counter()
    for call, count in calls.items():
        t, _ = product_time(call)
        total += t * count
        by_kind[getattr(call[0], "__name__", str(call[0]))] += t * count * 1e3
    return total * 1e3, dict(by_kind)


# --- the profile --------------------------------------------------------------------------------

_PRODUCT_OPS = ("conv", "mm", "linear", "matmul", "einsum", "mkldnn", "slow_conv", "thnn_conv")


def profile_rest(tr: Trainer, steps: int = 2, top: int = 8) -> tuple[list[dict[str, Any]], float]:
    """Self CPU ms per step of the top non-product ops, and the products' self ms per step."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            one_step(tr)
    rows, products = [], 0.0
    for ev in prof.key_averages():
        ms = ev.self_cpu_time_total / 1e3 / steps
        if any(p in ev.key.lower() for p in _PRODUCT_OPS):
            products += ms
        else:
            rows.append({"op": ev.key, "self_ms": round(ms, 2), "calls": ev.count // steps})
    rows.sort(key=lambda r: -r["self_ms"])
    return rows[:top], products


# --- main ---------------------------------------------------------------------------------------


def bench(family: str, size: int, data: Any, args: argparse.Namespace) -> dict[str, Any]:
    tr = make_trainer(family, data, args.batch_size)
    for _ in range(2):
        one_step(tr)
    row: dict[str, Any] = {"family": family, "size": size, "batch": tr.cfg.batch_size, "ema": tr.cfg.ema}
    trc = None
    if args.compile:
        trc = make_trainer(family, data, args.batch_size, compile_=True)
        t0 = time.perf_counter()
        one_step(trc)
        one_step(trc)  # a second step can recompile (e.g. ActNorm's initialized flag flips): counted
        first_two = time.perf_counter() - t0
    trl = None
    if args.channels_last:
        trl = make_trainer(family, data, args.batch_size, channels_last=True)
        for _ in range(2):
            one_step(trl)
    eager, compiled, nhwc = [], [], []
    for _ in range(args.repeats):  # alternate eager, compiled and channels-last blocks: same load for all
        eager.append(time_steps(tr, args.block))
        if trc is not None:
            compiled.append(time_steps(trc, args.block))
        if trl is not None:
            nhwc.append(time_steps(trl, args.block))
    step = statistics.median(eager)
    row.update(step_ms=step * 1e3, steps_per_s=1 / step)
    if args.floor:
        calls = capture_products(tr)
        floor, by_kind = floor_ms(calls)
        row.update(floor_ms=floor, fraction=floor / (step * 1e3), products=sum(calls.values()), floor_by_op=by_kind)
        rows, prod_self = profile_rest(tr)
        row.update(profile_top=rows, profile_product_self_ms=prod_self)
    if trc is not None:
        hot = statistics.median(compiled)
        row.update(compiled_step_ms=hot * 1e3, compile_speedup=step / hot, compile_s=first_two - 2 * hot)
    if trl is not None:
        hot = statistics.median(nhwc)
        row.update(channels_last_step_ms=hot * 1e3, channels_last_speedup=step / hot)
    return row


def write_md(result: dict[str, Any], path: Path) -> None:
    lines = [
        "# Conv training vs its floor",
        "",
        f"`{result['command']}` — {result['date']}, {result['threads']} torch thread(s), "
        f"load average before/after {result['loadavg_before']} / {result['loadavg_after']}.",
        "",
        "| family | size | batch | steps/s | floor ms | step ms | fraction | compile speed-up | compile s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        comp = (
            f"{r['compile_speedup']:.2f}x | {r['compile_s']:.1f}"
            if "compile_speedup" in r
            else ("failed | " + r["compile_error"][:40] if "compile_error" in r else "- | -")
        )
        floor = f"{r['floor_ms']:.1f}" if "floor_ms" in r else "-"
        frac = f"{r['fraction']:.2f}" if "fraction" in r else "-"
        lines.append(
            f"| {r['family']} | {r['size']} | {r['batch']} | {r['steps_per_s']:.2f} | {floor} | "
            f"{r['step_ms']:.1f} | {frac} | {comp} |"
        )
    lines += ["", "Where the rest goes (self CPU ms per step, top ops outside conv/matmul):", ""]
    for r in (r for r in result["rows"] if "profile_top" in r):
        top = ", ".join(f"{p['op']} {p['self_ms']:.1f}" for p in r["profile_top"][:6])
        lines.append(f"- {r['family']} {r['size']}: products {r['profile_product_self_ms']:.1f}; {top}")
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--sizes", default="28,64")
    ap.add_argument("--repeats", type=int, default=5, help="timed blocks per family (median)")
    ap.add_argument("--block", type=int, default=3, help="steps per timed block")
    ap.add_argument("--batch-size", type=int, default=None, help="default: the model's train_defaults, else 128")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--compile", action="store_true", help="also time --set compile=true")
    ap.add_argument(
        "--channels-last", action="store_true", help="also time --set channels_last=true (NHWC weights and batches)"
    )
    ap.add_argument("--no-floor", dest="floor", action="store_false", help="skip the floor and the profile")
    ap.add_argument("--out", default=str(RESULTS / "conv_speed"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    bad = [f for f in families if f not in FAMILIES]
    if bad:
        ap.error(f"unknown family {bad[0]!r}; valid: {', '.join(FAMILIES)}")
    sizes = [int(s) for s in args.sizes.split(",")]
    result: dict[str, Any] = {
        "command": "python benchmarks/conv_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "threads": args.threads,
        "torch": torch.__version__,
        "loadavg_before": [round(v, 2) for v in os.getloadavg()],
        "rows": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            data = load_data(size, Path(tmp))
            for fam in families:
                try:
                    row = bench(fam, size, data, args)
                except Exception as e:  # one family failing must not lose the others' numbers
                    row = {"family": fam, "size": size, "error": f"{type(e).__name__}: {e}"}
                    print(row, flush=True)
                    continue
                row["loadavg"] = [round(v, 2) for v in os.getloadavg()]
                result["rows"].append(row)
                save(result, Path(args.out))  # after every row: a long run interrupted keeps its numbers
                print(
                    f"{fam:9s} {size:3d}  {row['steps_per_s']:7.2f} steps/s  floor {row.get('floor_ms', 0):7.1f} ms  "
                    f"step {row['step_ms']:7.1f} ms  fraction {row.get('fraction', 0):.2f}"
                    + (
                        f"  compile {row['compile_speedup']:.2f}x in {row['compile_s']:.1f} s"
                        if "compile_speedup" in row
                        else ""
                    )
                    + (
                        f"  channels_last {row['channels_last_speedup']:.2f}x" if "channels_last_speedup" in row else ""
                    ),
                    flush=True,
                )
    save(result, Path(args.out))
    return result


def save(result: dict[str, Any], out: Path) -> None:
    result["loadavg_after"] = [round(v, 2) for v in os.getloadavg()]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1, default=str))
    write_md(result, out.with_suffix(".md"))


if __name__ == "__main__":
    main()
