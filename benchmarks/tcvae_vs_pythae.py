"""genlab vs pythae 0.1.2: beta-TCVAE and FactorVAE on digits, timed in one run (not a test; run by hand).

The pattern of vae_vs_pythae.py: both libraries train the same encoder/decoder (64-256-256-(mu, log-var
of 16), decoder 16-256-256-64 Bernoulli logits, ReLU; pythae through pythae_side.MLPEncoder/MLPDecoder,
genlab with arch="mlp"), batch 128, the same number of optimizer steps of the VAE, each through its own
trainer as a user would run it: genlab.Trainer (evaluation, samples, checkpoints and progress bar off)
and pythae's trainer (no eval set, no callbacks; BaseTrainer for BetaTCVAE, AdversarialTrainer for
FactorVAE). Only the training call is timed. Runs alternate between the libraries per repeat; medians
are reported. Held-out ELBO: pythae_side.bernoulli_elbo_nats on the 447 test digits (10 posterior draws),
the same estimator for both libraries; the TC weighting is a training objective only.

beta-TCVAE (genlab ``betatcvae`` / pythae ``BetaTCVAE``): alpha = 1, beta = 6, gamma = 1 (pythae's default
beta is 1, which is the plain VAE objective; 6 is genlab's default and the paper's choice), minibatch
stratified sampling in both (pythae ``use_mss=True``, its default; genlab ``estimator="mss"``), N = 1000
(pythae passes len(train set) to the model each step; genlab's Trainer calls ``on_train_data``). Same work
per step: one encoder/decoder pass over the 128-example batch and the 128 x 128 x 16 density matrix.
(pythae's mss weight matrix is the reference code's, with the stratum weight misplaced in rows M-2/M-1;
genlab's is the corrected one: same cost.) Adam lr 1e-3 in both (genlab AdamW, weight decay 0).

FactorVAE (genlab ``factorvae`` / pythae ``FactorVAE``): gamma = 6 in both (pythae's default is 2,
genlab's 6). pythae's discriminator is fixed unless replaced: 16 -> 5 x 1000 LeakyReLU(0.2) -> 2 logits;
genlab's is set to ``disc_hidden=(1000,) * 5`` -> 1 logit (a 2-way softmax is a sigmoid of the logit
difference; the last layer has 1000 fewer weights) with ``nn.LeakyReLU()``'s default slope 0.01 (no cost
difference). VAE Adam lr 1e-3 betas (0.9, 0.999); discriminator Adam lr 1e-4 betas (0.5, 0.9) in both
(genlab ``lr_d=1e-4``, its default betas; pythae ``discriminator_optimizer_params``).
The two steps differ (read from the sources):
  pythae: the batch of 128 is split at random into two halves of 64. Half 1: encode, decode, ELBO,
    TC = mean(D(z1)[0] - D(z1)[1]). Half 2: encode, sample z2, permute each dimension, detach. Disc loss
    on D(z1) (not detached) and D(perm(z2)). Backward of the VAE loss (retain graph) and of the disc loss,
    then both optimizers step. Because D(z1) is not detached, the disc loss's gradient also reaches the
    encoder, which the autoencoder optimizer then applies. D forward rows per step: 64 + 64.
  genlab: the whole batch of 128: encode, decode, ELBO, TC = mean(logit D(z)); disc loss on D(z.detach())
    and D(permute_dims(z.detach())) of the same batch (the paper permutes a second batch). Backward of the
    VAE loss, VAE step, backward of the disc loss, disc step. D forward rows per step: 128 (TC) + 128 + 128.
  So per optimizer step genlab runs the 5 x 1000 discriminator (which dominates the FLOPs here) on 3x as
  many rows and the ELBO on 2x as many examples as pythae: the FactorVAE steps/s ratio is per optimizer
  step at equal batch, not per FLOP; "disc_rows_per_step" in the JSON records it.

Run in the benchmark venv (pythae + torch 2.13.0 CPU + genlab installed editable):
    .venv-bench/bin/python benchmarks/tcvae_vs_pythae.py [--steps 2000] [--repeats 3] [--threads 1]
Writes benchmarks/results/tcvae_vs_pythae.json.
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

sys.path.insert(0, str(Path(__file__).parent))

from pythae_side import MLPDecoder, MLPEncoder, _optimizer_steps, bernoulli_elbo_nats, load_digits_split  # noqa: E402

import genlab  # noqa: E402
from genlab import TrainConfig, Trainer  # noqa: E402

HIDDEN, Z_DIM, BATCH, LR = 256, 16, 128, 1e-3
TC_ALPHA, TC_BETA, TC_GAMMA = 1.0, 6.0, 1.0  # beta-TCVAE weights of mi, tc, dwkl
FACTOR_GAMMA = 6.0  # FactorVAE weight of the discriminator's TC estimate
LR_D, BETAS_D = 1e-4, (0.5, 0.9)  # discriminator Adam
DISC_HIDDEN = (1000,) * 5  # pythae's FactorVAEDiscriminator
PAIRS = ("betatcvae", "factorvae")


@torch.no_grad()
def genlab_elbo(model, x_test: torch.Tensor, n_samples: int = 10, seed: int = 0) -> float:
    """pythae_side.bernoulli_elbo_nats on genlab's model. The logits are ``decoder_params(z)[:, 0]``:
    ``decode`` returns the Bernoulli mean sigmoid(logits), not logits (vae_vs_pythae.genlab_elbo, which
    treats ``decode``'s output as logits, is stale since that change)."""
    model.eval()
    mu, logvar = model.posterior(x_test)
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=-1)
    gen = torch.Generator().manual_seed(seed)
    x = x_test.flatten(1)
    total = torch.zeros(x.shape[0], dtype=torch.float64)
    for _ in range(n_samples):
        z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=gen, dtype=mu.dtype)
        logits = model.decoder_params(z)[:, 0].flatten(1)
        rec = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
        total += (rec - kl).double()
    return float((total / n_samples).mean())


def _n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def train_genlab(name: str, steps: int, seed: int = 0) -> dict:
    train = genlab.load_dataset("digits", "train")
    test = genlab.load_dataset("digits", "test")
    torch.manual_seed(seed)
    common = dict(z_dim=Z_DIM, hidden=(HIDDEN, HIDDEN), arch="mlp", likelihood="bernoulli")
    if name == "betatcvae":
        extra = dict(alpha=TC_ALPHA, beta=TC_BETA, gamma=TC_GAMMA, estimator="mss")
    else:
        extra = dict(gamma=FACTOR_GAMMA, disc_hidden=DISC_HIDDEN, lr_d=LR_D)
    model = genlab.build_model(name, train.spec, **common, **extra)
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
    )
    trainer = Trainer(model, train, None, cfg, out_dir=None)
    t0 = time.perf_counter()
    trainer.fit()
    seconds = time.perf_counter() - t0
    out = {
        "steps": trainer.step,
        "seconds": seconds,
        "steps_per_s": trainer.step / seconds,
        "test_elbo_nats": genlab_elbo(model, test.tensors["x"]),
    }
    if name == "betatcvae":
        out["dataset_size"] = model.dataset_size
    else:
        opt = trainer.optimizers["disc"].param_groups[0]
        out.update(disc_params=_n_params(model.disc), disc_lr=opt["lr"], disc_betas=list(opt["betas"]))
        out["disc_steps"] = _optimizer_steps(trainer.optimizers["disc"])
    return out


def train_pythae(name: str, x_train: np.ndarray, x_test: np.ndarray, steps: int, seed: int = 0) -> dict:
    """pythae's BetaTCVAE (BaseTrainer) or FactorVAE (AdversarialTrainer); timing and test ELBO."""
    from pythae.data.datasets import BaseDataset
    from pythae.models import BetaTCVAE, BetaTCVAEConfig, FactorVAE, FactorVAEConfig
    from pythae.trainers import AdversarialTrainer, AdversarialTrainerConfig, BaseTrainer, BaseTrainerConfig

    x_train = np.asarray(x_train, dtype=np.float32)
    n, x_dim = x_train.shape
    steps_per_epoch = math.ceil(n / BATCH)  # DataLoader keeps the last partial batch
    num_epochs = math.ceil(steps / steps_per_epoch)
    torch.manual_seed(seed)  # network init
    nets = dict(encoder=MLPEncoder(x_dim, HIDDEN, Z_DIM), decoder=MLPDecoder(x_dim, HIDDEN, Z_DIM))
    common = dict(input_dim=(x_dim,), latent_dim=Z_DIM, reconstruction_loss="bce")
    train_dataset = BaseDataset(torch.from_numpy(x_train), torch.zeros(n))
    with tempfile.TemporaryDirectory(prefix="pythae_bench_") as out_dir:
        loop = dict(
            output_dir=out_dir,
            per_device_train_batch_size=BATCH,
            per_device_eval_batch_size=BATCH,
            num_epochs=num_epochs,
            seed=seed,
            no_cuda=True,
        )
        if name == "betatcvae":
            cfg = BetaTCVAEConfig(**common, alpha=TC_ALPHA, beta=TC_BETA, gamma=TC_GAMMA, use_mss=True)
            model = BetaTCVAE(model_config=cfg, **nets)
            tcfg = BaseTrainerConfig(**loop, optimizer_cls="Adam", learning_rate=LR)
            trainer = BaseTrainer(model, train_dataset, None, tcfg, callbacks=None)
        else:
            model = FactorVAE(model_config=FactorVAEConfig(**common, gamma=FACTOR_GAMMA), **nets)
            tcfg = AdversarialTrainerConfig(
                **loop,
                autoencoder_optimizer_cls="Adam",
                autoencoder_learning_rate=LR,
                discriminator_optimizer_cls="Adam",
                discriminator_learning_rate=LR_D,
                discriminator_optimizer_params={"betas": BETAS_D},
            )
            trainer = AdversarialTrainer(model, train_dataset, None, tcfg, callbacks=None)
        assert len(trainer.train_loader) == steps_per_epoch
        t0 = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - t0
    opt = trainer.optimizer if name == "betatcvae" else trainer.autoencoder_optimizer
    real_steps = _optimizer_steps(opt)
    out = {
        "steps": real_steps,
        "seconds": seconds,
        "steps_per_s": real_steps / seconds,
        # ``model`` was trained in place: the weights after the last step (not pythae's "best on train" copy)
        "test_elbo_nats": bernoulli_elbo_nats(model.encoder, model.decoder, x_test, n_samples=10, seed=seed),
        "epochs": num_epochs,
    }
    if name == "factorvae":
        dopt = trainer.discriminator_optimizer
        out.update(
            disc_params=_n_params(model.discriminator),
            disc_lr=dopt.param_groups[0]["lr"],
            disc_betas=list(dopt.param_groups[0]["betas"]),
            disc_steps=_optimizer_steps(dopt),
        )
    return out


def _summary(rs: list[dict]) -> dict:
    out = {
        "steps": rs[0]["steps"],
        "steps_per_s_median": statistics.median(r["steps_per_s"] for r in rs),
        "steps_per_s_all": [round(r["steps_per_s"], 2) for r in rs],
        "test_elbo_nats_median": statistics.median(r["test_elbo_nats"] for r in rs),
        "test_elbo_nats_all": [round(r["test_elbo_nats"], 3) for r in rs],
    }
    extra = {k: v for k, v in rs[0].items() if k not in ("steps", "seconds", "steps_per_s", "test_elbo_nats")}
    return {**out, **extra}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2000, help="VAE optimizer steps for beta-TCVAE")
    ap.add_argument("--factor-steps", type=int, default=0, help="VAE optimizer steps for FactorVAE (0: --steps)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads for both libraries (0: torch's default)")
    ap.add_argument("--pairs", default=",".join(PAIRS), help="comma-separated subset of " + ", ".join(PAIRS))
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "tcvae_vs_pythae.json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import pythae

    pairs = [p for p in args.pairs.split(",") if p]
    assert all(p in PAIRS for p in pairs), pairs
    steps = {"betatcvae": args.steps, "factorvae": args.factor_steps or args.steps}
    x_tr, x_te = load_digits_split()
    runs = {p: {"genlab": [], "pythae": []} for p in pairs}
    for p in pairs:  # warm-up: first-call costs (thread pools, allocator) off the clock for both
        train_genlab(p, 24)
        train_pythae(p, x_tr, x_te, 16)
    for r in range(args.repeats):
        for p in pairs:
            order = ("genlab", "pythae") if r % 2 == 0 else ("pythae", "genlab")
            for lib in order:
                if lib == "genlab":
                    runs[p][lib].append(train_genlab(p, steps[p], seed=r))
                else:
                    runs[p][lib].append(train_pythae(p, x_tr, x_te, steps[p], seed=r))
            print(
                f"repeat {r} {p}: " + ", ".join(f"{k} {v[-1]['steps_per_s']:.2f} steps/s" for k, v in runs[p].items()),
                flush=True,
            )
    result: dict = {
        "benchmark": (
            "beta-TCVAE and FactorVAE, MLP 64-256-256-16 Bernoulli on sklearn digits (1000 train / 447 test),"
            " batch 128, VAE Adam lr 1e-3; steps/s per VAE optimizer step, each library's own trainer"
        ),
        "command": (
            f"{os.path.relpath(sys.executable)} benchmarks/tcvae_vs_pythae.py --steps {args.steps}"
            f" --factor-steps {steps['factorvae']} --repeats {args.repeats} --threads {args.threads}"
            f" --pairs {','.join(pairs)}"
        ),
        "date": time.strftime("%Y-%m-%d"),
        "machine": (
            f"{platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
        ),
        "versions": {
            "genlab": genlab.__version__,
            "pythae": pythae.__version__ if hasattr(pythae, "__version__") else "0.1.2",
        },
        "repeat_order": "alternating per repeat: even repeats genlab first, odd repeats pythae first",
    }
    if "betatcvae" in runs:
        result["betatcvae"] = {
            "settings": {"alpha": TC_ALPHA, "beta": TC_BETA, "gamma": TC_GAMMA, "estimator": "mss", "N": 1000},
            **{lib: _summary(rs) for lib, rs in runs["betatcvae"].items()},
        }
    if "factorvae" in runs:
        result["factorvae"] = {
            "settings": {
                "gamma": FACTOR_GAMMA,
                "disc": "16 -> 5 x 1000 LeakyReLU -> 2 logits (pythae) / 1 logit (genlab)",
                "lr_vae": LR,
                "lr_disc": LR_D,
                "betas_disc": list(BETAS_D),
            },
            "step_definitions": {
                "pythae": "batch split in halves of 64: ELBO + TC on half 1, D on 64 real (half 1) + 64 permuted"
                " (half 2); disc-loss gradient also reaches the encoder; both optimizers step after both backwards",
                "genlab": "ELBO + TC on all 128; D on 128 real (detached) + 128 permuted of the same batch;"
                " VAE step, then disc step",
            },
            "disc_rows_per_step": {"pythae": 128, "genlab": 384},
            "elbo_examples_per_step": {"pythae": 64, "genlab": 128},
            **{lib: _summary(rs) for lib, rs in runs["factorvae"].items()},
        }
    for p in pairs:
        g, q = result[p]["genlab"], result[p]["pythae"]
        result[p]["speedup_genlab_over_pythae"] = g["steps_per_s_median"] / q["steps_per_s_median"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for p in pairs:
        for lib in ("genlab", "pythae"):
            s = result[p][lib]
            print(
                f"{p:9s} {lib}: {s['steps_per_s_median']:.2f} steps/s "
                f"(test ELBO {s['test_elbo_nats_median']:.2f} nats, {s['steps']} steps)"
            )
        print(f"{p:9s} speed ratio genlab/pythae = {result[p]['speedup_genlab_over_pythae']:.2f}x")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
