"""The command line end to end, as a user runs it, including what happens on bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from genlab.cli import main

FAST = ["--set", "steps=40", "--set", "eval_every=20", "--set", "sample_every=20", "--set", "batch_size=64", "--quiet"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "vae-digits"
    assert main(["train", "vae", "--data", "digits", "--out", str(out), *FAST, "--set", "z_dim=4"]) == 0
    return out


def test_train_writes_the_run_folder(run_dir):
    for f in ["config.yaml", "model.safetensors", "best.safetensors", "trainer-state.safetensors", "trainer-state.json", "metrics.jsonl", "samples.png", "reconstructions.png", "traversal.png", "interpolation.png"]:
        assert (run_dir / f).exists(), f
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == ["step-000020.png", "step-000040.png"]
    img = np.asarray(Image.open(run_dir / "samples.png"))
    assert img.ndim == 3 and img.shape[0] > 100 and img.std() > 0  # a real, non-blank grid


def test_sample_eval_and_resume(run_dir, tmp_path, capsys):
    assert main(["sample", str(run_dir), "--n", "16", "--out", str(tmp_path / "grid.png")]) == 0
    assert (tmp_path / "grid.png").exists()
    assert main(["sample", str(run_dir), "--n", "8", "--out", str(tmp_path / "s.npy")]) == 0
    s = np.load(tmp_path / "s.npy")
    assert s.shape == (8, 1, 8, 8) and np.allclose(s * 16, np.round(s * 16), atol=1e-5)
    assert main(["eval", str(run_dir), "--k", "10"]) == 0
    res = json.loads((run_dir / "eval.json").read_text())
    assert res["iwae_k"] == 10 and res["elbo_nats"] <= res["iwae_nats"] + 0.5
    assert res["elbo_bpd"] == pytest.approx(-res["elbo_nats"] / (64 * np.log(2)))
    assert main(["train", "--out", str(run_dir), "--resume", "--set", "steps=60", "--quiet"]) == 0
    assert json.loads((run_dir / "trainer-state.json").read_text())["step"] == 60


def test_listing_commands(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert "digits" in out and "shapes-captions" in out and "checkerboard" in out
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "vae" in out and "likelihood=bound" in out and "encode" in out


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["train", "nosuchmodel", "--data", "digits", "--out", "{tmp}/r"], "unknown model 'nosuchmodel'"),
        (["train", "vae", "--data", "nosuchdata", "--out", "{tmp}/r"], "unknown data set 'nosuchdata'"),
        (["train", "vae", "--data", "{tmp}/missing.npy", "--out", "{tmp}/r"], "does not exist"),
        (["train", "vae", "--data", "digits", "--out", "{tmp}/r", "--set", "zdim=3"], "unknown setting 'zdim'"),
        (["train", "vae", "--data", "digits", "--out", "{tmp}/r", "--set", "steps"], "expects key=value"),
        (["train", "vae", "--data", "digits", "--out", "{tmp}/r", "--set", "steps=-5"], "steps=-5"),
        (["train", "vae", "--data", "digits", "--out", "{tmp}/r", "--set", "likelihood=poisson"], "poisson"),
        (["train", "--out", "{tmp}/none", "--resume"], "no run to resume"),
        (["eval", "{tmp}/nothing"], "does not exist"),
        (["sample", "{tmp}/nothing"], "does not exist"),
        (["train", "vae", "--out", "{tmp}/r"], "needs --data"),
        (["frobnicate"], "invalid choice"),
        (["sample", "{tmp}/nothing", "--n", "0"], "--n must be >= 1"),
        (["encode", "{tmp}/nothing"], "does not exist"),
        (["encode", "{tmp}/nothing", "--limit", "0"], "--limit must be >= 1"),
        (["encode", "{tmp}/nothing", "--split", "training"], "invalid choice"),
        (["encode", "{tmp}/nothing", "--out", "{tmp}/z.npy"], "--out must name a .npz file"),
        (["compare"], "required: RUN"),
        (["compare", "{tmp}/nothing"], "does not exist"),
        (["compare", "{tmp}"], "run 'genlab eval"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(argv, needle, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("genlab: error:") and "\n" not in err and needle in err, err


def test_corrupt_checkpoint_in_cli(run_dir, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    (broken / "best.safetensors").write_bytes(b"\x00" * 10)
    assert main(["eval", str(broken)]) == 2
    err = capsys.readouterr().err.strip()
    assert "truncated or corrupt" in err and "\n" not in err


def test_console_entry_has_no_traceback(tmp_path):
    p = subprocess.run([sys.executable, "-m", "genlab", "train", "vae", "--data", str(tmp_path / "x.npz"), "--out", str(tmp_path / "r")], capture_output=True, text=True)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_sample_temperature_reaches_the_flow(tmp_path, capsys):
    import torch

    from genlab import load_run

    run = tmp_path / "flow"
    tiny = ["--set", "n_couplings=2", "--set", "hidden=16", "--set", "depth=1", "--set", "threads=1"]
    before = torch.get_num_threads()
    try:
        assert main(["train", "realnvp", "--data", "moons", "--out", str(run), "--set", "steps=5", "--set", "eval_every=0", "--set", "sample_every=0", *tiny, "--quiet"]) == 0
        assert torch.get_num_threads() == 1  # --set threads=1 reached the Trainer as an int
    finally:
        torch.set_num_threads(before)
    for t in ("0.5", "1"):
        assert main(["sample", str(run), "--n", "32", "--seed", "3", "--temperature", t, "--out", str(tmp_path / f"t{t}.npy")]) == 0
    model, _, _ = load_run(run)
    want = model.sample(32, generator=torch.Generator().manual_seed(3), temperature=0.5)
    got = np.load(tmp_path / "t0.5.npy")
    assert np.allclose(got, want.numpy(), atol=1e-6) and not np.allclose(got, np.load(tmp_path / "t1.npy"))
    assert main(["sample", str(run), "--temperature", "0", "--out", str(tmp_path / "z.npy")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("genlab: error:") and "\n" not in err and "--temperature" in err and "got 0.0" in err


def test_sample_temperature_unsupported_is_a_clear_error(run_dir, tmp_path, capsys):
    assert main(["sample", str(run_dir), "--temperature", "1.0", "--n", "4", "--out", str(tmp_path / "ok.npy")]) == 0
    capsys.readouterr()
    assert main(["sample", str(run_dir), "--temperature", "0.7", "--out", str(tmp_path / "s.npy")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("genlab: error:") and "\n" not in err and "'vae' does not support sampling temperature" in err, err
    assert not (tmp_path / "s.npy").exists()


# --- encode and compare -------------------------------------------------------------------------
TINY_FLOW = ["--set", "n_couplings=2", "--set", "hidden=16", "--set", "depth=1", "--data-opt", "n=300", "--quiet"]


@pytest.fixture(scope="module")
def flow_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "realnvp-moons"
    assert main(["train", "realnvp", "--data", "moons", "--out", str(out), "--set", "steps=6", "--set", "eval_every=3", "--set", "sample_every=0", *TINY_FLOW]) == 0
    return out


def test_encode_vae_writes_latents_and_scatter(run_dir, tmp_path, capsys):
    import torch

    from genlab import load_dataset, load_run

    assert main(["encode", str(run_dir), "--limit", "100", "--batch-size", "32", "--out", str(tmp_path / "z.npz")]) == 0
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and str(tmp_path / "z.npz") in line and "[100, 4]" in line, line
    res = np.load(tmp_path / "z.npz")
    assert res["z"].shape == (100, 4) and res["z"].dtype == np.float32 and res["y"].shape == (100,)
    model, _, _ = load_run(run_dir)
    x = load_dataset("digits", "test").tensors["x"][:100]
    with torch.no_grad():
        assert np.allclose(res["z"], model.encode(x).numpy(), atol=1e-5)  # batching changes nothing
    img = np.asarray(Image.open(tmp_path / "z.png"))
    assert img.ndim == 3 and img.std() > 0 and len(np.unique(img.reshape(-1, 3), axis=0)) > 5  # coloured dots
    assert main(["encode", str(run_dir), "--split", "val", "--limit", "10"]) == 0  # default path in the run
    assert np.load(run_dir / "latents-val.npz")["z"].shape == (10, 4) and (run_dir / "latents-val.png").exists()


def test_encode_flow_is_the_exact_inverse(flow_run, tmp_path, capsys):
    import torch

    from genlab import load_dataset, load_run

    assert main(["encode", str(flow_run), "--out", str(tmp_path / "z.npz")]) == 0
    z = np.load(tmp_path / "z.npz")["z"]
    x = load_dataset("moons", "test", n=300).tensors["x"]  # the run's own --data-opt n=300
    assert z.shape == (300, 2) and "y" not in np.load(tmp_path / "z.npz")
    model, _, _ = load_run(flow_run)
    with torch.no_grad():
        assert torch.allclose(model.decode(torch.from_numpy(z)), x, atol=1e-4)
    assert (tmp_path / "z.png").exists()
    assert main(["encode", str(flow_run), "--data", "digits", "--out", str(tmp_path / "d.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "shape (1, 8, 8)" in err and "shape (2,)" in err, err


def test_encode_gan_has_no_encoder(tmp_path, capsys):
    run = tmp_path / "gan"
    assert main(["train", "dcgan", "--data", "digits", "--out", str(run), "--set", "steps=2", "--set", "eval_every=0", "--set", "sample_every=0", "--set", "channels=4", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["encode", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("genlab: error:") and "\n" not in err and "'dcgan' has no encoder" in err, err
    assert not (run / "latents-test.npz").exists()


def test_compare_two_runs(run_dir, flow_run, tmp_path, capsys):
    import csv
    import shutil

    vae = tmp_path / "vae-digits"
    shutil.copytree(run_dir, vae)
    for r in (vae, flow_run):
        assert main(["eval", str(r), "--metrics", "likelihood"]) == 0
    capsys.readouterr()
    out = tmp_path / "report" / "cmp.md"
    assert main(["compare", str(vae), str(flow_run), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    md = out.read_text()
    for text in (md, printed):
        assert "vae-digits" in text and "realnvp-moons" in text and "elbo_bpd" in text and "log_prob_bpd" in text
    assert md.startswith("| run | model |")
    vae_row = next(ln for ln in md.splitlines() if ln.startswith("| vae-digits"))
    assert "| vae |" in vae_row and "| - |" in vae_row  # the flow's log_prob_* are missing for the VAE
    rows = list(csv.DictReader(open(out.with_suffix(".csv"))))
    assert [r["run"] for r in rows] == ["vae-digits", "realnvp-moons"] and [r["model"] for r in rows] == ["vae", "realnvp"]
    assert float(rows[1]["log_prob_bpd"]) == pytest.approx(json.loads((flow_run / "eval.json").read_text())["log_prob_bpd"])
    img = np.asarray(Image.open(out.with_suffix(".png")))
    assert img.ndim == 3 and img.std() > 0


def test_compare_without_eval_json_is_one_line(tmp_path, capsys):
    bare = tmp_path / "bare"
    bare.mkdir()
    assert main(["compare", str(bare), "--out", str(tmp_path / "c.md")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("genlab: error:") and "\n" not in err and f"genlab eval {bare}" in err, err
    assert not (tmp_path / "c.md").exists()
