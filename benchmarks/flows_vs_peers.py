"""genlab's flows against normflows, zuko and nflows: same architecture, data, batches, optimizer
and number of steps, in one process. Run in the benchmark venv (peers installed there):

    /work/main/.venv-bench/bin/python benchmarks/flows_vs_peers.py            # writes results/flows_vs_peers.json

Tasks
-----
realnvp-moons   RealNVP: 8 affine couplings, each net an MLP 1 -> 256 -> 256 -> 2 (ReLU), halves
                alternating, N(0, I) base; 2-D moons (genlab's generator: 20,000 train, 5,000 test).
maf-digits64    MAF: 5 MADE layers (64 -> 256 -> 256 -> 128, ReLU), orders alternating natural /
                reversed, N(0, I) base; sklearn digits flattened to 64-d continuous vectors: levels
                dequantized once with fixed uniform noise, (level + u) / 17, then shifted and scaled
                by the training set's overall mean and std (1,000 train / 447 test, the digits
                split); 300 steps, before the models overfit the 1,000 images.

What is timed
-------------
genlab: its real training loop, ``genlab.Trainer(...).fit()`` with evaluation, sampling,
checkpoints and the progress bar off (it still checks every loss for NaN and logs metrics).
Peers: the plain loop their documentation shows, ``loss = -log_prob(batch).mean(); zero_grad;
backward; step``. Everything else is identical: the data already in memory as one tensor, the same
index batches (a seeded ``randperm`` per epoch, incomplete tail dropped, exactly as the Trainer
draws them), the same optimizer (``torch.optim.AdamW(lr, weight_decay=0, fused=True)``, which is
Adam, the Trainer's optimizer), the same steps and the same torch thread count (1 by default: on
a shared, busy 2-core machine two OpenMP threads make small ops up to 10x slower and erratic).
Each repeat trains a fresh model per library from the same seed; the libraries take turns every
``--chunk`` steps (the genlab Trainer continues with ``fit()`` up to a raised ``steps``), so a
change in machine load hits all of them alike. We report the median steps/s over repeats (after
a short warm-up) and the held-out log-likelihood (nats per example, mean over the test set) of the
trained model. Differences in how each library parameterizes the affine scale (genlab:
3 tanh(a/3); normflows: exp(a); zuko: a soft-clipped exp; nflows: sigmoid(a + 2) + 1e-3) are each
library's own choice and kept. normflows' MAF layer is wrapped in ``nf.flows.Reverse`` so that its
density pass is one MADE evaluation (unwrapped, normflows trains a MaskedAffineAutoregressive layer
through its D-pass inverse).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
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

HERE = Path(__file__).resolve().parent
LIBS = ("genlab", "normflows", "zuko", "nflows")
TASKS: dict[str, dict[str, Any]] = {
    "realnvp-moons": dict(dim=2, couplings=8, hidden=256, batch=256, steps=1000, lr=1e-3),
    # 300 steps (38 epochs of the 1,000 training digits): beyond that every library's MAF overfits
    # and the held-out likelihood falls for all of them.
    "maf-digits64": dict(dim=64, layers=5, hidden=256, batch=128, steps=300, lr=1e-3),
}


# --- data -------------------------------------------------------------------------------------
def load_task_data(task: str) -> tuple[Tensor, Tensor]:
    """(train, test) float32 tensors [N, D], identical for every library."""
    if task == "realnvp-moons":
        return genlab.load_dataset("moons", "train").tensors["x"], genlab.load_dataset("moons", "test").tensors["x"]
    rng = np.random.default_rng(0)
    out = []
    for split in ("train", "test"):
        lv = genlab.load_dataset("digits", split).tensors["x"].reshape(-1, 64).numpy() * 16  # levels 0..16
        out.append((np.round(lv) + rng.random(lv.shape)) / 17.0)
    # One global scale, not a per-pixel one: pixels that are (almost) always 0 in the training
    # set would otherwise get a std of ~0.02 and turn every rare stroke in a test image into a
    # 15-sigma outlier, so that held-out numbers measure that artefact instead of the models.
    mean, std = out[0].mean(), out[0].std()
    return tuple(torch.from_numpy(((a - mean) / std).astype(np.float32)) for a in out)  # type: ignore[return-value]


# --- models: (module, log_prob(x) -> [B]) ---------------------------------------------------------
Built = tuple[nn.Module, Callable[[Tensor], Tensor]]


def mlp(i: int, h: int, o: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(i, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, o))


def build(lib: str, task: str, cfg: dict[str, Any]) -> Built:
    d, h = cfg["dim"], cfg["hidden"]
    if lib == "genlab":
        spec = DataSpec(name=task, kind="vector", shape=(d,), value_range=None)
        if task == "realnvp-moons":
            m = genlab.build_model("realnvp", spec, n_couplings=cfg["couplings"], hidden=h, depth=2, actnorm=False)
        else:
            m = genlab.build_model("maf", spec, n_layers=cfg["layers"], hidden=(h, h), actnorm=False)
        return m, m.log_prob
    if lib == "normflows":
        import normflows as nf

        flows: list[nn.Module] = []
        if task == "realnvp-moons":
            for _ in range(cfg["couplings"]):
                net = nf.nets.MLP([d // 2, h, h, 2 * (d - d // 2)], leaky=0.0, init_zeros=True)
                flows += [
                    nf.flows.AffineCouplingBlock(net, scale_map="exp", split_mode="channel"),
                    nf.flows.Permute(d, mode="swap"),
                ]
        else:
            for i in range(cfg["layers"]):
                made = nf.flows.MaskedAffineAutoregressive(d, h, num_blocks=1, use_residual_blocks=False)
                flows.append(nf.flows.Reverse(made))  # one MADE pass in the density direction
                if i < cfg["layers"] - 1:
                    p = nf.flows.Permute(d, mode="shuffle")
                    p.perm.copy_(torch.arange(d - 1, -1, -1))
                    p.inv_perm.copy_(torch.arange(d - 1, -1, -1))
                    flows.append(p)
        model = nf.NormalizingFlow(nf.distributions.DiagGaussian(d, trainable=False), flows)
        return model, model.log_prob
    if lib == "zuko":
        import zuko

        if task == "realnvp-moons":
            flow = zuko.flows.RealNVP(d, transforms=cfg["couplings"], hidden_features=(h, h))
        else:
            flow = zuko.flows.MAF(d, transforms=cfg["layers"], hidden_features=(h, h))
        return flow, lambda x: flow().log_prob(x)
    if lib == "nflows":
        from nflows.distributions import StandardNormal
        from nflows.flows import Flow, MaskedAutoregressiveFlow
        from nflows.transforms import AffineCouplingTransform, CompositeTransform

        if task == "maf-digits64":
            flow = MaskedAutoregressiveFlow(
                d, h, num_layers=cfg["layers"], num_blocks_per_layer=1, use_residual_blocks=False
            )
        else:

            class Net(nn.Module):
                def __init__(self, i: int, o: int) -> None:
                    super().__init__()
                    self.net = mlp(i, h, o)

                def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
                    return self.net(x)

            masks = [torch.tensor([1 if (j + i) % 2 else -1 for j in range(d)]) for i in range(cfg["couplings"])]
            flow = Flow(CompositeTransform([AffineCouplingTransform(m, Net) for m in masks]), StandardNormal([d]))
        return flow, flow.log_prob
    raise ValueError(f"unknown library {lib!r}")


# --- training ---------------------------------------------------------------------------------
def make_optimizer(params: Any, lr: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), weight_decay=0.0, fused=True)  # = genlab's Trainer


class Run:
    """One library training one fresh model; ``advance(k)`` runs k more steps and returns the
    seconds they took. Runs are advanced chunk by chunk in turn, so that a change in machine load
    hits every library alike."""

    def __init__(
        self, lib: str, task: str, cfg: dict[str, Any], x: Tensor, seed: int = 0, precision: str = "fp32"
    ) -> None:
        torch.manual_seed(seed)
        self.lib, self.x, self.cfg, self.bf16 = lib, x, cfg, precision == "bf16"
        self.model, self.log_prob = build(lib, task, cfg)
        if lib == "genlab":
            spec = DataSpec(name=task, kind="vector", shape=(cfg["dim"],), value_range=None)
            tc = TrainConfig(
                steps=1,
                batch_size=cfg["batch"],
                lr=cfg["lr"],
                seed=seed,
                eval_every=0,
                sample_every=0,
                checkpoint_every=0,
                progress=False,
                precision=precision,
            )
            self.trainer = Trainer(self.model, TensorDataset({"x": x}, spec), None, tc, out_dir=None)  # type: ignore[arg-type]
            self.trainer.cfg.steps = 0  # advance() raises it chunk by chunk; fit() continues from self.step
            return
        self.opt = make_optimizer(self.model.parameters(), cfg["lr"])
        self.gen = torch.Generator().manual_seed(seed)  # the Trainer's batching, step for step
        self.perm, self.pos = torch.empty(0, dtype=torch.long), 0

    def advance(self, k: int) -> float:
        if self.lib == "genlab":  # the real loop: Trainer.fit continues up to cfg.steps
            self.trainer.cfg.steps += k
            t0 = time.perf_counter()
            self.trainer.fit()
            return time.perf_counter() - t0
        x, n, bs = self.x, len(self.x), min(self.cfg["batch"], len(self.x))
        self.model.train()
        t0 = time.perf_counter()
        for _ in range(k):
            if self.pos + bs > len(self.perm):
                self.perm, self.pos = torch.randperm(n, generator=self.gen), 0
            batch = x[self.perm[self.pos : self.pos + bs]]
            self.pos += bs
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):  # what genlab's precision="bf16" does
                loss = -self.log_prob(batch).float().mean()
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        return time.perf_counter() - t0


def train_all(
    libs: list[str],
    task: str,
    cfg: dict[str, Any],
    x: Tensor,
    steps: int,
    chunk: int,
    shift: int = 0,
    precision: str = "fp32",
) -> dict[str, tuple[float, Run]]:
    """Train one fresh model per library for ``steps`` steps, interleaved every ``chunk`` steps
    (rotating which library goes first). Returns {lib: (seconds, run)}."""
    runs = {lib: Run(lib, task, cfg, x, precision=precision) for lib in libs}
    secs = {lib: 0.0 for lib in libs}
    done, i = 0, shift
    while done < steps:
        k = min(chunk, steps - done)
        order = libs[i % len(libs) :] + libs[: i % len(libs)]
        for lib in order:
            secs[lib] += runs[lib].advance(k)
        done, i = done + k, i + 1
    return {lib: (secs[lib], runs[lib]) for lib in libs}


def gemm_share(run: Run, steps: int = 10) -> float:
    """Fraction of the CPU time of ``steps`` training steps spent in matrix products (mm/addmm):
    the work every library must do for the same architecture, whatever its overheads."""
    from torch.profiler import ProfilerActivity, profile

    run.advance(2)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run.advance(steps)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    return sum(e.self_cpu_time_total for e in events if e.key in ("aten::mm", "aten::addmm", "aten::bmm")) / max(
        total, 1
    )


def gemm_shapes(task: str, cfg: dict[str, Any]) -> list[tuple[int, int, int]]:
    """The (m, k, n) matrix products of one training step of the task's architecture, whatever the
    library: per linear layer d_in -> d_out on a batch B, the forward (B, d_in, d_out), the weight
    gradient (d_out, B, d_in) and the input gradient (B, d_out, d_in) -- except for the very first
    layer, whose input is the data and needs no gradient."""
    d, h, bs = cfg["dim"], cfg["hidden"], cfg["batch"]
    if task == "realnvp-moons":
        nets = [[d // 2, h, h, 2 * (d - d // 2)]] * cfg["couplings"]
    else:
        nets = [[d, h, h, 2 * d]] * cfg["layers"]
    shapes = []
    for j, dims in enumerate(nets):
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            shapes += [(bs, a, b), (b, bs, a)] + ([] if i == 0 and j == 0 else [(bs, b, a)])
    return shapes


def _product_time(m: int, k: int, n: int, dtype: torch.dtype, reps: int = 200) -> float:
    """Seconds of one (m, k) @ (k, n) product at its best: operands hot in cache, the fastest of
    the layouts a library may choose (each operand row- or column-major, or the transposed
    product B^T A^T: BLAS speed varies up to ~7x over these on skinny shapes), median of 5."""
    a, b, at, bt = (
        torch.randn(m, k, dtype=dtype),
        torch.randn(k, n, dtype=dtype),
        torch.randn(k, m, dtype=dtype),
        torch.randn(n, k, dtype=dtype),
    )
    calls: list[Callable[[], Tensor]] = [
        lambda: torch.mm(a, b),
        lambda: torch.mm(a, bt.t()),
        lambda: torch.mm(at.t(), b),
        lambda: torch.mm(at.t(), bt.t()),
        lambda: torch.mm(bt, at),
    ]
    best = math.inf
    for f in calls:
        for _ in range(10):
            f()
        runs = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(reps):
                f()
            runs.append((time.perf_counter() - t0) / reps)
        best = min(best, statistics.median(runs))
    return best


def gemm_floor(task: str, cfg: dict[str, Any], dtype: torch.dtype = torch.float32) -> float:
    """Seconds per training step spent in its matrix products alone (``gemm_shapes``), each at its
    best (``_product_time``: hot operands, fastest layout): an optimistic lower bound on any
    library's step time with this architecture, data, dtype and torch build."""
    shapes = gemm_shapes(task, cfg)
    return sum(shapes.count(s) * _product_time(*s, dtype) for s in set(shapes))


def saved_for_backward_mb(run: Run) -> float:
    """Megabytes of tensors autograd keeps from the forward pass for the backward pass of one
    training batch (storages counted once): the activation memory of a step, beyond the
    parameters and optimizer state that every library holds alike for the same architecture."""
    storages: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        st = t.untyped_storage()
        storages[st.data_ptr()] = st.nbytes()
        return t

    x = run.x[: run.cfg["batch"]]
    run.model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        if run.lib == "genlab":
            loss = run.model.loss({"x": x})["loss"]
        else:
            loss = -run.log_prob(x).mean()
    del loss
    return sum(storages.values()) / 2**20


@torch.no_grad()
def heldout(model: nn.Module, log_prob: Callable[[Tensor], Tensor], x: Tensor) -> float:
    """Mean log-likelihood (nats per example) of the test set."""
    model.eval()
    return float(torch.cat([log_prob(b) for b in x.split(1000)]).double().mean())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--libs", default=",".join(LIBS))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=None, help="override the steps of every task")
    ap.add_argument("--batch", type=int, default=None, help="override the batch size of every task")
    ap.add_argument(
        "--small-batch",
        type=int,
        default=16,
        help="also run every task at this batch size for 300 steps (the overhead-bound regime); 0: skip",
    )
    ap.add_argument("--chunk", type=int, default=50, help="steps each library runs before the next one takes over")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads for every library (1: robust on a shared, busy CPU)",
    )
    ap.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default="fp32",
        help="bf16: every library trains under torch.autocast(bfloat16) (genlab: precision='bf16')",
    )
    ap.add_argument(
        "--out", default=None, help="default: results/flows_vs_peers.json (fp32) or flows_vs_peers_bf16.json"
    )
    args = ap.parse_args(argv)
    args.out = args.out or str(
        HERE / "results" / ("flows_vs_peers.json" if args.precision == "fp32" else "flows_vs_peers_bf16.json")
    )
    torch.set_num_threads(args.threads)
    libs = args.libs.split(",")
    results: dict[str, Any] = {
        "command": "python " + " ".join([os.path.relpath(__file__, HERE.parent), *sys.argv[1:]]),
        "torch": torch.__version__,
        "versions": {lib: version(lib) for lib in libs},
        "threads": args.threads,
        "precision": args.precision,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "load_avg_at_start": os.getloadavg()[0],
        "repeats": args.repeats,
        "chunk": args.chunk,
        "optimizer": "torch.optim.AdamW(weight_decay=0, fused=True) for every library",
        "tasks": {},
    }
    runs: list[tuple[str, str, dict[str, Any]]] = []
    for task in args.tasks.split(","):
        cfg = dict(TASKS[task])
        cfg.update({k: v for k, v in (("steps", args.steps), ("batch", args.batch)) if v})
        runs.append((task, task, cfg))
    if args.small_batch:
        runs += [
            (f"{task}@batch{args.small_batch}", task, dict(cfg, batch=args.small_batch, steps=300))
            for _, task, cfg in list(runs)
        ]
    for label, task, cfg in runs:
        x_train, x_test = load_task_data(task)
        train_all(
            libs, task, cfg, x_train, 20, 10, precision=args.precision
        )  # warm-up: imports, allocator, thread pool
        times: dict[str, list[float]] = {lib: [] for lib in libs}
        lls: dict[str, list[float]] = {lib: [] for lib in libs}
        for r in range(args.repeats):
            for lib, (sec, run) in train_all(
                libs, task, cfg, x_train, cfg["steps"], args.chunk, shift=r, precision=args.precision
            ).items():
                times[lib].append(cfg["steps"] / sec)
                lls[lib].append(heldout(run.model, run.log_prob, x_test))
                print(
                    f"{label:24s} repeat {r} {lib:10s} {times[lib][-1]:8.1f} steps/s"
                    f"  held-out {lls[lib][-1]:8.4f} nats",
                    flush=True,
                )
        shares = {lib: round(gemm_share(Run(lib, task, cfg, x_train, precision=args.precision)), 3) for lib in libs}
        saved_mb = {
            lib: round(saved_for_backward_mb(Run(lib, task, cfg, x_train, precision=args.precision)), 3) for lib in libs
        }
        med = {lib: statistics.median(times[lib]) for lib in libs}
        floor = gemm_floor(task, cfg, torch.bfloat16 if args.precision == "bf16" else torch.float32)
        res = {
            "config": cfg,
            "n_train": len(x_train),
            "n_test": len(x_test),
            "steps_per_s": {lib: round(med[lib], 2) for lib in libs},
            "steps_per_s_all": {lib: [round(v, 2) for v in times[lib]] for lib in libs},
            "heldout_loglik_nats": {lib: round(statistics.median(lls[lib]), 4) for lib in libs},
            "gemm_share_of_cpu_time": shares,
            "saved_for_backward_mb": saved_mb,
            "genlab_speedup": {
                lib: round(med["genlab"] / med[lib], 2) for lib in libs if lib != "genlab" and "genlab" in med
            },
            # The step's matrix products alone, back to back: no library can step faster, so
            # 1 / (floor * steps_per_s) is the largest speed-up over a library that any
            # implementation of this architecture could reach (with zero other work).
            "matmul_floor_ms_per_step": round(1e3 * floor, 3),
            "max_possible_speedup": {lib: round(1 / (floor * med[lib]), 2) for lib in libs},
        }
        results["tasks"][label] = res
        print(
            f"\n{label}: steps/s (median of {args.repeats}), speed-up of genlab, held-out log-likelihood (nats/example)"
        )
        for lib in libs:
            ratio = "" if lib == "genlab" else f"  genlab x{med.get('genlab', float('nan')) / med[lib]:5.2f}"
            print(
                f"  {lib:10s} {med[lib]:8.1f} steps/s{ratio:>18s}  held-out {res['heldout_loglik_nats'][lib]:8.4f}"
                f"  matmul share {shares[lib]:.0%}"
                f"  max possible speed-up over it x{res['max_possible_speedup'][lib]:.2f}"
                f"  saved for backward {saved_mb[lib]:.2f} MB"
            )
        print(f"  matmul floor: {1e3 * floor:.2f} ms per step ({1 / floor:.0f} steps/s)")
        print(flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
