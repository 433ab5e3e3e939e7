"""The one training loop: it knows nothing of any model family.

It steps one AdamW optimizer per key of ``model.loss(batch)`` named by ``model.parameter_groups()``,
with an optional cosine schedule, gradient clipping and EMA; evaluates on the validation split every
``eval_every`` steps (negative log-likelihood where the model has one, else the mean loss) and
keeps the best weights as well as the last; writes ``metrics.jsonl``, sample PNGs and atomic
safetensors checkpoints; resumes bit for bit; stops cleanly on Ctrl-C or a non-finite loss; and
runs data-parallel under ``torchrun`` (``DistributedDataParallel``: gradients averaged over ranks in
buckets, overlapped with the backward pass; gloo on CPU, nccl on GPU).

The run folder's file names, its marker, lock and trainer-state files live in :mod:`genlab.runs`;
this module only collects and restores the state.

Reproducibility: the data order comes from its own generator, evaluation and sampling run inside
``torch.random.fork_rng`` with fixed seeds, so neither the evaluation schedule nor a resume changes
the training stream.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import signal
import sys
import time
import typing
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from . import checkpoint as ckpt
from .config import describe_type, value_matches
from .data.base import TensorDataset
from .metrics.likelihood import likelihood_metrics
from .protocol import GenerativeModel
from .registry import available_memory, format_bytes
from .runs import (
    BEST_FILE,
    CONFIG_FILE,
    MODEL_FILE,
    SAMPLES_DIR,
    RunLock,
    append_metrics,
    claim_run_folder,
    clear_run,
    load_trainer_state,
    recover_trainer_state,
    remove_results,
    run_config,
    save_trainer_state,
    truncate_metrics,
)
from .viz import class_labels, display_count, save_samples


class Rank0Error(ValueError):
    """Under torchrun, rank 0 failed in a step the other ranks wait for; they stop with this one
    line (a ValueError, so the CLI prints it without a traceback) while rank 0 reports the cause."""


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; the message names the step, the loss key and the batch."""


#: AdamW's learning rate and betas where neither the training config nor the model sets them.
DEFAULT_LR = 1e-3
DEFAULT_BETAS = (0.9, 0.999)
#: Copies of the weights that training holds: the weights, their gradients, Adam's two moments.
TRAINING_COPIES = 4


def idle_threads() -> int:
    """Torch threads for a new CPU run: the cores that are not busy, i.e. the CPU count minus the
    1-minute load average (rounded), at least 1 and at most torch's default. Measured on 2
    cores (2026-12-02): idle, 2 threads train 1.1-1.6x faster than 1 (MLP VAE on digits 251 vs 222
    steps/s, conv VAE on 64x64 shapes 5.3 vs 3.3); with another job running, torch's default of
    all cores oversubscribes them (the README's command: 710 s vs 38.6 s with 1 thread)."""
    default = torch.get_num_threads()
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):  # no load average on this platform
        return default
    return max(1, min(default, round((os.cpu_count() or 1) - load)))


def compile_unavailable(device: torch.device) -> str | None:
    """Why ``torch.compile`` (inductor) cannot compile for ``device`` here, or None when it can:
    dynamo unsupported on this Python/platform, no C++ compiler on the PATH for CPU code, or no
    triton for GPU code. Checked before the first step so the run falls back to eager with a
    warning instead of failing mid-training."""
    try:
        import torch._dynamo as dynamo
    except Exception as e:  # a build of torch without dynamo
        return f"torch._dynamo cannot be imported ({type(e).__name__}: {e})"
    if not dynamo.is_dynamo_supported():
        return f"torch.compile is not supported on Python {sys.version.split()[0]} / {sys.platform}"
    if device.type == "cpu":
        try:
            from torch._inductor.cpp_builder import get_cpp_compiler

            cxx = get_cpp_compiler()
        except Exception as e:  # no compiler found: inductor raises while searching for one
            return f"inductor found no C++ compiler ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        if not (os.path.isabs(cxx) and os.access(cxx, os.X_OK)) and shutil.which(cxx) is None:
            return f"inductor's C++ compiler {cxx!r} is not on the PATH (install g++ or set CXX)"
    elif device.type == "cuda":
        import importlib.util

        if importlib.util.find_spec("triton") is None:
            return "inductor needs triton for CUDA code and it is not installed"
    return None


def cpu_has_bf16(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> bool | None:
    """Whether this CPU has bfloat16 instructions (x86 ``avx512_bf16`` or ``amx_bf16`` in the
    flags of ``cpuinfo``; ARM ``bf16``), or None where that cannot be read (not Linux)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return None
    flags = {w for line in text.splitlines() if line.split(":")[0].strip() in ("flags", "Features")
             for w in line.split(":", 1)[1].split()}  # fmt: skip
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"}) if flags else None


@dataclass
class TrainConfig:
    """Training settings (every field is settable with ``--set key=value``).

    ``eval_every``/``sample_every``/``checkpoint_every`` are in optimizer steps (0 disables; a final
    evaluation, sample grid and checkpoint always happen at the end). ``patience`` is the number
    of evaluations without improvement of the validation metric before stopping early. ``ema`` is
    the decay d of an exponential moving average of the weights (used for evaluation, sampling and
    the saved model), or None; it is warmed up as min(d, (1 + t) / (10 + t)) after t completed
    steps, so the average forgets the initial weights (and e.g. ActNorm's pre-initialization values)
    within a few steps. ``threads`` sets ``torch.set_num_threads`` (process-wide) when the Trainer
    is built (None: leave it); on small models and shared CPUs fewer threads can be faster.
    ``precision="bf16"`` runs the training losses under bfloat16 autocast (weights, optimizer and
    evaluation stay float32): faster matrix products on GPUs and on CPUs with bf16 instructions, at
    a small cost in precision. ``compile=true`` runs the training loss through ``torch.compile``
    (inductor; needs a C++ compiler on CPU, triton on GPU; where they are missing training goes on
    uncompiled with a warning naming why). The first steps then pay the compile time; the weights,
    checkpoints and ``--resume`` are unchanged (the model itself is not wrapped), and evaluation and
    sampling stay eager. Under inductor the random draws inside the loss (e.g. the VAE's noise) come
    from its own generator, so a compiled run is reproducible but not equal to an eager one.
    ``channels_last=true`` keeps the 4-D weights and image batches of training
    in channels-last (NHWC) memory layout, where oneDNN's convolutions skip their layout conversions
    on a CPU: measured 2026-12-02 on 64x64 shapes, batch 64, one thread, alternating, 5 repeats,
    realnvp 1.51x and glow 1.19x faster per step (``benchmarks/conv_speed.py`` explains the floor);
    the same mathematics, float rounding aside.

    ``lr``, ``beta1``, ``beta2`` (AdamW) apply to every parameter group when set. Left at None they
    take the model's own defaults (``optimizer_settings()``'s ``default_lr``/``default_betas`` per
    group, e.g. the GAN papers' 2e-4 and (0.5, 0.999)), else 1e-3 and (0.9, 0.999). ``weight_decay``
    (AdamW's decoupled decay) shrinks the weight matrices and kernels only, not biases or
    normalization gains (parameters of one dimension or none). ``device`` is
    ``"auto"`` (cuda when present), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``; one that this
    machine does not have is refused, naming the ones it has.
    """

    steps: int = 2000
    batch_size: int = 128
    lr: float | None = None
    weight_decay: float = 0.0
    beta1: float | None = None
    beta2: float | None = None
    schedule: str = "constant"
    warmup: int = 0
    grad_clip: float | None = None
    ema: float | None = None
    seed: int = 0
    eval_every: int = 250
    sample_every: int = 500
    checkpoint_every: int = 500
    log_every: int = 10
    patience: int | None = None
    eval_batch_size: int = 512
    max_eval_examples: int | None = None
    n_samples: int = 64
    device: str = "auto"
    precision: str = "fp32"
    threads: int | None = None
    compile: bool = False
    channels_last: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int) and not isinstance(value, bool) and hints[f.name] in (float, float | None):
                setattr(self, f.name, float(value))  # lr=1 from YAML means 1.0
            elif not value_matches(value, hints[f.name]):
                raise ValueError(f"bad training setting {f.name}={value!r}: expected {describe_type(hints[f.name])}")
        checks = {  # setting: (valid?, what is expected)
            "steps": (self.steps >= 1, ">= 1"),
            "batch_size": (self.batch_size >= 1, ">= 1"),
            "lr": (self.lr is None or self.lr > 0, "> 0 or null (the model's default)"),
            "beta1": (self.beta1 is None or 0 <= self.beta1 < 1, "in [0, 1) or null (the model's default)"),
            "beta2": (self.beta2 is None or 0 <= self.beta2 < 1, "in [0, 1) or null (the model's default)"),
            "schedule": (self.schedule in ("constant", "cosine"), "'constant' or 'cosine'"),
            "warmup": (self.warmup >= 0, ">= 0"),
            "eval_every": (self.eval_every >= 0, ">= 0 (0: off)"),
            "sample_every": (self.sample_every >= 0, ">= 0 (0: off)"),
            "checkpoint_every": (self.checkpoint_every >= 0, ">= 0 (0: off)"),
            "log_every": (self.log_every >= 1, ">= 1"),
            "grad_clip": (self.grad_clip is None or self.grad_clip > 0, "> 0 or null"),
            "ema": (self.ema is None or 0.0 < self.ema < 1.0, "a decay in (0, 1) or null"),
            "patience": (self.patience is None or self.patience >= 1, ">= 1 or null"),
            "precision": (self.precision in ("fp32", "bf16"), "'fp32' or 'bf16'"),
            "threads": (self.threads is None or self.threads >= 1, ">= 1 or null"),
        }
        for key, (ok, expected) in checks.items():
            if not ok:
                raise ValueError(f"bad training setting {key}={getattr(self, key)!r}: expected {expected}")
        resolve_device(self.device)  # a device this machine lacks is refused here, in one line

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        bad = [k for k in d if k not in names]
        if bad:
            raise ValueError(f"unknown training setting {bad[0]!r}; valid: {', '.join(sorted(names))}")
        return cls(**d)


def available_devices() -> list[str]:
    """The devices this machine can train on, e.g. ``["cpu", "cuda:0", "cuda:1"]``."""
    out = ["cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out


def _has_device(device: torch.device) -> bool:
    if device.type == "cpu":
        return True
    if device.type == "cuda":
        return torch.cuda.is_available() and (device.index is None or device.index < torch.cuda.device_count())
    if device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        return mps is not None and mps.is_available() and not device.index
    backend = getattr(torch, device.type, None)  # xpu and other accelerators with a torch.<type> module
    try:
        return bool(backend.is_available()) and (device.index is None or device.index < backend.device_count())
    except Exception:
        return False


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> cuda when present, else cpu; any other name must be a device this machine has
    (``--set device=gpu``, or ``cuda`` on a CPU-only torch, is a one-line ``ValueError`` that names
    the available devices)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device: torch.device | None = torch.device(name)
    except (RuntimeError, ValueError, TypeError):  # not a device name at all ("gpu")
        device = None
    if device is None or not _has_device(device):
        raise ValueError(f"device {name!r} is not available; available: {', '.join(available_devices())} (or 'auto')")
    return device


def check_training_memory(
    name: str, weights: int, device: torch.device, built: bool = False, options: dict[str, Any] | None = None
) -> None:
    """Refuse, in one line (``ValueError``, naming the model's ``options``), to train model ``name``
    with ``weights`` bytes of parameters on ``device`` when the weights, their gradients and Adam's
    two moments (:data:`TRAINING_COPIES`) exceed the memory free there; ``built``: the weights are
    already on the device. Activations are not counted (the allocator's own error reports those);
    devices without a free-memory query are not checked."""
    need = (TRAINING_COPIES - built) * weights
    have: int | None = None
    if device.type == "cuda":
        try:
            have = torch.cuda.mem_get_info(device)[0]
        except Exception:
            have = None
    elif device.type == "cpu":
        have = available_memory()
    if have is not None and need > have:
        opts = ", ".join(f"{k}={v!r}" for k, v in (options or {}).items())
        raise ValueError(
            f"training model {name!r}{' with ' + opts if opts else ''} needs about "
            f"{format_bytes(TRAINING_COPIES * weights)} (its "
            f"{format_bytes(weights)} of weights, their gradients and Adam's two moments), more than the "
            f"{format_bytes(have)} free on {device}; choose smaller sizes"
        )


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(device: torch.device) -> tuple[int, int]:
    """Join the process group when launched by ``torchrun`` (WORLD_SIZE > 1); returns (rank, world)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":  # each rank drives its own GPU; NCCL collectives run on the current one
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return _dist_info()


def rank0_first(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on rank 0 only (e.g. clearing or claiming the run folder), then let every rank
    go on (a barrier). If ``fn`` fails on rank 0 the others stop too, instead of waiting forever;
    rank 0 raises the error itself. Without a process group this is just ``fn()``."""
    rank, world = _dist_info()
    if world == 1:
        return fn()
    result, error = None, None
    if rank == 0:
        try:
            result = fn()
        except BaseException as e:  # re-raised below, after the other ranks were told
            error = e
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    flag = torch.tensor([0 if error is None else 1], device=device)
    dist.broadcast(flag, 0)  # doubles as the barrier
    if error is not None:
        raise error
    if int(flag.item()):
        raise Rank0Error(f"rank {rank}: stopped because rank 0 failed (its message says why)")
    return result


class _LossOf(nn.Module):
    """What DistributedDataParallel wraps: its ``forward`` is the model's ``loss``.

    DDP hooks into ``forward``: it broadcasts buffers, then, for the outputs that carry a graph,
    arranges for the next backward pass to all-reduce the gradients in buckets as they become ready
    (overlapping communication with the rest of the backward). The protocol's entry point is
    ``loss``, so this module makes ``loss`` the forward. DDP expects exactly one backward pass per
    forward, over the graph of the outputs; a model with several loss keys takes one backward per key
    (each stepping its own parameter group), so only one key keeps its graph per forward: ``key``
    if given, else the first present key of ``order`` (``parameter_groups()`` order); the others
    are detached (they are logged only). Multi-key models recompute the loss before every later
    key (``recompute_loss_per_group``), which is one forward per backward.
    """

    def __init__(self, model: GenerativeModel, order: list[str]) -> None:
        super().__init__()
        self.model = model
        self.order = order

    def forward(self, batch: dict[str, Tensor], key: str | None = None) -> dict[str, Tensor]:
        losses = self.model.loss(batch)
        keep = key if key is not None else next((k for k in self.order if k in losses), None)
        return {k: (v if k == keep else v.detach()) for k, v in losses.items()}


class Trainer:
    """Train ``model`` on ``train_data``; evaluate/select on ``val_data``; write a run folder.

    ``out_dir`` receives ``config.yaml`` (:meth:`write_config`; ``fit`` writes it unless it was
    called), ``model.safetensors`` (last weights), ``best.safetensors`` (best validation weights),
    ``trainer-state.*`` (everything needed to resume), ``metrics.jsonl`` and ``samples/`` (names in
    :mod:`genlab.runs`). ``fit`` holds the folder's lock, refuses a non-empty folder that is not a
    genlab run, and a new (not resumed) run first removes the files of an earlier run in it.
    With ``out_dir=None`` nothing is written (handy in notebooks and tests).
    """

    def __init__(
        self,
        model: GenerativeModel,
        train_data: TensorDataset,
        val_data: TensorDataset | None = None,
        config: TrainConfig | None = None,
        out_dir: str | os.PathLike | None = None,
    ) -> None:
        self.cfg = config or TrainConfig()
        if self.cfg.threads is not None:
            torch.set_num_threads(self.cfg.threads)
        self.device = resolve_device(self.cfg.device)
        if self.cfg.precision == "bf16" and self.device.type == "cpu" and cpu_has_bf16() is False:
            warnings.warn(
                "precision=bf16 on a CPU without bfloat16 instructions (no avx512_bf16 or amx_bf16): autocast "
                "emulates it, measured 5x slower than fp32 on such a CPU; use precision=fp32 here",
                stacklevel=2,
            )
        self.rank, self.world = init_distributed(self.device)
        if self.device.type == "cuda" and self.world > 1:
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        self.model = model.to(self.device)
        self.train_data = TensorDataset(
            {k: v.to(self.device) for k, v in train_data.tensors.items()}, train_data.spec, train_data.split
        )
        self.model.on_train_data(len(self.train_data))
        if self.cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)  # 4-D parameters only; checkpoints stay plain
        # compile=true: the loss function, not the module, is compiled, so the state dict keeps its
        # keys (no "_orig_mod." prefix) and checkpoints load into an uncompiled model.
        self._loss_fn: Callable[[dict[str, Tensor]], dict[str, Tensor]] = self.model.loss
        if self.cfg.compile:
            why = compile_unavailable(self.device)
            if why is None and self.world > 1:
                why = "it is not applied under torchrun (DDP wraps the loss there)"
            if why is None:
                # dynamic=False: training batches have one shape (the tail is dropped); a
                # dynamic-shape graph is slower and crashed inductor on ddpm (torch 2.13).
                self._loss_fn = torch.compile(self.model.loss, dynamic=False)
            else:
                warnings.warn(f"compile=true ignored, training uncompiled: {why}", stacklevel=2)
        self.val_data = val_data
        self.out = Path(out_dir) if out_dir is not None else None
        self.is_main = self.rank == 0
        self.groups = model.parameter_groups()
        if not self.groups:
            raise ValueError(f"{type(model).__name__}.parameter_groups() is empty: nothing to train")
        overrides = model.optimizer_settings()
        unknown = [k for k in overrides if k not in self.groups]
        if unknown:
            raise ValueError(
                f"optimizer_settings() names {unknown[0]!r}, which is not a parameter group ({', '.join(self.groups)})"
            )
        self._check_memory()
        settings = {k: self._optimizer_settings(overrides.get(k, {})) for k in self.groups}
        self.base_lr = {k: float(settings[k]["lr"]) for k in self.groups}
        self._opt_settings = settings
        self.optimizers = {key: self._make_optimizer(params, settings[key]) for key, params in self.groups.items()}
        self._all_params = list(self.model.parameters())
        self.ema: dict[str, Tensor] | None = None
        if self.cfg.ema is not None:
            self.ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.step = 0
        self.best: float | None = None
        self.best_step: int | None = None
        self.bad_evals = 0
        self.data_gen = torch.Generator().manual_seed(self.cfg.seed)
        self.perm = torch.empty(0, dtype=torch.long)
        self.pos = 0
        self._stop_requested = False
        self._config_written = False
        self.checkpoint_step: int | None = None  # the step of the last checkpoint on disk
        # Data parallelism. DDP (see _LossOf) serves single-key models and multi-key models that
        # recompute their loss before each key (one forward per backward, as DDP requires). Such
        # a multi-key model's key reaches only part of the parameters (a GAN's discriminator loss
        # does not reach the generator), hence find_unused_parameters for them; a single-key model
        # gives every trainable parameter a gradient (the contract tests check it), so it skips
        # that graph search. A multi-key model that backpropagates several keys through one forward
        # cannot be served by DDP: its gradients are averaged per group in one flat all_reduce
        # per dtype (_all_reduce_flat) after each key's backward.
        self.ddp: DistributedDataParallel | None = None
        self._flat_all_reduce = False
        if self.world > 1:
            multi = len(self.groups) > 1
            if multi and not getattr(model, "recompute_loss_per_group", False):
                self._flat_all_reduce = True
                for t in model.state_dict().values():  # every rank starts from rank 0's weights
                    dist.broadcast(t.data, 0)
            else:  # DDP broadcasts rank 0's parameters and buffers when it is built
                self.ddp = DistributedDataParallel(
                    _LossOf(self.model, list(self.groups)),
                    device_ids=[self.device.index] if self.device.type == "cuda" else None,
                    find_unused_parameters=multi,
                )

    def _optimizer_settings(self, override: dict[str, Any]) -> dict[str, Any]:
        """AdamW settings of one parameter group: what the model fixes for it (``override["lr"]``, e.g.
        a GAN's explicit ``lr_g``) wins; then the training config's lr/betas where set; then the
        model's ``default_lr``/``default_betas``; then :data:`DEFAULT_LR`/:data:`DEFAULT_BETAS`."""
        cfg = self.cfg
        default_betas = override.get("default_betas", DEFAULT_BETAS)
        kw: dict[str, Any] = {
            "lr": cfg.lr if cfg.lr is not None else override.get("default_lr", DEFAULT_LR),
            "betas": (
                cfg.beta1 if cfg.beta1 is not None else default_betas[0],
                cfg.beta2 if cfg.beta2 is not None else default_betas[1],
            ),
            "weight_decay": cfg.weight_decay,
        }
        kw.update({k: v for k, v in override.items() if k not in ("default_lr", "default_betas")})
        return kw

    def _check_memory(self) -> None:
        """Refuse, in one line, a model whose training cannot fit (:func:`check_training_memory`)."""
        weights = sum(p.numel() * p.element_size() for p in self.model.parameters())
        name = self.model.registry_name or type(self.model).__name__
        check_training_memory(name, weights, self.device, built=True, options=getattr(self.model, "init_kwargs", None))

    def _make_optimizer(
        self, params: list[torch.nn.Parameter], settings: dict[str, Any], split_decay: bool = True
    ) -> torch.optim.Optimizer:
        """AdamW over ``params``. With weight decay (and ``split_decay``), two parameter groups: the
        matrices and kernels (ndim >= 2) are decayed; biases and normalization gains and scales
        (ndim <= 1) are not, as in Loshchilov & Hutter's AdamW and GPT-2 training: shrinking a
        LayerNorm gain or a bias toward 0 is not a prior on the function anyone wants.
        ``split_decay=False`` decays every parameter (the one group of runs saved before the split;
        :meth:`load_checkpoint` rebuilds that layout to resume such a run exactly)."""
        kw = dict(settings)
        groups: Any = params
        if kw.get("weight_decay", 0.0) > 0 and split_decay:
            decay = [p for p in params if p.ndim >= 2]
            keep = [p for p in params if p.ndim < 2]
            groups = [g for g in ({"params": decay}, {"params": keep, "weight_decay": 0.0}) if g["params"]]
        try:  # the fused kernel is one launch for all parameters (CPU support since torch 2.4)
            return torch.optim.AdamW(groups, fused=True, **kw)
        except (RuntimeError, TypeError, ValueError):
            return torch.optim.AdamW(groups, **kw)

    # --- batching ---------------------------------------------------------------------------
    def _next_indices(self) -> Tensor:
        n = len(self.train_data)
        bs = min(self.cfg.batch_size, n)
        if self.pos + bs > len(self.perm):  # new epoch; the incomplete tail is dropped
            self.perm = torch.randperm(n, generator=self.data_gen)
            self.pos = 0
        idx = self.perm[self.pos : self.pos + bs]
        self.pos += bs
        return idx[self.rank :: self.world] if self.world > 1 else idx

    def _schedule(self, step: int) -> float:
        """The factor (warm-up, cosine) on every group's learning rate at ``step``."""
        f = 1.0
        if self.cfg.warmup and step < self.cfg.warmup:
            f = (step + 1) / self.cfg.warmup
        elif self.cfg.schedule == "cosine":
            span = max(1, self.cfg.steps - self.cfg.warmup)
            f = 0.5 * (1 + math.cos(math.pi * min(1.0, (step - self.cfg.warmup) / span)))
        return f

    def _lr_record(self, step: int) -> dict[str, float]:
        """The learning rates in use at ``step``, for the log: ``lr`` when every group has the same,
        else ``lr_<group>`` per group (a GAN with different generator and discriminator rates)."""
        f = self._schedule(step)
        rates = {k: lr * f for k, lr in self.base_lr.items()}
        if len(set(rates.values())) == 1:
            return {"lr": next(iter(rates.values()))}
        return {f"lr_{k}": v for k, v in rates.items()}

    # --- one optimizer step -----------------------------------------------------------------
    def _any_rank(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any rank: decisions that end the loop (a non-finite loss,
        Ctrl-C, early stopping) must be taken by all ranks at the same step, or the others would
        wait forever in the next collective."""
        if self.world == 1:
            return flag
        t = torch.tensor([float(flag)], device=self.device if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def _check_finite(self, losses: dict[str, Tensor], keys: list[str]) -> None:
        vals = torch.stack([losses[k].detach().float() for k in keys])
        bad = not bool(torch.isfinite(vals).all())
        if self._any_rank(bad):
            what = {k: float(losses[k].detach()) for k in keys} if bad else "on another rank"
            raise NonFiniteLossError(f"non-finite loss at step {self.step + 1}: {what}")

    def _loss(self, batch: dict[str, Tensor], key: str | None = None) -> dict[str, Tensor]:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.precision == "bf16"):
            losses = self.ddp(batch, key) if self.ddp is not None else self._loss_fn(batch)
        return {k: v.float() for k, v in losses.items()}

    def _all_reduce_flat(self, params: list[nn.Parameter]) -> None:
        """Average the gradients of ``params`` over ranks: one all_reduce per dtype of one flat
        buffer (not one per parameter). Every rank runs the same code on same-shaped data, so the
        same parameters have gradients everywhere."""
        with_grad = [p for p in params if p.grad is not None]
        for dtype in dict.fromkeys(p.grad.dtype for p in with_grad):
            group = [p for p in with_grad if p.grad.dtype == dtype]
            flat = torch.cat([p.grad.reshape(-1) for p in group])
            dist.all_reduce(flat)
            flat /= self.world
            for p, g in zip(group, flat.split([p.numel() for p in group])):
                p.grad = g.view_as(p.grad).clone()

    def train_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """One step: every loss key the model returns steps its own optimizer, in the order of
        ``parameter_groups()``. A key absent from this step's losses is not stepped (e.g. a GAN
        generator updated once every ``n_critic`` steps). Models with
        ``recompute_loss_per_group = True`` get a fresh ``loss(batch)`` before each key after the
        first, so that e.g. the generator is trained against the just-updated discriminator."""
        self.model.train()
        if self.cfg.channels_last:
            batch = {
                k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 and v.is_floating_point() else v
                for k, v in batch.items()
            }
        losses = self._loss(batch)
        keys = [k for k in self.groups if k in losses]
        if not keys:
            raise KeyError(f"model.loss() returned none of the keys {list(self.groups)} named by parameter_groups()")
        self._check_finite(losses, keys)
        schedule = self._schedule(self.step)
        recompute = getattr(self.model, "recompute_loss_per_group", False)
        for i, key in enumerate(keys):
            if recompute and i > 0:
                fresh = self._loss(batch, key)
                self._check_finite(fresh, [key])
                losses = {**losses, key: fresh[key]}
            params = self.groups[key]
            for p in self._all_params:
                p.grad = None
            losses[key].backward(retain_graph=not recompute and i < len(keys) - 1)
            if self._flat_all_reduce:
                self._all_reduce_flat(params)
            if self.cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
            opt = self.optimizers[key]
            for g in opt.param_groups:
                g["lr"] = self.base_lr[key] * schedule
            opt.step()
        if self.ema is not None:
            with torch.no_grad():
                d = self.ema_decay(self.step)
                # The whole state dict: buffers and values set outside the optimizer (ActNorm's
                # data-dependent init) are averaged too; non-float buffers are copied.
                for k, v in self.model.state_dict().items():
                    if v.dtype.is_floating_point:
                        self.ema[k].mul_(d).add_(v.detach(), alpha=1 - d)
                    else:
                        self.ema[k].copy_(v)
        self.step += 1
        return losses

    def ema_decay(self, step: int) -> float:
        """Decay of the EMA update after ``step`` completed updates: min(ema, (1 + step) / (10 + step)),
        the warm-up of TensorFlow's ExponentialMovingAverage (num_updates). It depends on the step
        only, so a resumed run averages exactly as an uninterrupted one."""
        assert self.cfg.ema is not None
        return min(self.cfg.ema, (1 + step) / (10 + step))

    @contextmanager
    def averaged_weights(self) -> Iterator[None]:
        """Temporarily load the EMA weights (no-op without EMA)."""
        if self.ema is None:
            yield
            return
        saved = ckpt.model_state(self.model)
        self.model.load_state_dict(self.ema)
        try:
            yield
        finally:
            self.model.load_state_dict(saved)

    # --- evaluation, samples, checkpoints ----------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Validation metrics: ``val_nll``/``val_bpd`` for models with a likelihood, else the
        model's ``validation_metrics(val_data)`` if it defines them (e.g. a GAN's ``val_fd``), else
        ``val_loss`` (mean of the optimized losses). Model selection uses the first of these."""
        assert self.val_data is not None
        with (
            torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []),
            self.averaged_weights(),
        ):
            torch.manual_seed(self.cfg.seed + 1)
            self.model.eval()
            if self.model.likelihood != "none":
                m = likelihood_metrics(
                    self.model,
                    self.val_data,
                    batch_size=self.cfg.eval_batch_size,
                    max_examples=self.cfg.max_eval_examples,
                )
                return {"val_nll": m["nll"], "val_bpd": m["bpd"]}
            hook = self.model.validation_metrics(self.val_data)
            if hook:
                return hook
            total, count = 0.0, 0
            for batch in self.val_data.batches(self.cfg.eval_batch_size):
                batch = {k: v.to(self.device) for k, v in batch.items()}
                losses = self.model.loss(batch)
                total += sum(float(losses[k]) for k in self.groups) * len(batch["x"])
                count += len(batch["x"])
            return {"val_loss": total / max(count, 1)}

    @torch.no_grad()
    def save_sample_grid(self, name: str) -> Path | None:
        if self.out is None:
            return None
        with (
            torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []),
            self.averaged_weights(),
        ):
            self.model.eval()
            gen = torch.Generator(device=self.device).manual_seed(self.cfg.seed + 2)
            n = display_count(self.model.spec, self.cfg.n_samples)
            cond = None
            if self.model.conditional and self.model.spec.num_classes:
                cond = torch.arange(n, device=self.device) % self.model.spec.num_classes
            try:
                x = self.model.sample(n, cond, generator=gen)
            except NotImplementedError:
                return None
            nrow = self.model.spec.num_classes if cond is not None else None
            if isinstance(x, dict):  # a multimodal model: one file per modality, "<name>-<key>.png/.txt/.wav"
                spec = self.model.spec
                paths = [
                    save_samples(v, spec.modality(k), self.out / SAMPLES_DIR / f"{name}-{k}.png") for k, v in x.items()
                ]
                return next((p for p in paths if p is not None), None)
            spec = self.model.spec
            return save_samples(
                x,
                spec,
                self.out / SAMPLES_DIR / f"{name}.png",
                reference=self.train_data.tensors["x"][:20000],
                nrow=nrow,
                title=f"{self.model.registry_name or type(self.model).__name__} samples, step {self.step}",
                labels=class_labels(spec) if nrow else None,
            )

    def _export_weights(self) -> dict[str, Tensor]:
        return {k: v.detach().clone().contiguous() for k, v in (self.ema or self.model.state_dict()).items()}

    def _weights_meta(self) -> dict[str, Any]:
        return {"step": self.step, "model": self.model.registry_name, "kwargs": getattr(self.model, "init_kwargs", {})}

    def _gather(self, t: Tensor) -> list[Tensor]:
        """``t`` of every rank (same shape everywhere), in rank order, on the CPU."""
        if self.world == 1:
            return [t.cpu()]
        x = t.to(self.device if dist.get_backend() == "nccl" else "cpu")
        out = [torch.empty_like(x) for _ in range(self.world)]
        dist.all_gather(out, x)
        return [o.cpu() for o in out]

    def save_checkpoint(self) -> None:
        """Write the last weights and the full trainer state (:func:`genlab.runs.save_trainer_state`).
        Every rank calls it (each contributes its RNG state); rank 0 writes."""
        if self.out is None:
            return
        # Every rank's RNG state: the ranks draw different noise (seeded seed + rank), and a resume
        # that gave them all rank 0's state would not continue the same run.
        rng = {f"rng.torch.rank{r}": s for r, s in enumerate(self._gather(torch.get_rng_state()))}
        if self.device.type == "cuda":
            cuda = self._gather(torch.cuda.get_rng_state(self.device))
            rng.update({f"rng.cuda.rank{r}": s for r, s in enumerate(cuda)})
        if not self.is_main:
            return
        tensors: dict[str, Tensor] = {f"model.{k}": v for k, v in ckpt.model_state(self.model).items()}
        if self.ema is not None:
            tensors.update({f"ema.{k}": v for k, v in self.ema.items()})
        skeletons = {}
        for key, opt in self.optimizers.items():
            t, skel = ckpt.flatten_optimizer(f"opt.{key}", opt.state_dict())
            tensors.update(t)
            skeletons[key] = skel
        tensors.update(rng)
        tensors["rng.data"] = self.data_gen.get_state()
        tensors["data.perm"] = self.perm.clone()
        state = {
            "step": self.step,
            "pos": self.pos,
            "best": self.best,
            "best_step": self.best_step,
            "bad_evals": self.bad_evals,
            "world_size": self.world,
            "optimizers": skeletons,
            "config": dataclasses.asdict(self.cfg),
        }
        save_trainer_state(self.out, tensors, state)
        self.checkpoint_step = self.step  # resumable from here, even if the weights file below fails
        ckpt.save_tensors(self._export_weights(), self.out / MODEL_FILE, self._weights_meta())

    def load_checkpoint(self) -> None:
        """Restore the state written by :meth:`save_checkpoint` from ``out_dir`` (every rank)."""
        assert self.out is not None
        tensors, state = load_trainer_state(self.out)
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        if self.ema is not None:
            ema = {k[4:]: v.to(self.device) for k, v in tensors.items() if k.startswith("ema.")}
            self.ema = ema or {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        for key, opt in list(self.optimizers.items()):
            if key not in state["optimizers"]:
                raise ckpt.CheckpointError(f"checkpoint has no optimizer state for loss key {key!r}")
            saved = ckpt.unflatten_optimizer(tensors, state["optimizers"][key])
            if len(saved["param_groups"]) == 1 and len(opt.param_groups) == 2:
                # a run saved before decay was split by parameter kind: resume it with its one group
                opt = self.optimizers[key] = self._make_optimizer(
                    self.groups[key], self._opt_settings[key], split_decay=False
                )
            opt.load_state_dict(saved)
        saved_world = int(state.get("world_size", 1))
        if saved_world != self.world:
            warnings.warn(
                f"the checkpoint in {self.out} was written by {saved_world} process(es), this run has {self.world}: "
                "training continues, but not exactly as the original run would have",
                stacklevel=2,
            )
        # "rng.torch": checkpoints written before every rank's state was kept (rank 0's only).
        cpu_rng = tensors.get(f"rng.torch.rank{self.rank}", tensors.get("rng.torch"))
        if cpu_rng is not None:
            torch.set_rng_state(cpu_rng)
        else:  # more ranks than the checkpoint has states: a stream of its own per rank
            torch.manual_seed(self.cfg.seed + self.rank)
        cuda_rng = tensors.get(f"rng.cuda.rank{self.rank}", tensors.get("rng.cuda"))
        if cuda_rng is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(cuda_rng, self.device)
        self.data_gen.set_state(tensors["rng.data"])
        self.perm = tensors["data.perm"]
        self.step, self.pos = state["step"], state["pos"]
        self.best, self.best_step, self.bad_evals = state["best"], state["best_step"], state["bad_evals"]
        self.checkpoint_step = self.step

    def _log(self, record: dict[str, Any]) -> None:
        if self.out is not None and self.is_main:
            append_metrics(self.out, record)

    def _after_eval(self, metrics: dict[str, float]) -> bool:
        """Record a validation result; save best weights; return True to stop early."""
        key = next(iter(metrics))
        value = metrics[key]
        improved = math.isfinite(value) and (self.best is None or value < self.best)
        if improved:
            self.best, self.best_step, self.bad_evals = value, self.step, 0
            if self.out is not None and self.is_main:
                ckpt.save_tensors(
                    self._export_weights(), self.out / BEST_FILE, dict(self._weights_meta(), **{key: value})
                )
        else:
            self.bad_evals += 1
        self._log({"step": self.step, "split": "val", **metrics, "best_step": self.best_step})
        return self.cfg.patience is not None and self.bad_evals >= self.cfg.patience

    # --- the loop ---------------------------------------------------------------------------
    def write_config(self, data: str | None = None, data_opts: dict[str, Any] | None = None) -> None:
        """Write ``config.yaml`` (model name and options, data set and options, spec, training
        settings), so that :func:`genlab.load_run` can rebuild the model from the folder. ``fit``
        calls it if it was not called before; ``data`` defaults to the training spec's name."""
        if self.out is None or not self.is_main:
            return
        kwargs = getattr(self.model, "init_kwargs", None)
        if kwargs is None or not self.model.registry_name:
            warnings.warn(
                f"{type(self.model).__name__} was not built with genlab.build_model: "
                f"{self.out / CONFIG_FILE} is not written and load_run cannot rebuild this run",
                stacklevel=2,
            )
            return
        spec = self.train_data.spec
        config = run_config(
            self.model.registry_name, kwargs, data or spec.name, data_opts or {}, spec, dataclasses.asdict(self.cfg)
        )
        with RunLock(self.out):  # never into another training's folder, nor a non-run folder
            claim_run_folder(self.out)
            ckpt.write_yaml(config, self.out / CONFIG_FILE)
        self._config_written = True

    def fit(self, resume: bool = False) -> dict[str, Any]:
        """Train to ``config.steps`` (continuing from the checkpoint with ``resume=True``).

        Returns a summary: final step, why it stopped (``completed``, ``early_stop``,
        ``interrupted``), best validation metric and its step, wall-clock seconds.
        """
        cfg = self.cfg
        if resume and self.out is None:
            raise ValueError("fit(resume=True) needs the Trainer's out_dir to resume from")
        # Rank 0, the only writer, holds the run's lock for the whole of fit; it takes it inside
        # rank0_first so that a refusal (another training holds it) stops the other ranks too.
        lock = RunLock(self.out) if self.out is not None and self.is_main else None
        try:
            rank0_first(lambda: self._prepare_folder(resume, lock))
            if resume:
                self.load_checkpoint()
                rank0_first(self._after_resume)
            else:
                torch.manual_seed(cfg.seed + self.rank)
            return self._loop()
        finally:
            if lock is not None:
                lock.release()

    def _prepare_folder(self, resume: bool, lock: RunLock | None) -> None:
        """Rank 0, before training: lock and claim the folder (refusing a non-run one). A new run
        removes the files of an earlier run in it (its config.yaml too, unless this trainer just
        wrote it); a resumed run is first brought back to its newest consistent trainer state."""
        if self.out is None or lock is None:
            return
        lock.acquire()
        claim_run_folder(self.out)
        if resume:
            recover_trainer_state(self.out)
            return
        clear_run(self.out, keep=(CONFIG_FILE,) if self._config_written else ())
        if not self._config_written:
            self.write_config()

    def _after_resume(self) -> None:
        assert self.out is not None
        # Records after the checkpoint belong to steps that will be re-run; results (eval.json,
        # latents, figures) describe weights that training is about to replace.
        truncate_metrics(self.out, self.step)
        remove_results(self.out)

    def _loop(self) -> dict[str, Any]:
        cfg = self.cfg
        bar = None
        if cfg.progress and self.is_main:
            from tqdm.auto import tqdm

            n = torch.get_num_threads()
            desc = f"train ({n} thread{'s' if n > 1 else ''})" if self.device.type == "cpu" else "train"
            bar = tqdm(total=cfg.steps, initial=self.step, desc=desc, dynamic_ncols=True, file=sys.stderr)
        old_handler = None
        try:
            old_handler = signal.signal(signal.SIGINT, self._request_stop)
        except ValueError:  # not the main thread
            pass
        t0, reason = time.time(), "completed"
        acc: dict[str, Tensor] = {}
        n_acc = 0
        try:
            while self.step < cfg.steps:
                idx = self._next_indices()
                batch = self.train_data[idx]
                try:
                    losses = self.train_step(batch)
                except NonFiniteLossError as e:
                    where = f"; batch indices {idx[:16].tolist()}{'...' if len(idx) > 16 else ''}"
                    if self.out is None:
                        keep = ""
                    elif self.checkpoint_step is None:
                        keep = f"; no checkpoint was written yet, so {self.out} holds nothing to resume"
                    else:
                        keep = f"; the last good checkpoint (step {self.checkpoint_step}) is in {self.out}"
                    raise NonFiniteLossError(f"{e}{where}{keep}") from None
                for k, v in losses.items():
                    acc[k] = acc.get(k, 0) + v.detach().float()
                n_acc += 1
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    rec = {k: float(v) / n_acc for k, v in acc.items()}
                    self._log({"step": self.step, "split": "train", **rec, **self._lr_record(self.step - 1)})
                    if bar is not None:
                        bar.set_postfix({k: f"{v:.4g}" for k, v in list(rec.items())[:3]}, refresh=False)
                    acc, n_acc = {}, 0
                if bar is not None:
                    bar.update(1)
                last = self.step == cfg.steps
                if self.val_data is not None and ((cfg.eval_every and self.step % cfg.eval_every == 0) or last):
                    if self._any_rank(self._after_eval(self.evaluate())):
                        reason = "early_stop"
                if (cfg.sample_every and self.step % cfg.sample_every == 0) or last or reason == "early_stop":
                    if self.is_main:
                        self.save_sample_grid(f"step-{self.step:06d}")
                if (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0) or last or reason == "early_stop":
                    self.save_checkpoint()
                if reason == "early_stop":
                    break
                if self._any_rank(self._stop_requested):
                    reason = "interrupted"
                    if self.checkpoint_step != self.step:
                        self.save_checkpoint()
                    break
        except OSError as e:
            if not ckpt.is_disk_full(e) or self.out is None:
                raise
            if self.checkpoint_step is None:
                kept = f"no checkpoint was written yet, so {self.out} holds nothing to resume"
            else:
                kept = (
                    f"the last good checkpoint (step {self.checkpoint_step}) is kept in {self.out}; free some space "
                    f"and continue with 'genlab train --out {self.out} --resume'"
                )
            raise ckpt.DiskFullError(e.filename or self.out, f" at step {self.step}; {kept}") from None
        finally:
            if bar is not None:
                bar.close()
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)
        summary = {
            "step": self.step,
            "stopped": reason,
            "best": self.best,
            "best_step": self.best_step,
            "seconds": time.time() - t0,
        }
        if self.out is not None and self.is_main and reason == "completed" and self.val_data is None:
            ckpt.save_tensors(self._export_weights(), self.out / BEST_FILE, self._weights_meta())
        return summary

    def _request_stop(self, signum: int, frame: Any) -> None:
        if self._stop_requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self._stop_requested = True
