"""Figures: run_figures on tiny validation sets, captions, the matplotlib plots (densities, curves,
scatters, heat maps) and their leaving matplotlib's global state alone, text sample delimiters, the
memorization figure, and the compare table's layout."""

import csv
import json
import sys

import matplotlib
import matplotlib.figure  # imported once here, not inside the first (timed) plotting test
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import genlab
from genlab import DataSpec
from genlab.compare import compare_runs, metric_columns, model_options, text_table
from genlab.data.base import TensorDataset
from genlab.metrics import memorization_audit
from genlab.viz import (
    plot_curves,
    plot_heatmap,
    plot_scatter,
    run_figures,
    sample_delimiter,
    save_copy_pairs,
    save_learned_density,
    save_reconstructions,
    save_samples,
    text_image,
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


def panels(path):
    """Widths of the coloured runs (plot panels) across the middle row of a PNG: viridis and tab10
    colours are never gray, while the background, text, ticks and frames are."""
    img = np.asarray(Image.open(path).convert("RGB")).astype(int)
    row = img[img.shape[0] // 2]
    coloured = np.r_[0, (row.max(1) - row.min(1)) > 30, 0].astype(int)
    edges = np.flatnonzero(np.diff(coloured))  # starts and ends, alternating
    return [int(w) for w in edges[1::2] - edges[::2] if w > 100]


def has_dark_text_above(path, top):
    """Dark pixels (a title) in the white rows above row ``top``."""
    img = np.asarray(Image.open(path).convert("L"))[:top]
    return (img == 255).mean() > 0.5 and img.min() < 100


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


def test_captions_are_one_readable_line_that_fits():
    title = "odd rows: data, even rows: reconstructions"
    cap = text_image(title)
    assert 12 <= cap.shape[0] <= 30 and cap.shape[1] > 3 * len(title) and cap.min() < 100
    assert text_image("of variance").shape[1] > text_image("ofvariance").shape[1] + 2  # spaces kept
    assert text_image("a $x$ b").shape[1] > text_image("a x b").shape[1] + 10  # '$' shown, not math
    img = titled(np.zeros((10, 20), np.uint8), title)
    assert img.shape == (cap.shape[0] + 10, cap.shape[1], 3)
    assert (img[-10:, :, 0] == 0).sum() == 200  # the picture itself, whole


def test_density_png_has_two_titled_ticked_panels(tmp_path):
    spec = DataSpec(name="vec", kind="vector", shape=(2,), value_range=None)
    model = genlab.build_model("realnvp", spec, n_couplings=2, hidden=8, depth=1).eval()
    data = torch.randn(300, 2)
    path = save_learned_density(model, data, tmp_path / "density.png", bins=32)
    widths = panels(path)
    assert len(widths) == 2 and min(widths) > 250, widths
    img = np.asarray(Image.open(path).convert("RGB"))
    assert img.shape[1] > 600 and 300 < img.shape[0] < 600
    assert has_dark_text_above(path, 25)  # panel titles
    assert (img[-30:].min(-1) < 100).any() and (img[:, :40].min(-1) < 100).any()  # tick labels, axis labels


def test_2d_samples_png_is_one_panel_or_two_with_the_data(tmp_path):
    spec = DataSpec(name="vec", kind="vector", shape=(2,), value_range=None)
    one = save_samples(torch.randn(50, 2), spec, tmp_path / "s1.png")  # samples alone: one panel
    two = save_samples(torch.randn(50, 2), spec, tmp_path / "s2.png", reference=torch.randn(80, 2))
    assert len(panels(one)) == 1 and len(panels(two)) == 2


def test_plot_curves_one_line_per_series(tmp_path):
    series = {"run-a": [(200, 2.0), (0, 3.0), (100, 2.5)], "run-b": [(0, 2.8), (200, 1.9)], "single": [(50, 2.2)]}
    path = plot_curves(series, tmp_path / "sub" / "c.png", "val_bpd vs step (validation)", "step", "val_bpd")
    assert path == tmp_path / "sub" / "c.png" and path.exists()
    img = np.asarray(Image.open(path).convert("RGB"))
    assert img.shape[1] > 500 and img.shape[0] > 300 and has_dark_text_above(path, 25)
    present = {tuple(c) for c in img.reshape(-1, 3)}
    assert {(31, 119, 180), (255, 127, 14), (44, 160, 44)} <= present  # tab10: one colour per series


def test_plot_scatter_colours_classes_with_a_legend(tmp_path):
    rng = np.random.default_rng(0)
    pts, y = rng.normal(size=(400, 2)), rng.integers(0, 4, 400)
    plain = plot_scatter(pts, None, None, tmp_path / "plain.png", "400 points", "z1", "z2")
    named = plot_scatter(pts, y, ["zero", "one", "two", "three"], tmp_path / "named.png", "400 points", "z1", "z2")
    a, b = (np.asarray(Image.open(p).convert("RGB")) for p in (plain, named))
    assert b.shape[1] > a.shape[1] + 50  # room for the legend
    legend = b[:, a.shape[1] :]  # its coloured markers: the first 4 tab10 colours
    assert {(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40)} <= {tuple(c) for c in legend.reshape(-1, 3)}
    assert len(panels(plain)) == 0 and (a.min(-1) < 100).any()  # white axes with dots, not a filled panel
    with pytest.raises(ValueError, match="integer labels"):
        plot_scatter(pts, y.astype(float), None, tmp_path / "bad.png", "t")
    with pytest.raises(ValueError, match=r"points \[N, 2\]"):
        plot_scatter(pts[:, :1], None, None, tmp_path / "bad.png", "t")


def test_plot_heatmap_grows_with_the_matrix(tmp_path):
    m = np.arange(6.0).reshape(2, 3)
    m[1, 2] = np.nan  # shown as a gray cell
    small = plot_heatmap(
        m, ["shape", "scale"], ["z0", "z1", "z2"], tmp_path / "h.png", "MI", "latent", "factor", "nats"
    )
    big = plot_heatmap(
        np.random.default_rng(0).random((8, 24)),
        [f"f{i}" for i in range(8)],
        [f"latent {i}" for i in range(24)],
        tmp_path / "big.png",
        "mutual information between factors and latents",
    )
    a, b = (np.asarray(Image.open(p).convert("RGB")) for p in (small, big))
    assert a.shape[0] > 200 and a.shape[1] > 300 and b.shape[1] > a.shape[1] and b.shape[0] > a.shape[0]
    assert len(panels(small)) >= 1 and (211, 211, 211) in {tuple(c) for c in a.reshape(-1, 3)}  # the NaN cell
    with pytest.raises(ValueError, match="does not match 2 row names x 2 column names"):
        plot_heatmap(m, ["a", "b"], ["c", "d"], tmp_path / "bad.png", "t")


def test_plots_leave_matplotlib_global_state_alone(tmp_path):
    rc = matplotlib.rcParams.copy()  # copy(): reading "backend" directly would resolve (and import) one
    had_pyplot = "matplotlib.pyplot" in sys.modules
    plot_scatter(np.zeros((3, 2)), np.arange(3), None, tmp_path / "s.png", "t")
    assert matplotlib.rcParams.copy() == rc
    assert had_pyplot or "matplotlib.pyplot" not in sys.modules  # no pyplot, so no global figure manager


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
    res = memorization_audit(train[:10] + 0.01, train, torch.rand(20, 1, 8, 8), top=8)
    png = save_copy_pairs(train[:10][res["closest_samples"]] + 0.01, train[res["closest_train"]], tmp_path / "m.png")
    assert has_title(png)


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
