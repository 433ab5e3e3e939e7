"""The command line on multimodal runs: the figures of training, ``genlab sample`` drawing the
modalities jointly, ``genlab translate`` from each source modality, ``genlab eval`` coherence, and
one-line errors for what a user can get wrong."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from genlab.cli import main
from genlab.data import load_dataset
from genlab.data import shapes as S
from genlab.data.audio import read_wav, write_wav

FAST = ["--set", "steps=20", "--set", "batch_size=16", "--set", "eval_every=20", "--set", "sample_every=20", "--quiet"]
TINY = ["--set", "z_dim=2", "--set", "hidden=8", "--set", "channels=4"]


@pytest.fixture(scope="module")
def av_run(tmp_path_factory):
    """A tiny MVAE on image + caption + audio (shapes-av), trained for 20 steps."""
    out = tmp_path_factory.mktemp("runs") / "mvae-av"
    assert main(["train", "mvae", "--data", "shapes-av", "--data-opt", "n=200", *FAST, *TINY, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """A caption, an image file and a WAV file of one shapes-av example."""
    data = load_dataset("shapes-av", "test", n=1)
    folder = tmp_path_factory.mktemp("sources")
    img = folder / "shape.png"
    Image.fromarray((data.tensors["x"][0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(img)
    wav = write_wav(folder / "clip.wav", data.tensors["audio"][0], 4000)
    return {"text": S.decode_caption(data.tensors["text"][0]), "image": img, "audio": wav}


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("genlab: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_training_draws_the_multimodal_figures(av_run):
    for name in ("samples.png", "translation.png", "captioning.png"):
        img = np.asarray(Image.open(av_run / name))
        assert img.ndim == 3 and img.shape[0] > 100 and img.std() > 0, name
    clips = sorted(av_run.glob("samples-*.wav"))
    assert len(clips) == 16 and read_wav(clips[0])[0].shape == (1000,)


def test_sample_draws_the_modalities_jointly(av_run, tmp_path, capsys):
    assert main(["sample", str(av_run), "--n", "6", "--out", str(tmp_path / "pairs.png")]) == 0
    assert "6 WAV files" in capsys.readouterr().out
    assert np.asarray(Image.open(tmp_path / "pairs.png")).shape[1] > 6 * 128  # 6 captioned images in a row
    for i in range(6):
        clip, rate = read_wav(tmp_path / f"pairs-{i}.wav")
        assert clip.shape == (1000,) and rate == 4000
    assert main(["sample", str(av_run), "--n", "3", "--out", str(tmp_path / "s.npz")]) == 0
    arrays = np.load(tmp_path / "s.npz")
    assert arrays["x"].shape == (3, 3, 32, 32) and arrays["text"].shape == (3, S.TEXT_LEN)
    assert arrays["audio"].shape == (3, 1000) and np.abs(arrays["audio"]).max() <= 1
    assert main(["sample", str(av_run), "--out", str(tmp_path / "s.npy")]) == 2
    assert ".png or .npz" in _one_line_error(capsys)


def test_wav_files_beside_a_png_never_replace_a_users_file(av_run, tmp_path, capsys):
    mine = tmp_path / "pairs-2.wav"
    mine.write_bytes(b"my own recording")
    for cmd in (["sample", str(av_run), "--n", "4"], ["translate", str(av_run), "--text", "a red heart", "--n", "4"]):
        assert main([*cmd, "--out", str(tmp_path / "pairs.png")]) == 2
        err = _one_line_error(capsys)
        assert "pairs-2.wav exists" in err and "--overwrite" in err
        assert mine.read_bytes() == b"my own recording" and not (tmp_path / "pairs.png").exists()
    assert main(["sample", str(av_run), "--n", "4", "--out", str(tmp_path / "pairs.png"), "--overwrite"]) == 0
    assert read_wav(mine)[0].shape == (1000,)
    assert main(["sample", str(av_run), "--out", str(tmp_path / "default.png")]) == 0  # 16 by default
    assert len(list(tmp_path.glob("default-*.wav"))) == 16


def test_translate_from_each_modality(av_run, sources, tmp_path, capsys):
    run = str(av_run)
    t2i = tmp_path / "t2i.png"
    assert main(["translate", run, "--text", sources["text"], "--n", "16", "--to", "x", "--out", str(t2i)]) == 0
    assert "16 images" in capsys.readouterr().out
    assert np.asarray(Image.open(t2i)).shape[1] >= 8 * 128  # 8 images per row
    # image -> captions: --out captions.txt names the target; one caption per line, in the vocabulary
    caps = tmp_path / "captions.txt"
    assert main(["translate", run, "--image", str(sources["image"]), "--n", "4", "--out", str(caps)]) == 0
    lines = caps.read_text().splitlines()
    assert len(lines) == 4 and all(w in S.CAPTION_VOCAB for line in lines for w in line.split())
    # audio -> image + caption (one PNG, captions under the images), and arrays of every target
    assert main(["translate", run, "--audio", str(sources["audio"]), "--n", "3", "--out", str(tmp_path / "a.png")]) == 0
    assert (tmp_path / "a.png").exists()
    assert main(["translate", run, "--text", sources["text"], "--n", "2", "--out", str(tmp_path / "t.npz")]) == 0
    arrays = np.load(tmp_path / "t.npz")
    assert sorted(arrays) == ["audio", "x"] and arrays["x"].shape == (2, 3, 32, 32)
    # two sources at once, to a WAV of the clips
    wav = tmp_path / "c.wav"
    argv = ["translate", run, "--text", sources["text"], "--image", str(sources["image"]), "--out", str(wav)]
    assert main([*argv, "--n", "2"]) == 0
    assert read_wav(wav)[0].shape == (2 * 1000 + 2 * 1000,)  # two clips, each followed by 0.25 s of silence


def test_translate_errors_are_one_line(av_run, sources, tmp_path, capsys):
    run = str(av_run)
    bad_png = tmp_path / "broken.png"
    bad_png.write_text("not an image")
    bad_wav = tmp_path / "broken.wav"
    bad_wav.write_text("not a wav")
    fast_wav = write_wav(tmp_path / "fast.wav", np.zeros(1000), 8000)
    cases = [
        (["--text", "a purple heart"], "'purple' is not in the vocabulary"),
        (["--text", "a small red heart in the top left in the top left"], "at most 8"),
        (["--image", str(bad_png)], "broken.png"),
        (["--image", str(tmp_path / "missing.png")], "missing.png"),
        (["--audio", str(bad_wav)], "broken.wav"),
        (["--audio", str(fast_wav)], "8000 Hz"),
        (["--text", "a small red heart", "--out", str(tmp_path / "x.jpg")], "got .jpg"),
        (["--text", "a small red heart", "--to", "x", "--out", str(tmp_path / "x.txt")], "holds captions only"),
        (["--text", "a small red heart", "--to", "text"], "as the source"),
        (["--text", "a small red heart", "--to", "video"], "expected x (image), text (caption) or audio"),
        ([], "needs a source"),
    ]
    for flags, needle in cases:
        assert main(["translate", run, *flags]) == 2, flags
        assert needle in _one_line_error(capsys), flags


def test_translate_needs_a_multimodal_run_with_that_modality(tmp_path, sources, capsys):
    vae = tmp_path / "vae"
    assert main(["train", "vae", "--data", "digits", "--set", "steps=2", "--quiet", "--out", str(vae)]) == 0
    assert main(["translate", str(vae), "--text", "a small red heart"]) == 2
    assert "models one modality" in _one_line_error(capsys)
    pairs = tmp_path / "mvae-captions"
    argv = ["train", "mvae", "--data", "shapes-captions", "--data-opt", "n=64", "--out", str(pairs)]
    assert main([*argv, *FAST, *TINY, "--set", "steps=2"]) == 0
    capsys.readouterr()
    assert main(["translate", str(pairs), "--audio", str(sources["audio"])]) == 2
    assert "has no audio modality 'audio'" in _one_line_error(capsys)
    assert main(["translate", str(pairs), "--text", "a small red heart", "--out", str(tmp_path / "c.wav")]) == 2
    assert "no audio modality" in _one_line_error(capsys)


def test_eval_reports_coherence(av_run, capsys):
    # the image reader learns from the run's 200 training images here (~4 s); ~10 s on a full split
    assert main(["eval", str(av_run), "--metrics", "coherence", "--n-samples", "100"]) == 0
    res = json.loads((av_run / "eval.json").read_text())
    for direction in ("text->x", "x->text", "audio->x", "text+audio->x"):
        assert 0 <= res[f"coherence/{direction}"] <= 1 and 0 <= res[f"chance/{direction}"] <= 1
    assert res["factors/audio->x"] == "shape,scale,colour,region_x" and res["coherence_examples"] == 100
    assert 0 <= res["coherence/joint"] <= 1 and res["reader_accuracy/text"] == 1.0
    assert res["reader_accuracy/x/colour"] >= 0.9


def test_config_records_every_option_and_older_runs_still_load(av_run, tmp_path, capsys):
    """config.yaml keeps every model and data option with its value (version 2), so a later change of
    a default cannot change a saved run; a version-1 folder (options set by hand only), trained before
    the GRU caption decoder and fixed-phase audio became the defaults, loads with the old values."""
    import shutil

    import yaml

    from genlab.runs import load_run, saved_data_opts

    cfg = yaml.safe_load((av_run / "config.yaml").read_text())
    assert cfg["config_version"] == 2
    assert cfg["model_kwargs"]["text_decoder"] == "gru" and cfg["model_kwargs"]["z_dim"] == 2
    assert cfg["data_opts"] == {"n": 200, "seed": 0, "size": 32, "phase": "fixed"}
    old = tmp_path / "old-run"
    assert main(["train", "mvae", "--data", "shapes-av", "--data-opt", "n=200", *FAST, *TINY, "--out", str(old),
                 "--set", "text_decoder=independent", "--data-opt", "phase=random"]) == 0  # fmt: skip
    cfg = yaml.safe_load((old / "config.yaml").read_text())
    cfg.pop("config_version")
    cfg["model_kwargs"] = {"z_dim": 2, "hidden": 8, "channels": 4}  # what version 1 wrote
    cfg["data_opts"] = {"n": 200}
    (old / "config.yaml").write_text(yaml.safe_dump(cfg))
    model, cfg, _ = load_run(old)
    assert type(model.nets["text"].dec).__name__ == "IndependentTokens"
    assert saved_data_opts(cfg) == {"phase": "random", "n": 200}
    capsys.readouterr()
    assert main(["eval", str(old), "--metrics", "likelihood", "--k", "2"]) == 0
    shutil.rmtree(old)
