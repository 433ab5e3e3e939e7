"""Run folders: written by the Python Trainer as by the CLI, cleaned by --overwrite, guarded on
--resume; option values checked against the model and training types."""

import json
import os
import socket
import time

import pytest

import genlab
from genlab import TrainConfig, Trainer
from genlab.checkpoint import CheckpointError
from genlab.cli import main
from genlab.runs import LOCK_FILE, MARKER_FILE, SAMPLES_DIR, RunFolderError, RunLock, is_genlab_file

FAST = dict(steps=20, eval_every=10, sample_every=0, checkpoint_every=10, batch_size=64, progress=False)
CLI_FAST = [
    "--set",
    "steps=20",
    "--set",
    "eval_every=10",
    "--set",
    "sample_every=0",
    "--set",
    "batch_size=64",
    "--quiet",
]


def test_python_trainer_writes_a_run_that_load_run_opens(tmp_path):
    """The README's Python example: Trainer(out_dir=) then genlab.load_run on that folder."""
    train, val = genlab.load_dataset("digits", "train"), genlab.load_dataset("digits", "val")
    model = genlab.build_model("vae", train.spec, z_dim=4, hidden=[32])
    Trainer(model, train, val, TrainConfig(**FAST), out_dir=tmp_path / "run").fit()
    loaded, config, spec = genlab.load_run(tmp_path / "run")
    assert config["model"] == "vae" and config["data"] == "digits" and config["config_version"] == 2
    # Every option with its value (defaults too), so a later change of a default cannot alter the run.
    assert set(config["model_kwargs"]) == set(genlab.registry.model_kwargs("vae"))
    assert config["model_kwargs"]["z_dim"] == 4 and config["model_kwargs"]["hidden"] == [32]
    assert loaded.sample(3).shape == (3, 1, 8, 8) and spec.shape == (1, 8, 8)


def test_load_run_names_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(CheckpointError, match="is not a genlab run folder"):
        genlab.load_run(tmp_path)


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        (dict(z_dim="abc"), "z_dim='abc': expected int"),
        (dict(hidden=256), "hidden=256: expected a list of int"),
        (dict(beta="high"), "beta='high': expected float"),
        (dict(conditional="yes"), "conditional='yes': expected bool"),
    ],
)
def test_model_options_are_type_checked(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        genlab.build_model("vae", genlab.load_dataset("digits", "train").spec, **kwargs)


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        (dict(steps="abc"), "steps='abc': expected int"),
        (dict(steps=0), "steps=0: expected >= 1"),
        (dict(precision="fp16"), "precision='fp16': expected 'fp32' or 'bf16'"),
        (dict(schedule="cosin"), "expected 'constant' or 'cosine'"),
        (dict(progress="yes"), "progress='yes': expected bool"),
    ],
)
def test_training_settings_are_checked(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        TrainConfig(**kwargs)
    assert TrainConfig(lr=1).lr == 1.0 and isinstance(TrainConfig(lr=1).lr, float)


def test_cli_overwrite_removes_the_old_runs_files_and_resume_needs_more_steps(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", "vae", "--data", "digits", "--out", str(out), *CLI_FAST, "--set", "z_dim=2"]) == 0
    assert main(["encode", str(out), "--limit", "20"]) == 0
    assert main(["eval", str(out), "--metrics", "likelihood", "--k", "2"]) == 0
    # Every file genlab put into the folder is a name of genlab.runs, which --overwrite removes.
    own = {MARKER_FILE, SAMPLES_DIR}
    assert [p.name for p in out.iterdir() if not (p.name in own or is_genlab_file(p.name))] == []
    (out / "memorization.png").write_bytes(b"old")
    (out / "notes.md").write_text("mine")  # not genlab's: kept
    assert main(["train", "vae", "--data", "digits", "--out", str(out), *CLI_FAST, "--overwrite"]) == 0
    assert not (out / "eval.json").exists() and not (out / "memorization.png").exists()
    assert (out / "notes.md").read_text() == "mine" and (out / "config.yaml").exists()
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume", "--set", "steps=10"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "already at step 20" in err and "steps=10" in err
    assert json.loads((out / "trainer-state.json").read_text())["step"] == 20


def test_cli_data_opt_split_is_refused_in_one_line(tmp_path, capsys):
    assert main(["train", "vae", "--data", "digits", "--out", str(tmp_path / "r"), "--data-opt", "split=test"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--data-opt split" in err


def test_relative_data_paths_are_stored_absolute(tmp_path, monkeypatch):
    import numpy as np
    import yaml

    monkeypatch.chdir(tmp_path)
    np.save("table.npy", np.random.default_rng(0).normal(size=(300, 3)).astype("float32"))
    assert main(["train", "maf", "--data", "table.npy", "--out", "r", *CLI_FAST]) == 0
    cfg = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert cfg["data"] == str(tmp_path / "table.npy")
    monkeypatch.chdir(tmp_path.parent)  # eval from elsewhere still finds the data
    assert main(["eval", str(tmp_path / "r"), "--metrics", "likelihood"]) == 0


def test_compare_refuses_non_runs_and_non_markdown_out(tmp_path, capsys):
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "eval.json").write_text("{}")
    assert main(["compare", str(tmp_path / "fake")]) == 2
    assert "not a genlab run folder" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "fake" / "eval.json")]) == 2
    assert "is a file" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "fake"), "--out", str(tmp_path / "x.csv")]) == 2
    assert "Markdown" in capsys.readouterr().err


def test_eval_k_only_for_bound_models_and_json_out(tmp_path, capsys):
    out = tmp_path / "flow"
    assert main(["train", "realnvp", "--data", "moons", "--out", str(out), *CLI_FAST]) == 0
    capsys.readouterr()
    assert main(["eval", str(out), "--metrics", "likelihood", "--k", "5"]) == 2
    assert "--k sets the IWAE bound" in capsys.readouterr().err
    assert main(["eval", str(out), "--metrics", "likelihood", "--out", str(tmp_path / "e.txt")]) == 2
    assert ".json" in capsys.readouterr().err
    assert main(["sample", str(out), "--out", str(tmp_path / "s.npy")]) == 0  # 2-D data: 2,000 points by default
    import numpy as np

    assert np.load(tmp_path / "s.npy").shape == (2000, 2)


def test_flow_options_that_do_not_apply_are_refused():
    moons = genlab.load_dataset("moons", "train").spec
    with pytest.raises(ValueError, match="applies to discrete data"):
        genlab.build_model("realnvp", moons, dequantization="variational")
    with pytest.raises(ValueError, match="n_levels=3 applies to images"):
        genlab.build_model("glow", moons, n_levels=3)


def test_run_lock_is_reentrant_and_takes_over_only_stale_locks(tmp_path):
    lock = tmp_path / LOCK_FILE
    with RunLock(tmp_path):
        with RunLock(tmp_path):  # the CLI holds it around Trainer.fit, which takes it too
            assert json.loads(lock.read_text())["pid"] == os.getpid()
        assert lock.exists()
    assert not lock.exists()
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    with pytest.raises(RunFolderError, match="process 1 on host 'elsewhere'"):  # cannot be checked from here
        RunLock(tmp_path).acquire()
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    with RunLock(tmp_path):  # an earlier process that had our PID: not held by us, so stale
        pass
    lock.write_text('{"pid": 12')  # torn by a crash long ago
    os.utime(lock, (time.time() - 3600,) * 2)
    with RunLock(tmp_path):
        pass
    assert not lock.exists()
