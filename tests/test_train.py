"""Trainer: exact resume, atomic checkpoints, non-finite detection, model selection, Ctrl-C, DDP."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import genlab
from genlab import TrainConfig, Trainer
from genlab.checkpoint import CheckpointError, load_tensors, prev_path
from genlab.data.base import TensorDataset
from genlab.train import NonFiniteLossError


def small_digits():
    tr = genlab.load_dataset("digits", "train")
    va = genlab.load_dataset("digits", "val")
    return tr, va


def make(out, steps=60, **kw):
    tr, va = small_digits()
    torch.manual_seed(0)
    model = genlab.build_model("vae", tr.spec, z_dim=4, hidden=(32,))
    cfg = TrainConfig(
        steps=steps,
        batch_size=32,
        eval_every=20,
        sample_every=0,
        checkpoint_every=20,
        progress=False,
        schedule="cosine",
        ema=0.9,
        **kw,
    )
    return Trainer(model, tr, va, cfg, out)


def train_records(out):
    return [r for r in map(json.loads, Path(out, "metrics.jsonl").read_text().splitlines()) if r["split"] == "train"]


class StopAt(Trainer):
    """Sends itself a real SIGINT (Ctrl-C) after ``stop_at`` steps."""

    stop_at = 30

    def train_step(self, batch):
        out = super().train_step(batch)
        if self.step == self.stop_at:
            os.kill(os.getpid(), signal.SIGINT)
        return out


def test_resume_after_ctrl_c_reproduces_the_uninterrupted_run(tmp_path):
    full = make(tmp_path / "full")
    s_full = full.fit()
    assert s_full["stopped"] == "completed"

    tr, va = small_digits()
    torch.manual_seed(0)
    model = genlab.build_model("vae", tr.spec, z_dim=4, hidden=(32,))
    part = StopAt(model, tr, va, full.cfg, tmp_path / "part")
    s = part.fit()
    assert s["stopped"] == "interrupted" and s["step"] == 30

    torch.manual_seed(123)  # a different init: everything must come from the checkpoint
    resumed = make(tmp_path / "part")
    s2 = resumed.fit(resume=True)
    assert s2["step"] == 60
    assert train_records(tmp_path / "full") == [dict(r) for r in train_records(tmp_path / "part")]
    a, _ = load_tensors(tmp_path / "full" / "model.safetensors")
    b, _ = load_tensors(tmp_path / "part" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_truncated_checkpoint_gives_clear_error_and_previous_survives(tmp_path):
    t = make(tmp_path, steps=40)
    t.fit()
    state = tmp_path / "trainer-state.safetensors"
    assert prev_path(state).exists()
    data = state.read_bytes()
    state.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt.*previous good copy"):
        make(tmp_path, steps=60).fit(resume=True)
    tensors, meta = load_tensors(prev_path(state))  # the previous checkpoint still loads
    assert meta["step"] == 20 and "model.enc_head.weight" in tensors


def test_non_finite_loss_names_the_step_and_keeps_last_checkpoint(tmp_path):
    tr, va = small_digits()
    x = tr.tensors["x"].clone()
    x[5, 0, 0, 0] = float("nan")
    bad = TensorDataset({"x": x, "y": tr.tensors["y"]}, tr.spec)
    torch.manual_seed(0)
    model = genlab.build_model("vae", tr.spec, z_dim=4, hidden=(32,), likelihood="bernoulli")
    cfg = TrainConfig(steps=200, batch_size=100, eval_every=0, sample_every=0, checkpoint_every=1, progress=False)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step \d+.*batch indices") as err:
        Trainer(model, bad, None, cfg, tmp_path).fit()
    step = int(str(err.value).split("at step ")[1].split(":")[0])
    assert step > 1
    state = json.loads((tmp_path / "trainer-state.json").read_text())
    assert state["step"] == step - 1  # the last good step is on disk, the bad one is not
    _, meta = load_tensors(tmp_path / "model.safetensors")
    assert meta["step"] == step - 1


def test_best_weights_are_the_best_validation_ones(tmp_path):
    t = make(tmp_path, steps=60, patience=100)
    t.fit()
    vals = [r for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines()) if r["split"] == "val"]
    best = min(vals, key=lambda r: r["val_nll"])
    tensors, meta = load_tensors(tmp_path / "best.safetensors")
    assert meta["step"] == best["step"]
    model = t.model
    model.load_state_dict(tensors)
    t.ema = None  # evaluate exactly the saved weights
    assert t.evaluate()["val_nll"] == pytest.approx(best["val_nll"], rel=1e-6)


def test_early_stopping_with_patience(tmp_path):
    t = make(tmp_path, steps=4000, patience=2, lr=5e-3)
    s = t.fit()
    assert s["stopped"] == "early_stop" and s["step"] < 4000
    assert s["step"] - s["best_step"] == 2 * 20


DDP_SCRIPT = r'''
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file

from genlab import DataSpec, GenerativeModel, TrainConfig, Trainer
from genlab.data.base import TensorDataset


class Quad(GenerativeModel):
    """One loss key, deterministic: the averaged per-rank gradients must equal the full-batch one."""

    def __init__(self, spec):
        super().__init__(spec)
        self.theta = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
        self.lin = torch.nn.Linear(3, 3).double()

    def loss(self, batch):
        return {"loss": ((self.lin(batch["x"]) - self.theta) ** 2).sum(1).mean()}


class TwoKeys(GenerativeModel):
    """A GAN's pattern: two keys, two optimizers, the second key recomputed after the first's step;
    the critic's loss does not reach the generator's parameters."""

    recompute_loss_per_group = True

    def __init__(self, spec):
        super().__init__(spec)
        self.gen = torch.nn.Linear(3, 3).double()
        self.critic = torch.nn.Linear(3, 1).double()

    def loss(self, batch):
        x = batch["x"]
        fake = self.gen(x)
        critic = (self.critic(x) - self.critic(fake.detach()) - 1).pow(2).mean()
        return {"critic": critic, "gen": fake.pow(2).mean() - self.critic(fake).mean()}

    def parameter_groups(self):
        return {"critic": list(self.critic.parameters()), "gen": list(self.gen.parameters())}


class TwoKeysOnce(TwoKeys):
    """Two keys backpropagated through one forward (no recompute): DDP cannot serve this (one
    backward per forward), the trainer averages each group's gradients in one flat all_reduce."""

    recompute_loss_per_group = False

    def loss(self, batch):
        x = batch["x"]
        fake = self.gen(x)
        critic = (self.critic(x) - self.critic(fake.detach()) - 1).pow(2).mean()
        return {"critic": critic, "gen": (fake - 1).pow(2).mean()}


class Noisy(Quad):
    """Draws noise from the global RNG (each rank has its own stream): a resume must restore every
    rank's stream to continue exactly."""

    def loss(self, batch):
        x = batch["x"] + 0.1 * torch.randn_like(batch["x"])
        return {"loss": ((self.lin(x) - self.theta) ** 2).sum(1).mean()}


spec = DataSpec(name="q", kind="vector", shape=(3,), value_range=None)
data = TensorDataset({"x": torch.randn(64, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)}, spec)


def fit(cls, steps, out=None, resume=False):
    torch.manual_seed(0)
    model = cls(spec)
    cfg = TrainConfig(
        steps=steps, batch_size=16, progress=False, eval_every=0, sample_every=0, checkpoint_every=4, device="cpu"
    )
    trainer = Trainer(model, data, None, cfg, out)
    if dist.is_initialized():  # DDP, except where it cannot serve (two backward passes per forward)
        assert (trainer.ddp is None) == (cls is TwoKeysOnce)
    trainer.fit(resume=resume)
    return model


runs = Path(sys.argv[1] + "-runs")
result = {}
for name, model in {
    "quad": fit(Quad, 7),
    "twokeys": fit(TwoKeys, 7),
    "twokeys_once": fit(TwoKeysOnce, 7),
    "noisy_full": fit(Noisy, 8, runs / "full"),
    "noisy_resumed": (fit(Noisy, 4, runs / "part"), fit(Noisy, 8, runs / "part", resume=True))[1],
}.items():
    result.update({f"{name}.{k}": v.contiguous() for k, v in model.state_dict().items()})
rank = dist.get_rank() if dist.is_initialized() else 0
save_file(result, sys.argv[1] + f".{rank}.safetensors")
'''


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args):
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}", *args]


@pytest.mark.slow
def test_ddp_two_cpu_ranks_equal_single_process(tmp_path):
    """DistributedDataParallel on 2 gloo ranks: a single-key and a two-key (GAN-like, recomputed)
    model, and a two-key model without recompute (flat all_reduce per group), end where one
    process with the same global batch ends; every rank's RNG stream is restored on resume, so a
    resumed run with per-rank noise equals the uninterrupted one."""
    from safetensors.torch import load_file

    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(script), str(tmp_path / "single")], check=True, env=env, timeout=120)
    p = subprocess.run(_torchrun(str(script), str(tmp_path / "ddp")), env=env, timeout=240, capture_output=True)
    assert p.returncode == 0, p.stderr.decode()[-3000:]
    single = load_file(tmp_path / "single.0.safetensors")
    r0 = load_file(tmp_path / "ddp.0.safetensors")
    r1 = load_file(tmp_path / "ddp.1.safetensors")
    for k in single:
        assert torch.equal(r0[k], r1[k]), k  # ranks stay in sync
        if k.startswith(("quad.", "twokeys.", "twokeys_once.")):
            assert torch.allclose(r0[k], single[k], atol=1e-10), k  # and match the one-process run
    for res in (single, r0):
        for k in [k for k in res if k.startswith("noisy_full.")]:
            assert torch.equal(res[k], res[k.replace("noisy_full.", "noisy_resumed.")]), k


def test_threads_setting_is_validated_and_applied():
    with pytest.raises(ValueError, match="threads"):
        TrainConfig(threads=0)
    tr, va = small_digits()
    model = genlab.build_model("vae", tr.spec, z_dim=4, hidden=(32,))
    before = torch.get_num_threads()
    try:
        Trainer(model, tr, None, TrainConfig(steps=1, threads=1, progress=False))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


class Lin(genlab.GenerativeModel):
    """A linear regression: enough to check the EMA arithmetic."""

    def __init__(self, spec):
        super().__init__(spec)
        self.lin = torch.nn.Linear(3, 1)

    def loss(self, batch):
        return {"loss": (self.lin(batch["x"]) - batch["x"].sum(1, keepdim=True)).pow(2).mean()}


def test_ema_warm_up_weights_the_first_update_on_the_new_weights():
    spec = genlab.DataSpec(name="q", kind="vector", shape=(3,), value_range=None)
    data = TensorDataset({"x": torch.randn(32, 3, generator=torch.Generator().manual_seed(0))}, spec)
    torch.manual_seed(0)
    model = Lin(spec)
    t = Trainer(model, data, None, TrainConfig(steps=3, batch_size=8, lr=0.1, ema=0.999, progress=False, device="cpu"))
    w0 = {k: v.clone() for k, v in model.state_dict().items()}
    t.train_step(data[torch.arange(8)])
    for k, v in model.state_dict().items():
        assert not torch.equal(v, w0[k])
        assert torch.allclose(t.ema[k], 0.1 * w0[k] + 0.9 * v, atol=1e-6)  # d_0 = (1 + 0) / (10 + 0)
    assert t.ema_decay(1) == pytest.approx(2 / 11) and t.ema_decay(10**6) == 0.999


def test_ema_tracks_actnorm_data_dependent_init():
    from genlab.models.flows.transforms import ActNorm

    tr = genlab.load_dataset("moons", "train")
    torch.manual_seed(0)
    model = genlab.build_model("realnvp", tr.spec, n_couplings=2, hidden=16, depth=1)
    t = Trainer(
        model,
        tr,
        None,
        TrainConfig(
            steps=5,
            batch_size=64,
            ema=0.999,
            progress=False,
            eval_every=0,
            sample_every=0,
            checkpoint_every=0,
            device="cpu",
        ),
    )
    t.fit()
    names = [n for n, m in model.named_modules() if isinstance(m, ActNorm)]
    assert names
    state = model.state_dict()
    for n in names:
        assert bool(t.ema[f"{n}.initialized"])
        for p in ("log_scale", "bias"):
            cur, avg = state[f"{n}.{p}"], t.ema[f"{n}.{p}"]
            assert (cur - avg).abs().max() < 0.05 * cur.abs().max(), (n, p, cur, avg)  # defaults are zeros


def test_bf16_warns_on_a_cpu_without_bf16_instructions(tmp_path, monkeypatch):
    import warnings

    import genlab.train as train_mod

    no_bf16, with_bf16 = tmp_path / "a", tmp_path / "b"
    no_bf16.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n")
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n")
    assert train_mod.cpu_has_bf16(no_bf16) is False and train_mod.cpu_has_bf16(with_bf16) is True
    assert train_mod.cpu_has_bf16(tmp_path / "missing") is None
    data = genlab.load_dataset("moons", "train", n=64)
    model = genlab.build_model("maf", data.spec)
    for has, expect in ((False, True), (True, False), (None, False)):
        monkeypatch.setattr(train_mod, "cpu_has_bf16", lambda has=has: has)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            train_mod.Trainer(model, data, None, train_mod.TrainConfig(steps=1, precision="bf16", progress=False))
        assert any("without bfloat16 instructions" in str(w.message) for w in caught) == expect


def test_idle_threads_leaves_busy_cores_alone(monkeypatch):
    import genlab.train as train_mod

    monkeypatch.setattr(train_mod.os, "cpu_count", lambda: 8)
    monkeypatch.setattr(train_mod.torch, "get_num_threads", lambda: 8)
    for load, expect in ((0.2, 8), (0.6, 7), (3.4, 5), (7.9, 1), (12.0, 1)):
        monkeypatch.setattr(train_mod.os, "getloadavg", lambda load=load: (load, load, load))
        assert train_mod.idle_threads() == expect
    monkeypatch.setattr(train_mod.torch, "get_num_threads", lambda: 4)  # never above torch's default
    monkeypatch.setattr(train_mod.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert train_mod.idle_threads() == 4


class Idle(genlab.GenerativeModel):
    """A Linear and a LayerNorm whose gradients are exactly 0: Adam's update is then 0, so
    each step changes a parameter only by AdamW's decoupled decay, p <- (1 - lr * wd) p."""

    def __init__(self, spec):
        super().__init__(spec)
        self.lin = torch.nn.Linear(3, 2)
        self.norm = torch.nn.LayerNorm(2)
        self.used = torch.nn.Parameter(torch.zeros(()))

    def loss(self, batch):
        idle = sum(p.sum() for m in (self.lin, self.norm) for p in m.parameters())  # gradient exactly 0
        return {"loss": (batch["x"].sum(1) - self.used).pow(2).mean() + 0.0 * idle}


def test_weight_decay_shrinks_matrices_not_biases_or_norm_gains(tmp_path):
    spec = genlab.DataSpec(name="q", kind="vector", shape=(3,), value_range=None)
    data = TensorDataset({"x": torch.randn(32, 3, generator=torch.Generator().manual_seed(0))}, spec)
    torch.manual_seed(0)
    model = Idle(spec)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(steps=3, batch_size=8, lr=0.1, weight_decay=0.5, progress=False, device="cpu", eval_every=0,
                      sample_every=0, checkpoint_every=0)  # fmt: skip
    t = Trainer(model, data, None, cfg)
    for i in range(3):
        t.train_step(data[torch.arange(8 * i, 8 * i + 8)])
    after = model.state_dict()
    assert torch.allclose(after["lin.weight"], before["lin.weight"] * (1 - 0.1 * 0.5) ** 3, atol=1e-7)
    for k in ("lin.bias", "norm.weight", "norm.bias"):
        assert torch.equal(after[k], before[k]), k


def test_a_run_saved_with_one_decayed_group_resumes_exactly(tmp_path):
    """Runs saved before the split kept one optimizer group that decays everything: --resume must
    go on with that layout, bit for bit, not fail or change the update."""
    spec = genlab.DataSpec(name="q", kind="vector", shape=(3,), value_range=None)
    data = TensorDataset({"x": torch.randn(64, 3, generator=torch.Generator().manual_seed(0))}, spec)

    def trainer(steps, out, legacy=False):
        torch.manual_seed(0)
        cfg = TrainConfig(steps=steps, batch_size=8, lr=0.05, weight_decay=0.3, progress=False, device="cpu",
                          eval_every=0, sample_every=0, checkpoint_every=2)  # fmt: skip
        t = Trainer(Lin(spec), data, None, cfg, out)
        if legacy:  # what the trainer built before: every parameter in one decayed group
            t.optimizers = {k: t._make_optimizer(p, t._opt_settings[k], split_decay=False) for k, p in t.groups.items()}
        return t

    full = trainer(6, tmp_path / "full", legacy=True)
    full.fit()
    part = trainer(4, tmp_path / "part", legacy=True)
    part.fit()
    resumed = trainer(6, tmp_path / "part")  # today's trainer would split; the checkpoint says one group
    resumed.fit(resume=True)
    assert len(resumed.optimizers["loss"].param_groups) == 1
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
