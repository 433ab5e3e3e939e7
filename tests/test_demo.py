"""``genlab demo``: what the page computes (tested without a web library), its errors, and the
page's layout for every kind of run (when Gradio is installed). The browser test that drives the
page is tests/test_demo_browser.py."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import genlab
from genlab.cli import main
from genlab.demo import EVERY_CLASS, DemoError, RunDemo, check_demo_run
from genlab.evaluate import bits_unit, metric_unit
from genlab.viz import column_labels, image_grid, titled

FAST = ["--set", "steps=20", "--set", "eval_every=10", "--set", "sample_every=0", "--set", "batch_size=64", "--quiet"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo-runs")
    tiny = ["--set", "z_dim=4", "--set", "hidden=[16]"]
    assert main(["train", "vae", "--data", "digits", "--out", str(root / "vae"), *FAST, *tiny]) == 0
    assert main(["train", "vae", "--data", "digits", "--out", str(root / "cvae"), *FAST, *tiny,
                 "--set", "conditional=true"]) == 0  # fmt: skip
    return root


def test_sample_is_the_models_sample_with_that_seed(runs):
    demo = RunDemo(runs / "vae")
    out = demo.sample(n=16, seed=3)
    assert out.text is None and out.audio is None
    x = demo.model.sample(16, None, generator=torch.Generator().manual_seed(3))
    grid = image_grid(x.view(-1, *demo.spec.shape), None, min_side=64)
    title = f"vae vae, best weights, step {demo.step}, seed 3"
    assert np.array_equal(out.image, titled(grid, title))
    assert not np.array_equal(out.image, demo.sample(n=16, seed=4).image)


def test_conditional_sample_has_a_labelled_column_per_class(runs):
    demo = RunDemo(runs / "cvae")
    assert demo.class_names == [str(i) for i in range(10)]
    out = demo.sample(n=20, seed=0)
    cond = torch.arange(20) % 10
    x = demo.model.sample(20, cond, generator=torch.Generator().manual_seed(0))
    grid = column_labels(image_grid(x.view(-1, *demo.spec.shape), 10, min_side=64), demo.class_names, 10)
    assert np.array_equal(out.image, titled(grid, f"vae cvae, best weights, step {demo.step}, seed 0"))
    one = demo.sample(n=4, seed=0, cls=7)
    x7 = demo.model.sample(4, torch.full((4,), 7), generator=torch.Generator().manual_seed(0))
    grid7 = image_grid(x7.view(-1, *demo.spec.shape), None, min_side=64)
    assert np.array_equal(one.image, titled(grid7, f"vae cvae, best weights, step {demo.step}, seed 0, class 7"))
    with pytest.raises(DemoError, match="class 10 is not a class id"):
        demo.sample(n=4, cls=10)


def test_encode_sliders_and_interpolation(runs):
    demo = RunDemo(runs / "vae")
    assert demo.can_encode and demo.num_test() == 447
    dims = demo.latent_dims()
    assert sorted(d for d, _ in dims) == [0, 1, 2, 3] and all("KL" in lab for _, lab in dims)
    x, label = demo.image(5)
    test = genlab.load_dataset("digits", "test")
    assert torch.equal(x, test.tensors["x"][5].float()) and label == int(test.tensors["y"][5])
    z, pic = demo.encode(x, label)
    with torch.no_grad():
        assert np.allclose(z, demo.model.encode(x[None])[0].double().numpy())
        moved = z.copy()
        moved[dims[0][0]] += 2.0
        want = demo.model.decode(torch.tensor(moved, dtype=torch.float32)[None], None, mean=True)
    assert np.array_equal(demo.decode(moved), image_grid(want.view(1, 1, 8, 8), min_side=192))
    assert pic.shape[1] > pic.shape[0]  # input | reconstruction side by side
    row = demo.interpolate(*[demo.image(i)[0] for i in (0, 1)], steps=5)
    assert row.ndim == 3 and row.shape[2] == 3
    with pytest.raises(DemoError, match="out of range 0..446"):
        demo.image(447)
    with pytest.raises(DemoError, match="steps must be in 2..32"):
        demo.interpolate(x, x, steps=1)


def test_an_uploaded_image_is_read_onto_the_runs_levels(runs, tmp_path):
    from PIL import Image

    demo = RunDemo(runs / "vae")
    arr = np.zeros((40, 40, 3), np.uint8)
    arr[:, 20:] = 255
    Image.fromarray(arr).save(tmp_path / "half.png")
    x, label = demo.image(upload=str(tmp_path / "half.png"))
    assert label is None and x.shape == (1, 8, 8)
    # resized 40 -> 8 (Lanczos rings at the edge): black left, white right
    assert torch.equal(x[0, :, :3], torch.zeros(8, 3)) and torch.equal(x[0, :, 5:], torch.ones(8, 3))
    assert set((x * 16).flatten().tolist()) <= set(range(17))  # digits' 17 levels


def test_results_table_has_units_and_the_curve_is_drawn(runs):
    demo = RunDemo(runs / "vae")
    assert demo.eval_rows() == []
    (runs / "vae" / "eval.json").write_text(
        json.dumps(
            {
                "run": "x",
                "elbo_bpd": 2.2,
                "iwae_nats": -96.0,
                "baseline/kn/bpd": 2.09,
                "kid_mean": 0.01,
                "precision": 0.7,
                "n_examples": 447,
                "class_histogram": [1, 2],
            }
        )  # fmt: skip
    )
    try:
        rows = {k: (v, u) for k, v, u in demo.eval_rows()}
    finally:
        (runs / "vae" / "eval.json").unlink()
    assert rows["elbo_bpd"] == ("2.2000", "bits/dim") and rows["iwae_nats"][1] == "nats/example"
    assert rows["baseline/kn/bpd"][1] == "bits/dim" and rows["precision"][1] == "fraction"
    assert rows["n_examples"] == ("447", "") and "run" not in rows and "class_histogram" not in rows
    curve = demo.curve()
    assert curve is not None and curve.ndim == 3


def test_units_named_per_modality():
    from genlab.data.spec import DataSpec

    text = DataSpec(name="t", kind="tokens", shape=(16,), vocab=40, extra={"tokenizer": "char"})
    words = DataSpec(name="w", kind="tokens", shape=(16,), vocab=40, extra={"tokenizer": "word"})
    audio = DataSpec(name="a", kind="audio", shape=(1024,))
    image = DataSpec(name="i", kind="image", shape=(1, 8, 8), levels=17)
    assert [bits_unit(s) for s in (text, words, audio, image)] == ["bits/char", "bits/token", "bits/sample", "bits/dim"]
    assert metric_unit("stream_bpd", text) == "bits/char" and metric_unit("log_prob_bpd", audio) == "bits/sample"
    assert metric_unit("baseline/gzip/bits_per_char", words) == "bits/char"
    assert metric_unit("modality/text/bits_per_token", image) == "bits/token"
    assert metric_unit("fid", image) == "feature units^2" and metric_unit("mem_copy_auc", image) == "fraction"


def test_eval_prints_units(runs, capsys):
    assert main(["eval", str(runs / "vae"), "--metrics", "iwae", "--k", "2", "--out", str(runs / "e.json")]) == 0
    out = capsys.readouterr().out
    assert any(line.split()[:1] == ["iwae_bpd:"] and line.endswith("bits/dim") for line in out.splitlines())
    assert any(line.split()[:1] == ["iwae_nats:"] and line.endswith("nats/example") for line in out.splitlines())


def test_run_folders_the_demo_cannot_show(tmp_path, runs):
    with pytest.raises(DemoError, match="does not exist"):
        check_demo_run(tmp_path / "nope")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DemoError, match="is a file"):
        check_demo_run(tmp_path / "notes.txt")
    with pytest.raises(DemoError, match="not a genlab run folder"):
        check_demo_run(tmp_path)
    half = tmp_path / "half"
    half.mkdir()
    (half / "config.yaml").write_text((runs / "vae" / "config.yaml").read_text())
    with pytest.raises(DemoError, match="has no weights yet"):
        check_demo_run(half)
    alien = tmp_path / "alien"
    alien.mkdir()
    (alien / "config.yaml").write_text("model: stylegan9\nspec: {}\n")
    with pytest.raises(DemoError, match="model 'stylegan9', which this genlab does not know"):
        check_demo_run(alien)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.yaml").write_text((runs / "vae" / "config.yaml").read_text())
    (broken / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(DemoError, match="model.safetensors"):
        RunDemo(broken)
    assert (tmp_path / "notes.txt").read_text() == "mine"  # nothing of the user's is touched


def test_demo_cli_errors_are_one_line(tmp_path, capsys, monkeypatch):
    import genlab.demo as D

    monkeypatch.setattr(D, "import_gradio", lambda: None)  # the errors before any page is built
    assert main(["demo", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not exist" in err
    assert main(["demo", str(tmp_path), "--port", "70000"]) == 2
    assert "--port must be in 1..65535; got 70000" in capsys.readouterr().err

    def missing():
        raise DemoError(D.INSTALL_HINT)

    monkeypatch.setattr(D, "import_gradio", missing)
    assert main(["demo", str(tmp_path)]) == 2
    assert "pip install -e '.[demo]'" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["vae", "cvae"])
def test_the_page_builds(runs, name):
    pytest.importorskip("gradio", reason="the demo extra is not installed: pip install -e '.[demo]'")
    from genlab.demo import build_app

    app = build_app([RunDemo(runs / name)])
    ids = {getattr(b, "elem_id", None) for b in app.blocks.values()}
    assert {"sample-0", "sample-image-0", "encode-0", "recon-0", "interpolate-0"} <= ids
    if name == "cvae":
        (cls,) = [b for b in app.blocks.values() if getattr(b, "elem_id", None) == "class-0"]
        assert cls.choices[0][0] == EVERY_CLASS and len(cls.choices) == 11


def test_the_page_of_a_multimodal_and_a_text_run():
    pytest.importorskip("gradio", reason="the demo extra is not installed: pip install -e '.[demo]'")
    from conftest import TINY

    from genlab.demo import build_app

    lm = Path(TINY["frozen"]["lm_run"])  # a transformer run on captions
    demo = RunDemo(lm)
    assert demo.kind == "text" and not demo.can_encode
    out = demo.sample(n=2, seed=0)
    assert out.image is None and out.text.startswith("----- sample 1 -----")
    app = build_app([demo])
    ids = {getattr(b, "elem_id", None) for b in app.blocks.values()}
    assert "sample-text-0" in ids and "encode-0" not in ids


def test_translate_a_caption_to_images_and_audio(tmp_path):
    from genlab.data.audio import read_wav

    run = tmp_path / "av"
    tiny = ["--set", "z_dim=2", "--set", "hidden=8", "--set", "channels=4", "--data-opt", "n=64"]
    assert main(["train", "mvae", "--data", "shapes-av", "--out", str(run), "--set", "steps=2", *tiny, "--quiet"]) == 0
    demo = RunDemo(run)
    assert demo.kind == "multimodal" and not demo.can_encode
    assert set(demo.translations()) == {("text", "x"), ("text", "audio"), ("x", "text"), ("x", "audio")}
    pics = demo.translate("text", "x", text="a red heart", n=3)
    assert pics.image.ndim == 3 and pics.text is None and pics.audio is None
    clips = demo.translate("text", "audio", text="a red heart", n=3)
    samples, rate = read_wav(clips.audio)
    audio_spec = demo.spec.modality("audio")
    assert rate == audio_spec.extra["sample_rate"]
    assert len(samples) == 3 * (audio_spec.shape[0] + int(0.25 * rate))  # 3 clips, 0.25 s apart
    caps = demo.translate("x", "text", index=2, n=4)
    assert len(caps.text.splitlines()) == 4 and caps.image is not None  # the source image, captions under it
    with pytest.raises(DemoError, match="type a caption"):
        demo.translate("text", "x", text="  ")
