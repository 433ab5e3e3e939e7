"""The command line end to end, as a user runs it, including what happens on bad input."""

import json
import re
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
    for f in [
        "config.yaml",
        "model.safetensors",
        "best.safetensors",
        "trainer-state.safetensors",
        "trainer-state.json",
        "metrics.jsonl",
        "samples.png",
        "reconstructions.png",
        "traversal.png",
        "interpolation.png",
    ]:
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
    # The likelihood metrics only: the sample-based ones need the digits classifier (test below, slow).
    assert main(["eval", str(run_dir), "--k", "10", "--metrics", "likelihood,iwae"]) == 0
    res = json.loads((run_dir / "eval.json").read_text())
    assert res["iwae_k"] == 10 and res["elbo_nats"] <= res["iwae_nats"] + 0.5
    assert res["elbo_bpd"] == pytest.approx(-res["elbo_nats"] / (64 * np.log(2)))
    assert main(["train", "--out", str(run_dir), "--resume", "--set", "steps=60", "--quiet"]) == 0
    assert json.loads((run_dir / "trainer-state.json").read_text())["step"] == 60


@pytest.mark.slow  # the digits feature classifier behind FID & co. trains for ~13 s
def test_eval_default_metrics(run_dir, tmp_path, cache):
    """`genlab eval RUN` without --metrics computes every metric that applies to a VAE on digits."""
    out = tmp_path / "eval.json"
    assert main(["eval", str(run_dir), "--k", "10", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    for key in ["elbo_nats", "iwae_nats", "recon_mse", "fid", "kid_mean", "precision", "coverage"]:
        assert key in res, key
    for key in ["classes_covered", "mmd2", "c2st_accuracy", "mem_copy_auc"]:
        assert key in res, key
    assert res["iwae_k"] == 10 and res["features"].startswith("classifier")


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
        (["compare", "{tmp}"], "not a genlab run folder"),
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
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "genlab",
            "train",
            "vae",
            "--data",
            str(tmp_path / "x.npz"),
            "--out",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 2
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_sample_temperature_reaches_the_flow(tmp_path, capsys):
    import torch

    from genlab import load_run

    run = tmp_path / "flow"
    tiny = ["--set", "n_couplings=2", "--set", "hidden=16", "--set", "depth=1", "--set", "threads=1"]
    before = torch.get_num_threads()
    try:
        assert (
            main(
                [
                    "train",
                    "realnvp",
                    "--data",
                    "moons",
                    "--out",
                    str(run),
                    "--set",
                    "steps=5",
                    "--set",
                    "eval_every=0",
                    "--set",
                    "sample_every=0",
                    *tiny,
                    "--quiet",
                ]
            )
            == 0
        )
        assert torch.get_num_threads() == 1  # --set threads=1 reached the Trainer as an int
    finally:
        torch.set_num_threads(before)
    for t in ("0.5", "1"):
        assert (
            main(
                [
                    "sample",
                    str(run),
                    "--n",
                    "32",
                    "--seed",
                    "3",
                    "--temperature",
                    t,
                    "--out",
                    str(tmp_path / f"t{t}.npy"),
                ]
            )
            == 0
        )
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
    assert (
        err.startswith("genlab: error:") and "\n" not in err and "'vae' does not support sampling temperature" in err
    ), err
    assert not (tmp_path / "s.npy").exists()


# --- encode and compare -------------------------------------------------------------------------
TINY_FLOW = ["--set", "n_couplings=2", "--set", "hidden=16", "--set", "depth=1", "--data-opt", "n=300", "--quiet"]


@pytest.fixture(scope="module")
def flow_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "realnvp-moons"
    assert (
        main(
            [
                "train",
                "realnvp",
                "--data",
                "moons",
                "--out",
                str(out),
                "--set",
                "steps=6",
                "--set",
                "eval_every=3",
                "--set",
                "sample_every=0",
                *TINY_FLOW,
            ]
        )
        == 0
    )
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
    assert (
        main(
            [
                "train",
                "dcgan",
                "--data",
                "digits",
                "--out",
                str(run),
                "--set",
                "steps=2",
                "--set",
                "eval_every=0",
                "--set",
                "sample_every=0",
                "--set",
                "channels=4",
                "--quiet",
            ]
        )
        == 0
    )
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
    assert [r["run"] for r in rows] == ["vae-digits", "realnvp-moons"] and [r["model"] for r in rows] == [
        "vae",
        "realnvp",
    ]
    assert float(rows[1]["log_prob_bpd"]) == pytest.approx(
        json.loads((flow_run / "eval.json").read_text())["log_prob_bpd"]
    )
    img = np.asarray(Image.open(out.with_suffix(".png")))
    assert img.ndim == 3 and img.std() > 0


def test_compare_without_eval_json_is_one_line(tmp_path, capsys):
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.yaml").write_text("model: vae\n")  # a run folder, not yet evaluated
    assert main(["compare", str(bare), "--out", str(tmp_path / "c.md")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("genlab: error:") and "\n" not in err and f"genlab eval {bare}" in err, err
    assert not (tmp_path / "c.md").exists()


# --- audit: sample --out extensions, eval flags, models table, data options ----------------------
NO_FIGS = [
    "--set",
    "eval_every=0",
    "--set",
    "sample_every=0",
    "--set",
    "batch_size=8",
    "--set",
    "n_samples=4",
    "--quiet",
]


@pytest.fixture(scope="module")
def audio_and_text_runs(tmp_path_factory):
    """A one-step WaveNet on short tones and a one-step transformer on a tiny text file."""
    root = tmp_path_factory.mktemp("runs")
    (root / "c.txt").write_text("the cat sat on the mat. " * 100, encoding="utf-8")
    wn, lm = root / "wavenet", root / "lm"
    assert (
        main(
            [
                "train",
                "wavenet",
                "--data",
                "tones",
                "--data-opt",
                "n=24",
                "--data-opt",
                "length=32",
                "--out",
                str(wn),
                "--set",
                "steps=1",
                "--set",
                "channels=4",
                "--set",
                "skip_channels=4",
                "--set",
                "layers_per_stack=2",
                *NO_FIGS,
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "train",
                "transformer",
                "--data",
                str(root / "c.txt"),
                "--data-opt",
                "block_size=8",
                "--out",
                str(lm),
                "--set",
                "steps=1",
                "--set",
                "d_model=8",
                "--set",
                "n_layers=1",
                "--set",
                "n_heads=1",
                *NO_FIGS,
            ]
        )
        == 0
    )
    return wn, lm


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("genlab: error:") and "\n" not in err, err
    return err


@pytest.mark.parametrize(
    "which,name,needle",
    [
        ("wavenet", "s.png", "--out {out}: samples of audio data are written as .wav or .npy; got .png"),
        ("wavenet", "s.txt", "samples of audio data are written as .wav or .npy; got .txt"),
        ("lm", "s.png", "--out {out}: samples of token data are written as .txt or .npy; got .png"),
        ("lm", "s", "samples of token data are written as .txt or .npy; got no extension"),
        ("vae", "z.txt", "--out {out}: samples of image data are written as .png or .npy; got .txt"),
        ("vae", "z.wav", "samples of image data are written as .png or .npy; got .wav"),
        ("flow", "p.txt", "samples of 2-D vector data are written as .png or .npy; got .txt"),
    ],
)
def test_sample_out_extension_is_checked_before_sampling(
    which, name, needle, audio_and_text_runs, run_dir, flow_run, tmp_path, capsys, monkeypatch
):
    import genlab.runs

    run = {"wavenet": audio_and_text_runs[0], "lm": audio_and_text_runs[1], "vae": run_dir, "flow": flow_run}[which]
    load_run = genlab.runs.load_run

    def load_run_no_sampling(*a, **kw):
        r = load_run(*a, **kw)
        r[0].sample = lambda *a, **kw: pytest.fail("sampled before checking --out")
        return r

    monkeypatch.setattr(genlab.runs, "load_run", load_run_no_sampling)
    out = tmp_path / name
    assert main(["sample", str(run), "--n", "2", "--out", str(out)]) == 2
    assert needle.format(out=out) in _one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []  # nothing written under this or any other name


@pytest.mark.parametrize(
    "which,name",
    [
        ("wavenet", "s.wav"),
        ("wavenet", "S.WAV"),
        ("wavenet", "a.npy"),
        ("lm", "s.txt"),
        ("lm", "S.TXT"),
        ("lm", "S.NPY"),
        ("vae", "g.PNG"),
        ("flow", "p.png"),
    ],
)
def test_sample_writes_exactly_the_name_given(which, name, audio_and_text_runs, run_dir, flow_run, tmp_path, capsys):
    run = {"wavenet": audio_and_text_runs[0], "lm": audio_and_text_runs[1], "vae": run_dir, "flow": flow_run}[which]
    assert main(["sample", str(run), "--n", "2", "--out", str(tmp_path / name)]) == 0
    assert [p.name for p in tmp_path.iterdir()] == [name]
    assert capsys.readouterr().out.strip() == f"wrote 2 samples to {tmp_path / name}"
    if name.lower().endswith(".npy"):
        assert np.load(tmp_path / name).shape[0] == 2


def test_sample_default_out_suits_the_data(audio_and_text_runs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["sample", str(audio_and_text_runs[0]), "--n", "1"]) == 0
    assert main(["sample", str(audio_and_text_runs[1]), "--n", "1"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["samples.txt", "samples.wav"]


@pytest.mark.parametrize(
    "flags,needle",
    [
        (["--k", "0"], "--k must be >= 1 (importance samples of the IWAE bound); got 0"),
        (["--k", "-3"], "--k must be >= 1"),
        (["--n-samples", "1"], "--n-samples must be >= 2; got 1"),
        (["--seed", "-1"], "--seed must be an integer in 0..2**64-1; got -1"),
        (["--seed", str(2**64)], "--seed must be an integer"),
        (
            ["--metrics", ""],
            "--metrics is empty; expected a comma-separated subset of likelihood, iwae, dynamic, recon, fid",
        ),
        (["--metrics", " , ,"], "--metrics is empty"),
        (["--metrics", "fid,nope"], "unknown metric 'nope'; expected a comma-separated subset of likelihood"),
    ],
)
def test_eval_bad_flags_fail_before_loading_the_run(flags, needle, tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nothing"), *flags]) == 2  # the flag, not the missing run
    assert needle in _one_line_error(capsys)


def test_eval_k_zero_on_a_real_run_is_one_line(run_dir, tmp_path, capsys):
    assert main(["eval", str(run_dir), "--k", "0", "--metrics", "iwae", "--out", str(tmp_path / "e.json")]) == 2
    assert "--k must be >= 1" in _one_line_error(capsys)
    assert not (tmp_path / "e.json").exists()


def test_eval_metric_names_are_case_insensitive(run_dir, tmp_path, capsys, monkeypatch):
    import genlab

    seen = {}
    real = genlab.evaluate

    def spy(model, data, metrics, **kw):
        seen["metrics"] = metrics
        return real(model, data, metrics, **kw)

    monkeypatch.setattr(genlab, "evaluate", spy)
    out = tmp_path / "e.json"
    assert (
        main(["eval", str(run_dir), "--metrics", " Likelihood, RECON ,likelihood", "--k", "2", "--out", str(out)]) == 0
    )
    assert seen["metrics"] == ["likelihood", "recon"]  # canonical names, each once
    res = json.loads(out.read_text())
    assert "elbo_nats" in res and "iwae_nats" not in res


def test_models_table_columns_line_up(capsys):
    from genlab.registry import list_models

    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = list(list_models())
    assert "transformer" in names
    heads = [ln for ln in lines if not ln.startswith(" ")]
    assert [ln.split()[0] for ln in heads] == names
    cols = {ln.index("likelihood=") for ln in heads}
    assert cols == {max(map(len, names)) + 1}, cols
    for ln in lines:
        if ln.startswith(" "):
            assert len(ln) - len(ln.lstrip()) == max(map(len, names)) + 1, ln
    docs = {re.search(r"likelihood=\S+ +", ln).end() for ln in heads}  # descriptions start in one column
    assert len(docs) == 1, docs


@pytest.mark.parametrize(
    "data,opt,needle",
    [
        ("digits", "size=32", "data set 'digits' takes no options; got option 'size'"),
        ("moons", "size=32", "data set 'moons' has no option 'size'; its options: n=None, seed=0"),
    ],
)
def test_train_unknown_data_option_is_one_line(data, opt, needle, tmp_path, capsys):
    assert main(["train", "vae", "--data", data, "--data-opt", opt, "--out", str(tmp_path / "r"), "--quiet"]) == 2
    assert needle in _one_line_error(capsys)
    assert not (tmp_path / "r").exists()


def test_train_unknown_option_of_a_user_file_is_one_line(tmp_path, capsys):
    np.save(tmp_path / "v.npy", np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32))
    assert (
        main(
            [
                "train",
                "vae",
                "--data",
                str(tmp_path / "v.npy"),
                "--data-opt",
                "size=32",
                "--out",
                str(tmp_path / "r"),
                "--quiet",
            ]
        )
        == 2
    )
    err = _one_line_error(capsys)
    assert "size" in err and "levels, seed" in err, err


def test_eval_help_explains_every_memorization_key(capsys):
    """Every mem_* key genlab eval can write is named, with its unit or null, in `genlab eval --help`."""
    import torch

    from genlab.metrics import memorization_audit

    g = torch.Generator().manual_seed(0)
    keys = memorization_audit(
        torch.rand(20, 4, generator=g), torch.rand(30, 4, generator=g), torch.rand(30, 4, generator=g)
    )
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = capsys.readouterr().out
    for key in set(keys) - {"closest_samples", "closest_train"}:  # those two go to memorization.png
        assert f"mem_{key}" in text, key


def test_eval_dynamic_on_a_text_file(audio_and_text_runs, tmp_path, capsys):
    _, lm = audio_and_text_runs
    out = tmp_path / "e.json"
    # blocks of 8 and updates every 8 tokens: with step 0 it is block-by-block scoring exactly
    args = ["eval", str(lm), "--metrics", "likelihood,dynamic", "--dynamic-lr", "0", "--out", str(out)]
    assert main(args) == 0
    res = json.loads(out.read_text())
    assert res["dynamic_bpd"] == pytest.approx(res["log_prob_bpd"], rel=1e-5) and res["dynamic_stride"] == 8
    assert "baseline/gzip9/bpd" in res
    assert main(["eval", str(lm), "--metrics", "dynamic", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["dynamic_lr"] == 1e-4
    assert main(["eval", str(lm), "--metrics", "dynamic", "--dynamic-lr", "-1"]) == 2
    assert "--dynamic-lr must be in [0, 1)" in _one_line_error(capsys)
