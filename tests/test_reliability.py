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
