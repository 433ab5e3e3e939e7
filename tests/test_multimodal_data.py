"""Multimodal data (issue 11, data part): per-modality data specs, the ``shapes-av`` data set and its
audio decoder, and user pair folders (images + captions.csv/.jsonl + optional WAV audio)."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from genlab.data import DataSpec, InvalidDataError, list_datasets, load_dataset
from genlab.data import shapes as S
from genlab.data import shapes_av as A
from genlab.data.audio import mu_law_decode, mu_law_encode, read_wav, write_wav
from genlab.data.text import tokens_to_text


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and msg
    return msg


# --- the data spec ----------------------------------------------------------------------------------


def test_spec_round_trip_with_modalities() -> None:
    spec = load_dataset("shapes-av", "val", n=4).spec
    assert spec.kind == "multimodal" and spec.shape == (3, 32, 32) and spec.modality_keys == ("x", "text", "audio")
    x, text, audio = (spec.modality(k) for k in spec.modality_keys)
    assert (x.kind, x.shape, x.levels, x.value_range) == ("image", (3, 32, 32), 2, (0.0, 1.0))
    assert (text.kind, text.shape, text.dtype, text.vocab) == ("tokens", (S.TEXT_LEN,), "int64", S.CAPTION_VOCAB)
    assert text.levels == len(S.CAPTION_VOCAB) and text.extra["text_len"] == S.TEXT_LEN
    assert (audio.kind, audio.shape, audio.value_range, audio.extra["sample_rate"]) == (
        "audio",
        (1000,),
        (-1.0, 1.0),
        4000,
    )
    # run configs are written with sort_keys=False: the modalities keep their order
    for dump, load in ((json.dumps, json.loads), (lambda d: yaml.safe_dump(d, sort_keys=False), yaml.safe_load)):
        d = load(dump(spec.to_dict()))
        assert isinstance(d["modalities"]["audio"], dict) and d["modalities"]["text"]["shape"] == [S.TEXT_LEN]
        again = DataSpec.from_dict(d)
        assert again == spec and again.modality_keys == spec.modality_keys
        assert isinstance(again.modality("text"), DataSpec)
    # shapes-captions describes its two modalities the same way
    cap = load_dataset("shapes-captions", "val", n=4).spec
    assert cap.modality_keys == ("x", "text") and cap.modality("text") == text and cap.modality("x") == x
    with pytest.raises(KeyError, match="audio"):
        cap.modality("audio")


def test_old_spec_dict_without_modalities_loads() -> None:
    # A shapes-captions config written before the field existed: extra["modalities"] listed the keys.
    old = load_dataset("shapes-captions", "val", n=4).spec.to_dict()
    del old["modalities"]
    old["extra"]["modalities"] = ["x", "text"]
    spec = DataSpec.from_dict(old)
    assert spec.modalities == {} and spec.modality_keys == ("x", "text")
    assert spec.modality("x").kind == "image" and spec.modality("x").shape == (3, 32, 32)
    text = spec.modality("text")
    assert text.kind == "tokens" and text.shape == (S.TEXT_LEN,) and text.vocab == S.CAPTION_VOCAB
    # A single-modality spec is its own "x".
    digits = DataSpec.from_dict({"name": "digits", "kind": "image", "shape": [1, 8, 8], "levels": 17})
    assert digits.modality_keys == ("x",) and digits.modality("x") is digits
    with pytest.raises(KeyError):
        digits.modality("text")


def test_spec_modalities_are_checked() -> None:
    sub = {"name": "x", "kind": "image", "shape": [1, 2, 2]}
    spec = DataSpec("m", "multimodal", (1, 2, 2), modalities={"x": sub})  # dicts become sub-specs
    assert isinstance(spec.modality("x"), DataSpec) and spec.modality("x").shape == (1, 2, 2)
    with pytest.raises(ValueError, match="itself multimodal"):
        DataSpec("m", "multimodal", (1,), modalities={"x": DataSpec("y", "multimodal", (1,))})
    with pytest.raises(ValueError, match="expected a DataSpec"):
        DataSpec("m", "multimodal", (1,), modalities={"x": 3})


# --- shapes-av -------------------------------------------------------------------------------------


def test_shapes_av_shapes_ranges_and_determinism() -> None:
    assert "shapes-av" in list_datasets()
    ds = load_dataset("shapes-av", "train", n=64)
    cap = load_dataset("shapes-captions", "train", n=64)
    assert set(ds.tensors) == {"x", "text", "factors", "y", "audio"}
    for k, v in cap.tensors.items():  # the same examples as shapes-captions, plus audio
        assert torch.equal(ds.tensors[k], v)
    audio = ds.tensors["audio"]
    assert audio.shape == (64, 1000) and audio.dtype == torch.float32
    assert audio.abs().max() <= 1 and torch.equal(mu_law_decode(mu_law_encode(audio)), audio)  # 8-bit mu-law grid
    assert torch.equal(load_dataset("shapes-av", "train", n=64).tensors["audio"], audio)  # deterministic
    # Seeded by example: the first 16 of n=64 are the n=16 examples, with the same clips.
    assert torch.equal(load_dataset("shapes-av", "train", n=16).tensors["audio"], audio[:16])
    same = A.synth_audio(ds.tensors["factors"][:2].numpy())
    assert np.array_equal(same, audio[:2].numpy())
    # ... and jittered: the same audio factors in another example give another clip.
    f = ds.tensors["factors"][:1].numpy().copy()
    f2 = f.copy()
    f2[0, 2] = (f2[0, 2] + 1) % 40  # another orientation: not heard, but a different example
    c1, c2 = A.synth_audio(f), A.synth_audio(f2)
    assert not np.array_equal(c1, c2) and np.array_equal(A.decode_audio_batch(c1), A.decode_audio_batch(c2))
    assert not torch.equal(load_dataset("shapes-av", "train", n=16, seed=1).tensors["audio"], audio[:16])


@pytest.mark.parametrize("phase", A.PHASE_MODES)
def test_decode_audio_recovers_the_factors(phase: str) -> None:
    ds = load_dataset("shapes-av", "val", n=2000, phase=phase)
    want = A.audio_factors(ds.tensors["factors"].numpy())
    got = A.decode_audio_batch(ds.tensors["audio"])
    assert (got == want).all(1).mean() >= 0.99
    # Every value of every audio factor is heard and told apart.
    for k, size in enumerate(A.AUDIO_FACTOR_SIZES):
        assert set(want[:, k].tolist()) == set(range(size))
        for v in range(size):
            assert (got[want[:, k] == v, k] == v).mean() >= 0.99
    # The encoding itself: the spectral peak is the colour's pitch, within the 1.5 % jitter.
    feats = A.audio_features(ds.tensors["audio"])
    pitch = np.array(A.COLOUR_PITCH_HZ)[want[:, 2]]
    assert np.abs(feats["pitch_hz"] / pitch - 1).max() < 0.03
    sine = want[:, 0] == 1
    assert feats["r2"][sine].max() < 0.05 and feats["r3"][sine].max() < 0.05


def test_fixed_phase_clips_are_predictable_from_their_factors() -> None:
    """With fixed phases two examples with the same audio factors give nearly the same waveform
    (amplitude jitter only), so a per-sample decoder can reproduce it; with random phases their
    waveforms are unrelated (the reason ``phase="fixed"`` is the default)."""
    f = load_dataset("shapes-av", "val", n=1).tensors["factors"].numpy()
    f = np.repeat(f, 2, 0)
    f[1, 2] = (f[1, 2] + 1) % 40  # another orientation: the same audio factors, another example
    for phase, lo, hi in (("fixed", 0.9, 1.0), ("random", -0.6, 0.6)):
        a, b = A.synth_audio(f, phase=phase)
        assert lo < np.corrcoef(a, b)[0, 1] < hi, phase
    with pytest.raises(InvalidDataError, match="phase='none'"):
        load_dataset("shapes-av", "val", n=1, phase="none")


def test_decode_audio_agrees_with_the_caption() -> None:
    ds = load_dataset("shapes-av", "test", n=300)
    agree = []
    for ids, clip in zip(ds.tensors["text"], ds.tensors["audio"]):
        from_text = S.parse_caption(S.decode_caption(ids))
        from_audio = A.decode_audio(clip)
        assert set(from_audio) == set(A.AUDIO_FACTOR_NAMES) <= set(from_text)
        agree.append(all(from_audio[k] == from_text[k] for k in A.AUDIO_FACTOR_NAMES))
    assert np.mean(agree) >= 0.99


def test_decode_audio_inputs() -> None:
    assert set(A.decode_audio(np.zeros(1000)).values()) <= set(range(7))  # silence still gets an answer
    assert A.decode_audio_batch(torch.zeros(3, 1000)).shape == (3, 4)
    with pytest.raises(InvalidDataError) as e:
        A.decode_audio(np.zeros((2, 1000)))
    assert "expected one clip" in _one_line(e)
    with pytest.raises(InvalidDataError) as e:
        A.decode_audio(np.full(1000, np.nan))
    assert "NaN" in _one_line(e)


# --- user pair folders -----------------------------------------------------------------------------

N_IMAGES = 10


def _pair_folder(root: Path, fmt: str = "csv", audio: bool = True) -> list[tuple[str, str, str]]:
    """10 distinct 6x5 images in imgs/, 1-3 captions each, one WAV per caption (varying lengths)."""
    rng = np.random.default_rng(0)
    (root / "imgs").mkdir(parents=True)
    rows = []
    for i in range(N_IMAGES):
        Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)).save(root / "imgs" / f"{i}.png")
        for j in range(1 + i % 3):
            wav = f"a{i}_{j}.wav"
            if audio:
                write_wav(root / wav, 0.5 * np.sin(0.1 * (i + 1) * np.arange(100 + 10 * i + j)), 4000)
            rows.append((f"imgs/{i}.png", f"A dog, number {i} (take {j})", wav))
    if fmt == "csv":
        lines = ["image,caption,audio" if audio else "image,caption"]
        lines += [f'{img},"{cap}",{wav}' if audio else f'{img},"{cap}"' for img, cap, wav in rows]
        (root / "captions.csv").write_text("\n".join(lines) + "\n")
    else:
        objs = [{"image": img, "caption": cap, **({"audio": wav} if audio else {})} for img, cap, wav in rows]
        (root / "captions.jsonl").write_text("\n".join(json.dumps(o) for o in objs) + "\n")
    return rows


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_pair_folder_loads(tmp_path, fmt: str) -> None:
    rows = _pair_folder(tmp_path / "pairs", fmt)
    path = str(tmp_path / "pairs")
    splits = {s: load_dataset(path, s) for s in ("train", "val", "test", "all")}
    full = splits["all"]
    assert len(full) == len(rows) and set(full.tensors) == {"x", "text", "audio"}
    spec = full.spec
    assert spec.kind == "multimodal" and spec.shape == (3, 6, 5) and spec.levels == 256
    assert spec.modality_keys == ("x", "text", "audio") and spec.modality("audio").extra["sample_rate"] == 4000
    T = spec.extra["text_len"]
    assert spec.modality("text").shape == (T,) and full.tensors["text"].shape == (len(rows), T)
    longest = max(len(read_wav(tmp_path / "pairs" / wav)[0]) for _, _, wav in rows)
    assert full.tensors["audio"].shape == (len(rows), longest) == (len(rows), 190)  # the longest clip; others padded
    assert DataSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    # Row i of "all" is line i + 2: its image, caption (<bos> ... <eos> <pad>) and clip.
    first = np.asarray(Image.open(tmp_path / "pairs" / rows[0][0]))
    assert np.array_equal((full.tensors["x"][0].numpy().transpose(1, 2, 0) * 255).round(), first)
    ids = full.tensors["text"][3].tolist()
    assert ids[0] == 1 and ids[ids.index(2) + 1 :] == [0] * (T - 1 - ids.index(2))
    audio3, _ = read_wav(tmp_path / "pairs" / rows[3][2])
    assert np.allclose(full.tensors["audio"][3, : len(audio3)].numpy(), audio3, atol=1e-6)
    assert full.tensors["audio"][3, len(audio3) :].abs().max() == 0
    # Splits are drawn over images: every caption of an image sits in one split, and they cover all rows.
    key = lambda x: x.numpy().tobytes()  # noqa: E731
    owner = {}
    for s in ("train", "val", "test"):
        for img in splits[s].tensors["x"]:
            assert owner.setdefault(key(img), s) == s
    assert len(owner) == N_IMAGES and sum(len(splits[s]) for s in ("train", "val", "test")) == len(rows)
    # All splits share one vocabulary, built on the train split (the words of other splits may be <unk>).
    train_text = tokens_to_text(splits["train"].tensors["text"], splits["train"].spec.modality("text"))
    assert all(splits[s].spec.vocab == spec.vocab for s in splits)
    assert set(train_text) <= {cap for _, cap, _ in rows}
    train_words = {w for t in train_text for w in t.replace(",", " ").replace("(", " ").replace(")", " ").split()}
    assert {t.strip() for t in spec.vocab[4:]} - {",", "(", ")"} == train_words


def test_pair_folder_options_and_file_path(tmp_path) -> None:
    rows = _pair_folder(tmp_path / "p", "csv", audio=False)
    ds = load_dataset(str(tmp_path / "p" / "captions.csv"), "all", size=4, grayscale=True, text_len=5)
    assert set(ds.tensors) == {"x", "text"} and ds.tensors["x"].shape == (len(rows), 1, 4, 4)
    assert ds.spec.modality_keys == ("x", "text") and ds.tensors["text"].shape == (len(rows), 5)
    assert (ds.tensors["text"][:, -1] == 2).all()  # cut to 3 words, <eos> kept
    # A given vocabulary (e.g. a trained run's) is used as is.
    vocab = ("<pad>", "<bos>", "<eos>", "<unk>", "A", " dog")
    ds = load_dataset(str(tmp_path / "p"), "all", vocab=vocab)
    assert ds.spec.vocab == vocab and ds.tensors["text"][0, :4].tolist() == [1, 4, 5, 3]
    with pytest.raises(InvalidDataError) as e:
        load_dataset(str(tmp_path / "p"), "all", block_size=3)
    assert "block_size" in _one_line(e)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _wav(path: Path, rate: int = 4000, width: int = 2, frames: int = 50) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(b"\x00" * width * frames)


def _good(root: Path, n: int = 3) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (4, 4), (i, 0, 0)).save(root / f"{i}.png")
        _wav(root / f"{i}.wav")


# Each bad folder: (captions file name, its contents, options, fragments the one-line error must hold).
BAD_FOLDERS = {
    "missing captions file": ("captions.csv", "image,caption\n0.png,a\n", {"captions": "caps.csv"}, ["caps.csv"]),
    "captions.txt only": ("captions.txt", "image,caption\n0.png,a\n", {}, ["captions.txt", "captions.csv"]),
    "empty caption": ("captions.csv", "image,caption\n0.png,a cat\n1.png,  \n", {}, ["line 3", "empty caption"]),
    "image not there": ("captions.csv", "image,caption\n0.png,a\n7.png,b\n", {}, ["line 3", "'7.png'"]),
    "image outside": ("captions.csv", "image,caption\n../0.png,a\n", {}, ["line 2", "outside"]),
    "csv field count": ("captions.csv", "image,caption\n0.png,a\n1.png,a, b\n", {}, ["line 3", "3 fields"]),
    "csv bad quoting": ("captions.csv", 'image,caption\n0.png,"a"b\n', {}, ["line 2", "not valid CSV"]),
    "csv header": ("captions.csv", "file,text\n0.png,a\n", {}, ["line 1", "image and caption"]),
    "csv no rows": ("captions.csv", "image,caption\n", {}, ["has no rows"]),
    "jsonl syntax": ("captions.jsonl", '{"image": "0.png", "caption": "a"}\n{"image": "1.png",\n', {}, ["line 2"]),
    "jsonl keys": ("captions.jsonl", '{"image": "0.png", "text": "a"}\n', {}, ["line 1", "'caption'"]),
    "jsonl type": ("captions.jsonl", '{"image": "0.png", "caption": 3}\n', {}, ["line 1", "caption is 3"]),
    "unreadable wav": (
        "captions.csv",
        "image,caption,audio\n0.png,a,0.wav\n1.png,b,bad.wav\n",
        {},
        ["line 3", "bad.wav"],
    ),
    "wav missing": ("captions.csv", "image,caption,audio\n0.png,a,0.wav\n1.png,b,9.wav\n", {}, ["line 3", "9.wav"]),
    "wav cell empty": ("captions.csv", "image,caption,audio\n0.png,a,0.wav\n1.png,b,\n", {}, ["line 3", "no audio"]),
    "wav 24-bit": ("captions.csv", "image,caption,audio\n0.png,a,w24.wav\n", {}, ["line 2", "24-bit"]),
    "wav rate": ("captions.csv", "image,caption,audio\n0.png,a,0.wav\n1.png,b,r8k.wav\n", {}, ["line 3", "8000 Hz"]),
    "unreadable image": ("captions.csv", "image,caption\n0.png,a\nbad.png,b\n", {}, ["line 3", "bad.png"]),
}


@pytest.mark.parametrize("case", list(BAD_FOLDERS))
def test_pair_folder_errors_are_one_line(tmp_path, case: str) -> None:
    name, contents, opts, fragments = BAD_FOLDERS[case]
    root = tmp_path / "bad"
    _good(root)
    _write(root / name, contents)
    (root / "bad.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    (root / "bad.png").write_bytes(b"\x89PNG not really")
    _wav(root / "w24.wav", width=3)
    _wav(root / "r8k.wav", rate=8000)
    with pytest.raises(InvalidDataError) as e:
        load_dataset(str(root), "all", **opts)
    msg = _one_line(e)
    for fragment in fragments:
        assert fragment in msg, msg


def test_both_caption_files_and_plain_image_folders(tmp_path) -> None:
    root = tmp_path / "both"
    _good(root)
    _write(root / "captions.csv", "image,caption\n0.png,a\n")
    _write(root / "captions.jsonl", '{"image": "0.png", "caption": "a"}\n')
    with pytest.raises(InvalidDataError) as e:
        load_dataset(str(root))
    assert "both" in _one_line(e)
    # Without a captions file a folder is still an image folder.
    plain = tmp_path / "plain"
    _good(plain, n=10)
    ds = load_dataset(str(plain), "all")
    assert ds.spec.kind == "image" and set(ds.tensors) == {"x"} and len(ds) == 10


def test_read_wav_8_and_16_bit(tmp_path) -> None:
    path = tmp_path / "u8.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(4000)
        w.writeframes(bytes([0, 64, 128, 192, 255]))
    samples, rate = read_wav(path)
    assert rate == 4000 and np.allclose(samples, [-1, -0.5, 0, 0.5, 127 / 128])
    s = np.linspace(-1, 1, 50)
    samples, rate = read_wav(write_wav(tmp_path / "s16.wav", s, 8000), mono=True)
    assert rate == 8000 and np.abs(samples - s).max() < 1e-4
