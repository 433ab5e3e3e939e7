"""genlab's multimodal VAEs (MVAE, MMVAE, MoPoE) against MultiVae 1.0.3: the same networks, latent
size, data, batches, optimizer and number of steps, in one process. Run in the benchmark venv:

    .venv-bench/bin/python benchmarks/multimodal_vs_multivae.py   # writes results/multimodal_vs_multivae.json

The benchmark venv (git-ignored) holds the CPU torch wheel, MultiVae without its dependencies and
only the light packages its model code imports, and genlab itself::

    python3 -m venv .venv-bench && .venv-bench/bin/pip install torch==2.13.0
    .venv-bench/bin/pip install --no-deps multivae==1.0.3 pythae==0.1.2
    .venv-bench/bin/pip install numpy scipy scikit-learn pillow matplotlib safetensors pyyaml tqdm \
        pydantic cloudpickle typing_extensions nltk
    .venv-bench/bin/pip install --no-deps -e .

torchvision is not installed (pip would fetch a torch build of its own with it): MultiVae's data-set
modules import it at module level, for data sets and pictures this benchmark never uses, so
:func:`import_multivae` puts an inert stand-in module on ``sys.modules`` for the import only (any
use of it raises ImportError) and removes it afterwards. torchmetrics, pandas and imageio are
imported only by MultiVae's metrics, trainers and pythae's samplers, which are not used either.

Data
----
sklearn's 8x8 digits (genlab's split: the first 1,000 train, the last 447 test) as two modalities of
one example: ``x``, the image binarized at its middle grey level (level >= 8 of 0..16), with a
Bernoulli likelihood; ``label``, the class as one token of 10 (genlab's kind ``"tokens"``, shape
(1,)), with a categorical likelihood. MultiVae gets the same tensors (the label one-hot, which its
``"categorical"`` decoder distribution needs as the target).

Networks (identical in both libraries)
-----------------------------------------
genlab's own per-modality nets, ``build_model(name, spec, z_dim=16, hidden=128, channels=32,
text_decoder="independent", rescale=False)``: image encoder conv 1->32 (4x4, stride 2) -> linear 512->128 -> ReLU ->
linear 128->2x16 (mean, log-variance clamped to [-12, 8]); image decoder linear 16->512 -> ReLU ->
transposed conv 32->32 (4x4, stride 2) -> ReLU -> conv 32->1 (3x3), Bernoulli logits; label encoder
embedding 10->128 -> GRU(128) over its one token -> linear 128->2x16; label decoder MLP 16->128->10,
logits. MultiVae gets the very same modules: a second genlab model built from the same seed (so
the same initial weights) whose ``model.nets[m]`` are wrapped into pythae's ``BaseEncoder`` /
``BaseDecoder`` (``posterior(x)`` -> ``embedding``/``log_covariance``; ``dec(z)`` ->
``reconstruction``). Everything else, fusion, objective, likelihood code, sampling, estimators,
is each library's own. (``text_decoder="independent"`` pins the label decoder to an MLP; genlab's
default is an autoregressive GRU, which for a one-token "caption" adds cost but nothing else.)

Objectives, matched by configuration
--------------------------------------
mvae   MultiVae ``MVAEConfig(use_subsampling=True, k=0, warmup=0, beta=1)``; genlab ``mvae``:
       joint + unimodal ELBOs (no random subsets exist with two modalities), product of experts
       with the N(0, I) expert, one draw per ELBO, analytic KL. ``warmup=0`` turns off MultiVae's
       default 10-epoch KL annealing, which genlab does not have. The same objective; MultiVae
       encodes each modality once per subset holding it (twice a step), genlab once.
mmvae  MultiVae ``MMVAEConfig(K=k, prior_and_posterior_dist="normal", learn_prior=False,
       loss="iwae_looser")``; genlab ``mmvae(k=k, dreg=False)``: mixture of Gaussian experts, fixed
       N(0, I) prior, stratified IWAE-k over the experts; k = 1 by default (genlab's default: the
       stratified ELBO, one draw per expert). ``--mmvae-k 10 --dreg`` is the paper's objective and
       MultiVae's default (``loss="dreg_looser"``, genlab ``dreg=True``): ten times the decoder work.
       MultiVae's other defaults (Laplace posteriors with a softmax scale and a learned prior, the
       paper's choice) have no genlab counterpart and are switched off. MultiVae's loss is summed
       over the batch, genlab's averaged: Adam's update does not depend on that constant factor (but
       for its eps), so it is left as is. Given the same noise, the two losses and gradients agree
       to float precision (as do MVAE's).
mopoe  MultiVae ``MoPoEConfig(beta=1)``; genlab ``mopoe``: mixture of the products of experts of the 3
       non-empty subsets. Two differences remain, each library's own choice: (a) MultiVae (as the
       authors' code) adds the N(0, I) expert to the product of the full subset, genlab's products
       have none; (b) MultiVae's estimator gives each example one draw from one subset's posterior
       (the batch cut into 3 equal parts, one subset each) and decodes it once, plus the
       weight-averaged KLs of all subsets; genlab's default (``stratified=True``) also gives each
       example one subset (assigned in turn along the batch from a random offset) and decodes one
       draw, with that subset's analytic KL. (``--set stratified=false`` on genlab's side averages
       all 3 subsets' ELBOs: lower variance, three times the decoder work.)
Likelihood rescaling (genlab's default ``rescale=True``) is switched off on genlab's side, as
MultiVae's ``uses_likelihood_rescaling`` is by default.

What is timed
-------------
As in benchmarks/flows_vs_peers.py. genlab: its real training loop, ``genlab.Trainer(...).fit()``
with evaluation, sampling, checkpoints and the progress bar off (it still checks every loss for
NaN and logs metrics). MultiVae: the loop of its ``BaseTrainer.train_step`` without the DataLoader,
``out = model(DatasetOutput(data=batch)); zero_grad; out.loss.backward(); step``. The same data in
memory, the same index batches (a seeded ``randperm`` per epoch, tail dropped, as the Trainer draws
them), the same optimizer (``torch.optim.AdamW(lr, weight_decay=0, fused=True)``, the Trainer's), the
same steps and torch threads (1 by default). Each repeat trains a fresh model per library from the
same seed (the first for ``--steps``: its models are the ones evaluated; the others for
``--timing-steps``, for the median's sake); the libraries take turns every ``--chunk`` steps. genlab's
``Trainer.fit()`` reseeds torch's generator (with the run's seed) every time it is called, so its
noise restarts at every turn (the draws meet other batches each time); MultiVae's loop reseeds the
same way at the start of each turn, so that both libraries draw the same noise: MVAE and MMVAE then
train the same computation in both (up to the order of float roundings, which grows apart over
the steps). We report the median steps/s over repeats and the ratio genlab / MultiVae.

Floors: the networks' work in one step alone, for the least network work each library's objective
needs: encoders once on the batch B, decoders per objective (mvae 2 passes of B, mmvae 2 passes of
k*B, mopoe 1 in both: genlab's stratified estimator, 3 with ``stratified=false``). "matmul": every
linear layer and convolution as its matrix products (forward, weight gradient, input gradient but
for the data; a convolution as its im2col product, without gathering or scattering the patches),
each at its fastest layout with hot operands, as in flows_vs_peers: 1 / (floor * steps/s) bounds the
speed-up any implementation could reach. "torch kernels": the same with the convolutions as torch's
own kernels (the fastest of the contiguous / channels-last layouts of input and weight). "networks":
the shared networks run as the torch modules they are (activations, layout copies and autograd
included) on those passes, with a trivial loss: what any library running these modules pays; the
step time beyond it is what the library's own code (fusion, objective, likelihoods, optimizer, loop)
costs.

Quality (of the first repeat's models)
----------------------------------------
bound (genlab's IWAE-k, both; k = ``--iwae-k``): ``log_prob({"x", "label"}, k)`` in nats per test
    example; for MultiVae's trained networks, through a genlab model of the same family with those
    weights loaded. The generative model p(z) p(x|z) p(label|z) is the same network in both, so
    this is one estimator of one quantity (its proposal q is genlab's fusion of the trained encoders).
own estimate: MultiVae's ``compute_joint_nll(K=k)`` (what its LikelihoodsEvaluator reports by
    default), negated and per example; genlab's own is the line above. MultiVae's is a lower bound
    for MVAE only: for MMVAE it draws all k latents of the test set from one expert chosen at
    random, for MoPoE each example's from one subset's posterior (chosen by the example's position),
    but weighs them with the whole mixture's density, so its estimate can exceed log p.
coherence image->label: each test image translated to a label, the fraction equal to its true
    label. "mean": z at the posterior mean and the most likely label (genlab ``translate(mean=True)``,
    MultiVae ``predict(return_mean=True)`` and argmax); "sampled": one z from the posterior and one
    label from the decoder (genlab ``translate()``; MultiVae ``predict()`` and a categorical draw).
coherence label->image: each test example's label translated to an image (as above: "mean", pixels
    with p > 1/2; "sampled", Bernoulli pixels), read by a logistic regression trained once on the
    binarized training images; the fraction read as the source label. The reader's accuracy on the
    real test images is the ceiling. With "mean" each class gives one image, so this is the
    fraction of classes (weighted by frequency) whose one prototype is read right; "sampled" is the
    finer measure.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import statistics
import sys
import time
import types
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import genlab
from genlab import DataSpec, TrainConfig, Trainer
from genlab.data.base import TensorDataset
from genlab.metrics import coherence

HERE = Path(__file__).resolve().parent
LIBS = ("genlab", "multivae")
MODELS = ("mvae", "mmvae", "mopoe")
KEYS = ("x", "label")
N_CLASSES = 10
TORCHVISION_STUBS = (
    "torchvision",
    "torchvision.datasets",
    "torchvision.datasets.utils",
    "torchvision.models",
    "torchvision.transforms",
    "torchvision.utils",
)


# --- MultiVae, imported without torchvision ---------------------------------------------------------
def _inert_module(name: str) -> types.ModuleType:
    """A stand-in module whose every attribute is a class that can be defined, subclassed and
    instantiated at import time (MultiVae's data sets use ``ToTensor()`` as a default argument), but
    whose instances raise ImportError when called."""
    mod = types.ModuleType(name)
    mod.__path__ = []  # a package, so that ``from torchvision.x import y`` finds its submodules

    def getattr_(attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)

        def unavailable(self: Any, *a: Any, **k: Any) -> None:
            raise ImportError(f"{name}.{attr}: torchvision is not installed in the benchmark venv")

        return type(attr, (), {"__init__": lambda self, *a, **k: None, "__call__": unavailable})

    mod.__getattr__ = getattr_  # type: ignore[method-assign]
    return mod


def import_multivae() -> types.ModuleType:
    """``import multivae.models`` with an inert ``torchvision`` in ``sys.modules`` for the import only
    (see the module docstring); a real torchvision, if installed, is used as it is."""
    try:
        import torchvision  # noqa: F401

        stubs: tuple[str, ...] = ()
    except ImportError:
        stubs = TORCHVISION_STUBS
    for n in stubs:
        sys.modules[n] = _inert_module(n)
    for n in stubs:
        parent, _, child = n.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, sys.modules[n])
    try:
        import multivae.models
    finally:
        for n in stubs:
            sys.modules.pop(n, None)
    return multivae.models


# --- data -------------------------------------------------------------------------------------
def load_data() -> dict[str, dict[str, Tensor]]:
    """{"train"|"test": {"x": binary images [N, 1, 8, 8] float, "label": ids [N, 1] long,
    "onehot": [N, 10] float}}, identical for both libraries."""
    out = {}
    for split in ("train", "test"):
        ds = genlab.load_dataset("digits", split)
        y = ds.tensors["y"].long()
        out[split] = {
            "x": (ds.tensors["x"] >= 0.5).float(),  # level >= 8 of 0..16
            "label": y[:, None],
            "onehot": nn.functional.one_hot(y, N_CLASSES).float(),
        }
    return out


def data_spec() -> DataSpec:
    image = DataSpec(name="x", kind="image", shape=(1, 8, 8), levels=2, num_classes=N_CLASSES)
    label = DataSpec(
        name="label",
        kind="tokens",
        shape=(1,),
        dtype="int64",
        value_range=None,
        levels=N_CLASSES,
        vocab=tuple(str(i) for i in range(N_CLASSES)),
    )
    return DataSpec(
        name="digits-label",
        kind="multimodal",
        shape=(1, 8, 8),
        levels=2,
        num_classes=N_CLASSES,
        modalities={"x": image, "label": label},
    )


# --- models -------------------------------------------------------------------------------------
def build_genlab(name: str, cfg: dict[str, Any], seed: int) -> nn.Module:
    torch.manual_seed(seed)
    extra: dict[str, Any] = {"k": cfg["mmvae_k"], "dreg": cfg["dreg"]} if name == "mmvae" else {}
    return genlab.build_model(
        name,
        data_spec(),
        z_dim=cfg["z_dim"],
        hidden=cfg["hidden"],
        channels=cfg["channels"],
        text_decoder="independent",
        rescale=False,
        **extra,
    )


def build_multivae(name: str, cfg: dict[str, Any], seed: int) -> nn.Module:
    """MultiVae's model of the family around genlab's per-modality nets (same seed: same weights)."""
    mv = import_multivae()
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn.base_architectures import BaseDecoder, BaseEncoder

    class Encoder(BaseEncoder):
        def __init__(self, net: nn.Module, onehot: bool) -> None:
            super().__init__()
            self.net, self.onehot = net, onehot

        def forward(self, x: Tensor) -> Any:
            mu, logvar = self.net.posterior(x.argmax(-1, keepdim=True) if self.onehot else x)
            return ModelOutput(embedding=mu, log_covariance=logvar)

    class Decoder(BaseDecoder):
        def __init__(self, dec: nn.Module) -> None:
            super().__init__()
            self.dec = dec

        def forward(self, z: Tensor) -> Any:
            return ModelOutput(reconstruction=self.dec(z))  # image: [N, 1, 8, 8] logits; label: [N, 10]

    nets = build_genlab(name, cfg, seed).nets
    encoders = {k: Encoder(nets[k], k == "label") for k in KEYS}
    decoders = {k: Decoder(nets[k].dec) for k in KEYS}
    common = dict(n_modalities=2, latent_dim=cfg["z_dim"], decoders_dist={"x": "bernoulli", "label": "categorical"})
    if name == "mvae":
        config = mv.MVAEConfig(**common, use_subsampling=True, k=0, warmup=0, beta=1.0)
        return mv.MVAE(config, encoders, decoders)
    if name == "mmvae":
        config = mv.MMVAEConfig(
            **common,
            K=cfg["mmvae_k"],
            prior_and_posterior_dist="normal",
            learn_prior=False,
            beta=1.0,
            loss="dreg_looser" if cfg["dreg"] else "iwae_looser",
        )
        return mv.MMVAE(config, encoders, decoders)
    config = mv.MoPoEConfig(**common, beta=1.0)
    return mv.MoPoE(config, encoders, decoders)


def genlab_twin(name: str, cfg: dict[str, Any], model: nn.Module, lib: str) -> nn.Module:
    """A genlab model of the family with the trained networks of ``model`` (either library's)."""
    if lib == "genlab":
        return model
    twin = build_genlab(name, cfg, 0)
    for k in KEYS:
        twin.nets[k].load_state_dict(model.encoders[k].net.state_dict())
    return twin


# --- training ---------------------------------------------------------------------------------
class Run:
    """One library training one fresh model; ``advance(k)`` runs k more steps and returns the
    seconds they took."""

    def __init__(self, lib: str, name: str, cfg: dict[str, Any], data: dict[str, Tensor], seed: int = 0) -> None:
        self.lib, self.name, self.cfg, self.data = lib, name, cfg, data
        if lib == "genlab":
            self.model = build_genlab(name, cfg, seed)
            tc = TrainConfig(
                steps=1,
                batch_size=cfg["batch"],
                lr=cfg["lr"],
                seed=seed,
                eval_every=0,
                sample_every=0,
                checkpoint_every=0,
                progress=False,
            )
            train = TensorDataset({"x": data["x"], "label": data["label"]}, data_spec())
            self.trainer = Trainer(self.model, train, None, tc, out_dir=None)  # type: ignore[arg-type]
            self.trainer.cfg.steps = 0  # advance() raises it chunk by chunk; fit() continues from self.step
            return
        from pythae.data.datasets import DatasetOutput

        self.batch_of = lambda idx: DatasetOutput(data={"x": data["x"][idx], "label": data["onehot"][idx]})
        self.model = build_multivae(name, cfg, seed)
        self.opt = torch.optim.AdamW(
            [p for p in self.model.parameters() if p.requires_grad],
            lr=cfg["lr"],
            betas=(0.9, 0.999),
            weight_decay=0.0,
            fused=True,
        )  # = genlab's Trainer
        self.gen = torch.Generator().manual_seed(seed)  # the Trainer's batching, step for step
        self.perm, self.pos = torch.empty(0, dtype=torch.long), 0
        self.seed = seed
        np.random.seed(seed)

    def advance(self, k: int) -> float:
        if self.lib == "genlab":  # the real loop: Trainer.fit continues up to cfg.steps
            self.trainer.cfg.steps += k
            t0 = time.perf_counter()
            self.trainer.fit()
            return time.perf_counter() - t0
        n, bs = len(self.data["x"]), min(self.cfg["batch"], len(self.data["x"]))
        torch.manual_seed(self.seed)  # as genlab's Trainer.fit() does at every call: the same noise
        self.model.train()
        t0 = time.perf_counter()
        for _ in range(k):
            if self.pos + bs > len(self.perm):
                self.perm, self.pos = torch.randperm(n, generator=self.gen), 0
            batch = self.batch_of(self.perm[self.pos : self.pos + bs])
            self.pos += bs
            loss = self.model(batch).loss
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        return time.perf_counter() - t0


def train_all(
    libs: list[str], name: str, cfg: dict[str, Any], data: dict[str, Tensor], steps: int, chunk: int, shift: int = 0
) -> dict[str, tuple[float, Run]]:
    """Train one fresh model per library for ``steps`` steps, interleaved every ``chunk`` steps
    (rotating which library goes first). Returns {lib: (seconds, run)}."""
    runs = {lib: Run(lib, name, cfg, data) for lib in libs}
    secs = {lib: 0.0 for lib in libs}
    done, i = 0, shift
    while done < steps:
        k = min(chunk, steps - done)
        order = libs[i % len(libs) :] + libs[: i % len(libs)]
        for lib in order:
            secs[lib] += runs[lib].advance(k)
        done, i = done + k, i + 1
    return {lib: (secs[lib], runs[lib]) for lib in libs}


# --- the floors ---------------------------------------------------------------------------------------
def _best(calls: list[Callable[[], Any]]) -> float:
    """Seconds of one call of the fastest of ``calls``: warmed up, the fastest of 7 timings of ~20 ms
    each (a floor: other load on the machine can only add time)."""
    best = math.inf
    for f in calls:
        for _ in range(3):
            f()
        t0 = time.perf_counter()
        f()
        reps = max(3, min(500, int(0.02 / max(time.perf_counter() - t0, 1e-7))))
        for _ in range(7):
            t0 = time.perf_counter()
            for _ in range(reps):
                f()
            best = min(best, (time.perf_counter() - t0) / reps)
    return best


@functools.cache
def _product_time(m: int, k: int, n: int) -> float:
    """Seconds of one (m, k) @ (k, n) product at its fastest layout (as flows_vs_peers' floor)."""
    a, b, at, bt = torch.randn(m, k), torch.randn(k, n), torch.randn(k, m), torch.randn(n, k)
    return _best(
        [
            lambda: torch.mm(a, b),
            lambda: torch.mm(a, bt.t()),
            lambda: torch.mm(at.t(), b),
            lambda: torch.mm(at.t(), bt.t()),
            lambda: torch.mm(bt, at),
        ]
    )


def _gemm_time(m: int, k: int, n: int, input_grad: bool = True) -> float:
    """A layer that is one product (m, k) @ (k, n) in the forward pass: the forward, the weight
    gradient (n, m, k) and, unless its input is the data, the input gradient (m, n, k)."""
    return sum(_product_time(*s) for s in [(m, k, n), (n, m, k)] + ([(m, n, k)] if input_grad else []))


def _conv_time(
    x_shape: tuple[int, ...], w_shape: tuple[int, ...], stride: int, padding: int, transposed: bool, input_grad: bool
) -> float:
    """torch's own convolution kernels alone: forward and backward (weight, bias and, unless the
    input is the data, input gradients), the fastest of the contiguous / channels-last layouts of
    input and weight."""
    aten = torch.ops.aten
    args = ([stride] * 2, [padding] * 2, [1, 1], transposed, [0, 0], 1)
    calls = []
    for fx in (torch.contiguous_format, torch.channels_last):
        for fw in (torch.contiguous_format, torch.channels_last):
            x = torch.randn(x_shape).contiguous(memory_format=fx)
            w = torch.randn(w_shape).contiguous(memory_format=fw)
            b = torch.randn(w_shape[1] if transposed else w_shape[0])
            go = torch.randn_like(aten.convolution(x, w, b, *args))

            def f(x: Tensor = x, w: Tensor = w, b: Tensor = b, go: Tensor = go) -> None:
                aten.convolution(x, w, b, *args)
                aten.convolution_backward(go, x, w, [b.shape[0]], *args, [input_grad, True, True])

            calls.append(f)
    return _best(calls)


_NET_TIMES: dict[tuple[Any, ...], dict[str, float]] = {}


def net_times(cfg: dict[str, Any], n: int, kernels: bool) -> dict[str, float]:
    """:func:`_net_times`, measured once per network sizes, n and ``kernels`` (shared by the models)."""
    key = (cfg["z_dim"], cfg["hidden"], cfg["channels"], n, kernels)
    if key not in _NET_TIMES:
        _NET_TIMES[key] = _net_times(cfg, n, kernels)
    return _NET_TIMES[key]


def _net_times(cfg: dict[str, Any], n: int, kernels: bool) -> dict[str, float]:
    """Seconds of the products of each network's forward and backward on n examples: encoders
    "enc_x", "enc_label" (no gradient for the data), decoders "dec_x", "dec_label". A convolution
    counts as its im2col product (``kernels=False``: the arithmetic, as a matrix product at its
    best, without the gathering and scattering of patches) or as torch's own kernels (``True``)."""
    z, h, c = cfg["z_dim"], cfg["hidden"], cfg["channels"]
    if kernels:
        conv_in = _conv_time((n, 1, 8, 8), (c, 1, 4, 4), 2, 1, False, False)
        conv_t = _conv_time((n, c, 4, 4), (c, c, 4, 4), 2, 1, True, True)
        conv_out = _conv_time((n, c, 8, 8), (1, c, 3, 3), 1, 1, False, True)
    else:
        conv_in = _gemm_time(n * 16, 1 * 16, c, input_grad=False)  # 16 output positions, 1 x 4 x 4 patches
        conv_t = _gemm_time(n * 16, c, c * 16)  # 16 input positions, each to a c x 4 x 4 patch
        conv_out = _gemm_time(n * 64, c * 9, 1)  # 64 output positions, c x 3 x 3 patches
    return {
        # conv 1 -> c (4x4, stride 2): 8x8 -> 4x4; linear c*16 -> h; head h -> 2z
        "enc_x": conv_in + _gemm_time(n, c * 16, h) + _gemm_time(n, h, 2 * z),
        # GRU(h) over one token: input and hidden projections h -> 3h (the initial state is a
        # constant: no gradient), then the head h -> 2z
        "enc_label": _gemm_time(n, h, 3 * h) + _gemm_time(n, h, 3 * h, input_grad=False) + _gemm_time(n, h, 2 * z),
        # linear z -> c*16; transposed conv c -> c (4x4, stride 2): 4x4 -> 8x8; conv c -> 1 (3x3)
        "dec_x": _gemm_time(n, z, c * 16) + conv_t + conv_out,
        "dec_label": _gemm_time(n, z, h) + _gemm_time(n, h, N_CLASSES),
    }


def floors(name: str, cfg: dict[str, Any], kernels: bool) -> dict[str, float]:
    """Seconds per training step of the networks' products alone, per library (module docstring)."""
    b, k = cfg["batch"], cfg["mmvae_k"]
    at_b = net_times(cfg, b, kernels)
    enc = at_b["enc_x"] + at_b["enc_label"]
    dec_b = at_b["dec_x"] + at_b["dec_label"]
    if name == "mvae":
        return {lib: enc + 2 * dec_b for lib in LIBS}
    if name == "mmvae":
        at_kb = net_times(cfg, k * b, kernels) if k > 1 else at_b
        return {lib: enc + 2 * (at_kb["dec_x"] + at_kb["dec_label"]) for lib in LIBS}
    return {"genlab": enc + 3 * dec_b, "multivae": enc + dec_b}


def network_floor(name: str, cfg: dict[str, Any], data: dict[str, Tensor]) -> dict[str, float]:
    """Seconds per training step of the shared networks alone, as the torch modules they are
    (elementwise layers, layout copies and autograd included): each encoder once on a batch, then
    the decoder passes of each library's objective (as in :func:`floors`) on latents that depend on
    both encoders, forward and backward of a trivial loss; no fusion, no likelihood, no optimizer.
    The step time beyond it is what each library's own code costs."""
    b, k = cfg["batch"], cfg["mmvae_k"]
    nets = build_genlab(name, cfg, 0).nets
    x, label = data["x"][:b], data["label"][:b]
    passes = {"mvae": (2, 2, 1), "mmvae": (2, 2, k), "mopoe": (1, 1, 1)}[name]  # genlab, MultiVae, draws

    def step(n_passes: int, draws: int) -> None:
        (mu_x, lv_x), (mu_l, lv_l) = nets["x"].posterior(x), nets["label"].posterior(label)
        z = (mu_x + mu_l + lv_x + lv_l).repeat(draws, 1)  # (draws * B, Z)
        loss = sum(nets[m].dec(z).sum() for m in KEYS for _ in range(n_passes))
        loss.backward()  # type: ignore[union-attr]

    out = {}
    for lib, n_passes in zip(LIBS, passes[:2]):
        out[lib] = _best([lambda n_passes=n_passes: step(n_passes, passes[2])])
    return out


# --- quality ----------------------------------------------------------------------------------
@torch.no_grad()
def iwae_bound(model: nn.Module, test: dict[str, Tensor], k: int) -> float:
    """Mean over the test set of genlab's IWAE-k bound on log p(x, label), nats per example."""
    model.eval()
    chunk = max(1, 20_000 // k)
    vals = [
        model.log_prob({"x": test["x"][i : i + chunk], "label": test["label"][i : i + chunk]}, k=k)
        for i in range(0, len(test["x"]), chunk)
    ]
    return float(torch.cat(vals).double().mean())


@torch.no_grad()
def multivae_bound(model: nn.Module, test: dict[str, Tensor], k: int) -> float:
    """MultiVae's own estimate, ``-compute_joint_nll(K=k)`` per test example (nats)."""
    from pythae.data.datasets import DatasetOutput

    model.eval()
    nll = model.compute_joint_nll(DatasetOutput(data={"x": test["x"], "label": test["onehot"]}), K=k, batch_size_K=k)
    return float(-nll / len(test["x"]))


def train_reader(train: dict[str, Tensor]) -> Any:
    """Logistic regression reading the digit of a binary 8x8 image (trained on the train split)."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=0.1, max_iter=2000).fit(
        train["x"].reshape(len(train["x"]), -1).numpy(), train["label"][:, 0].numpy()
    )


@torch.no_grad()
def translations(lib: str, model: nn.Module, test: dict[str, Tensor], mean: bool) -> tuple[Tensor, Tensor]:
    """(labels [N] translated from the test images, binary images [N, 1, 8, 8] from the test labels)
    through each library's own API: ``mean``, z at the posterior mean and the decoder's most likely
    output (pixels with p > 1/2); else one draw of z from the posterior and one of the output."""
    model.eval()
    if lib == "genlab":
        labels = model.translate({"x": test["x"]}, ["label"], mean=mean)["label"][:, 0]
        images = model.translate({"label": test["label"]}, ["x"], mean=mean)["x"]
        return labels, (images > 0.5).float()
    from pythae.data.datasets import DatasetOutput

    inputs = DatasetOutput(data={"x": test["x"], "label": test["onehot"]})
    logits = model.predict(inputs, cond_mod="x", gen_mod="label", return_mean=mean)["label"]
    pixels = model.predict(inputs, cond_mod="label", gen_mod="x", return_mean=mean)["x"]  # Bernoulli logits
    if mean:
        return logits.argmax(-1), (pixels > 0).float()
    return torch.distributions.Categorical(logits=logits).sample(), torch.bernoulli(torch.sigmoid(pixels))


def quality(
    name: str, cfg: dict[str, Any], run: Run, test: dict[str, Tensor], reader: Any, k: int, seed: int = 0
) -> dict[str, float]:
    torch.manual_seed(seed)
    np.random.seed(seed)
    truth = test["label"][:, 0].numpy()
    out = {}
    for mean in (True, False):
        labels, images = translations(run.lib, run.model, test, mean)
        read = reader.predict(images.reshape(len(images), -1).numpy())
        how = "mean" if mean else "sampled"
        out[f"coherence_image_to_label_{how}"] = round(coherence(labels.numpy(), truth)["coherence"], 4)
        out[f"coherence_label_to_image_{how}"] = round(coherence(read, truth)["coherence"], 4)
    out["bound_genlab_iwae_nats"] = round(iwae_bound(genlab_twin(name, cfg, run.model, run.lib), test, k), 3)
    if run.lib == "multivae":
        out["bound_own_nats"] = round(multivae_bound(run.model, test, k), 3)
    else:
        out["bound_own_nats"] = out["bound_genlab_iwae_nats"]
    return out


# --- the report -------------------------------------------------------------------------------------
def markdown(results: dict[str, Any]) -> str:
    """The results as a Markdown table, one row per model and library."""
    nan = float("nan")
    rows = [
        "| model | library | steps/s | genlab / MultiVae | floors, ms/step: matmul / torch kernels / networks "
        "| coherence image→label: mean / sampled | coherence label→image: mean / sampled "
        "| held-out bound, genlab's IWAE (nats) | own estimate (nats) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results["models"].items():
        for lib, q in r["quality"].items():
            ratio = f"**x{r['genlab_speedup']:.2f}**" if lib == "genlab" and "genlab_speedup" in r else ""
            rows.append(
                f"| {name} | {lib} | {r['steps_per_s'][lib]:.1f} | {ratio} "
                f"| {r['matmul_floor_ms_per_step'][lib]:.1f} / {r['kernel_floor_ms_per_step'][lib]:.1f}"
                f" / {r['network_floor_ms_per_step'][lib]:.1f} "
                + "".join(
                    f"| {q.get(key + '_mean', nan):.3f} / {q.get(key + '_sampled', nan):.3f} "
                    for key in ("coherence_image_to_label", "coherence_label_to_image")
                )
                + f"| {q.get('bound_genlab_iwae_nats', nan):.2f} | {q.get('bound_own_nats', nan):.2f} |"
            )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--libs", default=",".join(LIBS))
    ap.add_argument("--steps", type=int, default=1000, help="training steps of the first repeat (the evaluated models)")
    ap.add_argument("--timing-steps", type=int, default=300, help="training steps of the further repeats (timing only)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--z-dim", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--mmvae-k", type=int, default=1, help="MMVAE's importance samples per expert (K)")
    ap.add_argument("--dreg", action="store_true", help="MMVAE: DReG gradients (MultiVae's dreg_looser)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=100, help="steps each library runs before the other takes over")
    ap.add_argument("--iwae-k", type=int, default=250, help="importance samples of the held-out bounds")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: robust on a busy CPU)")
    ap.add_argument("--out", default=str(HERE / "results" / "multimodal_vs_multivae.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    libs, names = args.libs.split(","), args.models.split(",")
    cfg = {
        "steps": args.steps,
        "batch": args.batch,
        "lr": args.lr,
        "z_dim": args.z_dim,
        "hidden": args.hidden,
        "channels": args.channels,
        "mmvae_k": args.mmvae_k,
        "dreg": args.dreg,
    }
    import_multivae()
    data = load_data()
    t_start = time.perf_counter()
    results: dict[str, Any] = {
        "command": "python " + " ".join([os.path.relpath(__file__, HERE.parent), *sys.argv[1:]]),
        "torch": torch.__version__,
        "versions": {lib: version(lib) for lib in libs},
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "load_avg_at_start": os.getloadavg()[0],
        "repeats": args.repeats,
        "steps": args.steps,
        "timing_steps": args.timing_steps,
        "chunk": args.chunk,
        "config": cfg,
        "iwae_k": args.iwae_k,
        "data": "sklearn digits binarized at level 8 (x, Bernoulli) + class label (one token of 10, categorical); "
        f"{len(data['train']['x'])} train / {len(data['test']['x'])} test",
        "optimizer": "torch.optim.AdamW(weight_decay=0, fused=True) for both libraries",
        "networks": "genlab's per-modality nets in both (MultiVae: wrapped in pythae BaseEncoder/BaseDecoder)",
        "multivae_import": "torchvision not installed: an inert stand-in module during `import multivae.models`",
        "models": {},
    }
    reader = train_reader(data["train"])
    ceiling = float(
        reader.score(data["test"]["x"].reshape(len(data["test"]["x"]), -1).numpy(), data["test"]["label"][:, 0])
    )
    results["label_to_image_reader_accuracy_on_real_test_images"] = round(ceiling, 4)
    print(f"reader of binary digits: {ceiling:.3f} on the real test images (the label->image ceiling)", flush=True)
    for name in names:
        t0 = time.perf_counter()
        train_all(libs, name, cfg, data["train"], 20, 10)  # warm-up: imports, allocator, thread pool
        times: dict[str, list[float]] = {lib: [] for lib in libs}
        first: dict[str, Run] = {}
        for r in range(args.repeats):
            steps = args.steps if r == 0 else args.timing_steps
            for lib, (sec, run) in train_all(libs, name, cfg, data["train"], steps, args.chunk, shift=r).items():
                times[lib].append(steps / sec)
                first.setdefault(lib, run)
                print(f"{name:6s} repeat {r} {lib:9s} {times[lib][-1]:8.1f} steps/s ({steps} steps)", flush=True)
        med = {lib: statistics.median(times[lib]) for lib in libs}
        t1 = time.perf_counter()
        floor, kfloor = floors(name, cfg, kernels=False), floors(name, cfg, kernels=True)
        nfloor = network_floor(name, cfg, data["train"])
        t2 = time.perf_counter()
        q = {lib: quality(name, cfg, first[lib], data["test"], reader, args.iwae_k) for lib in libs}
        t3 = time.perf_counter()
        res: dict[str, Any] = {
            "steps_per_s": {lib: round(med[lib], 2) for lib in libs},
            "steps_per_s_all": {lib: [round(v, 2) for v in times[lib]] for lib in libs},
            # The step's products alone, back to back (module docstring): 1 / (floor * steps_per_s)
            # is the largest speed-up over a library that any implementation could reach; with
            # torch's own convolution kernels (the networks as they are), the kernel floor's.
            "matmul_floor_ms_per_step": {lib: round(1e3 * floor[lib], 3) for lib in LIBS},
            "kernel_floor_ms_per_step": {lib: round(1e3 * kfloor[lib], 3) for lib in LIBS},
            "network_floor_ms_per_step": {lib: round(1e3 * nfloor[lib], 3) for lib in LIBS},
            "max_possible_speedup": {lib: round(1 / (floor[lib] * med[lib]), 2) for lib in libs},
            "max_speedup_same_kernels": {lib: round(1 / (kfloor[lib] * med[lib]), 2) for lib in libs},
            "max_speedup_same_networks": {lib: round(1 / (nfloor[lib] * med[lib]), 2) for lib in libs},
            # what each library's own code (fusion, objective, likelihoods, optimizer, loop) costs per step
            "ms_per_step_beyond_networks": {lib: round(1e3 * (1 / med[lib] - nfloor[lib]), 2) for lib in libs},
            "quality": q,
            "seconds": {"training": round(t1 - t0, 1), "floors": round(t2 - t1, 1), "quality": round(t3 - t2, 1)},
        }
        if "genlab" in med and "multivae" in med:
            res["genlab_speedup"] = round(med["genlab"] / med["multivae"], 2)
        results["models"][name] = res
        print(f"\n{name}: steps/s (median of {args.repeats} repeats), quality of the first repeat's models")
        for lib in libs:
            print(
                f"  {lib:9s} {med[lib]:8.1f} steps/s = {1e3 / med[lib]:.2f} ms/step; floors: matmul"
                f" {1e3 * floor[lib]:.2f} ms, torch kernels {1e3 * kfloor[lib]:.2f} ms,"
                f" networks {1e3 * nfloor[lib]:.2f} ms\n            {q[lib]}"
            )
        if "genlab_speedup" in res:
            print(f"  genlab / MultiVae: x{res['genlab_speedup']:.2f}")
        print(f"  seconds: {res['seconds']}")
        print(flush=True)
    results["seconds"] = round(time.perf_counter() - t_start, 1)
    results["load_avg_at_end"] = os.getloadavg()[0]  # the floors are timed alone: trust them on a quiet machine
    results["markdown"] = markdown(results)
    print(results["markdown"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out} ({results['seconds']:.0f} s)")
    return results


if __name__ == "__main__":
    main()
