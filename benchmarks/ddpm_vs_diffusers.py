"""genlab's ``ddpm`` vs diffusers (``UNet2DModel`` + ``DDPMScheduler``) on digits, in one run (issue 14).
Not a test; run by hand in the benchmark venv (diffusers + torch 2.13.0 CPU + genlab editable; nothing
is downloaded: both networks are built from a config and trained from scratch):

    .venv-bench/bin/python benchmarks/ddpm_vs_diffusers.py [--steps 2000] [--repeats 3] [--threads 1]

Same data (sklearn digits, 1,000 training images 1x8x8 mapped to [-1, 1]), the same U-Net shape
(base width 32, widths (32, 64), one residual block per level, 8x8 -> 4x4, self-attention in the
middle block only, time embedding 128; GroupNorm with 8 groups in diffusers, its one setting for all
levels, and genlab's 4 channels per group: 8 at width 32, 16 at 64), the same linear schedule of T = 1,000, epsilon
loss, Adam 2e-4, batch 128, no EMA, the same number of optimizer steps. genlab trains through its
Trainer (checkpoints, evaluation and progress bar off); diffusers through the training loop of its
own examples (``add_noise``, ``model(x_t, t).sample``, MSE). Repeats alternate between the libraries
and the median is reported. Sampling: 100 images with 50 DDIM steps (eta 0) each, timed; FID of
those 100 (and of 447 more for a steadier figure) against the 447 test digits with genlab's local
features (a classifier trained on the training digits), the same function for both.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import genlab
from genlab import TrainConfig, Trainer
from genlab.evaluate import sample_metrics

HERE = Path(__file__).resolve().parent
BATCH, LR, T, WIDTHS = 128, 2e-4, 1000, (32, 64)


def genlab_model(spec):
    return genlab.build_model(
        "ddpm", spec, timesteps=T, schedule="linear", prediction="eps", channels=WIDTHS[0],
        channel_mult=tuple(w // WIDTHS[0] for w in WIDTHS), num_res_blocks=1, attention=(), sample_steps=50,
    )  # fmt: skip


def diffusers_model():
    from diffusers import DDPMScheduler, UNet2DModel

    net = UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=WIDTHS,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=8, add_attention=True,
    )  # fmt: skip
    return net, DDPMScheduler(num_train_timesteps=T, beta_schedule="linear")


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def train_genlab(train, steps: int, seed: int):
    torch.manual_seed(seed)
    model = genlab_model(train.spec)
    cfg = TrainConfig(
        steps=steps, batch_size=BATCH, lr=LR, weight_decay=0.0, seed=seed, eval_every=0, sample_every=0,
        checkpoint_every=0, progress=False, device="cpu", ema=None,
    )  # fmt: skip
    trainer = Trainer(model, train, None, cfg, out_dir=None)
    t0 = time.perf_counter()
    trainer.fit()
    return model, trainer.step / (time.perf_counter() - t0)


def train_diffusers(x: torch.Tensor, steps: int, seed: int):
    torch.manual_seed(seed)
    net, sched = diffusers_model()
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    gen = torch.Generator().manual_seed(seed)
    net.train()
    t0 = time.perf_counter()
    order, pos = torch.randperm(len(x), generator=gen), 0
    for _ in range(steps):
        if pos + BATCH > len(x):
            order, pos = torch.randperm(len(x), generator=gen), 0
        x0 = x[order[pos : pos + BATCH]]
        pos += BATCH
        noise = torch.randn_like(x0)
        t = torch.randint(0, T, (len(x0),))
        loss = F.mse_loss(net(sched.add_noise(x0, noise, t), t).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (net, sched), steps / (time.perf_counter() - t0)


@torch.no_grad()
def sample_diffusers(pair, n: int, seed: int) -> torch.Tensor:
    from diffusers import DDIMScheduler

    net, sched = pair
    net.eval()
    ddim = DDIMScheduler.from_config(sched.config)
    ddim.set_timesteps(50)
    x = torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    for t in ddim.timesteps:
        x = ddim.step(net(x, t).sample, t, x, eta=0.0).prev_sample
    return x


def to_data(y: torch.Tensor, levels: int) -> torch.Tensor:
    """Model space [-1, 1] -> the data's [0, 1] on its levels (what genlab's sample returns)."""
    return torch.round((y.clamp(-1, 1) + 1) / 2 * (levels - 1)) / (levels - 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(HERE / "results" / "ddpm_vs_diffusers.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import diffusers

    train, test = genlab.load_dataset("digits", "train"), genlab.load_dataset("digits", "test")
    levels = int(train.spec.levels)
    x = train.tensors["x"].float() * 2 - 1
    runs: dict[str, list[dict]] = {"genlab": [], "diffusers": []}
    train_genlab(train, 20, 0), train_diffusers(x, 20, 0)  # warm-up off the clock
    for r in range(args.repeats):
        model, sps = train_genlab(train, args.steps, r)
        model.eval()
        t0 = time.perf_counter()
        s = model.sample(100, generator=torch.Generator().manual_seed(r))
        t_s = time.perf_counter() - t0
        more = model.sample(447, generator=torch.Generator().manual_seed(100 + r))
        runs["genlab"].append({"steps_per_s": sps, "sample_100_s": t_s, "samples": torch.cat([s, more])})
        pair, sps = train_diffusers(x, args.steps, r)
        t0 = time.perf_counter()
        s = to_data(sample_diffusers(pair, 100, r), levels)
        t_s = time.perf_counter() - t0
        more = to_data(sample_diffusers(pair, 447, 100 + r), levels)
        runs["diffusers"].append({"steps_per_s": sps, "sample_100_s": t_s, "samples": torch.cat([s, more])})
        for rs in runs.values():
            m = sample_metrics(rs[-1]["samples"], test, ["fid"], reference=train, seed=r)
            rs[-1]["fid_547"] = m["fid"]
            rs[-1]["fid_100"] = sample_metrics(rs[-1]["samples"][:100], test, ["fid"], reference=train, seed=r)["fid"]
            del rs[-1]["samples"]
        print(f"repeat {r}: " + "; ".join(f"{k} {v[-1]}" for k, v in runs.items()), flush=True)
    summary = {
        lib: {key: statistics.median(r[key] for r in rs) for key in rs[0]} | {"all": rs} for lib, rs in runs.items()
    }
    summary["genlab"]["params"] = n_params(genlab_model(train.spec))
    summary["diffusers"]["params"] = n_params(diffusers_model()[0])
    ratio = summary["genlab"]["steps_per_s"] / summary["diffusers"]["steps_per_s"]
    result = {
        "benchmark": "DDPM on sklearn digits 1x8x8, U-Net widths (32, 64), T=1000 linear, eps, Adam 2e-4, batch 128",
        "command": f"{os.path.relpath(sys.executable)} benchmarks/ddpm_vs_diffusers.py --steps {args.steps} "
        f"--repeats {args.repeats} --threads {args.threads}",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} thread(s)",
        "versions": {"genlab": genlab.__version__, "diffusers": diffusers.__version__},
        "train_speed_ratio_genlab_over_diffusers": ratio,
        "sample_time_ratio_diffusers_over_genlab": summary["diffusers"]["sample_100_s"]
        / summary["genlab"]["sample_100_s"],
        **summary,
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    for lib in runs:
        s = summary[lib]
        print(
            f"{lib}: {s['params']} params, {s['steps_per_s']:.1f} steps/s, 100 samples (50 DDIM) "
            f"{s['sample_100_s']:.2f} s, FID {s['fid_547']:.2f} (547 samples) / {s['fid_100']:.2f} (100)"
        )
    print(f"training steps/s ratio genlab/diffusers = {ratio:.2f}; wrote {args.out}")


if __name__ == "__main__":
    main()
