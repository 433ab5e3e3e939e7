"""Run folders under faults (issue 10): nothing genlab did not write is deleted or overwritten, a
crash at any moment leaves a run that resumes exactly, one training at a time per folder, and
conflicting flags are refused in one line."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import genlab
from genlab import TrainConfig, Trainer
from genlab import checkpoint as ckpt
from genlab.checkpoint import load_tensors, prev_path
from genlab.cli import main
from genlab.data.base import TensorDataset
from genlab.runs import (
    LOCK_FILE,
    MARKER_FILE,
    METRICS_FILE,
    STATE_FILE,
    STATE_JSON,
    RunFolderError,
    check_out_folder,
)
from genlab.train import NonFiniteLossError

CLI_FAST = ["--quiet", "--set", "steps=4", "--set", "eval_every=2", "--set", "sample_every=0", "--set", "batch_size=64"]


def train(out, *extra, data="digits"):
    return main(["train", "vae", "--data", str(data), "--out", str(out), *CLI_FAST, "--set", "z_dim=2", *extra])


def one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert err.startswith("genlab: error:") and "\n" not in err, err
    for n in needles:
        assert n in err, (n, err)
    return err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 4-step run (checkpoint at step 4); tests copy it before changing it."""
    out = tmp_path_factory.mktemp("runs") / "vae"
    assert train(out) == 0
    return out


@pytest.fixture()
def run(trained, tmp_path):
    shutil.copytree(trained, tmp_path / "run")
    return tmp_path / "run"


# --- 1. --overwrite clears only a genlab run, only genlab's files ------------------------------------
def test_overwrite_refuses_the_home_folder(tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    home.mkdir()
    (home / "photo.png").write_bytes(b"a photo")
    monkeypatch.setenv("HOME", str(home))
    assert train(home, "--overwrite") == 2
    one_line_error(capsys, "holds more than a run")
    assert (home / "photo.png").read_bytes() == b"a photo"
    with pytest.raises(RunFolderError):
        check_out_folder("/")
    with pytest.raises(RunFolderError):
        check_out_folder(tmp_path)  # above the home folder


def test_overwrite_refuses_the_data_folder_and_folders_above_it(tmp_path, capsys):
    imgs = tmp_path / "myimgs"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(imgs / f"{i}.png")
    for out in (imgs, tmp_path):
        assert train(out, "--overwrite", data=imgs) == 2
        one_line_error(capsys, "training data")
    assert len(list(imgs.glob("*.png"))) == 12


def test_overwrite_refuses_a_folder_genlab_did_not_make(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "model.safetensors").write_bytes(b"my own weights")
    (mine / "metrics.jsonl").write_text("my own log\n")
    assert train(mine, "--overwrite") == 2
    one_line_error(capsys, str(mine), "not a genlab run folder")
    assert (mine / "model.safetensors").read_bytes() == b"my own weights"
    assert (mine / "metrics.jsonl").read_text() == "my own log\n"


def test_overwrite_in_a_run_keeps_what_genlab_did_not_write(run):
    (run / "holiday.png").write_bytes(b"not a figure of genlab's")
    (run / "samples" / "mine.txt").parent.mkdir(exist_ok=True)
    (run / "samples" / "mine.txt").write_text("mine")
    assert train(run, "--overwrite") == 0
    assert (run / "holiday.png").read_bytes() == b"not a figure of genlab's"
    assert (run / "samples" / "mine.txt").read_text() == "mine"
    assert (run / MARKER_FILE).exists() and not (run / LOCK_FILE).exists()


# --- 2. a non-empty folder that is not a run is never written into -----------------------------------
def test_training_into_a_non_run_folder_is_refused_naming_it(tmp_path, capsys):
    mine = tmp_path / "project"
    mine.mkdir()
    (mine / "config.yaml").write_text("my: settings\n")
    (mine / "samples.png").write_bytes(b"my picture")
    assert train(mine) == 2
    one_line_error(capsys, str(mine), "not a genlab run folder")
    assert (mine / "config.yaml").read_text() == "my: settings\n"
    assert (mine / "samples.png").read_bytes() == b"my picture"
    tr = genlab.load_dataset("digits", "train")
    model = genlab.build_model("vae", tr.spec, z_dim=2, hidden=[16])
    with pytest.raises(RunFolderError, match="not a genlab run folder"):  # the Python API as well
        Trainer(model, tr, None, TrainConfig(steps=2, progress=False), mine).fit()
    assert (mine / "config.yaml").read_text() == "my: settings\n"


# --- 3. crash-proof resume --------------------------------------------------------------------------
class Killed(BaseException):
    """Stands for a kill -9: nothing after it runs (no except Exception catches it)."""


def make(out, steps=30):
    tr, va = genlab.load_dataset("digits", "train"), genlab.load_dataset("digits", "val")
    torch.manual_seed(0)
    model = genlab.build_model("vae", tr.spec, z_dim=4, hidden=[16])
    cfg = TrainConfig(
        steps=steps,
        batch_size=32,
        eval_every=10,
        sample_every=0,
        checkpoint_every=5,
        progress=False,
        schedule="cosine",
        ema=0.9,
    )
    return Trainer(model, tr, va, cfg, out)


def records(out):
    return [json.loads(line) for line in (out / METRICS_FILE).read_text().splitlines()]


def test_crash_between_the_two_trainer_state_writes_resumes_exactly(tmp_path, monkeypatch, recwarn):
    warnings.simplefilter("always")  # the same warning twice, from the same line: count both
    make(tmp_path / "full").fit()

    real_write_json = ckpt.write_json
    crashes = {"left": 1}

    def write_json(obj, path, keep_prev=False):  # dies after the tensors of step 15 were written
        if Path(path).name == STATE_JSON and obj.get("step") == 15 and crashes["left"]:
            crashes["left"] -= 1
            raise Killed
        return real_write_json(obj, path, keep_prev)

    monkeypatch.setattr(ckpt, "write_json", write_json)
    part = tmp_path / "part"
    with pytest.raises(Killed):
        make(part).fit()
    _, meta = load_tensors(part / STATE_FILE)
    assert meta["step"] == 15 and json.loads((part / STATE_JSON).read_text())["step"] == 10
    stale = part / f".{STATE_FILE}.x1y2z3.tmp"  # a write that a crash cut short
    stale.write_bytes(b"half a checkpoint")
    crashes["left"] = 1  # the same crash once more, after resuming from the .prev tensors
    with pytest.raises(Killed):
        make(part).fit(resume=True)
    assert not stale.exists()
    make(part).fit(resume=True)
    assert records(part) == records(tmp_path / "full")
    a, _ = load_tensors(tmp_path / "full" / "model.safetensors")
    b, _ = load_tensors(part / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    sa, _ = load_tensors(tmp_path / "full" / STATE_FILE)
    sb, _ = load_tensors(part / STATE_FILE)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)  # Adam's moments and step counters too
    assert sum("interrupted between its two writes" in str(w.message) for w in recwarn) == 2  # each resume said so


def test_loaded_tensors_are_owned_and_the_backup_is_a_rename(tmp_path):
    path = tmp_path / "t.safetensors"
    ckpt.save_tensors({"w": torch.zeros(1000)}, path, {"step": 1}, keep_prev=True)
    inode = path.stat().st_ino
    loaded, _ = load_tensors(path)
    ckpt.save_tensors({"w": torch.ones(1000)}, path, {"step": 2}, keep_prev=True)
    assert prev_path(path).stat().st_ino == inode  # the old file itself became the backup: no copy
    with open(prev_path(path), "r+b") as f:  # even a change in place of the file read from ...
        f.seek(-4000, os.SEEK_END)
        f.write(np.full(1000, 7, np.float32).tobytes())
    assert torch.equal(loaded["w"], torch.zeros(1000))  # ... leaves the loaded tensor as it was


# --- 4. one training per run folder -----------------------------------------------------------------
def _wait_for(path, proc, timeout=60):
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() - t0 < timeout
        time.sleep(0.1)


def test_a_second_training_is_refused_naming_the_pid_and_a_killed_holders_lock_is_stale(tmp_path, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen(  # another process holds the run's lock, as a training would
        [
            sys.executable,
            "-c",
            f"from genlab.runs import RunLock; import time; RunLock({str(out)!r}).acquire(); time.sleep(120)",
        ],
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for(out / LOCK_FILE, holder)
        assert train(out) == 2
        one_line_error(capsys, str(holder.pid), "in use")
        assert json.loads((out / LOCK_FILE).read_text())["host"] == socket.gethostname()
    finally:
        holder.send_signal(signal.SIGKILL)  # kill -9: the lock file stays behind, stale
        holder.wait()
    assert (out / LOCK_FILE).exists()
    assert train(out) == 0  # the dead holder's lock is taken over
    assert not (out / LOCK_FILE).exists()  # and released at the end


def test_the_lock_is_released_when_training_fails(tmp_path):
    tr = genlab.load_dataset("digits", "train")
    x = tr.tensors["x"].clone()
    x[:] = float("nan")
    bad = TensorDataset({"x": x, "y": tr.tensors["y"]}, tr.spec)
    model = genlab.build_model("vae", tr.spec, z_dim=2, hidden=[16], likelihood="bernoulli")
    cfg = TrainConfig(steps=20, batch_size=32, eval_every=0, sample_every=0, checkpoint_every=100, progress=False)
    with pytest.raises(NonFiniteLossError) as err:
        Trainer(model, bad, None, cfg, tmp_path / "nan").fit()
    assert not (tmp_path / "nan" / LOCK_FILE).exists()
    # Item 8: no checkpoint exists yet, and the message says so instead of pointing at one.
    assert "no checkpoint was written yet" in str(err.value) and "last good checkpoint" not in str(err.value)


# --- 5. a torn last line of metrics.jsonl -----------------------------------------------------------
def test_torn_last_metrics_line_is_dropped_on_resume_with_a_warning(run):
    with open(run / METRICS_FILE, "a") as f:
        f.write('{"step": 5, "split": "tr')  # the disk filled up in the middle of a line
    with pytest.warns(UserWarning, match="torn last line"):
        assert main(["train", "--out", str(run), "--resume", "--set", "steps=6", "--quiet"]) == 0
    recs = records(run)  # every line parses again
    assert recs[-1]["step"] == 6 and all(r["step"] <= 4 for r in recs[:-2])


# --- 8. conflicting flags, runs without a checkpoint, results of older weights ----------------------
def test_resume_refuses_overwrite_and_other_data(run, capsys):
    assert main(["train", "--out", str(run), "--resume", "--overwrite", "--set", "steps=6"]) == 2
    one_line_error(capsys, "--resume", "--overwrite")
    assert main(["train", "--out", str(run), "--resume", "--data", "moons", "--set", "steps=6"]) == 2
    one_line_error(capsys, "'digits'", "'moons'")
    assert json.loads((run / STATE_JSON).read_text())["step"] == 4  # nothing trained


def test_a_run_killed_before_its_first_checkpoint(run, capsys):
    for f in (STATE_FILE, STATE_JSON, prev_path(Path(STATE_FILE)).name, prev_path(Path(STATE_JSON)).name):
        (run / f).unlink(missing_ok=True)  # as if killed before the first checkpoint
    assert main(["train", "--out", str(run), "--resume", "--set", "steps=6"]) == 2
    one_line_error(capsys, "no checkpoint yet", "--overwrite")
    # Results that `genlab eval`/`encode` wrote for the old weights ...
    for f in ("eval.json", "latents-test.npz", "latents-test.png", "memorization.png"):
        (run / f).write_bytes(b"old")
    (run / "notes.md").write_text("mine")
    assert train(run) == 0  # ... are gone when new weights are trained into the folder
    assert not any((run / f).exists() for f in ("eval.json", "latents-test.npz", "latents-test.png"))
    assert not (run / "memorization.png").exists() and (run / "notes.md").read_text() == "mine"


def test_resume_removes_results_of_the_older_weights(run):
    (run / "eval.json").write_text("{}")
    (run / "latents-test.npz").write_bytes(b"old")
    assert main(["train", "--out", str(run), "--resume", "--set", "steps=6", "--quiet"]) == 0
    assert not (run / "eval.json").exists() and not (run / "latents-test.npz").exists()


# --- 6. torchrun: --overwrite cleared by rank 0 only, behind a barrier ------------------------------
@pytest.mark.slow
def test_torchrun_cli_overwrite_clears_on_rank_0_only(run, tmp_path):
    """``torchrun -m genlab train --overwrite`` on 2 CPU ranks: rank 0 alone locks and clears the
    folder while the other waits; every rank's RNG state is saved; nothing but the run's files is touched."""
    (run / "eval.json").write_text("{}")
    (run / "notes.md").write_text("mine")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}"]
    cmd = [*launch, "-m", "genlab", "train", "vae", "--data", "digits", "--out", str(run), *CLI_FAST, "--overwrite"]
    p = subprocess.run(cmd, env=env, timeout=240, capture_output=True)
    assert p.returncode == 0, p.stderr.decode()[-3000:]
    assert not (run / "eval.json").exists() and (run / "notes.md").read_text() == "mine"
    assert not (run / LOCK_FILE).exists()
    state = json.loads((run / STATE_JSON).read_text())
    assert state["step"] == 4 and state["world_size"] == 2
    tensors, _ = load_tensors(run / STATE_FILE)
    assert "rng.torch.rank0" in tensors and "rng.torch.rank1" in tensors
    assert not torch.equal(tensors["rng.torch.rank0"], tensors["rng.torch.rank1"])


def test_checkpoint_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        ckpt.save_tensors({"w": torch.zeros(2)}, tmp_path / "t.safetensors", keep_prev=True)
        ckpt.write_json({"step": 1}, tmp_path / "s.json")
    finally:
        os.umask(old)
    for f in ("t.safetensors", "s.json"):
        assert (tmp_path / f).stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600


# --- 7. one-line errors: sizes this machine cannot hold, read-only --out, a full disk; Ctrl-C ---------
def test_a_size_this_machine_cannot_hold_is_one_line(run, tmp_path, monkeypatch, capsys):
    assert train(tmp_path / "big", "--set", "z_dim=100000000000") == 2  # --set: refused before allocating
    one_line_error(capsys, "z_dim=100000000000", "more than the")
    assert not (tmp_path / "big").exists()
    cfg = ckpt.read_yaml(run / "config.yaml")  # the same size in a run's config.yaml
    cfg["model_kwargs"]["z_dim"] = 100000000000
    ckpt.write_yaml(cfg, run / "config.yaml")
    assert main(["sample", str(run), "--out", str(tmp_path / "s.png")]) == 2
    one_line_error(capsys, "config.yaml", "z_dim=100000000000", "more than the")
    # Sizes whose weights fit but whose training (gradients, Adam's moments) does not:
    monkeypatch.setattr("genlab.train.available_memory", lambda: 100_000)
    assert train(tmp_path / "fits-not", "--set", "hidden=[64]") == 2
    one_line_error(capsys, "training model 'vae'", "Adam")
    monkeypatch.undo()

    # Where no size could be estimated (a family that cannot be built on the meta device), the
    # allocator's own failure is one line too.
    def no_memory(*args, **kwargs):
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried "
            "to allocate 102400000000000 bytes. Error code 12 (Cannot allocate memory)"
        )

    monkeypatch.setattr("genlab.models.vae.MLP", no_memory)
    assert train(tmp_path / "oom") == 2
    one_line_error(capsys, "out of memory", "GiB")

    def memory_error(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr("genlab.models.vae.MLP", memory_error)
    assert train(tmp_path / "oom2") == 2
    one_line_error(capsys, "out of memory")


def test_a_read_only_out_is_refused_naming_it(run, tmp_path, monkeypatch, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    real_access = os.access  # root may write anywhere: make the folder read-only for this test's user too
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != ro and real_access(p, mode, **kw))
    try:
        assert train(ro / "run") == 2  # to be created in a read-only folder
        one_line_error(capsys, "permission denied", str(ro))
        assert train(ro) == 2  # the read-only folder itself
        one_line_error(capsys, "permission denied", str(ro))
    finally:
        ro.chmod(0o755)
    assert list(ro.iterdir()) == []

    # A write refused later (eval.json into a run the user may not write): one line naming the file.
    def refuse(path):  # what mkstemp raises in a folder the user may not write
        raise PermissionError(13, "Permission denied", str(path.parent / f".{path.name}.x1y2z3.tmp"))

    monkeypatch.setattr(ckpt, "_temp_path", refuse)
    assert main(["eval", str(run), "--metrics", "likelihood"]) == 2
    assert ".tmp" not in one_line_error(capsys, "permission denied", str(run / "eval.json"))


def test_a_full_disk_names_the_file_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    import errno

    real_save_file = ckpt.save_file
    writes = {"state": 0}

    def save_file(tensors, path, metadata=None):  # the disk fills up at the second checkpoint (step 4)
        if Path(path).name.startswith(f".{STATE_FILE}."):
            writes["state"] += 1
            if writes["state"] == 2:
                with open(path, "wb") as f:
                    f.write(b"the first bytes")  # a write that got some of the way
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_save_file(tensors, path, metadata=metadata)

    monkeypatch.setattr(ckpt, "save_file", save_file)
    out = tmp_path / "run"
    assert train(out, "--set", "steps=6", "--set", "checkpoint_every=2") == 2
    one_line_error(capsys, "no space left on device", str(out / STATE_FILE), "step 2", "--resume")
    assert json.loads((out / STATE_JSON).read_text())["step"] == 2
    assert load_tensors(out / STATE_FILE)[1]["step"] == 2  # the last good checkpoint, whole
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()  # space freed
    assert main(["train", "--out", str(out), "--resume", "--quiet"]) == 0
    assert json.loads((out / STATE_JSON).read_text())["step"] == 6

    # metrics.jsonl: the same, naming that file.
    import genlab.runs

    real_open = open

    class FullFile:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

    def full_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        return FullFile(f) if Path(file).name == METRICS_FILE and "a" in mode else f

    monkeypatch.setattr(genlab.runs, "open", full_open, raising=False)
    assert train(tmp_path / "run2") == 2
    one_line_error(capsys, "no space left on device", str(tmp_path / "run2" / METRICS_FILE))


def test_ctrl_c_during_training_saves_a_checkpoint_and_exits_130(tmp_path, monkeypatch, capsys):
    real_step = Trainer.train_step

    def train_step(self, batch):
        losses = real_step(self, batch)
        if self.step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: the trainer's handler asks the loop to stop
        return losses

    monkeypatch.setattr(Trainer, "train_step", train_step)
    out = tmp_path / "run"
    assert train(out) == 130  # not 0: a shell or script must see that the run did not finish
    err = capsys.readouterr().err
    assert "interrupted at step 2" in err and "--resume" in err
    assert json.loads((out / STATE_JSON).read_text())["step"] == 2
    monkeypatch.undo()
    assert main(["train", "--out", str(out), "--resume", "--quiet"]) == 0


def _interrupting_torch_import(entry: str) -> str:
    """Python code that runs ``entry`` with a Ctrl-C arriving while torch is being imported."""
    return (
        "import sys\n"
        "class CtrlC:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, CtrlC())\n"
        "sys.argv = ['genlab', 'train', 'vae', '--data', 'digits', '--out', 'run']\n" + entry
    )


@pytest.mark.parametrize(
    "entry",
    [
        "from genlab.cli import main\nsys.exit(main())\n",  # what the console script runs
        "import runpy\nrunpy.run_module('genlab', run_name='__main__')\n",  # python -m genlab
    ],
    ids=["console-script", "python-m"],
)
def test_ctrl_c_while_torch_is_imported_is_one_line_and_130(tmp_path, entry):
    res = subprocess.run(
        [sys.executable, "-c", _interrupting_torch_import(entry)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert res.returncode == 130 and res.stderr.strip() == "genlab: interrupted", res.stderr
    assert not (tmp_path / "run").exists()


def test_gan_lr_is_applied_and_logged(tmp_path):
    from conftest import TINY

    tr = genlab.load_dataset("digits", "train")

    def rates(name, cfg, **model_kwargs):
        torch.manual_seed(0)
        model = genlab.build_model(name, tr.spec, **{**TINY[name], **model_kwargs})
        trainer = Trainer(model, tr, None, cfg, tmp_path / name)
        return {
            k: (o.param_groups[0]["lr"], o.param_groups[0]["betas"]) for k, o in trainer.optimizers.items()
        }, trainer

    quiet = dict(steps=2, batch_size=32, progress=False, log_every=1, sample_every=0, checkpoint_every=0)
    # Unset: the paper's rate and betas for the loss.
    assert rates("dcgan", TrainConfig(**quiet))[0] == dict.fromkeys(
        ["discriminator", "generator"], (2e-4, (0.5, 0.999))
    )
    assert rates("wgan_gp", TrainConfig(**quiet))[0] == dict.fromkeys(
        ["discriminator", "generator"], (1e-4, (0.0, 0.9))
    )
    # --set lr (and beta1): applied to both groups, and the log records the rate in use.
    got, trainer = rates("dcgan", TrainConfig(lr=5e-4, beta1=0.9, **quiet))
    assert got == dict.fromkeys(["discriminator", "generator"], (5e-4, (0.9, 0.999)))
    trainer.fit()
    logged = [r["lr"] for r in records(tmp_path / "dcgan") if r["split"] == "train"]
    assert logged and all(v == 5e-4 for v in logged)
    # A rate set on the model for one group wins for that group; the log names both rates.
    got, trainer = rates("dcgan", TrainConfig(lr=5e-4, **quiet), lr_g=1e-3)
    assert got["generator"][0] == 1e-3 and got["discriminator"][0] == 5e-4
    trainer.fit()
    rec = next(r for r in records(tmp_path / "dcgan") if r["split"] == "train")
    assert rec["lr_generator"] == 1e-3 and rec["lr_discriminator"] == 5e-4 and "lr" not in rec


def test_eval_names_a_non_finite_metric_and_writes_null(run, monkeypatch, capsys):
    real = genlab.evaluate

    def evaluate(*args, **kwargs):
        res = real(*args, **kwargs)
        return {**res, "elbo_nats": float("nan"), "extra": {"spread": float("inf")}}

    monkeypatch.setattr(genlab, "evaluate", evaluate)
    assert main(["eval", str(run), "--metrics", "likelihood"]) == 0
    err = capsys.readouterr().err
    assert "'elbo_nats' is nan" in err and "'extra.spread' is inf" in err and "null" in err

    def no_constants(name):
        raise AssertionError(f"{name} in eval.json: not valid JSON")

    ev = json.loads((run / "eval.json").read_text(), parse_constant=no_constants)
    assert ev["elbo_nats"] is None and ev["extra"] == {"spread": None} and isinstance(ev["elbo_bpd"], float)


# --- 8. devices this machine does not have ----------------------------------------------------------
@pytest.mark.parametrize("device", ["gpu", "cuda"])
def test_an_unavailable_device_is_one_line_naming_the_available_ones(tmp_path, capsys, device):
    if device == "cuda" and torch.cuda.is_available():
        device = f"cuda:{torch.cuda.device_count()}"  # one past the last GPU
    assert train(tmp_path / "run", "--set", f"device={device}") == 2
    one_line_error(capsys, f"device {device!r} is not available", "available: cpu")
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="available: cpu"):
        TrainConfig(device=device)


# --- 9. bits/dim: never negative, and right on a known baseline --------------------------------------
def _uniform_noise(spec, n=48, seed=0):
    """``n`` examples with every dimension of every modality uniform on its levels (class labels too)."""
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for key in spec.modality_keys:  # ("x",) for data of one modality, whose spec is its own "x"
        sub = spec.modality(key)
        ids = torch.randint(sub.levels, (n, *sub.shape), generator=g)
        tensors[key] = ids if sub.kind == "tokens" else ids.double() / (sub.levels - 1)
    return TensorDataset({**tensors, "y": torch.randint(spec.num_classes, (n,), generator=g)}, spec)


def _bpd_cases():
    from conftest import ACCEPTS, SPECS, builtin_models

    cases = [
        pytest.param(name, spec, {}, id=f"{name}-{spec}")
        for name in builtin_models()
        if genlab.list_models()[name].likelihood != "none"
        for spec in ACCEPTS[name]
        if SPECS[spec].levels  # data with levels: bits/dim of a probability mass, never negative
    ]
    return cases + [
        pytest.param("vae", "img17", {"likelihood": lik}, id=f"vae-img17-{lik}")
        for lik in ("gaussian", "logistic", "bernoulli")
    ]


@pytest.mark.parametrize("name,spec,kwargs", _bpd_cases())
def test_every_familys_bits_per_dim_on_uniform_noise_is_not_negative(name, spec, kwargs):
    from conftest import SPECS, tiny_model

    from genlab.metrics.likelihood import likelihood_metrics

    model = tiny_model(name, SPECS[spec], **kwargs).eval()
    bpd = likelihood_metrics(model, _uniform_noise(SPECS[spec]))["bpd"]
    assert bpd >= 0, (name, spec, kwargs, bpd)


@pytest.mark.parametrize("centre", ["data", "bin"])
def test_a_gaussian_decoder_on_data_with_levels_never_reports_negative_bits(centre):
    """Even a decoder that knows the data -- its mean on each x (or on the centre of x's bin), at
    any scale -- bounds the probability mass: the Gaussian scores dequantized data (issue 10, item 9;
    a density at the grid points reported -4.7 bits/dim here)."""
    from conftest import SPECS, tiny_model

    from genlab.distributions import to_levels
    from genlab.metrics.likelihood import likelihood_metrics

    spec = SPECS["img17"]
    data = _uniform_noise(spec)
    x = data.tensors["x"]
    mean = x if centre == "data" else (to_levels(x, spec.levels).double() + 0.5) / spec.levels
    model = tiny_model("vae", spec, likelihood="gaussian").eval()
    for log_scale in (-7.0, -4.0, -2.0):

        def decoder_params(z, cond=None, log_scale=log_scale):  # z: k importance samples per example
            m = mean.repeat(z.shape[0] // len(x), 1, 1, 1)
            return torch.stack([m, torch.full_like(m, log_scale)], 1)

        model.decoder_params = decoder_params
        bpd = likelihood_metrics(model, data, batch_size=len(data))["bpd"]
        assert bpd >= 0, (centre, log_scale, bpd)


def test_bits_per_dim_of_the_independent_categorical_baseline_on_digits():
    """The independent-categorical baseline of the digits split (first 1,000 train, last 447 test),
    computed here from counts with add-one (Laplace) smoothing, is the published 2.40 bits/dim; and
    genlab's bits/dim give that figure for a model whose log_prob is that baseline, whether as a
    probability mass or as the same model's density on dequantized data (constant on each bin)."""
    import math

    from sklearn.datasets import load_digits

    from genlab.distributions import to_levels
    from genlab.metrics.likelihood import likelihood_metrics

    levels, d = 17, 64
    raw = load_digits().data.astype(np.int64)  # [1797, 64], levels 0..16, in file order
    train_ids, test_ids = raw[:1000], raw[1350:]
    counts = np.stack([(train_ids == lv).sum(0) for lv in range(levels)], 1) + 1  # [D, L], add-one
    log_p = np.log(counts / counts.sum(1, keepdims=True))
    expected = float(-log_p[np.arange(d), test_ids].sum(1).mean() / (d * math.log(2)))
    assert round(expected, 2) == 2.40
    test = genlab.load_dataset("digits", "test")
    assert np.array_equal(to_levels(test.tensors["x"], levels).reshape(-1, d).numpy(), test_ids)

    class Baseline(genlab.GenerativeModel):
        likelihood = "exact"

        def __init__(self, spec, density):
            super().__init__(spec)
            self.discrete, self.density = not density, density
            self.table = torch.tensor(log_p)

        def log_prob(self, x, cond=None):
            lp = self.table[torch.arange(d), to_levels(x, levels).flatten(1)].sum(1)  # [B] log P(levels)
            # As a density of y = (level + u) / L: P(level) spread over a bin of volume L^-D.
            return lp + d * math.log(levels) if self.density else lp

    for density in (False, True):
        assert likelihood_metrics(Baseline(test.spec, density), test)["bpd"] == pytest.approx(expected, abs=1e-9)


def test_the_command_starts_without_torch_and_every_public_name_resolves():
    code = (
        "import sys, genlab.cli\n"
        "assert 'torch' not in sys.modules, 'genlab.cli imports torch: a Ctrl-C there is a traceback'\n"
        "import genlab\n"
        "assert sorted(genlab.__all__) == sorted(genlab._EXPORTS)\n"
        "assert all(getattr(genlab, n) for n in genlab.__all__)\n"
        "import genlab.evaluate\n"
        "assert callable(genlab.evaluate)  # the function, not the submodule of the same name\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


def test_a_failed_safetensors_write_is_one_line_naming_the_file(tmp_path, monkeypatch):
    """A file-size limit (EFBIG) or an I/O error inside safetensors' Rust writer arrives as a
    SafetensorError with the errno only in its text; it must become one OSError naming the file."""

    class SafetensorError(Exception):
        pass

    def fail(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: File too large (os error 27)")

    monkeypatch.setattr(ckpt, "save_file", fail)
    target = tmp_path / "m.safetensors"
    with pytest.raises(OSError, match=r"cannot write .*m\.safetensors.*File too large") as err:
        ckpt.save_tensors({"a": torch.zeros(2)}, target)
    assert err.value.errno == 27 and not target.exists() and not list(tmp_path.iterdir())


def test_resume_of_a_training_killed_before_its_config_says_to_train_again(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / MARKER_FILE).write_text("{}")
    assert main(["train", "--out", str(out), "--resume"]) == 2
    one_line_error(capsys, "stopped before it wrote config.yaml", "without --resume")
