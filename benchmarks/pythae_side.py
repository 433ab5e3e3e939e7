"""pythae side of the genlab-vs-pythae VAE benchmark (run in the separate .venv-bench).

Trains pythae's vanilla ``VAE`` with a custom MLP encoder/decoder on flattened 8x8 sklearn
digits through pythae's own ``BaseTrainer`` (its real training loop, as a user would run it),
times only ``trainer.train()``, and evaluates the test ELBO with the same formula genlab uses:

    ELBO(x) = E_q[log Bernoulli(x | logits)] - KL(q(z|x) || N(0, I))

with continuous targets x in [0, 1] (``-BCEWithLogits`` summed over the 64 dims), the
analytic Gaussian KL, and the expectation estimated with 1 reparameterized z per pass,
averaged over 10 passes with a fixed seed.

Notes on pythae's loop (pythae 0.1.2):
- it is epoch based: ``num_epochs`` epochs over a shuffled ``DataLoader`` with
  ``drop_last=False``, i.e. ceil(N / batch_size) optimizer steps per epoch; we pick
  ``num_epochs = ceil(steps / steps_per_epoch)`` and report the real count (read from Adam's
  per-parameter ``step`` state).
- pythae's "bce" loss is ``F.binary_cross_entropy`` on probabilities, so the decoder's
  ``reconstruction`` is ``sigmoid(logits)``; the raw logits are also returned and used for the
  evaluation (numerically stable BCE-with-logits).
- time inside ``train()`` includes pythae's per-epoch overheads: a tqdm progress bar per epoch,
  console logging of the epoch loss, a ``deepcopy`` of the model whenever the epoch's mean
  train loss improves (no eval set -> ``keep_best_on_train``), and saving the final model
  (state dict + cloudpickled encoder/decoder + json configs) to ``output_dir`` at the end.
  Data come through a per-item ``Dataset.__getitem__`` + ``default_collate``.
"""

from __future__ import annotations

import math
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from pythae.data.datasets import BaseDataset
from pythae.models import VAE, VAEConfig
from pythae.models.base.base_utils import ModelOutput
from pythae.models.nn import BaseDecoder, BaseEncoder
from pythae.trainers import BaseTrainer, BaseTrainerConfig


class MLPEncoder(BaseEncoder):
    """64 -> hidden -> hidden -> (mu, log_var) of z_dim, ReLU."""

    def __init__(self, x_dim: int, hidden: int, z_dim: int):
        BaseEncoder.__init__(self)
        self.body = nn.Sequential(
            nn.Linear(x_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
        )
        self.mu = nn.Linear(hidden, z_dim)
        self.log_var = nn.Linear(hidden, z_dim)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        h = self.body(x.reshape(x.shape[0], -1))
        return ModelOutput(embedding=self.mu(h), log_covariance=self.log_var(h))


class MLPDecoder(BaseDecoder):
    """z_dim -> hidden -> hidden -> 64 Bernoulli logits, ReLU.

    ``reconstruction`` is sigmoid(logits) because pythae's "bce" loss expects probabilities.
    """

    def __init__(self, x_dim: int, hidden: int, z_dim: int):
        BaseDecoder.__init__(self)
        self.net = nn.Sequential(
            nn.Linear(z_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, x_dim),
        )

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)

    def forward(self, z: torch.Tensor) -> ModelOutput:
        logits = self.net(z)
        return ModelOutput(reconstruction=torch.sigmoid(logits), logits=logits)


@torch.no_grad()
def bernoulli_elbo_nats(
    encoder: MLPEncoder, decoder: MLPDecoder, x: np.ndarray, *, n_samples: int = 10, seed: int = 0
) -> float:
    """Mean per-example ELBO (nats) on ``x``: 1 reparameterized z per pass, averaged over passes."""
    encoder.eval()
    decoder.eval()
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
    out = encoder(xt)
    mu, log_var = out.embedding, out.log_covariance
    std = torch.exp(0.5 * log_var)
    kl = -0.5 * torch.sum(1 + log_var - mu.pow(2) - log_var.exp(), dim=-1)  # [N]
    gen = torch.Generator().manual_seed(seed)
    total = torch.zeros(xt.shape[0], dtype=torch.float64)
    for _ in range(n_samples):
        eps = torch.randn(mu.shape, generator=gen, dtype=mu.dtype)
        z = mu + std * eps
        logits = decoder.logits(z)
        rec = -F.binary_cross_entropy_with_logits(logits, xt, reduction="none").sum(dim=-1)
        total += (rec - kl).double()
    return float((total / n_samples).mean())


def _optimizer_steps(optimizer: torch.optim.Optimizer) -> int:
    steps = [int(st["step"]) for st in optimizer.state.values() if "step" in st]
    return max(steps) if steps else 0


def train_pythae_vae(
    x_train: np.ndarray,
    x_test: np.ndarray,
    *,
    hidden: int = 256,
    z_dim: int = 16,
    batch_size: int = 128,
    steps: int = 2000,
    lr: float = 1e-3,
    seed: int = 0,
) -> dict:
    """Train pythae's VAE with pythae's BaseTrainer; return timing and test ELBO (nats/example)."""
    x_train = np.asarray(x_train, dtype=np.float32)
    x_test = np.asarray(x_test, dtype=np.float32)
    n, x_dim = x_train.shape

    steps_per_epoch = math.ceil(n / batch_size)  # DataLoader keeps the last partial batch
    num_epochs = math.ceil(steps / steps_per_epoch)

    torch.manual_seed(seed)  # network init
    model_config = VAEConfig(input_dim=(x_dim,), latent_dim=z_dim, reconstruction_loss="bce")
    model = VAE(
        model_config=model_config,
        encoder=MLPEncoder(x_dim, hidden, z_dim),
        decoder=MLPDecoder(x_dim, hidden, z_dim),
    )

    train_dataset = BaseDataset(torch.from_numpy(x_train), torch.zeros(n))

    with tempfile.TemporaryDirectory(prefix="pythae_bench_") as out_dir:
        training_config = BaseTrainerConfig(
            output_dir=out_dir,
            per_device_train_batch_size=batch_size,
            per_device_eval_batch_size=batch_size,
            num_epochs=num_epochs,
            optimizer_cls="Adam",
            learning_rate=lr,
            seed=seed,
            no_cuda=True,
        )
        trainer = BaseTrainer(
            model=model,
            train_dataset=train_dataset,
            eval_dataset=None,  # no per-epoch eval pass; pythae then keeps the best model on train
            training_config=training_config,
            callbacks=None,  # no wandb / mlflow / comet
        )
        assert len(trainer.train_loader) == steps_per_epoch

        t0 = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - t0

    real_steps = _optimizer_steps(trainer.optimizer)
    # ``model`` was trained in place: these are the weights after the last step (not pythae's
    # "best on train" copy that it saves as final_model; see test_elbo_nats_best_model).
    elbo = bernoulli_elbo_nats(model.encoder, model.decoder, x_test, n_samples=10, seed=seed)
    best = getattr(trainer, "_best_model", None)
    elbo_best = (
        bernoulli_elbo_nats(best.encoder, best.decoder, x_test, n_samples=10, seed=seed)
        if best is not None
        else float("nan")
    )
    return {
        "steps": real_steps,
        "seconds": seconds,
        "steps_per_s": real_steps / seconds,
        "test_elbo_nats": elbo,
        "epochs": num_epochs,
        "steps_per_epoch": steps_per_epoch,
        "torch_threads": torch.get_num_threads(),
        "test_elbo_nats_best_model": elbo_best,
    }


def load_digits_split() -> tuple[np.ndarray, np.ndarray]:
    """sklearn digits / 16, flattened to [N, 64] float32: first 1000 train, last 447 test."""
    from sklearn.datasets import load_digits

    x = (load_digits().images / 16.0).reshape(-1, 64).astype(np.float32)
    return x[:1000], x[-447:]


if __name__ == "__main__":
    x_tr, x_te = load_digits_split()
    print(train_pythae_vae(x_tr, x_te, steps=200))
