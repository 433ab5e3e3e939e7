"""``genlab compare --data``: one model per family under one wall-clock budget, evaluated and
tabulated (genlab/compare.py: compare_families, train_family, parse_budget), and the CLI's two modes.

The end-to-end tests train three tiny families (vae: bound, made: exact, dcgan: none) for 2 seconds
each on digits, once per module, with 100 samples for the sample metrics."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from genlab.cli import main
from genlab.compare import (
    COMPARE_STATE,
    FAMILY_COLUMNS,
    parse_budget,
    resolve_families,
    split_family_settings,
    train_family,
)

TINY_SETS = [
    "threads=1",
    "batch_size=64",
    "vae.z_dim=2",
    "vae.hidden=[16]",
    "vae.channels=4",
    "made.hidden=[16]",
    "dcgan.z_dim=4",
    "dcgan.channels=4",
    "dcgan.hidden=[16]",
]


def _argv(out_dir, budget="2s"):
    argv = ["compare", "--data", "digits", "--models", "vae,made,dcgan", "--budget", budget, "--out-dir", str(out_dir)]
    argv += ["--n-samples", "100", "--quiet"]
    for s in TINY_SETS:
        argv += ["--set", s]
    return argv


@pytest.fixture(scope="module")
def family_table(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("cmp") / "digits"
    assert main(_argv(out_dir)) == 0
    return out_dir


@pytest.mark.parametrize(
    "text, seconds",
    [("90s", 90), ("10m", 600), ("1h", 3600), ("600", 600), ("1.5m", 90), (" 2 min ", 120), ("3S", 3), (45, 45)],
)
def test_parse_budget(text, seconds):
    assert parse_budget(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10x", "m", "-5s", "0", "1h30m", "nan", "ten minutes"])
def test_parse_budget_refuses(text):
    with pytest.raises(ValueError, match="expected a duration") as e:
        parse_budget(text)
    assert repr(text) in str(e.value) and "\n" not in str(e.value)


def test_default_families_skip_unregistered():
    from genlab.registry import model_names

    families, notes = resolve_families(None)
    assert families and all(f in model_names() for f in families)
    assert ("ddpm" in families) == ("ddpm" in model_names())
    assert ("ddpm" in families) or any("ddpm" in n for n in notes)


def test_family_settings_split():
    train, model = split_family_settings(["vae", "made"], {"lr": 1e-3, "vae.z_dim": 3, "made.batch_size": 32})
    assert train == {"vae": {"lr": 1e-3}, "made": {"lr": 1e-3, "batch_size": 32}}
    assert model == {"vae": {"z_dim": 3}, "made": {}}
    with pytest.raises(ValueError, match=r"vae\.z_dim"):
        split_family_settings(["vae"], {"z_dim": 3})  # model keys are per family
    with pytest.raises(ValueError, match="'glow' is not one of"):
        split_family_settings(["vae"], {"glow.hidden": 8})


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["compare", "--data", "digits", "--budget", "10x"], "bad --budget '10x'"),
        (["compare", "--data", "digits", "--budget", "0s"], "bad --budget '0s'"),
        (["compare", "--data", "digits", "--models", "vae,nosuch"], "registered: "),
        (["compare", "{tmp}/run", "--data", "digits"], "not both"),
        (["compare", "{tmp}/run", "--budget", "10s"], "--budget: only with --data"),
        (["compare", "--data", "nosuch-data"], "nosuch-data"),
        (["compare", "--data", "digits", "--set", "z_dim=3"], "--set vae.z_dim=VALUE"),
        (["compare", "--data", "digits", "--out", "{tmp}/t.csv"], "--out must name a .md file"),
        (["compare", "--data", "digits", "--set", "vae.seed=3"], "use --seed"),
        (["compare"], "required: RUN"),
    ],
)
def test_bad_input_is_one_line(argv, needle, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv] + ["--quiet"] * ("--data" in argv)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("genlab: error:") and "\n" not in err and needle in err, err
    assert not (tmp_path / "compare-digits").exists()


def test_table_files_and_columns(family_table):
    md = (family_table / "compare.md").read_text()
    header = [label for _, label in FAMILY_COLUMNS]
    assert "| " + " | ".join(header) + " |" in md
    rows = {r["family"]: r for r in csv.DictReader(open(family_table / "compare.csv"))}
    assert list(rows) == ["vae", "made", "dcgan"]
    assert all(k in rows["vae"] for k, _ in FAMILY_COLUMNS)
    assert {f: r["inference"] for f, r in rows.items()} == {"vae": "bound", "made": "exact", "dcgan": "none"}
    assert rows["dcgan"]["test_bpd"] == "" and "| dcgan | none |" in md
    dcgan_line = next(ln for ln in md.splitlines() if ln.startswith("| dcgan"))
    # test bits/dim of a model without a likelihood
    assert dcgan_line.split("|")[header.index("test bits/dim") + 1].strip() == "-"
    for f in ("vae", "made"):
        assert 0 < float(rows[f]["test_bpd"]) < 5  # uniform on 17 levels: 4.09 bits/dim
        assert 0 <= float(rows[f]["probe_accuracy"]) <= 1
    assert rows["vae"]["bpd_source"].startswith("iwae")
    assert rows["dcgan"]["probe_accuracy"] == ""  # no encoder
    for r in rows.values():
        # the budget counts training steps: it is overrun by at most about one step
        assert int(r["steps"]) >= 1 and 2.0 <= float(r["train_seconds"]) < 8 and float(r["overhead_seconds"]) > 0
        assert float(r["fid"]) >= 0 and 0 <= float(r["near_copy_rate"]) <= 1 and float(r["sample_seconds_per_100"]) > 0
    summary = json.loads((family_table / "compare.json").read_text())
    assert summary["budget_s"] == 2 and [r["family"] for r in summary["families"]] == ["vae", "made", "dcgan"]
    img = np.asarray(Image.open(family_table / "compare.png"))
    assert img.ndim == 3 and img.shape[1] > 3 * img.shape[0] // 2 and img.std() > 0  # three grids side by side


def test_second_run_does_not_retrain(family_table, capsys):
    state = {f: json.loads((family_table / f / COMPARE_STATE).read_text()) for f in ("vae", "made", "dcgan")}
    mtimes = {f: (family_table / f / "best.safetensors").stat().st_mtime_ns for f in state}
    evals = {f: (family_table / f / "eval.json").stat().st_mtime_ns for f in state}
    assert all(s["done"] and s["stopped"] == "budget" for s in state.values())
    assert main(_argv(family_table)) == 0
    for f, s in state.items():
        assert json.loads((family_table / f / COMPARE_STATE).read_text()) == s
        assert (family_table / f / "best.safetensors").stat().st_mtime_ns == mtimes[f]
        assert (family_table / f / "eval.json").stat().st_mtime_ns == evals[f]  # evaluation reused too
    rows = {r["family"]: r for r in csv.DictReader(open(family_table / "compare.csv"))}
    assert {f: int(r["steps"]) for f, r in rows.items()} == {f: s["step"] for f, s in state.items()}


def test_runs_mode_reads_family_folders(family_table, tmp_path, capsys):
    out = tmp_path / "runs.md"
    assert main(["compare", str(family_table / "vae"), str(family_table / "made"), "--out", str(out)]) == 0
    md = out.read_text()
    assert "| vae |" in md and "| made |" in md and "iwae_bpd" in md and "log_prob_bpd" in md


def test_half_trained_family_resumes_with_recorded_time(tmp_path):
    folder = tmp_path / "vae"
    kw = {"train_settings": {"threads": 1}, "model_settings": {"z_dim": 2, "hidden": [16], "channels": 4}}
    first = train_family("vae", "digits", folder, 1.0, **kw)
    assert first["trained"] and first["done"] and first["elapsed_s"] >= 1.0
    # A compare killed mid-training leaves the state of its last checkpoint: not done.
    state = json.loads((folder / COMPARE_STATE).read_text())
    (folder / COMPARE_STATE).write_text(json.dumps({**state, "done": False, "stopped": None}))
    second = train_family("vae", "digits", folder, 2.0, **kw)
    assert second["trained"] and second["step"] > first["step"]
    assert 2.0 <= second["elapsed_s"] < first["elapsed_s"] + 2.0 + 5  # charged the recorded seconds, not anew
    metrics = [json.loads(ln) for ln in (folder / "metrics.jsonl").read_text().splitlines()]
    assert min(r["step"] for r in metrics) <= first["step"] < max(r["step"] for r in metrics)  # continued
    again = train_family("vae", "digits", folder, 2.0, **kw)
    assert not again["trained"] and again["step"] == second["step"]


def test_other_model_in_family_folder_is_refused(family_table, tmp_path):
    import shutil

    shutil.copytree(family_table / "made", tmp_path / "vae")
    with pytest.raises(ValueError, match="holds a run of 'made'"):
        train_family("vae", "digits", tmp_path / "vae", 1.0)


def test_changed_options_are_refused(family_table, capsys):
    argv = _argv(family_table)
    argv[argv.index("vae.z_dim=2")] = "vae.z_dim=3"
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "z_dim=2 (now 3)" in err, err


def test_compare_data_never_replaces_a_users_own_table_file(tmp_path, capsys):
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "compare.md").write_text("my table\n")
    args = ["compare", "--data", "digits", "--budget", "2s", "--models", "vae", "--out-dir", str(out), "--quiet"]
    assert main(args) == 2
    assert "was not written by 'genlab compare --data'" in capsys.readouterr().err
    assert (out / "compare.md").read_text() == "my table\n" and not (out / "vae").exists()
