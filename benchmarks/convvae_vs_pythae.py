"""genlab vs pythae: pythae's own MNIST conv VAE nets, each through its library's trainer (by hand).

Both libraries train the *same* networks, pythae 0.1.2's ``Encoder_Conv_VAE_MNIST`` /
``Decoder_Conv_AE_MNIST`` from ``pythae.models.nn.benchmarks.mnist`` (conv 1-128-256-512-1024,
4x4 stride 2, BatchNorm + ReLU, linear heads to mu / log-var of 16; decoder linear 16 -> 1024x4x4,
transposed convs 1024-512-256-1 to 28x28, ending in a sigmoid), with pythae's VAE loss ("bce"):

    loss = mean_batch[ BCE(sigmoid output, x) summed over 784 pixels + KL(q(z|x) || N(0, I)) ]

Adam lr 1e-3 (genlab: AdamW, weight decay 0), batch 128, on the CPU. pythae runs through its
``BaseTrainer`` (no eval set, no callbacks) as a user runs it; genlab through ``genlab.Trainer``
(evaluation, samples, checkpoints and the progress bar off) with the nets wrapped in a minimal
:class:`~genlab.GenerativeModel` (:class:`PythaeNetsVAE`) whose loss is pythae's, line for line.
Only the training call is timed; repeats alternate genlab, pythae, floor so machine noise hits all.

Data: a user's ``.npz`` of 6,250 28x28 uint8 images written to a temp dir and read through genlab's
file path (``genlab.load_dataset(path, split)``, 80/10/10 split -> 5,000 train / 625 test): each
image is one of sklearn's 8x8 digits up-sampled bilinearly (Pillow) to 20x20, randomly rotated
(+-15 deg) and shifted (+-2 px) inside a 28x28 frame as MNIST centres its digits, then binarized
to {0, 255}, so the Bernoulli likelihood of pythae's "bce" loss is a true log-likelihood. pythae
gets the very train tensor genlab loaded.

Steps: pythae is epoch based (a DataLoader that keeps the last partial batch: 40 steps per epoch on
5,000 images, the last of 8 images); genlab drops the partial batch. ``--steps`` must be a multiple
of 40; both make exactly that many optimizer steps, and examples/s is reported beside steps/s.

Floor: the same nets, loss and a fused Adam in a bare Python loop on pre-sliced batches (no
trainer at all); floor / step time is the fraction of each library's step spent in the network
itself, i.e. what any trainer can at best remove.

Held-out ELBO (nats per image, the same estimator for both): on the 625 test images, BatchNorm in
eval mode, E_q[-BCE(decoder(z), x)] - KL with ``--elbo-samples`` reparameterized draws per image.

Run in the benchmark venv (pythae + torch 2.13.0 CPU + genlab editable):
    .venv-bench/bin/python benchmarks/convvae_vs_pythae.py --steps 120 --repeats 3 --threads 1
Writes benchmarks/results/convvae_vs_pythae.json. A step of these nets costs ~1.2 s on one idle
core (~5 s at load 10), so the 2026-12-02 result used ``--steps 40`` (one pythae epoch), then
``--overhead-only`` to add the tiny-net trainer overhead to the same file.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pythae.models.base.base_utils import ModelOutput
from pythae.models.nn import BaseDecoder, BaseEncoder
from torch import Tensor

import genlab
from genlab import TrainConfig, Trainer
from genlab.data.spec import DataSpec
from genlab.protocol import Capabilities, GenerativeModel

Z_DIM, BATCH, LR = 16, 128, 1e-3
N_FILE = 6250  # 80/10/10 -> 5,000 train, 625 validation, 625 test
SIDE = 28


# --- data -------------------------------------------------------------------------------------
def make_digits28(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` binarized 28x28 digit images, uint8 {0, 255} [n, 28, 28], and their labels [n].

    Each is an sklearn 8x8 digit (drawn with replacement) scaled bilinearly to 20x20, rotated by
    U(-15, 15) degrees and pasted at the centre of a 28x28 frame shifted by U{-2..2} pixels per
    axis (MNIST's 20x20 box in a 28x28 frame), then thresholded at half intensity."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(seed)
    src = (d.images / 16.0 * 255).round().astype(np.uint8)  # [1797, 8, 8]
    out = np.zeros((n, SIDE, SIDE), np.uint8)
    pick = rng.integers(0, len(src), n)
    angles = rng.uniform(-15, 15, n)
    shifts = rng.integers(-2, 3, (n, 2))
    for i in range(n):
        im = Image.fromarray(src[pick[i]]).resize((20, 20), Image.BILINEAR)
        im = im.rotate(float(angles[i]), resample=Image.BILINEAR, expand=False)
        frame = Image.new("L", (SIDE, SIDE), 0)
        frame.paste(im, (4 + int(shifts[i, 0]), 4 + int(shifts[i, 1])))
        out[i] = np.where(np.asarray(frame) >= 128, 255, 0).astype(np.uint8)
    return out, d.target[pick].astype(np.int64)


# --- the identical nets, as a genlab model ------------------------------------------------------
def pythae_nets(tiny: bool = False) -> tuple[torch.nn.Module, torch.nn.Module]:
    """pythae's MNIST conv VAE encoder and decoder (latent 16), freshly initialised. ``tiny``: one
    linear layer each way with the same interfaces, so that a step costs next to nothing in the
    network and a trainer's own per-step cost shows (the overhead measurement)."""
    from pythae.models import VAEConfig
    from pythae.models.nn.benchmarks.mnist import Decoder_Conv_AE_MNIST, Encoder_Conv_VAE_MNIST

    if tiny:
        return _TinyEncoder(), _TinyDecoder()
    cfg = VAEConfig(input_dim=(1, SIDE, SIDE), latent_dim=Z_DIM, reconstruction_loss="bce")
    return Encoder_Conv_VAE_MNIST(cfg), Decoder_Conv_AE_MNIST(cfg)


class _TinyEncoder(BaseEncoder):
    """784 -> (mu, log-var of 16), one linear layer; pythae's encoder output names."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(SIDE * SIDE, 2 * Z_DIM)

    def forward(self, x: Tensor) -> ModelOutput:
        mu, log_var = self.lin(x.flatten(1)).chunk(2, dim=-1)
        return ModelOutput(embedding=mu, log_covariance=log_var)


class _TinyDecoder(BaseDecoder):
    """16 -> 784 Bernoulli means (sigmoid), one linear layer; pythae's decoder output name."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(Z_DIM, SIDE * SIDE)

    def forward(self, z: Tensor) -> ModelOutput:
        return ModelOutput(reconstruction=torch.sigmoid(self.lin(z)).reshape(-1, 1, SIDE, SIDE))


def pythae_vae_loss(encoder: torch.nn.Module, decoder: torch.nn.Module, x: Tensor) -> Tensor:
    """pythae 0.1.2's ``VAE.forward`` + ``loss_function`` ("bce"): batch mean of the summed BCE
    of the sigmoid reconstruction plus the analytic KL, one reparameterized z per image."""
    out = encoder(x)
    mu, log_var = out.embedding, out.log_covariance
    std = torch.exp(0.5 * log_var)
    z = mu + std * torch.randn_like(std)
    recon = decoder(z)["reconstruction"]
    rec = F.binary_cross_entropy(recon.reshape(x.shape[0], -1), x.reshape(x.shape[0], -1), reduction="none").sum(-1)
    kl = -0.5 * torch.sum(1 + log_var - mu.pow(2) - log_var.exp(), dim=-1)
    return (rec + kl).mean(0)


class PythaeNetsVAE(GenerativeModel):
    """A VAE over images [B, 1, 28, 28] in [0, 1] built from given encoder/decoder modules with
    pythae's interfaces (encoder -> ``embedding``, ``log_covariance`` [B, z]; decoder ->
    ``reconstruction``, Bernoulli means [B, 1, 28, 28]). ``loss`` is pythae's "bce" VAE loss;
    ``log_prob`` a one-draw ELBO in nats per image; ``sample`` returns decoder means."""

    likelihood = "bound"
    capabilities = Capabilities(sample=True, encode=True, notes="pythae's MNIST conv nets")

    def __init__(self, spec: DataSpec, encoder: torch.nn.Module, decoder: torch.nn.Module) -> None:
        super().__init__(spec)
        self.encoder, self.decoder = encoder, decoder

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """``{"loss": scalar}``: pythae's objective on ``batch["x"]``."""
        return {"loss": pythae_vae_loss(self.encoder, self.decoder, batch["x"])}

    def log_prob(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """[B] one-draw ELBO (nats) of images x [B, 1, 28, 28] in [0, 1]."""
        return elbo_nats(self.encoder, self.decoder, x, n_samples=1)

    @torch.no_grad()
    def sample(self, n: int, cond: Tensor | None = None, *, generator: torch.Generator | None = None) -> Tensor:
        """[n, 1, 28, 28] decoder means at z ~ N(0, I)."""
        z = torch.randn(n, Z_DIM, generator=generator)
        return self.decoder(z)["reconstruction"]

    def encode(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """[B, 16] posterior means."""
        return self.encoder(x).embedding


@torch.no_grad()
def elbo_nats(
    encoder: torch.nn.Module,
    decoder: torch.nn.Module,
    x: Tensor,
    *,
    n_samples: int = 4,
    seed: int = 0,
    chunk: int = 250,
) -> Tensor:
    """[N] ELBO per image in nats: mean over ``n_samples`` reparameterized draws of
    -BCE(decoder mean, x) summed over pixels, minus the analytic KL. Eval mode (BatchNorm running
    statistics); the same function scores both libraries' nets."""
    encoder.eval()
    decoder.eval()
    gen = torch.Generator().manual_seed(seed)
    out = []
    for xb in x.split(chunk):
        o = encoder(xb)
        mu, log_var = o.embedding, o.log_covariance
        kl = -0.5 * torch.sum(1 + log_var - mu.pow(2) - log_var.exp(), dim=-1)
        total = torch.zeros(len(xb), dtype=torch.float64)
        for _ in range(n_samples):
            z = mu + torch.exp(0.5 * log_var) * torch.randn(mu.shape, generator=gen)
            p = decoder(z)["reconstruction"].flatten(1)
            rec = -F.binary_cross_entropy(p, xb.flatten(1), reduction="none").sum(-1)
            total += (rec - kl).double()
        out.append(total / n_samples)
    return torch.cat(out)


# --- the three contestants ------------------------------------------------------------------------
def train_genlab(train, x_test: Tensor, steps: int, seed: int, elbo_samples: int, tiny: bool = False) -> dict:
    """genlab.Trainer on the wrapped nets; only ``fit()`` is timed."""
    torch.manual_seed(seed)
    enc, dec = pythae_nets(tiny)
    model = PythaeNetsVAE(train.spec, enc, dec)
    cfg = TrainConfig(
        steps=steps,
        batch_size=BATCH,
        lr=LR,
        weight_decay=0.0,
        seed=seed,
        eval_every=0,
        sample_every=0,
        checkpoint_every=0,
        progress=False,
        device="cpu",
        threads=torch.get_num_threads(),  # pinned: the same threads as pythae, whatever genlab's default
    )
    trainer = Trainer(model, train, None, cfg, out_dir=None)
    t0 = time.perf_counter()
    trainer.fit()
    seconds = time.perf_counter() - t0
    return {
        "steps": trainer.step,
        "examples": trainer.step * BATCH,
        "seconds": seconds,
        "steps_per_s": trainer.step / seconds,
        "examples_per_s": trainer.step * BATCH / seconds,
        "test_elbo_nats": float(elbo_nats(enc, dec, x_test, n_samples=elbo_samples).mean()),
    }


def train_pythae(x_train: Tensor, x_test: Tensor, steps: int, seed: int, elbo_samples: int, tiny: bool = False) -> dict:
    """pythae's VAE + BaseTrainer on the same nets and tensor; only ``trainer.train()`` is timed
    (it includes pythae's per-epoch tqdm bar, logging, best-on-train deepcopy and final save)."""
    from pythae.data.datasets import BaseDataset
    from pythae.models import VAE, VAEConfig
    from pythae.trainers import BaseTrainer, BaseTrainerConfig

    n = len(x_train)
    per_epoch = math.ceil(n / BATCH)
    if steps % per_epoch:
        raise ValueError(f"--steps must be a multiple of pythae's {per_epoch} steps per epoch")
    torch.manual_seed(seed)
    enc, dec = pythae_nets(tiny)
    model = VAE(VAEConfig(input_dim=(1, SIDE, SIDE), latent_dim=Z_DIM, reconstruction_loss="bce"), enc, dec)
    with tempfile.TemporaryDirectory(prefix="pythae_conv_") as out_dir:
        tcfg = BaseTrainerConfig(
            output_dir=out_dir,
            per_device_train_batch_size=BATCH,
            per_device_eval_batch_size=BATCH,
            num_epochs=steps // per_epoch,
            optimizer_cls="Adam",
            learning_rate=LR,
            seed=seed,
            no_cuda=True,
        )
        trainer = BaseTrainer(model, BaseDataset(x_train, torch.zeros(n)), None, tcfg, callbacks=None)
        t0 = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - t0
    real = max(int(st["step"]) for st in trainer.optimizer.state.values())
    examples = (steps // per_epoch) * n
    return {
        "steps": real,
        "examples": examples,
        "seconds": seconds,
        "steps_per_s": real / seconds,
        "examples_per_s": examples / seconds,
        "test_elbo_nats": float(elbo_nats(model.encoder, model.decoder, x_test, n_samples=elbo_samples).mean()),
    }


def network_floor(x_train: Tensor, steps: int, seed: int, tiny: bool = False) -> dict:
    """The nets, pythae's loss and a fused Adam in a bare loop over pre-sliced batches: the cost of
    the network step alone, with no trainer, data loader or logging."""
    torch.manual_seed(seed)
    enc, dec = pythae_nets(tiny)
    enc.train()
    dec.train()
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=LR, fused=True)
    batches = [x_train[i * BATCH : (i + 1) * BATCH].clone() for i in range(len(x_train) // BATCH)]
    loss = pythae_vae_loss(enc, dec, batches[0])  # first call (allocator, kernels) off the clock
    loss.backward()
    t0 = time.perf_counter()
    for s in range(steps):
        opt.zero_grad(set_to_none=True)
        pythae_vae_loss(enc, dec, batches[s % len(batches)]).backward()
        opt.step()
    seconds = time.perf_counter() - t0
    return {"steps": steps, "seconds": seconds, "steps_per_s": steps / seconds}


def trainer_overhead(train, x_test: Tensor, steps: int, repeats: int) -> dict:
    """Each trainer's own cost per step (ms), measured with the tiny nets: the step time of each
    trainer minus that of the bare loop on the same tiny nets and loss (the 128x784 BCE dominates
    it). genlab's: batch gather, finiteness check, logging; pythae's: per-item Dataset + collate,
    tqdm, best-on-train deepcopy and final save (the last two scale with the model: here they are
    tiny). Alternating repeats, medians."""
    x_train = train.tensors["x"]
    ms: dict[str, list[float]] = {"genlab": [], "pythae": [], "floor": []}
    for r in range(repeats):
        ms["floor"].append(1e3 / network_floor(x_train, steps, r, tiny=True)["steps_per_s"])
        ms["genlab"].append(1e3 / train_genlab(train, x_test[:8], steps, r, 1, tiny=True)["steps_per_s"])
        ms["pythae"].append(1e3 / train_pythae(x_train, x_test[:8], steps, r, 1, tiny=True)["steps_per_s"])
    med = {k: statistics.median(v) for k, v in ms.items()}
    return {
        "steps": steps,
        "ms_per_step_median": med,
        "trainer_ms_per_step": {k: med[k] - med["floor"] for k in ("genlab", "pythae")},
        "ms_per_step_all": {k: [round(t, 3) for t in v] for k, v in ms.items()},
    }


# --- main ---------------------------------------------------------------------------------------
def _summ(rs: list[dict]) -> dict:
    s = {
        "steps": rs[0]["steps"],
        "steps_per_s_median": statistics.median(r["steps_per_s"] for r in rs),
        "steps_per_s_all": [round(r["steps_per_s"], 4) for r in rs],
    }
    if "examples_per_s" in rs[0]:
        s["examples_per_s_median"] = statistics.median(r["examples_per_s"] for r in rs)
        s["test_elbo_nats_median"] = statistics.median(r["test_elbo_nats"] for r in rs)
        s["test_elbo_nats_all"] = [round(r["test_elbo_nats"], 2) for r in rs]
    return s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=120, help="optimizer steps per run (multiple of 40)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--floor-steps", type=int, default=20, help="steps of the bare-loop floor per repeat")
    ap.add_argument("--elbo-samples", type=int, default=4)
    ap.add_argument("--overhead-steps", type=int, default=400, help="steps of the tiny-net overhead runs (0: off)")
    ap.add_argument(
        "--overhead-only", action="store_true", help="only add the tiny-net overhead to an existing --out file"
    )
    ap.add_argument("--threads", type=int, default=1, help="torch threads for all (0: torch's default)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "convvae_vs_pythae.json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import pythae

    load = [os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="convvae_data_") as tmp:
        x, y = make_digits28(N_FILE)
        path = os.path.join(tmp, "digits28.npz")
        np.savez(path, x=x, y=y)
        train = genlab.load_dataset(path, "train")
        test = genlab.load_dataset(path, "test")
    x_train, x_test = train.tensors["x"], test.tensors["x"]
    assert x_train.shape == (5000, 1, SIDE, SIDE) and set(x_train.unique().tolist()) == {0.0, 1.0}

    if args.overhead_only:
        result = json.loads(Path(args.out).read_text())
        result["trainer_overhead"] = trainer_overhead(train, x_test, args.overhead_steps, args.repeats)
        result["trainer_overhead"]["load_average_1_5_15"] = [round(v, 2) for v in os.getloadavg()]
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result["trainer_overhead"], indent=2))
        return

    # Warm-up: first-call costs (thread pools, allocator, pythae imports) off the clock for all.
    train_genlab(train, x_test[:8], 2, 0, 1)
    sub = x_train[: 2 * BATCH]
    train_pythae(sub, x_test[:8], 2, 0, 1)

    runs: dict[str, list[dict]] = {"genlab": [], "pythae": [], "floor": []}
    for r in range(args.repeats):
        runs["genlab"].append(train_genlab(train, x_test, args.steps, r, args.elbo_samples))
        runs["pythae"].append(train_pythae(x_train, x_test, args.steps, r, args.elbo_samples))
        runs["floor"].append(network_floor(x_train, args.floor_steps, r))
        load.append(os.getloadavg())
        print(
            f"repeat {r}: " + ", ".join(f"{k} {v[-1]['steps_per_s']:.3f} steps/s" for k, v in runs.items()),
            f"load {load[-1]}",
            flush=True,
        )
    overhead = trainer_overhead(train, x_test, args.overhead_steps, args.repeats) if args.overhead_steps else None
    summary = {k: _summ(v) for k, v in runs.items()}
    g, p, fl = (summary[k]["steps_per_s_median"] for k in ("genlab", "pythae", "floor"))
    result = {
        "benchmark": (
            "pythae 0.1.2 MNIST conv VAE nets (Encoder_Conv_VAE_MNIST / Decoder_Conv_AE_MNIST, z 16, "
            "BCE on sigmoid output), Adam lr 1e-3, batch 128, 5,000 28x28 binarized digit images from a .npz"
        ),
        "command": (
            f"{os.path.relpath(sys.executable)} benchmarks/convvae_vs_pythae.py --steps {args.steps}"
            f" --repeats {args.repeats} --threads {args.threads}"
        ),
        "date": time.strftime("%Y-%m-%d"),
        "machine": (
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads"
        ),
        "load_average_1_5_15": [list(map(lambda v: round(v, 2), la)) for la in load],
        "versions": {"genlab": genlab.__version__, "pythae": getattr(pythae, "__version__", "0.1.2")},
        "data": {"train": len(x_train), "test": len(x_test), "shape": list(x_train.shape[1:])},
        "speedup_genlab_over_pythae_steps": g / p,
        "speedup_genlab_over_pythae_examples": summary["genlab"]["examples_per_s_median"]
        / summary["pythae"]["examples_per_s_median"],
        "fraction_of_step_in_network": {"genlab": g / fl, "pythae": p / fl},
        "elbo_samples": args.elbo_samples,
        **summary,
    }
    if overhead is not None:
        result["trainer_overhead"] = overhead
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for k in ("genlab", "pythae"):
        s = summary[k]
        print(f"{k} {s['steps_per_s_median']:.3f} steps/s (held-out ELBO {s['test_elbo_nats_median']:.1f} nats)")
    print(f"network floor {fl:.3f} steps/s; genlab at {g / fl:.0%} of it, pythae at {p / fl:.0%}")
    print(f"speed ratio genlab/pythae = {g / p:.3f}x (steps/s); wrote {args.out}")


if __name__ == "__main__":
    main()
