"""Figures: run_figures on tiny validation sets, titles, the scalable font, density panels, text
sample delimiters, the memorization figure, and the compare table's layout."""

import csv
import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image, ImageFont

import genlab
from genlab import DataSpec
from genlab.compare import compare_runs, metric_columns, model_options, text_table
from genlab.data.base import TensorDataset
from genlab.metrics import memorization_audit
from genlab.viz import (
    font,
    run_figures,
    sample_delimiter,
    save_learned_density,
    save_reconstructions,
    save_samples,
    text_size,
    titled,
)

IMG = DataSpec(name="tiny-img", kind="image", shape=(1, 8, 8), levels=17, num_classes=3)


def tiny_images(n):
    x = torch.randint(0, 17, (n, 1, 8, 8), generator=torch.Generator().manual_seed(n)).float() / 16
    return TensorDataset({"x": x, "y": torch.arange(n) % 3}, IMG, "val")


def has_title(path):
    """A white caption bar with dark text above the picture."""
    img = np.asarray(Image.open(path).convert("L"))
    bar = img[:12]
    return img.shape[0] > 20 and (bar == 255).mean() > 0.5 and bar.min() < 100


def pillow_at_least(major, minor):
    import PIL

    return tuple(int(p) for p in PIL.__version__.split(".")[:2]) >= (major, minor)


@pytest.mark.parametrize("n,conditional", [(1, False), (5, False), (5, True), (20, False)])
def test_run_figures_work_with_few_validation_examples(n, conditional, tmp_path):
    model = genlab.build_model("vae", IMG, z_dim=3, hidden=(16,), conditional=conditional)
    written = run_figures(model, tiny_images(n), tmp_path, n=6)
    names = [p.name for p in written]
    expected = ["reconstructions.png", "traversal.png"] + (["interpolation.png"] if n >= 2 else [])
    assert names[-len(expected) :] == expected and all(p.exists() for p in written)
    assert not (tmp_path / "interpolation.png").exists() or n >= 2  # one example: no pair to interpolate
    for name in expected:
        assert has_title(tmp_path / name), name
    rec = np.asarray(Image.open(tmp_path / "reconstructions.png"))
    rows = 2 * -(-n // 8)  # a row of data and one of reconstructions per 8 examples
    assert rec.shape[0] > rows * 33 and rec.shape[0] < rows * 33 + 30
    trav = np.asarray(Image.open(tmp_path / "traversal.png"))
    assert trav.shape[0] > 3 * 33  # one row per latent dimension (z_dim=3)


def test_reconstructions_rows_alternate_and_pad(tmp_path):
    x = torch.zeros(10, 1, 32, 32)  # black data, white reconstructions
    path = save_reconstructions(x, torch.ones_like(x), tmp_path / "r.png")
    img = np.asarray(Image.open(path).convert("L")).astype(int)
    left = (img.shape[1] - (8 * 33 + 1)) // 2  # the grid is centred under a wider title
    grid = img[img.shape[0] - (4 * 33 + 1) :, left:]  # 4 rows of 8 cells below the title
    centre = lambda r, c: grid[1 + 33 * r + 16, 1 + 33 * c + 16]  # noqa: E731
    assert [centre(r, 0) for r in range(4)] == [0, 255, 0, 255]  # data, reconstructions, data, ...
    assert centre(2, 1) == 0 and centre(2, 2) == 128 and centre(3, 7) == 128  # 2 left; blanks gray


def test_font_is_scalable_and_keeps_spaces():
    if pillow_at_least(10, 1):
        assert isinstance(font(12), ImageFont.FreeTypeFont) and font(12).size == 12
        assert text_size("of variance")[0] > text_size("ofvariance")[0] + 2
    assert font(12) is font(12)  # cached: one font object per size


def test_titled_fits_its_caption():
    title = "odd rows: data, even rows: reconstructions"
    img = titled(np.zeros((10, 20), np.uint8), title)
    assert img.shape[1] >= text_size(title, 13)[0] and img.shape[0] > 10 and img.ndim == 3
    assert (img[-10:, :, 0] == 0).sum() == 200  # the picture itself, whole


def test_density_png_has_named_large_panels(tmp_path):
    spec = DataSpec(name="vec", kind="vector", shape=(2,), value_range=None)
    model = genlab.build_model("realnvp", spec, n_couplings=2, hidden=8, depth=1).eval()
    data = torch.randn(300, 2)
    path = save_learned_density(model, data, tmp_path / "density.png", bins=64)
    img = np.asarray(Image.open(path).convert("L"))
    assert img.shape[1] >= 2 * 256 and img.shape[0] >= 256 + 12
    assert has_title(path)


def test_text_samples_are_delimited(tmp_path):
    spec = DataSpec(
        name="chars",
        kind="tokens",
        shape=(5,),
        dtype="int64",
        value_range=None,
        levels=7,
        vocab=("<pad>", "<bos>", "<eos>", "<unk>", "a", "\n", "b"),
        extra={"tokenizer": "char"},
    )
    ids = torch.tensor([[0, 1, 1, 2, 0], [2, 2, 1, 1, 1], [0, 0, 0, 0, 0]]) + 4
    path = save_samples(ids, spec, tmp_path / "s.png")
    text = path.read_text()
    assert path.suffix == ".txt" and sample_delimiter(1) == "----- sample 1 -----"
    parts = text.split("----- sample ")
    assert parts[0] == "" and len(parts) == 4 and parts[2].startswith("2 -----\nbb\n\n\n")
    assert text.startswith("----- sample 1 -----\na\n\nba\n")


def test_memorization_png_is_titled(tmp_path):
    train = torch.rand(40, 1, 8, 8)
    res = memorization_audit(train[:10] + 0.01, train, torch.rand(20, 1, 8, 8), png=tmp_path / "m.png", top=8)
    assert has_title(res["png"])


# --- compare --------------------------------------------------------------------------------------
def fake_run(path, model, kwargs, ev):
    path.mkdir(parents=True)
    (path / "eval.json").write_text(json.dumps({"split": "test", "data": "digits", **ev}))
    (path / "config.yaml").write_text(yaml.safe_dump({"model": model, "model_kwargs": kwargs}))
    return path


MANY = {
    "n_examples": 447,
    "fid": 30.0,
    "elbo_nats": -98.0,
    "elbo_bpd": 2.2,
    "iwae_k": 100,
    "iwae_bpd": 2.1,
    "mmd2": 0.01,
    "precision": 0.6,
    "recall": 0.7,
    "kid_mean": 80.0,
}


def test_metric_order_headline_first_bookkeeping_last():
    cols = metric_columns([{"a_thing": 1.0, "run": "x", **MANY}, {"log_prob_bpd": 1.0}])
    assert cols == [
        "log_prob_bpd",
        "elbo_bpd",
        "iwae_bpd",
        "elbo_nats",
        "fid",
        "kid_mean",
        "precision",
        "recall",
        "mmd2",
        "a_thing",
        "n_examples",
        "iwae_k",
    ]


def test_model_options_are_the_non_defaults():
    assert model_options(
        {"model": "vae", "model_kwargs": {"conditional": True, "beta": 1.0, "hidden": [256, 256], "z_dim": 4}}
    ) == {"conditional": True, "z_dim": 4}
    assert model_options({"model": "no-such-model", "model_kwargs": {"k": 1}}) == {"k": 1}
    assert model_options(None) == {}


def test_compare_many_metrics_is_transposed(tmp_path):
    a = fake_run(tmp_path / "vae-plain", "vae", {}, MANY)
    b = fake_run(tmp_path / "vae-cond", "vae", {"conditional": True, "beta": 1.0}, {**MANY, "fid": 20.0})
    res = compare_runs([a, b], tmp_path / "c.md")
    assert res["transposed"] and res["header"][0] == "metric" and len(res["header"]) == 3
    assert res["rows"][0] == ["model", "vae", "vae conditional=True"]
    assert [r[0] for r in res["rows"][1:4]] == ["elbo_bpd", "iwae_bpd", "elbo_nats"] and res["rows"][-1][0] == "iwae_k"
    md = (tmp_path / "c.md").read_text().splitlines()
    assert md[2] == "| model | vae | vae conditional=True |" and len(md) == 2 + 1 + 10
    printed = text_table(res["header"], res["rows"])
    assert max(map(len, printed.splitlines())) < 80
    fid = next(ln for ln in printed.splitlines() if ln.startswith("fid "))
    assert fid.split() == ["fid", "30", "20"] and fid.endswith("20")  # numbers right-aligned
    rows = list(csv.DictReader(open(tmp_path / "c.csv")))  # machine-friendly: one row per run
    assert [r["model"] for r in rows] == ["vae", "vae"] and [r["options"] for r in rows] == ["", "conditional=True"]
    assert float(rows[1]["fid"]) == 20.0 and rows[0]["elbo_bpd"] == "2.2"


def test_compare_few_metrics_is_one_row_per_run(tmp_path):
    a = fake_run(tmp_path / "vae-a", "vae", {"z_dim": 4}, {"n_examples": 10, "elbo_bpd": 2.0})
    b = fake_run(tmp_path / "flow-b", "realnvp", {}, {"n_examples": 10, "log_prob_bpd": 1.5})
    res = compare_runs([a, b], tmp_path / "c.md")
    assert not res["transposed"] and res["header"] == [
        "run",
        "model",
        "options",
        "log_prob_bpd",
        "elbo_bpd",
        "n_examples",
    ]
    assert res["rows"] == [["vae-a", "vae", "z_dim=4", "-", "2", "10"], ["flow-b", "realnvp", "-", "1.5", "-", "10"]]
    assert (tmp_path / "c.md").read_text().startswith("| run | model | options | log_prob_bpd |")
    printed = text_table(res["header"], res["rows"]).splitlines()
    assert printed[1].startswith("vae-a   vae      z_dim=4 ")  # text columns left-aligned
